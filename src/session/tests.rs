//! Tests of the I/O-free session, driven by the fake [`Env`] the session fuzzer uses too
//! (`crate::fuzzing::fake`): a clock the test advances, two users, a real room registry, a
//! sequencer the test plays by hand, and a log whose archive is off unless a test turns it on. Output
//! is read the way a reactor reads it (fill, then write the outbox) and decoded as a client
//! decodes it, into a line of text with one entry per frame, e.g. "JOINED r 0 2; MSG r 1 bob hi;
//! MSG r 2 alice yo; ERROR NOT_JOINED 5".

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;
use crate::fuzzing::fake::{FakeEnv, TS_MS};
use crate::protocol::codec::parse_server;
use crate::protocol::{ClientFrame, DEFAULT_MAX_FRAME, encode_client};

const ALL: u32 = u32::MAX;

fn hello<'a>(user: &'a str, token: &'a str) -> ClientFrame<'a> {
    ClientFrame::Hello {
        version: 1,
        user,
        token,
        client: 0,
    }
}
fn join(room: &str, after: u64, limit: u32) -> ClientFrame<'_> {
    ClientFrame::Join { room, after, limit }
}
fn leave(room: &str) -> ClientFrame<'_> {
    ClientFrame::Leave { room }
}
fn send<'a>(room: &'a str, id: u64, text: &'a str) -> ClientFrame<'a> {
    ClientFrame::Send { room, id, text }
}
fn ping(nonce: u64) -> ClientFrame<'static> {
    ClientFrame::Ping { nonce }
}

fn wire(frames: &[ClientFrame<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    frames.iter().for_each(|f| encode_client(f, &mut out));
    out
}

/// Feeds `frames` as one read and returns how many bytes the session used.
fn feed(s: &mut Session, env: &mut FakeEnv, frames: &[ClientFrame<'_>]) -> usize {
    s.receive(&wire(frames), env)
}

/// Everything the session has for the client now, written as the reactor writes it.
fn read_bytes(s: &mut Session, env: &mut FakeEnv) -> Vec<u8> {
    let mut bytes = Vec::new();
    loop {
        s.fill(env);
        if s.out.is_empty() {
            return bytes;
        }
        let n = s.out.write_to(&mut bytes).expect("a Vec takes everything");
        s.on_written(n, false, env.now);
    }
}

/// Hands each frame of a server stream to `saw`; the stream must be whole, well-formed frames
/// no longer than `max_frame`.
fn each_frame(mut bytes: &[u8], max_frame: u32, mut saw: impl FnMut(ServerFrame<'_>)) {
    // Every kind of both versions: a version 2 frame where it does not belong shows in the
    // description rather than as an unknown kind.
    let deframer = Deframer::for_client_in(Version::V2, max_frame);
    while !bytes.is_empty() {
        let Ok(Decoded::Frame(raw)) = deframer.next(bytes) else {
            panic!("output is not whole frames: {bytes:02x?}");
        };
        saw(parse_server(&raw).expect("a well-formed server frame"));
        bytes = &bytes[raw.wire_len..];
    }
}

/// One frame as the tests spell it: its name and the fields they check.
fn describe(frame: &ServerFrame<'_>) -> String {
    match *frame {
        ServerFrame::Welcome {
            version,
            epoch,
            session,
            max_frame,
            idle_timeout_ms,
            server,
        } => {
            format!("WELCOME {version} {epoch:x} {session} {max_frame} {idle_timeout_ms} {server}")
        }
        ServerFrame::Joined { room, first, head } => format!("JOINED {room} {first} {head}"),
        ServerFrame::Left { room } => format!("LEFT {room}"),
        ServerFrame::Msg {
            room,
            seq,
            ts_ms,
            user,
            text,
        } => {
            assert_eq!(ts_ms, TS_MS);
            format!("MSG {room} {seq} {user} {text}")
        }
        ServerFrame::Ack { id, seq } => format!("ACK {id} {seq}"),
        ServerFrame::Pong { nonce } => format!("PONG {nonce}"),
        ServerFrame::Error {
            code, reference, ..
        } => {
            let code = ErrorCode::from_u16(code).expect("a contract code");
            format!("ERROR {code} {reference}")
        }
        ServerFrame::Members { room, total, users } => {
            let users: Vec<&str> = users.iter().collect();
            format!("MEMBERS {room} {total} {}", users.join(","))
        }
        ServerFrame::Presence { room, user, here } => format!("PRESENCE {room} {user} {here}"),
    }
}

fn decode(bytes: &[u8], max_frame: u32) -> Vec<String> {
    let mut out = Vec::new();
    each_frame(bytes, max_frame, |f| out.push(describe(&f)));
    out
}

/// What the client reads now, one entry per frame, separated by "; ".
fn read(s: &mut Session, env: &mut FakeEnv) -> String {
    decode(&read_bytes(s, env), env.limits.max_frame).join("; ")
}

/// A session of alice past HELLO, with the WELCOME read.
fn login(env: &mut FakeEnv) -> Session {
    let mut s = Session::new(env.now, &env.limits);
    feed(&mut s, env, &[hello("alice", "s3cret")]);
    let out = read(&mut s, env);
    assert!(out.starts_with("WELCOME") && !out.contains(';'), "{out}");
    s
}

#[test]
fn hello_is_answered_with_welcome() {
    let mut env = FakeEnv::with(|l| l.max_frame = 4096);
    let mut s = Session::new(env.now, &env.limits);
    let input = wire(&[hello("alice", "s3cret")]);
    assert_eq!(s.receive(&input, &mut env), input.len());
    let server = format!("chatd/{}", env!("CARGO_PKG_VERSION"));
    let welcome = format!("WELCOME 1 1122334455667788 1 4096 60000 {server}");
    assert_eq!(read(&mut s, &mut env), welcome);
    assert_eq!(s.user(), "alice");
    assert!(s.wants_input() && !s.is_closing());
}

#[test]
fn every_fatal_path_sends_one_error_and_nothing_after() {
    let good = wire(&[hello("alice", "s3cret")]);
    // The version byte follows the 4 length bytes and the kind.
    let mut v3 = good.clone();
    v3[5] = 3;
    // Version 2 reads a client id after the token: a version 1 body is too short for it.
    let mut v2_short = good.clone();
    v2_short[5] = 2;
    let mut v0_bad_user = wire(&[hello("no such", "")]);
    v0_bad_user[5] = 0;
    // (log in first, the offending bytes, the ERROR)
    #[rustfmt::skip]
    let cases = [
        (false, wire(&[join("a", 0, 0)]), "NOT_AUTHENTICATED"),
        (false, vec![0, 0, 0, 2, kind::JOIN, 0xff], "NOT_AUTHENTICATED"),
        (false, wire(&[ClientFrame::Bye]), "NOT_AUTHENTICATED"),
        (true, good.clone(), "NOT_AUTHENTICATED"),
        (false, v3, "UNSUPPORTED_VERSION"),
        (false, v2_short, "MALFORMED"),
        (false, v0_bad_user, "UNSUPPORTED_VERSION"),
        (false, wire(&[hello("bad name", "s3cret")]), "AUTH_FAILED"),
        (false, wire(&[hello("", "s3cret")]), "AUTH_FAILED"),
        (false, wire(&[hello("carol", "s3cret")]), "AUTH_FAILED"),
        (false, wire(&[hello("alice", "wrong")]), "AUTH_FAILED"),
        (false, vec![0, 0, 0, 2, kind::HELLO, 1], "MALFORMED"),
        (false, [&good[..], &[0, 0, 0, 0]].concat(), "MALFORMED"),
        (true, vec![0, 0, 0, 0], "MALFORMED"),
        (true, vec![0, 0, 0, 8, kind::PING, 1, 2, 3, 4, 5, 6, 7], "MALFORMED"),
        (true, vec![0, 0, 0, 2, kind::BYE, 0], "MALFORMED"),
        (true, vec![0, 0, 0, 3, kind::LEAVE, 0, 1], "MALFORMED"),
        (true, vec![0, 1, 0, 1], "TOO_LARGE"),
        (false, vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3], "TOO_LARGE"),
        (true, vec![0, 0, 0, 1, kind::WELCOME], "UNKNOWN_KIND"),
        (true, vec![0, 0, 0, 9, 0x07, 0, 0, 0, 0, 0, 0, 0, 0], "UNKNOWN_KIND"),
        (false, vec![0, 0, 0, 1, 0x00], "UNKNOWN_KIND"),
    ];
    for (logged_in, bad, code) in cases {
        let mut env = FakeEnv::new();
        let mut s = if logged_in {
            login(&mut env)
        } else {
            Session::new(env.now, &env.limits)
        };
        // A good frame right behind the bad one must go unanswered.
        let input = [bad.clone(), wire(&[ping(1)])].concat();
        assert_eq!(s.receive(&input, &mut env), input.len(), "{bad:02x?}");
        let out = read(&mut s, &mut env);
        let out: Vec<&str> = out
            .split("; ")
            .filter(|f| !f.starts_with("WELCOME"))
            .collect();
        assert_eq!(out, [format!("ERROR {code} 0")], "{bad:02x?}");
        assert!(s.is_closing() && !s.wants_input(), "{bad:02x?}");
        assert_eq!(s.ended_by().map(ErrorCode::name), Some(code));
        let more = wire(&[ping(2), hello("alice", "s3cret")]);
        assert_eq!(s.receive(&more, &mut env), more.len());
        s.shut_down(env.now);
        assert_eq!(s.tick(env.now, &env.limits), Tick::Idle);
        assert_eq!(read(&mut s, &mut env), "", "{bad:02x?}");
        assert!(s.is_done());
    }
}

#[test]
fn request_errors_keep_the_session_ready() {
    let mut env = FakeEnv::with(|l| l.max_frame = 128);
    let mut s = login(&mut env);
    // A MSG of alice's in "a" is 27 bytes plus the text: 101 bytes of text make exactly 128.
    let (fits, too_long) = ("x".repeat(101), "x".repeat(102));
    let input = wire(&[
        join("bad room", 0, 0),
        leave("a"),
        leave(""),
        send("a", 5, "hi"),
        send("no/such", 6, "hi"),
        join("a", 0, 0),
        send("a", 7, ""),
        send("a", 8, &too_long),
        send("a", 9, &fits),
        ping(3),
    ]);
    assert_eq!(s.receive(&input, &mut env), input.len());
    let errors = "ERROR INVALID 0; ERROR NOT_JOINED 0; ERROR INVALID 0; ERROR NOT_JOINED 5";
    let then = "ERROR INVALID 6; JOINED a 0 0; ERROR INVALID 7; ERROR INVALID 8";
    assert_eq!(read(&mut s, &mut env), format!("{errors}; {then}"));
    let ids: Vec<u64> = env.submitted.iter().map(|(_, _, id)| *id).collect();
    assert_eq!(ids, [9], "only SEND 9 passed every check");
    env.store(&mut s);
    let own = format!("MSG a 1 alice {fits}");
    assert_eq!(read(&mut s, &mut env), format!("ACK 9 1; {own}; PONG 3"));
    assert!(s.wants_input() && !s.is_closing());
}

#[test]
fn rate_limited_send_names_its_id_and_is_not_stored() {
    let mut env = FakeEnv::with(|l| (l.send_rate, l.send_burst) = (1, 2));
    let mut s = login(&mut env);
    feed(&mut s, &mut env, &[join("a", 0, 0), send("a", 1, "x")]);
    feed(&mut s, &mut env, &[send("a", 2, "y"), send("a", 3, "z")]);
    assert_eq!(env.submitted.len(), 2);
    env.store(&mut s);
    let acks = "ACK 1 1; ACK 2 2; MSG a 1 alice x; MSG a 2 alice y";
    let out = format!("JOINED a 0 0; ERROR RATE_LIMITED 3; {acks}");
    assert_eq!(read(&mut s, &mut env), out);
    env.advance(1);
    feed(&mut s, &mut env, &[send("a", 4, "w")]);
    env.store(&mut s);
    assert_eq!(read(&mut s, &mut env), "ACK 4 3; MSG a 3 alice w");
}

#[test]
fn too_many_rooms_is_refused_without_closing() {
    let mut env = FakeEnv::with(|l| (l.max_rooms_per_connection, l.max_rooms) = (2, 3));
    let mut s = login(&mut env);
    for room in ["a", "b", "c", "a"] {
        feed(&mut s, &mut env, &[join(room, 0, 0)]);
    }
    let out = "JOINED a 0 0; JOINED b 0 0; ERROR TOO_MANY 0; JOINED a 0 0";
    assert_eq!(read(&mut s, &mut env), out);
    // The server's own limit: "c" is the third and last room it creates.
    let mut other = login(&mut env);
    feed(&mut other, &mut env, &[join("c", 0, 0), join("d", 0, 0)]);
    assert_eq!(read(&mut other, &mut env), "JOINED c 0 0; ERROR TOO_MANY 0");
    assert_eq!(env.members, 3);
}

#[test]
fn join_replays_the_window_in_seq_order_after_joined() {
    // (after, limit, the first seq replayed; the last is head, 10)
    let cases = [(3, 4, 7), (3, ALL, 4), (0, 0, 11), (0, 2, 9), (12, 5, 11)];
    for (after, limit, from) in cases {
        let mut env = FakeEnv::new();
        (1..=10).for_each(|n| env.post("r", "bob", &format!("m{n}")));
        let mut s = login(&mut env);
        feed(&mut s, &mut env, &[join("r", after, limit)]);
        let replay: String = (from..=10)
            .map(|n| format!("; MSG r {n} bob m{n}"))
            .collect();
        let out = read(&mut s, &mut env);
        let want = format!("JOINED r 1 10{replay}");
        assert_eq!(out, want, "after {after} limit {limit}");
        env.post("r", "bob", "live");
        assert_eq!(read(&mut s, &mut env), "MSG r 11 bob live");
    }
}

#[test]
fn join_reports_and_replays_only_what_the_ring_retains() {
    let mut env = FakeEnv::with(|l| l.ring.messages = 5);
    (1..=10).for_each(|n| env.post("r", "bob", &n.to_string()));
    let mut s = login(&mut env);
    feed(&mut s, &mut env, &[join("r", 0, ALL)]);
    let replay: String = (6..=10).map(|n| format!("; MSG r {n} bob {n}")).collect();
    assert_eq!(read(&mut s, &mut env), format!("JOINED r 6 10{replay}"));
}

#[test]
fn leave_stops_delivery() {
    let mut env = FakeEnv::new();
    let mut s = login(&mut env);
    feed(&mut s, &mut env, &[join("r", 0, 0)]);
    env.post("r", "bob", "one");
    assert_eq!(read(&mut s, &mut env), "JOINED r 0 0; MSG r 1 bob one");
    env.post("r", "bob", "two");
    feed(&mut s, &mut env, &[leave("r")]);
    env.post("r", "bob", "three");
    assert_eq!(
        read(&mut s, &mut env),
        "LEFT r",
        "nothing of r follows LEFT"
    );
    assert_eq!((env.members, s.rooms().count()), (0, 0));
}

#[test]
fn second_join_replays_again() {
    let mut env = FakeEnv::new();
    for text in ["one", "two", "three"] {
        env.post("r", "bob", text);
    }
    let mut s = login(&mut env);
    feed(&mut s, &mut env, &[join("r", 0, ALL)]);
    assert_eq!(read(&mut s, &mut env).matches("MSG").count(), 3);
    feed(&mut s, &mut env, &[join("r", 1, ALL)]);
    let out = "JOINED r 1 3; MSG r 2 bob two; MSG r 3 bob three";
    assert_eq!(read(&mut s, &mut env), out);
    assert_eq!(env.members, 1, "a second JOIN is not a second membership");
}

/// What `bye_after_two_sends` is owed once its SENDs are stored.
const OWED_AFTER_BYE: &str = "ACK 1 1; ACK 2 2; MSG r 1 alice one; MSG r 2 alice two";

/// A session that pipelined HELLO, JOIN r, SEND 1 "one", SEND 2 "two", BYE and PING; the
/// PING must stay unread.
fn bye_after_two_sends(env: &mut FakeEnv) -> Session {
    let mut s = Session::new(env.now, &env.limits);
    let mut to_bye = wire(&[
        hello("alice", "s3cret"),
        join("r", 0, 0),
        send("r", 1, "one"),
    ]);
    to_bye.extend(wire(&[send("r", 2, "two"), ClientFrame::Bye]));
    let input = [to_bye.clone(), wire(&[ping(9)])].concat();
    let used = s.receive(&input, env);
    assert_eq!(used, to_bye.len(), "nothing is read after BYE");
    assert!(!s.wants_input());
    let out = read(&mut s, env);
    let (welcome, joined) = (out.starts_with("WELCOME"), out.ends_with("; JOINED r 0 0"));
    assert!(welcome && joined, "{out}");
    assert!(!s.is_done(), "two ACKs are owed");
    s
}

#[test]
fn bye_settles_acks_and_stored_messages_then_is_done() {
    let mut env = FakeEnv::new();
    let mut s = bye_after_two_sends(&mut env);
    env.store(&mut s);
    assert!(!s.is_done(), "the ACKs and MSGs are still queued");
    assert_eq!(read(&mut s, &mut env), OWED_AFTER_BYE);
    assert!(s.is_done());
}

#[test]
fn bye_sends_no_msg_stored_after_it_took_effect() {
    let mut env = FakeEnv::new();
    let mut s = bye_after_two_sends(&mut env);
    env.store(&mut s);
    env.post("r", "bob", "after the bye");
    assert_eq!(read(&mut s, &mut env), OWED_AFTER_BYE);
    env.post("r", "bob", "later still");
    assert_eq!(read(&mut s, &mut env), "");
}

#[test]
fn shut_down_sends_shutting_down_only_after_in_flight_acks() {
    let mut env = FakeEnv::new();
    let mut s = login(&mut env);
    feed(&mut s, &mut env, &[join("r", 0, 0), send("r", 1, "one")]);
    assert_eq!(read(&mut s, &mut env), "JOINED r 0 0");
    s.shut_down(env.now);
    assert_eq!(read(&mut s, &mut env), "");
    assert!(!s.is_closing() && !s.wants_input());
    env.store(&mut s);
    assert_eq!(read(&mut s, &mut env), "ACK 1 1; ERROR SHUTTING_DOWN 0");
    assert!(s.is_closing() && s.is_done());

    let mut idle = login(&mut env);
    idle.shut_down(env.now);
    assert_eq!(read(&mut idle, &mut env), "ERROR SHUTTING_DOWN 0");
}

#[test]
fn eof_after_send_still_yields_the_ack() {
    let mut env = FakeEnv::new();
    let mut s = login(&mut env);
    feed(&mut s, &mut env, &[join("r", 0, 0), send("r", 1, "hi")]);
    s.on_eof(env.now);
    assert!(!s.is_done() && !s.wants_input());
    env.store(&mut s);
    let out = read(&mut s, &mut env);
    assert_eq!(out, "JOINED r 0 0; ACK 1 1; MSG r 1 alice hi");
    assert!(s.is_done());

    let mut fresh = Session::new(env.now, &env.limits);
    fresh.on_eof(env.now);
    assert!(fresh.is_closing() && fresh.is_done());
}

#[test]
fn handshake_timeout_then_closing_grace() {
    let mut env = FakeEnv::new();
    let (t0, limits) = (env.now, env.limits.clone());
    let mut s = Session::new(t0, &limits);
    let almost = t0 + limits.handshake_timeout - Duration::from_millis(1);
    assert_eq!(s.tick(almost, &limits), Tick::Idle);
    env.now = t0 + limits.handshake_timeout;
    assert_eq!(s.tick(env.now, &limits), Tick::Flush);
    assert_eq!(read(&mut s, &mut env), "ERROR TIMEOUT 0");
    let almost = env.now + CLOSE_GRACE - Duration::from_millis(1);
    assert_eq!(s.tick(almost, &limits), Tick::Idle);
    assert_eq!(s.tick(env.now + CLOSE_GRACE, &limits), Tick::Close);
}

#[test]
fn idle_timeout_is_not_reset_by_a_partial_frame() {
    let mut env = FakeEnv::new();
    let limits = env.limits.clone();
    let mut trickler = login(&mut env);
    let mut pinger = login(&mut env);
    env.advance(59);
    assert_eq!(trickler.receive(&wire(&[ping(1)])[..12], &mut env), 0);
    feed(&mut pinger, &mut env, &[ping(2)]);
    env.advance(1);
    assert_eq!(trickler.tick(env.now, &limits), Tick::Flush);
    assert_eq!(read(&mut trickler, &mut env), "ERROR TIMEOUT 0");
    assert_eq!(pinger.tick(env.now, &limits), Tick::Idle);
    assert_eq!(read(&mut pinger, &mut env), "PONG 2");
    env.advance(59);
    assert_eq!(pinger.tick(env.now, &limits), Tick::Flush);
}

#[test]
fn write_stall_discards_unstarted_output_and_sends_slow_consumer() {
    let mut env = FakeEnv::new();
    let limits = env.limits.clone();
    let mut s = login(&mut env);
    feed(&mut s, &mut env, &[ping(1), ping(2)]);
    s.on_written(0, true, env.now);
    env.advance(20);
    // Taking some bytes is progress: the stall clock starts again.
    s.on_written(1, true, env.now);
    s.on_written(0, true, env.now);
    env.advance(29);
    assert_eq!(s.tick(env.now, &limits), Tick::Idle);
    env.advance(1);
    assert_eq!(s.tick(env.now, &limits), Tick::Flush);
    assert!(s.is_closing());
    let out = read(&mut s, &mut env);
    assert_eq!(out, "ERROR SLOW_CONSUMER 0", "the PONGs are dropped");
}

#[test]
fn unread_control_output_pauses_input_until_written() {
    let mut env = FakeEnv::new();
    let mut s = login(&mut env);
    let input = wire(&(0..10_000).map(ping).collect::<Vec<_>>());
    let mut at = s.receive(&input, &mut env);
    assert!(at < input.len() && !s.wants_input());
    assert!(s.out.owned_bytes() >= OUT_HIGH_WATER);
    let mut out = vec![read(&mut s, &mut env)];
    assert!(s.wants_input());
    while at < input.len() {
        let used = s.receive(&input[at..], &mut env);
        assert!(used > 0);
        at += used;
        out.push(read(&mut s, &mut env));
    }
    let pongs: Vec<String> = (0..10_000).map(|n| format!("PONG {n}")).collect();
    assert_eq!(out.join("; "), pongs.join("; "));
}

#[test]
fn sends_in_flight_pause_input_until_acked() {
    let mut env = FakeEnv::with(|l| l.send_rate = 0);
    let mut s = login(&mut env);
    feed(&mut s, &mut env, &[join("r", 0, 0)]);
    let (max, extra) = (MAX_IN_FLIGHT as usize, 10);
    let sends: Vec<_> = (0..max + extra)
        .map(|id| send("r", id as u64, "x"))
        .collect();
    let input = wire(&sends);
    let at = s.receive(&input, &mut env);
    let per_send = input.len() / sends.len();
    assert_eq!((at, env.submitted.len()), (per_send * max, max));
    assert!(!s.wants_input());
    env.store(&mut s);
    assert!(s.wants_input());
    assert_eq!(s.receive(&input[at..], &mut env), input.len() - at);
    assert_eq!(env.submitted.len(), extra);
}

#[test]
fn member_behind_the_ring_is_dropped_as_slow_consumer() {
    let mut env = FakeEnv::with(|l| l.ring.messages = 4);
    let mut s = login(&mut env);
    feed(&mut s, &mut env, &[join("r", 0, 0)]);
    assert_eq!(read(&mut s, &mut env), "JOINED r 0 0");
    (0..4).for_each(|_| env.post("r", "bob", "x"));
    let msgs = read(&mut s, &mut env).matches("MSG").count();
    assert_eq!(msgs, 4, "a whole ring behind is served");
    (0..5).for_each(|_| env.post("r", "bob", "x"));
    assert_eq!(read(&mut s, &mut env), "ERROR SLOW_CONSUMER 0");
    assert!(s.is_closing());
}

#[test]
fn a_member_behind_the_ring_after_bye_still_gets_its_acks() {
    // Found by the session fuzzer: the history it is owed is gone, but its ACKs are not.
    let mut env = FakeEnv::with(|l| l.ring.messages = 4);
    let mut s = login(&mut env);
    feed(&mut s, &mut env, &[join("r", 0, 0)]);
    assert_eq!(read(&mut s, &mut env), "JOINED r 0 0");
    feed(&mut s, &mut env, &[send("r", 1, "mine"), ClientFrame::Bye]);
    (0..9).for_each(|_| env.post("r", "bob", "x"));
    env.store(&mut s);
    assert_eq!(read(&mut s, &mut env), "ACK 1 10");
    assert!(
        s.is_done(),
        "nothing more is owed in a room whose history is gone"
    );
}

#[test]
fn a_member_caught_up_from_the_log_never_gets_a_batch_still_being_synced() {
    let mut env = FakeEnv::with(|l| l.ring.messages = 4);
    env.archive = true;
    let mut s = login(&mut env);
    feed(&mut s, &mut env, &[join("r", 0, 0)]);
    assert_eq!(read(&mut s, &mut env), "JOINED r 0 0");
    (1..=6).for_each(|n| env.post("r", "bob", &format!("m{n}")));
    assert_eq!(
        read(&mut s, &mut env),
        "",
        "behind the window: waiting on the log"
    );
    assert_eq!(env.fetches.len(), 1);
    // The member's own SEND is written as seq 7, and its sync is still running when the
    // archive answers: the log holds seq 7, the ring's head is 6.
    feed(&mut s, &mut env, &[send("r", 1, "never stored")]);
    assert_eq!(env.write(), [1]);
    env.answer_fetches(&mut s, false);
    let replay: Vec<String> = (1..=6).map(|n| format!("MSG r {n} bob m{n}")).collect();
    assert_eq!(read(&mut s, &mut env), replay.join("; "));
    // The sync fails: seq 7 goes to another message, which is what the member gets.
    env.settle(&mut s, false);
    env.post("r", "bob", "stored");
    assert_eq!(
        read(&mut s, &mut env),
        "ERROR STORAGE 1; MSG r 7 bob stored"
    );
}

/// Runs one conversation with the input cut into `pieces`, kept and re-fed like the reactor's
/// input buffer, and returns the bytes the session wrote.
fn conversation<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut env = FakeEnv::new();
    env.post("r", "bob", "earlier");
    let mut s = Session::new(env.now, &env.limits);
    let mut inbuf = Vec::new();
    for piece in pieces {
        inbuf.extend_from_slice(piece);
        let used = s.receive(&inbuf, &mut env);
        inbuf.drain(..used);
    }
    env.store(&mut s);
    let mut out = read_bytes(&mut s, &mut env);
    // What a PING held back is read once its PONG is out, as the reactor does.
    let used = s.receive(&inbuf, &mut env);
    inbuf.drain(..used);
    assert!(inbuf.is_empty(), "every frame was taken");
    out.extend(read_bytes(&mut s, &mut env));
    out
}

#[test]
fn frames_split_at_every_byte_give_the_same_output() {
    let mut input = wire(&[
        hello("alice", "s3cret"),
        join("r", 0, ALL),
        send("r", 7, "héllo"),
    ]);
    input.extend(wire(&[ping(42), ClientFrame::Bye]));
    let whole = conversation([&input[..]]);
    let out = decode(&whole, DEFAULT_MAX_FRAME).join("; ");
    let end = "; JOINED r 1 1; ACK 7 2; MSG r 1 bob earlier; MSG r 2 alice héllo; PONG 42";
    assert!(out.starts_with("WELCOME") && out.ends_with(end), "{out}");
    assert_eq!(conversation(input.chunks(1)), whole, "one byte per read");
    for cut in 0..=input.len() {
        let (a, b) = input.split_at(cut);
        assert_eq!(conversation([a, b]), whole, "cut at {cut}");
    }
}

#[test]
fn pong_follows_the_whole_replay_of_an_earlier_join() {
    let mut env = FakeEnv::new();
    // More than one fill's worth, so the replay takes several rounds of the outbox.
    for n in 0..100 {
        env.post("r", "bob", &format!("m{n}"));
    }
    let mut s = login(&mut env);
    let input = wire(&[join("r", 0, ALL), ping(1)]);
    assert_eq!(s.receive(&input, &mut env), input.len());
    let got = decode(&read_bytes(&mut s, &mut env), DEFAULT_MAX_FRAME);
    assert_eq!(got.len(), 102, "{got:?}");
    assert_eq!(got[0], "JOINED r 1 100");
    assert!(
        got[1..101].iter().all(|f| f.starts_with("MSG r ")),
        "{got:?}"
    );
    assert_eq!(got[100], "MSG r 100 bob m99");
    assert_eq!(got[101], "PONG 1");
}

#[test]
fn pong_waits_for_the_answers_to_earlier_sends() {
    let mut env = FakeEnv::new();
    let mut s = login(&mut env);
    feed(&mut s, &mut env, &[join("r", 0, 0)]);
    assert_eq!(read(&mut s, &mut env), "JOINED r 0 0");
    feed(
        &mut s,
        &mut env,
        &[send("r", 1, "a"), send("r", 2, "b"), ping(9)],
    );
    assert_eq!(
        read(&mut s, &mut env),
        "",
        "no PONG before the ACKs it follows"
    );
    env.store(&mut s);
    assert_eq!(
        read(&mut s, &mut env),
        "ACK 1 1; ACK 2 2; MSG r 1 alice a; MSG r 2 alice b; PONG 9"
    );
}

#[test]
fn a_failed_send_before_a_ping_is_answered_before_its_pong() {
    let mut env = FakeEnv::new();
    let mut s = login(&mut env);
    feed(
        &mut s,
        &mut env,
        &[join("r", 0, 0), send("r", 4, "x"), ping(2)],
    );
    assert_eq!(read(&mut s, &mut env), "JOINED r 0 0");
    for (_, _, id) in std::mem::take(&mut env.submitted) {
        s.on_stored(id, Err(ErrorCode::Storage), env.now);
    }
    assert_eq!(read(&mut s, &mut env), "ERROR STORAGE 4; PONG 2");
}

#[test]
fn requests_after_a_waiting_ping_are_read_only_after_its_pong() {
    let mut env = FakeEnv::new();
    let mut s = login(&mut env);
    feed(&mut s, &mut env, &[join("r", 0, 0)]);
    read(&mut s, &mut env);
    let first = wire(&[send("r", 1, "a"), ping(5)]);
    let input = [first.clone(), wire(&[join("s", 0, 0)])].concat();
    assert_eq!(s.receive(&input, &mut env), first.len(), "JOIN s waits");
    assert!(!s.wants_input());
    env.store(&mut s);
    assert_eq!(read(&mut s, &mut env), "ACK 1 1; MSG r 1 alice a; PONG 5");
    assert!(s.wants_input());
    let rest = &input[first.len()..];
    assert_eq!(s.receive(rest, &mut env), rest.len());
    assert_eq!(read(&mut s, &mut env), "JOINED s 0 0");
}

#[test]
fn a_ping_with_nothing_owed_is_answered_at_once() {
    let mut env = FakeEnv::new();
    env.post("r", "bob", "old");
    let mut s = login(&mut env);
    feed(&mut s, &mut env, &[join("r", 0, ALL)]);
    assert_eq!(read(&mut s, &mut env), "JOINED r 1 1; MSG r 1 bob old");
    feed(&mut s, &mut env, &[ping(3)]);
    assert!(s.wants_input(), "no barrier when nothing is owed");
    assert_eq!(read(&mut s, &mut env), "PONG 3");
}

#[test]
fn a_fatal_error_drops_a_waiting_pong() {
    let mut env = FakeEnv::new();
    let mut s = login(&mut env);
    feed(
        &mut s,
        &mut env,
        &[join("r", 0, 0), send("r", 1, "a"), ping(5)],
    );
    assert_eq!(read(&mut s, &mut env), "JOINED r 0 0");
    s.shut_down(env.now);
    env.store(&mut s);
    assert_eq!(read(&mut s, &mut env), "ACK 1 1; ERROR SHUTTING_DOWN 0");
    assert!(s.is_done());
}

mod access;
mod props;
mod v2;
