//! The one fake of the server that drives a [`Session`] in the session tests and in the
//! session fuzzer: a clock the caller advances, two users, a real [`Rooms`] registry, a
//! sequencer played by hand, and a log with an archive that reads it back.
//!
//! The log runs ahead of the rings the way the real one does while a batch is being synced:
//! [`FakeEnv::write`] gives the pending SENDs their seqs and puts them in the log, in flight;
//! [`FakeEnv::settle`] then publishes each to its ring and ACKs it, or, for a failed sync,
//! cuts it off the log and answers STORAGE, and its seq goes to the next message. The archive
//! ([`FakeEnv::answer_fetches`]) reads the log but, like `store::archive`, never past a room's
//! durable head (the ring's head); `archive_past_head` turns that bound off, so that a test
//! can show a member given a message that was never stored is caught.
//!
//! This module must never panic except where a session broke a promise (a frame it kept a
//! copy of, a MSG not of its room), and never hand the session anything the real server
//! would not.

use crate::access::Access;
use crate::batch_frames::Frame;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Limits;
use crate::mailbox::Gone;
use crate::protocol::codec::stamp_msg;
use crate::protocol::{ErrorCode, ServerFrame, encode_server};
use crate::room::{Room, RoomId, Rooms};
use crate::session::{Env, Session};

/// The epoch WELCOME carries.
pub const EPOCH: u64 = 0x1122_3344_5566_7788;
/// The time the sequencer stamps into every MSG.
pub const TS_MS: u64 = 1_700_000_000_000;
/// The users and their tokens.
pub const USERS: [(&str, &str); 2] = [("alice", "s3cret"), ("bob", "hunter2")];

/// A message the log holds but no ring has yet: its batch is still being synced.
#[derive(Debug)]
pub struct InFlight {
    pub room: Arc<Room>,
    pub seq: u64,
    pub frame: Arc<[u8]>,
    /// The SEND it answers, or `None` for another member's message.
    pub id: Option<u64>,
}

pub struct FakeEnv {
    pub now: Instant,
    /// The names of [`USERS`], shared with every session that logs in, as the real users
    /// table shares its own.
    users: Vec<crate::auth::UserName>,
    pub limits: Limits,
    pub rooms: Rooms,
    /// SENDs handed to the sequencer and not yet written.
    pub submitted: Vec<(Arc<Room>, Arc<[u8]>, u64)>,
    /// The key each SEND was submitted with, in submission order (never taken by `store`).
    pub keys: Vec<Option<crate::dedupe::SendKey>>,
    pub sessions: u64,
    /// `joined` calls minus `left` calls.
    pub members: i64,
    /// `watch` calls that started a watch, minus those (and `left` calls) that ended one.
    pub watchers: i64,
    /// The rooms bob's connection elsewhere is in ([`FakeEnv::other_connection`]).
    elsewhere: std::collections::HashSet<RoomId>,
    /// Every frame each room's log holds, by seq - 1: the durable ones, then those in flight.
    pub log: HashMap<RoomId, Vec<Arc<[u8]>>>,
    /// The batch written and not yet settled, in log order.
    pub in_flight: Vec<InFlight>,
    /// Whether `fetch` has a log to ask (false: a member behind the window is dropped).
    pub archive: bool,
    /// Log reads asked for and not yet answered: room, from, max.
    pub fetches: Vec<(Arc<Room>, u64, u64)>,
    /// Lets the archive serve what the log holds past the durable head: the bug it must not
    /// have, for tests that show it is caught.
    pub archive_past_head: bool,
    /// Who may use which room: [`PRIVATE_ROOM`] is alice's alone; tests may change it.
    pub access: Access,
}

/// A private room of the fake server that only alice may use, so that fuzzed input meets
/// FORBIDDEN as well as the rest.
pub const PRIVATE_ROOM: &str = "staff";

impl FakeEnv {
    /// An environment with the default limits, changed by `tweak`, and no archive.
    pub fn with(tweak: impl FnOnce(&mut Limits)) -> FakeEnv {
        let mut limits = Limits::default();
        tweak(&mut limits);
        FakeEnv {
            now: Instant::now(),
            users: USERS
                .iter()
                .map(|&(u, _)| crate::auth::UserName::new(Arc::from(u)))
                .collect(),
            rooms: Rooms::new(limits.max_rooms, 1, limits.ring),
            limits,
            submitted: Vec::new(),
            keys: Vec::new(),
            sessions: 0,
            members: 0,
            watchers: 0,
            elsewhere: std::collections::HashSet::new(),
            log: HashMap::new(),
            in_flight: Vec::new(),
            archive: false,
            fetches: Vec::new(),
            archive_past_head: false,
            access: Access::default().with_private(PRIVATE_ROOM, &["alice"]),
        }
    }

    pub fn new() -> FakeEnv {
        FakeEnv::with(|_| {})
    }

    pub fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
    }

    /// Plays the sequencer whole: stores every pending SEND and reports it to `s`.
    pub fn store(&mut self, s: &mut Session) {
        self.store_each(s, |_| true);
    }

    /// Stores each pending SEND as a batch of its own, written and then published if
    /// `synced(i)`, or cut off again and answered STORAGE (its seq goes to the next one).
    /// Returns each SEND's id and answer.
    pub fn store_each(
        &mut self,
        s: &mut Session,
        mut synced: impl FnMut(usize) -> bool,
    ) -> Vec<(u64, Result<u64, ErrorCode>)> {
        let mut answers = Vec::new();
        for (i, (room, frame, id)) in std::mem::take(&mut self.submitted).into_iter().enumerate() {
            self.write_one(&room, frame, Some(id));
            answers.extend(self.settle(s, synced(i)));
        }
        answers
    }

    /// The first half of a batch: every pending SEND gets its seq and goes into the log, in
    /// flight, after whatever is in flight already; nothing is published or answered yet.
    /// Returns the SEND ids written.
    pub fn write(&mut self) -> Vec<u64> {
        let mut ids = Vec::new();
        for (room, frame, id) in std::mem::take(&mut self.submitted) {
            self.write_one(&room, frame, Some(id));
            ids.push(id);
        }
        ids
    }

    /// The second half: if `synced`, every message in flight is published and ACKed;
    /// otherwise the whole batch is cut off the log and its SENDs answered STORAGE, and its
    /// seqs go to the next messages. Returns each SEND's id and answer.
    pub fn settle(&mut self, s: &mut Session, synced: bool) -> Vec<(u64, Result<u64, ErrorCode>)> {
        let mut answers = Vec::new();
        let in_flight = std::mem::take(&mut self.in_flight);
        if synced {
            // As the sequencer does: each room's frames of the batch back to back in one buffer.
            let mut rooms: Vec<&Arc<Room>> = Vec::new();
            for m in &in_flight {
                if !rooms.iter().any(|r| Arc::ptr_eq(r, &m.room)) {
                    rooms.push(&m.room);
                }
            }
            for room in rooms {
                let mine = || in_flight.iter().filter(|m| Arc::ptr_eq(&m.room, room));
                let frames = Frame::together(mine().map(|m| &m.frame[..]));
                for (frame, m) in frames.into_iter().zip(mine()) {
                    let seq = room.write(|ring| ring.append(frame, self.limits.ring, None));
                    assert_eq!(seq, m.seq, "the ring and the log disagree");
                }
            }
        }
        for m in in_flight {
            let result = if synced {
                Ok(m.seq)
            } else {
                if let Some(log) = self.log.get_mut(&m.room.id) {
                    log.truncate(usize::try_from(m.seq - 1).unwrap_or(usize::MAX));
                }
                Err(ErrorCode::Storage)
            };
            if let Some(id) = m.id {
                s.on_stored(id, result, self.now);
                answers.push((id, result));
            }
        }
        answers
    }

    /// Stores a message from someone else, as another member's SEND would: published at once,
    /// or, while a batch is in flight, written into it.
    pub fn post(&mut self, room: &str, user: &str, text: &str) {
        let Ok(room) = self.rooms.open(room) else {
            return;
        };
        let mut frame = Vec::new();
        let msg = ServerFrame::Msg {
            room: &room.name,
            seq: 0,
            ts_ms: 0,
            user,
            text,
        };
        encode_server(&msg, &mut frame);
        let seq = self.write_one(&room, frame.into(), None);
        if self.in_flight.len() == 1 {
            // Nothing else in flight: this message is its own batch, synced at once.
            if let Some(m) = self.in_flight.pop() {
                let got =
                    room.write(|ring| ring.append(Frame::whole(m.frame), self.limits.ring, None));
                assert_eq!(got, seq, "the ring and the log disagree");
            }
        }
    }

    /// Bob's connection elsewhere joins `room` (if the room exists), or leaves it if it had:
    /// the presence another session's JOIN or close makes, for a watcher to be told of.
    pub fn other_connection(&mut self, room: &str) {
        let Some(room) = self.rooms.get(room) else {
            return;
        };
        let Some(bob) = self.users.get(1).cloned() else {
            return;
        };
        if self.elsewhere.remove(&room.id) {
            room.presence(|p| p.depart(bob.as_str()));
        } else {
            self.elsewhere.insert(room.id);
            room.presence(|p| p.arrive(bob.shared()));
        }
    }

    /// Stamps the next seq of `room`'s log into `frame` and appends it to the log, in flight.
    fn write_one(&mut self, room: &Arc<Room>, mut frame: Arc<[u8]>, id: Option<u64>) -> u64 {
        let log = self.log.entry(room.id).or_default();
        let head = room.read(|ring| ring.head());
        assert!(log.len() as u64 >= head, "the log lost a durable message");
        let seq = log.len() as u64 + 1;
        let bytes = Arc::get_mut(&mut frame).expect("the session kept a copy of its frame");
        assert!(
            stamp_msg(bytes, room.name.len(), seq, TS_MS),
            "a submitted frame is not a MSG of its room"
        );
        log.push(Arc::clone(&frame));
        self.in_flight.push(InFlight {
            room: Arc::clone(room),
            seq,
            frame,
            id,
        });
        seq
    }

    /// The durable frame of `room` at `seq`, as the log holds it.
    pub fn durable(&self, room: &Room, seq: u64) -> Option<&Arc<[u8]>> {
        let head = room.read(|ring| ring.head());
        let index = usize::try_from(seq.checked_sub(1)?).ok()?;
        (seq <= head)
            .then(|| self.log.get(&room.id)?.get(index))
            .flatten()
    }

    /// Plays the archive: answers every pending log read with the frames from the log up to
    /// the room's durable head, or with `Gone` if `gone`.
    pub fn answer_fetches(&mut self, s: &mut Session, gone: bool) {
        for (room, from, max) in std::mem::take(&mut self.fetches) {
            let frames = if gone {
                Err(Gone)
            } else {
                let log = self
                    .log
                    .get(&room.id)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let head = room.read(|ring| ring.head());
                let end = if self.archive_past_head {
                    log.len()
                } else {
                    usize::try_from(head).unwrap_or(usize::MAX).min(log.len())
                };
                let start = usize::try_from(from - 1).unwrap_or(usize::MAX).min(end);
                let stop = usize::try_from(max)
                    .unwrap_or(usize::MAX)
                    .saturating_add(start)
                    .min(end);
                let frames = log.get(start..stop).unwrap_or_default();
                if frames.is_empty() {
                    Err(Gone)
                } else {
                    // As the archive answers: the frames back to back in one buffer.
                    Ok(Frame::together(frames.iter().map(|f| &f[..])))
                }
            };
            s.on_fetched(room.id, from, frames, self.now);
        }
    }
}

impl Default for FakeEnv {
    fn default() -> FakeEnv {
        FakeEnv::new()
    }
}

impl Env for FakeEnv {
    fn now(&self) -> Instant {
        self.now
    }
    fn limits(&self) -> &Limits {
        &self.limits
    }
    fn epoch(&self) -> u64 {
        EPOCH
    }
    fn session_id(&mut self) -> u64 {
        self.sessions += 1;
        self.sessions
    }
    fn authenticate(&self, user: &str, token: &str) -> Option<crate::auth::UserName> {
        let i = USERS.iter().position(|&(u, t)| u == user && t == token)?;
        self.users.get(i).cloned()
    }
    fn may_use(&self, room: &str, user: &str) -> bool {
        self.access.may_use(room, user)
    }
    fn open_room(&mut self, name: &str) -> Result<Arc<Room>, ErrorCode> {
        self.rooms.open(name)
    }
    fn joined(&mut self, room: &Arc<Room>, user: &Arc<str>) {
        self.members += 1;
        room.presence(|p| p.arrive(user));
    }
    fn left(&mut self, room: &Arc<Room>, user: &str, watching: bool) {
        self.members -= 1;
        self.watchers -= i64::from(watching);
        room.presence(|p| {
            if watching {
                p.set_watching(0, false);
            }
            p.depart(user)
        });
    }
    fn watch(&mut self, room: &Arc<Room>, on: bool) {
        self.watchers += if on { 1 } else { -1 };
        room.presence(|p| p.set_watching(0, on));
    }
    fn submit(
        &mut self,
        room: &Arc<Room>,
        frame: Arc<[u8]>,
        id: u64,
        key: Option<crate::dedupe::SendKey>,
    ) -> Result<(), ErrorCode> {
        self.keys.push(key);
        self.submitted.push((Arc::clone(room), frame, id));
        Ok(())
    }
    fn fetch(&mut self, room: &Arc<Room>, from: u64, max: u64) -> bool {
        if !self.archive {
            return false;
        }
        assert!(from >= 1 && max >= 1, "fetch of nothing: {from} {max}");
        self.fetches.push((Arc::clone(room), from, max));
        true
    }
}
