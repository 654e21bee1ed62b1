//! A small text file that admin commands rewrite and a daemon thread watches (the users file,
//! the private-rooms file): the stamp that tells one version from the next, reading the file
//! whole together with the stamp of the very version read, and the lock that serialises the
//! admin commands that rewrite it.
//!
//! Only watcher threads and admin processes come here; a reactor never does, since everything
//! here touches the disk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// What tells one version of a watched file from another. Every admin write renames a new file
/// into place, so the inode alone would do for those; size and mtime catch edits in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    pub fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }

    /// The stamp of the file at `path` now; `None` if there is no file.
    ///
    /// # Errors
    ///
    /// The file exists but cannot be looked at.
    pub fn at(path: &Path) -> io::Result<Option<Stamp>> {
        match fs::metadata(path) {
            Ok(meta) => Ok(Some(Stamp::of(&meta))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Reads the file and the stamp of the very version read (taken from the open file, so that an
/// edit between the two cannot pair new contents with an old stamp). `None`: there is no file.
///
/// # Errors
///
/// The file exists but cannot be read, or is not UTF-8.
pub fn read_stamped(path: &Path) -> io::Result<Option<(String, Stamp)>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let stamp = Stamp::of(&file.metadata()?);
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(Some((text, stamp)))
}

/// Takes the lock that serialises admin commands on the file at `path`: two at once would
/// otherwise each rewrite the file from what they read, and one change would be lost. The lock
/// sits on `<path>.lock`, not on the file, whose inode every write replaces; the daemon only
/// reads and takes no lock. Returns the lock file's path with any error, for the message.
///
/// # Errors
///
/// The lock file cannot be created or locked.
pub fn lock_for_write(path: &Path, mode: u32) -> Result<Flock<File>, (PathBuf, io::Error)> {
    let mut lock_path = path.as_os_str().to_os_string();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = match OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .open(&lock_path)
    {
        Ok(file) => file,
        Err(e) => return Err((lock_path, e)),
    };
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| (lock_path, errno.into()))
}
