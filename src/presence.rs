//! Who is in a room (protocol version 2's WHO, WATCH, MEMBERS and PRESENCE): the distinct
//! users with a connection joined to the room, and the changes to that set for the sessions
//! that watch it.
//!
//! Each room keeps one [`Presence`] behind its own lock: how many connections of each user are
//! joined, and a short log of the changes (a user's first connection arrived, its last one
//! left), numbered like the room's messages so that a watcher follows it with a cursor, as a
//! member follows the ring. A snapshot (MEMBERS) and the number of the next change are taken
//! in one hold of the lock, so a watcher that reads the log from that number on sees every
//! change after its snapshot exactly once. The log is kept only while someone watches and is
//! bounded: a watcher it leaves behind is given a new snapshot instead.
//!
//! With several nodes (`--store jetstream`) a user is also here while another node says it
//! has a connection of that user joined (`crate::jetstream::presence`): each user counts its
//! sources, this node's connections and the other nodes that list it, and is here while it
//! has any. This node's own part is numbered too ([`Presence::take_local`]), so that what it
//! tells the other nodes is read without a log of its own; only the users who arrived between
//! two readings are noted apart, so that the other nodes see a visit or a return that falls
//! between them.
//!
//! This module must never block for long or allocate what a client can grow without bound:
//! the lock is held for one count change, one snapshot of what fits in a frame, or a bounded
//! read of the log.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Users noted as arrived on this node between two readings of its part by the other nodes'
/// task (0.1 s): more than this, and the visits and returns of the rest within it are not
/// shown on the other nodes (what they end as still is).
const ARRIVALS_KEPT: usize = 1024;

/// Changes the log keeps for watchers. A watcher more than this many changes behind (its
/// client not reading, or a burst of joins) gets a fresh MEMBERS rather than a longer log.
pub const LOG_EVENTS: usize = 1024;

/// Who is in one room, and the recent changes for its watchers.
#[derive(Debug, Default)]
pub struct Presence {
    /// What makes each user here, per user with at least one source: a sorted map, so that
    /// MEMBERS lists users in byte order without sorting. The names of local users are the
    /// users table's own `Arc`s.
    here: BTreeMap<Arc<str>, Sources>,
    /// Counts every change to the set of users with a connection on this node, so that the
    /// node's share of presence is sent to the others only when it changed.
    local_changes: u64,
    /// Whether other nodes are told of this node's users (`--store jetstream`): only then are
    /// `arrived` noted.
    shared: bool,
    /// Users whose first connection here arrived since `take_local` last read (a name may be
    /// here more than once).
    arrived: Vec<Arc<str>>,
    /// The number the next change takes; the log holds `next - log.len() .. next`.
    next: u64,
    /// The newest changes, kept only while `watchers` counts someone.
    log: VecDeque<Change>,
    /// Watching sessions per reactor (index), so that a change wakes only reactors with a
    /// watcher. Empty when nobody watches.
    watchers: Vec<u32>,
}

/// Why a user is here: its connections joined on this node (the low 24 bits) and the other
/// nodes that say they have one (the high 8 bits; each node once, however many it has).
/// Packed in the `u32` a count of connections took before nodes shared presence, so that a
/// user here costs the room not one byte more for it: a node has far fewer than 2^24
/// connections, and a cluster of chatd nodes far fewer than 255 nodes (both saturate).
#[derive(Debug, Clone, Copy, Default)]
struct Sources(u32);

impl Sources {
    const LOCAL: u32 = (1 << 24) - 1;
    const NODE: u32 = 1 << 24;

    fn local(self) -> u32 {
        self.0 & Self::LOCAL
    }

    fn nodes(self) -> u32 {
        self.0 >> 24
    }

    fn any(self) -> bool {
        self.0 != 0
    }

    fn add_local(&mut self) {
        if self.local() < Self::LOCAL {
            self.0 += 1;
        }
    }

    fn remove_local(&mut self) {
        if self.local() > 0 {
            self.0 -= 1;
        }
    }

    fn add_node(&mut self) {
        if self.nodes() < 255 {
            self.0 += Self::NODE;
        }
    }

    fn remove_node(&mut self) {
        if self.nodes() > 0 {
            self.0 -= Self::NODE;
        }
    }
}

/// This node's part of a room's presence, as [`Presence::take_local`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// The number of changes to `users` so far: equal numbers, equal sets.
    pub changes: u64,
    /// The users with a connection on this node, in byte order.
    pub users: Vec<Arc<str>>,
    /// The users whose first connection on this node arrived since the last reading, in
    /// byte order, each once, whether or not they are still here: with the sets read before
    /// and now, they tell a visit between two readings (in neither set) and a return (in
    /// both), which the sets alone do not show.
    pub arrivals: Vec<Arc<str>>,
}

/// One change: `user`'s first connection arrived (`here`), or its last one left.
#[derive(Debug, Clone)]
struct Change {
    user: Arc<str>,
    here: bool,
}

/// A watcher's cursor is older than the log: what it missed is gone, and it needs a new
/// snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lapsed;

/// What MEMBERS says, and the number of the first change after it.
#[derive(Debug)]
pub struct Snapshot {
    /// How many distinct users are here.
    pub total: u32,
    /// The first of them in byte order, as many as fit the frame.
    pub users: Vec<Arc<str>>,
    /// The number of the first change the snapshot does not show.
    pub cursor: u64,
}

impl Presence {
    /// One more connection of `user` joined on this node. Returns the reactors whose
    /// watchers must hear of a change (none if the user was here already, or nobody watches).
    pub fn arrive(&mut self, user: &Arc<str>) -> Vec<usize> {
        if let Some(sources) = self.here.get_mut(&**user) {
            let first = sources.local() == 0;
            sources.add_local();
            if first {
                self.arrived_here(user);
            }
            return Vec::new();
        }
        self.arrived_here(user);
        let mut sources = Sources::default();
        sources.add_local();
        self.here.insert(Arc::clone(user), sources);
        self.record(Arc::clone(user), true)
    }

    /// One connection of `user` on this node left (or closed). Returns the reactors to wake,
    /// as [`arrive`](Presence::arrive) does. A departure with no arrival is ignored.
    pub fn depart(&mut self, user: &str) -> Vec<usize> {
        let Some(sources) = self.here.get_mut(user) else {
            return Vec::new();
        };
        if sources.local() == 0 {
            return Vec::new();
        }
        sources.remove_local();
        if sources.local() == 0 {
            self.local_changes += 1;
        }
        self.forget_if_gone(user)
    }

    /// Another node says it has a connection of `user` joined (it said nothing of the user
    /// before). Returns the reactors to wake.
    pub fn node_arrive(&mut self, user: &Arc<str>) -> Vec<usize> {
        if let Some(sources) = self.here.get_mut(&**user) {
            sources.add_node();
            return Vec::new();
        }
        let mut sources = Sources::default();
        sources.add_node();
        self.here.insert(Arc::clone(user), sources);
        self.record(Arc::clone(user), true)
    }

    /// A node that listed `user` no longer does (or is gone). Returns the reactors to wake.
    pub fn node_depart(&mut self, user: &str) -> Vec<usize> {
        let Some(sources) = self.here.get_mut(user) else {
            return Vec::new();
        };
        if sources.nodes() == 0 {
            return Vec::new();
        }
        sources.remove_node();
        self.forget_if_gone(user)
    }

    fn forget_if_gone(&mut self, user: &str) -> Vec<usize> {
        if self.here.get(user).is_some_and(|s| s.any()) {
            return Vec::new();
        }
        match self.here.remove_entry(user) {
            Some((user, _)) => self.record(user, false),
            None => Vec::new(),
        }
    }

    /// `user`'s first connection on this node arrived.
    fn arrived_here(&mut self, user: &Arc<str>) {
        self.local_changes += 1;
        if self.shared && self.arrived.len() < ARRIVALS_KEPT {
            self.arrived.push(Arc::clone(user));
        }
    }

    /// From now on, this node's users are told to other nodes: note who arrives between two
    /// [`take_local`](Presence::take_local)s.
    pub fn share(&mut self) {
        self.shared = true;
    }

    /// This node's part, for the other nodes: the users with a connection here, and those
    /// whose first connection here arrived since the last call.
    pub fn take_local(&mut self) -> Local {
        let users = self
            .here
            .iter()
            .filter(|(_, s)| s.local() > 0)
            .map(|(user, _)| Arc::clone(user))
            .collect();
        let mut arrivals = std::mem::take(&mut self.arrived);
        arrivals.sort_unstable();
        arrivals.dedup();
        Local {
            changes: self.local_changes,
            users,
            arrivals,
        }
    }

    /// The number of changes to the set of users with a connection on this node.
    pub fn local_changes(&self) -> u64 {
        self.local_changes
    }

    fn record(&mut self, user: Arc<str>, here: bool) -> Vec<usize> {
        self.next += 1;
        if self.watchers.is_empty() {
            return Vec::new();
        }
        if self.log.len() >= LOG_EVENTS {
            self.log.pop_front();
        }
        self.log.push_back(Change { user, here });
        self.watchers
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .map(|(reactor, _)| reactor)
            .collect()
    }

    /// A session on `reactor` starts (`on`) or stops watching. The log is kept from the
    /// first watcher on and dropped with the last.
    pub fn set_watching(&mut self, reactor: usize, on: bool) {
        if on {
            if self.watchers.len() <= reactor {
                self.watchers.resize(reactor + 1, 0);
            }
            if let Some(n) = self.watchers.get_mut(reactor) {
                *n = n.saturating_add(1);
            }
            return;
        }
        if let Some(n) = self.watchers.get_mut(reactor) {
            *n = n.saturating_sub(1);
        }
        if self.watchers.iter().all(|&n| n == 0) {
            // Nobody watches: neither the log nor the counts cost the room anything.
            self.watchers = Vec::new();
            self.log = VecDeque::new();
        }
    }

    /// The users here in byte order, as many as fit a MEMBERS frame of a room named
    /// `room_len` bytes under `max_frame` (and a u16 count), with the total and the number of
    /// the next change: taken together, so that reading the log from `cursor` on adds exactly
    /// what happened after.
    pub fn snapshot(&self, room_len: usize, max_frame: u32) -> Snapshot {
        let max_frame = usize::try_from(max_frame).unwrap_or(usize::MAX);
        // kind, room, total, count: as `protocol::codec::encode_members` counts them.
        let mut length = 1 + 2 + room_len + 4 + 2;
        let users = self
            .here
            .keys()
            .take_while(|user| {
                length = length.saturating_add(2 + user.len());
                length <= max_frame
            })
            .take(usize::from(u16::MAX))
            .cloned()
            .collect();
        Snapshot {
            total: u32::try_from(self.here.len()).unwrap_or(u32::MAX),
            users,
            cursor: self.next,
        }
    }

    /// Hands `sink` the changes from number `cursor` on, at most `max`, and returns the next
    /// cursor.
    ///
    /// # Errors
    /// `Lapsed` if change `cursor` is no longer in the log.
    pub fn since(
        &self,
        cursor: u64,
        max: usize,
        mut sink: impl FnMut(&str, bool),
    ) -> Result<u64, Lapsed> {
        let len = u64::try_from(self.log.len()).unwrap_or(u64::MAX);
        let first = self.next.saturating_sub(len);
        if cursor < first {
            return Err(Lapsed);
        }
        let skip = usize::try_from(cursor - first).map_err(|_| Lapsed)?;
        let mut next = cursor;
        for change in self.log.iter().skip(skip).take(max) {
            sink(&change.user, change.here);
            next += 1;
        }
        Ok(next)
    }

    /// How many distinct users are here.
    pub fn len(&self) -> usize {
        self.here.len()
    }

    pub fn is_empty(&self) -> bool {
        self.here.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    fn changes(p: &Presence, cursor: u64) -> (Vec<String>, u64) {
        let mut seen = Vec::new();
        let next = p
            .since(cursor, usize::MAX, |u, here| {
                seen.push(format!("{u}{}", if here { "+" } else { "-" }));
            })
            .expect("within the log");
        (seen, next)
    }

    #[test]
    fn a_user_is_here_once_whatever_its_connections() {
        let mut p = Presence::default();
        p.set_watching(0, true);
        let bob = name("bob");
        assert_eq!(p.arrive(&bob), [0]);
        assert!(
            p.arrive(&bob).is_empty(),
            "a second connection changes nothing"
        );
        assert!(p.depart("bob").is_empty(), "one connection is still joined");
        assert_eq!(p.len(), 1);
        assert_eq!(p.depart("bob"), [0]);
        assert!(p.is_empty());
        assert!(
            p.depart("bob").is_empty(),
            "a departure with no arrival is ignored"
        );
        assert_eq!(changes(&p, 0), (vec!["bob+".into(), "bob-".into()], 2));
    }

    #[test]
    fn the_snapshot_and_the_log_after_it_meet_without_gap_or_overlap() {
        let mut p = Presence::default();
        p.set_watching(1, true);
        p.arrive(&name("carol"));
        p.arrive(&name("alice"));
        let snap = p.snapshot(1, 65_536);
        let listed: Vec<&str> = snap.users.iter().map(|u| &**u).collect();
        assert_eq!((snap.total, listed), (2, vec!["alice", "carol"]));
        assert_eq!(p.arrive(&name("bob")), [1]);
        p.depart("alice");
        let (seen, next) = changes(&p, snap.cursor);
        assert_eq!(seen, ["bob+", "alice-"]);
        assert_eq!(changes(&p, next).0, Vec::<String>::new());
    }

    #[test]
    fn the_snapshot_lists_what_fits_and_counts_everyone() {
        let mut p = Presence::default();
        for u in ["aa", "bb", "cc"] {
            p.arrive(&name(u));
        }
        // 1 + 2 + 1 + 4 + 2 = 10 bytes with no user, 4 more per user here.
        let snap = p.snapshot(1, 18);
        assert_eq!((snap.total, snap.users.len()), (3, 2));
        assert_eq!(p.snapshot(1, 9).users.len(), 0);
    }

    #[test]
    fn no_log_is_kept_while_nobody_watches_and_a_lapsed_cursor_is_told() {
        let mut p = Presence::default();
        assert!(p.arrive(&name("a")).is_empty(), "nobody to wake");
        assert_eq!(changes(&p, 1), (vec![], 1));
        assert_eq!(p.since(0, 10, |_, _| {}), Err(Lapsed));
        p.set_watching(0, true);
        let cursor = p.snapshot(1, 65_536).cursor;
        for i in 0..=LOG_EVENTS {
            p.arrive(&name(&format!("u{i}")));
        }
        assert_eq!(p.since(cursor, 10, |_, _| {}), Err(Lapsed));
        p.set_watching(0, false);
        assert!(p.watchers.is_empty() && p.log.capacity() == 0);
    }

    #[test]
    fn a_user_other_nodes_list_is_here_until_the_last_source_goes() {
        let mut p = Presence::default();
        p.set_watching(0, true);
        let bob = name("bob");
        assert_eq!(p.node_arrive(&bob), [0], "listed by node B");
        assert!(p.node_arrive(&bob).is_empty(), "and by node C");
        assert!(p.arrive(&bob).is_empty(), "and connected here");
        assert_eq!(p.take_local().users.len(), 1);
        assert!(p.node_depart("bob").is_empty());
        assert!(p.depart("bob").is_empty(), "node C still lists bob");
        assert!(p.take_local().users.is_empty());
        assert!(p.depart("bob").is_empty(), "no connection here to leave");
        assert_eq!(p.node_depart("bob"), [0]);
        assert!(p.node_depart("bob").is_empty(), "nobody lists bob now");
        assert!(p.is_empty());
        assert_eq!(changes(&p, 0), (vec!["bob+".into(), "bob-".into()], 2));
    }

    #[test]
    fn the_local_count_changes_only_with_the_local_set() {
        let mut p = Presence::default();
        let (alice, bob) = (name("alice"), name("bob"));
        let start = p.local_changes();
        p.node_arrive(&alice);
        assert_eq!(p.local_changes(), start, "another node's user");
        p.arrive(&alice);
        p.arrive(&alice);
        p.arrive(&bob);
        let Local {
            changes: after,
            users,
            ..
        } = p.take_local();
        assert_eq!(after, start + 2, "alice, then bob, each once");
        assert_eq!(
            users.iter().map(|u| &**u).collect::<Vec<_>>(),
            ["alice", "bob"]
        );
        p.depart("alice");
        assert_eq!(p.local_changes(), after, "alice still has a connection");
        p.depart("alice");
        assert_eq!(p.local_changes(), after + 1);
        assert_eq!(p.len(), 2, "alice is still listed by another node");
    }

    #[test]
    fn a_shared_room_notes_who_came_and_went_between_two_readings() {
        let mut p = Presence::default();
        let (alice, bob, carol) = (name("alice"), name("bob"), name("carol"));
        p.arrive(&alice);
        p.depart("alice");
        assert!(
            p.take_local().arrivals.is_empty(),
            "not shared: nothing noted"
        );
        p.share();
        p.arrive(&alice);
        p.depart("alice");
        p.arrive(&alice);
        p.depart("alice");
        p.arrive(&bob);
        p.node_arrive(&carol);
        p.arrive(&carol);
        p.depart("carol");
        let local = p.take_local();
        let listed = |v: &[Arc<str>]| v.iter().map(|u| u.to_string()).collect::<Vec<_>>();
        assert_eq!(listed(&local.users), ["bob"]);
        assert_eq!(
            listed(&local.arrivals),
            ["alice", "bob", "carol"],
            "once each"
        );
        assert!(p.take_local().arrivals.is_empty(), "read once");
    }

    #[test]
    fn only_reactors_with_a_watcher_are_woken() {
        let mut p = Presence::default();
        p.set_watching(2, true);
        p.set_watching(0, true);
        p.set_watching(0, false);
        assert_eq!(p.arrive(&name("a")), [2]);
    }
}
