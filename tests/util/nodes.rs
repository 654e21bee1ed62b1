//! Two (or more) chatd nodes with `--store jetstream` over one NATS cluster, the users they
//! share, and the client side of the cluster tests: logging in to a node, loads of SENDs that
//! keep a record of every answer, and reading a room's whole history back to check it.
//!
//! It only observes: nothing here retries a SEND or hides an answer, so that whatever the
//! daemon says (ACK, ERROR STORAGE, silence) reaches the test's assertions.

use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use chatd::client::{Client, Reply};
use chatd::protocol::{ClientFrame, ErrorCode};

use super::nats::NatsCluster;
use super::{Daemon, PATIENCE, add_user, recv};

/// JOIN's `limit` for all retained history.
pub const ALL: u32 = u32::MAX;

/// The ack timeout the nodes run with (`--nats-ack-timeout`): short, so that the tests of a
/// lost quorum take seconds.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// How long after its ack timeout a failed SEND may still take to be answered: the engine's
/// wake-up, a busy shared CI machine.
pub const MARGIN: Duration = Duration::from_secs(2);

/// How long writes may take to resume after NATS servers died or came back: raft elections of
/// nats-server 2.9 wait 4 s and more, and several streams elect one after another.
pub const RESUME: Duration = Duration::from_secs(40);

/// A message as a member sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub room: String,
    pub seq: u64,
    pub ts_ms: u64,
    pub user: String,
    pub text: String,
}

/// The NATS cluster, the chatd nodes over it, and the token of each user (one users file,
/// copied to every node's data directory).
pub struct Nodes {
    pub nats: NatsCluster,
    pub daemons: Vec<Daemon>,
    tokens: HashMap<String, String>,
}

impl Nodes {
    /// Starts a cluster of 3 nats-servers and `nodes` chatd nodes over it (replicas 3), with
    /// `users`. None (after saying SKIPPED) where nats-server is not installed.
    #[track_caller]
    pub fn start(test: &str, nodes: usize, users: &[&str]) -> Option<Nodes> {
        if super::nats::skip(test) {
            return None;
        }
        let nats = NatsCluster::start(3);
        let first = tempfile::tempdir().expect("temp dir");
        let data = first.path().join("data");
        let tokens: HashMap<String, String> = users
            .iter()
            .map(|u| (u.to_string(), add_user(&data, u)))
            .collect();
        let mut dirs = vec![first];
        for _ in 1..nodes {
            let dir = tempfile::tempdir().expect("temp dir");
            let other = dir.path().join("data");
            std::fs::create_dir(&other).expect("data dir");
            std::fs::copy(data.join("users"), other.join("users")).expect("copy users");
            dirs.push(dir);
        }
        let flags = node_flags(&nats.urls());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let daemons = dirs
            .into_iter()
            .map(|dir| Daemon::start_in(dir, &flags))
            .collect();
        Some(Nodes {
            nats,
            daemons,
            tokens,
        })
    }

    pub fn addr(&self, node: usize) -> SocketAddr {
        self.daemons.get(node).expect("node index").addr
    }

    /// HELLO as `user` on `node`; returns the connection and WELCOME's epoch.
    #[track_caller]
    pub fn login(&self, node: usize, user: &str) -> (Client, u64) {
        let token = self.tokens.get(user).expect("a user of the test");
        let mut c = Client::connect(self.addr(node)).expect("connect to chatd");
        c.set_timeout(Some(PATIENCE)).expect("timeout");
        c.send(&ClientFrame::Hello {
            version: 1,
            user,
            token,
            client: 0,
        })
        .expect("HELLO");
        match recv(&mut c) {
            Reply::Welcome { epoch, .. } => (c, epoch),
            other => panic!("expected WELCOME from node {node}, got {other:?}"),
        }
    }
}

/// How many of a node's log lines about JetStream a failing test shows.
const LOG_TAIL: usize = 40;

impl Drop for Nodes {
    /// A failing test shows what each node said about JetStream: the assertion says what went
    /// wrong, the engine's warnings usually say why.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (node, daemon) in self.daemons.iter().enumerate() {
            let lines: Vec<String> = daemon
                .log_lines()
                .into_iter()
                .filter(|l| l.contains("jetstream") || l.contains("WARN") || l.contains("ERROR"))
                .collect();
            let from = lines.len().saturating_sub(LOG_TAIL);
            eprintln!("--- node {node}, its last JetStream and warning lines:");
            for line in lines.get(from..).unwrap_or_default() {
                eprintln!("{line}");
            }
        }
    }
}

/// The flags of a node over the NATS servers at `urls`: every seed URL, replicas 3, the
/// short ack timeout, and no rate limit (the loads send as fast as they are answered).
pub fn node_flags(urls: &[String]) -> Vec<String> {
    let mut flags: Vec<String> = ["--store", "jetstream"].map(String::from).to_vec();
    for url in urls {
        flags.extend(["--nats".to_string(), url.clone()]);
    }
    let timeout = format!("{}ms", ACK_TIMEOUT.as_millis());
    flags.extend(
        [
            "--jetstream-replicas",
            "3",
            "--nats-ack-timeout",
            &timeout,
            "--send-rate",
            "0",
            "--max-rooms-per-connection",
            "128",
        ]
        .map(String::from),
    );
    flags
}

/// JOINs every room in one write and reads the JOINEDs; returns (first, head) of each room.
#[track_caller]
pub fn join_all(c: &mut Client, rooms: &[String], after: u64, limit: u32) -> Vec<(u64, u64)> {
    for room in rooms {
        c.send(&ClientFrame::Join { room, after, limit })
            .expect("JOIN");
    }
    rooms
        .iter()
        .map(|room| match recv(c) {
            Reply::Joined {
                room: r,
                first,
                head,
            } if &r == room => (first, head),
            other => panic!("expected JOINED {room}, got {other:?}"),
        })
        .collect()
}

/// Reads until `want[room]` MSGs of each room arrived; returns them per room in arrival order.
/// A frame other than MSG fails the test, as does a MSG of a room with nothing more owed.
#[track_caller]
pub fn read_msgs(c: &mut Client, want: &HashMap<String, usize>) -> HashMap<String, Vec<Msg>> {
    let mut got: HashMap<String, Vec<Msg>> = want.keys().map(|r| (r.clone(), Vec::new())).collect();
    let mut left: usize = want.values().sum();
    while left > 0 {
        let msg = match recv(c) {
            Reply::Msg {
                room,
                seq,
                ts_ms,
                user,
                text,
            } => Msg {
                room,
                seq,
                ts_ms,
                user,
                text,
            },
            other => panic!("expected MSG, got {other:?} with {left} MSGs owed"),
        };
        let owed = want.get(&msg.room).copied().unwrap_or(0);
        let list = got.entry(msg.room.clone()).or_default();
        assert!(list.len() < owed, "a MSG beyond what is owed: {msg:?}");
        list.push(msg);
        left -= 1;
    }
    got
}

/// JOINs `room` with all history and reads it through seq `through` (or JOINED's head if
/// that is further): a node may be behind the stream for a while after a fault, and what it
/// has not seen yet must still come, live, with no gap. Fails when the node has not caught up
/// within [`RESUME`]. Returns the messages and how long catching up took after JOINED.
#[track_caller]
pub fn history(c: &mut Client, room: &str, through: u64) -> (Vec<Msg>, Duration) {
    let rooms = [room.to_string()];
    let [(first, head)] = join_all(c, &rooms, 0, ALL)[..] else {
        unreachable!("one room joined")
    };
    assert!(
        first <= 1,
        "no retention limit, yet {room} starts at {first}"
    );
    let joined = Instant::now();
    let last = head.max(through);
    let mut got = Vec::new();
    let mut caught_up = Duration::ZERO;
    c.set_timeout(Some(RESUME)).expect("timeout");
    while got.last().map_or(0, |m: &Msg| m.seq) < last {
        match c.recv() {
            Ok(Some(Reply::Msg {
                room: r,
                seq,
                ts_ms,
                user,
                text,
            })) if r == room => {
                if seq > head && caught_up.is_zero() {
                    caught_up = joined.elapsed();
                }
                got.push(Msg {
                    room: r,
                    seq,
                    ts_ms,
                    user,
                    text,
                });
            }
            Ok(other) => panic!(
                "{room}: expected MSG, got {other:?} after {} MSGs",
                got.len()
            ),
            Err(e) => panic!(
                "{room}: JOINED said head {head}, seq {through} was ACKed, yet only {} MSGs \
                 came within {RESUME:?}: {e}",
                got.len()
            ),
        }
    }
    if head < through {
        caught_up = joined.elapsed();
    }
    c.set_timeout(Some(PATIENCE)).expect("timeout");
    (got, caught_up)
}

/// After a load with faults, one SEND per room that must be ACKed (tried again while
/// answered STORAGE, for up to [`RESUME`]): everything stored in a room before it, even a SEND
/// of unknown outcome, is at a lower seq. Returns the ACKed ones; the rest go to `failed`.
#[track_caller]
pub fn barrier(c: &mut Client, rooms: &[String], failed: &mut Outcome) -> Outcome {
    let mut closed = Outcome::default();
    let start = Instant::now();
    let mut id = 1;
    for room in rooms {
        loop {
            let one = [room.clone()];
            let o =
                load(c, "barrier", &one, Plan::ids(id, 1), &Progress::new(&one)).expect("barrier");
            id += 1;
            let done = !o.acked.is_empty();
            closed.acked.extend(o.acked);
            failed.failed.extend(o.failed);
            if done {
                break;
            }
            assert!(
                start.elapsed() < RESUME,
                "{room}: no SEND ACKed within {RESUME:?} after the faults"
            );
        }
    }
    closed
}

/// The highest ACKed seq of `room`'s SENDs, 0 if none.
pub fn acked_head(acked: &[&Sent]) -> u64 {
    acked.iter().filter_map(|s| s.seq).max().unwrap_or(0)
}

/// A SEND and what became of it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub room: String,
    pub id: u64,
    pub text: String,
    pub sent_at: Instant,
    pub answered_at: Instant,
    /// The ACK's seq; None when the answer was ERROR STORAGE (unknown outcome).
    pub seq: Option<u64>,
}

/// Every SEND of a load, by answer.
#[derive(Debug, Default)]
pub struct Outcome {
    pub acked: Vec<Sent>,
    pub failed: Vec<Sent>,
}

/// When each room last had a SEND ACKed, by the time that SEND was written: a room whose
/// latest ACKed SEND was written after an event has taken writes since that event. Senders
/// notify, so waiting on it is waiting on the event.
pub struct Progress {
    rooms: Vec<String>,
    acked_sent_at: Mutex<Vec<Option<Instant>>>,
    changed: Condvar,
    pub stop: AtomicBool,
}

impl Progress {
    pub fn new(rooms: &[String]) -> Progress {
        Progress {
            rooms: rooms.to_vec(),
            acked_sent_at: Mutex::new(vec![None; rooms.len()]),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        }
    }

    fn acked(&self, room: &str, sent_at: Instant) {
        let Some(i) = self.rooms.iter().position(|r| r == room) else {
            return;
        };
        let mut at = self.acked_sent_at.lock().expect("progress lock");
        if let Some(slot) = at.get_mut(i) {
            *slot = (*slot).max(Some(sent_at));
        }
        self.changed.notify_all();
    }

    /// Waits until every room has an ACK for a SEND written after `since`; the rooms still
    /// without one when `deadline` passes.
    pub fn wait_all_acked_after(&self, since: Instant, deadline: Instant) -> Vec<String> {
        let mut at = self.acked_sent_at.lock().expect("progress lock");
        loop {
            let behind: Vec<String> = self
                .rooms
                .iter()
                .zip(at.iter())
                .filter(|(_, t)| t.is_none_or(|t| t <= since))
                .map(|(r, _)| r.clone())
                .collect();
            let left = deadline.saturating_duration_since(Instant::now());
            if behind.is_empty() || left.is_zero() {
                return behind;
            }
            at = self
                .changed
                .wait_timeout(at, left)
                .expect("progress lock")
                .0;
        }
    }
}

/// How many SENDs a load keeps unanswered at once.
pub const WINDOW: usize = 8;

/// Which SENDs a [`load`] makes: ids from `first_id`, `count` of them (None: until
/// `progress.stop`), at most one every `interval` (None: as fast as the window allows).
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub first_id: u64,
    pub count: Option<u64>,
    pub interval: Option<Duration>,
}

impl Plan {
    /// `n` SENDs from id 1, as fast as answered.
    pub fn count(n: u64) -> Plan {
        Plan {
            first_id: 1,
            count: Some(n),
            interval: None,
        }
    }

    /// `n` SENDs from `first_id`, as fast as answered.
    pub fn ids(first_id: u64, n: u64) -> Plan {
        Plan {
            first_id,
            count: Some(n),
            interval: None,
        }
    }

    /// One SEND every `interval` from id 1 until `progress.stop`.
    pub fn paced(interval: Duration) -> Plan {
        Plan {
            first_id: 1,
            count: None,
            interval: Some(interval),
        }
    }
}

/// Sends to `rooms` in turn (texts `"{name}/{id}"`) with up to [`WINDOW`] unanswered, as
/// `plan` says, then waits for every answer. MSGs are read and dropped. Err on any answer but
/// ACK or ERROR STORAGE of a pending id, or when a SEND is unanswered for [`PATIENCE`].
pub fn load(
    c: &mut Client,
    name: &str,
    rooms: &[String],
    plan: Plan,
    progress: &Progress,
) -> Result<Outcome, String> {
    let outcome = send_and_collect(c, name, rooms, plan, progress);
    c.set_timeout(Some(PATIENCE)).map_err(|e| e.to_string())?;
    outcome
}

fn send_and_collect(
    c: &mut Client,
    name: &str,
    rooms: &[String],
    plan: Plan,
    progress: &Progress,
) -> Result<Outcome, String> {
    let mut outcome = Outcome::default();
    let mut pending: HashMap<u64, Sent> = HashMap::new();
    let mut next = plan.first_id;
    let mut due = Instant::now();
    let more = |next: u64| match plan.count {
        Some(n) => next < plan.first_id + n,
        None => !progress.stop.load(Ordering::Relaxed),
    };
    loop {
        while pending.len() < WINDOW && more(next) && Instant::now() >= due {
            let idx = usize::try_from(next).map_err(|e| e.to_string())? % rooms.len().max(1);
            let room = rooms.get(idx).ok_or("no rooms")?;
            let text = format!("{name}/{next}");
            c.send(&ClientFrame::Send {
                room,
                id: next,
                text: &text,
            })
            .map_err(|e| format!("{name}: SEND {next}: {e}"))?;
            let now = Instant::now();
            // The next one an interval on, without a burst to catch up after a stall.
            due = plan
                .interval
                .map_or(now, |i| due.max(now.checked_sub(i).unwrap_or(now)) + i);
            let sent = Sent {
                room: room.clone(),
                id: next,
                text,
                sent_at: now,
                answered_at: now,
                seq: None,
            };
            pending.insert(next, sent);
            next += 1;
        }
        if pending.is_empty() && !more(next) {
            return Ok(outcome);
        }
        // Wake for the next answer, or for the next SEND when one is due before it.
        let wait = if pending.len() < WINDOW && more(next) {
            due.saturating_duration_since(Instant::now())
        } else {
            PATIENCE
        };
        c.set_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(|e| e.to_string())?;
        let reply = match c.recv() {
            Ok(Some(reply)) => reply,
            Ok(None) => return Err(format!("{name}: closed with {} pending", pending.len())),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let oldest = pending.values().map(|s| s.sent_at).min();
                if oldest.is_some_and(|t| t.elapsed() >= PATIENCE) {
                    let ids: Vec<u64> = pending.keys().copied().collect();
                    return Err(format!("{name}: no answer within {PATIENCE:?} to {ids:?}"));
                }
                continue;
            }
            Err(e) => return Err(format!("{name}: reading: {e}")),
        };
        match reply {
            Reply::Ack { id, seq } => {
                let mut sent = pending
                    .remove(&id)
                    .ok_or_else(|| format!("{name}: ACK of id {id} not pending (twice?)"))?;
                sent.answered_at = Instant::now();
                sent.seq = Some(seq);
                progress.acked(&sent.room, sent.sent_at);
                outcome.acked.push(sent);
            }
            Reply::Error {
                code, reference, ..
            } if code == ErrorCode::Storage.as_u16() => {
                let mut sent = pending
                    .remove(&reference)
                    .ok_or_else(|| format!("{name}: STORAGE for id {reference} not pending"))?;
                sent.answered_at = Instant::now();
                outcome.failed.push(sent);
            }
            Reply::Msg { .. } => {}
            other => return Err(format!("{name}: unexpected {other:?}")),
        }
    }
}

/// The longest time any room went without an ACK arriving, across the whole load.
pub fn longest_stall(outcomes: &[&Outcome]) -> Duration {
    let mut by_room: HashMap<&str, Vec<Instant>> = HashMap::new();
    for sent in outcomes.iter().flat_map(|o| &o.acked) {
        by_room
            .entry(&sent.room)
            .or_default()
            .push(sent.answered_at);
    }
    by_room
        .values_mut()
        .map(|times| {
            times.sort_unstable();
            times
                .windows(2)
                .map(|w| match w {
                    [a, b] => b.duration_since(*a),
                    _ => Duration::ZERO,
                })
                .max()
                .unwrap_or_default()
        })
        .max()
        .unwrap_or_default()
}

/// Asserts a room's history is whole and honest: in every view (a member's, on any node),
/// the same messages (seq, ts, user, text) with seqs 1..=N in order; every ACKed SEND at its
/// ACKed seq; no text twice; nothing but what was sent (a SEND answered STORAGE may or may
/// not be there).
#[track_caller]
pub fn assert_history(room: &str, seen: &[Vec<Msg>], acked: &[&Sent], failed: &[&Sent]) {
    let Some((first, others)) = seen.split_first() else {
        panic!("no node's view of {room}");
    };
    for (view, other) in others.iter().enumerate() {
        if other != first {
            let at = first.iter().zip(other.iter()).position(|(a, b)| a != b);
            let at = at.unwrap_or(first.len().min(other.len()));
            panic!(
                "{room}: view {} differs from view 0 at index {at}: {:?} vs {:?} \
                 (view 0 has {} messages, view {} has {})",
                view + 1,
                other.get(at),
                first.get(at),
                first.len(),
                view + 1,
                other.len()
            );
        }
    }
    let seqs: Vec<u64> = first.iter().map(|m| m.seq).collect();
    let want: Vec<u64> = (1..=u64::try_from(first.len()).expect("len")).collect();
    assert_eq!(seqs, want, "{room}: seqs not contiguous from 1");
    let mut texts = HashSet::new();
    for m in first {
        assert!(texts.insert(m.text.as_str()), "{room}: stored twice: {m:?}");
    }
    for sent in acked {
        let seq = sent.seq.expect("an ACKed SEND has a seq");
        let at = usize::try_from(seq)
            .ok()
            .and_then(|s| first.get(s.wrapping_sub(1)));
        assert!(
            at.is_some_and(|m| m.text == sent.text),
            "{room}: ACKed {sent:?} is not at seq {seq} (found {at:?}): lost"
        );
    }
    let sent: HashSet<&str> = acked
        .iter()
        .chain(failed)
        .map(|s| s.text.as_str())
        .collect();
    for m in first {
        assert!(sent.contains(m.text.as_str()), "{room}: never sent: {m:?}");
    }
}
