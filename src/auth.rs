//! Users and their tokens: the users file, checking a HELLO against it, and the admin commands
//! that change it.
//!
//! The users file holds one `NAME SHA256HEX` line per user, the SHA-256 of the user's token in
//! 64 lowercase hex digits. This module must never store or log a token, and must never let the
//! time a check takes reveal whether a user exists. The daemon notices edits to the file on the
//! next HELLO, without a restart; a file that no longer parses is logged and ignored, keeping the
//! last good table, never half-loaded.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::datadir::write_atomic;
use crate::protocol::name::is_valid_user;

/// SHA-256 of a token.
type Digest = [u8; 32];

/// Random bytes in a fresh token; it is handed out hex-encoded, as 64 characters.
const TOKEN_BYTES: usize = 32;
/// The users file is readable by the daemon's user only: digests are not tokens, but there is
/// no reason to let anyone else try to guess them offline.
const USERS_MODE: u32 = 0o600;
/// Compared against when the user is unknown, so that an unknown user costs the same hash and
/// comparison as a known one. Its value never matters: the result is masked by "user known".
const DUMMY_DIGEST: Digest = [0; 32];

/// Written at the top of a new users file.
const HEADER: &str = "\
# chatd users: one user per line, as NAME SHA256HEX, where SHA256HEX is the SHA-256 of the
# user's token in 64 lowercase hex digits. Tokens themselves are never stored.
# Manage with `chatd user add|remove|list`; a running daemon rereads this file when it changes.
# Lines starting with '#' and blank lines are ignored.
";

/// Who may connect: the users file as last loaded, shared by every reactor thread.
pub struct Users {
    path: PathBuf,
    state: Mutex<State>,
}

struct State {
    table: HashMap<String, Digest>,
    /// The file as it was at the last load attempt (`None`: there was no file). A malformed
    /// file's stamp is kept too, so that it is not parsed and warned about again on every HELLO.
    stamp: Option<Stamp>,
}

/// What tells one version of the users file from another. Every admin write renames a new file
/// into place, so the inode alone would do for those; size and mtime catch edits in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

impl Users {
    /// Loads the users file at `path`. A missing file means no users yet.
    ///
    /// # Errors
    ///
    /// The file cannot be read, or a line is malformed (the message names the file and line,
    /// with kind [`io::ErrorKind::InvalidData`]).
    pub fn open(path: PathBuf) -> io::Result<Users> {
        let (table, stamp) = match read(&path)? {
            Some((text, stamp)) => (table_of(&parse(&path, &text)?), Some(stamp)),
            None => (HashMap::new(), None),
        };
        Ok(Users {
            path,
            state: Mutex::new(State { table, stamp }),
        })
    }

    /// Whether `token` is `user`'s token.
    ///
    /// First rereads the users file if it changed since the last load, so that users added or
    /// removed take effect on the next HELLO. A file that cannot be reread is logged as a
    /// warning and the last good table is used.
    pub fn verify(&self, user: &str, token: &str) -> bool {
        // Hashed before taking the lock: other reactors' HELLOs need not wait for it.
        let presented = digest(token.as_bytes());
        let stored = {
            let mut state = self.lock();
            self.refresh(&mut state);
            state.table.get(user).copied()
        };
        let (expected, known) = match stored {
            Some(d) => (d, Choice::from(1)),
            None => (DUMMY_DIGEST, Choice::from(0)),
        };
        bool::from(presented.ct_eq(&expected) & known)
    }

    /// Rereads the users file if it changed (SIGHUP does this) and returns how many users
    /// are loaded.
    pub fn reload(&self) -> usize {
        let mut state = self.lock();
        self.refresh(&mut state);
        state.table.len()
    }

    /// How many users are loaded now (the file is not reread).
    pub fn len(&self) -> usize {
        self.lock().table.len()
    }

    /// Whether no user is loaded now (the file is not reread).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The table is only ever replaced whole, so a panic elsewhere cannot leave it half-made.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reloads the table if the file's stamp changed; a stat per HELLO is the price of picking
    /// up edits without a restart or a watcher thread.
    fn refresh(&self, state: &mut State) {
        let now = match fs::metadata(&self.path) {
            Ok(meta) => Some(Stamp::of(&meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                log::warn!(
                    "cannot check users file {}: {e}; keeping the {} users loaded before",
                    self.path.display(),
                    state.table.len()
                );
                return;
            }
        };
        if now == state.stamp {
            return;
        }
        let loaded = read(&self.path).and_then(|file| match file {
            Some((text, stamp)) => Ok((table_of(&parse(&self.path, &text)?), Some(stamp))),
            None => Ok((HashMap::new(), None)),
        });
        match loaded {
            Ok((table, stamp)) => {
                log::info!(
                    "reloaded users file {}: {} users",
                    self.path.display(),
                    table.len()
                );
                state.table = table;
                state.stamp = stamp;
            }
            Err(e) => {
                log::warn!("{e}; keeping the {} users loaded before", state.table.len());
                // A malformed file stays malformed until edited again: remember it so as not to
                // reparse it per HELLO. An I/O error may pass (too many open files), so retry.
                if matches!(e, UserError::Malformed { .. }) {
                    state.stamp = now;
                }
            }
        }
    }
}

impl fmt::Debug for Users {
    // Shows no digests, which have no business in logs, and takes no lock, so that formatting
    // cannot deadlock against a thread holding it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Users")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Why an admin command on the users file failed.
#[derive(Debug)]
pub enum UserError {
    /// The name is not 1–32 bytes of `[A-Za-z0-9._-]`.
    InvalidName(String),
    /// `add` of a user who is already there.
    Exists(String),
    /// `remove` of a user who is not there.
    NotFound(String),
    /// A line of the users file does not parse; `line` counts from 1.
    Malformed {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// The OS gave no random bytes for a token.
    Random(io::Error),
    /// Reading, writing or locking the users file failed.
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names are escaped: one that failed validation may hold anything, newlines included.
        match self {
            UserError::InvalidName(name) => write!(
                f,
                "'{}' is not a valid user name: use 1-32 characters from A-Z a-z 0-9 . _ -",
                name.escape_debug()
            ),
            UserError::Exists(name) => write!(f, "user '{}' already exists", name.escape_debug()),
            UserError::NotFound(name) => write!(f, "no user '{}'", name.escape_debug()),
            UserError::Malformed { path, line, reason } => {
                write!(f, "users file {} line {line}: {reason}", path.display())
            }
            UserError::Random(e) => write!(f, "cannot get random bytes from the OS: {e}"),
            UserError::Io {
                action,
                path,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for UserError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UserError::Random(e) | UserError::Io { source: e, .. } => Some(e),
            _ => None,
        }
    }
}

impl From<UserError> for io::Error {
    fn from(e: UserError) -> io::Error {
        let kind = match &e {
            UserError::Io { source, .. } | UserError::Random(source) => source.kind(),
            UserError::Exists(_) => io::ErrorKind::AlreadyExists,
            UserError::NotFound(_) => io::ErrorKind::NotFound,
            UserError::InvalidName(_) => io::ErrorKind::InvalidInput,
            UserError::Malformed { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// Creates `name` with a fresh token of 32 random bytes from the OS and returns the token,
/// hex-encoded (64 characters). Only its SHA-256 is written to the file at `path`.
///
/// # Errors
///
/// An invalid name, an existing user, a malformed users file (it is left untouched), or I/O.
pub fn add_user(path: &Path, name: &str) -> Result<String, UserError> {
    if !is_valid_user(name) {
        return Err(UserError::InvalidName(name.to_string()));
    }
    let _lock = lock_for_write(path)?;
    let (mut text, entries) = read_entries(path)?;
    if entries.iter().any(|e| e.name == name) {
        return Err(UserError::Exists(name.to_string()));
    }
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| UserError::Random(io::Error::other(e.to_string())))?;
    let token = hex(&bytes);
    if text.trim().is_empty() {
        text = HEADER.to_string();
    } else if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(name);
    text.push(' ');
    text.push_str(&hex(&digest(token.as_bytes())));
    text.push('\n');
    write_users(path, &text)?;
    Ok(token)
}

/// Removes `name` from the users file at `path`; every other line, comments included, stays.
///
/// # Errors
///
/// No such user, a malformed users file (it is left untouched), or I/O.
pub fn remove_user(path: &Path, name: &str) -> Result<(), UserError> {
    let _lock = lock_for_write(path)?;
    let (text, entries) = read_entries(path)?;
    let Some(entry) = entries.iter().find(|e| e.name == name) else {
        return Err(UserError::NotFound(name.to_string()));
    };
    let kept: String = text
        .split_inclusive('\n')
        .enumerate()
        .filter(|&(index, _)| index + 1 != entry.line)
        .map(|(_, line)| line)
        .collect();
    write_users(path, &kept)
}

/// The users in the file at `path`, sorted by name; none if there is no file.
///
/// # Errors
///
/// A malformed users file, or I/O.
pub fn list_users(path: &Path) -> Result<Vec<String>, UserError> {
    let (_, entries) = read_entries(path)?;
    let mut names: Vec<String> = entries.into_iter().map(|e| e.name).collect();
    names.sort();
    Ok(names)
}

/// One user line of the users file.
struct Entry {
    name: String,
    digest: Digest,
    /// Counted from 1, as in error messages.
    line: usize,
}

/// Reads the file and the stamp of the very version read (taken from the open file, so that an
/// edit between the two cannot pair new contents with an old stamp). `None`: there is no file.
fn read(path: &Path) -> Result<Option<(String, Stamp)>, UserError> {
    let io_error = |source| UserError::Io {
        action: "read users file",
        path: path.to_path_buf(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(e)),
    };
    let stamp = Stamp::of(&file.metadata().map_err(io_error)?);
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io_error)?;
    Ok(Some((text, stamp)))
}

/// The file's text (empty if there is no file) and its parsed users.
fn read_entries(path: &Path) -> Result<(String, Vec<Entry>), UserError> {
    let text = read(path)?.map(|(text, _)| text).unwrap_or_default();
    let entries = parse(path, &text)?;
    Ok((text, entries))
}

/// Parses the users file; the first bad line is an error naming it.
fn parse(path: &Path, text: &str) -> Result<Vec<Entry>, UserError> {
    let mut entries = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    // split_inclusive, not lines: remove_user counts lines the same way when it drops one.
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let line = index + 1;
        let malformed = |reason: String| UserError::Malformed {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let mut fields = content.split_ascii_whitespace();
        let (Some(name), Some(hex_digest), None) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed("expected NAME SHA256HEX".to_string()));
        };
        if !is_valid_user(name) {
            return Err(malformed(format!(
                "'{}' is not a valid user name",
                name.escape_debug()
            )));
        }
        let Some(digest) = unhex(hex_digest) else {
            return Err(malformed(format!(
                "the digest of '{name}' is not 64 lowercase hex digits"
            )));
        };
        if let Some(first) = seen.insert(name, line) {
            return Err(malformed(format!(
                "user '{name}' is already listed on line {first}"
            )));
        }
        entries.push(Entry {
            name: name.to_string(),
            digest,
            line,
        });
    }
    Ok(entries)
}

fn table_of(entries: &[Entry]) -> HashMap<String, Digest> {
    entries.iter().map(|e| (e.name.clone(), e.digest)).collect()
}

fn write_users(path: &Path, text: &str) -> Result<(), UserError> {
    write_atomic(path, text.as_bytes(), USERS_MODE).map_err(|source| UserError::Io {
        action: "write users file",
        path: path.to_path_buf(),
        source,
    })
}

/// Serialises admin commands: two `chatd user add` at once would otherwise each rewrite the
/// file from what they read, and one user would be lost. The lock sits on `<users>.lock`, not
/// on the users file, whose inode every write replaces. The daemon only reads and takes no lock.
fn lock_for_write(path: &Path) -> Result<Flock<File>, UserError> {
    let mut lock_path = path.as_os_str().to_os_string();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let io_error = |source| UserError::Io {
        action: "lock",
        path: lock_path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(USERS_MODE)
        .open(&lock_path)
        .map_err(io_error)?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| io_error(errno.into()))
}

fn digest(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Decodes exactly 64 lowercase hex digits.
fn unhex(text: &str) -> Option<Digest> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let mut out = [0u8; 32];
    if text.len() != out.len() * 2 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let [high, low] = pair else { return None };
        *byte = (nibble(*high)? << 4) | nibble(*low)?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn users_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("users")
    }

    #[test]
    fn added_user_verifies_with_its_token_only() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = users_path(&dir);
        let token = add_user(&path, "alice")?;
        assert_eq!(token.len(), 64);
        let users = Users::open(path)?;
        assert_eq!(users.len(), 1);
        assert!(users.verify("alice", &token));
        assert!(!users.verify("alice", "wrong"));
        assert!(!users.verify("alice", ""));
        assert!(!users.verify("bob", &token));
        assert!(!users.verify("", ""));
        Ok(())
    }

    #[test]
    fn tokens_are_fresh_per_user() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = users_path(&dir);
        let a = add_user(&path, "alice")?;
        let b = add_user(&path, "bob")?;
        assert_ne!(a, b);
        let users = Users::open(path)?;
        assert!(!users.verify("alice", &b));
        assert!(users.verify("bob", &b));
        Ok(())
    }

    #[test]
    fn removal_takes_effect_without_reopening() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = users_path(&dir);
        let alice = add_user(&path, "alice")?;
        let bob = add_user(&path, "bob")?;
        let users = Users::open(path.clone())?;
        assert!(users.verify("alice", &alice));
        remove_user(&path, "alice")?;
        assert!(!users.verify("alice", &alice));
        assert!(users.verify("bob", &bob));
        assert_eq!(users.len(), 1);
        Ok(())
    }

    #[test]
    fn user_added_after_open_is_accepted() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = users_path(&dir);
        let users = Users::open(path.clone())?;
        assert!(users.is_empty());
        let token = add_user(&path, "carol")?;
        assert!(users.verify("carol", &token));
        assert_eq!(users.len(), 1);
        Ok(())
    }

    #[test]
    fn missing_file_means_no_users() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = users_path(&dir);
        let users = Users::open(path.clone())?;
        assert_eq!(users.len(), 0);
        assert!(!users.verify("alice", "x"));
        assert!(list_users(&path)?.is_empty());
        Ok(())
    }

    #[test]
    fn users_file_is_private_and_holds_no_token() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = users_path(&dir);
        let token = add_user(&path, "alice")?;
        assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        let text = fs::read_to_string(&path)?;
        assert!(!text.contains(&token));
        assert!(text.starts_with(HEADER));
        assert!(text.ends_with(&format!("alice {}\n", hex(&digest(token.as_bytes())))));
        Ok(())
    }

    #[test]
    fn malformed_line_is_an_error_naming_file_and_line() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = users_path(&dir);
        let good = hex(&digest(b"t"));
        for (bad, reason) in [
            ("alice".to_string(), "expected NAME SHA256HEX"),
            (format!("alice {good} extra"), "expected NAME SHA256HEX"),
            (format!("al/ice {good}"), "not a valid user name"),
            ("alice 1234".to_string(), "not 64 lowercase hex digits"),
            (format!("alice {}", good.to_uppercase()), "not 64 lowercase"),
            (format!("bob {good}"), "already listed on line 3"),
        ] {
            fs::write(&path, format!("# comment\n\nbob {good}\n{bad}\n"))?;
            let err = Users::open(path.clone()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            let message = err.to_string();
            assert!(
                message.contains(&format!("{} line 4: ", path.display())),
                "{message}"
            );
            assert!(message.contains(reason), "{message}");
            assert!(matches!(
                list_users(&path),
                Err(UserError::Malformed { line: 4, .. })
            ));
        }
        Ok(())
    }

    #[test]
    fn failed_reload_keeps_last_good_table() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = users_path(&dir);
        let token = add_user(&path, "alice")?;
        let users = Users::open(path.clone())?;
        let good = fs::read_to_string(&path)?;
        fs::write(&path, format!("{good}this line is broken\n"))?;
        assert!(users.verify("alice", &token));
        assert_eq!(users.len(), 1);
        // Once the file is mended, its new contents are loaded.
        fs::write(&path, "# nobody\n")?;
        assert!(!users.verify("alice", &token));
        assert_eq!(users.len(), 0);
        Ok(())
    }

    #[test]
    fn malformed_file_is_not_reparsed_until_it_changes() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = users_path(&dir);
        let users = Users::open(path.clone())?;
        fs::write(&path, "broken\n")?;
        assert!(!users.verify("alice", "x"));
        let seen = Some(Stamp::of(&fs::metadata(&path)?));
        assert_eq!(users.lock().stamp, seen);
        Ok(())
    }

    #[test]
    fn add_refuses_existing_and_invalid_names() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = users_path(&dir);
        add_user(&path, "bob")?;
        let before = fs::read(&path)?;
        let exists = add_user(&path, "bob").unwrap_err();
        assert_eq!(exists.to_string(), "user 'bob' already exists");
        let invalid = add_user(&path, "b b").unwrap_err();
        assert_eq!(
            invalid.to_string(),
            "'b b' is not a valid user name: use 1-32 characters from A-Z a-z 0-9 . _ -"
        );
        assert!(add_user(&path, &"x".repeat(33)).is_err());
        assert!(add_user(&path, "").is_err());
        assert_eq!(fs::read(&path)?, before);
        Ok(())
    }

    #[test]
    fn remove_of_unknown_user_is_an_error() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = users_path(&dir);
        let err = remove_user(&path, "carol").unwrap_err();
        assert_eq!(err.to_string(), "no user 'carol'");
        assert!(!path.exists());
        Ok(())
    }

    #[test]
    fn remove_keeps_other_lines_and_comments() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = users_path(&dir);
        let d = hex(&digest(b"t"));
        fs::write(&path, format!("# mine\na {d}\n\n# b is ops\nb {d}\nc {d}"))?;
        remove_user(&path, "b")?;
        assert_eq!(
            fs::read_to_string(&path)?,
            format!("# mine\na {d}\n\n# b is ops\nc {d}")
        );
        // An add after a last line without a newline starts a line of its own.
        add_user(&path, "e")?;
        assert_eq!(list_users(&path)?, ["a", "c", "e"]);
        Ok(())
    }

    #[test]
    fn list_is_sorted() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = users_path(&dir);
        for name in ["mallory", "alice", "Zed", "bob"] {
            add_user(&path, name)?;
        }
        assert_eq!(list_users(&path)?, ["Zed", "alice", "bob", "mallory"]);
        Ok(())
    }

    #[test]
    fn io_errors_name_the_path() -> TestResult {
        let dir = tempfile::tempdir()?;
        // A directory where the users file should be cannot be read as one.
        let path = users_path(&dir);
        fs::create_dir(&path)?;
        let err = list_users(&path).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read users file {}: ", path.display())),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());
        Ok(())
    }

    #[test]
    fn hex_round_trips_and_rejects_bad_digits() {
        let d = digest(b"abc");
        let text = hex(&d);
        assert_eq!(
            text,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(unhex(&text), Some(d));
        assert_eq!(unhex(&text[..62]), None);
        assert_eq!(unhex(&format!("{}g", &text[..63])), None);
        assert_eq!(unhex(&format!("{}é", &text[..62])), None);
    }

    #[test]
    fn users_is_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Users>();
    }
}
