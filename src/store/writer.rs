//! The log writer: appends batches to the newest segment, syncs per the fsync policy, rolls
//! segments at a size, and applies retention. Owned by the sequencer thread alone.
//!
//! Segments are made ahead by the preparer ([`super::prepare`]) at their full size, zero
//! filled, so that a write lands on blocks the file already has and a sync need not commit a
//! new file size through the file system's journal. The first segment of a new log, and any
//! segment rolled to before its successor was ready, is appended to instead, until the next
//! roll; a log that has taken little never has a successor made at all.
//!
//! It must never report a batch as written unless every byte of it is in the file (and
//! synced, under `always`), and a failed batch must leave no trace: it is cut off again
//! before the next batch, so a failed write can never become corruption in the middle.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::format::{SEGMENT_HEADER_LEN, SegmentHeader, VERSION_1};
use super::heads::{self, Heads};
use super::prepare::{self, Preparer};
use super::recovery::Recovered;
use super::segment_path;
use crate::room::{Pos, Room, Rooms};

/// When the log is synced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every batch, before its ACKs: an ACKed message survives power loss.
    Always,
    /// At most this long after a write: a crash of the machine may lose that window.
    Interval(Duration),
    /// When the kernel decides: a crash of the machine may lose recent seconds.
    Never,
}

/// Whole old segments are deleted when the log passes either limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_bytes: Option<u64>,
    pub max_age: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
    pub retention: Retention,
}

/// What the writer has done, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub batches: u64,
    pub records: u64,
    pub fsyncs: u64,
    pub failed_batches: u64,
    /// Segments rolled into that the preparer had made ahead (the others are appended to).
    pub prepared_segments: u64,
}

struct Segment {
    id: u64,
    len: u64,
    /// The last seq of each room in this segment, and the room, for retention.
    last_seq: HashMap<crate::room::RoomId, (Arc<Room>, u64)>,
    newest_ts_ms: u64,
}

/// Data the active segment holds before its successor is prepared: a log that takes little (a
/// quiet group, a test) never pays for a spare segment on disk.
const PREPARE_AFTER: u64 = 256 * 1024;

/// The size of a segment prepared to leave an appended one: small enough to be made in tens of
/// milliseconds, so that a new log is off appends soon; the next is made at full size.
const FIRST_PREPARED: u64 = 8 << 20;

pub struct LogWriter {
    dir: PathBuf,
    epoch: u64,
    limits: StoreLimits,
    file: File,
    /// The active segment file's length on disk: past the data, zeros a prepared segment was
    /// made with. A write below it moves no file end.
    allocated: u64,
    preparer: Preparer,
    /// Oldest first; the last is the one being written.
    segments: VecDeque<Segment>,
    total_bytes: u64,
    /// Bytes written since the last sync.
    unsynced: bool,
    last_sync: Instant,
    /// A failed batch that could not be cut off yet: retried before anything else is written.
    cut_back_to: Option<u64>,
    failing: bool,
    /// What `log/heads` holds: the heads of rooms that had no record left in a synced
    /// segment when retention deleted one.
    kept: Heads,
    heads_failing: bool,
    pub stats: Stats,
    /// How long each fsync since the last look took, in microseconds, for the metrics.
    pub fsync_micros: Vec<u64>,
}

impl LogWriter {
    /// Opens the newest recovered segment for appending (or creates the first one), taking
    /// over recovery's per-segment summaries with rooms resolved through `rooms`.
    ///
    /// # Errors
    /// The segment cannot be opened or created.
    pub fn open(
        dir: &Path,
        epoch: u64,
        limits: StoreLimits,
        recovered: &Recovered,
        rooms: &Rooms,
    ) -> io::Result<LogWriter> {
        let mut segments = VecDeque::new();
        let mut total_bytes = 0;
        for s in &recovered.segments {
            let mut last_seq = HashMap::new();
            for (name, &seq) in &s.last_seq {
                if let Some(room) = rooms.get(name) {
                    last_seq.insert(room.id, (room, seq));
                }
            }
            total_bytes += s.len;
            segments.push_back(Segment {
                id: s.id,
                len: s.len,
                last_seq,
                newest_ts_ms: s.newest_ts_ms,
            });
        }
        let last_format = recovered.segments.last().map_or(0, |s| s.format);
        let leftovers = prepare::remove_leftovers(dir);
        if leftovers > 0 {
            log::info!("log: removed {leftovers} segment file(s) an earlier run left half made");
        }
        let (file, fresh) = match segments.back() {
            // Records with keys go to a segment whose header says format 2: a format 1
            // segment is left as it is.
            Some(last) if last.len >= SEGMENT_HEADER_LEN as u64 && last_format == VERSION_1 => {
                (create_segment(dir, epoch, last.id + 1)?, Some(last.id + 1))
            }
            Some(last) if last.len >= SEGMENT_HEADER_LEN as u64 => {
                let path = segment_path(dir, last.id);
                (
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&path)
                        .map_err(|e| with_path(e, &path))?,
                    None,
                )
            }
            Some(last) => (create_segment(dir, epoch, last.id)?, Some(last.id)),
            None => (create_segment(dir, epoch, 1)?, Some(1)),
        };
        if let Some(id) = fresh {
            if let Some(last) = segments.back_mut().filter(|s| s.id == id) {
                last.len = SEGMENT_HEADER_LEN as u64;
            } else {
                segments.push_back(Segment {
                    id,
                    len: SEGMENT_HEADER_LEN as u64,
                    last_seq: HashMap::new(),
                    newest_ts_ms: 0,
                });
            }
            total_bytes += SEGMENT_HEADER_LEN as u64;
        }
        let data_len = segments.back().map_or(0, |s| s.len);
        // A recovered segment keeps the zeros it was prepared with: recovery ends its data
        // where they begin.
        let allocated = file.metadata().map_or(data_len, |m| m.len()).max(data_len);
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            epoch,
            limits,
            file,
            allocated,
            preparer: Preparer::new(dir, epoch),
            segments,
            total_bytes,
            unsynced: false,
            last_sync: Instant::now(),
            cut_back_to: None,
            failing: false,
            kept: recovered.kept.clone(),
            heads_failing: false,
            stats: Stats::default(),
            fsync_micros: Vec::new(),
        })
    }

    /// Where the next record will be written. Rolls to a new segment first if the current
    /// one is full, and cuts off a failed batch that is still there.
    ///
    /// # Errors
    /// The disk refused: the batch must be answered with STORAGE.
    pub fn next_pos(&mut self) -> io::Result<Pos> {
        if let Some(len) = self.cut_back_to {
            self.file.set_len(len)?;
            self.cut_back_to = None;
            self.allocated = len;
        }
        let active = self.active_len();
        // An appended segment is left as soon as a prepared one is ready, full or not.
        let appending = self.allocated <= active;
        if active >= self.limits.segment_bytes
            || (appending && self.preparer.has(self.active_id() + 1))
        {
            self.roll()?;
        }
        let (segment, offset) = self.segments.back().map_or((0, 0), |s| (s.id, s.len));
        Ok(Pos { segment, offset })
    }

    /// Writes a batch of encoded records at the end of the active segment and syncs it if the
    /// policy says so. On failure nothing of the batch counts: it is cut off again.
    ///
    /// # Errors
    /// The write or sync failed; no record of the batch may be ACKed.
    pub fn write(&mut self, batch: &[u8], now: Instant) -> io::Result<()> {
        let start = self.active_len();
        let result = self.file.write_all_at(batch, start).and_then(|()| {
            if self.limits.fsync == FsyncPolicy::Always {
                self.timed_sync()
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => {
                if let Some(active) = self.segments.back_mut() {
                    active.len += batch.len() as u64;
                }
                self.allocated = self.allocated.max(start + batch.len() as u64);
                self.prepare_successor();
                self.total_bytes += batch.len() as u64;
                self.stats.batches += 1;
                if self.limits.fsync == FsyncPolicy::Always {
                    self.last_sync = now;
                } else {
                    self.unsynced = true;
                }
                if self.failing {
                    self.failing = false;
                    log::info!("log: writing again");
                }
                Ok(())
            }
            Err(e) => {
                self.stats.failed_batches += 1;
                if !self.failing {
                    self.failing = true;
                    log::warn!(
                        "log: cannot store messages, answering STORAGE until the disk recovers: {e}"
                    );
                }
                // Cutting gives back the zeros past `start` too: the segment is appended to
                // until the next roll.
                if self.file.set_len(start).is_err() {
                    self.cut_back_to = Some(start);
                } else {
                    self.allocated = start;
                }
                Err(e)
            }
        }
    }

    /// Records, after a successful write, that `room` now has `seq` in the active segment.
    pub fn note(&mut self, room: &Arc<Room>, seq: u64, ts_ms: u64) {
        self.stats.records += 1;
        if let Some(active) = self.segments.back_mut() {
            active.last_seq.insert(room.id, (Arc::clone(room), seq));
            active.newest_ts_ms = active.newest_ts_ms.max(ts_ms);
        }
    }

    /// When `tick` next has work: the interval sync.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.limits.fsync {
            FsyncPolicy::Interval(every) if self.unsynced => Some(self.last_sync + every),
            _ => None,
        }
    }

    /// Syncs if the interval has passed, and applies age-based retention.
    pub fn tick(&mut self, now: Instant) {
        if let FsyncPolicy::Interval(every) = self.limits.fsync
            && self.unsynced
            && now >= self.last_sync + every
        {
            self.sync(now);
        }
        self.retain();
    }

    /// Syncs whatever was written and not yet synced (at shutdown, whatever the policy).
    pub fn sync(&mut self, now: Instant) {
        if !self.unsynced {
            return;
        }
        match self.timed_sync() {
            Ok(()) => {
                self.unsynced = false;
                self.last_sync = now;
            }
            Err(e) => log::warn!("log: sync failed: {e}"),
        }
    }

    fn timed_sync(&mut self) -> io::Result<()> {
        let start = Instant::now();
        let result = self.file.sync_data();
        self.stats.fsyncs += 1;
        self.fsync_micros
            .push(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
        result
    }

    /// Bytes on disk in all segments.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    fn active_len(&self) -> u64 {
        self.segments.back().map_or(0, |s| s.len)
    }

    fn active_id(&self) -> u64 {
        self.segments.back().map_or(0, |s| s.id)
    }

    /// Asks for the next segment once the active one holds enough to be worth it.
    fn prepare_successor(&mut self) {
        let threshold = (self.limits.segment_bytes / 2).min(PREPARE_AFTER);
        if self.active_len() >= threshold {
            let full = self.limits.segment_bytes.max(SEGMENT_HEADER_LEN as u64);
            let len = if self.allocated > self.active_len() {
                full
            } else {
                full.min(FIRST_PREPARED)
            };
            self.preparer.ask(self.active_id() + 1, len);
        }
    }

    /// Whether the active segment has zeros ahead of its data (for tests).
    #[cfg(test)]
    pub fn preallocated(&self) -> bool {
        self.allocated > self.active_len()
    }

    /// Waits for the segment asked of the preparer (for tests; the writer never waits).
    #[cfg(test)]
    pub fn wait_prepared(&mut self) {
        self.preparer.wait();
    }

    /// Closes the active segment and starts the next. The old segment is synced first under
    /// every policy: recovery treats only the newest segment's tail as possibly torn, so an
    /// older segment must be whole on disk before a newer one exists.
    fn roll(&mut self) -> io::Result<()> {
        self.timed_sync()?;
        let id = self.segments.back().map_or(1, |s| s.id + 1);
        let (file, allocated) = match self.preparer.take(id) {
            Some(prepared) => match self.put_in_place(id) {
                Ok(()) => {
                    self.stats.prepared_segments += 1;
                    (prepared.file, prepared.len)
                }
                Err(e) => {
                    log::warn!("log: cannot put prepared segment {id} in place: {e}");
                    let _ = std::fs::remove_file(prepare::prep_path(&self.dir, id));
                    (
                        create_segment(&self.dir, self.epoch, id)?,
                        SEGMENT_HEADER_LEN as u64,
                    )
                }
            },
            None => (
                create_segment(&self.dir, self.epoch, id)?,
                SEGMENT_HEADER_LEN as u64,
            ),
        };
        self.file = file;
        self.allocated = allocated;
        self.segments.push_back(Segment {
            id,
            len: SEGMENT_HEADER_LEN as u64,
            last_seq: HashMap::new(),
            newest_ts_ms: 0,
        });
        self.total_bytes += SEGMENT_HEADER_LEN as u64;
        self.unsynced = false;
        self.retain();
        Ok(())
    }

    /// Deletes old segments past the retention limits; never the active one.
    fn retain(&mut self) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        while self.segments.len() > 1 {
            let Some(oldest) = self.segments.front() else {
                break;
            };
            let too_big = self
                .limits
                .retention
                .max_bytes
                .is_some_and(|max| self.total_bytes > max);
            let too_old = self.limits.retention.max_age.is_some_and(|age| {
                oldest.newest_ts_ms.saturating_add(age.as_millis() as u64) < now_ms
            });
            if !too_big && !too_old {
                break;
            }
            let id = oldest.id;
            match self.keep_heads_of_oldest() {
                Ok(()) if self.heads_failing => {
                    self.heads_failing = false;
                    log::info!("log: saved the heads of emptied rooms; retention goes on");
                }
                Ok(()) => {}
                Err(e) => {
                    // Retried after every batch: say it once, not each time.
                    if !self.heads_failing {
                        self.heads_failing = true;
                        log::warn!(
                            "log: cannot save the heads of the rooms whose last messages are in \
                             segment {id}, so retention keeps it until it can: {e}"
                        );
                    }
                    break;
                }
            }
            let path = segment_path(&self.dir, id);
            if let Err(e) = std::fs::remove_file(&path) {
                log::warn!("log: cannot delete {} for retention: {e}", path.display());
                break;
            }
            if let Some(gone) = self.segments.pop_front() {
                self.total_bytes = self.total_bytes.saturating_sub(gone.len);
                for (room, last) in gone.last_seq.values() {
                    room.write(|ring| ring.forget_through(*last, gone.id));
                }
                log::info!(
                    "log: retention deleted segment {} ({} bytes)",
                    gone.id,
                    gone.len
                );
            }
            sync_dir(&self.dir);
        }
    }

    /// Makes `log/heads` durably name the head of every room that has a record in the oldest
    /// segment and none in a later synced one, before that segment may be deleted: after it,
    /// recovery would find no record to take those heads from. The active segment does not
    /// count, as what is in it may not be on the disk yet. A kept head is only ever raised,
    /// and a room stays in the file when it has records again: a stale head is harmless
    /// (recovery takes the records' higher one), while dropping it would make the file's
    /// correctness depend on segments that a backup copy may not hold. Nothing is written
    /// when nothing changes.
    fn keep_heads_of_oldest(&mut self) -> io::Result<()> {
        let Some(oldest) = self.segments.front() else {
            return Ok(());
        };
        let later_synced = self.segments.len().saturating_sub(2);
        // Usually a room of the oldest segment is found in the next one, so this stops early.
        let raised: Vec<(&Arc<Room>, u64)> = oldest
            .last_seq
            .iter()
            .filter(|(id, _)| {
                !self
                    .segments
                    .iter()
                    .skip(1)
                    .take(later_synced)
                    .any(|s| s.last_seq.contains_key(id))
            })
            .map(|(_, (room, last))| (room, *last))
            .filter(|(room, last)| self.kept.get(&*room.name).is_none_or(|kept| kept < last))
            .collect();
        if raised.is_empty() {
            return Ok(());
        }
        let mut next = self.kept.clone();
        for (room, last) in raised {
            next.insert(room.name.clone(), last);
        }
        heads::write(&self.dir, self.epoch, &next)?;
        self.kept = next;
        Ok(())
    }
}

impl LogWriter {
    /// Renames a prepared file to segment `id`'s name, durably: a record synced into it
    /// must not come back after a power loss under the temporary name recovery ignores.
    fn put_in_place(&self, id: u64) -> io::Result<()> {
        std::fs::rename(
            prepare::prep_path(&self.dir, id),
            segment_path(&self.dir, id),
        )?;
        File::open(&self.dir)?.sync_all()
    }
}

/// Creates segment `id` with its header, synced along with the folder that names it.
fn create_segment(dir: &Path, epoch: u64, id: u64) -> io::Result<File> {
    let path = segment_path(dir, id);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| with_path(e, &path))?;
    file.write_all_at(&SegmentHeader { epoch, id }.encode(), 0)
        .map_err(|e| with_path(e, &path))?;
    file.sync_all().map_err(|e| with_path(e, &path))?;
    sync_dir(dir);
    Ok(file)
}

fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        log::warn!("log: cannot sync folder {}: {e}", dir.display());
    }
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
