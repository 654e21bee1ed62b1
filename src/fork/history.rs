//! The fork driver's own history, in `DATA_DIR/fork`, apart from the real message log: one
//! room file per room in `rooms/` (see [`super::log`]), the `epoch` that names this history
//! in WELCOME, and `rooms.lock`, under which a room is created so that `--max-rooms` holds.
//!
//! A room file is named after its room with every byte outside `[A-Za-z0-9_-]` written as
//! `%XX`, so that no room name (`.`, `..`, `#general`) can become a path of its own. The epoch
//! is minted anew whenever the daemon starts on a history that holds no message, as the real
//! store's is, and kept otherwise. This module must never be used by the real driver's log,
//! nor that log by it: the two histories do not know of each other.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::log::{self as roomlog, LogFile};
use crate::datadir::write_atomic;

/// The folder inside the data directory.
pub const DIR: &str = "fork";
const ROOMS: &str = "rooms";
const EPOCH: &str = "epoch";
const ROOMS_LOCK: &str = "rooms.lock";
const SUFFIX: &str = ".log";

/// Why a room could not be opened for a JOIN.
#[derive(Debug)]
pub enum Refusal {
    /// `--max-rooms` rooms exist and this would be a new one.
    TooMany,
    Io(io::Error),
}

/// Where the fork driver's history lives; cheap to clone into every process.
#[derive(Debug, Clone)]
pub struct History {
    dir: PathBuf,
    rooms: PathBuf,
    /// `--fsync always`: a new room's directory entry is synced before its first message.
    sync: bool,
}

impl History {
    /// Opens (creating) `DATA_DIR/fork`, cuts any torn tail a killed writer left, and returns
    /// the history with its epoch. Call it with the data directory locked and no pair running.
    ///
    /// # Errors
    /// A file or folder cannot be created, read or written; a room file is damaged (named);
    /// the epoch file is corrupt (named, and left as it is).
    pub fn open(data_dir: &Path, sync: bool) -> io::Result<(History, u64)> {
        let dir = data_dir.join(DIR);
        let rooms = dir.join(ROOMS);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&rooms)
            .map_err(|e| named(e, "cannot create", &rooms))?;
        let history = History { dir, rooms, sync };
        let mut messages = 0;
        for path in history.room_files()? {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| named(e, "cannot open", &path))?;
            messages += repair(file).map_err(|e| named(e, "cannot recover", &path))?;
        }
        let epoch_path = history.dir.join(EPOCH);
        let kept = match read_epoch(&epoch_path)? {
            Some(epoch) if messages > 0 => Some(epoch),
            Some(_) => None,
            None if messages > 0 => {
                log::warn!(
                    "fork: {} is missing; a new epoch is minted, so clients start over",
                    epoch_path.display()
                );
                None
            }
            None => None,
        };
        let epoch = match kept {
            Some(epoch) => epoch,
            None => {
                if messages == 0 {
                    // A new history starts with no rooms, as a new log does.
                    for path in history.room_files()? {
                        fs::remove_file(&path).map_err(|e| named(e, "cannot remove", &path))?;
                    }
                }
                let epoch = crate::store::epoch::mint()?;
                write_atomic(&epoch_path, format!("{epoch:016x}\n").as_bytes(), 0o600)
                    .map_err(|e| named(e, "cannot write", &epoch_path))?;
                epoch
            }
        };
        Ok((history, epoch))
    }

    /// The file of `room` (a valid room name).
    pub fn path_of(&self, room: &str) -> PathBuf {
        self.rooms.join(file_name(room))
    }

    /// Opens `room`'s file for reading; a reader process created it before its JOIN reached
    /// the sender.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open_for_reading(&self, room: &str) -> io::Result<LogFile> {
        Ok(LogFile::new(File::open(self.path_of(room))?))
    }

    /// Opens `room`'s file for appending, creating the room if `max_rooms` allows one more.
    ///
    /// # Errors
    /// [`Refusal::TooMany`] past `max_rooms`; [`Refusal::Io`] if a file cannot be opened,
    /// created or synced.
    pub fn open_for_writing(&self, room: &str, max_rooms: usize) -> Result<LogFile, Refusal> {
        let path = self.path_of(room);
        let open = || OpenOptions::new().read(true).write(true).open(&path);
        match open() {
            Ok(file) => return Ok(LogFile::new(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Refusal::Io(e)),
        }
        // Counting and creating under one lock: two readers creating rooms at once cannot
        // both take the last place.
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.dir.join(ROOMS_LOCK))
            .map_err(Refusal::Io)?;
        let _held = Flock::lock(lock, FlockArg::LockExclusive)
            .map_err(|(_, errno)| Refusal::Io(errno.into()))?;
        match open() {
            Ok(file) => return Ok(LogFile::new(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Refusal::Io(e)),
        }
        if self.room_files().map_err(Refusal::Io)?.len() >= max_rooms {
            return Err(Refusal::TooMany);
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(Refusal::Io)?;
        if self.sync {
            File::open(&self.rooms)
                .and_then(|dir| dir.sync_all())
                .map_err(Refusal::Io)?;
        }
        Ok(LogFile::new(file))
    }

    /// Every room file.
    fn room_files(&self) -> io::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.rooms).map_err(|e| named(e, "cannot list", &self.rooms))? {
            let path = entry?.path();
            if path.extension().is_some_and(|ext| ext == "log") {
                files.push(path);
            }
        }
        Ok(files)
    }
}

/// Cuts a torn tail off a room file and returns how many messages it holds.
fn repair(file: File) -> io::Result<u64> {
    let mut file = LogFile::new(file);
    file.exclusive(|f| {
        let tail = roomlog::tail(f)?;
        let len = f.metadata()?.len();
        if tail.end < len && len > roomlog::MAGIC.len() as u64 {
            log::warn!(
                "fork: cutting {} bytes of an unfinished append after seq {}",
                len - tail.end,
                tail.head
            );
            f.set_len(tail.end)?;
        }
        Ok(tail.head)
    })
}

/// `room`'s file name: `[A-Za-z0-9_-]` kept, every other byte as `%XX`, then `.log`.
pub fn file_name(room: &str) -> String {
    let mut name = String::with_capacity(room.len() * 3 + SUFFIX.len());
    for b in room.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name.push_str(SUFFIX);
    name
}

/// The epoch file: 16 lowercase hex digits (not all zero) and a newline. `None`: no file.
fn read_epoch(path: &Path) -> io::Result<Option<u64>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(named(e, "cannot read", path)),
    };
    let mut text = String::new();
    file.take(18)
        .read_to_string(&mut text)
        .map_err(|e| named(e, "cannot read", path))?;
    let digits = text.strip_suffix('\n').filter(|d| {
        d.len() == 16
            && d.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    match digits.and_then(|d| u64::from_str_radix(d, 16).ok()) {
        Some(epoch) if epoch != 0 => Ok(Some(epoch)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is corrupt: expected 16 lowercase hex digits and a newline; it is left as \
                 it is (delete {} to start the fork driver's history over)",
                path.display(),
                path.parent().unwrap_or(path).display()
            ),
        )),
    }
}

fn named(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_become_plain_file_names() {
        assert_eq!(file_name("#general"), "%23general.log");
        assert_eq!(file_name("."), "%2E.log");
        assert_eq!(file_name(".."), "%2E%2E.log");
        assert_eq!(file_name("a-b_c9"), "a-b_c9.log");
    }

    #[test]
    fn the_epoch_survives_a_reopen_while_history_holds_a_message() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let (history, first) = History::open(dir.path(), false)?;
        let (_, second) = History::open(dir.path(), false)?;
        assert_ne!(first, second, "no message yet: each start is a new history");

        let Ok(mut room) = history.open_for_writing("#a", 10) else {
            panic!("cannot create #a");
        };
        room.exclusive(|f| roomlog::append(f, 1, "ann", "hi", false))?;
        let (_, epoch) = History::open(dir.path(), false)?;
        let (_, kept) = History::open(dir.path(), false)?;
        assert_eq!(kept, epoch, "a history with a message keeps its epoch");
        Ok(())
    }

    #[test]
    fn max_rooms_counts_room_files() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let (history, _) = History::open(dir.path(), false)?;
        assert!(history.open_for_writing("#a", 2).is_ok());
        assert!(history.open_for_writing("#b", 2).is_ok());
        assert!(
            history.open_for_writing("#a", 2).is_ok(),
            "an existing room"
        );
        assert!(matches!(
            history.open_for_writing("#c", 2),
            Err(Refusal::TooMany)
        ));
        Ok(())
    }

    #[test]
    fn a_corrupt_epoch_file_is_an_error_naming_it() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let (history, _) = History::open(dir.path(), false)?;
        if let Ok(mut room) = history.open_for_writing("#a", 10) {
            room.exclusive(|f| roomlog::append(f, 1, "ann", "hi", false))?;
        }
        let epoch = dir.path().join(DIR).join(EPOCH);
        fs::write(&epoch, "not hex\n")?;
        let err = History::open(dir.path(), false).expect_err("corrupt epoch");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("epoch"), "{err}");
        assert_eq!(fs::read_to_string(&epoch)?, "not hex\n", "left as it is");
        Ok(())
    }
}
