//! The sequencer: the one thread that gives every message its place, and writes it down.
//!
//! Reactors hand it SENDs already encoded as MSG frames (with seq and ts_ms left zero). It takes
//! them in batches; stamps each with the next seq of its room and the wall-clock time; writes
//! the whole batch to the log with one write (and one fsync under `--fsync always`: the group
//! commit); and only then appends the frames to the rooms' rings and tells every reactor what
//! happened: the senders' reactors get the ACKs, every reactor with members in an advanced room
//! gets a wake-up to fan out.
//!
//! SENDs with a key (protocol version 2, `client ≠ 0`) are checked against the dedupe table
//! as the batch is taken (see [`crate::dedupe`]): one already stored is answered with its old
//! seq and neither written nor published; one that is in the same batch twice (a retry sent
//! right behind its original) is written once, and the retry answered with the original's
//! outcome; one below what the table remembers is answered STALE_ID. The table learns a key
//! only once its batch is in the log (and synced, under `--fsync always`, which `write` does
//! before it returns): a retry that arrives while its original is being synced waits in the
//! inbox and is taken, with the next batch, after the table learned the original.
//!
//! It must never run on a reactor thread, never ACK a message the log did not take, and never
//! let a seq be used twice: a batch the disk refused assigns no seq at all.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use crate::batch_frames::Frame;
use crate::dedupe::{Dedupe, Seen, SendKey, now_ms};
use crate::mailbox::{ConnRef, Mailbox, Stored};
use crate::metrics::Metrics;
use crate::metrics::histogram::micros;
use crate::protocol::ErrorCode;
use crate::protocol::codec::stamp_msg;
use crate::room::{Pos, RingLimits, Room, RoomId};
use crate::store::LogWriter;
use crate::store::format::{RecordKey, encode_keyed_record};
use std::sync::atomic::Ordering::Relaxed;

/// A SEND on its way to the sequencer.
#[derive(Debug)]
pub struct Submit {
    pub room: Arc<Room>,
    /// The MSG frame, complete but for seq and ts_ms.
    pub frame: Arc<[u8]>,
    pub reactor: usize,
    pub conn: ConnRef,
    pub id: u64,
    /// Who sent it, on a connection that named its client (`None`: version 1, or
    /// `client = 0`): with `id`, the key that makes the SEND exactly-once.
    pub key: Option<SendKey>,
    /// When the reactor handed it over, for the `send_queue` histogram.
    pub handed_at: Instant,
}

/// What the sequencer does with one SEND of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Stamp it, write it, publish it.
    Write,
    /// Already stored as this seq: answer with it.
    Again(u64),
    /// A retry of the SEND at this index of the same batch: answer with its outcome.
    Follow(usize),
    /// Below the dedupe window: STALE_ID.
    Stale,
}

/// Most SENDs taken into one batch: large enough to amortise a write and a sync, small enough
/// that the first ACK of a batch is not held back long.
const BATCH_MAX: usize = 1024;

/// How long the sequencer sleeps when it has nothing to do and no sync is due.
const IDLE_WAKE: Duration = Duration::from_secs(60);

/// Everything the sequencer owns while it runs.
pub struct Sequencer {
    pub inbox: Receiver<Submit>,
    pub mailboxes: Arc<[Mailbox]>,
    pub ring: RingLimits,
    pub log: LogWriter,
    pub metrics: Arc<Metrics>,
    /// The keys of what was stored lately (rebuilt by recovery).
    pub dedupe: Dedupe,
}

impl Sequencer {
    /// Runs until every sender of the inbox is gone, then syncs the log and returns it.
    pub fn run(mut self) -> LogWriter {
        let mut batch: Vec<Submit> = Vec::with_capacity(BATCH_MAX);
        let mut records: Vec<u8> = Vec::new();
        let mut placed: Vec<(u64, usize)> = Vec::with_capacity(BATCH_MAX);
        let mut fates: Vec<Fate> = Vec::with_capacity(BATCH_MAX);
        let mut keyed: HashMap<(SendKey, u64), usize> = HashMap::new();
        let mut stored: Vec<Vec<Stored>> = self.mailboxes.iter().map(|_| Vec::new()).collect();
        let mut advanced: Vec<Vec<RoomId>> = self.mailboxes.iter().map(|_| Vec::new()).collect();
        let mut rooms: Vec<Arc<Room>> = Vec::new();
        loop {
            let now = Instant::now();
            let wait = self
                .log
                .next_deadline()
                .map_or(IDLE_WAKE, |d| d.saturating_duration_since(now));
            match self.inbox.recv_timeout(wait) {
                Ok(first) => batch.push(first),
                Err(RecvTimeoutError::Timeout) => {
                    self.log.tick(Instant::now());
                    self.dedupe.sweep(now_ms());
                    self.report();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < BATCH_MAX {
                match self.inbox.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            let started = Instant::now();
            for submit in &batch {
                let waited = started.saturating_duration_since(submit.handed_at);
                self.metrics.store.send_queue.observe(micros(waited));
            }
            let ts_ms = now_ms();
            self.triage(&batch, &mut fates, &mut keyed, ts_ms);
            let outcome = self.write_batch(&mut batch, &fates, &mut records, &mut placed, ts_ms);
            self.metrics.store.commit.observe(micros(started.elapsed()));
            if let Ok(base) = &outcome {
                for (submit, _) in batch.iter().zip(&fates).filter(|(_, f)| **f == Fate::Write) {
                    if !rooms.iter().any(|r| Arc::ptr_eq(r, &submit.room)) {
                        rooms.push(Arc::clone(&submit.room));
                    }
                }
                for room in &rooms {
                    self.publish(room, &batch, &fates, &placed, *base, ts_ms);
                }
                self.learn(&batch, &fates, &placed, ts_ms);
            }
            for (i, submit) in batch.drain(..).enumerate() {
                let written = |i: usize| match (&outcome, placed.get(i)) {
                    (Ok(_), Some(&(seq, _))) => Ok(seq),
                    _ => Err(ErrorCode::Storage),
                };
                let (result, again) = match fates.get(i) {
                    Some(Fate::Write) | None => (written(i), false),
                    Some(&Fate::Again(seq)) => (Ok(seq), true),
                    Some(&Fate::Follow(first)) => {
                        let result = written(first);
                        (result, result.is_ok())
                    }
                    Some(Fate::Stale) => (Err(ErrorCode::StaleId), false),
                };
                if again {
                    self.metrics.store.retries.fetch_add(1, Relaxed);
                }
                if let Some(acks) = stored.get_mut(submit.reactor) {
                    acks.push(Stored {
                        conn: submit.conn,
                        id: submit.id,
                        result,
                        again,
                    });
                }
            }
            for room in rooms.drain(..) {
                for (reactor, list) in advanced.iter_mut().enumerate() {
                    if room.has_members_on(reactor) {
                        list.push(room.id);
                    }
                }
            }
            for ((mailbox, acks), rooms) in
                self.mailboxes.iter().zip(&mut stored).zip(&mut advanced)
            {
                mailbox.post(acks, rooms);
                acks.clear();
                rooms.clear();
            }
            self.log.tick(Instant::now());
            self.dedupe.sweep(ts_ms);
            self.report();
        }
        self.log.sync(Instant::now());
        self.log
    }

    /// Decides what becomes of each SEND of the batch (`fates[i]` for `batch[i]`): those
    /// without a key are written; a keyed one is looked up first in the batch (a retry right
    /// behind its original), then in the table. Runs before the batch is written, and the
    /// table learns nothing here: a batch the disk refuses leaves it as it was.
    fn triage(
        &self,
        batch: &[Submit],
        fates: &mut Vec<Fate>,
        keyed: &mut HashMap<(SendKey, u64), usize>,
        now_ms: u64,
    ) {
        fates.clear();
        keyed.clear();
        for (i, submit) in batch.iter().enumerate() {
            let Some(key) = &submit.key else {
                fates.push(Fate::Write);
                continue;
            };
            let fate = match keyed.get(&(key.clone(), submit.id)) {
                Some(&first) => Fate::Follow(first),
                None => match self.dedupe.seen(key, submit.id, now_ms) {
                    Seen::Stored(seq) => Fate::Again(seq),
                    Seen::Stale => Fate::Stale,
                    Seen::New => {
                        keyed.insert((key.clone(), submit.id), i);
                        Fate::Write
                    }
                },
            };
            fates.push(fate);
        }
    }

    /// Teaches the dedupe table the keys of a batch the log took.
    fn learn(&mut self, batch: &[Submit], fates: &[Fate], placed: &[(u64, usize)], ts_ms: u64) {
        for ((submit, fate), &(seq, _)) in batch.iter().zip(fates).zip(placed) {
            if let (Some(key), Fate::Write) = (&submit.key, fate) {
                self.dedupe.insert(key, submit.id, seq, ts_ms);
            }
        }
    }

    /// Appends the stored messages of `room` in this batch to its ring, in seq order, their
    /// frames back to back in one buffer: a member owed several is sent them as one slice.
    fn publish(
        &mut self,
        room: &Arc<Room>,
        batch: &[Submit],
        fates: &[Fate],
        placed: &[(u64, usize)],
        base: Pos,
        ts_ms: u64,
    ) {
        let mine = || {
            batch
                .iter()
                .zip(fates)
                .zip(placed)
                .filter(|((submit, fate), _)| {
                    **fate == Fate::Write && Arc::ptr_eq(&submit.room, room)
                })
                .map(|((submit, _), placed)| (submit, placed))
        };
        let frames = Frame::together(mine().map(|(submit, _)| &submit.frame[..]));
        room.write(|ring| {
            for (frame, (_, &(_, offset))) in frames.into_iter().zip(mine()) {
                let pos = Pos {
                    segment: base.segment,
                    offset: base.offset + offset as u64,
                };
                ring.append(frame, self.ring, Some(pos));
            }
        });
        for (_, &(seq, _)) in mine() {
            self.log.note(room, seq, ts_ms);
        }
    }

    /// Publishes the log's figures to the metrics.
    fn report(&mut self) {
        let store = &self.metrics.store;
        let s = self.log.stats;
        store.stored.store(s.records, Relaxed);
        store.batches.store(s.batches, Relaxed);
        store.failed_batches.store(s.failed_batches, Relaxed);
        store.log_bytes.store(self.log.total_bytes(), Relaxed);
        store.dedupe_pairs.store(self.dedupe.len() as u64, Relaxed);
        for micros in self.log.fsync_micros.drain(..) {
            store.fsync(micros);
        }
    }

    /// Stamps every message of the batch that is to be written with its seq and time,
    /// encodes the records (with their keys) and writes them. `placed[i]` is message i's seq
    /// and offset within the batch (meaningless for a message not written).
    fn write_batch(
        &mut self,
        batch: &mut [Submit],
        fates: &[Fate],
        records: &mut Vec<u8>,
        placed: &mut Vec<(u64, usize)>,
        ts_ms: u64,
    ) -> std::io::Result<Pos> {
        records.clear();
        placed.clear();
        let base = self.log.next_pos()?;
        // The next seq of each room in this batch; rooms are few per batch.
        let mut next: Vec<(Arc<Room>, u64)> = Vec::new();
        for (submit, fate) in batch.iter_mut().zip(fates) {
            if *fate != Fate::Write {
                placed.push((0, records.len()));
                continue;
            }
            let seq = match next.iter_mut().find(|(r, _)| Arc::ptr_eq(r, &submit.room)) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    let n = submit.room.read(|ring| ring.head()) + 1;
                    next.push((Arc::clone(&submit.room), n));
                    n
                }
            };
            // The reactor made this Arc and gave it away, so we hold the only reference.
            let stamped = Arc::get_mut(&mut submit.frame)
                .is_some_and(|bytes| stamp_msg(bytes, submit.room.name.len(), seq, ts_ms));
            if !stamped {
                return Err(std::io::Error::other(
                    "a message frame was shared before it was stored",
                ));
            }
            placed.push((seq, records.len()));
            let key = submit.key.as_ref().map(|key| RecordKey {
                client: key.client,
                id: submit.id,
            });
            encode_keyed_record(&submit.frame, key, records);
        }
        // A batch of retries alone has nothing to write.
        if !records.is_empty() {
            self.log.write(records, Instant::now())?;
        }
        Ok(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Delivery;
    use crate::protocol::{ServerFrame, encode_server};
    use crate::room::Rooms;
    use crate::store::{FsyncPolicy, RecoveryMode, Retention, StoreLimits, recover};

    const RING: RingLimits = RingLimits {
        messages: 100,
        bytes: 1 << 20,
    };

    fn unstamped(room: &str, text: &str) -> Arc<[u8]> {
        let mut out = Vec::new();
        let frame = ServerFrame::Msg {
            room,
            seq: 0,
            ts_ms: 0,
            user: "u",
            text,
        };
        encode_server(&frame, &mut out);
        out.into()
    }

    /// What a SEND was answered: id, result, again.
    type Answer = (u64, Result<u64, ErrorCode>, bool);

    /// Runs a sequencer over the log in `dir` (recovered first, so its dedupe table comes
    /// back from the log) with `sends` (room, text, id, client) all queued before it starts,
    /// so that they make one batch; returns the answers and the rooms.
    fn one_batch(dir: &std::path::Path, sends: &[(&str, &str, u64, u64)]) -> (Vec<Answer>, Rooms) {
        let rooms = Rooms::new(10, 1, RING);
        let mut recovered = recover(dir, 1, RecoveryMode::TolerateTornTail).expect("recover");
        for (name, h) in &recovered.rooms {
            rooms.restore(name, h.first, h.head, h.index.clone());
        }
        let limits = StoreLimits {
            segment_bytes: 1 << 20,
            fsync: FsyncPolicy::Always,
            retention: Retention {
                max_bytes: None,
                max_age: None,
            },
        };
        let log = LogWriter::open(dir, 1, limits, &recovered, &rooms).expect("open");
        let poll = mio::Poll::new().expect("poll");
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker");
        let mailboxes: Arc<[Mailbox]> = Arc::from(vec![Mailbox::new(waker)]);
        let (tx, rx) = std::sync::mpsc::channel();
        let user: Arc<str> = Arc::from("u");
        for &(room, text, id, client) in sends {
            let room = rooms.open(room).expect("room");
            let key = std::num::NonZeroU64::new(client).map(|client| SendKey {
                user: Arc::clone(&user),
                client,
            });
            let submit = Submit {
                frame: unstamped(&room.name, text),
                room,
                reactor: 0,
                conn: ConnRef { key: 1, serial: 1 },
                id,
                key,
                handed_at: Instant::now(),
            };
            tx.send(submit).expect("send");
        }
        drop(tx);
        Sequencer {
            inbox: rx,
            mailboxes: Arc::clone(&mailboxes),
            ring: RING,
            log,
            metrics: Arc::new(Metrics::new(1)),
            dedupe: std::mem::take(&mut recovered.dedupe),
        }
        .run();
        let mut got = Delivery::default();
        mailboxes[0].take(&mut got);
        let answers = got
            .stored
            .iter()
            .map(|s| (s.id, s.result, s.again))
            .collect();
        (answers, rooms)
    }

    fn texts(rooms: &Rooms, room: &str) -> Vec<String> {
        let room = rooms.get(room).expect("room");
        let mut frames: Vec<Frame> = Vec::new();
        let head = room.read(|ring| ring.head());
        if head > 0 {
            room.read(|ring| ring.read_from(1, 100, |f| frames.push(f.clone())))
                .expect("in the window");
        }
        frames
            .iter()
            .map(|f| String::from_utf8_lossy(&f[f.len() - 2..]).into_owned())
            .collect()
    }

    #[test]
    fn a_retry_in_the_same_batch_is_written_once_and_answered_with_the_first_seq() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (answers, rooms) = one_batch(
            tmp.path(),
            &[
                ("#a", "m1", 1, 7),
                ("#a", "m1", 1, 7),
                ("#a", "m2", 2, 7),
                ("#a", "x1", 1, 8),
                ("#a", "v1", 1, 0),
                ("#a", "v1", 1, 0),
            ],
        );
        assert_eq!(
            answers,
            [
                (1, Ok(1), false),
                (1, Ok(1), true),
                (2, Ok(2), false),
                (1, Ok(3), false),
                (1, Ok(4), false),
                (1, Ok(5), false),
            ],
            "client 0 (no key) is stored twice; another client's id 1 is its own"
        );
        assert_eq!(texts(&rooms, "#a"), ["m1", "m2", "x1", "v1", "v1"]);
    }

    #[test]
    fn a_retry_after_a_restart_is_answered_from_the_log_and_below_the_window_is_stale() {
        let tmp = tempfile::tempdir().expect("tmp");
        let first: Vec<(&str, &str, u64, u64)> = (1..=100).map(|id| ("#a", "mm", id, 7)).collect();
        let (answers, _) = one_batch(tmp.path(), &first);
        assert!(
            answers.iter().all(|a| !a.2 && a.1 == Ok(a.0)),
            "{answers:?}"
        );
        // A new sequencer over the same log: the table comes back from the records' keys.
        let (answers, rooms) = one_batch(
            tmp.path(),
            &[
                ("#a", "mm", 100, 7),
                ("#a", "mm", 37, 7),
                ("#a", "mm", 36, 7),
                ("#a", "mm", 1, 7),
                ("#a", "nn", 101, 7),
                ("#a", "nn", 101, 7),
            ],
        );
        assert_eq!(
            answers,
            [
                (100, Ok(100), true),
                (37, Ok(37), true),
                (36, Err(ErrorCode::StaleId), false),
                (1, Err(ErrorCode::StaleId), false),
                (101, Ok(101), false),
                (101, Ok(101), true),
            ]
        );
        assert_eq!(rooms.get("#a").expect("room").read(|r| r.head()), 101);
        // And a batch of nothing but retries writes nothing.
        let (answers, rooms) = one_batch(tmp.path(), &[("#a", "nn", 101, 7)]);
        assert_eq!(answers, [(101, Ok(101), true)]);
        assert_eq!(rooms.get("#a").expect("room").read(|r| r.head()), 101);
    }

    #[test]
    fn one_batch_lands_in_each_ring_back_to_back_in_seq_order_and_is_acked_in_order() {
        let tmp = tempfile::tempdir().expect("tmp");
        let rooms = Rooms::new(10, 1, RING);
        let recovered = recover(tmp.path(), 1, RecoveryMode::TolerateTornTail).expect("recover");
        let limits = StoreLimits {
            segment_bytes: 1 << 20,
            fsync: FsyncPolicy::Never,
            retention: Retention {
                max_bytes: None,
                max_age: None,
            },
        };
        let log = LogWriter::open(tmp.path(), 1, limits, &recovered, &rooms).expect("open");
        let poll = mio::Poll::new().expect("poll");
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker");
        let mailboxes: Arc<[Mailbox]> = Arc::from(vec![Mailbox::new(waker)]);
        let (tx, rx) = std::sync::mpsc::channel();
        let a = rooms.open("#a").expect("room a");
        let b = rooms.open("#b").expect("room b");
        // Interleaved, all queued before the sequencer starts: one batch.
        for (id, room) in [&a, &b, &a, &a, &b].into_iter().enumerate() {
            let submit = Submit {
                room: Arc::clone(room),
                frame: unstamped(&room.name, &format!("m{id}")),
                reactor: 0,
                conn: ConnRef { key: 1, serial: 1 },
                id: id as u64,
                key: None,
                handed_at: Instant::now(),
            };
            tx.send(submit).expect("send");
        }
        drop(tx);
        let metrics = Arc::new(Metrics::new(1));
        Sequencer {
            inbox: rx,
            mailboxes: Arc::clone(&mailboxes),
            ring: RING,
            log,
            metrics,
            dedupe: Dedupe::default(),
        }
        .run();
        let mut got = Delivery::default();
        mailboxes[0].take(&mut got);
        let acks: Vec<(u64, Result<u64, ErrorCode>)> =
            got.stored.iter().map(|s| (s.id, s.result)).collect();
        assert_eq!(
            acks,
            [(0, Ok(1)), (1, Ok(1)), (2, Ok(2)), (3, Ok(3)), (4, Ok(2))]
        );
        for (room, texts) in [(&a, ["m0", "m2", "m3"].as_slice()), (&b, &["m1", "m4"])] {
            let mut frames: Vec<Frame> = Vec::new();
            room.read(|ring| ring.read_from(1, 10, |f| frames.push(f.clone())))
                .expect("in the window");
            assert_eq!(frames.len(), texts.len());
            for pair in frames.windows(2) {
                assert!(
                    pair[0].joins(&pair[1]),
                    "{}: stored back to back",
                    room.name
                );
            }
            for (seq, (frame, text)) in frames.iter().zip(texts).enumerate() {
                assert!(
                    frame.ends_with(text.as_bytes()),
                    "{} seq {}: {frame:?}",
                    room.name,
                    seq + 1
                );
            }
        }
    }
}
