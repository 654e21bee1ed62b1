//! The web listener end to end: the page and its headers, WebSocket clients beside TCP
//! clients in one room (under both drivers), replay and resume over WebSocket, origins,
//! limits and metrics. HTTPS is `tests/web_tls.rs`, rule-breaking clients
//! `tests/web_hostile.rs`, and the browser itself is driven in `tests/browser.rs`.

#[macro_use]
mod util;
#[path = "util/web.rs"]
mod web_client;

use chatd::client::Reply;
use chatd::protocol::ClientFrame;
use tungstenite::Message;
use util::{Daemon, add_user, join, recv_msgs};
use web_client::{WsClient, header, http};

fn web_daemon(extra: &[&str]) -> Daemon {
    let mut args = vec!["--web-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Daemon::start(&args)
}

#[test]
fn the_page_is_served_with_its_files_and_strict_headers() {
    let d = web_daemon(&[]);
    let web = d.web_addrs[0];
    let page = http(
        web,
        &format!("GET / HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n"),
    );
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("<script type=\"module\" src=\"app.js\">"));
    let csp = header(&page, "Content-Security-Policy").expect("a CSP");
    assert!(csp.contains(&format!("connect-src ws://{web}/ws")), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(header(&page, "X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(header(&page, "Referrer-Policy"), Some("no-referrer"));
    for (path, kind) in [
        ("/app.js", "text/javascript"),
        ("/proto.js", "text/javascript"),
        ("/resume.js", "text/javascript"),
        ("/outbox.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        let r = http(
            web,
            &format!("GET {path} HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n"),
        );
        assert!(r.starts_with("HTTP/1.1 200"), "{path}: {r}");
        let got = header(&r, "Content-Type").unwrap_or_default();
        assert!(got.starts_with(kind), "{path} served as {got}");
    }
    let missing = http(
        web,
        &format!("GET /etc/passwd HTTP/1.1\r\nHost: {web}\r\n\r\n"),
    );
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}

per_driver! {
    // The threads driver serves web listeners with the same connection code as the reactor.
    fn a_websocket_client_and_a_tcp_client_see_each_others_messages(driver: Driver) {
        let d = driver.start(&["--web-listen", "127.0.0.1:0"]);
        let alice = add_user(&d.data_dir(), "alice");
        let bob = add_user(&d.data_dir(), "bob");
        d.wait_for_users(2);
        let mut ws = WsClient::login(d.web_addrs[0], "alice", &alice);
        let mut tcp = d.login_with("bob", &bob);

        ws.send(&ClientFrame::Join {
            room: "lobby",
            after: 0,
            limit: 0,
        });
        assert!(matches!(ws.expect(), Reply::Joined { .. }));
        join(&mut tcp, "lobby", 0, 0);

        ws.send(&ClientFrame::Send {
            room: "lobby",
            id: 1,
            text: "from the browser",
        });
        tcp.send(&ClientFrame::Send {
            room: "lobby",
            id: 7,
            text: "from the terminal",
        })
        .expect("send");

        let mut ws_msgs = Vec::new();
        let mut acked = false;
        while ws_msgs.len() < 2 || !acked {
            match ws.expect() {
                Reply::Msg { user, text, .. } => ws_msgs.push((user, text)),
                Reply::Ack { id: 1, .. } => acked = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(ws_msgs.contains(&("bob".into(), "from the terminal".into())));
        assert!(ws_msgs.contains(&("alice".into(), "from the browser".into())));
        let mut others = Vec::new();
        let tcp_msgs = recv_msgs(&mut tcp, 2, &mut others);
        let texts: Vec<&str> = tcp_msgs.iter().map(|m| m.3.as_str()).collect();
        assert!(texts.contains(&"from the browser"), "{tcp_msgs:?}");
    }
}

#[test]
fn a_websocket_client_resumes_a_room_after_reconnecting() {
    let d = web_daemon(&[]);
    let alice = add_user(&d.data_dir(), "alice");
    d.wait_for_users(1);
    let mut first = WsClient::login(d.web_addrs[0], "alice", &alice);
    first.send(&ClientFrame::Join {
        room: "r",
        after: 0,
        limit: 0,
    });
    assert!(matches!(first.expect(), Reply::Joined { .. }));
    for id in 1..=5 {
        first.send(&ClientFrame::Send {
            room: "r",
            id,
            text: &format!("m{id}"),
        });
    }
    let mut acks = 0;
    while acks < 5 {
        if let Reply::Ack { .. } = first.expect() {
            acks += 1;
        }
    }
    first.send(&ClientFrame::Bye);
    while first.recv().is_some() {}

    let mut again = WsClient::login(d.web_addrs[0], "alice", &alice);
    again.send(&ClientFrame::Join {
        room: "r",
        after: 3,
        limit: u32::MAX,
    });
    match again.expect() {
        Reply::Joined { head, .. } => assert_eq!(head, 5),
        other => panic!("expected JOINED, got {other:?}"),
    }
    let mut seen = Vec::new();
    while seen.len() < 2 {
        if let Reply::Msg { seq, text, .. } = again.expect() {
            seen.push((seq, text));
        }
    }
    assert_eq!(seen, vec![(4, "m4".to_string()), (5, "m5".to_string())]);
}

#[test]
fn a_foreign_origin_is_refused_and_an_allowed_one_let_in() {
    let d = web_daemon(&["--web-allowed-origin", "https://chat.example.org"]);
    let web = d.web_addrs[0];
    let refused = WsClient::connect(web, Some("https://evil.example"));
    match refused {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        Err(e) => panic!("expected 403, got {e}"),
        Ok(_) => panic!("a foreign origin was let in"),
    }
    assert!(WsClient::connect(web, Some("https://chat.example.org")).is_ok());
    assert!(WsClient::connect(web, Some(&format!("http://{web}"))).is_ok());
    assert!(WsClient::connect(web, None).is_ok());
}

#[test]
fn a_text_message_is_refused_with_close_1003() {
    let d = web_daemon(&[]);
    let mut c = WsClient::connect(d.web_addrs[0], None).expect("upgrade");
    c.ws.send(Message::text("HELLO")).expect("send text");
    assert_eq!(c.close_code(), Some(1003));
}

#[test]
fn websocket_connections_count_against_the_connection_limit() {
    let d = web_daemon(&["--max-connections", "2"]);
    let alice = add_user(&d.data_dir(), "alice");
    d.wait_for_users(1);
    let _one = WsClient::login(d.web_addrs[0], "alice", &alice);
    let _two = WsClient::login(d.web_addrs[0], "alice", &alice);
    // The third is refused before any HTTP: 503 and a close.
    let third = http(
        d.web_addrs[0],
        &format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", d.web_addrs[0]),
    );
    assert!(third.starts_with("HTTP/1.1 503"), "{third}");
    // And a TCP client past the limit is told TOO_MANY, as always.
    let mut tcp = d.connect();
    util::expect_fatal(&mut tcp, chatd::protocol::ErrorCode::TooMany);
}
