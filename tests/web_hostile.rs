//! The web listener against clients that break the rules or end on purpose: oversized and
//! stalled request heads, an unsupported WebSocket version, unmasked and oversized frames, a
//! message that ends inside a protocol frame, a Ping flood, and the Close codes that follow
//! BYE, a fatal protocol error and the server's shutdown. Each case watches the server's
//! frames one by one with a hand-rolled client (`RawWs`), down to the TCP close.

#[macro_use]
mod util;
#[path = "util/web.rs"]
mod web_client;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use chatd::client::Reply;
use chatd::fuzzing::ws::{LengthForm, client_frame, masked};
use chatd::protocol::{ClientFrame, ErrorCode, encode_client};
use chatd::web::Opcode;
use nix::sys::signal::Signal;
use util::{Daemon, PATIENCE};
use web_client::{Got, RawWs, WsClient, header, http, upgrade_request};

fn web_daemon(extra: &[&str]) -> Daemon {
    let mut args = vec!["--web-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Daemon::start(&args)
}

fn hello_bytes(user: &str, token: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_client(
        &ClientFrame::Hello {
            version: 1,
            user,
            token,
            client: 0,
        },
        &mut bytes,
    );
    bytes
}

#[track_caller]
fn fatal_code(replies: &[Reply]) -> Option<u16> {
    match replies {
        [
            Reply::Error {
                code, reference: 0, ..
            },
        ] => Some(*code),
        other => panic!("expected one fatal ERROR, got {other:?}"),
    }
}

#[test]
fn a_request_head_over_8_kib_gets_431_and_a_close() {
    let d = web_daemon(&[]);
    let web = d.web_addrs[0];
    let padding = "a".repeat(9 * 1024);
    let response = http(
        web,
        &format!("GET / HTTP/1.1\r\nHost: {web}\r\nX-Padding: {padding}\r\n\r\n"),
    );
    assert!(response.starts_with("HTTP/1.1 431 "), "{response}");
    assert_eq!(header(&response, "Connection"), Some("close"));
}

#[test]
fn half_a_request_head_is_closed_by_the_handshake_timeout() {
    let d = web_daemon(&["--handshake-timeout", "1s"]);
    let web = d.web_addrs[0];
    let started = Instant::now();
    let mut s = TcpStream::connect(web).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s.write_all(format!("GET /ws HTTP/1.1\r\nHost: {web}\r\n").as_bytes())
        .expect("half a head");
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the stalled request was not closed: {e}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );
    // The session's TIMEOUT is a protocol frame: it must never reach an HTTP client.
    assert!(got.is_empty(), "sent {:?}", String::from_utf8_lossy(&got));
}

#[test]
fn an_upgrade_with_version_8_gets_426_naming_13() {
    let d = web_daemon(&[]);
    let web = d.web_addrs[0];
    let request = upgrade_request(web).replace("Version: 13", "Version: 8");
    let response = http(web, &request);
    assert!(response.starts_with("HTTP/1.1 426 "), "{response}");
    assert_eq!(header(&response, "Sec-WebSocket-Version"), Some("13"));
}

#[test]
fn an_unmasked_frame_gets_close_1002() {
    let d = web_daemon(&[]);
    let mut ws = RawWs::upgrade(d.web_addrs[0]);
    let unmasked = client_frame(0x82, None, &hello_bytes("a", "b"), LengthForm::Shortest);
    ws.write(&unmasked);
    assert_eq!(ws.until_close(), (vec![], Some(1002)));
}

#[test]
fn a_frame_declaring_more_than_max_frame_plus_4_gets_1009_from_its_header() {
    let d = web_daemon(&["--max-frame", "1024"]);
    let mut ws = RawWs::upgrade(d.web_addrs[0]);
    // Binary, final, masked, a 16-bit length of 1029 and a mask: no payload follows, so the
    // server can only have decided from the header.
    let [hi, lo] = 1029u16.to_be_bytes();
    ws.write(&[0x82, 0x80 | 126, hi, lo, 1, 2, 3, 4]);
    assert_eq!(ws.until_close(), (vec![], Some(1009)));
}

#[test]
fn a_message_ending_inside_a_protocol_frame_gets_close_1007() {
    let d = web_daemon(&[]);
    let mut ws = RawWs::upgrade(d.web_addrs[0]);
    let hello = hello_bytes("alice", "token");
    ws.write(&masked(Opcode::Binary, &hello[..7]));
    assert_eq!(ws.until_close(), (vec![], Some(1007)));
}

/// Writes Pings to `ws` without reading until the server stops taking them (a write makes
/// no progress for a second) or `most` bytes went out; returns how many did.
fn flood_with_pings(ws: &TcpStream, most: usize) -> usize {
    let ping = masked(Opcode::Ping, &[0x55; 125]);
    let burst: Vec<u8> = ping.repeat((256 * 1024) / ping.len());
    ws.set_write_timeout(Some(Duration::from_secs(1)))
        .expect("write timeout");
    let mut sent = 0;
    let mut at = 0;
    while sent < most {
        match (&*ws).write(&burst[at..]) {
            Ok(n) => {
                sent += n;
                at = (at + n) % burst.len();
            }
            // Nothing taken for a whole second: the server has stopped reading.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return sent;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("flooding: {e}"),
        }
    }
    sent
}

#[test]
fn a_ping_flood_is_paced_and_does_not_stall_another_client() {
    let d = web_daemon(&[]);
    let web = d.web_addrs[0];
    let alice = d.add_user("alice");
    let bob = d.add_user("bob");
    let mut member = WsClient::login(web, "bob", &bob);
    member.join("room");
    let flooder = RawWs::login(web, "alice", &alice);
    let before = d.rss_kib();

    // Unanswered Pongs stop the server reading: the flood stalls far short of the cap,
    // with the kernel's socket buffers full in both directions (about 9 MiB on Linux loopback).
    const CAP: usize = 64 * 1024 * 1024;
    let sent = flood_with_pings(&flooder.stream, CAP);
    assert!(
        sent < CAP,
        "the server took {sent} bytes of Pings unanswered"
    );

    // While the flooder is stuck, another client is served as ever.
    for id in 1..=20 {
        member.send(&ClientFrame::Send {
            room: "room",
            id,
            text: "still here",
        });
        loop {
            match member.expect() {
                Reply::Ack { id: got, .. } if got == id => break,
                Reply::Msg { .. } => {}
                other => panic!("expected ACK {id}, got {other:?}"),
            }
        }
    }
    // What the server holds for the flooder is one read's worth of Pongs, not the flood.
    d.assert_rss_bounded(before, 16 * 1024);
}

per_driver! {
    fn bye_gets_its_answers_then_close_1000_and_the_tcp_close(driver: Driver) {
        let d = driver.start(&["--web-listen", "127.0.0.1:0"]);
        let token = d.add_user("alice");
        let mut ws = RawWs::login(d.web_addrs[0], "alice", &token);
        ws.send(&ClientFrame::Join {
            room: "room",
            after: 0,
            limit: 0,
        });
        ws.send(&ClientFrame::Send {
            room: "room",
            id: 1,
            text: "last words",
        });
        ws.send(&ClientFrame::Bye);
        let (replies, code) = ws.until_close();
        assert_eq!(code, Some(1000), "{replies:?}");
        assert!(matches!(replies.first(), Some(Reply::Joined { .. })), "{replies:?}");
        assert!(
            replies.iter().any(|r| matches!(r, Reply::Ack { id: 1, .. })),
            "the SEND before BYE was not answered: {replies:?}"
        );
        assert!(
            !replies.iter().any(|r| matches!(r, Reply::Error { .. })),
            "{replies:?}"
        );
    }

    fn a_fatal_protocol_error_is_followed_by_close_1008(driver: Driver) {
        let d = driver.start(&["--web-listen", "127.0.0.1:0"]);
        let mut ws = RawWs::upgrade(d.web_addrs[0]);
        ws.send(&ClientFrame::Join {
            room: "room",
            after: 0,
            limit: 0,
        });
        let (replies, code) = ws.until_close();
        assert_eq!(
            fatal_code(&replies),
            Some(ErrorCode::NotAuthenticated.as_u16())
        );
        assert_eq!(code, Some(1008));
    }

    fn sigterm_says_shutting_down_then_close_1001(driver: Driver) {
        let mut d = driver.start(&["--web-listen", "127.0.0.1:0"]);
        let token = d.add_user("alice");
        let mut ws = RawWs::login(d.web_addrs[0], "alice", &token);
        ws.send(&ClientFrame::Ping { nonce: 9 });
        assert_eq!(ws.recv(), Got::Reply(Reply::Pong { nonce: 9 }));
        d.signal(Signal::SIGTERM);
        let (replies, code) = ws.until_close();
        assert_eq!(fatal_code(&replies), Some(ErrorCode::ShuttingDown.as_u16()));
        assert_eq!(code, Some(1001));
        let status = d.wait_exit().expect("the daemon exits after SIGTERM");
        assert!(status.success(), "{status}");
    }
}
