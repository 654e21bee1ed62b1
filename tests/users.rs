//! Managing users under a running daemon: `chatd user remove` and `chatd user rotate` end the
//! sessions they concern within a second, and nobody else's.

mod util;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use chatd::client::{Client, Reply};
use chatd::protocol::{ClientFrame, ErrorCode};
use util::{
    BIN, Daemon, expect_error, expect_fatal, join, recv, recv_msgs, recv_until_close, send,
};

/// How long a revoked session may take to be told and closed: the watcher looks every 250 ms
/// and a reactor takes the new table on its next turn (at most 250 ms later). Generous for a
/// loaded CI machine, and far below the 60 s idle timeout that would also close it.
const REVOKED_WITHIN: Duration = Duration::from_secs(3);

fn user_command(d: &Daemon, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("user")
        .args(args)
        .arg("--data-dir")
        .arg(d.data_dir())
        .output()
        .expect("run chatd user")
}

/// Waits (by reading with a timeout) for ERROR AUTH_FAILED with `message`, then the close.
#[track_caller]
fn expect_revoked(c: &mut Client, message: &str) {
    c.set_timeout(Some(REVOKED_WITHIN)).expect("set timeout");
    let started = Instant::now();
    let got = expect_error(c, ErrorCode::AuthFailed, 0);
    assert_eq!(got, message);
    let rest = recv_until_close(c);
    assert!(
        rest.is_empty(),
        "nothing may follow the ERROR, got {rest:?}"
    );
    assert!(
        started.elapsed() < REVOKED_WITHIN,
        "{:?}",
        started.elapsed()
    );
}

#[track_caller]
fn expect_login_refused(d: &Daemon, user: &str, token: &str) {
    let mut c = d.connect();
    c.send(&ClientFrame::Hello {
        version: 1,
        user,
        token,
        client: 0,
    })
    .expect("send HELLO");
    expect_fatal(&mut c, ErrorCode::AuthFailed);
}

#[track_caller]
fn ping(c: &mut Client, nonce: u64) {
    c.send(&ClientFrame::Ping { nonce }).expect("send PING");
    match recv(c) {
        Reply::Pong { nonce: n } => assert_eq!(n, nonce),
        other => panic!("expected PONG, got {other:?}"),
    }
}

#[test]
fn removing_a_user_ends_their_live_sessions_and_no_one_elses() {
    let d = Daemon::start(&["--threads", "2"]);
    let mut alice = d.login("alice");
    let bob_token = d.add_user("bob");
    // Two sessions of bob: likely on both reactors; each must end.
    let mut bobs = [
        d.login_with("bob", &bob_token),
        d.login_with("bob", &bob_token),
    ];
    let mut carol = d.login("carol");
    for c in [&mut alice, &mut carol] {
        join(c, "#r", 0, 0);
    }
    for b in &mut bobs {
        join(b, "#r", 0, 0);
    }

    let out = user_command(&d, &["remove", "bob"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for b in &mut bobs {
        expect_revoked(b, "user removed");
    }
    expect_login_refused(&d, "bob", &bob_token);

    // The others carry on in the same room.
    ping(&mut alice, 7);
    send(&mut alice, "#r", 1, "still here");
    let mut others = Vec::new();
    let got = recv_msgs(&mut carol, 1, &mut others);
    assert_eq!(got[0].2, "alice");
    assert_eq!(got[0].3, "still here");
    assert!(
        d.wait_for_log("user 'bob': user removed"),
        "{:#?}",
        d.log_lines()
    );
}

#[test]
fn rotating_a_token_prints_a_new_one_ends_sessions_and_retires_the_old() {
    let d = Daemon::start(&[]);
    let old = d.add_user("dave");
    let mut live = d.login_with("dave", &old);
    let mut other = d.login("erin");

    let out = user_command(&d, &["rotate", "dave"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    let new = stdout
        .lines()
        .last()
        .expect("a token line")
        .trim()
        .to_string();
    assert_eq!(new.len(), 64, "{stdout}");
    assert!(new.bytes().all(|b| b.is_ascii_hexdigit()), "{stdout}");
    assert_ne!(new, old);

    // The live session ending shows the new table is in force on every reactor's next turn.
    expect_revoked(&mut live, "token rotated");
    expect_login_refused(&d, "dave", &old);
    let mut again = d.login_with("dave", &new);
    ping(&mut again, 1);
    ping(&mut other, 2);

    let out = user_command(&d, &["rotate", "nobody-here"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user 'nobody-here'"));
}
