//! The login check: who may connect, as a table in memory, and the constant-time comparison
//! of a HELLO's token against it.
//!
//! A table is built once from a parsed users file and never changes; a new version of the
//! file becomes a new table. It holds no path and no file, so a HELLO can never touch the
//! disk, and it must never store or log a token, nor let the time a check takes reveal
//! whether a user exists.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use subtle::{Choice, ConstantTimeEq};

use super::file::{Digest, Entry, digest};
use super::name::UserName;

/// Compared against when the user is unknown, so that an unknown user costs the same hash and
/// comparison as a known one. Its value never matters: the result is masked by "user known".
const DUMMY_DIGEST: Digest = [0; 32];

/// Every user and the SHA-256 of their token. The names are shared: a logged-in session keeps
/// its user's name as a reference to this table's ([`UserName`]), not as a copy of its own.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Table {
    users: HashMap<Arc<str>, (Digest, UserName)>,
}

/// Why a logged-in user's session must end after the table changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// The user is no longer in the table.
    Removed,
    /// The user's token changed (rotated, or removed and added again).
    Rotated,
}

impl Revoked {
    /// What the session is told, in the ERROR's message.
    pub fn message(self) -> &'static str {
        match self {
            Revoked::Removed => "user removed",
            Revoked::Rotated => "token rotated",
        }
    }
}

impl Table {
    pub fn from_entries(entries: &[Entry]) -> Table {
        Table {
            users: entries
                .iter()
                .map(|e| {
                    let name: Arc<str> = Arc::from(e.name.as_str());
                    (Arc::clone(&name), (e.digest, UserName::new(name)))
                })
                .collect(),
        }
    }

    /// Whether `token` is `user`'s token.
    pub fn verify(&self, user: &str, token: &str) -> bool {
        self.login(user, token).is_some()
    }

    /// The table's own copy of `user`'s name, if `token` is their token.
    pub fn login(&self, user: &str, token: &str) -> Option<UserName> {
        let presented = digest(token.as_bytes());
        let (name, expected, known) = match self.users.get(user) {
            Some((d, name)) => (Some(name), d, Choice::from(1)),
            None => (None, &DUMMY_DIGEST, Choice::from(0)),
        };
        if bool::from(presented.ct_eq(expected) & known) {
            name.cloned()
        } else {
            None
        }
    }

    /// Whether a session of `user`, logged in against this table, must end under `newer`.
    pub fn revoked(&self, newer: &Table, user: &str) -> Option<Revoked> {
        match (
            self.users.get(user).map(|(d, _)| d),
            newer.users.get(user).map(|(d, _)| d),
        ) {
            (_, None) => Some(Revoked::Removed),
            (Some(old), Some(new)) if old != new => Some(Revoked::Rotated),
            // Unchanged; or unknown before, so the session logged in against `newer` itself.
            _ => None,
        }
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

impl fmt::Debug for Table {
    // Shows no digests, which have no business in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(users: &[(&str, &str)]) -> Table {
        let entries: Vec<Entry> = users
            .iter()
            .enumerate()
            .map(|(line, (name, token))| Entry {
                name: name.to_string(),
                digest: digest(token.as_bytes()),
                line,
            })
            .collect();
        Table::from_entries(&entries)
    }

    #[test]
    fn a_login_shares_the_tables_name() {
        let t = table(&[("alice", "a-token")]);
        let first = t.login("alice", "a-token").expect("alice's token");
        let second = t.login("alice", "a-token").expect("alice's token");
        assert_eq!(first.as_str(), "alice");
        assert!(
            Arc::ptr_eq(first.shared(), second.shared()),
            "no copy per session"
        );
        assert!(t.login("alice", "b-token").is_none());
    }

    #[test]
    fn verify_takes_the_users_token_only() {
        let t = table(&[("alice", "a-token"), ("bob", "b-token")]);
        assert!(t.verify("alice", "a-token"));
        assert!(!t.verify("alice", "b-token"));
        assert!(!t.verify("alice", ""));
        assert!(!t.verify("carol", "a-token"));
        assert!(!t.verify("", ""));
    }

    #[test]
    fn revoked_names_removal_and_rotation_only() {
        let old = table(&[("alice", "a"), ("bob", "b"), ("carol", "c")]);
        let new = table(&[("alice", "a"), ("carol", "c2"), ("dave", "d")]);
        assert_eq!(old.revoked(&new, "alice"), None);
        assert_eq!(old.revoked(&new, "bob"), Some(Revoked::Removed));
        assert_eq!(old.revoked(&new, "carol"), Some(Revoked::Rotated));
        assert_eq!(old.revoked(&new, "dave"), None);
        assert_eq!(Revoked::Removed.message(), "user removed");
        assert_eq!(Revoked::Rotated.message(), "token rotated");
    }

    #[test]
    fn debug_shows_no_digest() {
        let t = table(&[("alice", "a")]);
        let shown = format!("{t:?}");
        assert!(!shown.contains(&super::super::file::hex(&digest(b"a"))));
        assert!(shown.contains("users: 1"), "{shown}");
    }
}
