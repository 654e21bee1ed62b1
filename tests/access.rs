//! Private rooms and direct rooms over real TCP: `chatd room` changes under a running daemon
//! take effect within a second (FORBIDDEN, then an unasked LEFT, then silence for whoever lost
//! the room), a forbidden room answers exactly as a missing one does, and direct rooms are for
//! the users their name lists, on every driver and store, their history kept across restarts.

#[path = "util/frames.rs"]
mod frames;
#[macro_use]
mod util;

use std::process::Command;
use std::time::Duration;

use chatd::client::{Client, Reply};
use chatd::protocol::{ClientFrame, ErrorCode, Version};
use util::{BIN, Daemon, expect_error, join, recv, recv_msgs, send};

/// The daemon's watcher looks every 250 ms and a reactor takes the new rules on its next
/// turn; this is generous for a loaded CI machine.
const APPLIED_WITHIN: Duration = Duration::from_secs(5);

const RELOADED: &str = "reloaded private-rooms file";

/// Runs `chatd room ARGS…` on the daemon's data directory; fails the test if it fails.
#[track_caller]
fn room(d: &Daemon, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("room")
        .args(args)
        .arg("--data-dir")
        .arg(d.data_dir())
        .output()
        .expect("run chatd room");
    assert!(
        out.status.success(),
        "chatd room {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `chatd room ARGS…`, then waits until the daemon has loaded the file it wrote (its
/// `reloads`-th load).
#[track_caller]
fn room_loaded(d: &Daemon, reloads: usize, args: &[&str]) {
    room(d, args);
    assert!(
        d.wait_for_log_count(RELOADED, reloads),
        "the daemon did not reload the private-rooms file: {:#?}",
        d.log_lines()
    );
}

/// A connection of `user` past a version 2 HELLO (client 0).
#[track_caller]
fn login_v2(d: &Daemon, user: &str, token: &str) -> Client {
    let mut c = d.connect();
    c.speak(Version::V2);
    c.send(&ClientFrame::Hello {
        version: 2,
        user,
        token,
        client: 0,
    })
    .expect("send HELLO");
    match recv(&mut c) {
        Reply::Welcome { version: 2, .. } => c,
        other => panic!("expected WELCOME 2, got {other:?}"),
    }
}

/// JOIN's answer as raw frames: JOIN then PING, everything before the PONG.
#[track_caller]
fn join_answer(c: &mut Client, room: &str) -> Vec<Reply> {
    c.send(&ClientFrame::Join {
        room,
        after: 0,
        limit: 0,
    })
    .expect("send JOIN");
    frames::ping(c, 7)
}

per_driver! {
fn private_room_changes_apply_to_joined_sessions_within_a_second(driver: Driver) {
    let d = driver.start(&[]);
    let mut alice = d.login("alice");
    let bob_token = d.add_user("bob");
    let mut bob = login_v2(&d, "bob", &bob_token);
    let mut carol = d.login("carol");
    room_loaded(&d, 1, &["allow", "staff", "alice", "bob"]);
    join(&mut alice, "staff", 0, 0);
    join(&mut bob, "staff", 0, 0);

    // A forbidden room that exists and one that never did answer byte for byte alike.
    room_loaded(&d, 2, &["allow", "ghost", "alice"]);
    let staff = join_answer(&mut carol, "staff");
    let ghost = join_answer(&mut carol, "ghost");
    assert_eq!(
        format!("{staff:?}"),
        format!("{ghost:?}").replace("ghost", "staff")
    );
    assert!(
        matches!(&staff[..], [Reply::Error { code, reference: 0, .. }] if *code == ErrorCode::Forbidden.as_u16()),
        "{staff:?}"
    );
    send(&mut carol, "staff", 9, "let me in");
    expect_error(&mut carol, ErrorCode::Forbidden, 9);

    // Bob loses the room while joined: FORBIDDEN naming it, LEFT, and nothing of it after.
    room(&d, &["deny", "staff", "bob"]);
    bob.set_timeout(Some(APPLIED_WITHIN)).expect("timeout");
    let message = expect_error(&mut bob, ErrorCode::Forbidden, 0);
    assert!(message.contains("staff"), "{message}");
    assert_eq!(recv(&mut bob), Reply::Left { room: "staff".into() });
    send(&mut alice, "staff", 1, "staff only");
    // The ACK and the MSG may come in either order.
    let mut others = Vec::new();
    assert_eq!(recv_msgs(&mut alice, 1, &mut others).len(), 1);
    if others.is_empty() {
        others.push(recv(&mut alice));
    }
    assert!(matches!(&others[..], [Reply::Ack { id: 1, .. }]), "{others:?}");
    assert_eq!(frames::ping(&mut bob, 1), vec![], "no MSG of a room lost");

    // Public again: carol may join and sees the history.
    room_loaded(&d, 4, &["public", "staff"]);
    join(&mut carol, "staff", 0, u32::MAX);
    let got = recv_msgs(&mut carol, 1, &mut Vec::new());
    assert_eq!(got[0].3, "staff only");
}

fn direct_rooms_are_for_their_users_and_outlive_a_restart(driver: Driver) {
    let mut d = driver.start(&[]);
    let alice_token = d.add_user("alice");
    let bob_token = d.add_user("bob");
    let carol_token = d.add_user("carol");
    let mut alice = login_v2(&d, "alice", &alice_token);
    let mut bob = login_v2(&d, "bob", &bob_token);
    let mut carol = login_v2(&d, "carol", &carol_token);
    join(&mut alice, "@alice+bob", 0, 0);
    join(&mut bob, "@alice+bob", 0, 0);
    send(&mut alice, "@alice+bob", 1, "just us");
    let got = recv_msgs(&mut bob, 1, &mut Vec::new());
    assert_eq!((got[0].2.as_str(), got[0].3.as_str()), ("alice", "just us"));
    let refused = join_answer(&mut carol, "@alice+bob");
    assert!(
        matches!(&refused[..], [Reply::Error { code, .. }] if *code == ErrorCode::Forbidden.as_u16()),
        "{refused:?}"
    );
    // Version 1's grammar has no `@`.
    let mut old = d.login_with("carol", &carol_token);
    let invalid = join_answer(&mut old, "@alice+bob");
    assert!(
        matches!(&invalid[..], [Reply::Error { code, .. }] if *code == ErrorCode::Invalid.as_u16()),
        "{invalid:?}"
    );
    drop((alice, bob, carol, old));
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit();
    let d = driver.start_again(&d, &[]);
    let mut bob = login_v2(&d, "bob", &bob_token);
    let (_, head) = join(&mut bob, "@alice+bob", 0, u32::MAX);
    assert_eq!(head, 1);
    let got = recv_msgs(&mut bob, 1, &mut Vec::new());
    assert_eq!(got[0].3, "just us");
}
}

#[test]
fn room_commands_explain_and_refuse_mistakes() {
    let d = Daemon::start(&[]);
    assert_eq!(
        room(&d, &["allow", "staff", "bob", "alice"]),
        "room 'staff' is private; who may use it: alice bob\n"
    );
    assert_eq!(
        room(&d, &["allow", "vault"]),
        "room 'vault' is private; nobody may use it\n"
    );
    assert_eq!(room(&d, &["list"]), "staff: alice bob\nvault: nobody\n");
    for (args, why) in [
        (&["deny", "general", "bob"][..], "room 'general' is public"),
        (&["allow", "@alice+bob", "carol"][..], "is a direct room"),
        (&["allow", "no/slash"][..], "not a valid room name"),
        (&["allow", "staff", "bad!"][..], "not a valid user name"),
        (&["deny", "staff"][..], "expected `room allow"),
    ] {
        let out = Command::new(BIN)
            .arg("room")
            .args(args)
            .arg("--data-dir")
            .arg(d.data_dir())
            .output()
            .expect("run chatd room");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(why),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(
        room(&d, &["public", "staff"]),
        "room 'staff' is public: everyone may use it\n"
    );
    assert_eq!(room(&d, &["list"]), "vault: nobody\n");
}

#[test]
fn the_fork_driver_reads_the_private_rooms_file_at_each_join_and_send() {
    let d = Daemon::start(&["--driver", "fork"]);
    // The fork driver reads the users file at each HELLO: no reload to wait for.
    let alice_token = util::add_user(&d.data_dir(), "alice");
    let bob_token = util::add_user(&d.data_dir(), "bob");
    let mut alice = d.login_with("alice", &alice_token);
    let mut bob = d.login_with("bob", &bob_token);
    room(&d, &["allow", "staff", "alice"]);
    // No watcher to wait for: each JOIN reads the file as it is.
    join(&mut alice, "staff", 0, 0);
    let refused = join_answer(&mut bob, "staff");
    assert!(
        matches!(&refused[..], [Reply::Error { code, reference: 0, .. }] if *code == ErrorCode::Forbidden.as_u16()),
        "{refused:?}"
    );
    room(&d, &["deny", "staff", "alice"]);
    send(&mut alice, "staff", 5, "still here?");
    expect_error(&mut alice, ErrorCode::Forbidden, 5);
}
