//! Running chatd as an operator would: a config file with flags over it, `chatd config check`,
//! SIGHUP, and dropping root after binding.

mod util;

use std::process::Command;

use chatd::client::{Client, Reply};
use chatd::protocol::{ClientFrame, ErrorCode};
use util::{BIN, Daemon, expect_error, expect_fatal, join, recv, recv_msgs, send};

#[track_caller]
fn ping(c: &mut Client, nonce: u64) {
    c.send(&ClientFrame::Ping { nonce }).expect("send PING");
    assert_eq!(recv(c), Reply::Pong { nonce });
}

fn welcome_max_frame(c: &mut chatd::client::Client, user: &str, token: &str) -> u32 {
    c.send(&ClientFrame::Hello {
        version: 1,
        user,
        token,
        client: 0,
    })
    .expect("hello");
    match recv(c) {
        Reply::Welcome { max_frame, .. } => max_frame,
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

#[test]
fn a_config_file_sets_options_and_flags_override_it() {
    let cfg = tempfile::tempdir().expect("tmp");
    let file = cfg.path().join("chatd.toml");
    std::fs::write(&file, "max_frame = 4096\nidle-timeout = \"9s\"\n").expect("write config");
    let file = file.to_str().expect("utf8");
    let d = Daemon::start(&["--config", file, "--idle-timeout", "7s"]);
    let token = d.add_user("alice");
    let mut c = d.connect();
    c.send(&ClientFrame::Hello {
        version: 1,
        user: "alice",
        token: &token,
        client: 0,
    })
    .expect("hello");
    match recv(&mut c) {
        Reply::Welcome {
            max_frame,
            idle_timeout_ms,
            ..
        } => {
            assert_eq!(max_frame, 4096, "from the file");
            assert_eq!(idle_timeout_ms, 7000, "the flag wins over the file");
        }
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

#[test]
fn config_check_accepts_a_good_file_and_names_the_bad_key() {
    let cfg = tempfile::tempdir().expect("tmp");
    let good = cfg.path().join("good.toml");
    std::fs::write(
        &good,
        "listen = [\"127.0.0.1:7000\"]\nfsync = \"interval\"\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let bad = cfg.path().join("bad.toml");
    std::fs::write(&bad, "max_conections = 5\n").expect("write");
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_conections"), "{err}");

    std::fs::write(&bad, "send_rate = \"fast\"\n").expect("write");
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--send-rate"));
}

/// Rewrites the config file, sends SIGHUP, and waits for the reload line holding `expect`.
#[track_caller]
fn reload(d: &Daemon, file: &std::path::Path, config: &str, expect: &str) {
    std::fs::write(file, config).expect("rewrite config");
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(d.wait_for_log(expect), "{expect}: {:#?}", d.log_lines());
}

#[test]
fn sighup_applies_live_limits_and_names_those_needing_a_restart() {
    let cfg = tempfile::tempdir().expect("tmp");
    let file = cfg.path().join("chatd.toml");
    std::fs::write(&file, "send_rate = 0\nmax_connections = 10\n").expect("write config");
    // A flag on the command line keeps winning over the file across reloads.
    let d = Daemon::start(&[
        "--config",
        file.to_str().expect("utf8"),
        "--max-rooms-per-connection",
        "5",
    ]);
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    let mut carol = d.login("carol");
    join(&mut alice, "#r", 0, 0);

    reload(
        &d,
        &file,
        "send_rate = 1\nsend_burst = 1\nmax_connections = 2\nmax_frame = 4096\n\
         max_rooms_per_connection = 1\n",
        "config reloaded: applied max-connections, send-rate, send-burst; \
         needs a restart: max-frame",
    );
    // The lower cap closes nobody: three connections stay over a cap of two...
    for (n, c) in [&mut alice, &mut bob, &mut carol].into_iter().enumerate() {
        ping(c, n as u64);
    }
    // ...and a new one is refused while over it.
    let mut refused = d.connect();
    expect_fatal(&mut refused, ErrorCode::TooMany);
    // The new rate holds for a connection opened before the reload: one SEND, then no more.
    send(&mut alice, "#r", 1, "one");
    send(&mut alice, "#r", 2, "two");
    let mut others = Vec::new();
    recv_msgs(&mut alice, 1, &mut others);
    while others.len() < 2 {
        others.push(recv(&mut alice));
    }
    assert!(others.contains(&Reply::Ack { id: 1, seq: 1 }), "{others:?}");
    assert!(
        others
            .iter()
            .any(|r| matches!(r, Reply::Error { code, reference: 2, .. }
            if *code == ErrorCode::RateLimited.as_u16())),
        "{others:?}"
    );
    // The command line's --max-rooms-per-connection 5 still wins over the file's 1.
    for room in ["#a", "#b"] {
        join(&mut bob, room, 0, 0);
    }

    // A higher cap admits connections again; a shorter idle timeout applies to sessions
    // already open.
    reload(
        &d,
        &file,
        "send_rate = 1\nsend_burst = 1\nmax_frame = 4096\nmax_rooms_per_connection = 1\n\
         idle_timeout = \"1s\"\nmax_connections = 4\n",
        "config reloaded: applied max-connections, idle-timeout; needs a restart: max-frame",
    );
    let started = std::time::Instant::now();
    expect_error(&mut bob, ErrorCode::Timeout, 0);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // max-frame needs a restart: a new session is still told the old one.
    let token = d.add_user("dave");
    let mut late = d.connect();
    assert_eq!(welcome_max_frame(&mut late, "dave", &token), 65_536);
    ping(&mut late, 9);
}

#[test]
fn sighup_without_a_config_file_rereads_users_only() {
    let d = Daemon::start(&[]);
    d.add_user("carol");
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        d.wait_for_log("users file checked (1 users, 0 private rooms)"),
        "{:#?}",
        d.log_lines()
    );
    assert!(
        d.wait_for_log("no --config file; settings unchanged"),
        "{:#?}",
        d.log_lines()
    );
    let mut c = d.login("erin");
    ping(&mut c, 3);
}

#[test]
fn root_drops_to_the_given_user_after_binding_and_before_serving() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: privilege drop needs the tests to run as root");
        return;
    }
    if !std::path::Path::new("/proc/self/task").is_dir() {
        eprintln!("skipped: no /proc to read the daemon's thread credentials on this OS");
        return;
    }
    let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
        eprintln!("skipped: no 'nobody' account on this system");
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let token = util::add_user(&data, "dave");
    // The data directory must belong to the account the daemon becomes.
    let chown = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", nobody.uid, nobody.gid))
        .arg(dir.path())
        .status()
        .expect("chown");
    assert!(chown.success());
    let d = Daemon::start_in(
        dir,
        &[
            "--user",
            "nobody",
            "--segment-bytes",
            "4096",
            "--send-rate",
            "0",
        ],
    );
    assert!(
        d.wait_for_log(&format!("running as uid {}", nobody.uid)),
        "{:#?}",
        d.log_lines()
    );
    // Dropped before any reactor started serving, not after.
    assert!(d.wait_for_log("reactor 0: serving"), "{:#?}", d.log_lines());
    let lines = d.log_lines();
    let position = |needle: &str| lines.iter().position(|l| l.contains(needle));
    assert!(
        position("running as uid") < position("reactor 0: serving"),
        "{lines:#?}"
    );
    // Every thread of the process, reactors included, runs as the account.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", d.pid())).expect("tasks");
    let mut threads = 0;
    for task in tasks {
        let status = std::fs::read_to_string(task.expect("task").path().join("status"))
            .expect("task status");
        let uid_line = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .expect("Uid line");
        assert!(
            uid_line
                .split_whitespace()
                .skip(1)
                .all(|u| u == nobody.uid.to_string()),
            "{uid_line}"
        );
        threads += 1;
    }
    assert!(
        threads > 3,
        "reactors, sequencer, archive, watcher: {threads}"
    );
    // Still able to store messages, and to roll to new segments in its data directory.
    let mut c = d.login_with("dave", &token);
    join(&mut c, "#r", 0, 0);
    let text = "x".repeat(500);
    // Rounds, each waited for: a segment rolls between batches once it is full.
    for round in 0..5 {
        for n in 1..=10 {
            send(&mut c, "#r", round * 10 + n, &text);
        }
        let mut others = Vec::new();
        let got = recv_msgs(&mut c, 10, &mut others);
        assert_eq!(got.last().map(|m| m.1), Some(round * 10 + 10));
        while others.len() < 10 {
            others.push(recv(&mut c));
        }
        assert!(
            others.iter().all(|r| matches!(r, Reply::Ack { .. })),
            "{others:?}"
        );
    }
    let segments = std::fs::read_dir(d.data_dir().join("log"))
        .expect("log dir")
        .count();
    assert!(segments >= 3, "segments rolled as nobody: {segments}");
}

#[test]
fn an_unknown_user_to_drop_to_stops_startup() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--user",
            "no-such-user-here",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-user-here"));
}
