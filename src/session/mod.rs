//! One connection's protocol state machine, free of I/O.
//!
//! Bytes come in through [`Session::receive`]; answers go out through the session's
//! [`Outbox`]; everything the session needs from the rest of the server (authentication,
//! rooms, the sequencer, the clock) comes through the [`Env`] trait. So tests and the fuzzer
//! can drive a session without sockets, and the reactor only moves bytes.
//!
//! The states: `Handshake` until a good HELLO, `Ready` while chatting, `Draining` after BYE
//! or at shutdown (read nothing more, wait for the ACKs owed), `Closing` after a fatal error
//! (flush within a grace period, then the reactor closes). Nothing follows a fatal ERROR.
//!
//! The protocol version is the one the accepted HELLO named, kept in `Ready`; until then a
//! connection speaks version 1. A version 1 connection must see exactly version 1: the kinds
//! version 2 added are refused there from their kind byte, as unknown kinds always were.

mod identity;
pub mod outbox;
pub mod rate;
mod rooms;
mod stamp;
mod watch;

use crate::batch_frames::Frame;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Limits;
use crate::dedupe::SendKey;
use crate::mailbox::Gone;
use crate::protocol::codec::{FrameError, msg_length, parse_client};
use crate::protocol::name::{is_valid_room, is_valid_room_v2, is_valid_user};
use crate::protocol::{
    ClientFrame, Decoded, Deframer, ErrorCode, ServerFrame, Version, kind, replay_start,
};
use crate::room::{Behind, Loaded, Room, RoomId};

use identity::Identity;
pub use outbox::Outbox;
use rate::TokenBucket;
use rooms::{Membership, Rooms};
use stamp::Stamp;
use watch::Watch;

/// The words of every FORBIDDEN answer to a request: the same whether or not the room
/// exists, so that they tell nothing about it.
const FORBIDDEN: &str = "you may not use that room";

/// How long a closing connection may take to flush before it is cut.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// SENDs a connection may have at the sequencer at once before we stop reading from it.
pub const MAX_IN_FLIGHT: u32 = 256;

/// Bytes of queued control frames past which we stop reading from a client until it reads.
pub const OUT_HIGH_WATER: usize = 64 * 1024;

/// Room frames the outbox is topped up to; the rest of a backlog stays in the ring. Frames
/// stored together go to the kernel as one buffer, so this is not bound to `MAX_IOV`: 256 cut
/// the server's CPU per delivery of a 1 -> 1000 fanout by 15-35% against 64 (1024 did no
/// better), at 32 bytes of queue per frame while a member is owed that many.
pub const FILL_TARGET: usize = 256;

/// The name a server gives itself in WELCOME.
pub const SERVER_NAME: &str = concat!("chatd/", env!("CARGO_PKG_VERSION"));

/// What a session needs from the server around it.
pub trait Env {
    fn now(&self) -> Instant;
    fn limits(&self) -> &Limits;
    fn epoch(&self) -> u64;
    /// A number no other session of this server run has.
    fn session_id(&mut self) -> u64;
    /// `user`'s name, shared with the users table (so that a session holds no copy of its
    /// own), if `token` is their token.
    fn authenticate(&self, user: &str, token: &str) -> Option<crate::auth::UserName>;
    /// Whether `user` may use `room` (private rooms, direct rooms), checked in memory.
    fn may_use(&self, room: &str, user: &str) -> bool;
    /// The room of that name, created if need be.
    ///
    /// # Errors
    /// `TOO_MANY` if the server holds as many rooms as it may.
    fn open_room(&mut self, name: &str) -> Result<Arc<Room>, ErrorCode>;
    /// The session became a member of `room`: one more connection of `user` there.
    fn joined(&mut self, room: &Arc<Room>, user: &Arc<str>);
    /// The session stopped being a member of `room`, and its watcher if it was `watching`.
    fn left(&mut self, room: &Arc<Room>, user: &str, watching: bool);
    /// The session starts (`on`) or stops watching who is in `room`, a room it is a member
    /// of: the room keeps its log of changes while anyone watches, and wakes the watchers'
    /// drivers on each change.
    fn watch(&mut self, room: &Arc<Room>, on: bool);
    /// Hands a MSG frame (seq and ts_ms still zero) to the sequencer, with the key that makes
    /// it exactly-once if the connection named its client; the outcome comes back through
    /// [`Session::on_stored`].
    ///
    /// # Errors
    /// The code to answer the SEND with if it cannot even be submitted.
    fn submit(
        &mut self,
        room: &Arc<Room>,
        frame: Arc<[u8]>,
        id: u64,
        key: Option<SendKey>,
    ) -> Result<(), ErrorCode>;
    /// Asks for up to `max` frames of `room` from seq `from` out of the log; the answer comes
    /// back through [`Session::on_fetched`]. Returns false if there is no log to ask.
    fn fetch(&mut self, room: &Arc<Room>, from: u64, max: u64) -> bool {
        let _ = (room, from, max);
        false
    }
    /// For the metrics: a frame of this kind arrived.
    fn frame_in(&mut self, kind: u8) {
        let _ = kind;
    }
    /// For the metrics: `count` whole frames of this kind left for the client.
    fn frame_out(&mut self, kind: u8, count: u64) {
        let _ = (kind, count);
    }
    /// For the metrics: a non-fatal ERROR answered a request.
    fn error_sent(&mut self, code: ErrorCode) {
        let _ = code;
    }
    /// For the metrics: bytes moved through the member's socket.
    fn transferred(&mut self, read: u64, written: u64) {
        let _ = (read, written);
    }
    /// For the metrics: this many MSG frames were queued to the member.
    fn delivered(&mut self, frames: u64) {
        let _ = frames;
    }
}

/// Each state keeps the one instant its timer needs, so that a session carries one clock
/// reading for its state rather than one per timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for HELLO until the deadline.
    Handshake { deadline: Stamp },
    /// Chatting in `version` (it sits in what was padding); closed if no frame comes for the
    /// idle timeout after `last_frame`.
    Ready { last_frame: Stamp, version: Version },
    /// Reads nothing more; once no ACK is owed, sends `then` (if any) and closes.
    Draining {
        then: Option<ErrorCode>,
        deadline: Stamp,
    },
    /// Flushes what is queued, then closes; cut at the deadline. After BYE (`finish`), the
    /// room messages stored before the BYE took effect are still owed and sent first.
    /// `ended_by`: the fatal error that ended the session, if one did.
    Closing {
        deadline: Stamp,
        finish: bool,
        ended_by: Option<ErrorCode>,
    },
}

/// A PING whose PONG waits until everything owed for the requests before it is queued: the
/// ACK or ERROR of every earlier SEND, and each joined room's frames up to its head as of the
/// PING (so the replay of an earlier JOIN). Input is not read while one waits, so nothing
/// asked after the PING can be answered before it: answers leave in request order.
#[derive(Debug)]
struct Barrier {
    nonce: u64,
    /// The rooms still owed frames up to a head, as of the PING.
    heads: Vec<(RoomId, u64)>,
}

/// A JOIN of a room whose history the store elsewhere is still loading on this node: JOINED
/// (or the ERROR) waits for it, and input is not read meanwhile, so answers stay in request
/// order. The membership exists already, paused at [`PAUSED`], so that the load's wake-up
/// finds this session.
#[derive(Debug)]
struct PendingJoin {
    room: Arc<Room>,
    after: u64,
    limit: u32,
}

/// What holds a session's input back until it is settled.
#[derive(Debug)]
enum Wait {
    Pong(Barrier),
    Join(PendingJoin),
}

/// What only some sessions need: a PONG or JOIN answer held back (rare, and short), and the
/// rooms watched (version 2's WATCH). Behind one pointer that is empty for a session with
/// neither, so that an idle connection pays 8 bytes for both.
#[derive(Debug, Default)]
struct Aside {
    wait: Option<Wait>,
    watches: Vec<Watch>,
}

/// The cursor of a membership whose JOIN is not answered yet: past any seq, so it is owed
/// nothing and holds no PING back.
const PAUSED: u64 = u64::MAX;

/// A session's state as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Handshake,
    Ready,
    Closing,
}

/// What a timer check asks of the reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Nothing changed.
    Idle,
    /// Something was queued: flush.
    Flush,
    /// Close now.
    Close,
}

/// One connection's session. Every idle connection holds one, so it is kept small (see
/// "Memory per idle connection" in docs/architecture.md): instants as 8-byte [`Stamp`]s, the
/// user's name shared with the users table, the first room inline, and what only a busy or
/// ending session needs (the queue, a held-back PONG) behind a pointer that is empty when idle.
#[derive(Debug)]
pub struct Session {
    state: State,
    /// The user's name from the users table ("" before HELLO), and the client id of a
    /// version 2 HELLO that named one.
    user: Identity,
    rooms: Rooms,
    /// Where the next fill starts among `rooms`, so that one busy room cannot starve another.
    /// At most the number of rooms joined, itself at most 2^16 (`--max-rooms-per-connection`).
    next_room: u32,
    in_flight: u32,
    bucket: TokenBucket,
    /// Since when we have had bytes for the client and it has taken none.
    stalled_since: Option<Stamp>,
    /// A PONG (or a JOIN's answer) held back until what came before is settled, and the
    /// rooms watched. Boxed: both are rare, and an idle session pays one pointer for them.
    aside: Option<Box<Aside>>,
    pub out: Outbox,
}

// What every connection pays for its session; see "Memory per idle connection" in
// docs/architecture.md before letting it grow.
const _: () = assert!(std::mem::size_of::<State>() == 16);
const _: () = assert!(std::mem::size_of::<Session>() == 104);

impl Session {
    pub fn new(now: Instant, limits: &Limits) -> Session {
        Session {
            state: State::Handshake {
                deadline: Stamp::of(now).plus(limits.handshake_timeout),
            },
            user: Identity::nobody(),
            rooms: Rooms::default(),
            next_room: 0,
            in_flight: 0,
            bucket: TokenBucket::new(now),
            stalled_since: None,
            aside: None,
            out: Outbox::default(),
        }
    }

    /// Whether the session takes more input now. It does not while closing, after BYE, while
    /// a PONG waits for the answers owed before it, or while the client is not reading what
    /// it asked for (backpressure).
    pub fn wants_input(&self) -> bool {
        matches!(self.state, State::Handshake { .. } | State::Ready { .. })
            && self.in_flight < MAX_IN_FLIGHT
            && self.out.owned_bytes() < OUT_HIGH_WATER
            && self.waiting().is_none()
    }

    /// Whether the session is past its last frame and only flushing.
    pub fn is_closing(&self) -> bool {
        matches!(self.state, State::Closing { .. })
    }

    /// The state for the metrics: handshake, ready (chatting or draining) or closing.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Handshake { .. } => Phase::Handshake,
            State::Ready { .. } | State::Draining { .. } => Phase::Ready,
            State::Closing { .. } => Phase::Closing,
        }
    }

    fn may_fill(&self) -> bool {
        matches!(
            self.state,
            State::Ready { .. } | State::Closing { finish: true, .. }
        )
    }

    /// Handles every whole frame at the front of `input` while [`wants_input`] holds, and
    /// returns how many bytes it used. After a fatal error it uses everything: the rest of
    /// the input will never be read.
    ///
    /// [`wants_input`]: Session::wants_input
    pub fn receive(&mut self, input: &[u8], env: &mut impl Env) -> usize {
        let max_frame = env.limits().max_frame;
        let mut used = 0;
        while self.wants_input() {
            // The version in force decides which kinds exist, frame by frame: a HELLO of
            // version 2 may be followed by a WHO in the same read. Before HELLO and on a
            // version 1 connection, WHO and WATCH are UNKNOWN_KIND from their kind byte.
            let deframer = Deframer::for_server_in(self.version(), max_frame);
            let rest = input.get(used..).unwrap_or_default();
            match deframer.next(rest) {
                Ok(Decoded::NeedMore) => break,
                Ok(Decoded::Frame(raw)) => {
                    used += raw.wire_len;
                    env.frame_in(raw.kind);
                    let now = env.now();
                    if let State::Ready { last_frame, .. } = &mut self.state {
                        *last_frame = Stamp::of(now);
                    }
                    if matches!(self.state, State::Handshake { .. }) && raw.kind != kind::HELLO {
                        self.fatal(ErrorCode::NotAuthenticated, "send HELLO first", now);
                        break;
                    }
                    match parse_client(&raw) {
                        Ok(frame) => self.handle(frame, env),
                        Err(FrameError { code, reason }) => self.fatal(code, reason, now),
                    }
                }
                Err(FrameError { code, reason }) => {
                    self.fatal(code, reason, env.now());
                    break;
                }
            }
        }
        if self.is_closing() { input.len() } else { used }
    }

    fn handle(&mut self, frame: ClientFrame<'_>, env: &mut impl Env) {
        let now = env.now();
        match frame {
            ClientFrame::Hello {
                version,
                user,
                token,
                client,
            } => self.hello(version, user, token, client, env),
            // Not read past its version byte: the version alone decides the answer.
            ClientFrame::HelloUnsupported { version, .. } => self.hello(version, "", "", 0, env),
            ClientFrame::Join { room, after, limit } => self.join(room, after, limit, env),
            ClientFrame::Leave { room } => self.leave(room, env),
            ClientFrame::Send { room, id, text } => self.send(room, id, text, env),
            ClientFrame::Ping { nonce } => self.ping(nonce),
            ClientFrame::Bye => {
                self.state = State::Draining {
                    then: None,
                    deadline: Stamp::of(now).plus(CLOSE_GRACE),
                };
                self.finish_draining(now);
            }
            ClientFrame::Who { room } => self.who(room, None, env),
            ClientFrame::Watch { room, on } => self.who(room, Some(on), env),
        }
    }

    /// The protocol version in force: the one the accepted HELLO named, and version 1 until
    /// one was accepted.
    pub fn version(&self) -> Version {
        match self.state {
            State::Ready { version, .. } => version,
            _ => Version::V1,
        }
    }

    /// Whether `name` is a room in the grammar of the version in force: version 2 adds
    /// direct rooms (`@alice+bob`).
    fn is_room_name(&self, name: &str) -> bool {
        match self.version() {
            Version::V1 => is_valid_room(name),
            Version::V2 => is_valid_room_v2(name),
        }
    }

    /// The client id of a version 2 HELLO that named one (`client ≠ 0`).
    pub fn client(&self) -> Option<std::num::NonZeroU64> {
        self.user.client()
    }

    /// WHO, and WATCH with its `on`: version 2 only. On a version 1 connection the deframer
    /// refused both kinds as UNKNOWN_KIND before their bodies were read; the first check
    /// keeps that answer should one ever get this far. The checks run in SEND's order: room
    /// name (INVALID), joined (NOT_JOINED), then the field value (`on` neither 0 nor 1:
    /// INVALID, not fatal, as version 1 treats a bad field value).
    fn who(&mut self, name: &str, watch: Option<u8>, env: &mut impl Env) {
        if self.version() < Version::V2 {
            return self.fatal(ErrorCode::UnknownKind, "unknown frame kind", env.now());
        }
        if !self.is_room_name(name) {
            return self.reject(env, ErrorCode::Invalid, 0, "invalid room name");
        }
        if !env.may_use(name, self.user()) {
            return self.reject(env, ErrorCode::Forbidden, 0, FORBIDDEN);
        }
        if !self.rooms.iter().any(|m| &*m.room.name == name) {
            return self.reject(env, ErrorCode::NotJoined, 0, "join the room first");
        }
        if watch.is_some_and(|on| on > 1) {
            return self.reject(env, ErrorCode::Invalid, 0, "WATCH takes 0 or 1");
        }
        self.answer_who(name, watch, env);
    }

    /// Answers a PING now if nothing is owed for earlier requests, or sets a barrier that
    /// `release_barrier` lifts once everything owed is queued.
    fn ping(&mut self, nonce: u64) {
        let heads = self
            .rooms
            .iter()
            .filter_map(|m| {
                let head = m.room.read(|ring| ring.head());
                (m.cursor <= head.min(m.until)).then_some((m.room.id, head))
            })
            .collect();
        self.set_wait(Wait::Pong(Barrier { nonce, heads }));
        self.release_barrier();
    }

    /// Queues the waiting PONG once no SEND before it awaits its answer and every room has
    /// queued its frames up to the head the PING saw. A member that leaves the room or is
    /// owed nothing more there (after BYE) no longer holds it back.
    fn release_barrier(&mut self) {
        let Some(Wait::Pong(barrier)) = self.aside.as_deref_mut().and_then(|a| a.wait.as_mut())
        else {
            return;
        };
        if self.in_flight > 0 {
            return;
        }
        let rooms = &self.rooms;
        barrier.heads.retain(|&(id, head)| {
            rooms
                .iter()
                .any(|m| m.room.id == id && m.cursor <= head.min(m.until))
        });
        if barrier.heads.is_empty() {
            let nonce = barrier.nonce;
            self.take_wait();
            self.out.push_frame(&ServerFrame::Pong { nonce });
        }
    }

    /// HELLO of any version: `client` is 0 unless `version` is 2. The checks keep version
    /// 1's order: a second HELLO, then the version, then the user.
    fn hello(&mut self, version: u8, user: &str, token: &str, client: u64, env: &mut impl Env) {
        let now = env.now();
        if matches!(self.state, State::Ready { .. }) {
            return self.fatal(ErrorCode::NotAuthenticated, "already authenticated", now);
        }
        let Some(version) = Version::from_wire(version) else {
            return self.fatal(
                ErrorCode::UnsupportedVersion,
                "this server speaks versions 1 and 2",
                now,
            );
        };
        let name = is_valid_user(user)
            .then(|| env.authenticate(user, token))
            .flatten();
        let Some(name) = name else {
            return self.fatal(ErrorCode::AuthFailed, "unknown user or wrong token", now);
        };
        let client = if version == Version::V2 { client } else { 0 };
        self.user = Identity::new(name, client);
        self.state = State::Ready {
            last_frame: Stamp::of(now),
            version,
        };
        let limits = env.limits();
        let idle_ms = u32::try_from(limits.idle_timeout.as_millis()).unwrap_or(u32::MAX);
        let max_frame = limits.max_frame;
        let welcome = ServerFrame::Welcome {
            version: version.as_u8(),
            epoch: env.epoch(),
            session: env.session_id(),
            max_frame,
            idle_timeout_ms: idle_ms,
            server: SERVER_NAME,
        };
        self.out.push_frame(&welcome);
    }

    /// JOIN: the name in the grammar of the version in force (INVALID), then the access rules
    /// (FORBIDDEN, the same for a room that does not exist), then the room itself.
    fn join(&mut self, name: &str, after: u64, limit: u32, env: &mut impl Env) {
        if !self.is_room_name(name) {
            return self.reject(env, ErrorCode::Invalid, 0, "invalid room name");
        }
        // Before the room is looked up: a forbidden room and a missing one answer alike.
        if !env.may_use(name, self.user()) {
            return self.reject(env, ErrorCode::Forbidden, 0, FORBIDDEN);
        }
        let existing = self.rooms.iter().position(|m| &*m.room.name == name);
        let room = match existing.and_then(|i| self.rooms.get(i)) {
            Some(m) => Arc::clone(&m.room),
            None if self.rooms.len() >= env.limits().max_rooms_per_connection => {
                return self.reject(env, ErrorCode::TooMany, 0, "too many rooms joined");
            }
            None => match env.open_room(name) {
                Ok(room) => room,
                Err(code) => return self.reject(env, code, 0, "the server holds too many rooms"),
            },
        };
        if existing.is_none() {
            // A member from here on, so that the wake-up of a load under way finds us.
            env.joined(&room, self.user.name());
            self.rooms.push(Membership::new(Arc::clone(&room), PAUSED));
        }
        if room.loaded() == Loaded::Yes {
            return self.answer_join(&room, after, limit);
        }
        self.set_wait(Wait::Join(PendingJoin { room, after, limit }));
        // The load may have ended between our look and our joining.
        self.settle_join(env);
    }

    /// JOINED, and the membership's cursor where the replay starts.
    fn answer_join(&mut self, room: &Arc<Room>, after: u64, limit: u32) {
        let (first, head) = room.read(|ring| ring.bounds());
        let cursor = replay_start(after, limit, first, head);
        self.out.push_frame(&ServerFrame::Joined {
            room: &room.name,
            first,
            head,
        });
        if let Some(m) = self.rooms.iter_mut().find(|m| Arc::ptr_eq(&m.room, room)) {
            m.cursor = cursor;
            m.set_fetching(None);
        }
    }

    /// Answers a JOIN that waited for its room's load, once the load is over: JOINED, or a
    /// non-fatal STORAGE error (and no membership) if the store could not be asked.
    fn settle_join(&mut self, env: &mut impl Env) {
        let Some(Wait::Join(pending)) = self.waiting() else {
            return;
        };
        let loaded = pending.room.loaded();
        if loaded == Loaded::Loading {
            return;
        }
        let Some(Wait::Join(PendingJoin { room, after, limit })) = self.take_wait() else {
            return;
        };
        if self.is_closing() {
            return;
        }
        if loaded == Loaded::Yes {
            return self.answer_join(&room, after, limit);
        }
        let paused = self
            .rooms
            .iter()
            .position(|m| Arc::ptr_eq(&m.room, &room) && m.cursor == PAUSED);
        if let Some(i) = paused {
            self.drop_membership(i, env);
        }
        let why = format!("the history of {} cannot be read now; try again", room.name);
        self.reject(env, ErrorCode::Storage, 0, &why);
    }

    fn leave(&mut self, name: &str, env: &mut impl Env) {
        if !self.is_room_name(name) {
            return self.reject(env, ErrorCode::Invalid, 0, "invalid room name");
        }
        let Some(i) = self.rooms.iter().position(|m| &*m.room.name == name) else {
            return self.reject(env, ErrorCode::NotJoined, 0, "not a member of that room");
        };
        // LEAVE stops watching too.
        if !self.drop_membership(i, env) {
            return self.reject(env, ErrorCode::NotJoined, 0, "not a member of that room");
        }
        self.out.push_frame(&ServerFrame::Left { room: name });
    }

    fn send(&mut self, name: &str, id: u64, text: &str, env: &mut impl Env) {
        if !self.is_room_name(name) {
            return self.reject(env, ErrorCode::Invalid, id, "invalid room name");
        }
        if !env.may_use(name, self.user()) {
            return self.reject(env, ErrorCode::Forbidden, id, FORBIDDEN);
        }
        let Some(m) = self.rooms.iter().find(|m| &*m.room.name == name) else {
            return self.reject(
                env,
                ErrorCode::NotJoined,
                id,
                "join the room before sending to it",
            );
        };
        if text.is_empty() {
            return self.reject(env, ErrorCode::Invalid, id, "empty message");
        }
        let limits = env.limits();
        let user = self.user.user();
        let length = msg_length(name, user, text);
        if length > usize::try_from(limits.max_frame).unwrap_or(usize::MAX) {
            return self.reject(env, ErrorCode::Invalid, id, "message longer than max_frame");
        }
        let (rate, burst) = (limits.send_rate, limits.send_burst);
        if !self.bucket.take(env.now(), rate, burst) {
            return self.reject(env, ErrorCode::RateLimited, id, "slow down");
        }
        let mut frame = Vec::with_capacity(length + crate::protocol::HEADER_LEN);
        let msg = ServerFrame::Msg {
            room: name,
            seq: 0,
            ts_ms: 0,
            user,
            text,
        };
        crate::protocol::encode_server(&msg, &mut frame);
        let room = Arc::clone(&m.room);
        // The duplicate check comes after every check above, at the sequencer.
        match env.submit(&room, frame.into(), id, self.user.send_key()) {
            Ok(()) => self.in_flight += 1,
            Err(code) => self.reject(env, code, id, "the message could not be stored"),
        }
    }

    /// The sequencer's answer to a SEND: `Ok(seq)` or the reason it was not stored.
    pub fn on_stored(&mut self, id: u64, result: Result<u64, ErrorCode>, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if !matches!(self.state, State::Ready { .. } | State::Draining { .. }) {
            return;
        }
        match result {
            Ok(seq) => self.out.push_frame(&ServerFrame::Ack { id, seq }),
            Err(ErrorCode::StaleId) => self.error(
                ErrorCode::StaleId,
                id,
                "id older than the server remembers for this client: look in the room's history",
            ),
            Err(code) => self.error(code, id, "the message could not be stored"),
        }
        self.finish_draining(now);
    }

    /// The SEND just answered was a retry of a message already stored: it does not count
    /// against the rate limit, so its token goes back.
    pub fn not_counted(&mut self, limits: &Limits) {
        self.bucket.give_back(limits.send_rate);
    }

    /// The server is stopping: owe nothing more, then say SHUTTING_DOWN and close.
    pub fn shut_down(&mut self, now: Instant) {
        if matches!(self.state, State::Handshake { .. } | State::Ready { .. }) {
            let deadline = Stamp::of(now).plus(CLOSE_GRACE);
            self.state = State::Draining {
                then: Some(ErrorCode::ShuttingDown),
                deadline,
            };
            self.finish_draining(now);
        }
    }

    /// The peer sent FIN. It may still read: answer what it sent, as after BYE.
    pub fn on_eof(&mut self, now: Instant) {
        match self.state {
            State::Handshake { .. } => {
                self.state = State::Closing {
                    deadline: Stamp::of(now).plus(CLOSE_GRACE),
                    finish: false,
                    ended_by: None,
                };
            }
            State::Ready { .. } => {
                self.state = State::Draining {
                    then: None,
                    deadline: Stamp::of(now).plus(CLOSE_GRACE),
                };
                self.finish_draining(now);
            }
            State::Draining { .. } | State::Closing { .. } => {}
        }
    }

    fn finish_draining(&mut self, now: Instant) {
        if let State::Draining { then, .. } = self.state {
            if self.in_flight > 0 {
                return;
            }
            match then {
                Some(code) => self.fatal(code, "the server is shutting down", now),
                None => {
                    for m in self.rooms.iter_mut() {
                        m.until = m.room.read(|ring| ring.head());
                    }
                    self.state = State::Closing {
                        deadline: Stamp::of(now).plus(CLOSE_GRACE),
                        finish: true,
                        ended_by: None,
                    };
                }
            }
        }
    }

    /// Tops the outbox up with frames the rooms owe this member, then queues a waiting PONG
    /// if that settled what it waited for.
    pub fn fill(&mut self, env: &mut impl Env) {
        self.settle_join(env);
        self.fill_rooms(env);
        self.fill_presence(env);
        if self.may_fill() || matches!(self.state, State::Draining { .. }) {
            self.release_barrier();
        }
    }

    fn fill_rooms(&mut self, env: &mut impl Env) {
        let now = env.now();
        if !self.may_fill() || self.rooms.is_empty() {
            return;
        }
        let mut budget = FILL_TARGET.saturating_sub(self.out.shared_frames());
        let count = self.rooms.len();
        let start = usize::try_from(self.next_room).unwrap_or(0) % count;
        self.next_room = u32::try_from(start + 1).unwrap_or(0);
        for i in (start..count).chain(0..start) {
            if budget == 0 {
                break;
            }
            let Some(m) = self.rooms.get_mut(i) else {
                break;
            };
            let out = &mut self.out;
            let cursor = m.cursor;
            let owed = m.until.saturating_add(1).saturating_sub(cursor);
            let take = budget.min(usize::try_from(owed).unwrap_or(usize::MAX));
            if take == 0 || m.fetching().is_some() {
                continue;
            }
            match m
                .room
                .read(|ring| ring.read_from(cursor, take, |f| out.push_shared(f)))
            {
                Ok(next) => {
                    budget =
                        budget.saturating_sub(usize::try_from(next - cursor).unwrap_or(budget));
                    m.cursor = next;
                    env.delivered(next - cursor);
                }
                // Older than the in-memory window: ask the log, and serve other rooms meanwhile.
                Err(Behind) if env.fetch(&m.room, cursor, owed.min(u64::from(u32::MAX))) => {
                    m.set_fetching(Some(cursor));
                }
                Err(Behind) => return self.fell_behind(i, now),
            }
        }
    }

    /// History read back from the log for `room` from seq `from`: queued if the member still
    /// wants it (it may have left or re-joined meanwhile).
    pub fn on_fetched(
        &mut self,
        room: RoomId,
        from: u64,
        frames: Result<Vec<Frame>, Gone>,
        now: Instant,
    ) {
        let may_fill = self.may_fill();
        let Some(m) = self
            .rooms
            .iter_mut()
            .find(|m| m.room.id == room && m.fetching() == Some(from) && m.cursor == from)
        else {
            return;
        };
        m.set_fetching(None);
        if !may_fill {
            return;
        }
        match frames {
            Ok(frames) => {
                let owed = m.until.saturating_add(1).saturating_sub(m.cursor);
                for frame in frames
                    .into_iter()
                    .take(usize::try_from(owed).unwrap_or(usize::MAX))
                {
                    self.out.push_shared(&frame);
                    m.cursor += 1;
                }
            }
            Err(Gone) => {
                if let Some(i) = self.rooms.iter().position(|m| m.room.id == room) {
                    self.fell_behind(i, now);
                }
            }
        }
    }

    /// Membership `i` is owed messages that are no longer retained. A live member is closed
    /// with SLOW_CONSUMER rather than skipped ahead; a member that already said goodbye keeps
    /// what it is owed in other rooms (its ACKs above all) and is simply owed nothing more here.
    fn fell_behind(&mut self, i: usize, now: Instant) {
        if self.is_closing() {
            if let Some(m) = self.rooms.get_mut(i) {
                m.until = m.cursor.saturating_sub(1);
            }
            return;
        }
        self.out.discard_unstarted();
        let why = "fell behind the room's retained history";
        self.fatal(ErrorCode::SlowConsumer, why, now);
    }

    /// Bytes reached the socket: the client is taking them. `blocked` says the socket
    /// refused the rest.
    pub fn on_written(&mut self, written: usize, blocked: bool, now: Instant) {
        if written > 0 || !blocked {
            self.stalled_since = None;
        }
        if blocked && self.stalled_since.is_none() {
            self.stalled_since = Some(Stamp::of(now));
        }
    }

    /// Checks the deadlines: handshake, idle, write stall, and the closing grace.
    pub fn tick(&mut self, now: Instant, limits: &Limits) -> Tick {
        let at = Stamp::of(now);
        match self.state {
            State::Handshake { deadline } if at >= deadline => {
                self.fatal(ErrorCode::Timeout, "no HELLO in time", now);
                return Tick::Flush;
            }
            State::Ready { last_frame, .. } if at.since(last_frame) >= limits.idle_timeout => {
                self.fatal(ErrorCode::Timeout, "idle for too long", now);
                return Tick::Flush;
            }
            State::Draining { deadline, .. } | State::Closing { deadline, .. }
                if at >= deadline =>
            {
                return Tick::Close;
            }
            _ => {}
        }
        let stalled = self
            .stalled_since
            .is_some_and(|since| at.since(since) >= limits.write_stall_timeout);
        if stalled && !self.is_closing() {
            self.stalled_since = None;
            self.out.discard_unstarted();
            self.fatal(
                ErrorCode::SlowConsumer,
                "took nothing from its socket for too long",
                now,
            );
            return Tick::Flush;
        }
        if self.out.is_empty() {
            self.out.shrink_if_idle();
        }
        Tick::Idle
    }

    /// The user's right to be here was withdrawn (removed, or their token changed) while
    /// logged in: a fatal `code` with `message`, then close, as after any fatal error. Returns
    /// whether it took effect: a session not logged in, or already on its way out, is left to
    /// finish as it was.
    pub fn revoke(&mut self, code: ErrorCode, message: &str, now: Instant) -> bool {
        if !matches!(self.state, State::Ready { .. }) {
            return false;
        }
        self.fatal(code, message, now);
        true
    }

    /// The rules of who may use which room changed: every joined room this user may no longer
    /// use is taken away, with `ERROR FORBIDDEN` (ref 0) naming it and then an unasked
    /// `LEFT`, after which no MSG of it is sent. A JOIN of such a room still waiting for its
    /// history is answered FORBIDDEN instead, as if the rule had come first. Returns whether
    /// anything was taken, for the driver to schedule a write.
    pub fn recheck_access(&mut self, env: &mut impl Env) -> bool {
        if !matches!(self.state, State::Ready { .. }) {
            return false;
        }
        let user = self.user.user();
        let lost: Vec<Arc<Room>> = self
            .rooms
            .iter()
            .filter(|m| !env.may_use(&m.room.name, user))
            .map(|m| Arc::clone(&m.room))
            .collect();
        for room in &lost {
            let waiting = matches!(
                self.waiting(),
                Some(Wait::Join(pending)) if Arc::ptr_eq(&pending.room, room)
            );
            if waiting {
                self.take_wait();
                if let Some(i) = self.rooms.iter().position(|m| Arc::ptr_eq(&m.room, room)) {
                    self.drop_membership(i, env);
                }
                self.reject(env, ErrorCode::Forbidden, 0, FORBIDDEN);
                continue;
            }
            let why = format!("you may no longer use {}", room.name);
            self.reject(env, ErrorCode::Forbidden, 0, &why);
            self.leave(&room.name, env);
        }
        !lost.is_empty()
    }

    /// Whether the session has said all it will and the reactor may close.
    pub fn is_done(&self) -> bool {
        match self.state {
            State::Closing { finish, .. } => {
                self.out.is_empty()
                    && self.waiting().is_none()
                    && (!finish || self.rooms.iter().all(|m| m.cursor > m.until))
            }
            _ => false,
        }
    }

    /// The rooms this session is a member of.
    pub fn rooms(&self) -> impl Iterator<Item = &Arc<Room>> {
        self.rooms.iter().map(|m| &m.room)
    }

    /// The rooms this session is a member of, each with whether it watches it: for the
    /// driver to end every membership (and watch) after a close.
    pub fn memberships(&self) -> impl Iterator<Item = (&Arc<Room>, bool)> {
        self.rooms
            .iter()
            .map(|m| (&m.room, self.is_watching(m.room.id)))
    }

    /// The fatal error that ended the session, if one did.
    pub fn ended_by(&self) -> Option<ErrorCode> {
        match self.state {
            State::Closing { ended_by, .. } => ended_by,
            _ => None,
        }
    }

    /// The authenticated user's name ("" before HELLO).
    pub fn user(&self) -> &str {
        self.user.user()
    }

    /// A non-fatal error answering a request, counted for the metrics.
    fn reject(&mut self, env: &mut impl Env, code: ErrorCode, reference: u64, message: &str) {
        env.error_sent(code);
        self.error(code, reference, message);
    }

    /// A non-fatal error about one request.
    fn error(&mut self, code: ErrorCode, reference: u64, message: &str) {
        self.out.push_frame(&ServerFrame::Error {
            code: code.as_u16(),
            reference,
            message,
        });
    }

    /// Ends the session from outside the protocol (a limit the transport found out about):
    /// `code` and `message` are its last frame.
    pub fn refuse(&mut self, code: ErrorCode, message: &str, now: Instant) {
        self.fatal(code, message, now);
    }

    /// A fatal error: say why, then nothing more.
    fn fatal(&mut self, code: ErrorCode, message: &str, now: Instant) {
        if self.is_closing() {
            return;
        }
        self.error(code, 0, message);
        // Nothing follows a fatal ERROR, a held-back PONG included.
        self.take_wait();
        self.state = State::Closing {
            deadline: Stamp::of(now).plus(CLOSE_GRACE),
            finish: false,
            ended_by: Some(code),
        };
    }
}

#[cfg(test)]
mod tests;
