//! Recovery: reading the log back at start-up (and for `chatd log verify|repair`).
//!
//! Every record of every segment is checked: its checksum, that it is a MSG, and that each
//! room's seqs run on by exactly one. The rules, from the contract's promise that an ACKed
//! message is never lost:
//!
//! - The newest segment may end in a torn record (a crash mid-write). Everything from the
//!   first bad record of the newest segment on was never ACKed as durable; in
//!   `RecoveryMode::TruncateTail` it is cut off (and synced), with a warning saying how much.
//! - A bad record anywhere else is corruption: recovery stops with an error that names the
//!   file and offset, and changes nothing. An operator decides what to do.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use super::format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentHeader, decode_record};
use super::list_segments;
use crate::room::{INDEX_STRIDE, Pos};

/// What recovery may change on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Start-up and `chatd log repair`: cut a torn tail off the newest segment.
    TruncateTail,
    /// `chatd log verify`: change nothing; report what start-up would do.
    ReadOnly,
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
}

/// A torn tail found (and, in `TruncateTail` mode, cut off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    pub path: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    pub reason: &'static str,
}

#[derive(Debug, Default)]
pub struct Recovered {
    pub rooms: HashMap<Box<str>, RoomHistory>,
    pub segments: Vec<SegmentSummary>,
    pub torn: Option<Torn>,
    pub records: u64,
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
                "{} at offset {offset}: {reason}; the log is damaged before its tail, which \
                 recovery will not repair (restore the data directory from a backup)",
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
            RecoveryError::Corrupt { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// Reads every segment in `dir` (created if missing, unless read-only).
///
/// # Errors
/// A segment cannot be read, or is damaged anywhere but at the tail of the newest one.
pub fn recover(dir: &Path, epoch: u64, mode: RecoveryMode) -> Result<Recovered, RecoveryError> {
    let io_err = |source| RecoveryError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if mode == RecoveryMode::TruncateTail {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    } else if !dir.exists() {
        return Ok(Recovered::default());
    }
    let segments = list_segments(dir).map_err(io_err)?;
    let mut out = Recovered::default();
    let count = segments.len();
    let mut expected_id = None;
    for (i, (id, path)) in segments.into_iter().enumerate() {
        let corrupt = |offset, reason: &str| RecoveryError::Corrupt {
            path: path.clone(),
            offset,
            reason: reason.to_string(),
        };
        if let Some(expected) = expected_id
            && id != expected
        {
            return Err(corrupt(
                0,
                &format!("segment {expected} is missing before it"),
            ));
        }
        expected_id = Some(id + 1);
        let newest = i + 1 == count;
        let scan = scan_segment(&path, id, epoch, &mut out)?;
        if !newest && scan.file_len == 0 {
            return Err(corrupt(0, "an older segment is empty"));
        }
        match scan.bad {
            None => {}
            Some((offset, reason)) if newest => {
                let bytes = scan.file_len - offset;
                if mode == RecoveryMode::TruncateTail {
                    truncate(&path, offset).map_err(|source| RecoveryError::Io {
                        path: path.clone(),
                        source,
                    })?;
                }
                out.torn = Some(Torn {
                    path: path.clone(),
                    offset,
                    bytes,
                    reason,
                });
            }
            Some((offset, reason)) => return Err(corrupt(offset, reason)),
        }
        out.segments.push(scan.summary);
    }
    Ok(out)
}

struct Scan {
    summary: SegmentSummary,
    file_len: u64,
    /// Offset and reason of the first bad record, if any.
    bad: Option<(u64, &'static str)>,
}

fn scan_segment(
    path: &Path,
    id: u64,
    epoch: u64,
    out: &mut Recovered,
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
        let bad = (got > 0).then_some((0, "segment header cut short"));
        return Ok(Scan {
            summary,
            file_len,
            bad,
        });
    }
    let corrupt = |offset, reason: &str| RecoveryError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.to_string(),
    };
    let parsed = SegmentHeader::decode(&header).map_err(|why| corrupt(0, why))?;
    if parsed.epoch != epoch {
        return Err(corrupt(
            0,
            "segment belongs to another store (epoch differs)",
        ));
    }
    if parsed.id != id {
        return Err(corrupt(0, "segment header names another segment id"));
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
                    bad: Some((offset, e.describe())),
                });
            }
        };
        let room = out.rooms.entry(record.room.into()).or_default();
        if room.head != 0 && record.seq != room.head + 1 {
            summary.len = offset;
            return Ok(Scan {
                summary,
                file_len,
                bad: Some((offset, "room sequence out of order")),
            });
        }
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

fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}
