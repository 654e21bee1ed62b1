//! Hostile input on TLS and plain ports: plaintext to a TLS port, TLS to a plain port, a
//! handshake trickled a byte at a time, one never finished, and a flood of handshakes. Each
//! ends only its own connection; a plain member and a TLS member keep chatting throughout.

#[path = "util/pki.rs"]
mod pki;
#[path = "util/tls.rs"]
mod tls;
mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use chatd::client::{Client, Reply};
use chatd::protocol::ClientFrame;
use pki::Pki;
use rustls::ClientConnection;
use tls::TlsClient;
use util::{Daemon, PATIENCE, join, recv};

/// A daemon with a plain and a TLS listener, and two members (plain alice, TLS carol) that
/// prove, round after round, that the server still serves.
struct Arena {
    d: Daemon,
    pki: Pki,
    alice: Client,
    carol: TlsClient,
    rounds: u64,
    _certs: tempfile::TempDir,
}

impl Arena {
    fn start(extra: &[&str]) -> Arena {
        let certs = tempfile::tempdir().expect("temp dir");
        let pki = Pki::new(certs.path());
        let leaf = pki.leaf("server", &["localhost"]);
        let flags = leaf.serve_flags();
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        let d = Daemon::start(&args);
        let mut alice = d.login("alice");
        join(&mut alice, "#arena", 0, 0);
        let token = d.add_user("carol");
        let mut carol =
            TlsClient::connect(d.tls_addrs[0], &pki.ca_pem, "localhost").expect("carol");
        carol.login("carol", &token);
        carol
            .send(&ClientFrame::Join {
                room: "#arena",
                after: 0,
                limit: 0,
            })
            .expect("JOIN");
        assert!(matches!(carol.expect(), Reply::Joined { .. }));
        let mut arena = Arena {
            d,
            pki,
            alice,
            carol,
            rounds: 0,
            _certs: certs,
        };
        arena.check();
        arena
    }

    /// alice's message reaches carol over TLS, and carol's PING is answered.
    #[track_caller]
    fn check(&mut self) {
        self.rounds += 1;
        let n = self.rounds;
        util::send(&mut self.alice, "#arena", n, &format!("round {n}"));
        loop {
            match self.carol.expect() {
                Reply::Msg { text, .. } if text == format!("round {n}") => break,
                Reply::Msg { .. } => {}
                other => panic!("carol got {other:?}"),
            }
        }
        self.carol
            .send(&ClientFrame::Ping { nonce: n })
            .expect("PING");
        assert_eq!(self.carol.expect(), Reply::Pong { nonce: n });
        let (mut ack, mut own) = (false, false);
        while !(ack && own) {
            match recv(&mut self.alice) {
                Reply::Ack { id, .. } if id == n => ack = true,
                Reply::Msg { text, .. } if text == format!("round {n}") => own = true,
                Reply::Ack { .. } | Reply::Msg { .. } => {}
                other => panic!("alice got {other:?}"),
            }
        }
    }

    fn tls_addr(&self) -> std::net::SocketAddr {
        self.d.tls_addrs[0]
    }
}

/// Reads until the server closes; true if it did within `PATIENCE` (EOF or reset).
fn closed_by_server(mut s: TcpStream) -> bool {
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn plaintext_to_a_tls_port_ends_only_that_connection() {
    let mut a = Arena::start(&[]);
    let mut s = TcpStream::connect(a.tls_addr()).expect("connect");
    let mut hello = Vec::new();
    chatd::protocol::encode_client(
        &ClientFrame::Hello {
            version: 1,
            user: "alice",
            token: "x",
            client: 0,
        },
        &mut hello,
    );
    s.write_all(&hello).expect("write");
    assert!(closed_by_server(s), "the server hung up on plaintext");
    a.check();
}

#[test]
fn tls_to_a_plain_port_reads_as_one_line_and_ends_only_that_connection() {
    let mut a = Arena::start(&[]);
    let err = TlsClient::connect(a.d.addr, &a.pki.ca_pem, "localhost")
        .err()
        .expect("a plain port cannot shake hands");
    let line = err.to_string();
    assert!(line.contains("did not answer with TLS"), "{line}");
    a.check();
}

#[test]
fn a_handshake_trickled_a_byte_at_a_time_completes() {
    let mut a = Arena::start(&[]);
    let config = chatd::tls::client::client_config(Some(&a.pki.ca_pem)).expect("config");
    let name = chatd::tls::client::server_name("localhost").expect("name");
    let mut conn = ClientConnection::new(config, name).expect("client");
    let mut tcp = TcpStream::connect(a.tls_addr()).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    tcp.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).expect("to memory");
    }
    for byte in &hello {
        tcp.write_all(std::slice::from_ref(byte)).expect("one byte");
        // Pacing, not synchronisation: so that the server sees many partial records.
        std::thread::sleep(Duration::from_millis(1));
    }
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).expect("handshake completes");
    }
    a.check();
}

#[test]
fn a_handshake_never_finished_is_cut_at_the_handshake_timeout() {
    let mut a = Arena::start(&["--handshake-timeout", "1s"]);
    let silent = TcpStream::connect(a.tls_addr()).expect("connect");
    // Half a handshake: a ClientHello, then nothing.
    let config = chatd::tls::client::client_config(Some(&a.pki.ca_pem)).expect("config");
    let name = chatd::tls::client::server_name("localhost").expect("name");
    let mut conn = ClientConnection::new(config, name).expect("client");
    let mut half = TcpStream::connect(a.tls_addr()).expect("connect");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("to memory");
    half.write_all(&hello).expect("ClientHello");
    assert!(closed_by_server(silent), "a silent connection is cut");
    assert!(closed_by_server(half), "a half handshake is cut");
    a.check();
}

#[test]
fn a_flood_of_handshakes_does_not_stall_members() {
    let mut a = Arena::start(&["--tls-handshakes", "8"]);
    let before = a.d.rss_kib();
    let config = chatd::tls::client::client_config(Some(&a.pki.ca_pem)).expect("config");
    let mut held = Vec::new();
    for round in 0..5 {
        // Each sends its ClientHello, making the server do its share of the handshake, and
        // never finishes: the kernel's backlog holds those past --tls-handshakes.
        for _ in 0..60 {
            let name = chatd::tls::client::server_name("localhost").expect("name");
            let mut conn = ClientConnection::new(Arc::clone(&config), name).expect("client");
            let mut s = TcpStream::connect(a.tls_addr()).expect("connect");
            let mut hello = Vec::new();
            conn.write_tls(&mut hello).expect("to memory");
            s.write_all(&hello).expect("ClientHello");
            held.push(s);
        }
        a.check();
        assert!(round < 5);
    }
    a.d.assert_rss_bounded(before, 64 * 1024);
    drop(held);
    // Once the flood lets go, a new TLS client gets in.
    let mut late = TlsClient::connect(a.tls_addr(), &a.pki.ca_pem, "localhost").expect("late");
    let token = a.d.add_user("late");
    late.login("late", &token);
    a.check();
}
