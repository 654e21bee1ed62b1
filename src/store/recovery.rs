//! Recovery: reading the log back at start-up (and for `chatd log verify|repair`).
//!
//! Every record of every segment is checked: its checksum, that it is a MSG, and that each
//! room's seqs run on by exactly one from a possible seq. The rules, from the contract's
//! promise that an ACKed message is never lost:
//!
//! - Any segment may end in zeros: the room it was prepared with (see [`super::prepare`]).
//!   Its data ends where they begin; they are left in place for the writer.
//! - The newest segment may end in a torn record (a crash mid-write): bad bytes with no valid
//!   record anywhere after them. That tail was never ACKed as durable; from
//!   `RecoveryMode::TolerateTornTail` on it is cut off (and synced), with a warning saying
//!   how much.
//! - Anything else is damage: a bad record with valid records after it (bit rot in the middle
//!   of a file, whose neighbours may well have been ACKed), a record with a good checksum but
//!   an impossible seq, a bad older segment, a missing one. Recovery stops with an error that
//!   names the file and offset and changes nothing, unless the operator asked for
//!   `RecoveryMode::ForceTruncate` (`chatd log repair --force`): then the log is cut at the
//!   damage, every record after it dropped, and how much is reported.
//!
//! Keyed records (format 2) rebuild the dedupe table: the last ids of every `(user, client)`
//! with the seqs they were stored as and the time of the pair's last record (see
//! [`crate::dedupe`], which counts a pair quiet for a day as unknown and sweeps it away).
//!
//! Rooms whose every record retention deleted come back from `log/heads` (see
//! [`super::heads`]) with their kept head and `first` 0, so their seqs go on where they were.
//!
//! This module must never drop a record that passes every check except in `ForceTruncate`,
//! nor give a room a head below the one it kept.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{
    MAX_SEQ, RECORD_HEADER_LEN, RecordError, SEGMENT_HEADER_LEN, SegmentHeader, VERSION_1,
    count_records, decode_record,
};
use super::heads::{self, Heads};
use super::list_segments;
use crate::dedupe::{Dedupe, SendKey};
use crate::room::{INDEX_STRIDE, Pos};

/// What recovery may change on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryMode {
    /// `chatd log verify`: change nothing; report what start-up would do.
    ReadOnly,
    /// Start-up and `chatd log repair`: cut a torn tail off the newest segment; refuse any
    /// other damage.
    TolerateTornTail,
    /// `chatd log repair --force`: cut the log at the first damage, wherever it is, dropping
    /// every record after it (later segments included).
    ForceTruncate,
}

impl RecoveryMode {
    fn changes_files(self) -> bool {
        self != RecoveryMode::ReadOnly
    }
}

/// One room as the log holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomHistory {
    pub first: u64,
    pub head: u64,
    pub index: Vec<(u64, Pos)>,
}

/// One segment: its size, and the last seq of each room in it (what retention needs to move
/// `first` when the segment is deleted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentSummary {
    pub id: u64,
    pub len: u64,
    pub last_seq: HashMap<Box<str>, u64>,
    /// Newest ts_ms of any record in it (0 if empty).
    pub newest_ts_ms: u64,
    /// The format of its records (its header's version; 0 if it has no readable header).
    pub format: u32,
}

/// Where the log was (or, read-only, would be) cut: a torn tail, or, forced, damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    pub path: PathBuf,
    pub offset: u64,
    /// Bytes dropped: the rest of this segment and every later one.
    pub bytes: u64,
    /// Of a torn tail's bytes, the zeros at its end: in a prepared segment, the room it was
    /// made with rather than anything written (see [`super::prepare`]).
    pub zeros: u64,
    /// Whole, checksummed records among them (0 for a torn tail).
    pub records: u64,
    /// Later segment files removed with them.
    pub segments: u64,
    pub reason: String,
}

impl Torn {
    /// Says how many of the bytes are trailing zeros, when some are, for the messages that
    /// report a cut: "cut 64000 bytes" of a prepared segment is mostly room never written.
    pub fn zeros_note(&self) -> String {
        if self.zeros == 0 {
            String::new()
        } else {
            format!(" ({} of them trailing zeros)", self.zeros)
        }
    }
}

#[derive(Debug, Default)]
pub struct Recovered {
    /// Every room with a record, and every room of `kept` without one (`first` 0).
    pub rooms: HashMap<Box<str>, RoomHistory>,
    pub segments: Vec<SegmentSummary>,
    pub torn: Option<Torn>,
    pub records: u64,
    /// The heads file as read (see [`super::heads`]); the writer carries it on.
    pub kept: Heads,
    /// The keys of the messages stored in the last day (see [`crate::dedupe`]).
    pub dedupe: Dedupe,
}

impl Recovered {
    /// Rooms that have no record left and keep only their head (from the heads file).
    pub fn emptied_rooms(&self) -> usize {
        self.rooms.values().filter(|h| h.first == 0).count()
    }
}

#[derive(Debug)]
pub enum RecoveryError {
    Io {
        path: PathBuf,
        source: io::Error,
    },
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A small file kept beside the segments (`log/heads`) is not what chatd wrote; left as
    /// it is.
    BadFile {
        path: PathBuf,
        reason: String,
    },
}

impl fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            RecoveryError::Corrupt {
                path,
                offset,
                reason,
            } => write!(
                f,
                "{} at offset {offset}: {reason}. The log is damaged before its tail and \
                 chatd will not start on it: restore the data directory from a backup, or run \
                 `chatd log repair --force` to cut the log here, dropping every record after \
                 this point (`chatd log verify` says how many)",
                path.display()
            ),
            RecoveryError::BadFile { path, reason } => write!(
                f,
                "{}: {reason}. chatd will not start on it: restore the data directory from a \
                 backup. Removing the file instead lets the rooms it names give out their seqs \
                 again from 1 under the same epoch, so clients that resume them miss messages",
                path.display()
            ),
        }
    }
}

impl std::error::Error for RecoveryError {}

impl From<RecoveryError> for io::Error {
    fn from(e: RecoveryError) -> io::Error {
        let kind = match &e {
            RecoveryError::Io { source, .. } => source.kind(),
            RecoveryError::Corrupt { .. } | RecoveryError::BadFile { .. } => {
                io::ErrorKind::InvalidData
            }
        };
        io::Error::new(kind, e.to_string())
    }
}

/// The first problem found in a segment: where, why, and whether it may be a torn write.
struct Bad {
    offset: u64,
    reason: String,
    /// Bytes that are not a record (checksum, length, cut short): a torn write if nothing
    /// valid follows. A record with a good checksum and a wrong seq is never torn.
    unreadable: bool,
}

/// Reads every segment in `dir` (created if missing, unless read-only).
///
/// # Errors
/// A segment cannot be read, or is damaged anywhere but in a torn tail of the newest one
/// (unless `ForceTruncate`).
pub fn recover(dir: &Path, epoch: u64, mode: RecoveryMode) -> Result<Recovered, RecoveryError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RecoveryError::Io { path, source }
    };
    if mode.changes_files() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    } else if !dir.exists() {
        return Ok(Recovered::default());
    }
    // Read before anything is changed, so that a bad heads file leaves the log untouched.
    let kept = heads::read(dir, epoch)?;
    let segments = list_segments(dir).map_err(io_err(dir))?;
    let mut out = Recovered::default();
    let count = segments.len();
    let mut expected_id = None;
    // One name per user for the dedupe table's keys, however many records name them.
    let mut users = Keys::default();
    for (i, (id, path)) in segments.iter().enumerate() {
        let newest = i + 1 == count;
        let bad = match expected_id {
            Some(expected) if *id != expected => Some(Bad {
                offset: 0,
                reason: format!("segment {expected} is missing before it"),
                unreadable: false,
            }),
            _ => None,
        };
        expected_id = Some(id + 1);
        let (summary, bad) = match bad {
            Some(bad) => (SegmentSummary::default(), Some(bad)),
            None => {
                let scan = scan_segment(path, *id, epoch, &mut out, &mut users)?;
                let bad = match scan.bad {
                    None if !newest && scan.file_len == 0 => Some(Bad {
                        offset: 0,
                        reason: "an older segment is empty".into(),
                        unreadable: false,
                    }),
                    bad => bad,
                };
                (scan.summary, bad)
            }
        };
        let Some(bad) = bad else {
            out.segments.push(summary);
            continue;
        };
        let rest = read_from(path, bad.offset).map_err(io_err(path))?;
        let valid_after = count_records(&rest);
        let later = segments.get(i + 1..).unwrap_or_default();
        if newest && bad.unreadable && valid_after == 0 {
            if mode.changes_files() {
                truncate(path, bad.offset).map_err(io_err(path))?;
            }
            let written = rest
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |last| last + 1);
            out.torn = Some(Torn {
                path: path.clone(),
                offset: bad.offset,
                bytes: rest.len() as u64,
                zeros: (rest.len() - written) as u64,
                records: 0,
                segments: 0,
                reason: bad.reason,
            });
            out.segments.push(summary);
            break;
        }
        let mut torn = Torn {
            path: path.clone(),
            offset: bad.offset,
            bytes: rest.len() as u64,
            zeros: 0,
            records: valid_after,
            segments: later.len() as u64,
            reason: bad.reason,
        };
        for (_, later_path) in later {
            let bytes = read_from(later_path, 0).map_err(io_err(later_path))?;
            torn.bytes += bytes.len() as u64;
            torn.records += count_records(&bytes);
        }
        if mode != RecoveryMode::ForceTruncate {
            let reason = if torn.records > 0 {
                format!(
                    "{}; {} whole records ({} bytes) follow it, which a torn write cannot leave",
                    torn.reason, torn.records, torn.bytes
                )
            } else {
                torn.reason
            };
            return Err(RecoveryError::Corrupt {
                path: torn.path,
                offset: torn.offset,
                reason,
            });
        }
        // Newest first, so that a crash midway leaves a log whose segments are contiguous.
        for (_, later_path) in later.iter().rev() {
            std::fs::remove_file(later_path).map_err(io_err(later_path))?;
        }
        if bad.offset == 0 {
            std::fs::remove_file(path).map_err(io_err(path))?;
        } else {
            truncate(path, bad.offset).map_err(io_err(path))?;
            out.segments.push(summary);
        }
        sync_dir(dir).map_err(io_err(dir))?;
        out.torn = Some(torn);
        break;
    }
    restore_kept(dir, &mut out, kept)?;
    Ok(out)
}

/// Gives every room of the heads file with no record left its kept head, `first` 0. A room
/// whose records end below its kept head cannot come from chatd (its records after the kept
/// head would have to be gone while older ones stayed): that is damage, and refused.
fn restore_kept(dir: &Path, out: &mut Recovered, kept: Heads) -> Result<(), RecoveryError> {
    for (room, &head) in &kept {
        match out.rooms.get(room) {
            None => {
                out.rooms.insert(
                    room.clone(),
                    RoomHistory {
                        first: 0,
                        head,
                        index: Vec::new(),
                    },
                );
            }
            Some(history) if history.head >= head => {}
            Some(history) => {
                return Err(RecoveryError::BadFile {
                    path: dir.join(heads::HEADS_FILE),
                    reason: format!(
                        "room {room} reached seq {head} before, but its records in the log \
                         end at seq {}: the heads file or the log is damaged",
                        history.head
                    ),
                });
            }
        }
    }
    out.kept = kept;
    Ok(())
}

/// How much log time passes between two sweeps of the dedupe table during recovery.
const RECOVERY_SWEEP_MS: u64 = 60 * 60 * 1000;

/// What recovery keeps while it rebuilds the dedupe table: one shared name per user, however
/// many records name them, and when to sweep next.
#[derive(Default)]
struct Keys {
    users: HashSet<Arc<str>>,
    next_sweep_ms: u64,
}

impl Keys {
    fn name(&mut self, user: &str) -> Arc<str> {
        if let Some(name) = self.users.get(user) {
            return Arc::clone(name);
        }
        let name: Arc<str> = Arc::from(user);
        self.users.insert(Arc::clone(&name));
        name
    }
}

struct Scan {
    summary: SegmentSummary,
    file_len: u64,
    /// The first problem, if any.
    bad: Option<Bad>,
}

fn scan_segment(
    path: &Path,
    id: u64,
    epoch: u64,
    out: &mut Recovered,
    users: &mut Keys,
) -> Result<Scan, RecoveryError> {
    let io_err = |source| RecoveryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut summary = SegmentSummary {
        id,
        len: file_len,
        ..SegmentSummary::default()
    };
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    let got = read_up_to(&mut reader, &mut header).map_err(io_err)?;
    if got < SEGMENT_HEADER_LEN {
        // A segment created but never given its whole header: nothing in it was ever ACKed.
        // An empty file is a segment whose creation was cut off before its header: it holds
        // nothing, and the writer gives it its header again. Only a partial header is torn.
        summary.len = 0;
        let bad = (got > 0).then(|| Bad {
            offset: 0,
            reason: "segment header cut short".into(),
            unreadable: true,
        });
        return Ok(Scan {
            summary,
            file_len,
            bad,
        });
    }
    let header_bad = match SegmentHeader::decode_with_format(&header) {
        Err(why) => Some((why, true)),
        Ok((parsed, _)) if parsed.epoch != epoch => Some((
            "segment belongs to another store (its header's epoch differs)",
            false,
        )),
        Ok((parsed, _)) if parsed.id != id => {
            Some(("segment header names another segment id", false))
        }
        Ok((_, format)) => {
            summary.format = format;
            None
        }
    };
    if let Some((reason, unreadable)) = header_bad {
        summary.len = 0;
        return Ok(Scan {
            summary,
            file_len,
            bad: Some(Bad {
                offset: 0,
                reason: reason.into(),
                unreadable,
            }),
        });
    }
    let mut offset = SEGMENT_HEADER_LEN as u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        buf.resize(RECORD_HEADER_LEN, 0);
        let got = read_up_to(&mut reader, &mut buf).map_err(io_err)?;
        if got == 0 {
            break;
        }
        // Zeros from here to the end are room the segment was prepared with, not a record.
        if buf.get(..got).is_some_and(|b| b.iter().all(|&x| x == 0))
            && zeros_to_end(&mut reader).map_err(io_err)?
        {
            break;
        }
        let len = buf.first_chunk::<4>().map_or(0, |b| u32::from_be_bytes(*b));
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let whole = if got == RECORD_HEADER_LEN && len <= super::format::MAX_PAYLOAD {
            buf.resize(RECORD_HEADER_LEN + len, 0);
            let body = buf.get_mut(RECORD_HEADER_LEN..).unwrap_or_default();
            let more = read_up_to(&mut reader, body).map_err(io_err)?;
            buf.truncate(RECORD_HEADER_LEN + more);
            true
        } else {
            buf.truncate(got);
            false
        };
        let record = match decode_record(&buf) {
            Ok((record, _)) if whole => record,
            Ok(_) => break,
            Err(e) => {
                summary.len = offset;
                return Ok(Scan {
                    summary,
                    file_len,
                    bad: Some(Bad {
                        offset,
                        reason: e.describe().into(),
                        // A checksummed record that is no MSG was written whole: not torn.
                        unreadable: e != RecordError::BadPayload,
                    }),
                });
            }
        };
        let head = out.rooms.get(record.room).map_or(0, |r| r.head);
        let impossible = if record.key.is_some() && summary.format == VERSION_1 {
            Some("a record with a key in a format 1 segment".to_string())
        } else if record.seq > MAX_SEQ {
            Some(format!(
                "record of room {} claims seq {}, past any seq a room can reach",
                record.room, record.seq
            ))
        } else if head != 0 && record.seq != head + 1 {
            Some(format!(
                "record of room {} has seq {} after seq {head}: room sequence out of order",
                record.room, record.seq
            ))
        } else {
            None
        };
        if let Some(reason) = impossible {
            summary.len = offset;
            return Ok(Scan {
                summary,
                file_len,
                bad: Some(Bad {
                    offset,
                    reason,
                    unreadable: false,
                }),
            });
        }
        let room = out.rooms.entry(record.room.into()).or_default();
        if room.head == 0 {
            room.first = record.seq;
        }
        room.head = record.seq;
        if room.index.is_empty() || (record.seq - 1) % INDEX_STRIDE == 0 {
            room.index.push((
                record.seq,
                Pos {
                    segment: id,
                    offset,
                },
            ));
        }
        summary.last_seq.insert(record.room.into(), record.seq);
        summary.newest_ts_ms = summary.newest_ts_ms.max(record.ts_ms);
        if let Some(key) = record.key {
            let send = SendKey {
                user: users.name(record.user),
                client: key.client,
            };
            out.dedupe.insert(&send, key.id, record.seq, record.ts_ms);
        }
        // A pair a day older than this record is expired for any later clock: dropping it as
        // the log is read keeps the table to a day's pairs, however long the log.
        if record.ts_ms >= users.next_sweep_ms {
            out.dedupe.forget_expired(record.ts_ms);
            users.next_sweep_ms = record.ts_ms.saturating_add(RECOVERY_SWEEP_MS);
        }
        out.records += 1;
        offset += buf.len() as u64;
    }
    summary.len = offset;
    Ok(Scan {
        summary,
        file_len,
        bad: None,
    })
}

/// Whether everything left in `r` is zero bytes.
fn zeros_to_end(r: &mut impl Read) -> io::Result<bool> {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let got = read_up_to(r, &mut chunk)?;
        if chunk.get(..got).is_some_and(|b| b.iter().any(|&x| x != 0)) {
            return Ok(false);
        }
        if got < chunk.len() {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends; returns how much was read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(buf.get_mut(filled..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The bytes of `path` from `offset` to its end (to tell a torn tail from damage, and to say
/// how much a forced cut drops; only read when something is wrong).
fn read_from(path: &Path, offset: u64) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}
