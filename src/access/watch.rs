//! Watching the private-rooms file: the users-file watcher's thread (never a reactor) calls
//! [`Watch::poll`] every [`crate::auth::POLL_EVERY`]; when the file changed, it reads and parses
//! it and publishes the new [`Access`]. Reactors see the new generation on their next turn,
//! check against it, and take away the rooms their sessions may no longer use.
//!
//! A file that no longer parses is logged and ignored, keeping the last good table, never
//! half-loaded. This module must never be called from a reactor thread: it does disk I/O.

use std::io;
use std::path::{Path, PathBuf};

use super::file::{parse, read};
use super::{Access, AccessError, Grants};
use crate::watched::Stamp;

/// The private-rooms file as last loaded.
#[derive(Debug)]
pub struct Watch {
    path: PathBuf,
    /// The file as it was at the last load attempt (`None`: there was no file). A malformed
    /// file's stamp is kept too, so that it is not parsed and warned about again every poll.
    seen: Option<Stamp>,
}

impl Watch {
    /// Loads the file at `path`. A missing file means every room is public.
    ///
    /// # Errors
    ///
    /// The file cannot be read, or a line is malformed (the message names the file and line,
    /// with kind [`io::ErrorKind::InvalidData`]).
    pub fn open(path: PathBuf) -> io::Result<(Watch, Access)> {
        let (access, seen) = load(&path)?;
        Ok((Watch { path, seen }, access))
    }

    /// Rereads the file if it changed since the last look, and publishes the new table to
    /// `grants`. Returns the number of private rooms published, if a new table was.
    pub fn poll(&mut self, grants: &Grants) -> Option<usize> {
        let now = match Stamp::at(&self.path) {
            Ok(now) => now,
            Err(e) => {
                log::warn!(
                    "cannot check private-rooms file {}: {e}; keeping the rules loaded before",
                    self.path.display()
                );
                return None;
            }
        };
        if now == self.seen {
            return None;
        }
        match load(&self.path) {
            Ok((access, seen)) => {
                let count = access.len();
                grants.publish(access);
                self.seen = seen;
                // Logged once in force: tests and operators may act on this line.
                log::info!(
                    "reloaded private-rooms file {}: {count} private rooms",
                    self.path.display()
                );
                Some(count)
            }
            Err(e) => {
                log::warn!("{e}; keeping the rules loaded before");
                if matches!(e, AccessError::Malformed { .. }) {
                    self.seen = now;
                }
                None
            }
        }
    }
}

/// The table in the file at `path` and the stamp of the version read.
fn load(path: &Path) -> Result<(Access, Option<Stamp>), AccessError> {
    Ok(match read(path)? {
        Some((text, stamp)) => (Access::from_entries(&parse(path, &text)?), Some(stamp)),
        None => (Access::default(), None),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{allow, deny};
    use super::*;
    use crate::published::Published;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn changes_are_published_and_a_broken_file_keeps_the_last_good_rules() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("private-rooms");
        let (mut watch, access) = Watch::open(path.clone())?;
        let grants = Published::new(access);
        assert!(grants.get().may_use("staff", "bob"));
        assert_eq!(watch.poll(&grants), None, "no file, no change");
        allow(&path, "staff", &["alice".to_string()])?;
        assert_eq!(watch.poll(&grants), Some(1));
        assert!(!grants.get().may_use("staff", "bob"));
        deny(&path, "staff", &["alice".to_string()])?;
        assert_eq!(watch.poll(&grants), Some(1));
        assert!(!grants.get().may_use("staff", "alice"));
        let good = std::fs::read_to_string(&path)?;
        std::fs::write(&path, format!("{good}@x oops\n"))?;
        assert_eq!(watch.poll(&grants), None);
        assert!(
            !grants.get().may_use("staff", "alice"),
            "last good rules kept"
        );
        assert_eq!(
            watch.poll(&grants),
            None,
            "not parsed again until it changes"
        );
        std::fs::remove_file(&path)?;
        assert_eq!(watch.poll(&grants), Some(0));
        assert!(grants.get().may_use("staff", "alice"));
        Ok(())
    }
}
