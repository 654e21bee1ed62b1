//! The reactor's side of [`Env`]: what a session may ask of the server while the reactor is
//! servicing it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Instant;

use crate::auth::Table;
use crate::config::Limits;
use crate::mailbox::ConnRef;
use crate::metrics::Shard;
use crate::protocol::ErrorCode;
use crate::room::{Room, RoomId};
use crate::sequencer::Submit;
use crate::session::Env;
use crate::shared::Shared;
use crate::store::archive::Fetch;

pub struct ConnEnv<'a> {
    pub shared: &'a Shared,
    /// The reactor's snapshot of the limits for this turn.
    pub limits: &'a Limits,
    /// The reactor's snapshot of the users table: a HELLO is checked in memory, never on disk.
    pub users: &'a Table,
    pub reactor: usize,
    pub conn: ConnRef,
    /// This reactor's members of each room, for fanout.
    pub members: &'a mut HashMap<RoomId, Vec<usize>>,
    pub sequencer: &'a Sender<Submit>,
    pub archive: &'a Sender<Fetch>,
    pub now: Instant,
}

impl Env for ConnEnv<'_> {
    fn now(&self) -> Instant {
        self.now
    }

    fn limits(&self) -> &Limits {
        self.limits
    }

    fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    fn session_id(&mut self) -> u64 {
        self.shared.next_session_id()
    }

    fn authenticate(&self, user: &str, token: &str) -> bool {
        self.users.verify(user, token)
    }

    fn open_room(&mut self, name: &str) -> Result<Arc<Room>, ErrorCode> {
        self.shared.rooms.open(name)
    }

    fn joined(&mut self, room: &Arc<Room>) {
        room.add_member(self.reactor);
        self.members.entry(room.id).or_default().push(self.conn.key);
    }

    fn left(&mut self, room: &Arc<Room>) {
        forget_member(self.members, room, self.reactor, self.conn.key);
    }

    fn submit(&mut self, room: &Arc<Room>, frame: Arc<[u8]>, id: u64) -> Result<(), ErrorCode> {
        let submit = Submit {
            room: Arc::clone(room),
            frame,
            reactor: self.reactor,
            conn: self.conn,
            id,
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

    fn frame_out(&mut self, kind: u8) {
        if let Some(shard) = self.shared.metrics.shard(self.reactor) {
            shard.frame_out(kind);
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

/// Removes connection `key` from `room`'s members on this reactor.
pub fn forget_member(
    members: &mut HashMap<RoomId, Vec<usize>>,
    room: &Room,
    reactor: usize,
    key: usize,
) {
    room.remove_member(reactor);
    if let Some(keys) = members.get_mut(&room.id) {
        if let Some(i) = keys.iter().position(|&k| k == key) {
            keys.swap_remove(i);
        }
        if keys.is_empty() {
            members.remove(&room.id);
        }
    }
}
