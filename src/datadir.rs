//! The data directory: where everything chatd keeps on disk lives, and the epoch that names it.
//!
//! The epoch is a random non-zero id chosen once, when the directory is created, and sent in
//! every WELCOME so that a client can tell one message store from another. This module must
//! never replace an epoch that exists: an epoch file that does not parse is an error for the
//! operator to look at, because a silently new epoch would make every client start over. It
//! also owns [`write_atomic`], the one way chatd rewrites a small file, so that a crash leaves
//! either the old contents or the new, never half of either.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Name of the epoch file inside the data directory.
const EPOCH_FILE: &str = "epoch";
/// Name of the users file inside the data directory (see `crate::auth`).
const USERS_FILE: &str = "users";
/// The epoch file is 16 hex digits and a newline; reading one byte more is enough to tell a
/// longer file is wrong without reading all of it.
const EPOCH_FILE_LEN: usize = 17;

/// The exclusive hold on a data directory; released when dropped.
#[derive(Debug)]
pub struct DirLock {
    _lock: nix::fcntl::Flock<File>,
}

/// An open data directory and the epoch it holds.
#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
    epoch: u64,
}

impl DataDir {
    /// Opens the data directory, creating it (mode 0700, parents too) and its epoch on first use.
    ///
    /// A directory that already exists is used as it is; its mode is left alone.
    ///
    /// # Errors
    ///
    /// An error names the path it concerns: the directory cannot be created, or the epoch file
    /// cannot be read or written. An epoch file that is not 16 lowercase hex digits and a
    /// newline, or that holds zero, is an [`io::ErrorKind::InvalidData`] error; it is left as it
    /// is.
    pub fn open(path: &Path) -> io::Result<DataDir> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| with_path(e, "cannot create data directory", path))?;
        let epoch_path = path.join(EPOCH_FILE);
        let epoch = match read_epoch(&epoch_path)? {
            Some(epoch) => epoch,
            None => {
                let epoch = create_epoch(&epoch_path)?;
                // The directory may be new too: make its own entry durable, or a crash could
                // lose the whole store (and its fsynced epoch) after a client saw the epoch.
                let parent = parent_dir(path);
                File::open(parent)
                    .and_then(|dir| dir.sync_all())
                    .map_err(|e| with_path(e, "cannot sync directory", parent))?;
                epoch
            }
        };
        Ok(DataDir {
            path: path.to_path_buf(),
            epoch,
        })
    }

    /// The directory, as it was given to [`DataDir::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The random non-zero id fixed when the directory was created.
    pub fn epoch(&self) -> u64 {
        self.epoch
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

/// Chooses a fresh epoch and publishes it.
fn create_epoch(path: &Path) -> io::Result<u64> {
    let epoch = random_epoch()?;
    write_atomic(path, format!("{epoch:016x}\n").as_bytes(), 0o600)
        .map_err(|e| with_path(e, "cannot write epoch file", path))?;
    Ok(epoch)
}

fn random_epoch() -> io::Result<u64> {
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
    fn epoch_is_nonzero_and_stable_across_reopen() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let first = DataDir::open(tmp.path())?;
        assert_ne!(first.epoch(), 0);
        let again = DataDir::open(tmp.path())?;
        assert_eq!(again.epoch(), first.epoch());
        Ok(())
    }

    #[test]
    fn epoch_file_is_sixteen_lowercase_hex_digits_and_a_newline() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = DataDir::open(tmp.path())?;
        let text = fs::read_to_string(tmp.path().join(EPOCH_FILE))?;
        assert_eq!(text, format!("{:016x}\n", dir.epoch()));
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
            let err = DataDir::open(tmp.path()).unwrap_err();
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
