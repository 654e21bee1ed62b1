//! Running chatd as an operator would: a config file with flags over it, `chatd config check`,
//! SIGHUP, and dropping root after binding.

mod util;

use std::process::Command;

use chatd::client::Reply;
use chatd::protocol::ClientFrame;
use util::{BIN, Daemon, join, recv, recv_msgs, send};

fn welcome_max_frame(c: &mut chatd::client::Client, user: &str, token: &str) -> u32 {
    c.send(&ClientFrame::Hello {
        version: 1,
        user,
        token,
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

#[test]
fn sighup_rereads_users_and_reports_config_changes_needing_a_restart() {
    let cfg = tempfile::tempdir().expect("tmp");
    let file = cfg.path().join("chatd.toml");
    std::fs::write(&file, "send_rate = 20\n").expect("write config");
    let d = Daemon::start(&["--config", file.to_str().expect("utf8")]);
    let token = d.add_user("carol");
    std::fs::write(&file, "send_rate = 30\n").expect("rewrite config");
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        d.wait_for_log("users file reread (1 users)"),
        "{:#?}",
        d.log_lines()
    );
    assert!(d.wait_for_log("send-rate/burst"), "{:#?}", d.log_lines());
    // The daemon is still serving, with the user added before the signal.
    let mut c = d.connect();
    assert_eq!(welcome_max_frame(&mut c, "carol", &token), 65_536);
}

#[test]
fn root_drops_to_the_given_user_after_binding() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: privilege drop needs the tests to run as root");
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
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).expect("status");
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
