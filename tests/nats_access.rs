//! How a `--store jetstream` node reaches NATS: a token from a file, TLS to a `tls://` server
//! trusted through `--nats-ca`, a clear refusal to start when either is wrong, and `/healthz`
//! following the engine's connection as NATS goes away and comes back.

#[path = "util/frames.rs"]
mod frames;
#[path = "util/pki.rs"]
mod pki;
mod util;

use std::process::Command;
use std::time::{Duration, Instant};

use chatd::client::Reply;
use util::nats::{self, NatsServer};
use util::{BIN, Daemon, PATIENCE, join, recv, send};

/// A node on the one NATS server at `url`, with `extra` flags.
#[track_caller]
fn node(url: &str, extra: &[&str]) -> Daemon {
    let mut flags = vec![
        "--store",
        "jetstream",
        "--nats",
        url,
        "--jetstream-replicas",
        "1",
    ];
    flags.extend_from_slice(extra);
    Daemon::start(&flags)
}

/// A JOIN, a SEND and its ACK: the node stores through NATS.
#[track_caller]
fn stores_a_message(d: &Daemon) {
    let mut c = d.login("alice");
    join(&mut c, "#door", 0, 0);
    send(&mut c, "#door", 1, "through");
    let deadline = Instant::now() + PATIENCE;
    loop {
        match recv(&mut c) {
            Reply::Ack { id: 1, seq } => {
                assert_eq!(seq, 1);
                return;
            }
            Reply::Msg { .. } => {}
            other => panic!("expected the ACK, got {other:?}"),
        }
        assert!(Instant::now() < deadline, "no ACK");
    }
}

/// Runs `chatd serve` with `flags` until it exits (it must: the start fails) and returns its
/// stderr.
#[track_caller]
fn refused_start(flags: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--listen", "127.0.0.1:0", "--store", "jetstream"])
        .args(["--jetstream-replicas", "1"])
        .args(flags)
        .output()
        .expect("run chatd");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "chatd should not start:\n{stderr}");
    stderr
}

#[test]
fn a_token_from_a_file_lets_the_node_in_and_a_wrong_one_stops_the_start() {
    if nats::skip("NATS token") {
        return;
    }
    let server = NatsServer::single_with(&["--auth", "s3cret-token"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good");
    std::fs::write(&good, "s3cret-token\n").expect("token file");
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "not-it\n").expect("token file");
    let url = server.url();
    let d = node(
        &url,
        &["--nats-token-file", good.to_str().expect("utf-8 path")],
    );
    stores_a_message(&d);
    let started = Instant::now();
    let why = refused_start(&[
        "--nats",
        &url,
        "--nats-token-file",
        bad.to_str().expect("path"),
    ]);
    assert!(
        why.contains("cannot connect to") && why.contains(&url),
        "{why}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "refused within its patience"
    );
    let why = refused_start(&["--nats", &url]);
    assert!(why.contains("cannot connect to"), "no token at all: {why}");
}

/// A credentials file that cannot be used stops the start and names the file. (A working one
/// needs a NATS server in operator mode with account JWTs, which the tests do not set up.)
#[test]
fn an_unusable_creds_file_stops_the_start_naming_it() {
    if nats::skip("NATS creds") {
        return;
    }
    let server = NatsServer::single();
    let url = server.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.creds");
    let why = refused_start(&[
        "--nats",
        &url,
        "--nats-creds",
        missing.to_str().expect("utf-8 path"),
    ]);
    assert!(
        why.contains("cannot read") && why.contains("missing.creds"),
        "{why}"
    );
    let garbage = dir.path().join("garbage.creds");
    std::fs::write(&garbage, "this is not a JWT and an NKey seed\n").expect("creds file");
    let why = refused_start(&[
        "--nats",
        &url,
        "--nats-creds",
        garbage.to_str().expect("utf-8 path"),
    ]);
    assert!(why.contains("garbage.creds"), "{why}");
}

#[test]
fn a_tls_server_is_reached_through_nats_ca_and_refused_without_it() {
    if nats::skip("TLS to NATS") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = pki::Pki::new(dir.path());
    let leaf = ca.leaf("nats", &["127.0.0.1", "localhost"]);
    let (cert, key) = (
        leaf.cert.display().to_string(),
        leaf.key.display().to_string(),
    );
    let server = NatsServer::single_with(&["--tls", "--tlscert", &cert, "--tlskey", &key]);
    let url = format!("tls://127.0.0.1:{}", server.client_port());
    let d = node(
        &url,
        &["--nats-ca", ca.ca_pem.to_str().expect("utf-8 path")],
    );
    stores_a_message(&d);
    // Without the CA, the server's certificate is not trusted.
    let why = refused_start(&["--nats", &url]);
    assert!(why.contains("cannot connect to"), "{why}");
}

/// `/healthz` of the daemon's metrics listener: the status and the body.
#[track_caller]
fn healthz(d: &Daemon) -> (u16, String) {
    assert!(d.wait_for_log("metrics: serving"), "{:#?}", d.log_lines());
    let port: u16 = d
        .log_lines()
        .iter()
        .find_map(|l| l.split("http://").nth(1)?.rsplit(':').next()?.parse().ok())
        .expect("metrics port in the log");
    nats::http_get(port, "/healthz").expect("an answer from /healthz")
}

/// Polls `/healthz` until `status`, within the patience of the tests.
#[track_caller]
fn healthz_becomes(d: &Daemon, status: u16) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (got, body) = healthz(d);
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "healthz stayed {got} ({body}), wanted {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn healthz_follows_the_engines_connection_to_nats() {
    if nats::skip("healthz with JetStream") {
        return;
    }
    let mut server = NatsServer::single();
    let url = server.url();
    let d = node(
        &url,
        &["--nats-ack-timeout", "1s", "--metrics", "127.0.0.1:0"],
    );
    let body = healthz_becomes(&d, 200);
    assert!(body.contains("jetstream: connected"), "{body}");
    stores_a_message(&d);
    server.kill();
    let body = healthz_becomes(&d, 503);
    assert!(body.contains("NATS unreachable"), "{body}");
    // Meanwhile a SEND is refused, not ACKed.
    let mut c = d.login("bob");
    join(&mut c, "#door", 0, 0);
    send(&mut c, "#door", 7, "into the void");
    loop {
        match recv(&mut c) {
            Reply::Error {
                code, reference: 7, ..
            } => {
                assert_eq!(code, chatd::protocol::ErrorCode::Storage.as_u16());
                break;
            }
            Reply::Msg { .. } => {}
            other => panic!("expected STORAGE for the SEND, got {other:?}"),
        }
    }
    server.restart();
    let body = healthz_becomes(&d, 200);
    assert!(body.contains("jetstream: connected"), "{body}");
}
