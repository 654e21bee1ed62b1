//! Watching the users file: a thread of its own (never a reactor) checks the file's stamp
//! every [`POLL_EVERY`], and when it changed, reads and parses it and publishes the new
//! [`Table`]. Reactors see the new generation on their next turn, log in against it, and end
//! the sessions of users it removed or whose token it changed.
//!
//! A file that no longer parses is logged and ignored, keeping the last good table, never
//! half-loaded. This module must never be called from a reactor thread: it does disk I/O.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::file::{parse, read};
use super::{Table, UserError, Users};
use crate::watched::Stamp;

/// How often the watcher looks at the users file: a removed user's sessions end within about
/// this long, and a `stat` four times a second costs nothing.
pub const POLL_EVERY: Duration = Duration::from_millis(250);

/// The users file as last loaded.
#[derive(Debug)]
pub struct Watch {
    path: PathBuf,
    /// The file as it was at the last load attempt (`None`: there was no file). A malformed
    /// file's stamp is kept too, so that it is not parsed and warned about again every poll.
    seen: Option<Stamp>,
}

impl Watch {
    /// Loads the users file at `path`. A missing file means no users yet.
    ///
    /// # Errors
    ///
    /// The file cannot be read, or a line is malformed (the message names the file and line,
    /// with kind [`io::ErrorKind::InvalidData`]).
    pub fn open(path: PathBuf) -> io::Result<(Watch, Table)> {
        let (table, seen) = load(&path)?;
        Ok((Watch { path, seen }, table))
    }

    /// Rereads the users file if it changed since the last look, and publishes the new table
    /// to `users`. Returns the number of users published, if a new table was. A file that
    /// cannot be reread is logged as a warning and the last good table stays.
    pub fn poll(&mut self, users: &Users) -> Option<usize> {
        let now = match fs::metadata(&self.path) {
            Ok(meta) => Some(Stamp::of(&meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                log::warn!(
                    "cannot check users file {}: {e}; keeping the {} users loaded before",
                    self.path.display(),
                    users.get().len()
                );
                return None;
            }
        };
        if now == self.seen {
            return None;
        }
        match load(&self.path) {
            Ok((table, seen)) => {
                let count = table.len();
                users.publish(table);
                self.seen = seen;
                // Logged once in force: tests and operators may act on this line.
                log::info!("reloaded users file {}: {count} users", self.path.display());
                Some(count)
            }
            Err(e) => {
                log::warn!("{e}; keeping the {} users loaded before", users.get().len());
                // A malformed file stays malformed until edited again: remember it so as not to
                // reparse it every poll. An I/O error may pass (too many open files), so retry.
                if matches!(e, UserError::Malformed { .. }) {
                    self.seen = now;
                }
                None
            }
        }
    }
}

/// The table in the file at `path` and the stamp of the version read.
fn load(path: &std::path::Path) -> Result<(Table, Option<Stamp>), UserError> {
    Ok(match read(path)? {
        Some((text, stamp)) => (Table::from_entries(&parse(path, &text)?), Some(stamp)),
        None => (Table::default(), None),
    })
}

#[cfg(test)]
mod tests {
    use super::super::admin::{add_user, remove_user};
    use super::*;
    use crate::published::Published;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn open(path: &std::path::Path) -> Result<(Watch, Users), io::Error> {
        let (watch, table) = Watch::open(path.to_path_buf())?;
        Ok((watch, Published::new(table)))
    }

    #[test]
    fn logins_are_checked_in_memory_until_the_watcher_sees_the_file_change() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("users");
        let token = add_user(&path, "alice")?;
        let (mut watch, users) = open(&path)?;
        fs::remove_file(&path)?;
        // The table holds no path: a HELLO cannot reach the disk, so the deleted file does not
        // matter until the watcher looks.
        assert!(users.get().verify("alice", &token));
        assert_eq!(watch.poll(&users), Some(0));
        assert!(!users.get().verify("alice", &token));
        Ok(())
    }

    #[test]
    fn removal_and_addition_are_published_with_a_new_generation() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("users");
        let alice = add_user(&path, "alice")?;
        let bob = add_user(&path, "bob")?;
        let (mut watch, users) = open(&path)?;
        assert_eq!(watch.poll(&users), None, "nothing changed");
        let before = users.generation();
        remove_user(&path, "alice")?;
        let carol = add_user(&path, "carol")?;
        assert_eq!(watch.poll(&users), Some(2));
        assert_eq!(users.generation(), before + 1);
        let table = users.get();
        assert!(!table.verify("alice", &alice));
        assert!(table.verify("bob", &bob));
        assert!(table.verify("carol", &carol));
        Ok(())
    }

    #[test]
    fn missing_file_means_no_users() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (mut watch, users) = open(&dir.path().join("users"))?;
        assert!(users.get().is_empty());
        assert_eq!(watch.poll(&users), None);
        Ok(())
    }

    #[test]
    fn failed_reload_keeps_last_good_table() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("users");
        let token = add_user(&path, "alice")?;
        let (mut watch, users) = open(&path)?;
        let good = fs::read_to_string(&path)?;
        fs::write(&path, format!("{good}this line is broken\n"))?;
        assert_eq!(watch.poll(&users), None);
        assert!(users.get().verify("alice", &token));
        // Not parsed again until it changes.
        let seen = Some(Stamp::of(&fs::metadata(&path)?));
        assert_eq!(watch.seen, seen);
        // Once the file is mended, its new contents are loaded.
        fs::write(&path, "# nobody\n")?;
        assert_eq!(watch.poll(&users), Some(0));
        assert!(!users.get().verify("alice", &token));
        Ok(())
    }

    #[test]
    fn malformed_file_at_open_is_an_error_naming_file_and_line() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("users");
        fs::write(&path, "# comment\nbroken\n")?;
        let err = Watch::open(path.clone()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string()
                .contains(&format!("{} line 2: ", path.display())),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn users_are_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Users>();
    }
}
