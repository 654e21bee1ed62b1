//! The data directory: where everything chatd keeps on disk lives.
//!
//! It makes nothing that names the message history: the epoch belongs to the log (see
//! `crate::store::epoch`), so that `chatd user add` on a template directory, or a directory
//! whose log was deleted, never hands one epoch to two histories. An older chatd kept the
//! epoch here, in `epoch`; [`DataDir::legacy_epoch`] reads that file so that an existing store
//! keeps its epoch on upgrade, and this module never writes or replaces it. It also owns
//! [`write_atomic`], the one way chatd rewrites a small file, so that a crash leaves either the
//! old contents or the new, never half of either.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Name of the epoch file an older chatd kept inside the data directory.
const EPOCH_FILE: &str = "epoch";
/// Name of the users file inside the data directory (see `crate::auth`).
const USERS_FILE: &str = "users";
/// The private rooms and who may use each (`chatd room`), watched like the users file.
const ACCESS_FILE: &str = "private-rooms";
/// The epoch file is 16 hex digits and a newline; reading one byte more is enough to tell a
/// longer file is wrong without reading all of it.
const EPOCH_FILE_LEN: usize = 17;

/// The exclusive hold on a data directory; released when dropped.
#[derive(Debug)]
pub struct DirLock {
    _lock: nix::fcntl::Flock<File>,
}

/// An open data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
}

impl DataDir {
    /// Opens the data directory, creating it (mode 0700, parents too) on first use.
    ///
    /// A directory that already exists is used as it is; its mode is left alone.
    ///
    /// # Errors
    ///
    /// An error names the path it concerns: the directory cannot be created, or its new entry
    /// cannot be synced.
    pub fn open(path: &Path) -> io::Result<DataDir> {
        let existed = path.is_dir();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| with_path(e, "cannot create data directory", path))?;
        if !existed {
            // Make the new directory's own entry durable, or a crash could lose the whole
            // store after a client was told something was stored in it.
            let parent = parent_dir(path);
            File::open(parent)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| with_path(e, "cannot sync directory", parent))?;
        }
        Ok(DataDir {
            path: path.to_path_buf(),
        })
    }

    /// The directory, as it was given to [`DataDir::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The epoch an older chatd kept in `<dir>/epoch`, if that file exists; only for a log
    /// that has no epoch of its own yet (see `crate::store::epoch`).
    ///
    /// # Errors
    /// The file cannot be read, or is not 16 lowercase hex digits (not all zero) and a newline
    /// ([`io::ErrorKind::InvalidData`], naming the file, which is left as it is).
    pub fn legacy_epoch(&self) -> io::Result<Option<u64>> {
        read_epoch(&self.path.join(EPOCH_FILE))
    }

    /// Where the users file lives: `<dir>/users`.
    /// Takes the directory for this process alone: one daemon (or `chatd log repair`) per
    /// data directory. Held until the returned lock is dropped; the kernel releases it if the
    /// process dies.
    ///
    /// # Errors
    /// Another process holds it (`WouldBlock`, with a message naming the directory), or the
    /// lock file cannot be opened.
    pub fn lock(&self) -> io::Result<DirLock> {
        let path = self.path.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
            })?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(DirLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "data directory {} is in use by another chatd (it holds {})",
                    self.path.display(),
                    path.display()
                ),
            )),
            Err((_, errno)) => Err(io::Error::new(
                io::Error::from(errno).kind(),
                format!("cannot lock {}: {errno}", path.display()),
            )),
        }
    }

    pub fn users_path(&self) -> PathBuf {
        self.path.join(USERS_FILE)
    }

    pub fn access_path(&self) -> PathBuf {
        self.path.join(ACCESS_FILE)
    }
}

/// Reads the epoch file; `None` when there is none yet.
fn read_epoch(path: &Path) -> io::Result<Option<u64>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(with_path(e, "cannot read epoch file", path)),
    };
    let mut bytes = Vec::with_capacity(EPOCH_FILE_LEN + 1);
    file.take(EPOCH_FILE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| with_path(e, "cannot read epoch file", path))?;
    match parse_epoch(&bytes) {
        Some(epoch) => Ok(Some(epoch)),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "epoch file {} is corrupt: expected 16 lowercase hex digits (not all zero) and \
                 a newline; it is left as it is, restore it from a backup",
                path.display()
            ),
        )),
    }
}

/// Parses `16 lowercase hex digits + "\n"`; zero is not an epoch.
fn parse_epoch(bytes: &[u8]) -> Option<u64> {
    let digits = bytes.strip_suffix(b"\n")?;
    // from_str_radix alone would also take a sign and upper case; the format has one spelling.
    if digits.len() != 16
        || !digits
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let text = std::str::from_utf8(digits).ok()?;
    u64::from_str_radix(text, 16)
        .ok()
        .filter(|&epoch| epoch != 0)
}

/// Replaces `path` with `contents` so that a reader or a crash sees the old file or the new one,
/// never a mix: the bytes go to a temporary file in the same directory (created with `mode`),
/// which is fsynced, renamed over `path`, and then the directory is fsynced so that the rename
/// itself survives a crash. Every call gives `path` a new inode.
///
/// # Errors
///
/// Any I/O error, as it came; the caller adds which file it was writing. The temporary file is
/// removed on failure.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent_dir(path);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = write_and_rename(&tmp, path, contents, mode);
    if result.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = fs::remove_file(&tmp);
    }
    result?;
    File::open(dir)?.sync_all()
}

fn write_and_rename(tmp: &Path, path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    // A temporary file left by an earlier crash may carry this same pid; remove it, so that
    // `create_new` makes a file of our own with the mode given here.
    match fs::remove_file(tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(tmp, path)
}

/// The directory holding `path`; a bare file name lives in the current directory.
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Puts what was being done, and to which path, in front of an I/O error; the kind is kept.
fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    }

    #[test]
    fn opening_mints_no_epoch() -> io::Result<()> {
        // `chatd user add` opens the directory: nothing it writes may decide the epoch.
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("data");
        let dir = DataDir::open(&path)?;
        assert_eq!(dir.legacy_epoch()?, None);
        assert_eq!(fs::read_dir(&path)?.count(), 0, "the directory stays empty");
        Ok(())
    }

    #[test]
    fn a_legacy_epoch_file_is_read_as_it_is() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        fs::write(tmp.path().join(EPOCH_FILE), "00000000c0ffee01\n")?;
        let dir = DataDir::open(tmp.path())?;
        assert_eq!(dir.legacy_epoch()?, Some(0xc0ff_ee01));
        Ok(())
    }

    #[test]
    fn corrupt_epoch_is_an_error_naming_the_file_and_is_kept() -> io::Result<()> {
        for corrupt in [
            "garbage\n",
            "0000000000000000\n",
            "00000000000000ff",
            "00000000000000FF\n",
            "+0000000000000ff\n",
            "00000000000000ff\nmore",
            "",
        ] {
            let tmp = tempfile::tempdir()?;
            let epoch_path = tmp.path().join(EPOCH_FILE);
            fs::write(&epoch_path, corrupt)?;
            let err = DataDir::open(tmp.path())?.legacy_epoch().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{corrupt:?}");
            assert!(
                err.to_string().contains(&epoch_path.display().to_string()),
                "{err}"
            );
            assert_eq!(fs::read_to_string(&epoch_path)?, corrupt);
        }
        Ok(())
    }

    #[test]
    fn directory_and_parents_are_created_with_mode_0700() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("a").join("data");
        let dir = DataDir::open(&path)?;
        assert_eq!(dir.path(), path);
        assert_eq!(mode_of(&path), 0o700);
        assert_eq!(mode_of(&tmp.path().join("a")), 0o700);
        assert_eq!(dir.users_path(), path.join("users"));
        Ok(())
    }

    #[test]
    fn open_error_names_the_directory() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let file = tmp.path().join("file");
        fs::write(&file, "")?;
        let path = file.join("data");
        let err = DataDir::open(&path).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("cannot create data directory "),
            "{message}"
        );
        assert!(message.contains(&path.display().to_string()), "{message}");
        Ok(())
    }

    #[test]
    fn write_atomic_replaces_the_file_with_a_new_inode_and_leaves_no_temp() -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("f");
        write_atomic(&path, b"one", 0o600)?;
        let before = fs::metadata(&path)?.ino();
        write_atomic(&path, b"two", 0o600)?;
        assert_eq!(fs::read(&path)?, b"two");
        assert_ne!(fs::metadata(&path)?.ino(), before);
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(fs::read_dir(tmp.path())?.count(), 1);
        Ok(())
    }

    #[test]
    fn write_atomic_failure_keeps_the_old_file() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        // Renaming a file over a non-empty directory fails after the temp file is written.
        let path = tmp.path().join("d");
        fs::create_dir(&path)?;
        fs::write(path.join("inside"), "kept")?;
        assert!(write_atomic(&path, b"new", 0o600).is_err());
        assert_eq!(fs::read_to_string(path.join("inside"))?, "kept");
        assert_eq!(fs::read_dir(tmp.path())?.count(), 1);
        Ok(())
    }

    #[test]
    fn parent_of_a_bare_name_is_the_current_directory() {
        assert_eq!(parent_dir(Path::new("users")), Path::new("."));
        assert_eq!(parent_dir(Path::new("d/users")), Path::new("d"));
    }
}
