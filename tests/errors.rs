//! Every error row of the contract over real TCP: the exact code and `ref`, and what follows.
//! A fatal error is the last frame before the server closes; after a non-fatal one the
//! connection keeps working, which each test proves with a PING/PONG round trip.
//!
//! SLOW_CONSUMER has its own test elsewhere, and so has STORAGE: a full disk in
//! `tests/durability.rs`, a lost NATS quorum in `tests/cluster.rs`. INTERNAL has no input that
//! reaches it.

#[path = "util/frames.rs"]
mod frames;
#[macro_use]
mod util;

use std::time::{Duration, Instant};

use chatd::client::{Client, Reply};
use chatd::protocol::{ClientFrame, ErrorCode, kind};
use frames::{assert_alive, raw, str_field};
use nix::sys::signal::Signal;
use util::{Driver, expect_error, expect_fatal, join, recv, recv_until_close, send};

fn hello<'a>(user: &'a str, token: &'a str) -> ClientFrame<'a> {
    ClientFrame::Hello {
        version: 1,
        user,
        token,
        client: 0,
    }
}

/// Writes `bytes` and asserts they are answered with fatal `code`.
#[track_caller]
fn assert_fatal(c: &mut Client, bytes: &[u8], code: ErrorCode) {
    c.send_raw(bytes).expect("write");
    expect_fatal(c, code);
}

per_driver! {
fn a_zero_length_frame_is_malformed(driver: Driver) {
    let d = driver.start(&[]);
    assert_fatal(&mut d.connect(), &[0, 0, 0, 0], ErrorCode::Malformed);
    assert_fatal(&mut d.login("alice"), &[0, 0, 0, 0], ErrorCode::Malformed);
}
}

per_driver! {
fn a_hello_with_bytes_left_over_is_malformed(driver: Driver) {
    let d = driver.start(&[]);
    let token = d.add_user("alice");
    let mut body = vec![1];
    body.extend(str_field(b"alice"));
    body.extend(str_field(token.as_bytes()));
    body.push(0);
    assert_fatal(
        &mut d.connect(),
        &raw(kind::HELLO, &body),
        ErrorCode::Malformed,
    );
}
}

per_driver! {
fn invalid_utf8_in_the_text_of_a_send_is_malformed(driver: Driver) {
    let d = driver.start(&[]);
    let mut c = d.login("alice");
    join(&mut c, "#r", 0, 0);
    let mut body = str_field(b"#r");
    body.extend(5u64.to_be_bytes());
    body.extend([b'o', b'k', 0xff, 0xfe]);
    assert_fatal(&mut c, &raw(kind::SEND, &body), ErrorCode::Malformed);
}
}

per_driver! {
fn a_str_running_past_the_body_is_malformed(driver: Driver) {
    let d = driver.start(&[]);
    let mut c = d.login("alice");
    // A room claiming 200 bytes in a body of 2 + 3.
    let mut body = 200u16.to_be_bytes().to_vec();
    body.extend(b"#ro");
    assert_fatal(&mut c, &raw(kind::JOIN, &body), ErrorCode::Malformed);
}
}

per_driver! {
fn a_bye_with_a_body_is_malformed(driver: Driver) {
    let d = driver.start(&[]);
    assert_fatal(
        &mut d.login("alice"),
        &raw(kind::BYE, &[0]),
        ErrorCode::Malformed,
    );
}
}

per_driver! {
fn a_declared_length_over_max_frame_is_too_large_before_any_body(driver: Driver) {
    let d = driver.start(&["--max-frame", "1024"]);
    let mut c = d.login("alice");
    // The header alone: no kind byte, no body follows.
    assert_fatal(&mut c, &1025u32.to_be_bytes(), ErrorCode::TooLarge);
}
}

per_driver! {
fn a_kind_the_server_does_not_take_is_unknown_kind(driver: Driver) {
    let d = driver.start(&[]);
    assert_fatal(
        &mut d.login("alice"),
        &raw(0x07, &[]),
        ErrorCode::UnknownKind,
    );
    // A server kind echoed back, judged by its kind byte before the 99 body bytes it announces.
    let mut header = 100u32.to_be_bytes().to_vec();
    header.push(kind::WELCOME);
    assert_fatal(&mut d.login("bob"), &header, ErrorCode::UnknownKind);
}
}

per_driver! {
fn hello_of_a_version_the_server_does_not_speak_is_unsupported_version(driver: Driver) {
    let d = driver.start(&[]);
    let token = d.add_user("alice");
    let mut c = d.connect();
    c.send(&ClientFrame::Hello {
        version: 3,
        user: "alice",
        token: &token,
        client: 0,
    })
    .expect("HELLO");
    expect_fatal(&mut c, ErrorCode::UnsupportedVersion);
    // Whatever follows the version byte: only its version could say how to read it.
    for body in [&[0][..], &[9, 0xff, 0xff, 0xff], &[0xff]] {
        assert_fatal(
            &mut d.connect(),
            &raw(kind::HELLO, body),
            ErrorCode::UnsupportedVersion,
        );
    }
}
}

per_driver! {
fn a_wrong_token_an_unknown_user_or_an_invalid_name_is_auth_failed(driver: Driver) {
    let d = driver.start(&[]);
    let token = d.add_user("alice");
    let wrong = format!("{token}x");
    for (user, token) in [
        ("alice", wrong.as_str()),
        ("alice", ""),
        ("mallory", token.as_str()),
        ("bad name", token.as_str()),
        ("", token.as_str()),
    ] {
        let mut c = d.connect();
        c.send(&hello(user, token)).expect("HELLO");
        expect_fatal(&mut c, ErrorCode::AuthFailed);
    }
}
}

per_driver! {
fn a_frame_before_hello_or_a_second_hello_is_not_authenticated(driver: Driver) {
    let d = driver.start(&[]);
    let token = d.add_user("alice");
    let mut c = d.connect();
    c.send(&ClientFrame::Join {
        room: "#r",
        after: 0,
        limit: 0,
    })
    .expect("JOIN");
    expect_fatal(&mut c, ErrorCode::NotAuthenticated);

    let mut c = d.login_with("alice", &token);
    c.send(&hello("alice", &token)).expect("second HELLO");
    expect_fatal(&mut c, ErrorCode::NotAuthenticated);
}
}

per_driver! {
fn a_bad_room_name_is_invalid_and_not_fatal(driver: Driver) {
    let d = driver.start(&[]);
    let mut c = d.login("alice");
    let long = "r".repeat(65);
    for room in ["", "has space", "caf\u{e9}", "a/b", long.as_str()] {
        c.send(&ClientFrame::Join {
            room,
            after: 0,
            limit: 0,
        })
        .expect("JOIN");
        expect_error(&mut c, ErrorCode::Invalid, 0);
        send(&mut c, room, 77, "hi");
        expect_error(&mut c, ErrorCode::Invalid, 77);
        c.send(&ClientFrame::Leave { room }).expect("LEAVE");
        expect_error(&mut c, ErrorCode::Invalid, 0);
    }
    assert_alive(&mut c);
    assert_eq!(
        join(&mut c, &"r".repeat(64), 0, 0),
        (0, 0),
        "64 bytes is fine"
    );
}
}

per_driver! {
fn an_empty_text_is_invalid_with_the_send_id(driver: Driver) {
    let d = driver.start(&[]);
    let mut c = d.login("alice");
    join(&mut c, "#r", 0, 0);
    send(&mut c, "#r", 5, "");
    expect_error(&mut c, ErrorCode::Invalid, 5);
    assert_alive(&mut c);
}
}

per_driver! {
fn a_send_whose_msg_would_exceed_max_frame_is_invalid_with_the_send_id(driver: Driver) {
    let d = driver.start(&["--max-frame", "1024"]);
    let mut c = d.login("alice");
    join(&mut c, "#r", 0, 0);
    // MSG length = 21 + room + user + text = 28 + text for "#r" from "alice".
    send(&mut c, "#r", 1, &"x".repeat(1024 - 28));
    let mut got = vec![recv(&mut c), recv(&mut c)];
    got.retain(|r| !matches!(r, Reply::Msg { .. }));
    assert_eq!(
        got,
        [Reply::Ack { id: 1, seq: 1 }],
        "a MSG of exactly max_frame"
    );
    // The SEND itself (11 + room + text = 1010 bytes) is within max_frame: only its MSG is not.
    send(&mut c, "#r", 2, &"x".repeat(1024 - 27));
    expect_error(&mut c, ErrorCode::Invalid, 2);
    assert_alive(&mut c);
}
}

per_driver! {
fn send_or_leave_of_a_room_not_joined_is_not_joined(driver: Driver) {
    let d = driver.start(&[]);
    let mut c = d.login("alice");
    send(&mut c, "#r", 9, "hi");
    expect_error(&mut c, ErrorCode::NotJoined, 9);
    c.send(&ClientFrame::Leave { room: "#r" }).expect("LEAVE");
    expect_error(&mut c, ErrorCode::NotJoined, 0);
    join(&mut c, "#r", 0, 0);
    c.send(&ClientFrame::Leave { room: "#r" }).expect("LEAVE");
    assert_eq!(recv(&mut c), Reply::Left { room: "#r".into() });
    send(&mut c, "#r", 10, "hi");
    expect_error(&mut c, ErrorCode::NotJoined, 10);
    assert_alive(&mut c);
}
}

per_driver! {
fn sends_beyond_the_burst_are_rate_limited_and_not_stored(driver: Driver) {
    let d = driver.start(&["--send-rate", "1", "--send-burst", "3"]);
    let mut c = d.login("alice");
    join(&mut c, "#r", 0, 0);
    let sends: Vec<ClientFrame<'_>> = (1..=4)
        .map(|id| ClientFrame::Send {
            room: "#r",
            id,
            text: "hi",
        })
        .collect();
    c.send_raw(&frames::encode(&sends))
        .expect("four SENDs in one write");
    let (mut acks, mut msgs, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    while acks.len() + msgs.len() + errors.len() < 7 {
        match recv(&mut c) {
            Reply::Ack { id, seq } => acks.push((id, seq)),
            Reply::Msg { seq, .. } => msgs.push(seq),
            Reply::Error {
                code, reference, ..
            } => errors.push((code, reference)),
            other => panic!("unexpected {other:?}"),
        }
    }
    acks.sort_unstable();
    assert_eq!(acks, [(1, 1), (2, 2), (3, 3)]);
    assert_eq!(msgs, [1, 2, 3]);
    assert_eq!(errors, [(ErrorCode::RateLimited.as_u16(), 4)]);
    assert_alive(&mut c);
    let mut bob = d.login("bob");
    assert_eq!(
        join(&mut bob, "#r", 0, 0),
        (1, 3),
        "the refused SEND was not stored"
    );
}
}

per_driver! {
fn joining_more_rooms_than_a_connection_may_is_too_many_and_not_fatal(driver: Driver) {
    let d = driver.start(&["--max-rooms-per-connection", "2"]);
    let mut c = d.login("alice");
    join(&mut c, "#a", 0, 0);
    join(&mut c, "#b", 0, 0);
    c.send(&ClientFrame::Join {
        room: "#c",
        after: 0,
        limit: 0,
    })
    .expect("JOIN");
    expect_error(&mut c, ErrorCode::TooMany, 0);
    assert_alive(&mut c);
    assert_eq!(
        join(&mut c, "#a", 0, 0),
        (0, 0),
        "a joined room may be joined again"
    );
    c.send(&ClientFrame::Leave { room: "#a" }).expect("LEAVE");
    assert_eq!(recv(&mut c), Reply::Left { room: "#a".into() });
    assert_eq!(join(&mut c, "#c", 0, 0), (0, 0), "a slot freed by LEAVE");
}
}

per_driver! {
fn a_new_room_beyond_the_server_limit_is_too_many_and_not_fatal(driver: Driver) {
    let d = driver.start(&["--max-rooms", "2"]);
    let mut alice = d.login("alice");
    join(&mut alice, "#a", 0, 0);
    join(&mut alice, "#b", 0, 0);
    let mut bob = d.login("bob");
    bob.send(&ClientFrame::Join {
        room: "#c",
        after: 0,
        limit: 0,
    })
    .expect("JOIN");
    expect_error(&mut bob, ErrorCode::TooMany, 0);
    assert_alive(&mut bob);
    assert_eq!(
        join(&mut bob, "#b", 0, 0),
        (0, 0),
        "an existing room is open"
    );
}
}

/// With room for `limit` connections (in all or from this address), one more is refused at
/// once, before it sends anything, and one is accepted again once a slot is closed.
#[track_caller]
fn assert_connection_limit(driver: Driver, flag: &str, limit: usize) {
    let d = driver.start(&[flag, &limit.to_string()]);
    let token = d.add_user("alice");
    let mut first = d.login_with("alice", &token);
    let _others: Vec<Client> = (1..limit).map(|_| d.login_with("alice", &token)).collect();
    let mut over = d.connect();
    expect_fatal(&mut over, ErrorCode::TooMany);

    first.send(&ClientFrame::Bye).expect("BYE");
    assert_eq!(recv_until_close(&mut first), vec![]);
    drop(first);
    assert!(d.wait_for_log("close #"), "the daemon logs the close");
    let mut again = d.login_with("alice", &token);
    assert_alive(&mut again);
}

per_driver! {
fn connections_beyond_max_connections_get_too_many_at_accept(driver: Driver) {
    assert_connection_limit(driver, "--max-connections", 2);
}
}

per_driver! {
fn connections_beyond_the_per_address_limit_get_too_many_at_accept(driver: Driver) {
    assert_connection_limit(driver, "--max-connections-per-ip", 1);
}
}

per_driver! {
fn no_hello_within_the_handshake_timeout_is_timeout(driver: Driver) {
    let d = driver.start(&["--handshake-timeout", "300ms"]);
    let start = Instant::now();
    let mut c = d.connect();
    expect_fatal(&mut c, ErrorCode::Timeout);
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "not before the deadline"
    );
}
}

per_driver! {
fn no_frame_within_the_idle_timeout_is_timeout(driver: Driver) {
    let d = driver.start(&["--idle-timeout", "500ms"]);
    let token = d.add_user("alice");
    let mut c = d.connect();
    let start = Instant::now();
    c.send(&hello("alice", &token)).expect("HELLO");
    assert!(matches!(recv(&mut c), Reply::Welcome { .. }));
    expect_fatal(&mut c, ErrorCode::Timeout);
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "not before the deadline"
    );
}
}

per_driver! {
fn a_client_trickling_a_partial_frame_is_still_idle(driver: Driver) {
    let d = driver.start(&["--idle-timeout", "500ms"]);
    let mut c = d.login("alice");
    // A SEND announcing 2000 bytes, of which a byte goes out whenever 50 ms pass in silence.
    let mut partial = 2000u32.to_be_bytes().to_vec();
    partial.push(kind::SEND);
    partial.extend(str_field(b"#r"));
    partial.resize(1900, b'x');
    c.set_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let deadline = Instant::now() + util::PATIENCE;
    let mut bytes = partial.iter();
    let answer = loop {
        assert!(Instant::now() < deadline, "no TIMEOUT while trickling");
        let byte = bytes
            .next()
            .expect("enough bytes to outlast the idle timeout");
        c.send_raw(std::slice::from_ref(byte)).expect("one byte");
        match c.recv() {
            Ok(Some(reply)) => break reply,
            Ok(None) => panic!("closed without an ERROR"),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("reading: {e}"),
        }
    };
    match answer {
        Reply::Error {
            code, reference: 0, ..
        } if code == ErrorCode::Timeout.as_u16() => {}
        other => panic!("expected TIMEOUT, got {other:?}"),
    }
    c.set_timeout(Some(util::PATIENCE)).expect("timeout");
    assert_eq!(
        recv_until_close(&mut c),
        vec![],
        "nothing after a fatal error"
    );
}
}

per_driver! {
fn sigterm_sends_shutting_down_and_the_daemon_exits_zero(driver: Driver) {
    let mut d = driver.start(&[]);
    let mut c = d.login("alice");
    join(&mut c, "#r", 0, 0);
    assert_alive(&mut c);
    d.signal(Signal::SIGTERM);
    expect_fatal(&mut c, ErrorCode::ShuttingDown);
    drop(c);
    let status = d.wait_exit().expect("chatd exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
}
}
