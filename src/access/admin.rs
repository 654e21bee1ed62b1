//! The admin commands that change the private-rooms file (`chatd room allow|deny|public|list`).
//! They run in a process of their own; a running daemon's watcher picks up what they write.
//!
//! Each rewrites the whole file atomically under a lock and keeps every other line, comments
//! included. Users need not exist yet: a room may be prepared before its people are added.

use std::fs::File;
use std::path::Path;

use nix::fcntl::Flock;

use super::AccessError;
use super::file::{ACCESS_MODE, Entry, check_room, edit, parse, read};
use crate::datadir::write_atomic;
use crate::protocol::name::is_valid_user;

/// Makes `room` private if it is not, and lets `users` use it. Returns who may use it now.
///
/// # Errors
///
/// An invalid or direct room name, an invalid user name, a malformed file (left untouched),
/// or I/O.
pub fn allow(path: &Path, room: &str, users: &[String]) -> Result<Vec<String>, AccessError> {
    change(path, room, users, true, |list| {
        list.extend(users.iter().cloned())
    })
}

/// Takes `users` off the list of private `room`; the room stays private, even if nobody is
/// left on it. Returns who may use it now.
///
/// # Errors
///
/// As [`allow`], and a public room ([`AccessError::Public`]): it has no list to take from.
pub fn deny(path: &Path, room: &str, users: &[String]) -> Result<Vec<String>, AccessError> {
    change(path, room, users, false, |list| {
        list.retain(|u| !users.contains(u))
    })
}

/// Makes `room` public: everyone may use it. Returns whether it was private.
///
/// # Errors
///
/// An invalid or direct room name, a malformed file (left untouched), or I/O.
pub fn make_public(path: &Path, room: &str) -> Result<bool, AccessError> {
    check_room(room)?;
    let _lock = lock_for_write(path)?;
    let (text, entries) = read_entries(path)?;
    let Some(entry) = entries.iter().find(|e| e.room == room) else {
        return Ok(false);
    };
    write_file(path, &edit(&text, Some(entry.line), None))?;
    Ok(true)
}

/// The private rooms and who may use each, sorted by room; none if there is no file.
///
/// # Errors
///
/// A malformed file, or I/O.
pub fn list(path: &Path) -> Result<Vec<(String, Vec<String>)>, AccessError> {
    let (_, entries) = read_entries(path)?;
    let mut rooms: Vec<(String, Vec<String>)> =
        entries.into_iter().map(|e| (e.room, e.users)).collect();
    rooms.sort();
    Ok(rooms)
}

/// Changes the list of `room` with `f` and writes it back, sorted. A public room starts with
/// an empty list if `make_private`, and is refused ([`AccessError::Public`]) if not.
fn change(
    path: &Path,
    room: &str,
    users: &[String],
    make_private: bool,
    f: impl FnOnce(&mut Vec<String>),
) -> Result<Vec<String>, AccessError> {
    check_room(room)?;
    if let Some(bad) = users.iter().find(|u| !is_valid_user(u)) {
        return Err(AccessError::InvalidUser(bad.clone()));
    }
    let _lock = lock_for_write(path)?;
    let (text, entries) = read_entries(path)?;
    let (mut entry, line) = match entries.into_iter().find(|e| e.room == room) {
        Some(entry) => {
            let line = entry.line;
            (entry, Some(line))
        }
        None if make_private => {
            let users = Vec::new();
            let room = room.to_string();
            (
                Entry {
                    room,
                    users,
                    line: 0,
                },
                None,
            )
        }
        None => return Err(AccessError::Public(room.to_string())),
    };
    f(&mut entry.users);
    entry.users.sort();
    entry.users.dedup();
    write_file(path, &edit(&text, line, Some(&entry.render())))?;
    Ok(entry.users)
}

/// The file's text (empty if there is no file) and its parsed rooms.
fn read_entries(path: &Path) -> Result<(String, Vec<Entry>), AccessError> {
    let text = read(path)?.map(|(text, _)| text).unwrap_or_default();
    let entries = parse(path, &text)?;
    Ok((text, entries))
}

fn write_file(path: &Path, text: &str) -> Result<(), AccessError> {
    write_atomic(path, text.as_bytes(), ACCESS_MODE).map_err(|source| AccessError::Io {
        action: "write private-rooms file",
        path: path.to_path_buf(),
        source,
    })
}

/// Serialises admin commands on the file (see [`crate::watched::lock_for_write`]).
fn lock_for_write(path: &Path) -> Result<Flock<File>, AccessError> {
    crate::watched::lock_for_write(path, ACCESS_MODE).map_err(|(path, source)| AccessError::Io {
        action: "lock",
        path,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Access;
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|u| (*u).to_string()).collect()
    }

    fn access(path: &Path) -> Result<Access, AccessError> {
        let (_, entries) = read_entries(path)?;
        Ok(Access::from_entries(&entries))
    }

    #[test]
    fn allow_makes_a_room_private_and_deny_and_public_undo_it() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("private-rooms");
        assert!(access(&path)?.may_use("staff", "carol"));
        assert_eq!(
            allow(&path, "staff", &names(&["bob", "alice"]))?,
            names(&["alice", "bob"])
        );
        let now = access(&path)?;
        assert!(now.may_use("staff", "alice") && !now.may_use("staff", "carol"));
        assert_eq!(allow(&path, "staff", &names(&["carol", "bob"]))?.len(), 3);
        assert_eq!(
            deny(&path, "staff", &names(&["alice", "bob"]))?,
            names(&["carol"])
        );
        assert_eq!(deny(&path, "staff", &names(&["carol"]))?, names(&[]));
        assert!(
            !access(&path)?.may_use("staff", "carol"),
            "still private, nobody on it"
        );
        assert_eq!(list(&path)?, [("staff".to_string(), names(&[]))]);
        assert!(make_public(&path, "staff")?);
        assert!(!make_public(&path, "staff")?);
        assert!(access(&path)?.may_use("staff", "carol"));
        assert!(list(&path)?.is_empty());
        Ok(())
    }

    #[test]
    fn allow_with_no_users_makes_a_room_nobody_may_use() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("private-rooms");
        assert!(allow(&path, "vault", &[])?.is_empty());
        assert!(!access(&path)?.may_use("vault", "alice"));
        Ok(())
    }

    #[test]
    fn bad_requests_change_nothing_and_say_why() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("private-rooms");
        allow(&path, "staff", &names(&["alice"]))?;
        let before = std::fs::read(&path)?;
        for err in [
            deny(&path, "general", &names(&["alice"])).map(|_| ()),
            allow(&path, "@alice+bob", &names(&["carol"])).map(|_| ()),
            allow(&path, "no/slash", &names(&["carol"])).map(|_| ()),
            allow(&path, "staff", &names(&["bad name"])).map(|_| ()),
            make_public(&path, "@alice+bob").map(|_| ()),
        ] {
            assert!(err.is_err(), "{err:?}");
        }
        let public = deny(&path, "general", &names(&["alice"])).map(|_| ());
        assert!(
            public.is_err_and(|e| e.to_string().contains("room 'general' is public")),
            "deny of a public room is refused"
        );
        assert_eq!(std::fs::read(&path)?, before);
        Ok(())
    }

    #[test]
    fn comments_survive_and_the_file_is_private() -> TestResult {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("private-rooms");
        std::fs::write(&path, "# ours\nstaff alice\n")?;
        allow(&path, "vault", &names(&["bob"]))?;
        deny(&path, "staff", &names(&["alice"]))?;
        assert_eq!(
            std::fs::read_to_string(&path)?,
            "# ours\nstaff\nvault bob\n"
        );
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode, ACCESS_MODE);
        Ok(())
    }
}
