//! The `session` fuzz body: one [`Session`] driven by a script of operations read from the
//! input, its output decoded as a client decodes it and checked against the contract.
//!
//! The environment is the shared fake server ([`FakeEnv`]) with tiny limits (so TOO_MANY and
//! SLOW_CONSUMER are reachable) and its archive on, so a member behind the ring's window is
//! caught up through `fetch` and `on_fetched`. Its log can run ahead of the rings, as the
//! real one does while a batch is synced: the client checks that every MSG it gets is the
//! durable message of that seq, so an archive that served a batch still in flight (which may
//! yet fail, its seqs going to other messages) is caught.
//!
//! Each operation is one input byte (`byte % 10`) followed by its arguments:
//!
//! | op | what it does                                                    | arguments      |
//! |----|-----------------------------------------------------------------|----------------|
//! | 0  | append raw bytes to the input and call `receive`                | len, bytes     |
//! | 1,2| append one encoded client frame (valid-ish, of either version:    | 4 bytes        |
//! |    | HELLO 1 or 2 or another, WHO, WATCH) and call `receive`          |                |
//! | 3  | play the sequencer: settle the batch in flight (fails if bit 0  | fail mask      |
//! |    | is set), then store every pending SEND, one batch each          |                |
//! | 4  | advance the clock by `n * 100 ms`, then `tick`                  | n              |
//! | 5  | `fill`, then write the outbox into a socket that takes `cap`    | cap (0: block) |
//! | 6  | another user posts to a room; with bit 7 of its byte, bob's      | room           |
//! |    | connection elsewhere joins that room, or leaves it if it had    |                |
//! | 7  | the peer sends FIN (`on_eof`)                                   | –              |
//! | 8  | the server shuts down (`shut_down`)                             | –              |
//! | 9  | the archive answers every log read (bit 0: history `Gone`; bit  | flags          |
//! |    | 1: first write the pending SENDs as a batch left in flight)     |                |
//!
//! At the end the sequencer settles what is in flight, stores what is pending, and the
//! outbox is drained.
//!
//! Versions mix freely: a HELLO of version 1, 2 or another, and WHO or WATCH before or after
//! it. The client checks that WELCOME echoes the version of the HELLO it answers, that a
//! version 1 connection never sees a frame or error code only version 2 has, and that a WHO
//! or WATCH on a connection not in version 2 never leaves it open. Who is here: every MEMBERS
//! is sorted, and each PRESENCE after one agrees with it (an arrival of a user not listed, a
//! departure of one listed: no change twice, none skipped), never names the session's own
//! user, and at the end the watches the session holds are the ones the server counts.

use std::collections::HashMap;
use std::io::{self, IoSlice, Write};
use std::time::Duration;

use super::fake::{EPOCH, FakeEnv, TS_MS};
use crate::config::Limits;
use crate::protocol::codec::{parse_client, parse_server};
use crate::protocol::{
    ClientFrame, Decoded, Deframer, ErrorCode, ServerFrame, Version, encode_client, kind,
};
use crate::room::RingLimits;
use crate::session::{Session, Tick};

/// A small max_frame, so that long SENDs and TOO_LARGE are a few bytes away.
const MAX_FRAME: u32 = 512;
/// At most this many operations per input, to bound a run's time.
const MAX_OPS: usize = 512;

const NAMES: [&str; 4] = ["alice", "bob", "eve", ""];
const TOKENS: [&str; 3] = ["s3cret", "hunter2", ""];
/// `staff` is the fake server's private room (alice's only), and `@alice+bob` a direct room:
/// FORBIDDEN for the others, INVALID on version 1.
const ROOMS: [&str; 8] = ["#a", "#b", "#c", "staff", "@alice+bob", "#d", "nohash", ""];
const TEXTS: [&str; 4] = ["hi", "", "héllo wörld", "a longer line of chat text"];

/// The limits the fuzzed session runs under: small, so that every limit is reachable.
fn limits(l: &mut Limits) {
    *l = Limits {
        max_frame: MAX_FRAME,
        max_rooms_per_connection: 3,
        max_rooms: 3,
        send_rate: 2,
        send_burst: 4,
        ring: RingLimits {
            messages: 8,
            bytes: 2048,
        },
        ..Limits::default()
    };
}

/// Whether an ERROR of this code ends the connection (everything but the per-request ones).
fn is_fatal(code: u16) -> bool {
    !matches!(
        ErrorCode::from_u16(code),
        Some(
            ErrorCode::Invalid
                | ErrorCode::NotJoined
                | ErrorCode::RateLimited
                | ErrorCode::TooMany
                | ErrorCode::Storage
                | ErrorCode::Forbidden
                | ErrorCode::StaleId
        )
    )
}

/// Plays the archive: answers every pending log read, or with `Gone` when bit 0 of `flags`
/// is set (see [`run`] for when it never does). With bit 1, the pending SENDs are first
/// written as a batch left in flight.
fn answer_fetches(
    s: &mut Session,
    env: &mut FakeEnv,
    client: &mut Client,
    flags: u8,
    strict: bool,
) {
    if flags & 2 != 0 {
        for id in env.write() {
            // Every submitted id came from a SEND the session took.
            assert!(client.sends.take(&id), "submitted id {id} for no SEND");
        }
    }
    let gone = flags & 1 == 1 && (strict || !s.is_closing());
    env.answer_fetches(s, gone);
}

/// A socket that takes at most `cap` bytes per write, or blocks when `cap` is 0.
struct CappedSocket<'a> {
    into: &'a mut Vec<u8>,
    cap: usize,
}

impl Write for CappedSocket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.cap == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut left = self.cap;
        let mut n = 0;
        for buf in bufs {
            let take = left.min(buf.len());
            self.into
                .extend_from_slice(buf.get(..take).unwrap_or_default());
            left -= take;
            n += take;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A multiset of small keys.
#[derive(Debug, Default)]
struct Bag<K: std::hash::Hash + Eq>(HashMap<K, usize>);

impl<K: std::hash::Hash + Eq + std::fmt::Debug> Bag<K> {
    fn add(&mut self, k: K) {
        *self.0.entry(k).or_default() += 1;
    }
    /// Takes one `k` out; false if there was none.
    fn take(&mut self, k: &K) -> bool {
        match self.0.get_mut(k) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                self.0.remove(k);
                true
            }
            None => false,
        }
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What the client has seen, and what it may still see.
#[derive(Debug, Default)]
struct Client {
    /// Bytes received and not yet a whole frame.
    pending: Vec<u8>,
    frames: usize,
    /// The version WELCOME named; `None` before it.
    welcomed: Option<u8>,
    /// The version of the first HELLO the session took, the one a WELCOME answers.
    hello_version: Option<u8>,
    /// A WHO or WATCH was taken on a connection whose first HELLO was not version 2 (or
    /// before any HELLO): the session must end.
    who_before_v2: bool,
    /// The fatal ERROR received, after which nothing may come.
    fatal: Option<u16>,
    /// Rooms joined: the last MSG seq seen since the JOINED (0: none yet).
    joined: HashMap<String, u64>,
    /// The user of the first HELLO the session took.
    user: Option<String>,
    /// Who is here in each room, as the last whole MEMBERS and the PRESENCE after it say.
    here: HashMap<String, std::collections::BTreeSet<String>>,
    /// Answers the sequencer produced and the client is owed: ACKs (id, seq), STORAGE ids.
    acks_owed: Bag<(u64, u64)>,
    errors_owed: Bag<u64>,
    /// SEND ids and PING nonces the session took from the input.
    sends: Bag<u64>,
    pings: Bag<u64>,
    /// SENDs taken from the input, and SENDs answered (ACK or an ERROR naming them). A SEND
    /// with id 0 is left out: its errors say ref 0, like a JOIN's, so no answer names it.
    sends_taken: usize,
    sends_answered: usize,
    /// For each PING taken, oldest first: its nonce and how many SENDs were taken before it.
    barriers: std::collections::VecDeque<(u64, usize)>,
}

impl Client {
    /// Takes the whole frames off `pending` and checks each.
    fn read(&mut self, env: &FakeEnv) {
        // Every kind of every version, so that a version 2 frame on a version 1 connection
        // is seen and caught below rather than refused here.
        let deframer = Deframer::for_client_in(Version::V2, MAX_FRAME);
        let bytes = std::mem::take(&mut self.pending);
        let mut rest = &bytes[..];
        loop {
            let raw = match deframer.next(rest) {
                Ok(Decoded::Frame(raw)) => raw,
                Ok(Decoded::NeedMore) => break,
                Err(e) => panic!("the server wrote a bad frame: {e:?} in {rest:02x?}"),
            };
            let frame = parse_server(&raw).expect("the server wrote a malformed frame");
            self.frames += 1;
            let wire = rest.get(..raw.wire_len).unwrap_or_default();
            self.check(&frame, wire, &format!("{frame:?}"), env);
            rest = rest.get(raw.wire_len..).unwrap_or_default();
        }
        self.pending = rest.to_vec();
    }

    fn check(&mut self, frame: &ServerFrame<'_>, bytes: &[u8], shown: &str, env: &FakeEnv) {
        assert!(
            self.fatal.is_none(),
            "{shown} after the fatal ERROR {:?}",
            self.fatal
        );
        if self.welcomed != Some(2) {
            let v2_only = kind::introduced_in(frame.kind()) != Some(Version::V1);
            let stale = matches!(*frame, ServerFrame::Error { code, .. }
                if code == ErrorCode::StaleId.as_u16());
            assert!(!v2_only && !stale, "{shown} on a version 1 connection");
        }
        if self.welcomed.is_none() {
            assert!(
                matches!(
                    frame,
                    ServerFrame::Welcome { .. } | ServerFrame::Error { .. }
                ),
                "{shown} before WELCOME"
            );
        }
        match *frame {
            ServerFrame::Welcome {
                version,
                epoch,
                max_frame,
                ..
            } => {
                assert!(self.welcomed.is_none(), "a second WELCOME");
                assert_eq!((epoch, max_frame), (EPOCH, MAX_FRAME));
                assert_eq!(Some(version), self.hello_version, "WELCOME echoes HELLO");
                self.welcomed = Some(version);
            }
            ServerFrame::Joined { room, first, head } => {
                assert!(first <= head, "{shown}");
                self.joined.insert(room.to_string(), 0);
            }
            ServerFrame::Left { room } => {
                assert!(
                    self.joined.remove(room).is_some(),
                    "{shown} while not joined"
                );
                self.here.remove(room);
            }
            ServerFrame::Msg {
                room,
                seq,
                ts_ms,
                user,
                ..
            } => {
                let last = self.joined.get_mut(room);
                let last = last.unwrap_or_else(|| panic!("{shown} for a room not joined"));
                assert!(*last == 0 || seq == *last + 1, "{shown} after seq {last}");
                assert!(seq > 0 && ts_ms == TS_MS, "{shown}");
                let stored = env.rooms.get(room);
                let head = stored.as_ref().map(|r| r.read(|ring| ring.head()));
                assert!(
                    head.is_some_and(|h| seq <= h),
                    "{shown} past the durable head"
                );
                let durable = stored.as_ref().and_then(|r| env.durable(r, seq));
                assert!(
                    durable.is_some_and(|d| d[..] == *bytes),
                    "{shown} is not the message stored as that seq"
                );
                assert!(NAMES.contains(&user) && !user.is_empty(), "{shown}");
                *last = seq;
            }
            ServerFrame::Ack { id, seq } => {
                assert!(self.acks_owed.take(&(id, seq)), "{shown} not owed");
                self.sends_answered += usize::from(id != 0);
            }
            ServerFrame::Pong { nonce } => {
                assert!(self.pings.take(&nonce), "{shown} for no PING");
                // PONGs come in PING order, each after the answers to every SEND before it.
                let (expected, sends_before) = self.barriers.pop_front().unwrap_or_default();
                assert_eq!(nonce, expected, "{shown} out of PING order");
                assert!(
                    self.sends_answered >= sends_before,
                    "{shown} overtook the answer to a SEND before its PING"
                );
            }
            ServerFrame::Members { room, total, users } => {
                assert!(
                    self.joined.contains_key(room),
                    "{shown} for a room not joined"
                );
                assert!(users.len() <= usize::try_from(total).unwrap_or(usize::MAX));
                let users: Vec<&str> = users.iter().collect();
                assert!(users.windows(2).all(|w| w[0] < w[1]), "{shown} not sorted");
                if usize::try_from(total).is_ok_and(|t| t == users.len()) {
                    assert!(
                        self.user.as_deref().is_some_and(|u| users.contains(&u)),
                        "{shown} leaves out the session's own user"
                    );
                    let users = users.into_iter().map(String::from).collect();
                    self.here.insert(room.to_string(), users);
                }
            }
            ServerFrame::Presence { room, user, here } => {
                assert!(
                    self.joined.contains_key(room),
                    "{shown} for a room not joined"
                );
                assert_ne!(self.user.as_deref(), Some(user), "{shown} of its own user");
                let set = self.here.get_mut(room);
                let set = set.unwrap_or_else(|| panic!("{shown} before any MEMBERS"));
                let agrees = if here {
                    set.insert(user.to_string())
                } else {
                    set.remove(user)
                };
                assert!(agrees, "{shown} disagrees with the MEMBERS before it");
            }
            ServerFrame::Error {
                code, reference, ..
            } => {
                if code == ErrorCode::Storage.as_u16() {
                    assert!(self.errors_owed.take(&reference), "{shown} not owed");
                    self.sends_answered += usize::from(reference != 0);
                } else if reference != 0 {
                    assert!(self.sends.take(&reference), "{shown} for no SEND");
                    self.sends_answered += 1;
                }
                if is_fatal(code) {
                    assert_eq!(reference, 0, "{shown}: a fatal error refers to nothing");
                    self.fatal = Some(code);
                }
            }
        }
    }

    /// Notes the SENDs and PINGs among the whole frames the session took from the input.
    fn took(&mut self, mut used: &[u8]) {
        let deframer = Deframer::for_server_in(Version::V2, MAX_FRAME);
        while let Ok(Decoded::Frame(raw)) = deframer.next(used) {
            match parse_client(&raw) {
                Ok(
                    ClientFrame::Hello { version, .. }
                    | ClientFrame::HelloUnsupported { version, .. },
                ) => {
                    self.hello_version.get_or_insert(version);
                    if let Ok(ClientFrame::Hello { user, .. }) = parse_client(&raw) {
                        self.user.get_or_insert_with(|| user.to_string());
                    }
                }
                Ok(ClientFrame::Who { .. } | ClientFrame::Watch { .. }) => {
                    self.who_before_v2 |= self.hello_version != Some(2);
                }
                Ok(ClientFrame::Send { id, .. }) => {
                    self.sends.add(id);
                    self.sends_taken += usize::from(id != 0);
                }
                Ok(ClientFrame::Ping { nonce }) => {
                    self.pings.add(nonce);
                    self.barriers.push_back((nonce, self.sends_taken));
                }
                // The session reads nothing after BYE, though it counts the rest of that
                // input as used: what follows was never taken.
                Ok(ClientFrame::Bye) => return,
                _ => {}
            }
            used = used.get(raw.wire_len..).unwrap_or_default();
        }
    }
}

/// The input, read a byte at a time; zeros once it runs out.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }
    fn pick<T: Copy, const N: usize>(&mut self, from: [T; N]) -> T {
        from[usize::from(self.byte()) % N]
    }
}

/// One valid-ish client frame from four script bytes.
fn client_frame(script: &mut Script<'_>, out: &mut Vec<u8>) {
    let (sel, a) = (script.byte(), script.byte());
    let room = ROOMS[usize::from(a) % ROOMS.len()];
    let frame = match sel % 10 {
        0 => {
            let user = script.pick(NAMES);
            let token = script.pick(TOKENS);
            let (version, client) = match a {
                0xf0.. => (a, 0),
                0x80.. => (2, u64::from(script.byte())),
                _ => (1, 0),
            };
            ClientFrame::Hello {
                version,
                user,
                token,
                client,
            }
        }
        1 => {
            let (after, limit) = (script.byte(), script.byte());
            ClientFrame::Join {
                room,
                after: if after == 0xff {
                    u64::MAX
                } else {
                    after.into()
                },
                limit: if limit >= 0x80 {
                    u32::MAX
                } else {
                    limit.into()
                },
            }
        }
        2 => ClientFrame::Leave { room },
        3 => ClientFrame::Ping {
            nonce: script.byte().into(),
        },
        4 => ClientFrame::Bye,
        5 => {
            // Long enough to pass max_frame once the room and user are added.
            let id = script.byte().into();
            let text = "x".repeat(usize::from(script.byte()) * 2 + 300);
            encode_client(
                &ClientFrame::Send {
                    room,
                    id,
                    text: &text,
                },
                out,
            );
            return;
        }
        8 => ClientFrame::Who { room },
        9 => ClientFrame::Watch {
            room,
            on: script.byte() % 3,
        },
        _ => ClientFrame::Send {
            room,
            id: script.byte().into(),
            text: script.pick(TEXTS),
        },
    };
    encode_client(&frame, out);
}

/// Drives one session through the operations `data` describes; see the module documentation.
///
/// # Panics
/// When the session breaks a promise of the contract: a frame after a fatal ERROR, an ACK
/// for no SEND or with the wrong seq, a gap in a room's seqs, a MSG for a room not joined,
/// `receive` using more than it was given, or a malformed frame on the wire.
pub fn session_ops(data: &[u8]) {
    run(data, true);
}

/// Runs the script and returns what the client saw: frames read and the fatal code, if any.
///
/// Unless `strict`, the fake archive never answers `Gone` to a session closing after BYE or
/// FIN: that path showed a daemon bug (the session dropped the ACKs it still owed), fixed
/// since; [`session_ops`] runs strictly.
pub(crate) fn run(data: &[u8], strict: bool) -> (usize, Option<u16>) {
    run_with(data, strict, |_| {})
}

/// [`run`], with the fake server changed by `tweak` first.
fn run_with(data: &[u8], strict: bool, tweak: impl FnOnce(&mut FakeEnv)) -> (usize, Option<u16>) {
    let mut env = FakeEnv::with(limits);
    env.archive = true;
    tweak(&mut env);
    let mut s = Session::new(env.now, &env.limits);
    let mut client = Client::default();
    let mut input = Vec::new();
    let mut script = Script(data);
    let mut closed = false;
    for _ in 0..MAX_OPS {
        if script.0.is_empty() || closed {
            break;
        }
        match script.byte() % 10 {
            0 => {
                let n = usize::from(script.byte() % 32);
                input.extend_from_slice(script.bytes(n));
                receive(&mut s, &mut env, &mut client, &mut input);
            }
            1 | 2 => {
                client_frame(&mut script, &mut input);
                receive(&mut s, &mut env, &mut client, &mut input);
            }
            3 => store(&mut s, &mut env, &mut client, script.byte()),
            4 => {
                env.now += Duration::from_millis(u64::from(script.byte()) * 100);
                closed = s.tick(env.now, &env.limits) == Tick::Close;
            }
            5 => {
                let cap = usize::from(script.byte()) * 4;
                s.fill(&mut env);
                write(&mut s, &env, &mut client, cap);
            }
            6 => {
                let byte = script.byte();
                let room = ROOMS[usize::from(byte) % ROOMS.len()];
                post(&mut env, room);
                if byte >= 0x80 {
                    env.other_connection(room);
                }
            }
            7 => s.on_eof(env.now),
            8 => s.shut_down(env.now),
            _ => answer_fetches(&mut s, &mut env, &mut client, script.byte(), strict),
        }
        closed |= s.is_done();
    }
    // The end of the run: the sequencer answers, and the client reads everything.
    store(&mut s, &mut env, &mut client, 0);
    for _ in 0..1000 {
        s.fill(&mut env);
        if s.out.is_empty() {
            break;
        }
        write(&mut s, &env, &mut client, usize::MAX);
    }
    assert!(client.pending.is_empty(), "the output ends inside a frame");
    assert_eq!(
        env.members,
        i64::try_from(s.rooms().count()).unwrap_or(i64::MAX),
        "joined/left calls do not match the memberships"
    );
    assert_eq!(
        env.watchers,
        i64::try_from(s.memberships().filter(|&(_, watching)| watching).count())
            .unwrap_or(i64::MAX),
        "watch/left calls do not match the watches"
    );
    assert!(
        !client.who_before_v2 || s.ended_by().is_some(),
        "a WHO or WATCH outside version 2 left the session open"
    );
    match s.ended_by() {
        Some(code) => assert_eq!(client.fatal, Some(code.as_u16()), "fatal error unsaid"),
        None => assert_eq!(
            client.fatal, None,
            "a fatal ERROR the session does not know"
        ),
    }
    if matches!(s.ended_by(), None | Some(ErrorCode::ShuttingDown)) {
        assert!(
            client.acks_owed.is_empty() && client.errors_owed.is_empty(),
            "stored SENDs never answered: {:?} {:?}",
            client.acks_owed,
            client.errors_owed
        );
    }
    (client.frames, client.fatal)
}

fn receive(s: &mut Session, env: &mut FakeEnv, client: &mut Client, input: &mut Vec<u8>) {
    let closing = s.is_closing();
    let used = s.receive(input, env);
    assert!(used <= input.len(), "receive used more than it was given");
    if !closing {
        client.took(input.get(..used).unwrap_or_default());
    }
    input.drain(..used);
}

/// Plays the sequencer: settles the batch in flight (failing it if bit 0 of `fail` is set),
/// then stores each pending SEND as a batch of its own, failing those whose bit in `fail` is
/// set.
fn store(s: &mut Session, env: &mut FakeEnv, client: &mut Client, fail: u8) {
    let mut answers = env.settle(s, fail & 1 == 0);
    for (_, _, id) in &env.submitted {
        // Every submitted id came from a SEND the session took.
        assert!(client.sends.take(id), "submitted id {id} for no SEND");
    }
    answers.extend(env.store_each(s, |i| fail & (1 << (i % 8)) == 0));
    for (id, result) in answers {
        match result {
            Ok(seq) => client.acks_owed.add((id, seq)),
            Err(_) => client.errors_owed.add(id),
        }
    }
}

/// Another member's message to `room`, if the room exists.
fn post(env: &mut FakeEnv, room: &str) {
    if env.rooms.get(room).is_some() {
        env.post(room, "bob", "from elsewhere");
    }
}

/// Writes the outbox once into a socket taking `cap` bytes, as a reactor does.
fn write(s: &mut Session, env: &FakeEnv, client: &mut Client, cap: usize) {
    if s.out.is_empty() {
        return;
    }
    let mut socket = CappedSocket {
        into: &mut client.pending,
        cap,
    };
    match s.out.write_to(&mut socket) {
        Ok(n) => s.on_written(n, !s.out.is_empty(), env.now),
        Err(_) => s.on_written(0, true, env.now),
    }
    client.read(env);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds/session")
            .join(name);
        std::fs::read(path).expect("seed")
    }

    /// The checks catch an archive that serves a batch still being synced: the member would
    /// keep a message that was never stored, under a seq another message then takes.
    #[test]
    fn serving_past_the_durable_head_is_caught() {
        let input = seed("archive_during_a_batch_that_fails");
        let caught =
            std::panic::catch_unwind(|| run_with(&input, true, |env| env.archive_past_head = true));
        let message = caught.expect_err("a frame past the durable head went unnoticed");
        let text = message.downcast_ref::<String>().map_or("", String::as_str);
        assert!(
            text.contains("not the message stored as that seq"),
            "{text}"
        );
    }

    /// The seeds reach what they are named for, so the fuzzer starts from every path.
    #[test]
    fn seeds_reach_their_outcomes() {
        let fatal = |code: ErrorCode| Some(code.as_u16());
        let cases = [
            // WELCOME JOINED MSG ACK (the MSG and the ACK in either order)
            ("hello_join_send_ack", 4, None),
            ("wrong_token", 1, fatal(ErrorCode::AuthFailed)),
            ("frame_before_hello", 1, fatal(ErrorCode::NotAuthenticated)),
            ("garbage_after_hello", 2, fatal(ErrorCode::TooLarge)),
            // Falling out of the window with no log to read: the unsent WELCOME and JOINED
            // are dropped with the rest, and only the ERROR goes out.
            ("busy_room_reader_stalls", 1, fatal(ErrorCode::SlowConsumer)),
            (
                "shutdown_with_sends_in_flight",
                4,
                fatal(ErrorCode::ShuttingDown),
            ),
            ("idle_timeout", 2, fatal(ErrorCode::Timeout)),
            ("handshake_timeout", 1, fatal(ErrorCode::Timeout)),
            // WELCOME JOINED, one STORAGE error, one ACK, one MSG
            ("storage_failure", 5, None),
            // WELCOME, three JOINED, ERROR TOO_MANY (not fatal)
            ("too_many_rooms", 5, None),
            // WELCOME JOINED, the window (8 MSGs), the 4 older ones from the log, STORAGE for
            // the SEND whose sync failed, and the MSG that took its seq.
            ("archive_during_a_batch_that_fails", 16, None),
            // Version 2: WELCOME JOINED, MEMBERS for the WHO and for the WATCH, WATCH 2
            // (INVALID), PONG.
            ("v2_hello_join_who_watch", 6, None),
            ("v2_client_0_send_ack", 4, None),
            // Version 1 as before: WELCOME JOINED, then the WHO is an unknown kind.
            ("v1_hello_then_who", 3, fatal(ErrorCode::UnknownKind)),
            ("who_before_hello", 1, fatal(ErrorCode::UnknownKind)),
            (
                "hello_of_another_version",
                1,
                fatal(ErrorCode::UnsupportedVersion),
            ),
            ("v1_hello_with_client_id", 1, fatal(ErrorCode::Malformed)),
            ("v2_then_v1_hello", 2, fatal(ErrorCode::NotAuthenticated)),
            // Who is here: WELCOME JOINED, the WATCH's MEMBERS, bob's three MSGs, PRESENCE of
            // bob arriving and leaving, then a WHO's MEMBERS, which his arrival again (logged
            // before it, not yet sent) does not follow.
            ("v2_watch_presence_then_who", 9, None),
            // WELCOME, NOT_JOINED, INVALID (room "")
            ("v2_who_not_joined_then_watch_bad_room", 3, None),
        ];
        for (name, frames, end) in cases {
            let (saw, fatal) = run(&seed(name), true);
            assert_eq!((saw, fatal), (frames, end), "{name}");
        }
    }
}
