//! The metrics endpoint, scraped with a real HTTP client (curl) while load runs.

#[path = "util/pki.rs"]
mod pki;
#[path = "util/tls.rs"]
mod tls;
mod util;

use std::process::Command;
use std::time::{Duration, Instant};

use util::{Daemon, PATIENCE, join, recv_msgs, send};

/// The address from the daemon's "metrics: serving ... on http://ADDR" line.
fn metrics_addr(d: &Daemon) -> String {
    assert!(d.wait_for_log("metrics: serving"), "{:#?}", d.log_lines());
    d.log_lines()
        .iter()
        .find_map(|l| l.split("http://").nth(1).map(str::to_string))
        .expect("metrics address in the log")
}

fn curl(url: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", url])
        .output()
        .expect("curl is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers and body");
    (head.to_string(), body.to_string())
}

/// The value of the sample line starting with `series` (name and labels).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Scrapes until `check` holds, failing after PATIENCE. The gauges refresh on the daemon's
/// timer, so a condition may need a few scrapes to become true.
#[track_caller]
fn scrape_until(url: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, body) = curl(url);
        if check(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "never saw {what} in:\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_count_connections_frames_messages_fsyncs_and_errors_under_load() {
    let d = Daemon::start(&[
        "--metrics",
        "127.0.0.1:0",
        "--send-rate",
        "50",
        "--send-burst",
        "250",
    ]);
    let base = format!("http://{}", metrics_addr(&d));

    let (head, body) = curl(&format!("{base}/healthz"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "ok\n");
    let (head, _) = curl(&format!("{base}/nope"));
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    join(&mut alice, "#m", 0, 0);
    join(&mut bob, "#m", 0, 0);
    // Load runs in another thread while we scrape: 200 messages, within the burst allowance.
    let sender = std::thread::spawn(move || {
        for id in 1..=200u64 {
            send(&mut alice, "#m", id, "load");
            if id % 5 == 0 {
                let mut others = Vec::new();
                recv_msgs(&mut alice, 5, &mut others);
            }
        }
        alice
    });
    let mut others = Vec::new();
    let mid = curl(&format!("{base}/metrics")).1;
    assert!(
        mid.contains("# TYPE chatd_messages_stored_total counter"),
        "{mid}"
    );
    recv_msgs(&mut bob, 200, &mut others);
    let mut alice = sender.join().expect("sender thread");

    let url = format!("{base}/metrics");
    let body = scrape_until(&url, "200 stored messages", |b| {
        sample(b, "chatd_messages_stored_total").is_some_and(|n| n >= 200.0)
    });
    assert!(sample(&body, "chatd_frames_in_total{kind=\"SEND\"}").is_some_and(|n| n >= 200.0));
    assert!(sample(&body, "chatd_frames_in_total{kind=\"HELLO\"}").is_some_and(|n| n >= 2.0));
    // Each message reaches both members.
    assert!(
        sample(&body, "chatd_fanout_deliveries_total").is_some_and(|n| n >= 400.0),
        "{body}"
    );
    assert!(
        sample(&body, "chatd_fsync_seconds_count").is_some_and(|n| n >= 1.0),
        "{body}"
    );
    assert!(sample(&body, "chatd_log_bytes").is_some_and(|n| n > 200.0 * 20.0));
    assert!(sample(&body, "chatd_bytes_in_total").is_some_and(|n| n > 0.0));
    assert!(sample(&body, "chatd_rooms").is_some_and(|n| n >= 1.0));
    scrape_until(&url, "two ready connections", |b| {
        let ready: f64 = b
            .lines()
            .filter(|l| l.starts_with("chatd_connections{") && l.contains("state=\"ready\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        ready >= 2.0
    });

    // A burst over the rate limit shows up as RATE_LIMITED errors.
    for id in 1000..1100u64 {
        send(&mut alice, "#m", id, "burst");
    }
    scrape_until(&url, "RATE_LIMITED errors", |b| {
        sample(b, "chatd_errors_total{code=\"RATE_LIMITED\"}").is_some_and(|n| n >= 1.0)
    });
}

#[test]
fn tls_handshakes_failures_and_the_handshake_cap_show_in_the_metrics() {
    let certs = tempfile::tempdir().expect("temp dir");
    let pki = pki::Pki::new(certs.path());
    let leaf = pki.leaf("server", &["localhost"]);
    let flags = leaf.serve_flags();
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend([
        "--metrics",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--tls-handshakes",
        "4",
    ]);
    let d = Daemon::start(&args);
    let url = format!("http://{}/metrics", metrics_addr(&d));
    let tls_addr = d.tls_addrs[0];
    let token = d.add_user("good");
    let mut good = tls::TlsClient::connect(tls_addr, &pki.ca_pem, "localhost").expect("handshake");
    good.login("good", &token);
    let mut plain = std::net::TcpStream::connect(tls_addr).expect("connect");
    std::io::Write::write_all(&mut plain, b"\0\0\0\x05\x05hello").expect("plaintext");
    scrape_until(&url, "a completed and a not_tls handshake", |body| {
        sample(body, "chatd_tls_handshakes_total") >= Some(1.0)
            && sample(
                body,
                "chatd_tls_handshake_failures_total{reason=\"not_tls\"}",
            ) >= Some(1.0)
    });
    // Half handshakes that never finish: the reactor works on 4 at once and leaves the rest
    // in the kernel's backlog.
    let config = chatd::tls::client::client_config(Some(&pki.ca_pem)).expect("config");
    let mut held = Vec::new();
    for _ in 0..40 {
        let name = chatd::tls::client::server_name("localhost").expect("name");
        let mut conn =
            rustls::ClientConnection::new(std::sync::Arc::clone(&config), name).expect("client");
        let mut s = std::net::TcpStream::connect(tls_addr).expect("connect");
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).expect("to memory");
        std::io::Write::write_all(&mut s, &hello).expect("ClientHello");
        held.push(s);
    }
    let handshaking = "chatd_connections{reactor=\"0\",state=\"handshake\"}";
    let body = scrape_until(&url, "4 connections in their handshake", |body| {
        sample(body, handshaking) >= Some(4.0)
    });
    assert_eq!(sample(&body, handshaking), Some(4.0), "{body}");
    assert!(
        sample(&body, "chatd_tls_connections") >= Some(5.0),
        "{body}"
    );
}

#[test]
fn websocket_connections_are_counted_apart() {
    let d = Daemon::start(&["--metrics", "127.0.0.1:0", "--web-listen", "127.0.0.1:0"]);
    let url = format!("http://{}/metrics", metrics_addr(&d));
    let web = d.web_addrs[0];
    let mut open = Vec::new();
    for _ in 0..2 {
        let stream = std::net::TcpStream::connect(web).expect("connect");
        let (ws, _) = tungstenite::client(format!("ws://{web}/ws"), stream).expect("upgrade");
        open.push(ws);
    }
    // A plain client is a connection, not a WebSocket.
    let _plain = d.connect();
    let body = scrape_until(&url, "two WebSocket connections", |b| {
        sample(b, "chatd_websocket_connections") == Some(2.0)
    });
    assert!(body.contains("# TYPE chatd_websocket_connections gauge"));
    drop(open);
    scrape_until(&url, "no WebSocket connection", |b| {
        sample(b, "chatd_websocket_connections") == Some(0.0)
    });
}
