//! TLS on the reactors, against the real daemon: the protocol round trip inside TLS, replay
//! from disk, certificate reload, and TLS-only servers.

#[path = "util/pki.rs"]
mod pki;
#[path = "util/tls.rs"]
mod tls;
mod util;

use chatd::client::Reply;
use chatd::protocol::ClientFrame;
use pki::{Leaf, Pki};
use tls::TlsClient;
use util::{Daemon, TLS_ONLY};

/// A daemon with a TLS listener (and a plain one unless `TLS_ONLY` is among `extra`), its
/// certificate signed by a fresh test CA.
struct TlsDaemon {
    d: Daemon,
    pki: Pki,
    leaf: Leaf,
    _certs: tempfile::TempDir,
}

impl TlsDaemon {
    #[track_caller]
    fn start(extra: &[&str]) -> TlsDaemon {
        let certs = tempfile::tempdir().expect("temp dir");
        let pki = Pki::new(certs.path());
        let leaf = pki.leaf("server", &["localhost", "127.0.0.1"]);
        let (cert, key) = (
            leaf.cert.display().to_string(),
            leaf.key.display().to_string(),
        );
        let mut args = vec![
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ];
        args.extend_from_slice(extra);
        let d = Daemon::start(&args);
        TlsDaemon {
            d,
            pki,
            leaf,
            _certs: certs,
        }
    }

    fn tls_addr(&self) -> std::net::SocketAddr {
        self.d.tls_addrs[0]
    }

    #[track_caller]
    fn connect(&self) -> TlsClient {
        TlsClient::connect(self.tls_addr(), &self.pki.ca_pem, "localhost").expect("TLS connect")
    }

    #[track_caller]
    fn login(&self, user: &str) -> TlsClient {
        let token = self.d.add_user(user);
        let mut c = self.connect();
        c.login(user, &token);
        c
    }
}

#[track_caller]
fn join(c: &mut TlsClient, room: &str, after: u64, limit: u32) -> (u64, u64) {
    c.send(&ClientFrame::Join { room, after, limit })
        .expect("JOIN");
    match c.expect() {
        Reply::Joined { first, head, .. } => (first, head),
        other => panic!("expected JOINED, got {other:?}"),
    }
}

/// Sends `texts` to `room` and waits for each ACK and own MSG; returns the seqs.
#[track_caller]
fn post(c: &mut TlsClient, room: &str, texts: &[&str]) -> Vec<u64> {
    for (id, text) in (1..).zip(texts) {
        c.send(&ClientFrame::Send { room, id, text }).expect("SEND");
    }
    let mut seqs = vec![0; texts.len()];
    let mut own = 0;
    while own < texts.len() || seqs.contains(&0) {
        match c.expect() {
            Reply::Ack { id, seq } => seqs[usize::try_from(id - 1).expect("small")] = seq,
            Reply::Msg { .. } => own += 1,
            other => panic!("expected ACK or MSG, got {other:?}"),
        }
    }
    seqs
}

#[track_caller]
fn msgs(c: &mut TlsClient, n: usize) -> Vec<(u64, String)> {
    (0..n)
        .map(|_| match c.expect() {
            Reply::Msg { seq, text, .. } => (seq, text),
            other => panic!("expected MSG, got {other:?}"),
        })
        .collect()
}

#[test]
fn the_protocol_round_trips_inside_tls_and_a_plain_client_shares_the_room() {
    let t = TlsDaemon::start(&[]);
    let mut alice = t.login("alice");
    let mut bob = t.d.login("bob");
    join(&mut alice, "#r", 0, 0);
    util::join(&mut bob, "#r", 0, 0);
    assert_eq!(post(&mut alice, "#r", &["over tls"]), vec![1]);
    let mut others = Vec::new();
    let got = util::recv_msgs(&mut bob, 1, &mut others);
    assert_eq!(got[0].3, "over tls");
    util::send(&mut bob, "#r", 9, "in the clear");
    assert_eq!(msgs(&mut alice, 1), vec![(2, "in the clear".to_string())]);
    alice.send(&ClientFrame::Ping { nonce: 5 }).expect("PING");
    assert_eq!(alice.expect(), Reply::Pong { nonce: 5 });
    alice.send(&ClientFrame::Bye).expect("BYE");
    assert_eq!(
        alice.recv().expect("clean close"),
        None,
        "close_notify, then EOF"
    );
}

#[test]
fn replay_after_a_restart_comes_from_disk_over_tls() {
    let mut t = TlsDaemon::start(&[]);
    let mut alice = t.login("alice");
    join(&mut alice, "#r", 0, 0);
    let texts: Vec<String> = (1..=30).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    assert_eq!(post(&mut alice, "#r", &refs).len(), 30);
    drop(alice);
    let dir = std::mem::replace(&mut t.d.dir, tempfile::tempdir().expect("tmp"));
    t.d.signal(nix::sys::signal::Signal::SIGTERM);
    t.d.wait_exit();
    let (cert, key) = (
        t.leaf.cert.display().to_string(),
        t.leaf.key.display().to_string(),
    );
    let d = Daemon::start_in(
        dir,
        &[
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    );
    let t2 = TlsDaemon { d, ..t };
    let mut bob = t2.login("bob");
    assert_eq!(join(&mut bob, "#r", 10, u32::MAX), (1, 30));
    let got = msgs(&mut bob, 20);
    assert_eq!(got.first(), Some(&(11, "m11".to_string())));
    assert_eq!(got.last(), Some(&(30, "m30".to_string())));
}

#[test]
fn a_server_may_listen_on_tls_alone() {
    let t = TlsDaemon::start(&[TLS_ONLY]);
    assert!(t.d.addrs.is_empty(), "no plain listener");
    let mut alice = t.login("alice");
    join(&mut alice, "#only", 0, 0);
    assert_eq!(post(&mut alice, "#only", &["hi"]), vec![1]);
}
