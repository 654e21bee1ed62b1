//! Rooms, and the in-memory ring of encoded MSG frames each room keeps.
//!
//! A message is encoded once, as the exact MSG frame every member will receive, and kept here
//! behind an `Arc`. Members do not get copies or queues: each holds a cursor (the next seq it
//! is owed) and pulls frames from the ring as its socket drains. The ring is the in-memory
//! window of the room's history; the sequencer is its only writer.
//!
//! This module must never block a reactor for long: readers hold the lock only to clone a
//! bounded number of `Arc`s.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::batch_frames::Frame;
use crate::presence::Presence;
use crate::protocol::ErrorCode;

/// How much history each room keeps in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLimits {
    /// At most this many messages per room.
    pub messages: usize,
    /// At most this many bytes of encoded frames per room.
    pub bytes: usize,
}

/// Where a record sits in the log: segment id and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

/// Every how many messages of a room the log index keeps a position: replay from disk starts
/// at most this many of the room's records before the one it wants.
pub const INDEX_STRIDE: u64 = 32;

/// One room's history: the newest messages in memory as encoded MSG frames (the window),
/// and, for what is only on disk, a sparse index into the log.
#[derive(Debug, Default)]
pub struct Ring {
    frames: VecDeque<Frame>,
    /// Seq of `frames[0]`; meaningful only when `frames` is non-empty.
    window_first: u64,
    /// Newest seq ever assigned in this room (0 if none).
    head: u64,
    /// Oldest seq retained anywhere, memory or disk (0 if none is).
    first: u64,
    bytes: usize,
    /// `(seq, position)` of every `INDEX_STRIDE`-th record of this room on disk, oldest first.
    index: Vec<(u64, Pos)>,
}

/// The cursor is older than the in-memory window: the frames it is owed are on disk (or,
/// past retention, gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behind;

impl Ring {
    /// `(first, head)` as JOINED reports them: `first` is the oldest retained seq (0 if none
    /// is retained), `head` the newest seq (0 if the room never had a message).
    pub fn bounds(&self) -> (u64, u64) {
        (self.first, self.head)
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    /// Appends the frame for seq `head + 1` and evicts the oldest frames of the window past
    /// the limits. `pos` is where the log stored it; without a log (`None`), eviction from the
    /// window is the end of retention and moves `first`. Returns the seq assigned.
    pub fn append(&mut self, frame: Frame, limits: RingLimits, pos: Option<Pos>) -> u64 {
        self.push(frame, limits, |head, index| {
            if let Some(pos) = pos
                && (index.is_empty() || (head - 1).is_multiple_of(INDEX_STRIDE))
            {
                index.push((head, pos));
            }
        });
        if pos.is_none() {
            self.first = self.first.max(self.window_first);
        }
        self.head
    }

    /// Appends the frame for seq `head + 1` of a room whose history is kept outside this
    /// process (a JetStream stream): eviction from the window is not the end of retention,
    /// and there is no log to index. Returns the seq assigned.
    pub fn append_kept_elsewhere(&mut self, frame: Frame, limits: RingLimits) -> u64 {
        self.push(frame, limits, |_, _| {});
        self.head
    }

    /// Seqs before `seq` were deleted (retention) before this process saw them: the window
    /// restarts empty at `seq`, which is the next one appended.
    pub fn skip_to(&mut self, seq: u64) {
        if seq <= self.head + 1 {
            return;
        }
        self.frames.clear();
        self.bytes = 0;
        self.head = seq - 1;
        self.window_first = seq;
        self.first = self.first.max(seq);
    }

    /// Retention elsewhere deleted every seq before `first` (0: none is retained).
    pub fn set_first(&mut self, first: u64) {
        self.first = if first > self.head { 0 } else { first };
    }

    /// The shared part of appending: the seq, the window, the eviction. `index` is given the
    /// new head and the index to add a position to.
    fn push(
        &mut self,
        frame: Frame,
        limits: RingLimits,
        index: impl FnOnce(u64, &mut Vec<(u64, Pos)>),
    ) {
        self.head += 1;
        if self.first == 0 {
            self.first = self.head;
        }
        if self.frames.is_empty() {
            self.window_first = self.head;
        }
        index(self.head, &mut self.index);
        self.bytes += frame.len();
        self.frames.push_back(frame);
        // Always keep the newest frame, however large, so that a live member can be served.
        while self.frames.len() > 1
            && (self.frames.len() > limits.messages || self.bytes > limits.bytes)
        {
            if let Some(old) = self.frames.pop_front() {
                self.bytes -= old.len();
                self.window_first += 1;
            }
        }
    }

    /// Restores a room from the log at start-up: its bounds and index, an empty window.
    pub fn restore(&mut self, first: u64, head: u64, index: Vec<(u64, Pos)>) {
        *self = Ring {
            frames: VecDeque::new(),
            window_first: head + 1,
            head,
            first,
            bytes: 0,
            index,
        };
    }

    /// Retention deleted the log segment `segment`, which held this room's messages up to
    /// `last_seq`: they are no longer retained.
    pub fn forget_through(&mut self, last_seq: u64, segment: u64) {
        if last_seq >= self.head {
            self.first = 0;
        } else {
            self.first = self.first.max(last_seq + 1);
        }
        self.index.retain(|&(_, pos)| pos.segment > segment);
    }

    /// Where to start reading the log for seq `seq`: the indexed record at or before it.
    pub fn locate(&self, seq: u64) -> Option<Pos> {
        let i = self.index.partition_point(|&(s, _)| s <= seq);
        i.checked_sub(1)
            .and_then(|i| self.index.get(i))
            .map(|&(_, pos)| pos)
    }

    /// The oldest seq held in memory (head + 1 if the window is empty).
    pub fn window_first(&self) -> u64 {
        if self.frames.is_empty() {
            self.head + 1
        } else {
            self.window_first
        }
    }

    /// The frame of `seq`, if it is in the window.
    pub fn frame_at(&self, seq: u64) -> Option<&Frame> {
        if self.frames.is_empty() || seq < self.window_first || seq > self.head {
            return None;
        }
        self.frames
            .get(usize::try_from(seq - self.window_first).ok()?)
    }

    /// Hands frames with seq `cursor..` to `sink`, at most `max` of them, and returns the
    /// next cursor.
    ///
    /// # Errors
    /// `Behind` if seq `cursor` is no longer in the window.
    pub fn read_from(
        &self,
        cursor: u64,
        max: usize,
        mut sink: impl FnMut(&Frame),
    ) -> Result<u64, Behind> {
        if cursor > self.head {
            return Ok(cursor);
        }
        if self.frames.is_empty() || cursor < self.window_first {
            return Err(Behind);
        }
        let skip = usize::try_from(cursor - self.window_first).map_err(|_| Behind)?;
        let mut next = cursor;
        for frame in self.frames.iter().skip(skip).take(max) {
            sink(frame);
            next += 1;
        }
        Ok(next)
    }
}

/// Dense id of a room within one server run, for cheap per-reactor indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub u32);

/// Whether this process knows a room's history yet. With the local log it always does; with
/// a store elsewhere (JetStream) a room is `Loading` from its first JOIN on this node until the
/// store has said where its history stands, and `Failed` if the store could not be asked (the
/// next JOIN asks again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    Yes,
    Loading,
    Failed,
}

impl Loaded {
    const fn code(self) -> u8 {
        match self {
            Loaded::Yes => 0,
            Loaded::Loading => 1,
            Loaded::Failed => 2,
        }
    }

    const fn of(code: u8) -> Loaded {
        match code {
            0 => Loaded::Yes,
            1 => Loaded::Loading,
            _ => Loaded::Failed,
        }
    }
}

/// A room: its name, its ring, and how many members each reactor has in it.
#[derive(Debug)]
pub struct Room {
    pub id: RoomId,
    pub name: Box<str>,
    ring: RwLock<Ring>,
    /// Members per reactor, so that the sequencer wakes only reactors with someone to serve.
    members: Box<[AtomicU32]>,
    /// A [`Loaded`], as its code.
    loaded: AtomicU8,
    /// Who is here (version 2's WHO and WATCH): its own lock, apart from the ring's, so that
    /// joins and leaves never hold up the sequencer or the members reading the ring.
    presence: Mutex<Presence>,
}

impl Room {
    fn new(id: RoomId, name: &str, reactors: usize, loaded: Loaded) -> Room {
        Room {
            id,
            name: name.into(),
            ring: RwLock::new(Ring::default()),
            members: (0..reactors).map(|_| AtomicU32::new(0)).collect(),
            loaded: AtomicU8::new(loaded.code()),
            presence: Mutex::new(Presence::default()),
        }
    }

    /// Runs `f` with the room's presence locked; `f` must be short (see `crate::presence`).
    /// A poisoned lock is still used: every change to a `Presence` is one map or log step,
    /// which leaves it consistent.
    pub fn presence<R>(&self, f: impl FnOnce(&mut Presence) -> R) -> R {
        f(&mut self.presence.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether the room's history is known here. `SeqCst`, paired with [`Room::add_member`]
    /// and the store's check of the members: a JOIN that waits for the load either sees it
    /// done or is seen as a member to wake.
    pub fn loaded(&self) -> Loaded {
        Loaded::of(self.loaded.load(Ordering::SeqCst))
    }

    /// The store settled the room's history (`Yes`) or could not (`Failed`).
    pub fn set_loaded(&self, loaded: Loaded) {
        self.loaded.store(loaded.code(), Ordering::SeqCst);
    }

    /// Moves a `Failed` room back to `Loading`; true if this call did (and so must ask the
    /// store again).
    fn retry_load(&self) -> bool {
        self.loaded
            .compare_exchange(
                Loaded::Failed.code(),
                Loaded::Loading.code(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    }

    /// Runs `f` with the ring read-locked. A poisoned lock is still read: the ring is only
    /// ever mutated by `Ring::append`, which leaves it consistent at every step.
    pub fn read<R>(&self, f: impl FnOnce(&Ring) -> R) -> R {
        f(&self.ring.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Runs `f` with the ring write-locked. Only the sequencer calls this.
    pub fn write<R>(&self, f: impl FnOnce(&mut Ring) -> R) -> R {
        f(&mut self.ring.write().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn add_member(&self, reactor: usize) {
        if let Some(count) = self.members.get(reactor) {
            count.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub fn remove_member(&self, reactor: usize) {
        if let Some(count) = self.members.get(reactor) {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether reactor `reactor` has any member in this room.
    pub fn has_members_on(&self, reactor: usize) -> bool {
        self.members
            .get(reactor)
            .is_some_and(|c| c.load(Ordering::SeqCst) > 0)
    }
}

/// Asks the store elsewhere to load a room (and follow it): given each room that becomes
/// `Loading`. It must not block: it runs on the reactor that opened the room.
pub type Follow = Box<dyn Fn(&Arc<Room>) + Send + Sync>;

/// Every room of the server, created on first JOIN.
pub struct Rooms {
    by_name: RwLock<HashMap<Box<str>, Arc<Room>>>,
    /// Settable while running (SIGHUP): a lower value creates no new room but removes none.
    max_rooms: AtomicUsize,
    reactors: usize,
    pub ring_limits: RingLimits,
    /// With a store elsewhere, who loads new rooms; `None` with the local log, whose rooms
    /// are all known from the start.
    follow: Option<Follow>,
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rooms")
            .field("rooms", &self.len())
            .field("reactors", &self.reactors)
            .field("ring_limits", &self.ring_limits)
            .field("kept_elsewhere", &self.follow.is_some())
            .finish()
    }
}

impl Rooms {
    pub fn new(max_rooms: usize, reactors: usize, ring_limits: RingLimits) -> Rooms {
        Rooms {
            by_name: RwLock::new(HashMap::new()),
            max_rooms: AtomicUsize::new(max_rooms),
            reactors,
            ring_limits,
            follow: None,
        }
    }

    /// Rooms whose history is kept elsewhere: each new room starts `Loading` and is handed
    /// to `follow`.
    #[must_use]
    pub fn kept_elsewhere(mut self, follow: Follow) -> Rooms {
        self.follow = Some(follow);
        self
    }

    /// The room called `name`, created if it does not exist yet.
    ///
    /// # Errors
    /// `TOO_MANY` if creating it would pass the server's room limit.
    pub fn open(&self, name: &str) -> Result<Arc<Room>, ErrorCode> {
        let found = self
            .by_name
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned();
        if let Some(room) = found {
            if let Some(follow) = &self.follow
                && room.retry_load()
            {
                follow(&room);
            }
            return Ok(room);
        }
        let room = {
            let mut map = self.by_name.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(room) = map.get(name) {
                return Ok(Arc::clone(room));
            }
            if map.len() >= self.max_rooms.load(Ordering::Relaxed) {
                return Err(ErrorCode::TooMany);
            }
            let id = RoomId(u32::try_from(map.len()).map_err(|_| ErrorCode::TooMany)?);
            let loaded = match self.follow {
                Some(_) => Loaded::Loading,
                None => Loaded::Yes,
            };
            let room = Arc::new(Room::new(id, name, self.reactors, loaded));
            map.insert(name.into(), Arc::clone(&room));
            room
        };
        if let Some(follow) = &self.follow {
            follow(&room);
        }
        Ok(room)
    }

    /// The room called `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<Room>> {
        self.by_name
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Recreates a room from the log at start-up, whatever the room limit: history on disk is
    /// never refused.
    pub fn restore(&self, name: &str, first: u64, head: u64, index: Vec<(u64, Pos)>) -> Arc<Room> {
        let mut map = self.by_name.write().unwrap_or_else(PoisonError::into_inner);
        let id = RoomId(u32::try_from(map.len()).unwrap_or(u32::MAX));
        let room = Arc::new(Room::new(id, name, self.reactors, Loaded::Yes));
        room.write(|ring| ring.restore(first, head, index));
        map.insert(name.into(), Arc::clone(&room));
        room
    }

    /// Changes the room limit (SIGHUP). Rooms past a lower limit stay; no new one is made
    /// until the count is under it.
    pub fn set_max_rooms(&self, max_rooms: usize) {
        self.max_rooms.store(max_rooms, Ordering::Relaxed);
    }

    pub fn len(&self) -> usize {
        self.by_name
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8, len: usize) -> Frame {
        vec![n; len].into()
    }

    const ROOMY: RingLimits = RingLimits {
        messages: 100,
        bytes: 1 << 20,
    };

    #[test]
    fn seqs_start_at_one_and_increase_by_one() {
        let mut ring = Ring::default();
        assert_eq!(ring.bounds(), (0, 0));
        assert_eq!(ring.append(frame(1, 10), ROOMY, None), 1);
        assert_eq!(ring.append(frame(2, 10), ROOMY, None), 2);
        assert_eq!(ring.bounds(), (1, 2));
    }

    #[test]
    fn eviction_by_count_and_bytes_moves_first() {
        let mut ring = Ring::default();
        let limits = RingLimits {
            messages: 3,
            bytes: 25,
        };
        for n in 1..=5 {
            ring.append(frame(n, 10), limits, None);
        }
        // 25 bytes hold two 10-byte frames.
        assert_eq!(ring.bounds(), (4, 5));
        assert_eq!(ring.read_from(3, 10, |_| {}), Err(Behind));
    }

    #[test]
    fn a_frame_larger_than_the_byte_limit_is_still_kept() {
        let mut ring = Ring::default();
        ring.append(
            frame(1, 100),
            RingLimits {
                messages: 10,
                bytes: 10,
            },
            None,
        );
        assert_eq!(ring.bounds(), (1, 1));
    }

    #[test]
    fn frame_at_finds_a_seq_only_inside_the_window() {
        let mut ring = Ring::default();
        let limits = RingLimits {
            messages: 3,
            bytes: 1 << 20,
        };
        assert!(ring.frame_at(1).is_none());
        for n in 1..=5 {
            ring.append_kept_elsewhere(frame(n, 4), limits);
        }
        assert_eq!(
            ring.frame_at(4).map(|f| f.bytes().to_vec()),
            Some(vec![4; 4])
        );
        assert_eq!(
            ring.frame_at(3).map(|f| f.bytes().to_vec()),
            Some(vec![3; 4])
        );
        assert!(ring.frame_at(2).is_none(), "evicted");
        assert!(ring.frame_at(6).is_none(), "not yet");
        ring.skip_to(10);
        assert!(ring.frame_at(5).is_none(), "skipped over");
    }

    #[test]
    fn read_from_hands_out_in_seq_order_and_stops_at_max() {
        let mut ring = Ring::default();
        for n in 1..=5 {
            ring.append(frame(n, 1), ROOMY, None);
        }
        let mut seen = Vec::new();
        let next = ring.read_from(2, 2, |f| seen.extend_from_slice(f));
        assert_eq!(next, Ok(4));
        assert_eq!(seen, vec![2, 3]);
        assert_eq!(
            ring.read_from(6, 10, |_| panic!("nothing past head")),
            Ok(6)
        );
    }

    #[test]
    fn head_survives_eviction_of_everything_but_the_newest() {
        let mut ring = Ring::default();
        let limits = RingLimits {
            messages: 1,
            bytes: 1 << 20,
        };
        for n in 1..=4 {
            ring.append(frame(n, 1), limits, None);
        }
        assert_eq!(ring.bounds(), (4, 4));
    }

    #[test]
    fn room_limit_is_enforced_but_existing_rooms_still_open() {
        let rooms = Rooms::new(2, 1, ROOMY);
        let a = rooms.open("a").map(|r| r.id);
        assert_eq!(a, Ok(RoomId(0)));
        assert!(rooms.open("b").is_ok());
        assert_eq!(rooms.open("c").map(|r| r.id), Err(ErrorCode::TooMany));
        assert_eq!(rooms.open("a").map(|r| r.id), a);
    }

    #[test]
    fn room_limit_can_change_while_running() {
        let rooms = Rooms::new(1, 1, ROOMY);
        assert!(rooms.open("a").is_ok());
        assert!(rooms.open("b").is_err());
        rooms.set_max_rooms(2);
        assert!(rooms.open("b").is_ok());
        // Lowered below the count: nobody loses a room, no new one is made.
        rooms.set_max_rooms(1);
        assert!(rooms.open("a").is_ok() && rooms.open("b").is_ok());
        assert_eq!(rooms.open("c").map(|r| r.id), Err(ErrorCode::TooMany));
    }
}
