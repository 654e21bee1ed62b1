//! The admin commands that change the users file (`chatd user add|remove|rotate|list`). They
//! run in a process of their own; a running daemon's watcher picks up what they write.
//!
//! Each rewrites the whole file atomically under a lock, keeps every other line (comments
//! included), and must never write or print a token anywhere but the one answer it returns.

use std::fs::File;
use std::io;
use std::path::Path;

use nix::fcntl::Flock;

use super::UserError;
use super::file::{Entry, HEADER, USERS_MODE, digest, hex, parse, read};
use crate::datadir::write_atomic;
use crate::protocol::name::is_valid_user;

/// Random bytes in a fresh token; it is handed out hex-encoded, as 64 characters.
const TOKEN_BYTES: usize = 32;

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
    let token = new_token()?;
    if text.trim().is_empty() {
        text = HEADER.to_string();
    } else if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&line_of(name, &token));
    write_users(path, &text)?;
    Ok(token)
}

/// Gives `name` a fresh token in place of the old one (same line, same place in the file) and
/// returns it, hex-encoded. The old token stops working and a running daemon ends the
/// sessions logged in with it.
///
/// # Errors
///
/// No such user, a malformed users file (it is left untouched), or I/O.
pub fn rotate_user(path: &Path, name: &str) -> Result<String, UserError> {
    let _lock = lock_for_write(path)?;
    let (text, entries) = read_entries(path)?;
    let Some(entry) = entries.iter().find(|e| e.name == name) else {
        return Err(UserError::NotFound(name.to_string()));
    };
    let token = new_token()?;
    let line = line_of(name, &token);
    let rotated: String = text
        .split_inclusive('\n')
        .enumerate()
        .map(|(index, old)| if index + 1 == entry.line { &line } else { old })
        .collect();
    write_users(path, &rotated)?;
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

/// A fresh token, hex-encoded.
fn new_token() -> Result<String, UserError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| UserError::Random(io::Error::other(e.to_string())))?;
    Ok(hex(&bytes))
}

/// The users file line for `name` with `token`, newline included.
fn line_of(name: &str, token: &str) -> String {
    format!("{name} {}\n", hex(&digest(token.as_bytes())))
}

/// The file's text (empty if there is no file) and its parsed users.
fn read_entries(path: &Path) -> Result<(String, Vec<Entry>), UserError> {
    let text = read(path)?.map(|(text, _)| text).unwrap_or_default();
    let entries = parse(path, &text)?;
    Ok((text, entries))
}

fn write_users(path: &Path, text: &str) -> Result<(), UserError> {
    write_atomic(path, text.as_bytes(), USERS_MODE).map_err(|source| UserError::Io {
        action: "write users file",
        path: path.to_path_buf(),
        source,
    })
}

/// Serialises admin commands on the users file (see [`crate::watched::lock_for_write`]).
fn lock_for_write(path: &Path) -> Result<Flock<File>, UserError> {
    crate::watched::lock_for_write(path, USERS_MODE).map_err(|(path, source)| UserError::Io {
        action: "lock",
        path,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Table;
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn users_path(dir: &tempfile::TempDir) -> std::path::PathBuf {
        dir.path().join("users")
    }

    /// The table a daemon would load from `path` now.
    fn table(path: &Path) -> Result<Table, UserError> {
        let (_, entries) = read_entries(path)?;
        Ok(Table::from_entries(&entries))
    }

    #[test]
    fn added_user_verifies_with_its_token_only() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = users_path(&dir);
        let token = add_user(&path, "alice")?;
        assert_eq!(token.len(), 64);
        let users = table(&path)?;
        assert_eq!(users.len(), 1);
        assert!(users.verify("alice", &token));
        assert!(!users.verify("alice", "wrong"));
        assert!(!users.verify("bob", &token));
        Ok(())
    }

    #[test]
    fn tokens_are_fresh_per_user() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = users_path(&dir);
        let a = add_user(&path, "alice")?;
        let b = add_user(&path, "bob")?;
        assert_ne!(a, b);
        let users = table(&path)?;
        assert!(!users.verify("alice", &b));
        assert!(users.verify("bob", &b));
        Ok(())
    }

    #[test]
    fn rotate_replaces_the_token_in_place_and_keeps_other_lines() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = users_path(&dir);
        let d = hex(&digest(b"t"));
        fs::write(&path, format!("# mine\na {d}\n# b is ops\nb {d}\nc {d}"))?;
        let token = rotate_user(&path, "b")?;
        assert_eq!(token.len(), 64);
        assert_eq!(
            fs::read_to_string(&path)?,
            format!(
                "# mine\na {d}\n# b is ops\nb {}\nc {d}",
                hex(&digest(token.as_bytes()))
            )
        );
        let users = table(&path)?;
        assert!(users.verify("b", &token));
        assert!(!users.verify("b", "t"));
        assert!(users.verify("a", "t"));
        // The last line, without a newline, rotates too.
        let c = rotate_user(&path, "c")?;
        assert!(table(&path)?.verify("c", &c));
        assert_eq!(list_users(&path)?, ["a", "b", "c"]);
        Ok(())
    }

    #[test]
    fn rotate_of_unknown_user_is_an_error() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = users_path(&dir);
        add_user(&path, "alice")?;
        let before = fs::read(&path)?;
        let err = rotate_user(&path, "carol").unwrap_err();
        assert_eq!(err.to_string(), "no user 'carol'");
        assert_eq!(fs::read(&path)?, before);
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
            let err = list_users(&path).unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains(&format!("{} line 4: ", path.display())),
                "{message}"
            );
            assert!(message.contains(reason), "{message}");
            assert!(matches!(err, UserError::Malformed { line: 4, .. }));
            assert_eq!(io::Error::from(err).kind(), io::ErrorKind::InvalidData);
        }
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
}
