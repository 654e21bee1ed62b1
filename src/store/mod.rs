//! The message store: an append-only, checksummed, segmented log on disk.
//!
//! Every message the sequencer accepts is written here before it is ACKed (and synced first
//! under `--fsync always`). The in-memory rings are a window onto this log; what falls out of
//! a window is read back from here, by the archive thread, when a member needs it.
//!
//! Layout: `<data>/log/<segment id, 20 digits>.seg`, ids counting up from 1, and
//! `<data>/log/epoch`, the name of the history they hold (see [`epoch`]), and `<data>/log/heads`,
//! the newest seq of each room whose every record retention deleted (see [`heads`]). Only the
//! newest segment is ever written; retention deletes whole segments from the oldest end. A
//! segment may end in zeros it was prepared with (see [`prepare`]): its data ends where they
//! begin. `<id>.prep` files are segments being made; recovery never reads them.

pub mod archive;
pub mod epoch;
pub mod format;
pub mod heads;
pub mod prepare;
pub mod recovery;
pub mod writer;

use std::path::{Path, PathBuf};

pub use epoch::{Ids, Opened, open};
pub use recovery::{Recovered, RecoveryMode, recover};
pub use writer::{FsyncPolicy, LogWriter, Retention, StoreLimits};

/// The log's folder inside a data directory.
pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("log")
}

/// The file of segment `id`.
pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// The segment id a file name stands for, if it is a segment file.
pub fn segment_id(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files in `dir`, oldest first.
///
/// # Errors
/// The folder cannot be read.
pub fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(id) = entry.file_name().to_str().and_then(segment_id) {
            found.push((id, entry.path()));
        }
    }
    found.sort_unstable_by_key(|&(id, _)| id);
    Ok(found)
}

#[cfg(test)]
mod format2_tests;
#[cfg(test)]
mod prepared_tests;
#[cfg(test)]
mod tests;
