//! The session under protocol version 2's handshake: HELLO by version, WELCOME's echo, the
//! version and client id kept, and WHO/WATCH, while a version 1 connection (and every
//! connection before HELLO) goes on seeing exactly version 1.

use super::*;
use crate::protocol::HEADER_LEN;
use crate::room::RoomId;

fn hello2<'a>(user: &'a str, token: &'a str, client: u64) -> ClientFrame<'a> {
    ClientFrame::Hello {
        version: 2,
        user,
        token,
        client,
    }
}
fn who(room: &str) -> ClientFrame<'_> {
    ClientFrame::Who { room }
}
fn watch(room: &str, on: u8) -> ClientFrame<'_> {
    ClientFrame::Watch { room, on }
}

/// WELCOME as the fake server sends it, with `version`.
fn welcome(version: u8) -> String {
    let server = format!("chatd/{}", env!("CARGO_PKG_VERSION"));
    format!("WELCOME {version} 1122334455667788 1 65536 60000 {server}")
}

/// A session of alice past a version 2 HELLO with `client`, the WELCOME read.
fn login2(env: &mut FakeEnv, client: u64) -> Session {
    let mut s = Session::new(env.now, &env.limits);
    feed(&mut s, env, &[hello2("alice", "s3cret", client)]);
    let out = read(&mut s, env);
    assert!(out.starts_with("WELCOME 2 ") && !out.contains(';'), "{out}");
    s
}

/// What `frames`, fed in one read to a fresh session, get: the output and whether the
/// session is closing.
fn answers(frames: &[u8]) -> (String, bool) {
    let mut env = FakeEnv::new();
    let mut s = Session::new(env.now, &env.limits);
    assert_eq!(s.receive(frames, &mut env), frames.len());
    (read(&mut s, &mut env), s.is_closing())
}

#[test]
fn a_version_2_hello_is_welcomed_in_version_2_and_its_client_kept() {
    let mut env = FakeEnv::new();
    let mut s = Session::new(env.now, &env.limits);
    feed(
        &mut s,
        &mut env,
        &[hello2("alice", "s3cret", 0x0102_0304_0506_0708)],
    );
    assert_eq!(read(&mut s, &mut env), welcome(2));
    assert_eq!(s.version(), Version::V2);
    assert_eq!(s.client().map(|c| c.get()), Some(0x0102_0304_0506_0708));
    assert_eq!(s.user(), "alice");
    assert!(s.wants_input() && !s.is_closing());
    // client 0: version 2 with no idempotency, and nothing to keep.
    let s = login2(&mut env, 0);
    assert_eq!((s.version(), s.client()), (Version::V2, None));
}

#[test]
fn a_version_1_hello_is_welcomed_in_version_1_as_before() {
    let mut env = FakeEnv::new();
    let mut s = Session::new(env.now, &env.limits);
    assert_eq!(
        s.version(),
        Version::V1,
        "a connection speaks version 1 until HELLO"
    );
    feed(&mut s, &mut env, &[hello("alice", "s3cret")]);
    assert_eq!(read(&mut s, &mut env), welcome(1));
    assert_eq!((s.version(), s.client()), (Version::V1, None));
}

#[test]
fn a_hello_of_another_version_is_unsupported_whatever_its_body() {
    let v1_layout = wire(&[ClientFrame::Hello {
        version: 3,
        user: "alice",
        token: "s3cret",
        client: 0,
    }]);
    for bad in [
        v1_layout,
        // A body no version could read: still the version that decides.
        vec![0, 0, 0, 5, kind::HELLO, 9, 0xff, 0xff, 0],
        vec![0, 0, 0, 2, kind::HELLO, 0],
        vec![0, 0, 0, 2, kind::HELLO, 0xff],
    ] {
        assert_eq!(
            answers(&bad),
            ("ERROR UNSUPPORTED_VERSION 0".into(), true),
            "{bad:02x?}"
        );
    }
}

#[test]
fn a_version_1_hello_with_a_client_id_is_malformed() {
    let mut v1 = wire(&[hello2("alice", "s3cret", 7)]);
    v1[5] = 1;
    assert_eq!(answers(&v1), ("ERROR MALFORMED 0".into(), true));
}

#[test]
fn a_second_hello_of_any_version_is_not_authenticated() {
    for second in [
        wire(&[hello2("alice", "s3cret", 1)]),
        wire(&[hello("alice", "s3cret")]),
        vec![0, 0, 0, 2, kind::HELLO, 7],
    ] {
        let mut env = FakeEnv::new();
        let mut s = login2(&mut env, 5);
        s.receive(&second, &mut env);
        assert_eq!(read(&mut s, &mut env), "ERROR NOT_AUTHENTICATED 0");
        assert!(s.is_closing());
    }
}

#[test]
fn who_and_watch_on_a_version_1_connection_are_unknown_kinds_as_before() {
    for frame in [who("a"), watch("a", 1)] {
        let mut env = FakeEnv::new();
        let mut s = login(&mut env);
        feed(&mut s, &mut env, &[join("a", 0, 0)]);
        assert_eq!(read(&mut s, &mut env), "JOINED a 0 0");
        // Refused from the kind byte: the body it announces never needs to come.
        let whole = wire(&[frame.clone(), ping(1)]);
        let header = &whole[..HEADER_LEN + 1];
        assert_eq!(s.receive(header, &mut env), header.len(), "{frame:?}");
        assert_eq!(read(&mut s, &mut env), "ERROR UNKNOWN_KIND 0", "{frame:?}");
        assert!(s.is_closing() && s.ended_by() == Some(ErrorCode::UnknownKind));
    }
}

#[test]
fn who_before_hello_is_an_unknown_kind_as_before() {
    // Before HELLO no version is in force: version 1's kinds only, checked before HELLO is.
    for frame in [who("a"), watch("a", 0)] {
        assert_eq!(
            answers(&wire(std::slice::from_ref(&frame))),
            ("ERROR UNKNOWN_KIND 0".into(), true),
            "{frame:?}"
        );
    }
}

#[test]
fn a_who_right_behind_a_version_2_hello_is_read_in_version_2() {
    let input = wire(&[hello2("alice", "s3cret", 9), who("a"), ping(4)]);
    assert_eq!(
        answers(&input),
        (format!("{}; ERROR NOT_JOINED 0; PONG 4", welcome(2)), false)
    );
    // The same bytes behind a version 1 HELLO: the WHO ends the connection.
    let input = wire(&[hello("alice", "s3cret"), who("a"), ping(4)]);
    assert_eq!(
        answers(&input),
        (format!("{}; ERROR UNKNOWN_KIND 0", welcome(1)), true)
    );
}

#[test]
fn who_and_watch_check_name_then_membership_then_on() {
    let mut env = FakeEnv::new();
    let mut s = login2(&mut env, 3);
    let input = wire(&[
        who("bad room"),
        watch("", 1),
        who("a"),
        watch("a", 2),
        join("a", 0, 0),
        watch("a", 2),
        ping(1),
    ]);
    assert_eq!(s.receive(&input, &mut env), input.len());
    let refused = "ERROR INVALID 0; ERROR INVALID 0; ERROR NOT_JOINED 0; ERROR NOT_JOINED 0";
    assert_eq!(
        read(&mut s, &mut env),
        format!("{refused}; JOINED a 0 0; ERROR INVALID 0; PONG 1")
    );
    assert!(s.wants_input() && !s.is_closing());
}

/// A version 2 session of `user` (alice or bob) that joined `room`, its output read.
fn member2(env: &mut FakeEnv, user: &str, room: &str) -> Session {
    let token = if user == "alice" { "s3cret" } else { "hunter2" };
    let mut s = Session::new(env.now, &env.limits);
    feed(&mut s, env, &[hello2(user, token, 0), join(room, 0, 0)]);
    let out = read(&mut s, env);
    assert!(out.ends_with(&format!("JOINED {room} 0 0")), "{out}");
    s
}

/// Ends a session as its driver does after a close: every membership, and watch, let go.
fn close(s: &Session, env: &mut FakeEnv) {
    for (room, watching) in s.memberships() {
        env.left(room, s.user(), watching);
    }
}

#[test]
fn who_lists_each_user_once_in_byte_order() {
    let mut env = FakeEnv::new();
    let mut alice = member2(&mut env, "alice", "a");
    let _bob = member2(&mut env, "bob", "a");
    let _alice_again = member2(&mut env, "alice", "a");
    let _elsewhere = member2(&mut env, "bob", "b");
    feed(&mut alice, &mut env, &[who("a"), who("b"), ping(1)]);
    assert_eq!(
        read(&mut alice, &mut env),
        "MEMBERS a 2 alice,bob; ERROR NOT_JOINED 0; PONG 1"
    );
    assert!(!alice.is_watching(RoomId(0)), "WHO does not watch");
}

#[test]
fn watch_sends_members_then_every_change_once() {
    let mut env = FakeEnv::new();
    let mut alice = member2(&mut env, "alice", "a");
    feed(&mut alice, &mut env, &[watch("a", 1)]);
    assert_eq!(read(&mut alice, &mut env), "MEMBERS a 1 alice");
    assert_eq!(env.watchers, 1);
    let bob = member2(&mut env, "bob", "a");
    let mut bob_again = member2(&mut env, "bob", "a");
    assert_eq!(read(&mut alice, &mut env), "PRESENCE a bob true");
    // Bob is here while one of his connections is: a LEAVE of one of two changes nothing.
    feed(&mut bob_again, &mut env, &[leave("a")]);
    assert_eq!(read(&mut bob_again, &mut env), "LEFT a");
    assert_eq!(read(&mut alice, &mut env), "");
    // Closing his last one (a disconnect, a kill, a revocation) is his departure.
    close(&bob, &mut env);
    assert_eq!(read(&mut alice, &mut env), "PRESENCE a bob false");
    assert_eq!(read(&mut alice, &mut env), "", "told once");
}

#[test]
fn a_watcher_is_not_told_of_its_own_user() {
    // Alice watches from one connection: her other connections come and go without her
    // presence changing, since the watching one is joined throughout.
    let mut env = FakeEnv::new();
    let mut alice = member2(&mut env, "alice", "a");
    feed(&mut alice, &mut env, &[watch("a", 1)]);
    assert_eq!(read(&mut alice, &mut env), "MEMBERS a 1 alice");
    let other = member2(&mut env, "alice", "a");
    close(&other, &mut env);
    assert_eq!(read(&mut alice, &mut env), "");
    // Her watching connection leaves: the watch ends with it, and her departure goes only to
    // the other watchers.
    let mut bob = member2(&mut env, "bob", "a");
    feed(&mut bob, &mut env, &[watch("a", 1)]);
    assert_eq!(read(&mut bob, &mut env), "MEMBERS a 2 alice,bob");
    feed(&mut alice, &mut env, &[leave("a"), join("a", 0, 0)]);
    assert_eq!(read(&mut alice, &mut env), "LEFT a; JOINED a 0 0");
    assert_eq!(
        read(&mut bob, &mut env),
        "PRESENCE a alice false; PRESENCE a alice true"
    );
    assert_eq!(env.watchers, 1, "LEAVE ended alice's watch");
}

#[test]
fn watch_0_and_leave_stop_watching() {
    let mut env = FakeEnv::new();
    let mut alice = member2(&mut env, "alice", "a");
    feed(
        &mut alice,
        &mut env,
        &[join("b", 0, 0), watch("a", 1), watch("b", 1)],
    );
    assert_eq!(
        read(&mut alice, &mut env),
        "JOINED b 0 0; MEMBERS a 1 alice; MEMBERS b 1 alice"
    );
    // WATCH 0 is not answered; a second WATCH 0 does nothing.
    feed(
        &mut alice,
        &mut env,
        &[watch("a", 0), watch("a", 0), leave("b"), ping(3)],
    );
    assert_eq!(read(&mut alice, &mut env), "LEFT b; PONG 3");
    assert_eq!(env.watchers, 0);
    assert!(
        alice.aside.is_none(),
        "a session that watches nothing keeps no box for it"
    );
    let _bob = member2(&mut env, "bob", "a");
    assert_eq!(read(&mut alice, &mut env), "");
    // A WATCH 1 of a room watched already starts again from a new MEMBERS.
    feed(&mut alice, &mut env, &[watch("a", 1), watch("a", 1)]);
    assert_eq!(
        read(&mut alice, &mut env),
        "MEMBERS a 2 alice,bob; MEMBERS a 2 alice,bob"
    );
    assert_eq!(env.watchers, 1);
    assert_eq!(
        alice
            .memberships()
            .map(|(r, w)| (r.name.to_string(), w))
            .collect::<Vec<_>>(),
        [("a".to_string(), true)]
    );
    let a = alice
        .memberships()
        .map(|(r, _)| r.id)
        .next()
        .expect("room a");
    assert!(
        alice.watches(a),
        "the reactor services alice for a's presence"
    );
    feed(&mut alice, &mut env, &[watch("a", 0), ping(4)]);
    assert_eq!(read(&mut alice, &mut env), "PONG 4");
    assert!(!alice.watches(a), "and no longer after WATCH 0");
    feed(&mut alice, &mut env, &[watch("a", 1)]);
    assert_eq!(read(&mut alice, &mut env), "MEMBERS a 2 alice,bob");
    close(&alice, &mut env);
    assert_eq!(env.watchers, 0, "a close ends the watch");
}

#[test]
fn a_watcher_left_behind_by_the_log_gets_a_new_members() {
    let mut env = FakeEnv::new();
    let mut alice = member2(&mut env, "alice", "a");
    feed(&mut alice, &mut env, &[watch("a", 1)]);
    assert_eq!(read(&mut alice, &mut env), "MEMBERS a 1 alice");
    // More changes than the log keeps, with no fill between: the watcher lapsed.
    for _ in 0..crate::presence::LOG_EVENTS {
        let bob = member2(&mut env, "bob", "a");
        close(&bob, &mut env);
    }
    let _bob = member2(&mut env, "bob", "a");
    assert_eq!(read(&mut alice, &mut env), "MEMBERS a 2 alice,bob");
    assert_eq!(read(&mut alice, &mut env), "");
}

#[test]
fn presence_waits_while_the_client_is_not_reading() {
    let mut env = FakeEnv::new();
    let mut alice = member2(&mut env, "alice", "a");
    feed(&mut alice, &mut env, &[watch("a", 1)]);
    // A few changes, then a client that reads nothing: presence stops at the high-water
    // mark, and what is owed stays in the log.
    let bob = member2(&mut env, "bob", "a");
    close(&bob, &mut env);
    let filler = "x".repeat(OUT_HIGH_WATER);
    alice.out.push_frame(&ServerFrame::Error {
        code: ErrorCode::Invalid.as_u16(),
        reference: 0,
        message: &filler[..60_000],
    });
    alice.out.push_frame(&ServerFrame::Error {
        code: ErrorCode::Invalid.as_u16(),
        reference: 0,
        message: &filler[..10_000],
    });
    alice.fill(&mut env);
    let queued = alice.out.owned_bytes();
    alice.fill(&mut env);
    assert_eq!(
        alice.out.owned_bytes(),
        queued,
        "nothing more queued while unread"
    );
    let out = decode(&read_bytes(&mut alice, &mut env), DEFAULT_MAX_FRAME);
    let tail: Vec<&str> = out.iter().rev().take(2).rev().map(String::as_str).collect();
    assert_eq!(
        tail,
        ["PRESENCE a bob true", "PRESENCE a bob false"],
        "{:?}",
        &out[..1]
    );
}

#[test]
fn a_who_of_a_watched_room_is_the_watch_s_new_snapshot() {
    let mut env = FakeEnv::new();
    let mut alice = member2(&mut env, "alice", "a");
    feed(&mut alice, &mut env, &[watch("a", 1)]);
    assert_eq!(read(&mut alice, &mut env), "MEMBERS a 1 alice");
    // Bob's arrival is logged but not yet sent when the WHO comes: the MEMBERS shows him,
    // and no PRESENCE repeats it.
    let _bob = member2(&mut env, "bob", "a");
    feed(&mut alice, &mut env, &[who("a")]);
    assert_eq!(read(&mut alice, &mut env), "MEMBERS a 2 alice,bob");
    let bob = member2(&mut env, "bob", "b");
    feed(&mut alice, &mut env, &[join("b", 0, 0), who("b")]);
    assert_eq!(
        read(&mut alice, &mut env),
        "JOINED b 0 0; MEMBERS b 2 alice,bob"
    );
    close(&bob, &mut env);
    assert_eq!(read(&mut alice, &mut env), "", "b is not watched");
}

#[test]
fn members_lists_what_fits_in_max_frame_and_counts_everyone() {
    // 1 + 2 + 1 + 4 + 2 bytes of MEMBERS, then 7 for alice: bob's 5 would pass 20.
    let mut env = FakeEnv::new();
    let mut alice = member2(&mut env, "alice", "a");
    let _bob = member2(&mut env, "bob", "a");
    env.limits.max_frame = 20;
    feed(&mut alice, &mut env, &[who("a")]);
    let out = decode(&read_bytes(&mut alice, &mut env), DEFAULT_MAX_FRAME);
    assert_eq!(out, ["MEMBERS a 2 alice"]);
}

#[test]
fn a_version_2_conversation_is_a_version_1_conversation() {
    // Everything version 1 has works the same on version 2: only WELCOME's version differs.
    let talk = |v2: bool| {
        let mut env = FakeEnv::new();
        let mut s = if v2 {
            login2(&mut env, 77)
        } else {
            login(&mut env)
        };
        feed(
            &mut s,
            &mut env,
            &[join("a", 0, ALL), send("a", 1, "hi"), send("b", 2, "x")],
        );
        env.store(&mut s);
        let mut out = read(&mut s, &mut env);
        feed(&mut s, &mut env, &[leave("a"), ping(5), ClientFrame::Bye]);
        out = format!("{out}; {}", read(&mut s, &mut env));
        assert!(s.is_done());
        out
    };
    let v1 = talk(false);
    assert_eq!(
        v1,
        "JOINED a 0 0; ERROR NOT_JOINED 2; ACK 1 1; MSG a 1 alice hi; LEFT a; PONG 5"
    );
    assert_eq!(talk(true), v1);
}
