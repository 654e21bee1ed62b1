//! The access check every JOIN, SEND, WHO and WATCH goes through, in memory: a room is public
//! unless the private-rooms file lists it; a direct room is for the users its name lists.
//!
//! It must never touch the disk (reactors call it) and never answer differently for a room
//! that does not exist than for one that exists: it does not know which rooms exist at all.

use std::collections::HashMap;

use super::file::Entry;
use crate::protocol::name::{DIRECT_PREFIX, direct_members};

/// Who may use which room.
#[derive(Debug, Default)]
pub struct Access {
    /// Private rooms and the users allowed in each, sorted.
    private: HashMap<Box<str>, Box<[Box<str>]>>,
}

impl Access {
    pub fn from_entries(entries: &[Entry]) -> Access {
        let private = entries
            .iter()
            .map(|e| {
                let users: Box<[Box<str>]> = e.users.iter().map(|u| u.as_str().into()).collect();
                (e.room.as_str().into(), users)
            })
            .collect();
        Access { private }
    }

    /// This table with `room` private to `users` (for tests and the fuzzer's fake server).
    #[must_use]
    pub fn with_private(mut self, room: &str, users: &[&str]) -> Access {
        let mut users: Vec<Box<str>> = users.iter().map(|&u| u.into()).collect();
        users.sort();
        users.dedup();
        self.private.insert(room.into(), users.into());
        self
    }

    /// Whether `user` may use `room`: join it, send to it, ask who is in it.
    pub fn may_use(&self, room: &str, user: &str) -> bool {
        if room.starts_with(DIRECT_PREFIX) {
            // A direct room's name is its list; one not in canonical form is nobody's.
            return direct_members(room).is_some_and(|mut users| users.any(|u| u == user));
        }
        match self.private.get(room) {
            None => true,
            Some(users) => users.binary_search_by(|u| (**u).cmp(user)).is_ok(),
        }
    }

    /// How many rooms are private.
    pub fn len(&self) -> usize {
        self.private.len()
    }

    pub fn is_empty(&self) -> bool {
        self.private.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(room: &str, users: &[&str]) -> Entry {
        Entry {
            room: room.into(),
            users: users.iter().map(|u| (*u).to_string()).collect(),
            line: 1,
        }
    }

    #[test]
    fn public_private_and_direct_rooms() {
        let access =
            Access::from_entries(&[entry("staff", &["alice", "bob"]), entry("vault", &[])]);
        assert!(access.may_use("general", "anyone"));
        assert!(access.may_use("staff", "alice"));
        assert!(access.may_use("staff", "bob"));
        assert!(!access.may_use("staff", "carol"));
        assert!(!access.may_use("vault", "alice"));
        assert!(access.may_use("@alice+bob", "alice"));
        assert!(access.may_use("@alice+bob", "bob"));
        assert!(!access.may_use("@alice+bob", "carol"));
        assert!(
            !access.may_use("@bob+alice", "bob"),
            "not canonical: nobody's"
        );
        assert!(!access.may_use("@alice", "alice"));
        assert_eq!(access.len(), 2);
    }
}
