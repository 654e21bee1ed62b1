//! One room's history under the fork driver: a file of checksummed records that every reader
//! process appends to under an exclusive `flock`, and every sender process reads under a
//! shared one. The processes share nothing else: the file *is* the room.
//!
//! ```text
//! file:    "chatfrk1" (8 bytes), then records, oldest first
//! record:  len: u32 | crc32c(body): u32 | body (len bytes) | len: u32 again
//! body:    seq: u64 | ts_ms: u64 | user length: u8 | user | text (the rest)
//! ```
//!
//! All integers are big-endian. The Nth record holds seq N, and a reader checks it. The copy
//! of `len` after each record lets a writer find the newest record, and so the room's head,
//! from the end of the file, without reading the rest. A writer killed in the middle of an
//! append leaves a torn tail: its checksum (or its length) fails, so no reader ever shows it,
//! and the next writer cuts it off before appending the same seq in its place. Only a record
//! some writer completed is ever shown.
//!
//! This module must never write without the exclusive lock held by its caller, and never
//! return a record that failed its checksum. It does no socket I/O, so that no lock is ever
//! held while a client is slow.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use nix::fcntl::{Flock, FlockArg};

use crate::protocol::MAX_FRAME_CEILING;
use crate::protocol::name::MAX_USER;

/// The first bytes of every room file.
pub const MAGIC: [u8; 8] = *b"chatfrk1";
const MAGIC_LEN: u64 = MAGIC.len() as u64;
/// `len` and `crc` before the body, `len` again after it.
const FRAMING: usize = 12;
/// seq, ts_ms and the user's length byte.
const BODY_FIXED: usize = 17;
/// No body is longer: a text never exceeds a frame. A longer `len` is damage, not a record.
const MAX_BODY: usize = BODY_FIXED + MAX_USER + MAX_FRAME_CEILING as usize;

/// Where a reader is in a room file: the offset of the next record and the seq it must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub offset: u64,
    pub next: u64,
}

impl Cursor {
    /// Before the first record.
    pub const START: Cursor = Cursor {
        offset: MAGIC_LEN,
        next: 1,
    };
}

/// The end of a room's intact history: where the next record goes, and the newest seq (0
/// when the room holds no message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    pub end: u64,
    pub head: u64,
}

impl Tail {
    const EMPTY: Tail = Tail {
        end: MAGIC_LEN,
        head: 0,
    };

    /// A cursor past every record: live messages only.
    pub fn cursor(self) -> Cursor {
        Cursor {
            offset: self.end,
            next: self.head + 1,
        }
    }
}

/// One stored message, borrowed from the bytes it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub seq: u64,
    pub ts_ms: u64,
    pub user: &'a str,
    pub text: &'a str,
}

/// Appends the encoding of one record to `out`. `user` is at most [`MAX_USER`] bytes (a valid
/// user name); a longer one is cut, so the record never lies about its lengths.
pub fn encode(record: &Record<'_>, out: &mut Vec<u8>) {
    let user = crate::protocol::codec::clamp_str(record.user, MAX_USER);
    let len = BODY_FIXED + user.len() + record.text.len();
    let start = out.len();
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    let body_at = out.len();
    out.extend_from_slice(&record.seq.to_be_bytes());
    out.extend_from_slice(&record.ts_ms.to_be_bytes());
    out.push(u8::try_from(user.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(user.as_bytes());
    out.extend_from_slice(record.text.as_bytes());
    let crc = crc32c::crc32c(out.get(body_at..).unwrap_or_default());
    if let Some(slot) = out.get_mut(start + 4..body_at) {
        slot.copy_from_slice(&crc.to_be_bytes());
    }
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
}

/// What the front of a buffer holds.
#[derive(Debug, PartialEq, Eq)]
enum Parsed<'a> {
    /// A whole, intact record, and the bytes it takes.
    Whole(Record<'a>, usize),
    /// Not all of it yet: a record needs this many bytes.
    Short(usize),
    /// Not a record: a torn tail, or damage.
    Bad,
}

fn parse(buf: &[u8]) -> Parsed<'_> {
    let Some((len_bytes, rest)) = buf.split_first_chunk::<4>() else {
        return Parsed::Short(FRAMING);
    };
    let len = u32::from_be_bytes(*len_bytes) as usize;
    if !(BODY_FIXED..=MAX_BODY).contains(&len) {
        return Parsed::Bad;
    }
    let size = FRAMING + len;
    let Some((crc, rest)) = rest.split_first_chunk::<4>() else {
        return Parsed::Short(size);
    };
    let (Some(body), Some(trailer)) = (rest.get(..len), rest.get(len..len + 4)) else {
        return Parsed::Short(size);
    };
    if crc32c::crc32c(body) != u32::from_be_bytes(*crc) || trailer != len_bytes {
        return Parsed::Bad;
    }
    match body_fields(body) {
        Some(record) => Parsed::Whole(record, size),
        None => Parsed::Bad,
    }
}

fn body_fields(body: &[u8]) -> Option<Record<'_>> {
    let (seq, rest) = body.split_first_chunk::<8>()?;
    let (ts_ms, rest) = rest.split_first_chunk::<8>()?;
    let (&user_len, rest) = rest.split_first()?;
    let (user, text) = rest.split_at_checked(usize::from(user_len))?;
    Some(Record {
        seq: u64::from_be_bytes(*seq),
        ts_ms: u64::from_be_bytes(*ts_ms),
        user: std::str::from_utf8(user).ok()?,
        text: std::str::from_utf8(text).ok()?,
    })
}

/// The records in `bytes`, as [`read`] returned them: whole and verified.
pub fn records(bytes: &[u8]) -> impl Iterator<Item = Record<'_>> {
    let mut rest = bytes;
    std::iter::from_fn(move || match parse(rest) {
        Parsed::Whole(record, size) => {
            rest = rest.get(size..).unwrap_or_default();
            Some(record)
        }
        Parsed::Short(_) | Parsed::Bad => None,
    })
}

/// Finds the end of the intact history. It reads only the newest record when it is intact
/// (found from its trailing length); otherwise it reads the whole file, so a torn tail costs
/// one scan. It changes nothing: a reader may call it under a shared lock.
///
/// # Errors
/// The file cannot be read, or it is not a room file of the fork driver.
pub fn tail(file: &File) -> io::Result<Tail> {
    let len = file.metadata()?.len();
    if len < MAGIC_LEN {
        // Created and never written, or a first append killed inside the magic: no history.
        return Ok(Tail::EMPTY);
    }
    let mut magic = [0; MAGIC.len()];
    file.read_exact_at(&mut magic, 0)?;
    if magic != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a room file of the fork driver (bad magic)",
        ));
    }
    if let Some(tail) = newest(file, len)? {
        return Ok(tail);
    }
    let mut cursor = Cursor::START;
    while !read(file, &mut cursor, u64::MAX, SCAN_BYTES)?.is_empty() {}
    Ok(Tail {
        end: cursor.offset,
        head: cursor.next - 1,
    })
}

/// How much a scan reads at a time.
const SCAN_BYTES: usize = 256 << 10;

/// The tail, if the file ends in an intact record.
fn newest(file: &File, len: u64) -> io::Result<Option<Tail>> {
    let Some(at) = len.checked_sub(4).filter(|&at| at >= MAGIC_LEN) else {
        return Ok(None);
    };
    let mut trailer = [0; 4];
    file.read_exact_at(&mut trailer, at)?;
    let body = u32::from_be_bytes(trailer) as usize;
    if !(BODY_FIXED..=MAX_BODY).contains(&body) {
        return Ok(None);
    }
    let size = (FRAMING + body) as u64;
    let Some(start) = len.checked_sub(size).filter(|&s| s >= MAGIC_LEN) else {
        return Ok(None);
    };
    let mut bytes = vec![0; FRAMING + body];
    file.read_exact_at(&mut bytes, start)?;
    Ok(match parse(&bytes) {
        Parsed::Whole(record, _) => Some(Tail {
            end: len,
            head: record.seq,
        }),
        Parsed::Short(_) | Parsed::Bad => None,
    })
}

/// Reads the whole, intact records at `cursor`, up to seq `until` and about `budget` bytes
/// (at least one record however long), and moves `cursor` past them. Returns their bytes, for
/// [`records`]; empty when there is nothing new. It stops without error at the end of the
/// file or at a torn tail, which a later writer cuts and writes over.
///
/// # Errors
/// The file cannot be read, or a record holds the wrong seq (the file was damaged).
pub fn read(file: &File, cursor: &mut Cursor, until: u64, budget: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; budget.max(FRAMING)];
    let mut filled = read_at_most(file, &mut buf, cursor.offset)?;
    let mut used = 0;
    while cursor.next <= until {
        match parse(buf.get(used..filled).unwrap_or_default()) {
            Parsed::Whole(record, size) => {
                if record.seq != cursor.next {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "the record at offset {} holds seq {}, not {}",
                            cursor.offset, record.seq, cursor.next
                        ),
                    ));
                }
                used += size;
                cursor.offset += size as u64;
                cursor.next += 1;
            }
            // A record longer than the budget: read it whole, once, if the file has it.
            Parsed::Short(need) if used == 0 && filled == buf.len() && need > buf.len() => {
                buf.resize(need, 0);
                filled = read_at_most(file, &mut buf, cursor.offset)?;
            }
            Parsed::Short(_) | Parsed::Bad => break,
        }
    }
    buf.truncate(used);
    Ok(buf)
}

/// Fills `buf` from `offset` as far as the file goes; returns how much it read.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        match file.read_at(rest, offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Appends a message with the room's next seq and returns that seq. The caller holds the
/// exclusive lock (see [`LogFile::exclusive`]). A torn tail is cut first; with `sync`, the
/// record is on disk before this returns. On any error nothing new stays in the file.
///
/// # Errors
/// The file cannot be read, written or synced, or is not a room file.
pub fn append(file: &File, ts_ms: u64, user: &str, text: &str, sync: bool) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let tail = if len < MAGIC_LEN {
        file.set_len(0)?;
        file.write_all_at(&MAGIC, 0)?;
        Tail::EMPTY
    } else {
        let tail = tail(file)?;
        if tail.end < len {
            log::warn!(
                "fork log: cutting {} bytes of an unfinished append after seq {}",
                len - tail.end,
                tail.head
            );
            file.set_len(tail.end)?;
        }
        tail
    };
    let seq = tail.head + 1;
    let mut bytes = Vec::with_capacity(FRAMING + BODY_FIXED + user.len() + text.len());
    let record = Record {
        seq,
        ts_ms,
        user,
        text,
    };
    encode(&record, &mut bytes);
    let written = file
        .write_all_at(&bytes, tail.end)
        .and_then(|()| if sync { file.sync_data() } else { Ok(()) });
    if let Err(e) = written {
        // Not stored: take it back, so that no reader shows what was never acknowledged.
        let _ = file.set_len(tail.end);
        return Err(e);
    }
    Ok(seq)
}

/// A room file and the locking around it. The lock is `flock`'s, on this process's own open
/// of the file, so it excludes the other processes of the driver, whatever they inherited.
#[derive(Debug)]
pub struct LogFile {
    /// Always `Some`, except after an unlock failed (then the process ends, see `locked`).
    file: Option<File>,
}

impl LogFile {
    pub fn new(file: File) -> LogFile {
        LogFile { file: Some(file) }
    }

    /// The file's length now, without a lock: a reader that is already there has nothing new
    /// to read, and skips the lock.
    ///
    /// # Errors
    /// The file cannot be looked at.
    pub fn size(&self) -> io::Result<u64> {
        Ok(self.get()?.metadata()?.len())
    }

    /// Runs `f` with the file under a shared lock (readers).
    ///
    /// # Errors
    /// The lock cannot be taken or released, or `f` failed.
    pub fn shared<R>(&mut self, f: impl FnOnce(&File) -> io::Result<R>) -> io::Result<R> {
        self.locked(FlockArg::LockShared, f)
    }

    /// Runs `f` with the file under the exclusive lock (writers).
    ///
    /// # Errors
    /// As [`LogFile::shared`].
    pub fn exclusive<R>(&mut self, f: impl FnOnce(&File) -> io::Result<R>) -> io::Result<R> {
        self.locked(FlockArg::LockExclusive, f)
    }

    fn get(&self) -> io::Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("the room file was lost to a failed unlock"))
    }

    fn locked<R>(
        &mut self,
        arg: FlockArg,
        f: impl FnOnce(&File) -> io::Result<R>,
    ) -> io::Result<R> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("the room file was lost to a failed unlock"))?;
        let locked = match Flock::lock(file, arg) {
            Ok(locked) => locked,
            Err((file, errno)) => {
                self.file = Some(file);
                return Err(io::Error::from(errno));
            }
        };
        let result = f(&locked);
        match locked.unlock() {
            Ok(file) => {
                self.file = Some(file);
                result
            }
            Err((locked, errno)) => {
                // Dropping it would try to unlock again and panic on failure. Kept, the lock
                // lasts until this process ends, which this error brings about.
                std::mem::forget(locked);
                Err(io::Error::other(format!(
                    "cannot unlock a room file: {errno}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests;
