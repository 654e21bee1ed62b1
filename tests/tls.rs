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
        let flags = leaf.serve_flags();
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
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

/// The leaf certificate the server presented to `c`.
fn presented(c: &TlsClient) -> Vec<u8> {
    c.tls
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("a certificate")
        .to_vec()
}

fn der(path: &std::path::Path) -> Vec<u8> {
    chatd::tls::pem::load_certs(path).expect("certs")[0].to_vec()
}

#[test]
fn sighup_reloads_the_certificate_for_new_handshakes_and_keeps_old_sessions() {
    let t = TlsDaemon::start(&[]);
    let mut old = t.login("alice");
    assert_eq!(presented(&old), der(&t.leaf.cert));
    // Renewal writes new files at the same paths, then signals the daemon.
    let renewed = t.pki.leaf("renewed", &["localhost"]);
    std::fs::copy(&renewed.cert, &t.leaf.cert).expect("copy cert");
    std::fs::copy(&renewed.key, &t.leaf.key).expect("copy key");
    t.d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        t.d.wait_for_log("TLS certificate reloaded"),
        "{:#?}",
        t.d.log_lines()
    );
    let new = t.connect();
    assert_eq!(
        presented(&new),
        der(&renewed.cert),
        "a new handshake sees the new one"
    );
    old.send(&ClientFrame::Ping { nonce: 1 }).expect("PING");
    assert_eq!(
        old.expect(),
        Reply::Pong { nonce: 1 },
        "the old session goes on"
    );

    std::fs::write(&t.leaf.key, "garbage\n").expect("break the key");
    t.d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        t.d.wait_for_log_line(|l| l.contains("not reloaded") && l.contains("server.key")),
        "{:#?}",
        t.d.log_lines()
    );
    let after = t.connect();
    assert_eq!(
        presented(&after),
        der(&renewed.cert),
        "a bad file keeps the good one"
    );
}

#[test]
fn frames_split_at_every_byte_across_tls_records_are_reassembled() {
    let t = TlsDaemon::start(&[]);
    let token = t.d.add_user("alice");
    let mut pipeline = Vec::new();
    for frame in [
        ClientFrame::Hello {
            version: 1,
            user: "alice",
            token: &token,
            client: 0,
        },
        ClientFrame::Join {
            room: "#split",
            after: 0,
            limit: 0,
        },
        ClientFrame::Ping { nonce: 3 },
    ] {
        chatd::protocol::encode_client(&frame, &mut pipeline);
    }
    for cut in 1..pipeline.len() {
        let mut c = t.connect();
        // Two writes, two TLS records, the frame boundary anywhere in between.
        c.send_raw(&pipeline[..cut]).expect("first record");
        c.send_raw(&pipeline[cut..]).expect("second record");
        assert!(matches!(c.expect(), Reply::Welcome { .. }), "cut at {cut}");
        assert!(matches!(c.expect(), Reply::Joined { .. }), "cut at {cut}");
        assert_eq!(c.expect(), Reply::Pong { nonce: 3 }, "cut at {cut}");
    }
}

#[test]
fn max_size_frames_cross_many_records_both_ways() {
    let t = TlsDaemon::start(&["--max-frame", "100000"]);
    let mut alice = t.login("alice");
    join(&mut alice, "#big", 0, 0);
    // A MSG of alice's in "#big" is 30 bytes plus the text: this text makes it exactly the
    // limit, about six TLS records.
    let text = "y".repeat(100_000 - 30);
    alice
        .send(&ClientFrame::Send {
            room: "#big",
            id: 1,
            text: &text,
        })
        .expect("SEND");
    let mut got = (false, false);
    while got != (true, true) {
        match alice.expect() {
            Reply::Ack { id: 1, seq: 1 } => got.0 = true,
            Reply::Msg { text: t, .. } => {
                assert_eq!(t.len(), text.len());
                got.1 = true;
            }
            other => panic!("expected ACK and MSG, got {other:?}"),
        }
    }
}

#[test]
fn a_slow_tls_reader_behind_a_busy_room_is_caught_up_from_the_log() {
    let t = TlsDaemon::start(&["--ring-messages", "8", "--send-rate", "0"]);
    let token = t.d.add_user("slow");
    let mut slow = TlsClient::connect_small_window(t.tls_addr(), &t.pki.ca_pem, "localhost", 4096)
        .expect("connect");
    slow.login("slow", &token);
    join(&mut slow, "#busy", 0, 0);
    let mut alice = t.d.login("alice");
    util::join(&mut alice, "#busy", 0, 0);
    let text = "z".repeat(1000);
    for id in 1..=400 {
        util::send(&mut alice, "#busy", id, &text);
    }
    // alice has all her ACKs: every message is stored, most far behind the 8-message window.
    let mut acks = 0;
    while acks < 400 {
        if let Reply::Ack { .. } = util::recv(&mut alice) {
            acks += 1;
        }
    }
    let got = msgs(&mut slow, 400);
    let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=400).collect::<Vec<_>>());
}

#[test]
fn config_check_and_start_up_refuse_a_key_of_another_certificate_naming_it() {
    let certs = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(certs.path());
    let (a, b) = (pki.leaf("a", &["localhost"]), pki.leaf("b", &["localhost"]));
    let file = certs.path().join("chatd.toml");
    let config = |key: &std::path::Path| {
        format!(
            "tls-listen = [\"127.0.0.1:0\"]\ntls-cert = \"{}\"\ntls-key = \"{}\"\n",
            a.cert.display(),
            key.display()
        )
    };
    std::fs::write(&file, config(&a.key)).expect("write");
    let check = |file: &std::path::Path| {
        std::process::Command::new(util::BIN)
            .args(["config", "check"])
            .arg(file)
            .output()
            .expect("run")
    };
    let out = check(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:0 (TLS)"));

    std::fs::write(&file, config(&b.key)).expect("write");
    let out = check(&file);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("b.key") && err.contains("does not belong"),
        "{err}"
    );

    let data = certs.path().join("data");
    let out = std::process::Command::new(util::BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("run");
    assert!(!out.status.success(), "a mismatched key stops start-up");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("b.key"), "{err}");
}
