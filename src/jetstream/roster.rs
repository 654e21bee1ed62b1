//! The message one node sends the others about a room (`--store jetstream`): which users have
//! a connection joined to it on that node, and whether the sender asks the others to say the
//! same. Plain text, so that `nats sub 'chatd.presence.>'` shows an operator what the nodes
//! say:
//!
//! ```text
//! chatd-roster 1 <node, 16 hex digits> <set|ask|bye>\n
//! <user>\n   (one line per user, in byte order, each once)
//! +<user>\n  (one line per user whose first connection arrived since the last roster,
//!             in byte order, each once, whether or not it is still here)
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

/// The most names one roster may hold, users and arrivals together. A node with more users in
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
    /// Users whose first connection on the sender arrived since its last roster, still there
    /// or not: one in neither roster came and went, one in both left and came back, and the
    /// other nodes' watchers are told so.
    pub arrivals: BTreeSet<Arc<str>>,
}

/// The payload of a roster from `node` listing `users` and `arrivals` (each in byte order, each
/// name once, as `Presence::take_local` gives them), at most [`MAX_USERS`] names in all. Returns it and whether users were left out.
pub fn encode(node: u64, kind: Kind, users: &[Arc<str>], arrivals: &[Arc<str>]) -> (Vec<u8>, bool) {
    let kind = match kind {
        Kind::Set => "set",
        Kind::Ask => "ask",
        Kind::Bye => "bye",
    };
    let kept = users.len().min(MAX_USERS);
    let kept_arrivals = arrivals.len().min(MAX_USERS - kept);
    let mut out = format!("{MAGIC} {node:016x} {kind}\n").into_bytes();
    for user in users.iter().take(kept) {
        out.extend_from_slice(user.as_bytes());
        out.push(b'\n');
    }
    for user in arrivals.iter().take(kept_arrivals) {
        out.push(b'+');
        out.extend_from_slice(user.as_bytes());
        out.push(b'\n');
    }
    (out, kept + kept_arrivals < users.len() + arrivals.len())
}

/// The roster in `payload`, or `None` if it is not one: a wrong first line, a name that is not
/// a valid user name, a name twice among the users or among the arrivals, more than
/// [`MAX_USERS`] names, or any name in a `bye`.
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
    let (mut users, mut arrivals) = (BTreeSet::new(), BTreeSet::<Arc<str>>::new());
    for (count, line) in lines.enumerate() {
        let (name, into) = match line.strip_prefix('+') {
            Some(name) => (name, &mut arrivals),
            None => (line, &mut users),
        };
        if count >= MAX_USERS || !is_valid_user(name) || !into.insert(Arc::from(name)) {
            return None;
        }
    }
    if kind == Kind::Bye && !(users.is_empty() && arrivals.is_empty()) {
        return None;
    }
    Some(Roster {
        node,
        kind,
        users,
        arrivals,
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
        let arrivals = names(&["dave"]);
        let (payload, cut) = encode(0x00ab_cdef_0123_4567, Kind::Ask, &users, &arrivals);
        assert!(!cut);
        assert_eq!(
            payload,
            b"chatd-roster 1 00abcdef01234567 ask\nalice\nbob.b\nc-1_x\n+dave\n"
        );
        let roster = decode(&payload).expect("a roster");
        assert_eq!(
            (roster.node, roster.kind),
            (0x00ab_cdef_0123_4567, Kind::Ask)
        );
        assert_eq!(roster.users.into_iter().collect::<Vec<_>>(), users);
        assert_eq!(roster.arrivals.into_iter().collect::<Vec<_>>(), arrivals);
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
            b"chatd-roster 1 00abcdef01234567 bye\n+alice\n",
            b"chatd-roster 1 00abcdef01234567 set\n+alice\n+alice\n",
            b"chatd-roster 1 00abcdef01234567 set\n+\n",
            b"chatd-roster 1 00abcdef01234567 set\n++alice\n",
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
