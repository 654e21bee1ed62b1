//! The kept heads: the newest seq of each room whose records retention deleted, every one.
//!
//! Recovery rebuilds a room's `head` from its records; a room with none left would come back
//! at head 0 and give out seqs 1, 2, ... again under the same epoch, so a client resuming it
//! would be sent new messages under seqs it already saw. Before retention deletes a segment,
//! the writer therefore saves here the heads of the rooms that will have no record left in a
//! synced segment, merged with what is here already, and only then deletes the segment.
//! Recovery restores such a room with that head and `first` 0 (nothing retained); a room
//! that has records again takes its head from them, which are always higher.
//!
//! It lives in `log/heads` next to the segments, checksummed, and is only ever replaced with
//! `write_atomic` (temporary file, fsync, rename, folder fsync):
//!
//! ```text
//! chatd-log-heads 1
//! segments 0123456789abcdef   the store's segment id, as in log/epoch
//! room #general 4711          one line per room, sorted by name, head in decimal
//! crc32c 89abcdef             over every line above
//! ```
//!
//! It holds at most one line per room, and lines are never removed while the history lasts
//! (a new epoch removes the whole file). This module must never lower a kept head, and a
//! file it cannot read whole is refused, never guessed at.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::recovery::RecoveryError;
use crate::datadir::write_atomic;
use crate::protocol::name::{MAX_ROOM, is_valid_room_v2};

/// Name of the heads file inside the log folder.
pub const HEADS_FILE: &str = "heads";
const FIRST_LINE: &str = "chatd-log-heads 1";
/// The longest line a room can take: `room `, a name, a space, 20 digits, a newline.
const MAX_LINE: u64 = 5 + MAX_ROOM as u64 + 1 + 20 + 1;
/// Far more rooms than any `--max-rooms` in use; reading no more than this tells a wrong file
/// without reading all of it.
const MAX_ROOMS: u64 = 4 << 20;
const MAX_FILE_LEN: u64 = 64 + MAX_ROOMS * MAX_LINE;

/// Kept heads by room name; sorted, so that a file renders one way only.
pub type Heads = BTreeMap<Box<str>, u64>;

/// Reads `log/heads` of the store whose segments carry `segments`; empty if there is none.
///
/// # Errors
/// The file cannot be read, does not parse, fails its checksum or names another store: it is
/// named and left as it is.
pub fn read(log_dir: &Path, segments: u64) -> Result<Heads, RecoveryError> {
    let path = log_dir.join(HEADS_FILE);
    let io_err = |source| RecoveryError::Io {
        path: path.clone(),
        source,
    };
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Heads::new()),
        Err(e) => return Err(io_err(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_LEN)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    let bad = |reason: &str| RecoveryError::BadFile {
        path: path.clone(),
        reason: reason.into(),
    };
    let (owner, heads) = parse(&bytes).ok_or_else(|| {
        bad(
            "the heads of rooms whose every message retention deleted do not parse or fail \
             their checksum",
        )
    })?;
    if owner != segments {
        return Err(bad(
            "the heads file belongs to another store (its segments id differs from log/epoch)",
        ));
    }
    Ok(heads)
}

/// Replaces `log/heads` with `heads`, durably, before the caller deletes anything they name.
///
/// # Errors
/// Any I/O error; the old file is then still whole.
pub fn write(log_dir: &Path, segments: u64, heads: &Heads) -> io::Result<()> {
    let path = log_dir.join(HEADS_FILE);
    write_atomic(&path, render(segments, heads).as_bytes(), 0o600)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Removes `log/heads`, durably: a new history starts every room over at 1.
///
/// # Errors
/// The file or its folder cannot be changed.
pub fn remove(log_dir: &Path) -> io::Result<()> {
    match std::fs::remove_file(log_dir.join(HEADS_FILE)) {
        Ok(()) => File::open(log_dir)?.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn render(segments: u64, heads: &Heads) -> String {
    let mut body = format!("{FIRST_LINE}\nsegments {segments:016x}\n");
    for (room, head) in heads {
        body.push_str(&format!("room {room} {head}\n"));
    }
    let crc = crc32c::crc32c(body.as_bytes());
    format!("{body}crc32c {crc:08x}\n")
}

fn parse(bytes: &[u8]) -> Option<(u64, Heads)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.strip_suffix('\n')?.split('\n');
    if lines.next()? != FIRST_LINE {
        return None;
    }
    let segments = lines.next()?.strip_prefix("segments ")?;
    if segments.len() != 16 {
        return None;
    }
    let segments = u64::from_str_radix(segments, 16).ok()?;
    let mut heads = Heads::new();
    for line in lines {
        if line.starts_with("crc32c ") {
            break;
        }
        let (room, head) = line.strip_prefix("room ")?.split_once(' ')?;
        let head: u64 = head.parse().ok()?;
        if !is_valid_room_v2(room) || head == 0 || head > super::format::MAX_SEQ {
            return None;
        }
        heads.insert(room.into(), head);
    }
    // Rendering again checks the checksum, the order, duplicates and every byte at once.
    (segments != 0 && render(segments, &heads) == text).then_some((segments, heads))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Heads {
        [
            ("#a".into(), 5),
            ("#b".into(), 1 << 40),
            ("@alice+bob".into(), 7),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn a_written_file_reads_back() {
        let tmp = tempfile::tempdir().expect("tmp");
        write(tmp.path(), 0xfeed, &sample()).expect("write");
        assert_eq!(read(tmp.path(), 0xfeed).expect("read"), sample());
        write(tmp.path(), 0xfeed, &Heads::new()).expect("write empty");
        assert!(read(tmp.path(), 0xfeed).expect("read").is_empty());
        remove(tmp.path()).expect("remove");
        assert!(!tmp.path().join(HEADS_FILE).exists());
        remove(tmp.path()).expect("removing nothing is fine");
    }

    #[test]
    fn every_changed_byte_is_refused() {
        let text = render(0xfeed, &sample());
        assert!(parse(text.as_bytes()).is_some());
        for at in 0..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[at] ^= 0x01;
            assert!(parse(&bytes).is_none(), "byte {at} changed was accepted");
        }
        assert!(parse(&text.as_bytes()[..text.len() - 1]).is_none());
    }

    #[test]
    fn a_file_of_another_store_is_refused_naming_it() {
        let tmp = tempfile::tempdir().expect("tmp");
        write(tmp.path(), 0xfeed, &sample()).expect("write");
        match read(tmp.path(), 0xbeef) {
            Err(RecoveryError::BadFile { path, .. }) => {
                assert_eq!(path, tmp.path().join(HEADS_FILE));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
