//! The reactor's side of [`Env`]: what a session may ask of the server while the reactor is
//! servicing it. The threads driver (`crate::threads`) uses it too: only where a driver keeps
//! its members of each room differs, behind [`Members`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Instant;

use crate::access::Access;
use crate::auth::Table;
use crate::config::Limits;
use crate::dedupe::SendKey;
use crate::mailbox::ConnRef;
use crate::metrics::Shard;
use crate::protocol::ErrorCode;
use crate::room::{Room, RoomId};
use crate::sequencer::Submit;
use crate::session::Env;
use crate::shared::Shared;
use crate::store::archive::Fetch;

/// Where a driver keeps its members of each room, so that it can wake them when a room
/// advances: a reactor's own map, or the threads driver's map shared with its dispatcher.
pub trait Members {
    fn add(&mut self, room: RoomId, key: usize);
    fn remove(&mut self, room: RoomId, key: usize);
}

/// A reactor's members: its own map, touched by its thread alone.
pub type LocalMembers = HashMap<RoomId, Vec<usize>>;

impl Members for LocalMembers {
    fn add(&mut self, room: RoomId, key: usize) {
        self.entry(room).or_default().push(key);
    }

    fn remove(&mut self, room: RoomId, key: usize) {
        if let Some(keys) = self.get_mut(&room) {
            if let Some(i) = keys.iter().position(|&k| k == key) {
                keys.swap_remove(i);
            }
            if keys.is_empty() {
                self.remove(&room);
            }
        }
    }
}

/// Generic over where members are kept so that the reactor's path compiles to exactly what it
/// was before a second driver existed: no lock, no indirection.
pub struct ConnEnv<'a, M: Members = LocalMembers> {
    pub shared: &'a Shared,
    /// The reactor's snapshot of the limits for this turn.
    pub limits: &'a Limits,
    /// The reactor's snapshot of the users table: a HELLO is checked in memory, never on disk.
    pub users: &'a Table,
    /// The reactor's snapshot of who may use which room.
    pub access: &'a Access,
    pub reactor: usize,
    pub conn: ConnRef,
    /// This reactor's members of each room, for fanout.
    pub members: &'a mut M,
    pub sequencer: &'a Sender<Submit>,
    pub archive: &'a Sender<Fetch>,
    pub now: Instant,
}

impl<M: Members> Env for ConnEnv<'_, M> {
    fn now(&self) -> Instant {
        self.now
    }

    fn limits(&self) -> &Limits {
        self.limits
    }

    fn epoch(&self) -> u64 {
        self.shared.epoch()
    }

    fn session_id(&mut self) -> u64 {
        self.shared.next_session_id()
    }

    fn authenticate(&self, user: &str, token: &str) -> Option<crate::auth::UserName> {
        self.users.login(user, token)
    }

    fn may_use(&self, room: &str, user: &str) -> bool {
        self.access.may_use(room, user)
    }

    fn open_room(&mut self, name: &str) -> Result<Arc<Room>, ErrorCode> {
        self.shared.rooms.open(name)
    }

    fn joined(&mut self, room: &Arc<Room>, user: &Arc<str>) {
        room.add_member(self.reactor);
        self.members.add(room.id, self.conn.key);
        let wake = room.presence(|p| p.arrive(user));
        wake_watchers(self.shared, room, &wake);
    }

    fn left(&mut self, room: &Arc<Room>, user: &str, watching: bool) {
        let (reactor, key) = (self.reactor, self.conn.key);
        forget_member(
            self.shared,
            self.members,
            room,
            reactor,
            key,
            user,
            watching,
        );
    }

    fn watch(&mut self, room: &Arc<Room>, on: bool) {
        room.presence(|p| p.set_watching(self.reactor, on));
    }

    fn submit(
        &mut self,
        room: &Arc<Room>,
        frame: Arc<[u8]>,
        id: u64,
        key: Option<SendKey>,
    ) -> Result<(), ErrorCode> {
        let submit = Submit {
            room: Arc::clone(room),
            frame,
            reactor: self.reactor,
            conn: self.conn,
            id,
            key,
            handed_at: Instant::now(),
        };
        // The sequencer outlives every reactor; a failed send means it died, and the message
        // is not stored.
        self.sequencer.send(submit).map_err(|_| ErrorCode::Storage)
    }

    fn frame_in(&mut self, kind: u8) {
        if let Some(shard) = self.shared.metrics.shard(self.reactor) {
            shard.frame_in(kind);
        }
    }

    fn frame_out(&mut self, kind: u8, count: u64) {
        if let Some(shard) = self.shared.metrics.shard(self.reactor) {
            shard.frame_out(kind, count);
        }
    }

    fn error_sent(&mut self, code: ErrorCode) {
        if let Some(shard) = self.shared.metrics.shard(self.reactor) {
            shard.error(code);
        }
    }

    fn transferred(&mut self, read: u64, written: u64) {
        if let Some(shard) = self.shared.metrics.shard(self.reactor) {
            Shard::add(&shard.bytes_in, read);
            Shard::add(&shard.bytes_out, written);
        }
    }

    fn delivered(&mut self, frames: u64) {
        if let Some(shard) = self.shared.metrics.shard(self.reactor) {
            Shard::add(&shard.delivered, frames);
        }
    }

    fn fetch(&mut self, room: &Arc<Room>, from: u64, max: u64) -> bool {
        let fetch = Fetch {
            reactor: self.reactor,
            conn: self.conn,
            room: Arc::clone(room),
            from,
            max,
        };
        self.archive.send(fetch).is_ok()
    }
}

/// Removes connection `key` of `user` from `room`'s members on reactor `reactor`, and from
/// its watchers if it was `watching`: every way a membership ends (LEAVE, a failed JOIN, a
/// close of any cause) comes here, so that the user's PRESENCE 0 is never missed.
pub fn forget_member(
    shared: &Shared,
    members: &mut impl Members,
    room: &Room,
    reactor: usize,
    key: usize,
    user: &str,
    watching: bool,
) {
    // Stop watching first, in the same hold of the lock: a watcher is never told of its own
    // departure.
    let wake = room.presence(|p| {
        if watching {
            p.set_watching(reactor, false);
        }
        p.depart(user)
    });
    room.remove_member(reactor);
    members.remove(room.id, key);
    wake_watchers(shared, room, &wake);
}

/// Tells each reactor in `reactors` that `room`'s presence changed, through its mailbox: the
/// reactor then services its watchers there, which read the presence log past their cursors.
/// Posted after the room's lock is let go.
pub fn wake_watchers(shared: &Shared, room: &Room, reactors: &[usize]) {
    for &reactor in reactors {
        if let Some(mailbox) = shared.mailboxes.get(reactor) {
            mailbox.post_presence(room.id);
        }
    }
}
