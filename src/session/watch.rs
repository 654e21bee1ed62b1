//! Version 2's "who is here" on the session's side: WHO answered with MEMBERS, WATCH with
//! MEMBERS and then PRESENCE for every change, read from the room's presence log
//! (`crate::presence`) behind a cursor, as room messages are read from the ring.
//!
//! A watch lives only on the session that watches, in its [`Aside`](super::Aside) box: a
//! member that does not watch pays nothing for presence here. A watcher that falls behind the
//! room's bounded log is sent a new MEMBERS and goes on from there, rather than have the
//! server buffer for it; and presence is only queued while the client reads what it was sent
//! (the same high-water mark that pauses input), so a watcher that reads nothing costs the
//! server at most that much. This module must never queue without bound, and never tell a
//! watcher of a change older than its last MEMBERS or twice of one.

use std::sync::Arc;

use super::{Env, OUT_HIGH_WATER, Outbox, Session, State, Wait};
use crate::presence::Lapsed;
use crate::protocol::ServerFrame;
use crate::room::{Room, RoomId};

/// PRESENCE frames queued per watched room per fill: a burst of changes is spread over
/// several writes, as room messages are.
const PRESENCE_PER_FILL: usize = 256;

/// A room this session watches, and the number of the next change it is owed there.
#[derive(Debug)]
pub(super) struct Watch {
    room: RoomId,
    cursor: u64,
}

/// Queues a MEMBERS of `room` as it is now, and returns the number of the first change it
/// does not show: the snapshot and that number are taken in one hold of the room's lock.
fn push_members(out: &mut Outbox, room: &Room, max_frame: u32) -> u64 {
    let snapshot = room.presence(|p| p.snapshot(room.name.len(), max_frame));
    let users = snapshot.users.iter().map(|u| &**u);
    out.push_members(&room.name, snapshot.total, users, max_frame);
    snapshot.cursor
}

impl Session {
    /// WHO (`watch` is `None`) or WATCH of room `name`, which the session has joined.
    /// WATCH 1 of a room already watched, or WHO of it, sends a new MEMBERS and the watch goes
    /// on from it; WATCH 0 is not answered (and of a room not watched does nothing).
    pub(super) fn answer_who(&mut self, name: &str, watch: Option<u8>, env: &mut impl Env) {
        let Some(room) = self
            .rooms
            .iter()
            .find(|m| &*m.room.name == name)
            .map(|m| Arc::clone(&m.room))
        else {
            return;
        };
        let max_frame = env.limits().max_frame;
        match watch {
            None => {
                let cursor = push_members(&mut self.out, &room, max_frame);
                // A WHO of a watched room is a new snapshot for its watch too, so that the
                // PRESENCE after it never repeats a change the MEMBERS already shows.
                if let Some(w) = self
                    .aside
                    .as_deref_mut()
                    .and_then(|a| a.watches.iter_mut().find(|w| w.room == room.id))
                {
                    w.cursor = cursor;
                }
            }
            Some(0) => {
                if self.stop_watching(room.id) {
                    env.watch(&room, false);
                }
            }
            Some(_) => {
                // Registered before the snapshot, so that the room logs every change from
                // the snapshot's number on.
                if !self.is_watching(room.id) {
                    env.watch(&room, true);
                }
                let cursor = push_members(&mut self.out, &room, max_frame);
                let watches = &mut self.aside.get_or_insert_with(Box::default).watches;
                match watches.iter_mut().find(|w| w.room == room.id) {
                    Some(w) => w.cursor = cursor,
                    None => watches.push(Watch {
                        room: room.id,
                        cursor,
                    }),
                }
            }
        }
    }

    /// Whether this session watches `room`: the reactor services only the watchers of a room
    /// whose presence changed.
    pub fn watches(&self, room: RoomId) -> bool {
        self.aside
            .as_deref()
            .is_some_and(|a| a.watches.iter().any(|w| w.room == room))
    }

    /// Queues the changes each watched room owes, while the client reads what it is sent.
    /// Only a chatting session is told: after BYE or a fatal error nothing more is owed.
    pub(super) fn fill_presence(&mut self, env: &mut impl Env) {
        if !matches!(self.state, State::Ready { .. }) {
            return;
        }
        let Some(aside) = self.aside.as_deref_mut() else {
            return;
        };
        let max_frame = env.limits().max_frame;
        for w in &mut aside.watches {
            if self.out.owned_bytes() >= OUT_HIGH_WATER {
                // Left in the log; when the client has read, the next fill goes on.
                break;
            }
            let Some(m) = self.rooms.iter().find(|m| m.room.id == w.room) else {
                continue;
            };
            let (room, out) = (&m.room, &mut self.out);
            let read = room.presence(|p| {
                p.since(w.cursor, PRESENCE_PER_FILL, |user, here| {
                    out.push_frame(&ServerFrame::Presence {
                        room: &room.name,
                        user,
                        here,
                    });
                })
            });
            w.cursor = match read {
                Ok(next) => next,
                // What it missed is gone from the log: start again from who is here now.
                Err(Lapsed) => push_members(out, room, max_frame),
            };
        }
    }

    /// Ends the `i`th membership, and its watch if there is one; false if there is none.
    pub(super) fn drop_membership(&mut self, i: usize, env: &mut impl Env) -> bool {
        let Some(m) = self.rooms.remove(i) else {
            return false;
        };
        let watching = self.stop_watching(m.room.id);
        env.left(&m.room, self.user.user(), watching);
        true
    }

    /// Whether the session watches room `id`.
    pub(super) fn is_watching(&self, id: RoomId) -> bool {
        self.aside
            .as_deref()
            .is_some_and(|a| a.watches.iter().any(|w| w.room == id))
    }

    /// Forgets the watch of room `id`; returns whether there was one.
    fn stop_watching(&mut self, id: RoomId) -> bool {
        let Some(aside) = self.aside.as_deref_mut() else {
            return false;
        };
        let Some(i) = aside.watches.iter().position(|w| w.room == id) else {
            return false;
        };
        aside.watches.swap_remove(i);
        if aside.watches.is_empty() {
            aside.watches = Vec::new();
        }
        self.tidy_aside();
        true
    }

    /// What holds input back, if anything does.
    pub(super) fn waiting(&self) -> Option<&Wait> {
        self.aside.as_deref().and_then(|a| a.wait.as_ref())
    }

    pub(super) fn set_wait(&mut self, wait: Wait) {
        self.aside.get_or_insert_with(Box::default).wait = Some(wait);
    }

    /// Takes what held input back, if anything did.
    pub(super) fn take_wait(&mut self) -> Option<Wait> {
        let wait = self.aside.as_deref_mut().and_then(|a| a.wait.take());
        self.tidy_aside();
        wait
    }

    /// Gives the box back once it holds nothing, so that an idle session owns no heap here.
    fn tidy_aside(&mut self) {
        if self
            .aside
            .as_deref()
            .is_some_and(|a| a.wait.is_none() && a.watches.is_empty())
        {
            self.aside = None;
        }
    }
}
