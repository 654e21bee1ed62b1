//! chatd nodes sharing rooms through NATS JetStream (`--store jetstream`): a cluster of three
//! nats-servers with replicas 3 and two chatd nodes over it, all on 127.0.0.1. Members on
//! either node see one history per room (same seqs, same messages, one epoch); NATS servers
//! are SIGKILLed under load and an ACKed message is never lost nor stored twice; with the
//! quorum gone every SEND is answered ERROR STORAGE within the ack timeout and none is ACKed;
//! the clients of a killed chatd node resume on the other by (epoch, room, seq).
//!
//! Each test starts its own servers on ports of its own; they die with the test.

#[path = "util/frames.rs"]
mod frames;
mod util;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chatd::protocol::{ClientFrame, ErrorCode};
use nix::sys::signal::Signal;
use util::nats::{self, NatsCluster, NatsServer};
use util::nodes::{
    ACK_TIMEOUT, ALL, MARGIN, Msg, Nodes, Outcome, Plan, Progress, RESUME, Sent, acked_head,
    assert_history, barrier, history, join_all, load, longest_stall, read_msgs,
};
use util::{PATIENCE, expect_error};

/// How often each sender of the kill test SENDs: a steady load (4 senders, 800/s in all)
/// that leaves the two shared cores to the elections being tested.
const PACE: Duration = Duration::from_millis(5);

const A: usize = 0;
const B: usize = 1;

/// Room names with `.` and `#`, which NATS subjects and stream names cannot hold as they are.
fn rooms(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("#{prefix}.{i}")).collect()
}

/// Sets the flag when dropped, so that a failing assertion in a scope still stops the loads
/// the scope waits for.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The SENDs of `outcomes` to `room`: (ACKed, answered STORAGE).
fn in_room<'a>(room: &str, outcomes: &'a [Outcome]) -> (Vec<&'a Sent>, Vec<&'a Sent>) {
    let acked = outcomes.iter().flat_map(|o| &o.acked);
    let failed = outcomes.iter().flat_map(|o| &o.failed);
    (
        acked.filter(|s| s.room == room).collect(),
        failed.filter(|s| s.room == room).collect(),
    )
}

#[test]
fn the_harness_starts_jetstream_on_one_server_and_on_a_cluster_of_three() {
    if nats::skip("the nats harness test") {
        return;
    }
    let single = NatsServer::single();
    let (status, jsz) = nats::http_get(single.monitor_port(), "/jsz").expect("GET /jsz");
    assert_eq!(status, 200, "{jsz}");
    let jsz: serde_json::Value = serde_json::from_str(&jsz).expect("jsz is JSON");
    assert!(
        jsz["config"]["store_dir"].is_string(),
        "JetStream on: {jsz}"
    );

    let mut cluster = NatsCluster::start(3);
    assert_eq!(cluster.urls().len(), 3);
    for i in 0..cluster.len() {
        let (_, jsz) = nats::http_get(cluster.monitor_port(i), "/jsz").expect("GET /jsz");
        let jsz: serde_json::Value = serde_json::from_str(&jsz).expect("jsz is JSON");
        let meta = &jsz["meta_cluster"];
        assert_eq!(meta["cluster_size"], 3, "server {i}: {jsz}");
        assert!(
            meta["leader"].as_str().is_some_and(|l| !l.is_empty()),
            "server {i} knows a meta leader: {jsz}"
        );
    }
    cluster.kill(2);
    assert!(!cluster.healthy(2), "a killed server does not answer");
    cluster.restart(2);
    assert!(cluster.healthy(2), "restarted on its ports and store");
}

#[test]
fn members_on_two_nodes_see_the_same_messages_with_the_same_seqs_and_epoch() {
    let users = ["alice", "bob", "carol", "dave", "erin"];
    let Some(nodes) = Nodes::start("cluster same messages", 2, &users) else {
        return;
    };
    let room = rooms("ops-eu", 1);
    let (mut alice, epoch) = nodes.login(A, "alice");
    let (mut bob, epoch_b) = nodes.login(B, "bob");
    let (mut carol, epoch_c) = nodes.login(A, "carol");
    let (mut dave, epoch_d) = nodes.login(B, "dave");
    assert_eq!(
        [epoch_b, epoch_c, epoch_d],
        [epoch; 3],
        "one NATS cluster, one epoch on every node"
    );
    for c in [&mut alice, &mut bob, &mut carol, &mut dave] {
        assert_eq!(join_all(c, &room, 0, ALL), [(0, 0)], "a new room is empty");
    }

    let progress = Progress::new(&room);
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let a = s.spawn(|| load(&mut alice, "alice", &room, Plan::count(10), &progress));
        let b = s.spawn(|| load(&mut bob, "bob", &room, Plan::count(10), &progress));
        [a, b]
            .map(|h| h.join().expect("load thread").expect("load"))
            .into()
    });
    for o in &outcomes {
        assert!(o.failed.is_empty(), "no fault, no STORAGE: {:?}", o.failed);
    }

    let want = HashMap::from([(room[0].clone(), 20)]);
    let on_a = read_msgs(&mut carol, &want)
        .remove(&room[0])
        .unwrap_or_default();
    let on_b = read_msgs(&mut dave, &want)
        .remove(&room[0])
        .unwrap_or_default();
    // A member joining later replays from the stream what the others saw live.
    let (mut erin, epoch_e) = nodes.login(B, "erin");
    assert_eq!(epoch_e, epoch);
    let (replayed, _) = history(&mut erin, &room[0], 20);
    let (acked, failed) = in_room(&room[0], &outcomes);
    assert_history(&room[0], &[on_a, on_b, replayed], &acked, &failed);
    frames::assert_alive(&mut carol);
    frames::assert_alive(&mut dave);
}

#[test]
fn sixty_four_rooms_with_senders_on_both_nodes_stay_contiguous_and_identical() {
    const SENDERS_PER_NODE: usize = 4;
    const PER_ROOM: u64 = 4;
    let names: Vec<String> = (0..2 * SENDERS_PER_NODE).map(|i| format!("s{i}")).collect();
    let mut users: Vec<&str> = names.iter().map(String::as_str).collect();
    users.extend(["watch-a", "watch-b", "late"]);
    let Some(nodes) = Nodes::start("cluster 64 rooms", 2, &users) else {
        return;
    };
    let rooms = rooms("r", 64);
    let (mut watch_a, _) = nodes.login(A, "watch-a");
    let (mut watch_b, _) = nodes.login(B, "watch-b");
    for c in [&mut watch_a, &mut watch_b] {
        join_all(c, &rooms, 0, 0);
    }
    let mut senders: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (mut c, _) = nodes.login(i % 2, name);
            join_all(&mut c, &rooms, 0, 0);
            (c, name.as_str())
        })
        .collect();

    let progress = Progress::new(&rooms);
    let count = PER_ROOM * u64::try_from(rooms.len()).expect("64");
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = senders
            .iter_mut()
            .map(|(c, name)| {
                let (rooms, progress) = (&rooms, &progress);
                s.spawn(move || load(c, name, rooms, Plan::count(count), progress))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("load thread").expect("load"))
            .collect()
    });
    for o in &outcomes {
        assert!(o.failed.is_empty(), "no fault, no STORAGE: {:?}", o.failed);
    }

    let per_room = usize::try_from(PER_ROOM).expect("small") * names.len();
    let want: HashMap<String, usize> = rooms.iter().map(|r| (r.clone(), per_room)).collect();
    let mut on_a = read_msgs(&mut watch_a, &want);
    let mut on_b = read_msgs(&mut watch_b, &want);
    let (mut late, _) = nodes.login(A, "late");
    for room in &rooms {
        let through = u64::try_from(per_room).expect("small");
        let (replayed, _) = history(&mut late, room, through);
        let seen = [
            on_a.remove(room).unwrap_or_default(),
            on_b.remove(room).unwrap_or_default(),
            replayed,
        ];
        let (acked, failed) = in_room(room, &outcomes);
        assert_eq!(acked.len(), per_room, "{room}: every SEND ACKed");
        assert_history(room, &seen, &acked, &failed);
    }
}

#[test]
fn killing_one_nats_server_under_load_repeatedly_loses_and_duplicates_nothing() {
    const KILLS: usize = 3;
    let users = ["a0", "a1", "b0", "b1", "closer", "read-a", "read-b"];
    let Some(mut nodes) = Nodes::start("cluster kill one", 2, &users) else {
        return;
    };
    let rooms = rooms("load", 8);
    let mut senders: Vec<_> = ["a0", "b0", "a1", "b1"]
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let (mut c, _) = nodes.login(i % 2, name);
            join_all(&mut c, &rooms, 0, 0);
            (c, name)
        })
        .collect();
    let progress = Progress::new(&rooms);
    let nats = &mut nodes.nats;
    let start = Instant::now();
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = senders
            .iter_mut()
            .map(|(c, name)| {
                let (rooms, progress) = (&rooms, &progress);
                s.spawn(move || load(c, name, rooms, Plan::paced(PACE), progress))
            })
            .collect();
        let stop = StopOnDrop(&progress.stop);
        let behind = progress.wait_all_acked_after(start, start + PATIENCE);
        assert!(behind.is_empty(), "no writes before any kill: {behind:?}");
        for round in 0..KILLS {
            let victim = round % nats.len();
            let killed = Instant::now();
            nats.kill(victim);
            let behind = progress.wait_all_acked_after(killed, killed + RESUME);
            assert!(
                behind.is_empty(),
                "round {round}: no write resumed within {RESUME:?} with server {victim} dead: {behind:?}"
            );
            nats.restart(victim);
        }
        let back = Instant::now();
        let behind = progress.wait_all_acked_after(back, back + RESUME);
        assert!(
            behind.is_empty(),
            "writes after the last restart: {behind:?}"
        );
        drop(stop);
        handles
            .into_iter()
            .map(|h| h.join().expect("load thread").expect("load"))
            .collect()
    });
    let mut outcomes = outcomes;
    let (mut closer, _) = nodes.login(B, "closer");
    join_all(&mut closer, &rooms, 0, 0);
    let mut late_failures = Outcome::default();
    let closed = barrier(&mut closer, &rooms, &mut late_failures);
    outcomes.extend([closed, late_failures]);
    let all: Vec<&Outcome> = outcomes.iter().collect();
    let acked: usize = outcomes.iter().map(|o| o.acked.len()).sum();
    let failed: usize = outcomes.iter().map(|o| o.failed.len()).sum();
    eprintln!(
        "{KILLS} kills in {:?}: {acked} SENDs ACKed, {failed} answered STORAGE, longest stall \
         of a room {:?}",
        start.elapsed(),
        longest_stall(&all)
    );

    let (mut read_a, _) = nodes.login(A, "read-a");
    let (mut read_b, _) = nodes.login(B, "read-b");
    let mut slowest = Duration::ZERO;
    for room in &rooms {
        let (acked, failed) = in_room(room, &outcomes);
        let through = acked_head(&acked);
        let (on_a, lag_a) = history(&mut read_a, room, through);
        let (on_b, lag_b) = history(&mut read_b, room, through);
        slowest = slowest.max(lag_a).max(lag_b);
        assert_history(room, &[on_a, on_b], &acked, &failed);
    }
    eprintln!("the slowest node caught up with an ACKed seq {slowest:?} after JOINED");
}

/// Sends `count` SENDs as `name` to `room` while the quorum is lost and asserts each is
/// answered ERROR STORAGE (never ACK) within the ack timeout and a margin.
#[track_caller]
fn assert_all_fail_in_time(
    c: &mut chatd::client::Client,
    name: &str,
    room: &[String],
    plan: Plan,
) -> Outcome {
    let o = load(c, name, room, plan, &Progress::new(room)).expect("answers");
    assert!(o.acked.is_empty(), "ACKed without a quorum: {:?}", o.acked);
    for sent in &o.failed {
        let took = sent.answered_at.duration_since(sent.sent_at);
        assert!(
            took <= ACK_TIMEOUT + MARGIN,
            "{name}: STORAGE for id {} after {took:?}, over {ACK_TIMEOUT:?} + {MARGIN:?}",
            sent.id
        );
    }
    o
}

#[test]
fn with_two_of_three_nats_servers_dead_sends_fail_with_storage_in_time_and_none_is_acked() {
    let users = ["alice", "bob", "carol", "read-a", "read-b"];
    let Some(mut nodes) = Nodes::start("cluster quorum lost", 2, &users) else {
        return;
    };
    let room = rooms("quorum", 1);
    let (mut alice, _) = nodes.login(A, "alice");
    let (mut bob, _) = nodes.login(B, "bob");
    join_all(&mut alice, &room, 0, 0);
    join_all(&mut bob, &room, 0, 0);
    let mut outcomes = Vec::new();
    for (c, name) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        let o = load(c, name, &room, Plan::count(5), &Progress::new(&room)).expect("load");
        assert!(
            o.failed.is_empty(),
            "STORAGE before any kill: {:?}",
            o.failed
        );
        outcomes.push(o);
    }

    nodes.nats.kill(0);
    nodes.nats.kill(1);
    // Right after the kill, then again once the nodes have had time to notice.
    for first_id in [100, 200] {
        for (c, name) in [(&mut alice, "alice"), (&mut bob, "bob")] {
            outcomes.push(assert_all_fail_in_time(
                c,
                name,
                &room,
                Plan::ids(first_id, 3),
            ));
        }
    }
    // A room whose stream cannot be created is not JOINED, and the connection lives on.
    let (mut carol, _) = nodes.login(A, "carol");
    carol
        .send(&ClientFrame::Join {
            room: "#fresh.room",
            after: 0,
            limit: ALL,
        })
        .expect("JOIN");
    expect_error(&mut carol, ErrorCode::Storage, 0);
    frames::assert_alive(&mut carol);

    nodes.nats.restart_all(&[0, 1]);
    let back = Instant::now();
    for (c, name) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        let mut id = 300;
        loop {
            let o = load(c, name, &room, Plan::ids(id, 1), &Progress::new(&room)).expect("load");
            let done = !o.acked.is_empty();
            outcomes.push(o);
            if done {
                break;
            }
            assert!(
                back.elapsed() < RESUME,
                "{name}: no SEND ACKed within {RESUME:?} of the servers' return"
            );
            id += 1;
        }
    }

    let (mut read_a, _) = nodes.login(A, "read-a");
    let (mut read_b, _) = nodes.login(B, "read-b");
    let (acked, failed) = in_room(&room[0], &outcomes);
    let through = acked_head(&acked);
    let (on_a, lag_a) = history(&mut read_a, &room[0], through);
    let (on_b, lag_b) = history(&mut read_b, &room[0], through);
    eprintln!("after the quorum came back, node A caught up in {lag_a:?}, node B in {lag_b:?}");
    assert_history(&room[0], &[on_a, on_b], &acked, &failed);
}

#[test]
fn clients_of_a_killed_node_resume_on_the_other_without_gap_or_duplicate() {
    let users = ["alice", "bob", "carol", "dave"];
    let Some(mut nodes) = Nodes::start("cluster node killed", 2, &users) else {
        return;
    };
    let room = rooms("resume", 1);
    let (mut alice, epoch) = nodes.login(A, "alice");
    let (mut carol, _) = nodes.login(A, "carol");
    let (mut bob, _) = nodes.login(B, "bob");
    let (mut dave, _) = nodes.login(B, "dave");
    for c in [&mut alice, &mut carol, &mut bob, &mut dave] {
        join_all(c, &room, 0, 0);
    }
    let mut outcomes = Vec::new();
    let progress = Progress::new(&room);
    std::thread::scope(|s| {
        let a = s.spawn(|| load(&mut alice, "alice", &room, Plan::count(10), &progress));
        let b = s.spawn(|| load(&mut bob, "bob", &room, Plan::count(10), &progress));
        for h in [a, b] {
            outcomes.push(h.join().expect("load thread").expect("load"));
        }
    });
    // carol has seen 12 of the 20 when her node dies.
    let twelve = HashMap::from([(room[0].clone(), 12)]);
    let before = read_msgs(&mut carol, &twelve)
        .remove(&room[0])
        .unwrap_or_default();
    let last = before.last().map_or(0, |m| m.seq);
    let node_a = nodes.daemons.get_mut(A).expect("node A");
    node_a.signal(Signal::SIGKILL);
    assert!(node_a.wait_exit().is_some(), "node A died");
    outcomes.push(load(&mut bob, "bob", &room, Plan::ids(11, 10), &progress).expect("load"));

    let (mut carol, epoch_b) = nodes.login(B, "carol");
    assert_eq!(
        epoch_b, epoch,
        "the same history, so the same epoch: resume"
    );
    assert_eq!(join_all(&mut carol, &room, last, ALL), [(1, 30)]);
    let missed = HashMap::from([(room[0].clone(), 30 - 12)]);
    let mut after = read_msgs(&mut carol, &missed)
        .remove(&room[0])
        .unwrap_or_default();
    outcomes.push(load(&mut bob, "bob", &room, Plan::ids(21, 5), &progress).expect("load"));
    let five = HashMap::from([(room[0].clone(), 5)]);
    after.extend(
        read_msgs(&mut carol, &five)
            .remove(&room[0])
            .unwrap_or_default(),
    );
    frames::assert_alive(&mut carol);

    let all = HashMap::from([(room[0].clone(), 35)]);
    let whole = read_msgs(&mut dave, &all)
        .remove(&room[0])
        .unwrap_or_default();
    let resumed: Vec<Msg> = before.into_iter().chain(after).collect();
    let (acked, failed) = in_room(&room[0], &outcomes);
    assert!(
        failed.is_empty(),
        "no STORAGE without a NATS fault: {failed:?}"
    );
    assert_history(&room[0], &[whole, resumed], &acked, &failed);
}
