//! A whole conversation over real TCP: HELLO, JOIN, SEND, ACK, MSG, PING, BYE.

mod util;

use chatd::client::Reply;
use chatd::protocol::ClientFrame;
use util::{Daemon, join, recv, recv_msgs, recv_until_close, send};

#[test]
fn a_sender_gets_its_ack_and_its_own_msg_and_a_member_gets_the_msg() {
    let d = Daemon::start(&[]);
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    assert_eq!(join(&mut alice, "#general", 0, 0), (0, 0));
    assert_eq!(join(&mut bob, "#general", 0, 0), (0, 0));
    send(&mut alice, "#general", 41, "hello bob");
    let mut others = Vec::new();
    let got = recv_msgs(&mut alice, 1, &mut others);
    assert_eq!(
        got,
        vec![("#general".into(), 1, "alice".into(), "hello bob".into())]
    );
    if others.is_empty() {
        others.push(recv(&mut alice));
    }
    assert_eq!(others, vec![Reply::Ack { id: 41, seq: 1 }]);
    let mut none = Vec::new();
    let got = recv_msgs(&mut bob, 1, &mut none);
    assert_eq!(
        got,
        vec![("#general".into(), 1, "alice".into(), "hello bob".into())]
    );
    assert!(
        none.is_empty(),
        "bob sent nothing and is owed no ACK: {none:?}"
    );

    bob.send(&ClientFrame::Ping { nonce: 99 }).expect("ping");
    assert_eq!(recv(&mut bob), Reply::Pong { nonce: 99 });
    bob.send(&ClientFrame::Bye).expect("bye");
    assert_eq!(recv_until_close(&mut bob), vec![]);
}

#[test]
fn ipv4_and_ipv6_listeners_serve_the_same_rooms() {
    let v6_available = std::net::TcpListener::bind("[::1]:0").is_ok();
    if !v6_available {
        eprintln!("skipped: this machine has no IPv6 loopback");
        return;
    }
    let d = Daemon::start(&["--listen", "127.0.0.1:0", "--listen", "[::1]:0"]);
    assert_eq!(d.addrs.len(), 2);
    assert!(
        d.addrs[0].is_ipv4() && d.addrs[1].is_ipv6(),
        "{:?}",
        d.addrs
    );
    let alice_token = d.add_user("alice");
    let mut alice = d.login_with("alice", &alice_token);
    let bob_token = d.add_user("bob");
    let mut bob = chatd::client::Client::connect(d.addrs[1]).expect("connect over IPv6");
    bob.set_timeout(Some(util::PATIENCE)).expect("timeout");
    bob.send(&ClientFrame::Hello {
        version: 1,
        user: "bob",
        token: &bob_token,
        client: 0,
    })
    .expect("hello");
    assert!(matches!(recv(&mut bob), Reply::Welcome { .. }));
    join(&mut alice, "#both", 0, 0);
    join(&mut bob, "#both", 0, 0);
    send(&mut bob, "#both", 1, "over v6");
    let mut others = Vec::new();
    let got = recv_msgs(&mut alice, 1, &mut others);
    assert_eq!(
        got,
        vec![("#both".into(), 1, "bob".into(), "over v6".into())]
    );
}
