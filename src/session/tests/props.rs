//! The property test of the session: arbitrary conversations, checked for the invariants a
//! client relies on (nothing after a fatal error, ACKs match SENDs, seqs step by one per room,
//! no MSG for a room not joined).

use super::*;

/// Rooms of the property test; the last name is invalid.
const ROOMS: [&str; 4] = ["a", "b", "c", "not a room"];

#[derive(Debug, Clone)]
enum Op {
    /// HELLO with the right token or a wrong one.
    Hello(bool),
    Join(usize, u64, u32),
    Leave(usize),
    /// SEND with some text or none.
    Send(usize, bool),
    Ping(u64),
    Bye,
    /// The sequencer stores what was submitted.
    Store,
    /// Bob posts to a room.
    Post(usize),
    /// The reactor writes what the session has.
    Read,
    /// Seconds pass, and the timers are checked.
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let room = 0..ROOMS.len();
    let limit = prop_oneof![Just(0), 0..4u32, Just(ALL)];
    prop_oneof![
        1 => any::<bool>().prop_map(Op::Hello),
        3 => (room.clone(), 0..6u64, limit).prop_map(|(r, after, limit)| Op::Join(r, after, limit)),
        2 => room.clone().prop_map(Op::Leave),
        6 => (room, prop::bool::weighted(0.9)).prop_map(|(r, text)| Op::Send(r, text)),
        1 => any::<u64>().prop_map(Op::Ping),
        1 => Just(Op::Bye),
        4 => Just(Op::Store),
        4 => (0..ROOMS.len() - 1).prop_map(Op::Post),
        4 => Just(Op::Read),
        1 => (0..40u64).prop_map(Op::Wait),
    ]
}

/// What the output must never show, checked frame by frame in the order the client reads.
#[derive(Default)]
struct Checker {
    ended: bool,
    acked: HashSet<u64>,
    /// Joined rooms: the least seq the next MSG may carry, and whether it must be exactly
    /// that (it must, once a MSG followed the JOINED).
    joined: HashMap<String, (u64, bool)>,
}

impl Checker {
    fn saw(&mut self, frame: &ServerFrame<'_>, sent: &HashSet<u64>) {
        assert!(!self.ended, "{frame:?} after a fatal ERROR");
        match *frame {
            ServerFrame::Error { code, .. } => {
                use ErrorCode::*;
                let code = ErrorCode::from_u16(code);
                let fine = [Invalid, NotJoined, RateLimited, TooMany, Storage];
                self.ended = !code.is_some_and(|c| fine.contains(&c));
            }
            ServerFrame::Ack { id, .. } => {
                assert!(sent.contains(&id), "ACK {id} for no SEND");
                assert!(self.acked.insert(id), "a second ACK {id}");
            }
            ServerFrame::Joined { room, first, .. } => {
                self.joined.insert(room.into(), (first.max(1), false));
            }
            ServerFrame::Left { room } => {
                assert!(self.joined.remove(room).is_some(), "LEFT {room}");
            }
            ServerFrame::Msg { room, seq, .. } => {
                let Some(next) = self.joined.get_mut(room) else {
                    panic!("MSG {seq} of {room}, not joined");
                };
                match *next {
                    (want, true) => assert_eq!(seq, want, "{room}: a gap or a repeat"),
                    (least, false) => assert!(seq >= least, "{room}: MSG {seq} below first"),
                }
                *next = (seq + 1, true);
            }
            ServerFrame::Welcome { .. } | ServerFrame::Pong { .. } => {}
            ServerFrame::Members { .. } | ServerFrame::Presence { .. } => {
                panic!("{frame:?} on a version 1 connection")
            }
        }
    }
}

/// Plays `ops` against one session, feeding frames as the reactor does, and checks every
/// frame it writes.
fn run_ops(ops: &[Op]) {
    let mut env = FakeEnv::with(|l| {
        (l.send_rate, l.send_burst, l.max_rooms_per_connection) = (1, 6, 2);
        l.ring.messages = 8;
    });
    let limits = env.limits.clone();
    let mut s = Session::new(env.now, &limits);
    let (mut inbuf, mut sent, mut checker) = (Vec::new(), HashSet::new(), Checker::default());
    let mut check = |s: &mut Session, env: &mut FakeEnv, sent: &HashSet<u64>| {
        let bytes = read_bytes(s, env);
        each_frame(&bytes, limits.max_frame, |f| checker.saw(&f, sent));
    };
    for (i, op) in ops.iter().enumerate() {
        let id = i as u64;
        match *op {
            Op::Hello(good) => {
                let token = if good { "s3cret" } else { "nope" };
                encode_client(&hello("alice", token), &mut inbuf);
            }
            Op::Join(r, after, limit) => encode_client(&join(ROOMS[r], after, limit), &mut inbuf),
            Op::Leave(r) => encode_client(&leave(ROOMS[r]), &mut inbuf),
            Op::Send(r, text) => {
                sent.insert(id);
                let text = if text { "hi" } else { "" };
                encode_client(&send(ROOMS[r], id, text), &mut inbuf);
            }
            Op::Ping(nonce) => encode_client(&ping(nonce), &mut inbuf),
            Op::Bye => encode_client(&ClientFrame::Bye, &mut inbuf),
            Op::Store => env.store(&mut s),
            Op::Post(r) => env.post(ROOMS[r], "bob", "x"),
            Op::Read => check(&mut s, &mut env, &sent),
            Op::Wait(secs) => {
                env.advance(secs);
                s.tick(env.now, &limits);
            }
        }
        if s.wants_input() || s.is_closing() {
            let used = s.receive(&inbuf, &mut env);
            inbuf.drain(..used);
        }
    }
    env.store(&mut s);
    check(&mut s, &mut env, &sent);
}

proptest! {
    #[test]
    fn arbitrary_conversations_keep_the_output_invariants(
        login_first in prop::bool::weighted(0.9),
        ops in prop::collection::vec(op(), 0..48),
    ) {
        let first = login_first.then_some(Op::Hello(true));
        run_ops(&first.into_iter().chain(ops).collect::<Vec<_>>());
    }
}
