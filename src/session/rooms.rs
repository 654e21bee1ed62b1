//! The rooms a session has joined, and where it stands in each.
//!
//! Nearly every connection is in exactly one room, so the first membership is kept inline
//! and only a second one moves them all to the heap: a member of one room owns no heap memory
//! for it. To the session the memberships are a plain slice (through `Deref`), in the order
//! they were joined; this module must never reorder them or hand out a membership that is not
//! one.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crate::room::Room;

/// A room this session has joined, and the next seq it is owed there.
#[derive(Debug)]
pub(super) struct Membership {
    pub room: Arc<Room>,
    pub cursor: u64,
    /// The last seq owed: the head when the session stopped taking frames (or u64::MAX).
    pub until: u64,
    /// A log read is under way from this seq ([`NOT_FETCHING`] if none); the room is not
    /// filled from memory meanwhile. A sentinel rather than an `Option`, which would cost
    /// every membership 8 more bytes: a fetch starts below the ring's first seq, never at
    /// u64::MAX.
    fetching: u64,
}

/// [`Membership::fetching`] when no log read is under way.
const NOT_FETCHING: u64 = u64::MAX;

impl Membership {
    pub fn new(room: Arc<Room>, cursor: u64) -> Membership {
        Membership {
            room,
            cursor,
            until: u64::MAX,
            fetching: NOT_FETCHING,
        }
    }

    /// The seq a log read under way started from, if one is.
    pub fn fetching(&self) -> Option<u64> {
        (self.fetching != NOT_FETCHING).then_some(self.fetching)
    }

    /// A log read started from `from`, or (`None`) none is under way any more.
    pub fn set_fetching(&mut self, from: Option<u64>) {
        self.fetching = from.unwrap_or(NOT_FETCHING);
    }
}

/// The memberships: one inline, or any number (none included) on the heap.
#[derive(Debug)]
pub(super) enum Rooms {
    One(Membership),
    Many(Vec<Membership>),
}

// One membership inline, and not a byte more: the enum's tag hides in the Arc's niche.
const _: () = assert!(std::mem::size_of::<Membership>() == 32);
const _: () = assert!(std::mem::size_of::<Rooms>() == 32);

impl Default for Rooms {
    fn default() -> Rooms {
        Rooms::Many(Vec::new())
    }
}

impl Rooms {
    /// Joins one more room, after the others.
    pub fn push(&mut self, m: Membership) {
        match self {
            Rooms::Many(all) if all.is_empty() => *self = Rooms::One(m),
            Rooms::Many(all) => all.push(m),
            Rooms::One(_) => {
                if let Rooms::One(first) = std::mem::take(self) {
                    *self = Rooms::Many(vec![first, m]);
                }
            }
        }
    }

    /// Leaves the `i`th room; the others keep their order.
    pub fn remove(&mut self, i: usize) -> Option<Membership> {
        match self {
            Rooms::One(_) if i == 0 => match std::mem::take(self) {
                Rooms::One(m) => Some(m),
                Rooms::Many(_) => None,
            },
            Rooms::One(_) => None,
            Rooms::Many(all) if i < all.len() => {
                let m = all.remove(i);
                if all.is_empty() {
                    // Back to no heap memory at all.
                    *all = Vec::new();
                }
                Some(m)
            }
            Rooms::Many(_) => None,
        }
    }
}

impl Deref for Rooms {
    type Target = [Membership];

    fn deref(&self) -> &[Membership] {
        match self {
            Rooms::One(m) => std::slice::from_ref(m),
            Rooms::Many(all) => all,
        }
    }
}

impl DerefMut for Rooms {
    fn deref_mut(&mut self) -> &mut [Membership] {
        match self {
            Rooms::One(m) => std::slice::from_mut(m),
            Rooms::Many(all) => all,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(room: &Arc<Room>, cursor: u64) -> Membership {
        Membership::new(Arc::clone(room), cursor)
    }

    fn room(name: &str) -> Arc<Room> {
        let limits = crate::config::Limits::default();
        let rooms = crate::room::Rooms::new(8, 1, limits.ring);
        rooms.open(name).expect("a room under the limit")
    }

    #[test]
    fn join_and_leave_keep_the_order_of_joining() {
        let rooms: Vec<Arc<Room>> = ["a", "b", "c"].into_iter().map(room).collect();
        let mut joined = Rooms::default();
        assert!(joined.is_empty());
        for (i, room) in rooms.iter().enumerate() {
            joined.push(member(room, i as u64));
        }
        let cursors = |r: &Rooms| r.iter().map(|m| m.cursor).collect::<Vec<_>>();
        assert_eq!(cursors(&joined), [0, 1, 2]);
        assert_eq!(joined.remove(1).map(|m| m.cursor), Some(1));
        assert_eq!(cursors(&joined), [0, 2]);
        assert!(joined.remove(2).is_none());
        assert_eq!(joined.remove(0).map(|m| m.cursor), Some(0));
        assert_eq!(joined.remove(0).map(|m| m.cursor), Some(2));
        assert!(joined.is_empty());
        assert!(joined.remove(0).is_none());
    }

    #[test]
    fn one_room_is_kept_inline() {
        let room = room("a");
        let mut joined = Rooms::default();
        joined.push(member(&room, 5));
        assert!(matches!(joined, Rooms::One(_)));
        joined.push(member(&room, 6));
        assert!(matches!(&joined, Rooms::Many(all) if all.len() == 2));
        joined.remove(0);
        joined.remove(0);
        assert!(matches!(&joined, Rooms::Many(all) if all.capacity() == 0));
    }

    #[test]
    fn fetching_round_trips() {
        let room = room("a");
        let mut m = member(&room, 3);
        assert_eq!(m.fetching(), None);
        m.set_fetching(Some(2));
        assert_eq!(m.fetching(), Some(2));
        m.set_fetching(None);
        assert_eq!(m.fetching(), None);
    }
}
