//! The outbox: for one user on one server, every message given to `chat` whose ACK has not
//! come yet, kept on disk so that a line typed while disconnected, or whose ACK a dropped
//! connection (or a crash of `chat` itself) took away, is sent again later with its original
//! id, and the server's exactly-once check (protocol version 2) stores it once.
//!
//! The file is append-only: a `queued` record (id, room, text) is appended and synced *before*
//! the message is first written to a socket, and a `done` record after its ACK or refusal. One
//! append per message is all a busy `chat send` pays, where rewriting the whole file would cost
//! as much as the outbox holds each time. Each record carries its length and a CRC32C, so a
//! crash in the middle of an append leaves a torn last record that [`Outbox::open`] drops
//! (the message it held was never sent: sending waits for the sync); the good prefix is kept
//! and the file truncated there. Once nothing is pending the file is truncated to nothing, so
//! it never grows with what was sent. An exclusive lock on the file keeps a second `chat` of
//! the same user and server from sending (and resending) the same entries; that one runs
//! without an outbox. This module never touches the network and never reorders entries: they
//! come back in id order.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes before a record's body: its length and its CRC32C, both big-endian.
const RECORD_HEAD: usize = 8;
/// A record longer than this is not one of ours (the largest frame a server takes is 16 MiB).
const MAX_RECORD: usize = 17 << 20;
const QUEUED: u8 = b'Q';
const DONE: u8 = b'D';

/// One message waiting for its ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub room: String,
    pub text: String,
}

#[derive(Debug)]
pub struct Outbox {
    file: File,
    path: PathBuf,
    pending: BTreeMap<u64, Entry>,
}

impl Outbox {
    /// Opens (creating) the outbox at `path`, locks it, and reads back what is pending; a torn
    /// or corrupt tail is cut off.
    ///
    /// # Errors
    /// The file cannot be opened or read, or another `chat` holds it (`WouldBlock`).
    pub fn open(path: &Path) -> io::Result<Outbox> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "another chat of this user and server is using it",
                ));
            }
            Err(TryLockError::Error(e)) => return Err(e),
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (pending, good) = replay(&bytes);
        if good < bytes.len() {
            file.set_len(good as u64)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::End(0))?;
        let mut outbox = Outbox {
            file,
            path: path.to_path_buf(),
            pending,
        };
        if outbox.pending.is_empty() && good > 0 {
            outbox.empty()?;
        }
        Ok(outbox)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What is pending, in id order.
    pub fn pending(&self) -> impl Iterator<Item = (u64, &Entry)> {
        self.pending.iter().map(|(&id, e)| (id, e))
    }

    /// Records `id` as pending, durably: on return it survives a crash.
    ///
    /// # Errors
    /// The append or the sync failed; the message must then not be sent as if it were kept.
    pub fn add(&mut self, id: u64, room: &str, text: &str) -> io::Result<()> {
        let room_len = u8::try_from(room.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "room name too long"))?;
        let mut body = Vec::with_capacity(10 + room.len() + text.len());
        body.push(QUEUED);
        body.extend_from_slice(&id.to_be_bytes());
        body.push(room_len);
        body.extend_from_slice(room.as_bytes());
        body.extend_from_slice(text.as_bytes());
        self.append(&body)?;
        self.file.sync_data()?;
        let entry = Entry {
            room: room.to_string(),
            text: text.to_string(),
        };
        self.pending.insert(id, entry);
        Ok(())
    }

    /// `id` was ACKed or refused: it is no longer pending. Not synced: if the record is lost,
    /// the message is sent again with its id, which the server answers with the same ACK.
    ///
    /// # Errors
    /// The append (or, when the outbox empties, the truncation) failed.
    pub fn done(&mut self, id: u64) -> io::Result<()> {
        if self.pending.remove(&id).is_none() {
            return Ok(());
        }
        if self.pending.is_empty() {
            return self.empty();
        }
        let mut body = vec![DONE];
        body.extend_from_slice(&id.to_be_bytes());
        self.append(&body)
    }

    fn empty(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_all()
    }

    fn append(&mut self, body: &[u8]) -> io::Result<()> {
        let len = u32::try_from(body.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too long"))?;
        let mut record = Vec::with_capacity(RECORD_HEAD + body.len());
        record.extend_from_slice(&len.to_be_bytes());
        record.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
        record.extend_from_slice(body);
        self.file.write_all(&record)
    }
}

/// The pending entries that `bytes` describe, and how many leading bytes are good records.
fn replay(bytes: &[u8]) -> (BTreeMap<u64, Entry>, usize) {
    let mut pending = BTreeMap::new();
    let mut at = 0;
    while let Some((body, next)) = record_at(bytes, at) {
        match body.split_first() {
            Some((&QUEUED, rest)) => {
                let Some(e) = queued(rest) else { break };
                pending.insert(e.0, e.1);
            }
            Some((&DONE, rest)) => {
                let Ok(id) = <[u8; 8]>::try_from(rest) else {
                    break;
                };
                pending.remove(&u64::from_be_bytes(id));
            }
            _ => break,
        }
        at = next;
    }
    (pending, at)
}

/// The body of the record at `at` and where the next one starts, if it is whole and intact.
fn record_at(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let head = bytes.get(at..at.checked_add(RECORD_HEAD)?)?;
    let (len, crc) = head.split_at(4);
    let len = usize::try_from(u32::from_be_bytes(len.try_into().ok()?)).ok()?;
    if len > MAX_RECORD {
        return None;
    }
    let start = at + RECORD_HEAD;
    let body = bytes.get(start..start.checked_add(len)?)?;
    (crc32c::crc32c(body) == u32::from_be_bytes(crc.try_into().ok()?))
        .then_some((body, start + len))
}

fn queued(rest: &[u8]) -> Option<(u64, Entry)> {
    let (id, rest) = rest.split_first_chunk::<8>()?;
    let (&room_len, rest) = rest.split_first()?;
    let (room, text) = rest.split_at_checked(usize::from(room_len))?;
    let entry = Entry {
        room: String::from_utf8(room.to_vec()).ok()?,
        text: String::from_utf8(text.to_vec()).ok()?,
    };
    Some((u64::from_be_bytes(*id), entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(o: &Outbox) -> Vec<u64> {
        o.pending().map(|(id, _)| id).collect()
    }

    #[test]
    fn pending_entries_survive_a_reopen_and_done_ones_do_not() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("chat").join("alice@h_1.outbox");
        let mut o = Outbox::open(&path).expect("open");
        o.add(1, "#a", "one").expect("add");
        o.add(2, "#b", "two\nlines").expect("add");
        o.add(3, "#a", "").expect("add");
        o.done(1).expect("done");
        drop(o);
        let o = Outbox::open(&path).expect("reopen");
        assert_eq!(ids(&o), [2, 3]);
        let two = o.pending().next().map(|(_, e)| e.clone());
        assert_eq!(
            two,
            Some(Entry {
                room: "#b".into(),
                text: "two\nlines".into()
            })
        );
    }

    #[test]
    fn the_file_is_emptied_once_nothing_is_pending() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("o");
        let mut o = Outbox::open(&path).expect("open");
        o.add(7, "#a", "x").expect("add");
        o.done(7).expect("done");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 0);
        o.add(8, "#a", "y")
            .expect("add appends after the truncation");
        drop(o);
        assert_eq!(ids(&Outbox::open(&path).expect("reopen")), [8]);
    }

    #[test]
    fn a_torn_last_record_is_dropped_at_every_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("o");
        let mut o = Outbox::open(&path).expect("open");
        o.add(1, "#a", "kept").expect("add");
        let whole = std::fs::metadata(&path).expect("meta").len();
        o.add(2, "#a", "torn").expect("add");
        drop(o);
        let full = std::fs::read(&path).expect("read");
        for cut in whole..full.len() as u64 {
            std::fs::write(&path, full.get(..cut as usize).expect("prefix")).expect("write");
            let mut o = Outbox::open(&path).expect("a torn tail is not fatal");
            assert_eq!(ids(&o), [1], "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).expect("meta").len(), whole);
            o.add(3, "#a", "after")
                .expect("appends after the good prefix");
            drop(o);
            assert_eq!(ids(&Outbox::open(&path).expect("reopen")), [1, 3]);
        }
    }

    #[test]
    fn a_corrupt_record_ends_the_good_prefix() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("o");
        let mut o = Outbox::open(&path).expect("open");
        o.add(1, "#a", "kept").expect("add");
        o.add(2, "#a", "flipped").expect("add");
        drop(o);
        let mut bytes = std::fs::read(&path).expect("read");
        if let Some(last) = bytes.last_mut() {
            *last ^= 0x20;
        }
        std::fs::write(&path, &bytes).expect("write");
        assert_eq!(ids(&Outbox::open(&path).expect("open")), [1]);
    }

    #[test]
    fn a_second_chat_cannot_take_the_same_outbox() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("o");
        let first = Outbox::open(&path).expect("open");
        let second = Outbox::open(&path).map(|_| ());
        assert_eq!(second.map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
        drop(first);
        assert!(
            Outbox::open(&path).is_ok(),
            "free again once the first ends"
        );
    }
}
