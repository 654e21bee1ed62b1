//! The sequencer: the one thread that gives every message its place, and writes it down.
//!
//! Reactors hand it SENDs already encoded as MSG frames (with seq and ts_ms left zero). It takes
//! them in batches; stamps each with the next seq of its room and the wall-clock time; writes
//! the whole batch to the log with one write (and one fsync under `--fsync always`: the group
//! commit); and only then appends the frames to the rooms' rings and tells every reactor what
//! happened: the senders' reactors get the ACKs, every reactor with members in an advanced room
//! gets a wake-up to fan out.
//!
//! It must never run on a reactor thread, never ACK a message the log did not take, and never
//! let a seq be used twice: a batch the disk refused assigns no seq at all.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::mailbox::{ConnRef, Mailbox, Stored};
use crate::metrics::Metrics;
use crate::protocol::ErrorCode;
use crate::protocol::codec::stamp_msg;
use crate::room::{Pos, RingLimits, Room, RoomId};
use crate::store::LogWriter;
use crate::store::format::encode_record;
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
}

impl Sequencer {
    /// Runs until every sender of the inbox is gone, then syncs the log and returns it.
    pub fn run(mut self) -> LogWriter {
        let mut batch: Vec<Submit> = Vec::with_capacity(BATCH_MAX);
        let mut records: Vec<u8> = Vec::new();
        let mut placed: Vec<(u64, usize)> = Vec::with_capacity(BATCH_MAX);
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
            let ts_ms = now_ms();
            let outcome = self.write_batch(&mut batch, &mut records, &mut placed, ts_ms);
            for (i, submit) in batch.drain(..).enumerate() {
                let result = match (&outcome, placed.get(i)) {
                    (Ok(base), Some(&(seq, offset))) => {
                        let pos = Pos {
                            segment: base.segment,
                            offset: base.offset + offset as u64,
                        };
                        submit
                            .room
                            .write(|ring| ring.append(submit.frame, self.ring, Some(pos)));
                        self.log.note(&submit.room, seq, ts_ms);
                        if !rooms.iter().any(|r| Arc::ptr_eq(r, &submit.room)) {
                            rooms.push(Arc::clone(&submit.room));
                        }
                        Ok(seq)
                    }
                    _ => Err(ErrorCode::Storage),
                };
                if let Some(acks) = stored.get_mut(submit.reactor) {
                    acks.push(Stored {
                        conn: submit.conn,
                        id: submit.id,
                        result,
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
            self.report();
        }
        self.log.sync(Instant::now());
        self.log
    }

    /// Publishes the log's figures to the metrics.
    fn report(&mut self) {
        let store = &self.metrics.store;
        let s = self.log.stats;
        store.stored.store(s.records, Relaxed);
        store.batches.store(s.batches, Relaxed);
        store.failed_batches.store(s.failed_batches, Relaxed);
        store.log_bytes.store(self.log.total_bytes(), Relaxed);
        for micros in self.log.fsync_micros.drain(..) {
            store.fsync(micros);
        }
    }

    /// Stamps every message of the batch with its seq and time, encodes the records and
    /// writes them. `placed[i]` is message i's seq and offset within the batch.
    fn write_batch(
        &mut self,
        batch: &mut [Submit],
        records: &mut Vec<u8>,
        placed: &mut Vec<(u64, usize)>,
        ts_ms: u64,
    ) -> std::io::Result<Pos> {
        records.clear();
        placed.clear();
        let base = self.log.next_pos()?;
        // The next seq of each room in this batch; rooms are few per batch.
        let mut next: Vec<(Arc<Room>, u64)> = Vec::new();
        for submit in batch.iter_mut() {
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
            encode_record(&submit.frame, records);
        }
        self.log.write(records, Instant::now())?;
        Ok(base)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
