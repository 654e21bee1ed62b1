//! "Who is here" over real TCP (protocol version 2's WHO, WATCH, MEMBERS and PRESENCE): each
//! user present once however many connections it has, a departure only when its last one
//! leaves or closes (whatever closes it), NOT_JOINED before JOIN, version 1 connections counted
//! but never sent a version 2 frame, and a watcher that, under joins, leaves and disconnects
//! racing on other connections (and reactors), sees MEMBERS then every change exactly once.

#[path = "util/frames.rs"]
mod frames;
#[macro_use]
mod util;

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use chatd::client::{Client, Reply};
use chatd::protocol::{ClientFrame, ErrorCode, Version};
use util::{BIN, Daemon, Driver, expect_error, expect_fatal, join, metric, nats, recv};

/// Starts the daemon of `driver`, with several reactors where it has them, so that watchers
/// and the members they watch sit on different threads.
fn start(driver: Driver) -> Daemon {
    match driver {
        Driver::Threads => driver.start(&[]),
        _ => driver.start(&["--threads", "4"]),
    }
}

/// Adds every one of `names` to the users file at once, waits until the daemon has them, and
/// returns their tokens in order.
#[track_caller]
fn add_users(d: &Daemon, names: &[&str]) -> Vec<String> {
    let tokens = names
        .iter()
        .map(|name| util::add_user(&d.data_dir(), name))
        .collect();
    d.wait_for_users(names.len());
    tokens
}

/// A connection past HELLO of `version`, reading that version's frames.
#[track_caller]
fn login(d: &Daemon, user: &str, token: &str, version: u8) -> Client {
    let mut c = d.connect();
    if version == 2 {
        c.speak(Version::V2);
    }
    c.send(&ClientFrame::Hello {
        version,
        user,
        token,
        client: 0,
    })
    .expect("send HELLO");
    match recv(&mut c) {
        Reply::Welcome { version: v, .. } if v == version => c,
        other => panic!("expected WELCOME {version}, got {other:?}"),
    }
}

#[track_caller]
fn who(c: &mut Client, room: &str) {
    c.send(&ClientFrame::Who { room }).expect("send WHO");
}

#[track_caller]
fn watch(c: &mut Client, room: &str, on: u8) {
    c.send(&ClientFrame::Watch { room, on })
        .expect("send WATCH");
}

/// The next frame, which must be MEMBERS of `room`: its total and users.
#[track_caller]
fn members(c: &mut Client, room: &str) -> (u32, Vec<String>) {
    match recv(c) {
        Reply::Members {
            room: r,
            total,
            users,
        } if r == room => (total, users),
        other => panic!("expected MEMBERS {room}, got {other:?}"),
    }
}

/// The next frame, which must be PRESENCE of `room`: the user and `here`.
#[track_caller]
fn presence(c: &mut Client, room: &str) -> (String, bool) {
    match recv(c) {
        Reply::Presence {
            room: r,
            user,
            here,
        } if r == room => (user, here),
        other => panic!("expected PRESENCE {room}, got {other:?}"),
    }
}

#[track_caller]
fn leave(c: &mut Client, room: &str) {
    c.send(&ClientFrame::Leave { room }).expect("send LEAVE");
    match recv(c) {
        Reply::Left { room: r } if r == room => {}
        other => panic!("expected LEFT {room}, got {other:?}"),
    }
}

fn names(users: &[&str]) -> Vec<String> {
    users.iter().map(|u| u.to_string()).collect()
}

per_driver! {
fn who_lists_each_user_once_and_needs_the_room_joined(driver: Driver) {
    let d = start(driver);
    let t = add_users(&d, &["alice", "bob", "carol"]);
    let mut alice = login(&d, "alice", &t[0], 2);
    who(&mut alice, "#r");
    expect_error(&mut alice, ErrorCode::NotJoined, 0);
    watch(&mut alice, "#r", 1);
    expect_error(&mut alice, ErrorCode::NotJoined, 0);
    frames::assert_alive(&mut alice);

    join(&mut alice, "#r", 0, 0);
    let mut bob = [login(&d, "bob", &t[1], 1), login(&d, "bob", &t[1], 2)];
    for c in &mut bob {
        join(c, "#r", 0, 0);
    }
    let mut carol = login(&d, "carol", &t[2], 2);
    join(&mut carol, "#elsewhere", 0, 0);
    who(&mut alice, "#r");
    assert_eq!(members(&mut alice, "#r"), (2, names(&["alice", "bob"])));
    // WHO watches nothing: carol's arrival is not sent.
    join(&mut carol, "#r", 0, 0);
    frames::assert_alive(&mut alice);
    who(&mut carol, "#r");
    assert_eq!(members(&mut carol, "#r"), (3, names(&["alice", "bob", "carol"])));
}
}

per_driver! {
fn a_watcher_sees_a_user_arrive_with_its_first_connection_and_go_with_its_last(driver: Driver) {
    let d = start(driver);
    let t = add_users(&d, &["alice", "bob", "carol", "dave"]);
    let mut alice = login(&d, "alice", &t[0], 2);
    join(&mut alice, "#r", 0, 0);
    watch(&mut alice, "#r", 1);
    assert_eq!(members(&mut alice, "#r"), (1, names(&["alice"])));

    let mut bob1 = login(&d, "bob", &t[1], 2);
    let mut bob2 = login(&d, "bob", &t[1], 1);
    join(&mut bob1, "#r", 0, 0);
    join(&mut bob2, "#r", 0, 0);
    assert_eq!(presence(&mut alice, "#r"), ("bob".into(), true));
    // One of bob's two leaves: he is still here. Carol's arrival, after it, is the next
    // change: nothing about bob came between.
    leave(&mut bob1, "#r");
    let mut carol = login(&d, "carol", &t[2], 1);
    join(&mut carol, "#r", 0, 0);
    assert_eq!(presence(&mut alice, "#r"), ("carol".into(), true));
    // His last connection closes its socket: he is gone.
    drop(bob2);
    assert_eq!(presence(&mut alice, "#r"), ("bob".into(), false));
    // Closed by the server (a user removed while connected) counts the same.
    let removed = std::process::Command::new(BIN)
        .args(["user", "remove", "carol", "--data-dir"])
        .arg(d.data_dir())
        .output()
        .expect("run chatd user remove");
    assert!(removed.status.success(), "{}", String::from_utf8_lossy(&removed.stderr));
    expect_fatal(&mut carol, ErrorCode::AuthFailed);
    assert_eq!(presence(&mut alice, "#r"), ("carol".into(), false));

    // WATCH 0 stops; a new WATCH starts again from MEMBERS.
    watch(&mut alice, "#r", 0);
    let mut dave = login(&d, "dave", &t[3], 2);
    join(&mut dave, "#r", 0, 0);
    frames::assert_alive(&mut alice);
    watch(&mut alice, "#r", 1);
    assert_eq!(members(&mut alice, "#r"), (2, names(&["alice", "dave"])));
    // LEAVE stops watching too: after re-joining, dave's departure is not sent.
    leave(&mut alice, "#r");
    join(&mut alice, "#r", 0, 0);
    leave(&mut dave, "#r");
    frames::assert_alive(&mut alice);
    drop(bob1);
}
}

per_driver! {
fn version_1_members_are_counted_and_never_sent_a_version_2_frame(driver: Driver) {
    let d = start(driver);
    let t = add_users(&d, &["alice", "bob", "carol"]);
    let mut old = login(&d, "alice", &t[0], 1);
    let mut new = login(&d, "bob", &t[1], 2);
    join(&mut new, "#mixed", 0, 0);
    watch(&mut new, "#mixed", 1);
    assert_eq!(members(&mut new, "#mixed"), (1, names(&["bob"])));
    join(&mut old, "#mixed", 0, 0);
    assert_eq!(presence(&mut new, "#mixed"), ("alice".into(), true));
    // Changes go on around the version 1 member; its client, reading version 1, would fail
    // on a MEMBERS or PRESENCE, and only sees its own answers.
    let mut carol = login(&d, "carol", &t[2], 2);
    join(&mut carol, "#mixed", 0, 0);
    watch(&mut carol, "#mixed", 1);
    assert_eq!(members(&mut carol, "#mixed"), (3, names(&["alice", "bob", "carol"])));
    assert_eq!(presence(&mut new, "#mixed"), ("carol".into(), true));
    drop(carol);
    assert_eq!(presence(&mut new, "#mixed"), ("carol".into(), false));
    frames::assert_alive(&mut old);
    leave(&mut old, "#mixed");
    assert_eq!(presence(&mut new, "#mixed"), ("alice".into(), false));
    frames::assert_alive(&mut old);
}
}

/// `chatd room ARGS…` on the daemon's data directory, then waits until the daemon has loaded
/// the private-rooms file it wrote (its `reloads`-th load).
#[track_caller]
fn room_loaded(d: &Daemon, reloads: usize, args: &[&str]) {
    let out = std::process::Command::new(BIN)
        .arg("room")
        .args(args)
        .arg("--data-dir")
        .arg(d.data_dir())
        .output()
        .expect("run chatd room");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        d.wait_for_log_count("reloaded private-rooms file", reloads),
        "the daemon did not reload the private-rooms file: {:#?}",
        d.log_lines()
    );
}

per_driver! {
fn losing_access_to_a_room_is_a_departure(driver: Driver) {
    let d = start(driver);
    let t = add_users(&d, &["alice", "bob"]);
    room_loaded(&d, 1, &["allow", "staff", "alice", "bob"]);
    let mut alice = login(&d, "alice", &t[0], 2);
    let mut bob = login(&d, "bob", &t[1], 2);
    join(&mut alice, "staff", 0, 0);
    watch(&mut alice, "staff", 1);
    assert_eq!(members(&mut alice, "staff"), (1, names(&["alice"])));
    join(&mut bob, "staff", 0, 0);
    watch(&mut bob, "staff", 1);
    assert_eq!(members(&mut bob, "staff"), (2, names(&["alice", "bob"])));
    assert_eq!(presence(&mut alice, "staff"), ("bob".into(), true));
    // The server takes the room from bob: FORBIDDEN, LEFT, and his departure for the others;
    // his watch ends with the membership.
    room_loaded(&d, 2, &["deny", "staff", "bob"]);
    expect_error(&mut bob, ErrorCode::Forbidden, 0);
    assert_eq!(recv(&mut bob), Reply::Left { room: "staff".into() });
    assert_eq!(presence(&mut alice, "staff"), ("bob".into(), false));
    frames::assert_alive(&mut bob);
}
}

/// Users churning, and how many rounds each does.
const CHURNERS: usize = 6;
const ROUNDS: u64 = 40;

/// One user's churn: two connections in `room`, each round one of them joins, leaves,
/// closes its socket or reconnects (version 1 or 2), as a small deterministic generator picks.
/// Returns the connections still open, whether the user is still in the room, and how many
/// sockets it closed.
fn churn(d: &Daemon, user: &str, token: &str, room: &str, seed: u64) -> (Vec<Client>, bool, usize) {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let mut conns: [Option<(Client, bool)>; 2] = [None, None];
    let mut closed = 0;
    for round in 0..ROUNDS {
        let slot = &mut conns[usize::from(next() % 2 == 1)];
        match slot.take() {
            None => {
                let version = if round % 2 == 0 { 1 } else { 2 };
                *slot = Some((login(d, user, token, version), false));
            }
            Some((mut c, false)) => {
                join(&mut c, room, 0, 0);
                *slot = Some((c, true));
            }
            Some((mut c, true)) => match next() % 3 {
                0 => {
                    leave(&mut c, room);
                    *slot = Some((c, false));
                }
                // Closing the socket is this connection's departure.
                1 => {
                    drop(c);
                    closed += 1;
                }
                _ => *slot = Some((c, true)),
            },
        }
    }
    let here = conns.iter().flatten().any(|(_, joined)| *joined);
    let open = conns.into_iter().flatten().map(|(c, _)| c).collect();
    (open, here, closed)
}

/// Waits until the daemon has logged the end of `count` connections: each one's membership
/// is gone by then (a driver forgets the memberships before it logs the close).
#[track_caller]
fn wait_for_closes(d: &Daemon, count: usize) {
    let deadline = Instant::now() + util::PATIENCE;
    let closes = || {
        d.log_lines()
            .iter()
            .filter(|l| l.contains("close #"))
            .count()
    };
    while closes() < count {
        assert!(
            Instant::now() < deadline,
            "fewer than {count} closes logged"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

per_driver! {
fn a_watcher_sees_members_then_every_change_exactly_once_under_concurrent_churn(driver: Driver) {
    let d = Arc::new(start(driver));
    let users: Vec<String> = (0..CHURNERS).map(|i| format!("u{i}")).collect();
    let mut all: Vec<&str> = users.iter().map(String::as_str).collect();
    all.extend(["watcher", "sentinel"]);
    let tokens = add_users(&d, &all);
    let room = "#churn";
    let go = Arc::new(Barrier::new(CHURNERS + 1));
    let threads: Vec<_> = users
        .iter()
        .zip(&tokens)
        .enumerate()
        .map(|(i, (user, token))| {
            let (d, go, user, token) = (Arc::clone(&d), Arc::clone(&go), user.clone(), token.clone());
            thread::spawn(move || {
                go.wait();
                let (open, here, closed) = churn(&d, &user, &token, room, i as u64);
                (user, open, here, closed)
            })
        })
        .collect();
    let mut watcher = login(&d, "watcher", &tokens[CHURNERS], 2);
    join(&mut watcher, room, 0, 0);
    go.wait();
    // The snapshot is taken while the others churn.
    watch(&mut watcher, room, 1);
    let (total, listed) = members(&mut watcher, room);
    assert_eq!(total as usize, listed.len());
    let mut seen: BTreeSet<String> = listed.into_iter().collect();
    assert!(seen.contains("watcher"), "MEMBERS lists the watcher's own user");
    let mut changes = 0;
    // Each user's changes, applied to the snapshot, must alternate: an arrival of a user
    // already here or a departure of one not here is a duplicate or follows a gap.
    let mut apply = |seen: &mut BTreeSet<String>, reply: Reply| match reply {
        Reply::Presence { room: r, user, here } if r == room => {
            assert_ne!(user, "watcher", "a watcher is not told of its own user");
            let consistent = if here { seen.insert(user.clone()) } else { seen.remove(&user) };
            assert!(consistent, "PRESENCE {user} {here} contradicts {seen:?}");
            changes += 1;
        }
        other => panic!("expected PRESENCE {room}, got {other:?}"),
    };
    let mut open = Vec::new();
    let mut expected = BTreeSet::from(["watcher".to_string(), "sentinel".to_string()]);
    let mut closed = 0;
    for t in threads {
        let (user, conns, here, n) = t.join().expect("a churning thread");
        open.extend(conns);
        closed += n;
        if here {
            expected.insert(user);
        }
    }
    // Every JOIN and LEAVE was answered and every close logged, so every change is in the
    // room's log; the sentinel's arrival comes after all of them.
    wait_for_closes(&d, closed);
    let mut sentinel = login(&d, "sentinel", &tokens[CHURNERS + 1], 1);
    join(&mut sentinel, room, 0, 0);
    loop {
        match recv(&mut watcher) {
            Reply::Presence { user, here: true, .. } if user == "sentinel" => break,
            reply => apply(&mut seen, reply),
        }
    }
    assert!(changes > 0, "the churn changed nothing after the snapshot");
    seen.insert("sentinel".into());
    assert_eq!(seen, expected, "the watcher's view is not who is here");
    // Nothing more is owed: the next frame is the answer to a WHO, and it agrees.
    who(&mut watcher, room);
    let (total, listed) = members(&mut watcher, room);
    assert_eq!(total as usize, expected.len());
    assert_eq!(listed.into_iter().collect::<BTreeSet<_>>(), expected);
    drop(open);
}
}

/// Two `--store jetstream` nodes over one NATS server, with `names` in the users file of both.
fn two_nodes(names: &[&str]) -> Option<(Daemon, Daemon, Vec<String>)> {
    if nats::skip("presence across --store jetstream nodes") {
        return None;
    }
    let a = Driver::JetStream.start(&["--threads", "2"]);
    let tokens = add_users(&a, names);
    let b = Driver::start_beside(&a, &["--threads", "2"]);
    Some((a, b, tokens))
}

/// WATCH on `room`: the users MEMBERS lists, plus those of the PRESENCE frames up to the one
/// that says `until` is here (another node's users may be told just after the snapshot, as the
/// node that loaded the room hears from the others).
#[track_caller]
fn watch_until(c: &mut Client, room: &str, until: &str) -> BTreeSet<String> {
    watch(c, room, 1);
    let (_, listed) = members(c, room);
    let mut here: BTreeSet<String> = listed.into_iter().collect();
    while !here.contains(until) {
        match presence(c, room) {
            (user, true) => here.insert(user),
            (user, false) => here.remove(&user),
        };
    }
    here
}

#[test]
fn across_nodes_a_watcher_sees_the_other_nodes_users_once_each() {
    let Some((a, b, tokens)) = two_nodes(&["alice", "bob", "carol", "dave"]) else {
        return;
    };
    let room = "#shared";
    let mut alice = login(&a, "alice", &tokens[0], 2);
    join(&mut alice, room, 0, 0);
    watch(&mut alice, room, 1);
    assert_eq!(members(&mut alice, room), (1, names(&["alice"])));

    // Bob arrives on B: A's watcher hears it.
    let mut bob_b = login(&b, "bob", &tokens[1], 2);
    join(&mut bob_b, room, 0, 0);
    assert_eq!(presence(&mut alice, room), ("bob".into(), true));
    // B's own watcher sees alice, who is on A.
    let mut dave = login(&b, "dave", &tokens[3], 2);
    join(&mut dave, room, 0, 0);
    assert_eq!(
        watch_until(&mut dave, room, "alice"),
        ["alice", "bob", "dave"].map(String::from).into()
    );
    assert_eq!(presence(&mut alice, room), ("dave".into(), true));

    // Bob on both nodes is one user: leaving B while joined on A changes nothing.
    let mut bob_a = login(&a, "bob", &tokens[1], 2);
    join(&mut bob_a, room, 0, 0);
    leave(&mut bob_b, room);
    // Carol arrives on B after bob left it: the next thing A's watcher hears is carol.
    let mut carol = login(&b, "carol", &tokens[2], 2);
    join(&mut carol, room, 0, 0);
    assert_eq!(presence(&mut alice, room), ("carol".into(), true));
    leave(&mut bob_a, room);
    assert_eq!(presence(&mut alice, room), ("bob".into(), false));
    who(&mut alice, room);
    assert_eq!(
        members(&mut alice, room),
        (3, names(&["alice", "carol", "dave"]))
    );
    // B hears of bob's departure from A a moment later: its watchers are told.
    watch(&mut carol, room, 1);
    let mut here: BTreeSet<String> = members(&mut carol, room).1.into_iter().collect();
    if here.contains("bob") {
        assert_eq!(presence(&mut carol, room), ("bob".into(), false));
        here.remove("bob");
    }
    assert_eq!(here, ["alice", "carol", "dave"].map(String::from).into());
}

/// Node A with alice in `room`, watching it, and node B with bob there, whom alice has seen
/// arrive: A, B, and alice's and bob's connections.
fn alice_on_a_sees_bob_on_b(room: &str) -> Option<(Daemon, Daemon, Client, Client)> {
    let (a, b, tokens) = two_nodes(&["alice", "bob"])?;
    let mut alice = login(&a, "alice", &tokens[0], 2);
    join(&mut alice, room, 0, 0);
    let mut bob = login(&b, "bob", &tokens[1], 2);
    join(&mut bob, room, 0, 0);
    assert!(watch_until(&mut alice, room, "bob").contains("bob"));
    Some((a, b, alice, bob))
}

/// Reads PRESENCE frames of `room` until `user`'s `here`, and returns them all.
#[track_caller]
fn presence_until(c: &mut Client, room: &str, user: &str, here: bool) -> Vec<(String, bool)> {
    let mut seen = Vec::new();
    while !seen.contains(&(user.to_string(), here)) {
        seen.push(presence(c, room));
    }
    seen
}

/// What `seen` says of `user`, in order.
fn of(seen: &[(String, bool)], user: &str) -> Vec<bool> {
    seen.iter()
        .filter(|(u, _)| u == user)
        .map(|&(_, here)| here)
        .collect()
}

#[test]
fn across_nodes_a_visit_or_a_return_between_two_rosters_is_seen() {
    let Some((a, b, tokens)) = two_nodes(&["alice", "bob", "carol", "dave"]) else {
        return;
    };
    let room = "#brief";
    let mut alice = login(&a, "alice", &tokens[0], 2);
    join(&mut alice, room, 0, 0);
    // Carol stays on B, so that B follows the room and A has heard from B.
    let mut carol = login(&b, "carol", &tokens[2], 2);
    join(&mut carol, room, 0, 0);
    assert!(watch_until(&mut alice, room, "carol").contains("carol"));
    // Bob joins and leaves on B well within one 0.1 s tick of B's rosters, then carol leaves:
    // B's next roster does not list bob, yet A's watcher sees him come and go.
    let mut bob = login(&b, "bob", &tokens[1], 2);
    join(&mut bob, room, 0, 0);
    leave(&mut bob, room);
    leave(&mut carol, room);
    let seen = presence_until(&mut alice, room, "carol", false);
    assert_eq!(of(&seen, "bob"), [true, false], "{seen:?}");
    // Dave, listed by B, leaves and comes back within a tick, then bob arrives: B's rosters
    // list dave before and after, yet A's watcher sees him go and come back.
    let mut dave = login(&b, "dave", &tokens[3], 2);
    join(&mut dave, room, 0, 0);
    let seen = presence_until(&mut alice, room, "dave", true);
    assert_eq!(of(&seen, "dave"), [true], "{seen:?}");
    leave(&mut dave, room);
    join(&mut dave, room, 0, 0);
    join(&mut bob, room, 0, 0);
    let seen = presence_until(&mut alice, room, "bob", true);
    assert_eq!(of(&seen, "dave"), [false, true], "{seen:?}");
}

#[test]
fn across_nodes_the_users_of_a_node_that_dies_leave_within_its_expiry() {
    let room = "#fragile";
    let Some((_a, mut b, mut alice, _bob)) = alice_on_a_sees_bob_on_b(room) else {
        return;
    };
    b.signal(nix::sys::signal::Signal::SIGKILL);
    b.wait_exit().expect("node B did not die on SIGKILL");
    // Nobody tells A: it forgets B's users 15 s after B last spoke (src/jetstream/presence.rs).
    alice
        .set_timeout(Some(Duration::from_secs(60)))
        .expect("set timeout");
    let started = Instant::now();
    assert_eq!(presence(&mut alice, room), ("bob".into(), false));
    eprintln!("bob left {:?} after node B died", started.elapsed());
    who(&mut alice, room);
    assert_eq!(members(&mut alice, room), (1, names(&["alice"])));
}

#[test]
fn across_nodes_what_is_not_a_roster_is_counted_and_changes_nothing() {
    if nats::skip("rosters refused across --store jetstream nodes") {
        return;
    }
    let a = Driver::JetStream.start(&["--metrics", "127.0.0.1:0"]);
    let tokens = add_users(&a, &["alice", "bob"]);
    let b = Driver::start_beside(&a, &["--metrics", "127.0.0.1:0"]);
    let room = "#guarded";
    let mut alice = login(&a, "alice", &tokens[0], 2);
    join(&mut alice, room, 0, 0);
    let mut bob = login(&b, "bob", &tokens[1], 2);
    join(&mut bob, room, 0, 0);
    assert!(watch_until(&mut alice, room, "bob").contains("bob"));
    assert!(metric(&a, "jetstream_rosters_heard_total") >= 1.0);
    assert!(metric(&b, "jetstream_rosters_sent_total") >= 1.0);
    // Anyone on the NATS server may publish on the room's presence subject.
    let port = a.nats.as_ref().expect("a NATS server").client_port();
    let subject = "chatd.presence._23guarded";
    for junk in [
        &b"mallory is here"[..],
        b"chatd-roster 1 00000000000000aa set\nmal lory\n",
        b"chatd-roster 1 00000000000000aa bye\nmallory\n",
    ] {
        nats::publish(port, subject, junk).expect("publish on NATS");
    }
    assert!(
        a.wait_for_log_count("not a roster on chatd.presence._23guarded", 3),
        "{:#?}",
        a.log_lines()
    );
    assert_eq!(metric(&a, "jetstream_rosters_refused_total"), 3.0);
    who(&mut alice, room);
    assert_eq!(members(&mut alice, room), (2, names(&["alice", "bob"])));
}

#[test]
fn across_nodes_a_node_that_stops_says_goodbye_and_its_users_leave_at_once() {
    let room = "#polite";
    let Some((a, mut b, mut alice, _bob)) = alice_on_a_sees_bob_on_b(room) else {
        return;
    };
    b.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        b.wait_exit().is_some_and(|s| s.success()),
        "{:#?}",
        b.log_lines()
    );
    // Told, not forgotten after 15 s of silence: A logs B's goodbye.
    assert_eq!(presence(&mut alice, room), ("bob".into(), false));
    assert!(
        a.wait_for_log("stopped; its users of #polite left"),
        "{:#?}",
        a.log_lines()
    );
}
