//! The message one node sends the others about a room (`--store jetstream`): which users have
//! a connection joined to it on that node, and whether the sender asks the others to say the
//! same. Plain text, so that `nats sub 'chatd.presence.>'` shows an operator what the nodes
//! say:
//!
//! ```text
//! chatd-roster 1 <node, 16 hex digits> <set|ask|bye>\n
//! <user>\n   (one line per user, in byte order, each once)
//! -<user>\n  (one line per user who came and went since the last roster, each once)
//! ```
//!
//! A roster always carries the sender's whole set for the room, never a change, so that a
//! lost message is made good by the next one. Rosters come from other chatd nodes, but they
//! travel on a plain NATS subject that anyone with access to the server can publish to: the
//! decoder must refuse anything that is not a roster, never panic, and never keep more than
//! [`MAX_USERS`] names from one message.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::protocol::name::is_valid_user;

/// The first word of every roster, and the format's version.
const MAGIC: &str = "chatd-roster 1";

/// The most users one roster may list, here and passed together. A node with more users in
/// one room tells the others the first this many (in byte order), and says so in its log: at
/// 32 bytes a name this keeps a roster under NATS's default 1 MiB payload limit.
pub const MAX_USERS: usize = 30_000;

/// What a roster says besides its users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The sender's users of the room, now.
    Set,
    /// The same, from a node that has just started following the room: it asks every node to
    /// send its own roster of it now rather than at its next heartbeat.
    Ask,
    /// The sender is stopping: forget it (it lists nobody).
    Bye,
}

/// One node's users in one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    /// The sending node, random per run ([`super::engine::Link::node`]).
    pub node: u64,
    pub kind: Kind,
    pub users: BTreeSet<Arc<str>>,
    /// Users who arrived on the sender and left again since its last roster: in neither
    /// roster, but here for a moment, which the other nodes' watchers are told.
    pub passed: BTreeSet<Arc<str>>,
}

/// The payload of a roster from `node` listing `users` and `passed` (each in byte order, each
/// name once, none in both, as `Presence::take_local` gives them), at most [`MAX_USERS`] of
/// them. Returns it and whether users were left out.
pub fn encode(node: u64, kind: Kind, users: &[Arc<str>], passed: &[Arc<str>]) -> (Vec<u8>, bool) {
    let kind = match kind {
        Kind::Set => "set",
        Kind::Ask => "ask",
        Kind::Bye => "bye",
    };
    let kept = users.len().min(MAX_USERS);
    let kept_passed = passed.len().min(MAX_USERS - kept);
    let mut out = format!("{MAGIC} {node:016x} {kind}\n").into_bytes();
    for user in users.iter().take(kept) {
        out.extend_from_slice(user.as_bytes());
        out.push(b'\n');
    }
    for user in passed.iter().take(kept_passed) {
        out.push(b'-');
        out.extend_from_slice(user.as_bytes());
        out.push(b'\n');
    }
    (out, kept + kept_passed < users.len() + passed.len())
}

/// The roster in `payload`, or `None` if it is not one: a wrong first line, a name that is not
/// a valid user name, a name twice (here or passed), more than [`MAX_USERS`] names, or any name
/// in a `bye`.
pub fn decode(payload: &[u8]) -> Option<Roster> {
    let text = std::str::from_utf8(payload).ok()?;
    let body = text.strip_suffix('\n')?;
    let mut lines = body.split('\n');
    let mut head = lines
        .next()?
        .strip_prefix(MAGIC)?
        .strip_prefix(' ')?
        .split(' ');
    let (node, kind) = (head.next()?, head.next()?);
    if head.next().is_some() || node.len() != 16 || !node.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let node = u64::from_str_radix(node, 16).ok()?;
    let kind = match kind {
        "set" => Kind::Set,
        "ask" => Kind::Ask,
        "bye" => Kind::Bye,
        _ => return None,
    };
    let (mut users, mut passed) = (BTreeSet::new(), BTreeSet::<Arc<str>>::new());
    for (count, line) in lines.enumerate() {
        let (name, into) = match line.strip_prefix('-') {
            Some(name) => (name, &mut passed),
            None => (line, &mut users),
        };
        if count >= MAX_USERS || !is_valid_user(name) || !into.insert(Arc::from(name)) {
            return None;
        }
    }
    let empty = users.is_empty() && passed.is_empty();
    if !users.is_disjoint(&passed) || (kind == Kind::Bye && !empty) {
        return None;
    }
    Some(Roster {
        node,
        kind,
        users,
        passed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(users: &[&str]) -> Vec<Arc<str>> {
        users.iter().map(|u| Arc::from(*u)).collect()
    }

    #[test]
    fn a_roster_reads_back_as_it_was_written() {
        let users = names(&["alice", "bob.b", "c-1_x"]);
        let passed = names(&["dave"]);
        let (payload, cut) = encode(0x00ab_cdef_0123_4567, Kind::Ask, &users, &passed);
        assert!(!cut);
        assert_eq!(
            payload,
            b"chatd-roster 1 00abcdef01234567 ask\nalice\nbob.b\nc-1_x\n-dave\n"
        );
        let roster = decode(&payload).expect("a roster");
        assert_eq!(
            (roster.node, roster.kind),
            (0x00ab_cdef_0123_4567, Kind::Ask)
        );
        assert_eq!(roster.users.into_iter().collect::<Vec<_>>(), users);
        assert_eq!(roster.passed.into_iter().collect::<Vec<_>>(), passed);
        let empty = decode(&encode(1, Kind::Set, &[], &[]).0).expect("an empty roster");
        assert!(empty.kind == Kind::Set && empty.users.is_empty());
        let bye = decode(b"chatd-roster 1 0000000000000001 bye\n").expect("a goodbye");
        assert!(bye.kind == Kind::Bye && bye.users.is_empty());
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            &b""[..],
            b"chatd-roster 1 00abcdef01234567 set",
            b"chatd-roster 2 00abcdef01234567 set\n",
            b"chatd-roster 1 abcdef01234567 set\n",
            b"chatd-roster 1 00abcdef0123456g set\n",
            b"chatd-roster 1 00abcdef01234567 get\n",
            b"chatd-roster 1 00abcdef01234567 set extra\n",
            b"chatd-roster 1 00abcdef01234567 set\nalice\nalice\n",
            b"chatd-roster 1 00abcdef01234567 set\n\n",
            b"chatd-roster 1 00abcdef01234567 set\nal ice\n",
            b"chatd-roster 1 00abcdef01234567 set\nalice\r\n",
            b"chatd-roster 1 00abcdef01234567 set\n\xff\n",
            b"chatd-roster 1 00abcdef01234567 bye\nalice\n",
            b"chatd-roster 1 00abcdef01234567 bye\n-alice\n",
            b"chatd-roster 1 00abcdef01234567 set\nalice\n-alice\n",
            b"chatd-roster 1 00abcdef01234567 set\n-alice\n-alice\n",
            b"chatd-roster 1 00abcdef01234567 set\n-\n",
        ] {
            assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_roster_keeps_at_most_max_users() {
        let users: Vec<Arc<str>> = (0..=MAX_USERS)
            .map(|i| Arc::from(format!("u{i:06}")))
            .collect();
        let (payload, cut) = encode(7, Kind::Set, &users, &names(&["late"]));
        assert!(cut);
        assert!(
            payload.len() < 1 << 20,
            "under NATS's default payload limit"
        );
        assert_eq!(decode(&payload).map(|r| r.users.len()), Some(MAX_USERS));
        let mut over = payload;
        over.extend_from_slice(b"zzz\n");
        assert_eq!(decode(&over), None);
    }
}
