//! The epoch: the name of the message history, kept with the log it names.
//!
//! WELCOME sends it so that a client can tell whether its saved seqs still mean anything: the
//! same epoch promises the same history, so seq N is the same message it was. The epoch is
//! therefore minted with the history, not with the data directory: whenever the store opens
//! on no history at all (no log folder, or a log holding no record, whether it was deleted,
//! lost, emptied by retention, or copied from a template), a new random epoch is minted and
//! fsynced before anyone can see it, and the old (empty) segments and the kept heads of its
//! rooms (`log/heads`, see [`super::heads`]) are removed first. A forced repair that drops
//! whole records changes the history too, and so the epoch.
//!
//! It lives in `log/epoch` next to the segments, as two ids and a checksum:
//!
//! ```text
//! chatd-log-epoch 1
//! segments 0123456789abcdef   the id every segment header carries: fixed when the store began
//! epoch 0123456789abcdef      the history's epoch, sent in WELCOME
//! crc32c 89abcdef             over the three lines above
//! ```
//!
//! The two are equal until a forced repair; segment headers keep the first, so that old
//! segments still prove they belong to this store. The file is rewritten only with
//! `write_atomic` (temporary file, fsync, rename, folder fsync).
//!
//! An older chatd kept the epoch in the data directory's own `epoch` file and wrote it into
//! every segment header. Such a store keeps its epoch on upgrade: it is taken from that file
//! (or, failing it, from the segment headers) and written here. This module must never give
//! an existing history a new epoch except on a forced cut, and never reuse one for a new
//! history.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::format::{SEGMENT_HEADER_LEN, SegmentHeader};
use super::heads::{self, HEADS_FILE};
use super::list_segments;
use super::recovery::{Recovered, RecoveryError, RecoveryMode, recover};
use crate::datadir::{parent_dir, write_atomic};

/// Name of the epoch file inside the log folder.
pub const EPOCH_FILE: &str = "epoch";
const FIRST_LINE: &str = "chatd-log-epoch 1";
/// Longer than any valid file: reading this much tells a wrong file without reading all of it.
const MAX_FILE_LEN: u64 = 128;

/// The ids of a store: see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// Carried by every segment header; never changes.
    pub segments: u64,
    /// The history's epoch, sent in WELCOME.
    pub epoch: u64,
}

/// A store opened and recovered.
#[derive(Debug)]
pub struct Opened {
    /// `None` only read-only, when the log holds no record: the next start mints one.
    pub ids: Option<Ids>,
    /// Whether this open minted a new epoch (history started over, or was cut by force).
    pub minted: bool,
    pub recovered: Recovered,
}

/// Opens the message store in `log_dir`: recovers the log (see [`recover`]) and finds, or
/// mints, the epoch of its history. `legacy` is the data directory's own epoch file, which
/// an older chatd wrote; it is used only for a log that has no epoch file yet.
///
/// # Errors
/// The log is damaged (see [`recover`]), the epoch file is corrupt (named, and left as it
/// is), or a file cannot be read or written.
pub fn open(
    log_dir: &Path,
    legacy: Option<u64>,
    mode: RecoveryMode,
) -> Result<Opened, RecoveryError> {
    let writes = mode != RecoveryMode::ReadOnly;
    let path = log_dir.join(EPOCH_FILE);
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RecoveryError::Io { path, source }
    };
    if writes && !log_dir.exists() {
        std::fs::create_dir_all(log_dir).map_err(io_err(log_dir))?;
        // The folder's own name must be durable before anything in it counts.
        let data = parent_dir(log_dir);
        File::open(data)
            .and_then(|d| d.sync_all())
            .map_err(io_err(data))?;
    }
    let stored = read(&path)?;
    let segment_epoch = match stored {
        Some(ids) => ids.segments,
        None => match legacy {
            Some(epoch) => epoch,
            None => first_header_epoch(log_dir).map_err(io_err(log_dir))?,
        },
    };
    let mut recovered = recover(log_dir, segment_epoch, mode)?;
    if recovered.records == 0 {
        // A new history starts every room over at 1: the kept heads of the old one go too.
        recovered.rooms.clear();
        recovered.kept.clear();
        if !writes {
            return Ok(Opened {
                ids: None,
                minted: true,
                recovered,
            });
        }
        // No history: whatever segments there are hold no record, and their headers name an
        // epoch that must not be reused. Remove them (newest first) before the new epoch
        // exists, so that a crash in between leaves a log that still reads as empty.
        for (_, segment) in list_segments(log_dir)
            .map_err(io_err(log_dir))?
            .iter()
            .rev()
        {
            std::fs::remove_file(segment).map_err(io_err(segment))?;
        }
        let heads_path = log_dir.join(HEADS_FILE);
        heads::remove(log_dir).map_err(io_err(&heads_path))?;
        recovered.segments.clear();
        let epoch = mint().map_err(io_err(&path))?;
        let ids = Ids {
            segments: epoch,
            epoch,
        };
        write(&path, ids).map_err(io_err(&path))?;
        return Ok(Opened {
            ids: Some(ids),
            minted: true,
            recovered,
        });
    }
    let mut ids = stored.unwrap_or(Ids {
        segments: segment_epoch,
        epoch: segment_epoch,
    });
    let forced_cut = recovered.torn.as_ref().is_some_and(|t| t.records > 0);
    let minted = forced_cut && mode == RecoveryMode::ForceTruncate;
    if minted {
        ids.epoch = mint().map_err(io_err(&path))?;
    }
    if writes && (minted || stored.is_none()) {
        write(&path, ids).map_err(io_err(&path))?;
    }
    Ok(Opened {
        ids: Some(ids),
        minted,
        recovered,
    })
}

/// Reads the epoch file; `None` if there is none.
fn read(path: &Path) -> Result<Option<Ids>, RecoveryError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(RecoveryError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_LEN)
        .read_to_end(&mut bytes)
        .map_err(|source| RecoveryError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    parse(&bytes)
        .map(Some)
        .ok_or_else(|| RecoveryError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            reason: "the log's epoch file does not parse or fails its checksum; it is left as it \
                 is"
            .into(),
        })
}

fn render(ids: Ids) -> String {
    let body = format!(
        "{FIRST_LINE}\nsegments {:016x}\nepoch {:016x}\n",
        ids.segments, ids.epoch
    );
    let crc = crc32c::crc32c(body.as_bytes());
    format!("{body}crc32c {crc:08x}\n")
}

fn parse(bytes: &[u8]) -> Option<Ids> {
    let text = std::str::from_utf8(bytes).ok()?;
    let lines: Vec<&str> = text.strip_suffix('\n')?.split('\n').collect();
    let [first, segments, epoch, crc] = lines.as_slice() else {
        return None;
    };
    if *first != FIRST_LINE {
        return None;
    }
    let ids = Ids {
        segments: hex_field(segments, "segments ", 16)?,
        epoch: hex_field(epoch, "epoch ", 16)?,
    };
    hex_field(crc, "crc32c ", 8)?;
    // Rendering again checks the checksum and every byte of the spelling at once.
    (ids.segments != 0 && ids.epoch != 0 && render(ids) == text).then_some(ids)
}

/// `name` then exactly `digits` lowercase hex digits.
fn hex_field(line: &str, name: &str, digits: usize) -> Option<u64> {
    let hex = line.strip_prefix(name)?;
    if hex.len() != digits || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn write(path: &Path, ids: Ids) -> io::Result<()> {
    write_atomic(path, render(ids).as_bytes(), 0o600)
}

/// The epoch in the header of the first segment that has a readable one (0 if none does:
/// then any segment header there is names another store, and recovery says so).
fn first_header_epoch(log_dir: &Path) -> io::Result<u64> {
    if !log_dir.exists() {
        return Ok(0);
    }
    for (_, path) in list_segments(log_dir)? {
        let mut header = [0u8; SEGMENT_HEADER_LEN];
        let mut file = File::open(&path)?;
        if file.read_exact(&mut header).is_ok()
            && let Ok(h) = SegmentHeader::decode(&header)
        {
            return Ok(h.epoch);
        }
    }
    Ok(0)
}

/// A random non-zero epoch from the OS.
///
/// # Errors
/// The OS has no random bytes to give.
pub fn mint() -> io::Result<u64> {
    loop {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes)
            .map_err(|e| io::Error::other(format!("cannot get random bytes from the OS: {e}")))?;
        let epoch = u64::from_le_bytes(bytes);
        // Zero means "no epoch" to clients; the chance of drawing it is 2^-64, but it is free
        // to rule out.
        if epoch != 0 {
            return Ok(epoch);
        }
    }
}
