//! Every frame of the contract over real TCP: what each request is answered with, replay
//! windows, per-room sequence numbers, pipelining and frames split at every byte.

#[path = "util/frames.rs"]
mod frames;
#[macro_use]
mod util;

use std::time::{SystemTime, UNIX_EPOCH};

use chatd::client::{Client, Reply};
use chatd::protocol::{ClientFrame, ErrorCode};
use nix::sys::signal::Signal;
use util::{BIN, Daemon, Driver, expect_error, expect_fatal, join, recv, recv_until_close, send};

const ALL: u32 = u32::MAX;

fn hello<'a>(user: &'a str, token: &'a str) -> ClientFrame<'a> {
    ClientFrame::Hello {
        version: 1,
        user,
        token,
        client: 0,
    }
}

/// HELLO on a fresh connection; returns the connection and the WELCOME.
#[track_caller]
fn welcome(d: &Daemon, user: &str, token: &str) -> (Client, Reply) {
    let mut c = d.connect();
    c.send(&hello(user, token)).expect("send HELLO");
    let w = recv(&mut c);
    assert!(
        matches!(w, Reply::Welcome { .. }),
        "expected WELCOME, got {w:?}"
    );
    (c, w)
}

#[track_caller]
fn epoch_of(w: &Reply) -> u64 {
    match w {
        Reply::Welcome { epoch, .. } => *epoch,
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

/// Sends `texts` to `room` as ids `first_id..` and waits for every ACK and own MSG; returns
/// the seqs the ACKs carried, in id order.
#[track_caller]
fn post(c: &mut Client, room: &str, first_id: u64, texts: &[&str]) -> Vec<u64> {
    for (id, text) in (first_id..).zip(texts) {
        send(c, room, id, text);
    }
    let mut acks = vec![0; texts.len()];
    let mut own = 0;
    while own < texts.len() || acks.contains(&0) {
        match recv(c) {
            Reply::Ack { id, seq } => {
                let slot = usize::try_from(id - first_id).expect("small id");
                acks[slot] = seq;
            }
            Reply::Msg { room: r, .. } if r == room => own += 1,
            other => panic!("expected ACK or own MSG, got {other:?}"),
        }
    }
    acks
}

/// Reads MSGs of `room` up to and including seq `last`; returns (seq, user, text) of each.
/// Any other frame fails the test.
#[track_caller]
fn msgs_through(c: &mut Client, room: &str, last: u64) -> Vec<(u64, String, String)> {
    let mut got = Vec::new();
    loop {
        match recv(c) {
            Reply::Msg {
                room: r,
                seq,
                user,
                text,
                ..
            } if r == room => {
                got.push((seq, user, text));
                if seq >= last {
                    return got;
                }
            }
            other => panic!("expected MSG of {room}, got {other:?} after {got:?}"),
        }
    }
}

fn seqs(msgs: &[(u64, String, String)]) -> Vec<u64> {
    msgs.iter().map(|m| m.0).collect()
}

fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    u64::try_from(since.as_millis()).expect("ms fit")
}

per_driver! {
fn welcome_reports_version_epoch_session_and_the_configured_limits(driver: Driver) {
    let d = driver.start(&["--max-frame", "4096", "--idle-timeout", "7s"]);
    let token = d.add_user("alice");
    let (_a, first) = welcome(&d, "alice", &token);
    let (_b, second) = welcome(&d, "alice", &token);
    let Reply::Welcome {
        version,
        epoch,
        session,
        max_frame,
        idle_timeout_ms,
        server,
    } = first
    else {
        unreachable!("welcome() checked the kind")
    };
    assert_eq!(version, 1);
    assert_ne!(epoch, 0, "the epoch is non-zero");
    assert_eq!(max_frame, 4096);
    assert_eq!(idle_timeout_ms, 7000);
    assert!(server.starts_with("chatd/"), "server is {server:?}");
    let Reply::Welcome {
        epoch: epoch2,
        session: session2,
        ..
    } = second
    else {
        unreachable!("welcome() checked the kind")
    };
    assert_eq!(epoch2, epoch, "one store, one epoch");
    assert_ne!(session2, session, "each connection has its own session id");

    if driver == Driver::JetStream {
        // The epoch lives in JetStream, not in a file; tests/cluster.rs checks nodes agree.
        return;
    }
    let path = d.data_dir().join("log").join("epoch");
    let file = std::fs::read_to_string(path).expect("epoch file");
    let digits = file
        .lines()
        .find_map(|l| l.strip_prefix("epoch "))
        .expect("an epoch line");
    assert_eq!(digits.len(), 16, "epoch file holds 16 hex digits: {file:?}");
    assert_eq!(u64::from_str_radix(digits, 16), Ok(epoch));
}
}

per_driver! {
fn the_epoch_survives_a_restart_on_the_same_data_dir_and_differs_on_another(driver: Driver) {
    let mut first = driver.start(&[]);
    let token = first.add_user("alice");
    let (mut c, w) = welcome(&first, "alice", &token);
    let epoch = epoch_of(&w);
    // The epoch names a history: without a stored message the next start begins a new one.
    join(&mut c, "#r", 0, 0);
    send(&mut c, "#r", 1, "kept");
    while !matches!(recv(&mut c), Reply::Ack { .. }) {}
    drop(c);
    first.signal(Signal::SIGTERM);
    let status = first.wait_exit().expect("chatd exits on SIGTERM");
    assert!(status.success(), "exit status {status}");

    // The same data directory, and with JetStream the same NATS server.
    let again = driver.start_again(&first, &[]);
    let (_c, w) = welcome(&again, "alice", &token);
    assert_eq!(epoch_of(&w), epoch, "same data directory, same epoch");

    let other = driver.start(&[]);
    let (_c, w) = welcome(&other, "bob", &other.add_user("bob"));
    assert_ne!(epoch_of(&w), epoch, "a new store has a new epoch");
}
}

per_driver! {
fn joined_reports_first_and_head_of_a_room(driver: Driver) {
    let d = driver.start(&[]);
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    assert_eq!(join(&mut alice, "#r", 0, ALL), (0, 0), "an empty room");
    assert_eq!(post(&mut alice, "#r", 1, &["a", "b", "c"]), vec![1, 2, 3]);
    assert_eq!(join(&mut bob, "#r", 0, 0), (1, 3));
}
}

per_driver! {
fn join_replays_from_max_of_after_and_head_minus_limit_then_goes_live_without_gap(driver: Driver) {
    let d = driver.start(&["--send-rate", "0"]);
    let mut alice = d.login("alice");
    join(&mut alice, "#r", 0, 0);
    let texts = ["one", "two", "three", "four", "five"];
    assert_eq!(post(&mut alice, "#r", 1, &texts), vec![1, 2, 3, 4, 5]);

    // (after, limit, replayed seqs); live seq 6 must follow each replay directly.
    let cases: [(u64, u32, &[u64]); 7] = [
        (0, 0, &[]),
        (0, 2, &[4, 5]),
        (0, ALL, &[1, 2, 3, 4, 5]),
        (3, ALL, &[4, 5]),
        (1, 2, &[4, 5]),
        (4, 3, &[5]),
        (10, ALL, &[]),
    ];
    let mut readers = Vec::new();
    for (i, &(after, limit, _)) in cases.iter().enumerate() {
        let mut c = d.login(&format!("reader{i}"));
        assert_eq!(join(&mut c, "#r", after, limit), (1, 5));
        readers.push(c);
    }
    assert_eq!(post(&mut alice, "#r", 6, &["six"]), vec![6]);
    for ((after, limit, replay), c) in cases.iter().zip(&mut readers) {
        let got = msgs_through(c, "#r", 6);
        let mut want = replay.to_vec();
        want.push(6);
        assert_eq!(seqs(&got), want, "JOIN after={after} limit={limit}");
        for (seq, user, text) in &got {
            assert_eq!(user, "alice");
            let n = usize::try_from(*seq).expect("small seq");
            assert_eq!(text, ["", "one", "two", "three", "four", "five", "six"][n]);
        }
    }
}
}

per_driver! {
fn joining_a_joined_room_again_answers_joined_and_replays_per_the_new_request(driver: Driver) {
    let d = driver.start(&[]);
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    join(&mut alice, "#r", 0, 0);
    post(&mut alice, "#r", 1, &["1", "2", "3", "4", "5"]);
    assert_eq!(join(&mut bob, "#r", 0, ALL), (1, 5));
    assert_eq!(seqs(&msgs_through(&mut bob, "#r", 5)), [1, 2, 3, 4, 5]);

    assert_eq!(join(&mut bob, "#r", 2, ALL), (1, 5));
    assert_eq!(seqs(&msgs_through(&mut bob, "#r", 5)), [3, 4, 5]);
    post(&mut alice, "#r", 6, &["6"]);
    assert_eq!(seqs(&msgs_through(&mut bob, "#r", 6)), [6], "live, once");

    assert_eq!(join(&mut bob, "#r", 0, 0), (1, 6), "live only this time");
    post(&mut alice, "#r", 7, &["7"]);
    assert_eq!(seqs(&msgs_through(&mut bob, "#r", 7)), [7]);
    frames::assert_alive(&mut bob);
}
}

per_driver! {
fn after_left_no_msg_of_that_room_arrives(driver: Driver) {
    let d = driver.start(&[]);
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    join(&mut alice, "#r", 0, 0);
    join(&mut bob, "#r", 0, 0);
    post(&mut alice, "#r", 1, &["before"]);
    assert_eq!(
        seqs(&msgs_through(&mut bob, "#r", 1)),
        [1],
        "bob is a member"
    );

    bob.send(&ClientFrame::Leave { room: "#r" }).expect("LEAVE");
    assert_eq!(recv(&mut bob), Reply::Left { room: "#r".into() });
    post(&mut alice, "#r", 2, &["after"]);
    // The message is in the room once alice has her ACK, and bob's PONG follows everything
    // owed to him up to then: nothing of a room he left.
    assert_eq!(frames::ping(&mut bob, 1), vec![], "nothing of a room left");
}
}

per_driver! {
fn sends_are_acked_with_seqs_counting_from_one_in_each_room(driver: Driver) {
    let d = driver.start(&[]);
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    for room in ["#a", "#b"] {
        join(&mut alice, room, 0, 0);
    }
    join(&mut bob, "#a", 0, 0);
    let sends = [("#a", 10), ("#b", 20), ("#a", 11), ("#b", 21), ("#a", 12)];
    for (room, id) in sends {
        send(&mut alice, room, id, &format!("text {id}"));
    }
    let mut acks = Vec::new();
    let mut own = Vec::new();
    while acks.len() + own.len() < 2 * sends.len() {
        match recv(&mut alice) {
            Reply::Ack { id, seq } => acks.push((id, seq)),
            Reply::Msg {
                room,
                seq,
                ts_ms,
                user,
                text,
            } => {
                assert_eq!(user, "alice");
                assert!(now_ms().abs_diff(ts_ms) < 60_000, "ts_ms {ts_ms} is now");
                own.push((room, seq, text));
            }
            other => panic!("expected ACK or MSG, got {other:?}"),
        }
    }
    acks.sort_unstable();
    assert_eq!(acks, [(10, 1), (11, 2), (12, 3), (20, 1), (21, 2)]);
    own.sort();
    let want: Vec<(String, u64, String)> = [("#a", 1, 10), ("#a", 2, 11), ("#a", 3, 12)]
        .into_iter()
        .chain([("#b", 1, 20), ("#b", 2, 21)])
        .map(|(r, s, id)| (r.to_string(), s, format!("text {id}")))
        .collect();
    assert_eq!(own, want, "the sender gets its own MSGs");
    let got = msgs_through(&mut bob, "#a", 3);
    let users: Vec<&str> = got.iter().map(|m| m.1.as_str()).collect();
    assert_eq!((seqs(&got), users), (vec![1, 2, 3], vec!["alice"; 3]));
}
}

per_driver! {
fn ping_is_answered_with_its_nonce(driver: Driver) {
    let d = driver.start(&[]);
    let mut c = d.login("alice");
    for nonce in [0, 42, 0x0123_4567_89ab_cdef, u64::MAX] {
        c.send(&ClientFrame::Ping { nonce }).expect("PING");
        assert_eq!(recv(&mut c), Reply::Pong { nonce });
    }
}
}

per_driver! {
fn bye_is_answered_by_a_close(driver: Driver) {
    let d = driver.start(&[]);
    let mut c = d.login("alice");
    join(&mut c, "#r", 0, 0);
    c.send(&ClientFrame::Bye).expect("BYE");
    assert_eq!(recv_until_close(&mut c), vec![]);
}
}

/// The answers to a pipelined HELLO (alice), JOIN "#p", SEND id 7 "hi" and PING 9: WELCOME,
/// JOINED, then ACK and own MSG in either order (the contract orders them neither way), then
/// PONG: it answers only once everything asked before it is answered.
#[track_caller]
fn assert_pipeline_answers(got: &[Reply]) {
    assert_eq!(got.len(), 5, "five answers, got {got:?}");
    assert!(matches!(got[0], Reply::Welcome { .. }), "{got:?}");
    let joined = Reply::Joined {
        room: "#p".into(),
        first: 0,
        head: 0,
    };
    assert_eq!(got[1], joined);
    let rest = &got[2..];
    assert!(rest.contains(&Reply::Ack { id: 7, seq: 1 }), "{got:?}");
    assert_eq!(got[4], Reply::Pong { nonce: 9 }, "PONG comes last: {got:?}");
    let own = rest.iter().any(|r| match r {
        Reply::Msg {
            room,
            seq,
            user,
            text,
            ..
        } => (room.as_str(), *seq, user.as_str(), text.as_str()) == ("#p", 1, "alice", "hi"),
        _ => false,
    });
    assert!(own, "own MSG in {got:?}");
}

/// HELLO, JOIN #p (all history), SEND id 7 "hi" and PING 9, encoded back to back.
fn pipeline(token: &str) -> Vec<u8> {
    frames::encode(&[
        hello("alice", token),
        ClientFrame::Join {
            room: "#p",
            after: 0,
            limit: ALL,
        },
        ClientFrame::Send {
            room: "#p",
            id: 7,
            text: "hi",
        },
        ClientFrame::Ping { nonce: 9 },
    ])
}

per_driver! {
fn pipelined_hello_join_send_ping_bye_in_one_write_are_all_answered_then_closed(driver: Driver) {
    let d = driver.start(&[]);
    let token = d.add_user("alice");
    let mut c = d.connect();
    let mut bytes = pipeline(&token);
    bytes.extend(frames::encode(&[ClientFrame::Bye]));
    c.send_raw(&bytes).expect("one write");
    assert_pipeline_answers(&recv_until_close(&mut c));
}
}

per_driver! {
fn frames_split_at_every_byte_are_reassembled(driver: Driver) {
    let d = driver.start(&[]);
    let token = d.add_user("alice");
    let mut c = d.connect();
    let bytes = pipeline(&token);
    for byte in &bytes {
        c.send_raw(std::slice::from_ref(byte)).expect("one byte");
    }
    let got: Vec<Reply> = (0..5).map(|_| recv(&mut c)).collect();
    assert_pipeline_answers(&got);
    frames::assert_alive(&mut c);
}
}

per_driver! {
fn users_added_or_removed_while_running_take_effect_once_reloaded(driver: Driver) {
    let d = driver.start(&[]);
    let token = d.add_user("carol");
    let (mut c, _) = welcome(&d, "carol", &token);
    frames::assert_alive(&mut c);

    let out = std::process::Command::new(BIN)
        .args(["user", "remove", "carol", "--data-dir"])
        .arg(d.data_dir())
        .output()
        .expect("run chatd user remove");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The daemon's watcher notices within 250 ms; tests/users.rs covers the live session.
    d.wait_for_users(0);
    let mut again = d.connect();
    again.send(&hello("carol", &token)).expect("HELLO");
    expect_fatal(&mut again, ErrorCode::AuthFailed);
}
}

per_driver! {
/// A client with a tiny receive window asks for a long history, then PINGs and says BYE in
/// the same write: the PONG must come after the whole replay, as "everything I asked before
/// is answered" (the way Redis and NATS clients use PING).
fn pong_follows_the_replay_of_a_join_sent_before_it(driver: Driver) {
    // From the in-memory window, and from the log (a window of 4 leaves 16 on disk only).
    pong_after_replay(driver, &[]);
    pong_after_replay(driver, &["--ring-messages", "4"]);
}
}

#[track_caller]
fn pong_after_replay(driver: Driver, flags: &[&str]) {
    let d = driver.start(flags);
    let mut alice = d.login("alice");
    join(&mut alice, "#big", 0, 0);
    let text = "x".repeat(30_000);
    post(&mut alice, "#big", 1, &[text.as_str(); 20]);

    let token = d.add_user("bob");
    let mut bob = Client::from_stream(small_window_stream(d.addr));
    bob.set_timeout(Some(util::PATIENCE)).expect("timeout");
    let pipeline = frames::encode(&[
        hello("bob", &token),
        ClientFrame::Join {
            room: "#big",
            after: 0,
            limit: ALL,
        },
        ClientFrame::Ping { nonce: 77 },
        ClientFrame::Bye,
    ]);
    bob.send_raw(&pipeline).expect("pipeline");
    let got = recv_until_close(&mut bob);
    let kinds: Vec<String> = got
        .iter()
        .map(|r| match r {
            Reply::Welcome { .. } => "WELCOME".to_string(),
            Reply::Joined { first, head, .. } => format!("JOINED {first} {head}"),
            Reply::Msg { seq, text: t, .. } if t.len() == 30_000 => format!("MSG {seq}"),
            Reply::Pong { nonce } => format!("PONG {nonce}"),
            other => format!("{other:?}"),
        })
        .collect();
    let mut want = vec!["WELCOME".to_string(), "JOINED 1 20".to_string()];
    want.extend((1..=20).map(|seq| format!("MSG {seq}")));
    want.push("PONG 77".to_string());
    assert_eq!(kinds, want);
}

/// A connected socket whose receive buffer is 4 KiB, so replay trickles out in small writes.
fn small_window_stream(addr: std::net::SocketAddr) -> std::net::TcpStream {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrStorage, connect, setsockopt, socket, sockopt,
    };
    use std::os::fd::AsRawFd;
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::empty(), None).expect("socket");
    setsockopt(&fd, sockopt::RcvBuf, &4096).expect("SO_RCVBUF");
    connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)).expect("connect");
    std::net::TcpStream::from(fd)
}

/// HELLO of version 2 with `client`, as `user`; returns the connection and the WELCOME.
#[track_caller]
fn welcome_v2(d: &Daemon, user: &str, token: &str, client: u64) -> (Client, Reply) {
    let mut c = d.connect();
    c.speak(chatd::protocol::Version::V2);
    c.send(&ClientFrame::Hello {
        version: 2,
        user,
        token,
        client,
    })
    .expect("send HELLO");
    let w = recv(&mut c);
    assert!(
        matches!(w, Reply::Welcome { version: 2, .. }),
        "expected WELCOME version 2, got {w:?}"
    );
    (c, w)
}

per_driver! {
fn version_1_and_version_2_connections_share_a_server_and_its_rooms(driver: Driver) {
    let d = driver.start(&[]);
    let alice = d.add_user("alice");
    let bob = d.add_user("bob");
    let (mut old, w1) = welcome(&d, "alice", &alice);
    let (mut new, w2) = welcome_v2(&d, "bob", &bob, 0x00c0_ffee_0000_0001);
    assert!(matches!(w1, Reply::Welcome { version: 1, .. }), "{w1:?}");
    assert_eq!(epoch_of(&w1), epoch_of(&w2), "one store, one epoch, whatever the version");

    // Everything version 1 has works across the two: one room, one sequence.
    join(&mut old, "#mixed", 0, 0);
    join(&mut new, "#mixed", 0, 0);
    assert_eq!(post(&mut new, "#mixed", 1, &["from v2"]), [1]);
    assert_eq!(msgs_through(&mut old, "#mixed", 1), [(1, "bob".into(), "from v2".into())]);
    assert_eq!(post(&mut old, "#mixed", 1, &["from v1"]), [2]);
    assert_eq!(msgs_through(&mut new, "#mixed", 2), [(2, "alice".into(), "from v1".into())]);

    // Version 2's requests, answered in order and none fatal: WHO of a room not joined,
    // WATCH with an `on` that is neither 0 nor 1, WHO and WATCH of the room (the version 1
    // member counted), a bad room name, and WATCH 0 (not answered). tests/presence.rs has
    // the rest of who is here.
    let who = |room| ClientFrame::Who { room };
    let watch = |room, on| ClientFrame::Watch { room, on };
    new.send_raw(&frames::encode(&[
        who("#elsewhere"),
        watch("#mixed", 2),
        who("#mixed"),
        watch("#mixed", 1),
        who("no room"),
        watch("#mixed", 0),
    ]))
    .expect("send WHO/WATCH");
    expect_error(&mut new, ErrorCode::NotJoined, 0);
    expect_error(&mut new, ErrorCode::Invalid, 0);
    let both = Reply::Members {
        room: "#mixed".into(),
        total: 2,
        users: vec!["alice".into(), "bob".into()],
    };
    assert_eq!(recv(&mut new), both);
    assert_eq!(recv(&mut new), both);
    expect_error(&mut new, ErrorCode::Invalid, 0);
    frames::assert_alive(&mut new);

    // A direct room is a version 2 name: INVALID on version 1, as it says of `@`, and open
    // to its users on version 2 (tests/access.rs has the rest).
    old.send(&ClientFrame::Join { room: "@alice+bob", after: 0, limit: 0 })
        .expect("send JOIN");
    expect_error(&mut old, ErrorCode::Invalid, 0);
    frames::assert_alive(&mut old);
    join(&mut new, "@alice+bob", 0, 0);
    frames::assert_alive(&mut new);

    // The version 1 connection sending WHO gets exactly what version 1 says of an unknown
    // kind, from the kind byte alone; the version 2 one beside it is not disturbed.
    let mut header = 11u32.to_be_bytes().to_vec();
    header.push(0x07);
    old.send_raw(&header).expect("send WHO header");
    expect_fatal(&mut old, ErrorCode::UnknownKind);
    assert_eq!(post(&mut new, "#mixed", 2, &["still here"]), [3]);
    frames::assert_alive(&mut new);
}
}

per_driver! {
fn hello_is_read_by_its_version(driver: Driver) {
    let d = driver.start(&[]);
    let token = d.add_user("alice");
    // Version 1 with a client id behind the token: bytes left over.
    let mut body = vec![1];
    body.extend(frames::str_field(b"alice"));
    body.extend(frames::str_field(token.as_bytes()));
    body.extend(7u64.to_be_bytes());
    let mut c = d.connect();
    c.send_raw(&frames::raw(chatd::protocol::kind::HELLO, &body)).expect("HELLO");
    expect_fatal(&mut c, ErrorCode::Malformed);
    // The same body as version 2 is welcomed, in version 2.
    body[0] = 2;
    let mut c = d.connect();
    c.send_raw(&frames::raw(chatd::protocol::kind::HELLO, &body)).expect("HELLO");
    assert!(matches!(recv(&mut c), Reply::Welcome { version: 2, .. }));
    frames::assert_alive(&mut c);
    // client 0 is version 2 too.
    welcome_v2(&d, "alice", &token, 0);
}
}
