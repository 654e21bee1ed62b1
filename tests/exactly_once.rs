//! Exactly-once SEND across reconnects (protocol version 2, `client ≠ 0`) against the real
//! daemon, on the local store with both drivers and on `--store jetstream` (skipped, saying
//! SKIPPED, where nats-server is missing): a resent id is answered with the seq it was stored
//! as and stored once, across a restart and a kill -9 too, and with JetStream on another node
//! of the cluster too, answered from the keys a node reads back from the stream when it
//! loads the room (restarted, or new to the room) without publishing again; a retry written right behind its original is stored once; an id below
//! what the server remembers is STALE_ID; version 1 and `client = 0` are untouched; a
//! duplicate takes no rate token.

mod util;

use chatd::client::{Client, Reply};
use chatd::protocol::{ClientFrame, ErrorCode, Version, encode_client};
use nix::sys::signal::Signal;
use util::{Daemon, Driver, expect_error, join, metric, nats, recv};

const ROOM: &str = "#once";
const CLIENT: u64 = 0x5eed_0000_0000_0001;
/// JOIN's `limit` for "all retained".
const ALL: u32 = u32::MAX;
const DRIVERS: [Driver; 2] = [Driver::Reactor, Driver::Threads];

/// Both drivers on the local store, and `--store jetstream` unless nats-server is missing
/// (then `test` says SKIPPED for it).
fn all_stores(test: &str) -> Vec<Driver> {
    let mut drivers = DRIVERS.to_vec();
    if !nats::skip(&format!("{test} on --store jetstream")) {
        drivers.push(Driver::JetStream);
    }
    drivers
}

/// HELLO as `user` in `version` with `client`, then JOIN of ROOM live only.
#[track_caller]
fn sender(d: &Daemon, user: &str, token: &str, version: u8, client: u64) -> Client {
    let mut c = d.connect();
    if version == 2 {
        c.speak(Version::V2);
    }
    c.send(&ClientFrame::Hello {
        version,
        user,
        token,
        client,
    })
    .expect("send HELLO");
    match recv(&mut c) {
        Reply::Welcome { version: v, .. } => assert_eq!(v, version),
        other => panic!("expected WELCOME, got {other:?}"),
    }
    join(&mut c, ROOM, 0, 0);
    c
}

/// The answer to the next SEND: Ok(seq) for ACK, Err(code) for ERROR (its ref checked);
/// the member's own MSGs in between are skipped.
#[track_caller]
fn answer(c: &mut Client, id: u64) -> Result<u64, u16> {
    answer_noting(c, id, &mut 0)
}

/// [`answer`], noting in `seen` the seq of the newest MSG skipped.
#[track_caller]
fn answer_noting(c: &mut Client, id: u64, seen: &mut u64) -> Result<u64, u16> {
    loop {
        match recv(c) {
            Reply::Ack { id: got, seq } => {
                assert_eq!(got, id, "ACK of another SEND");
                return Ok(seq);
            }
            Reply::Error {
                code, reference, ..
            } => {
                assert_eq!(reference, id, "ERROR of another SEND");
                return Err(code);
            }
            Reply::Msg { seq, .. } => *seen = seq,
            other => panic!("expected the answer to SEND {id}, got {other:?}"),
        }
    }
}

/// SENDs one message and waits for its answer.
#[track_caller]
fn send(c: &mut Client, id: u64, text: &str) -> Result<u64, u16> {
    util::send(c, ROOM, id, text);
    answer(c, id)
}

/// Every message of ROOM as (seq, text), read by a fresh version 1 connection.
#[track_caller]
fn history(d: &Daemon, token: &str) -> Vec<(u64, String)> {
    let mut c = d.connect();
    c.send(&ClientFrame::Hello {
        version: 1,
        user: "alice",
        token,
        client: 0,
    })
    .expect("send HELLO");
    assert!(matches!(recv(&mut c), Reply::Welcome { .. }));
    let (first, head) = join(&mut c, ROOM, 0, ALL);
    let mut msgs = Vec::new();
    let mut last = first.saturating_sub(1);
    while last < head {
        match recv(&mut c) {
            Reply::Msg { seq, text, .. } => {
                last = seq;
                msgs.push((seq, text));
            }
            other => panic!("expected the replay up to {head}, got {other:?}"),
        }
    }
    msgs
}

fn texts(msgs: &[(u64, String)]) -> Vec<&str> {
    msgs.iter().map(|(_, t)| t.as_str()).collect()
}

#[test]
fn a_resent_id_gets_its_seq_again_and_is_stored_once() {
    for driver in all_stores("a_resent_id_gets_its_seq_again_and_is_stored_once") {
        let d = driver.start(&["--send-rate", "0"]);
        let token = d.add_user("alice");
        let mut c = sender(&d, "alice", &token, 2, CLIENT);
        let first = send(&mut c, 1, "one").expect("stored");
        assert_eq!(send(&mut c, 1, "one"), Ok(first), "{}", driver.name());
        assert_eq!(send(&mut c, 2, "two"), Ok(first + 1));
        assert_eq!(send(&mut c, 1, "one"), Ok(first));
        // The same id from a new connection of the same client: the same message.
        drop(c);
        let mut c = sender(&d, "alice", &token, 2, CLIENT);
        assert_eq!(send(&mut c, 2, "two"), Ok(first + 1));
        // Another client of the same user has ids of its own.
        let mut other = sender(&d, "alice", &token, 2, CLIENT + 1);
        assert_eq!(send(&mut other, 1, "one"), Ok(first + 2));
        let msgs = history(&d, &token);
        assert_eq!(texts(&msgs), ["one", "two", "one"], "{}", driver.name());
    }
}

#[test]
fn a_resend_after_a_restart_and_after_kill_9_gets_its_seq_again() {
    for driver in DRIVERS {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data = tmp.path().join("data");
        let token = util::add_user(&data, "alice");
        let data = data.display().to_string();
        let flags = ["--data-dir", data.as_str(), "--send-rate", "0"];
        let mut d = driver.start(&flags);
        let mut c = sender(&d, "alice", &token, 2, CLIENT);
        let seqs: Vec<u64> = (1..=3)
            .map(|id| send(&mut c, id, &format!("m{id}")).expect("stored"))
            .collect();
        d.signal(Signal::SIGTERM);
        assert!(d.wait_exit().is_some_and(|s| s.success()));

        let mut d = driver.start(&flags);
        let mut c = sender(&d, "alice", &token, 2, CLIENT);
        assert_eq!(send(&mut c, 3, "m3"), Ok(seqs[2]), "after a restart");
        let fourth = send(&mut c, 4, "m4").expect("stored");
        d.signal(Signal::SIGKILL);
        d.wait_exit().expect("chatd did not die on SIGKILL");

        let d = driver.start(&flags);
        let mut c = sender(&d, "alice", &token, 2, CLIENT);
        assert_eq!(send(&mut c, 4, "m4"), Ok(fourth), "after kill -9");
        assert_eq!(send(&mut c, 1, "m1"), Ok(seqs[0]));
        let msgs = history(&d, &token);
        assert_eq!(texts(&msgs), ["m1", "m2", "m3", "m4"], "{}", driver.name());
    }
}

#[test]
fn a_retry_right_behind_its_original_is_stored_once() {
    for driver in all_stores("a_retry_right_behind_its_original_is_stored_once") {
        let d = driver.start(&["--send-rate", "0", "--fsync", "always"]);
        let token = d.add_user("alice");
        let mut c = sender(&d, "alice", &token, 2, CLIENT);
        // Each SEND followed at once by its retry, all in one write: retries land in the
        // original's batch or in one taken while the original was being synced.
        let mut bytes = Vec::new();
        for id in 1..=50 {
            let text = format!("m{id}");
            for _ in 0..2 {
                encode_client(
                    &ClientFrame::Send {
                        room: ROOM,
                        id,
                        text: &text,
                    },
                    &mut bytes,
                );
            }
        }
        c.send_raw(&bytes).expect("send the burst");
        let mut first: Option<u64> = None;
        for id in 1..=50 {
            let a = answer(&mut c, id).expect("stored");
            let b = answer(&mut c, id).expect("stored");
            assert_eq!(a, b, "{}: id {id} answered with two seqs", driver.name());
            let base = *first.get_or_insert(a);
            if driver != Driver::JetStream {
                assert_eq!(a, base + id - 1, "ids stored in order, once each");
            }
        }
        let msgs = history(&d, &token);
        let mut got: Vec<&str> = texts(&msgs);
        let want: Vec<String> = (1..=50).map(|id| format!("m{id}")).collect();
        if driver == Driver::JetStream {
            // Each SEND is its own publish: PubAcks, and so seqs, may come in another order.
            got.sort_by_key(|t| t.trim_start_matches('m').parse::<u64>().unwrap_or(0));
        }
        assert_eq!(got, want, "{}: each once", driver.name());
    }
}

#[test]
fn below_the_floor_is_stale_id_and_inside_it_the_old_seq() {
    for driver in all_stores("below_the_floor_is_stale_id_and_inside_it_the_old_seq") {
        let d = driver.start(&["--send-rate", "0"]);
        let token = d.add_user("alice");
        let mut c = sender(&d, "alice", &token, 2, CLIENT);
        let mut bytes = Vec::new();
        for id in 1..=100 {
            let text = format!("m{id}");
            let send = ClientFrame::Send {
                room: ROOM,
                id,
                text: &text,
            };
            encode_client(&send, &mut bytes);
        }
        c.send_raw(&bytes).expect("send 100");
        let mut seen = 0;
        let seqs: Vec<u64> = (1..=100)
            .map(|id| answer_noting(&mut c, id, &mut seen).expect("stored"))
            .collect();
        // The member's own MSGs may still be coming: read them first.
        while seen < seqs[99] {
            match recv(&mut c) {
                Reply::Msg { seq, .. } => seen = seq,
                other => panic!("expected this member's own MSGs, got {other:?}"),
            }
        }
        util::send(&mut c, ROOM, 1, "m1");
        let message = expect_error(&mut c, ErrorCode::StaleId, 1);
        assert!(message.contains("history"), "{message}");
        assert_eq!(send(&mut c, 90, "m90"), Ok(seqs[89]), "{}", driver.name());
        // Not fatal: the connection goes on.
        assert_eq!(send(&mut c, 101, "m101"), Ok(seqs[99] + 1));
        assert_eq!(history(&d, &token).len(), 101);
    }
}

#[test]
fn version_1_and_client_0_resends_are_new_messages() {
    for driver in all_stores("version_1_and_client_0_resends_are_new_messages") {
        let d = driver.start(&["--send-rate", "0"]);
        let token = d.add_user("alice");
        let mut v1 = sender(&d, "alice", &token, 1, 0);
        let mut v2 = sender(&d, "alice", &token, 2, 0);
        let a = send(&mut v1, 1, "v1").expect("stored");
        assert_eq!(send(&mut v1, 1, "v1"), Ok(a + 1));
        assert_eq!(send(&mut v2, 1, "v2"), Ok(a + 2));
        assert_eq!(send(&mut v2, 1, "v2"), Ok(a + 3));
        let msgs = history(&d, &token);
        assert_eq!(texts(&msgs), ["v1", "v1", "v2", "v2"], "{}", driver.name());
    }
}

#[test]
fn a_duplicate_takes_no_rate_token_but_is_still_rate_checked_first() {
    for driver in all_stores("a_duplicate_takes_no_rate_token_but_is_still_rate_checked_first") {
        // Two tokens, one more a second: the test is over long before one comes back.
        let d = driver.start(&["--send-rate", "1", "--send-burst", "2"]);
        let token = d.add_user("alice");
        let mut c = sender(&d, "alice", &token, 2, CLIENT);
        let seq = send(&mut c, 1, "one").expect("stored");
        for _ in 0..5 {
            assert_eq!(send(&mut c, 1, "one"), Ok(seq), "{}", driver.name());
        }
        assert_eq!(
            send(&mut c, 2, "two"),
            Ok(seq + 1),
            "the second token is there"
        );
        let limited = ErrorCode::RateLimited.as_u16();
        assert_eq!(send(&mut c, 3, "three"), Err(limited));
        // The rate check comes before the duplicate check.
        assert_eq!(send(&mut c, 1, "one"), Err(limited));
        assert_eq!(texts(&history(&d, &token)), ["one", "two"]);
    }
}

#[test]
fn with_jetstream_a_resend_to_a_restarted_node_gets_its_seq_again() {
    if nats::skip("a resend to a restarted --store jetstream node") {
        return;
    }
    let flags = ["--send-rate", "0"];
    let d = Driver::JetStream.start(&flags);
    let token = d.add_user("alice");
    let mut c = sender(&d, "alice", &token, 2, CLIENT);
    let seqs: Vec<u64> = (1..=3)
        .map(|id| send(&mut c, id, &format!("m{id}")).expect("stored"))
        .collect();
    let mut d = d;
    d.signal(Signal::SIGKILL);
    d.wait_exit().expect("chatd did not die on SIGKILL");

    // A new node over the same stream reads the room's keys back from the stream when it
    // loads the room (the JOIN): its table's floor is the pair's first id, so the resends
    // get their seqs in any order.
    let d = Driver::JetStream.start_again(&d, &flags);
    let mut c = sender(&d, "alice", &token, 2, CLIENT);
    assert_eq!(send(&mut c, 3, "m3"), Ok(seqs[2]), "after kill -9");
    assert_eq!(
        send(&mut c, 1, "m1"),
        Ok(seqs[0]),
        "below the first id resent"
    );
    assert_eq!(send(&mut c, 2, "m2"), Ok(seqs[1]));
    assert_eq!(send(&mut c, 4, "m4"), Ok(seqs[2] + 1));
    assert_eq!(send(&mut c, 4, "m4"), Ok(seqs[2] + 1));
    assert_eq!(texts(&history(&d, &token)), ["m1", "m2", "m3", "m4"]);
}

#[test]
fn with_jetstream_a_resend_on_another_node_gets_its_seq_again() {
    if nats::skip("a resend on another --store jetstream node") {
        return;
    }
    let flags = ["--send-rate", "0"];
    let a = Driver::JetStream.start(&flags);
    let token = a.add_user("alice");
    let b = Driver::start_beside(&a, &flags);
    let mut on_a = sender(&a, "alice", &token, 2, CLIENT);
    let first = send(&mut on_a, 1, "one").expect("stored");

    // The client moves to node B and resends: the stream knows the key.
    let mut on_b = sender(&b, "alice", &token, 2, CLIENT);
    assert_eq!(
        send(&mut on_b, 1, "one"),
        Ok(first),
        "node B, a resend from A"
    );
    assert_eq!(send(&mut on_b, 2, "two"), Ok(first + 1));
    // And back, with B's message resent to A, which saw it only through its follower.
    assert_eq!(
        send(&mut on_a, 2, "two"),
        Ok(first + 1),
        "node A, a resend from B"
    );
    // Both nodes at once, each SEND right behind the other.
    util::send(&mut on_a, ROOM, 3, "three");
    util::send(&mut on_b, ROOM, 3, "three");
    let (x, y) = (answer(&mut on_a, 3), answer(&mut on_b, 3));
    assert_eq!(x, y, "one key, one seq on both nodes");
    assert_eq!(x, Ok(first + 2));
    // Another client of the same user, on B, has ids of its own.
    let mut other = sender(&b, "alice", &token, 2, CLIENT + 1);
    assert_eq!(send(&mut other, 1, "one"), Ok(first + 3));
    for d in [&a, &b] {
        assert_eq!(texts(&history(d, &token)), ["one", "two", "three", "one"]);
    }
}

#[test]
fn with_jetstream_a_node_that_saw_a_key_answers_its_resend_without_publishing() {
    if nats::skip("a resend answered from a --store jetstream node's table") {
        return;
    }
    let a = Driver::JetStream.start(&["--send-rate", "0"]);
    let token = a.add_user("alice");
    let b = Driver::start_beside(&a, &["--send-rate", "0", "--metrics", "127.0.0.1:0"]);
    // B follows the room before A stores: its follower sees the key go by.
    let mut on_b = sender(&b, "alice", &token, 2, CLIENT);
    let mut on_a = sender(&a, "alice", &token, 2, CLIENT);
    let seq = send(&mut on_a, 1, "one").expect("stored");
    match recv(&mut on_b) {
        Reply::Msg { seq: got, text, .. } => assert_eq!((got, text.as_str()), (seq, "one")),
        other => panic!("expected A's message on B, got {other:?}"),
    }
    let published = metric(&b, "jetstream_publishes_total");
    let retries = metric(&b, "send_retries_total");
    assert_eq!(send(&mut on_b, 1, "one"), Ok(seq));
    assert_eq!(
        metric(&b, "jetstream_publishes_total"),
        published,
        "answered from B's table, not the stream's duplicate window"
    );
    assert_eq!(metric(&b, "send_retries_total"), retries + 1.0);
    assert!(metric(&b, "dedupe_pairs") >= 1.0);
    assert_eq!(texts(&history(&b, &token)), ["one"]);
}

/// Stores ids `1..=3` of CLIENT and `1..=70` of CLIENT + 1 on `d`; returns the seqs of each.
#[track_caller]
fn store_two_pairs(d: &Daemon, token: &str) -> (Vec<u64>, Vec<u64>) {
    let mut few = sender(d, "alice", token, 2, CLIENT);
    let mut many = sender(d, "alice", token, 2, CLIENT + 1);
    let few_seqs = (1..=3)
        .map(|id| send(&mut few, id, &format!("m{id}")).expect("stored"))
        .collect();
    let many_seqs = (1..=70)
        .map(|id| send(&mut many, id, &format!("n{id}")).expect("stored"))
        .collect();
    (few_seqs, many_seqs)
}

/// On `d`, which did not see them stored: resends answered from the keys it read back from
/// the stream when it loaded the room, without publishing; below the floor of the pair with
/// 70 ids (its last 64, ids 7 to 70, are remembered) STALE_ID, as the sequencer's table says.
#[track_caller]
fn resends_are_answered_from_the_rebuilt_keys(
    d: &Daemon,
    token: &str,
    seqs: &(Vec<u64>, Vec<u64>),
) {
    let (few_seqs, many_seqs) = seqs;
    let mut few = sender(d, "alice", token, 2, CLIENT);
    let mut many = sender(d, "alice", token, 2, CLIENT + 1);
    assert_eq!(metric(d, "jetstream_keys_rebuilt_total"), 73.0);
    let published = metric(d, "jetstream_publishes_total");
    let retries = metric(d, "send_retries_total");
    assert_eq!(send(&mut few, 2, "m2"), Ok(few_seqs[1]));
    assert_eq!(send(&mut many, 70, "n70"), Ok(many_seqs[69]));
    assert_eq!(send(&mut many, 7, "n7"), Ok(many_seqs[6]), "the floor");
    let stale = ErrorCode::StaleId.as_u16();
    assert_eq!(send(&mut many, 6, "n6"), Err(stale), "below the floor");
    assert_eq!(send(&mut many, 1, "n1"), Err(stale));
    assert_eq!(
        metric(d, "jetstream_publishes_total"),
        published,
        "answered from the rebuilt table, not the stream's duplicate window"
    );
    assert_eq!(metric(d, "send_retries_total"), retries + 3.0);
    let next = many_seqs[69] + 1;
    assert_eq!(send(&mut many, 71, "n71"), Ok(next), "a new id is stored");
    assert_eq!(metric(d, "jetstream_publishes_total"), published + 1.0);
    let all = history(d, token);
    assert_eq!(all.len(), 74, "each message once");
    assert_eq!(all.last().map(|(seq, _)| *seq), Some(next));
}

#[test]
fn with_jetstream_a_node_killed_and_started_again_reads_the_keys_back() {
    if nats::skip("keys read back by a restarted --store jetstream node") {
        return;
    }
    let d = Driver::JetStream.start(&["--send-rate", "0"]);
    let token = d.add_user("alice");
    let seqs = store_two_pairs(&d, &token);
    let mut d = d;
    d.signal(Signal::SIGKILL);
    d.wait_exit().expect("chatd did not die on SIGKILL");
    let d = Driver::JetStream.start_again(&d, &["--send-rate", "0", "--metrics", "127.0.0.1:0"]);
    resends_are_answered_from_the_rebuilt_keys(&d, &token, &seqs);
}

#[test]
fn with_jetstream_a_node_that_never_followed_the_room_reads_its_keys_back() {
    if nats::skip("keys read back by a --store jetstream node new to the room") {
        return;
    }
    let a = Driver::JetStream.start(&["--send-rate", "0"]);
    let token = a.add_user("alice");
    // B runs before A stores, but follows the room only from its first JOIN there, after.
    let b = Driver::start_beside(&a, &["--send-rate", "0", "--metrics", "127.0.0.1:0"]);
    let seqs = store_two_pairs(&a, &token);
    resends_are_answered_from_the_rebuilt_keys(&b, &token, &seqs);
}

/// Sends ids `from..=to` (texts `m{id}`) keeping at most `window` unanswered, recording each
/// ACK in `acked`; returns early, with SENDs still in flight, once `stop_after` ACKs came in.
#[track_caller]
fn stream(
    c: &mut Client,
    ids: &[u64],
    window: usize,
    acked: &mut std::collections::BTreeMap<u64, u64>,
    stop_after: Option<usize>,
) {
    let mut in_flight = std::collections::VecDeque::new();
    let mut next = ids.iter();
    let mut got = 0;
    loop {
        while in_flight.len() < window {
            let Some(&id) = next.next() else { break };
            util::send(c, ROOM, id, &format!("m{id}"));
            in_flight.push_back(id);
        }
        if stop_after.is_some_and(|n| got >= n) {
            return;
        }
        let Some(&id) = in_flight.front() else { return };
        let seq = answer(c, id).unwrap_or_else(|code| panic!("SEND {id} refused: {code}"));
        in_flight.pop_front();
        assert!(acked.insert(id, seq).is_none(), "a second ACK for {id}");
        got += 1;
    }
}

#[test]
fn kill_9_in_the_middle_of_a_stream_loses_nothing_and_stores_nothing_twice() {
    // The test: a client with an outbox streams; chatd is killed with SENDs in flight
    // (some stored, their ACKs lost; some never read); after it comes back the client resends
    // every id it has no ACK for, with its original text, then goes on. Every message ends
    // up in the room exactly once, and the client has an ACK for each, with the seq it has.
    const N: u64 = 300;
    for driver in DRIVERS {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data = tmp.path().join("data");
        let token = util::add_user(&data, "alice");
        let data = data.display().to_string();
        let flags = [
            "--data-dir",
            data.as_str(),
            "--send-rate",
            "0",
            "--fsync",
            "always",
        ];
        let mut d = driver.start(&flags);
        let mut c = sender(&d, "alice", &token, 2, CLIENT);
        let ids: Vec<u64> = (1..=N).collect();
        let mut acked = std::collections::BTreeMap::new();
        stream(&mut c, &ids, 16, &mut acked, Some(100));
        d.signal(Signal::SIGKILL);
        d.wait_exit().expect("chatd did not die on SIGKILL");
        drop(c);
        assert!(acked.len() >= 100 && (acked.len() as u64) < N);

        let d = driver.start(&flags);
        let mut c = sender(&d, "alice", &token, 2, CLIENT);
        let outbox: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| !acked.contains_key(id))
            .collect();
        stream(&mut c, &outbox, 16, &mut acked, None);
        assert_eq!(acked.len() as u64, N, "an ACK for every message");

        let msgs = history(&d, &token);
        let want: Vec<(u64, String)> = acked
            .iter()
            .map(|(id, seq)| (*seq, format!("m{id}")))
            .collect();
        let mut got = msgs.clone();
        got.sort();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        assert_eq!(
            got,
            want_sorted,
            "{}: each message once, at its ACKed seq",
            driver.name()
        );
    }
}
