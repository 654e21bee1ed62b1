//! The link to chatd that outlives connections. It keeps, per room, the last seq delivered
//! (the cursor); when a connection drops it reconnects with capped, jittered exponential
//! backoff and JOINs every room with `after` = cursor, so the messages missed meanwhile
//! arrive once and in order. It PINGs at a third of the server's idle timeout and treats a
//! server that stays silent too long as gone. It never delivers a MSG at or below a room's
//! cursor, and never reuses seqs across server epochs.
//!
//! It also keeps every SEND not yet answered (ACK or refusal), and writes it again, with its
//! original id, right after its room's JOIN on the next connection: on a version 2 connection
//! the server stores each exactly once. A SEND for a room whose JOIN is not written on this
//! connection waits for it, so a message never arrives before its room's join (NOT_JOINED). It never
//! writes a version 2 frame (WHO, WATCH) on a version 1 connection.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use chatd::client::Reply;
use chatd::protocol::replay_start;
use chatd::protocol::{ClientFrame, ErrorCode, Version};

use crate::conn::Conn;
use crate::events::Event;
use crate::failure::{Exit, Failure};
use crate::tls::Secure;

/// The first pause before reconnecting; it doubles per failed attempt.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The longest pause between reconnect attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// The shortest PING interval, whatever idle timeout the server announces.
const MIN_PING: Duration = Duration::from_millis(100);
/// How much longer than two PING intervals the server may stay silent before we give the
/// connection up (a laptop that slept, a NAT that forgot us).
const DEAD_SLACK: Duration = Duration::from_secs(5);

/// Whom to connect to, as whom.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: String,
    pub user: String,
    pub token: String,
    /// `None`: plain TCP.
    pub tls: Option<Secure>,
    /// The version to ask for; version 1 after a server refused version 2.
    pub version: Version,
    /// This installation's client id, sent in a version 2 HELLO (0: no exactly-once).
    pub client: u64,
}

/// Where a room's first JOIN starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// JOIN(after, limit), as asked.
    Window { after: u64, limit: u32 },
    /// A previous run saw up to `seq` under `epoch`: show the `history` messages up to it
    /// again for context, then everything newer. Under another epoch, just the history.
    Seen { epoch: u64, seq: u64 },
}

/// What to do when a connection drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reconnect and resume.
    Resilient,
    /// Fail: a script should not silently resume.
    OneShot,
    /// Like `Resilient`, and the first connection is retried too (`chat send`, which gives
    /// up at its own deadline).
    Patient,
}

/// What the link tells the mode above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Logged in; `again` after a drop; `epoch_changed` if the server's store was replaced
    /// (every room then starts over).
    Connected {
        again: bool,
        epoch_changed: bool,
        version: Version,
        /// The server refused version 2 and this connection speaks version 1.
        fell_back: bool,
    },
    /// JOINED: the replay that follows starts at `next` and ends at `head`. `resumed` if
    /// this room had been joined before on an earlier connection; `gap` names the seqs that
    /// retention deleted before we could see them.
    Joined {
        room: String,
        head: u64,
        next: u64,
        resumed: bool,
        gap: Option<(u64, u64)>,
    },
    Left {
        room: String,
    },
    /// The server took us out of a room we had not asked to leave (access lost); the room
    /// is no longer wanted.
    Removed {
        room: String,
    },
    /// Who is in `room` (WHO's answer, or the first answer to WATCH).
    Members {
        room: String,
        total: u32,
        users: Vec<String>,
    },
    /// `user` arrived in (`here`) or left `room`.
    Presence {
        room: String,
        user: String,
        here: bool,
    },
    /// A WHO or WATCH was refused (WATCH's refusal is reported once per run).
    WhoFailed {
        room: String,
        code: u16,
        message: String,
    },
    Msg {
        room: String,
        seq: u64,
        ts_ms: u64,
        user: String,
        text: String,
    },
    Ack {
        id: u64,
        seq: u64,
    },
    /// A SEND was refused.
    Refused {
        id: u64,
        code: u16,
        message: String,
    },
    /// A JOIN was refused; the room is no longer wanted.
    JoinFailed {
        room: String,
        code: u16,
        message: String,
    },
    /// Any other error that did not end the connection.
    Error {
        code: u16,
        message: String,
    },
    /// The connection dropped; the next attempt is in `retry_in`.
    Down {
        why: String,
        retry_in: Duration,
    },
    /// A reconnect attempt failed; the next is in `retry_in`.
    Retrying {
        why: String,
        retry_in: Duration,
    },
    /// After [`Link::bye`]: the server has closed the connection.
    Closed,
}

#[derive(Debug)]
struct Room {
    name: String,
    start: Start,
    /// The last seq delivered (or deliberately skipped); `None` until the first JOINED.
    cursor: Option<u64>,
    /// The (after, limit) of the JOIN in flight on this connection.
    asked: (u64, u32),
    /// JOIN written on this connection: SENDs for it may follow.
    ready: bool,
}

/// A JOIN or LEAVE awaiting its answer; they are answered in order, which is how an
/// ERROR with `ref` 0 is matched to the request it refuses.
#[derive(Debug)]
enum Request {
    Join(String),
    Leave(String),
    Who(String),
    Watch(String),
}

#[derive(Debug)]
struct Live {
    conn: Conn,
    ping_every: Duration,
    next_ping: Instant,
    /// When the last frame arrived.
    heard: Instant,
    dead_after: Duration,
    nonce: u64,
    requests: VecDeque<Request>,
    /// A fatal ERROR that came before the close.
    fatal: Option<(u16, String)>,
    /// Why we closed it ourselves (write failed, server silent); its close is on the way.
    broken: Option<String>,
    version: Version,
    /// The server refused a WATCH: ask no more on this connection.
    watch_refused: bool,
}

#[derive(Debug)]
pub struct Link {
    target: Target,
    events: Sender<Event>,
    mode: Mode,
    history: u32,
    live: Option<Live>,
    conn_ids: u64,
    epoch: Option<u64>,
    rooms: Vec<Room>,
    retry_at: Option<Instant>,
    attempts: u32,
    quitting: bool,
    /// SENDs not answered yet, by id: (room, text).
    unacked: BTreeMap<u64, (String, String)>,
    /// WATCH each room once joined (version 2 only).
    pub watch: bool,
    /// A WATCH refusal was reported already.
    watch_told: bool,
    /// What happened, in order, for the mode above to take.
    pub notes: VecDeque<Note>,
}

impl Link {
    /// Connects (once: a failure here is returned, whatever the mode) and joins `rooms`.
    ///
    /// # Errors
    /// The first connection failed.
    pub fn open(
        target: Target,
        events: Sender<Event>,
        mode: Mode,
        history: u32,
        rooms: Vec<(String, Start)>,
    ) -> Result<Link, Failure> {
        let mut link = Link {
            target,
            events,
            mode,
            history,
            live: None,
            conn_ids: 0,
            epoch: None,
            rooms: Vec::new(),
            retry_at: None,
            attempts: 0,
            quitting: false,
            unacked: BTreeMap::new(),
            watch: false,
            watch_told: false,
            notes: VecDeque::new(),
        };
        for (name, start) in rooms {
            link.add_room(name, start);
        }
        match link.connect() {
            Ok(()) => {}
            Err(f) if link.mode == Mode::Patient && f.is_transient() => {
                let retry_in = link.backoff();
                link.retry_at = Some(Instant::now() + retry_in);
                link.notes.push_back(Note::Retrying {
                    why: f.message,
                    retry_in,
                });
            }
            Err(f) => return Err(f),
        }
        Ok(link)
    }

    /// The version of the connection, if there is one.
    pub fn version(&self) -> Option<Version> {
        self.live.as_ref().map(|l| l.version)
    }

    pub fn is_connected(&self) -> bool {
        self.live.as_ref().is_some_and(|l| l.broken.is_none())
    }

    pub fn addr(&self) -> &str {
        &self.target.addr
    }

    pub fn epoch(&self) -> Option<u64> {
        self.epoch
    }

    /// The rooms wanted, in the order they were joined.
    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.rooms.iter().map(|r| r.name.as_str())
    }

    pub fn has(&self, room: &str) -> bool {
        self.rooms.iter().any(|r| r.name == room)
    }

    /// The last seq delivered in each room that has had a JOINED.
    pub fn cursors(&self) -> impl Iterator<Item = (&str, u64)> {
        self.rooms
            .iter()
            .filter_map(|r| Some((r.name.as_str(), r.cursor?)))
    }

    /// Wants `room` from now on: joins it now if connected, else on the next connection.
    pub fn join(&mut self, room: &str, start: Start) {
        if !self.has(room) {
            self.add_room(room.to_string(), start);
            self.send_join(self.rooms.len() - 1);
        }
    }

    /// Stops wanting `room`; returns its cursor, if it had one.
    pub fn leave(&mut self, room: &str) -> Option<u64> {
        let i = self.rooms.iter().position(|r| r.name == room)?;
        let gone = self.rooms.remove(i);
        if self.write(&ClientFrame::Leave { room }).is_ok()
            && let Some(live) = &mut self.live
        {
            live.requests.push_back(Request::Leave(room.to_string()));
        }
        gone.cursor
    }

    /// Sends message `id` to `room`, now if the room is joined on a live connection, else once
    /// it is; and again, with the same id, after every reconnect until it is answered. Returns
    /// whether it was written now. `room` must be wanted (joined) for it to ever go.
    pub fn send(&mut self, room: &str, id: u64, text: &str) -> bool {
        self.unacked
            .insert(id, (room.to_string(), text.to_string()));
        let ready = self.rooms.iter().any(|r| r.name == room && r.ready);
        ready && self.write(&ClientFrame::Send { room, id, text }).is_ok()
    }

    /// Asks who is in `room`; the answer is a [`Note::Members`] or a [`Note::WhoFailed`].
    ///
    /// # Errors
    /// Not connected, or the connection speaks version 1, which has no WHO.
    pub fn who(&mut self, room: &str) -> Result<(), String> {
        match self.version() {
            None => return Err("not connected".into()),
            Some(Version::V1) => return Err("the server speaks only version 1".into()),
            Some(_) => {}
        }
        self.write(&ClientFrame::Who { room })?;
        if let Some(live) = &mut self.live {
            live.requests.push_back(Request::Who(room.to_string()));
        }
        Ok(())
    }

    /// Says BYE: the server answers what it owes, then closes, and [`Note::Closed`] follows.
    /// Returns false if there is no connection to wait for.
    pub fn bye(&mut self) -> bool {
        self.quitting = true;
        self.retry_at = None;
        self.write(&ClientFrame::Bye).is_ok()
    }

    /// When [`Link::tick`] next has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.live {
            Some(live) if live.broken.is_none() => {
                Some(live.next_ping.min(live.heard + live.dead_after))
            }
            Some(_) => None,
            None => self.retry_at,
        }
    }

    /// PINGs, gives up on a silent server, and reconnects when it is time.
    ///
    /// # Errors
    /// A reconnect was refused for a reason that waiting will not fix (AUTH_FAILED).
    pub fn tick(&mut self, now: Instant) -> Result<(), Failure> {
        if let Some(live) = &mut self.live {
            if live.broken.is_some() {
                return Ok(());
            }
            if now.saturating_duration_since(live.heard) >= live.dead_after {
                let secs = live.dead_after.as_secs();
                live.broken = Some(format!("no answer from the server for {secs} s"));
                live.conn.close();
            } else if now >= live.next_ping {
                live.nonce += 1;
                live.next_ping = now + live.ping_every;
                let nonce = live.nonce;
                let _ = self.write(&ClientFrame::Ping { nonce });
            }
            return Ok(());
        }
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            match self.connect() {
                Ok(()) => self.attempts = 0,
                Err(f) if f.is_transient() => {
                    let retry_in = self.backoff();
                    self.retry_at = Some(now + retry_in);
                    self.notes.push_back(Note::Retrying {
                        why: f.message,
                        retry_in,
                    });
                }
                Err(f) => return Err(f),
            }
        }
        Ok(())
    }

    /// A frame from connection `conn`.
    pub fn on_frame(&mut self, conn: u64, reply: Reply) {
        let Some(live) = self.live.as_mut().filter(|l| l.conn.id == conn) else {
            return; // a late frame of a connection already replaced
        };
        live.heard = Instant::now();
        let answered = match &reply {
            Reply::Joined { .. } | Reply::Members { .. } => live.requests.pop_front(),
            Reply::Left { room } => match live.requests.front() {
                Some(Request::Leave(r)) if r == room => live.requests.pop_front(),
                _ => None, // unasked: the server took us out
            },
            Reply::Error {
                code, reference: 0, ..
            } if !is_fatal(*code) => live.requests.pop_front(),
            Reply::Error {
                code,
                reference: 0,
                message,
            } => {
                live.fatal = Some((*code, message.clone()));
                return;
            }
            _ => None,
        };
        match reply {
            Reply::Joined { room, first, head } => self.on_joined(room, first, head),
            Reply::Left { room } if answered.is_some() => self.notes.push_back(Note::Left { room }),
            Reply::Left { room } => {
                self.rooms.retain(|r| r.name != room);
                self.notes.push_back(Note::Removed { room });
            }
            Reply::Members { room, total, users } => {
                self.notes.push_back(Note::Members { room, total, users });
            }
            Reply::Presence { room, user, here } => {
                self.notes.push_back(Note::Presence { room, user, here });
            }
            Reply::Msg {
                room,
                seq,
                ts_ms,
                user,
                text,
            } => {
                let Some(r) = self.rooms.iter_mut().find(|r| r.name == room) else {
                    return; // left, or not joined again yet
                };
                match r.cursor {
                    Some(c) if seq > c => r.cursor = Some(seq),
                    _ => return, // already delivered, or from before the JOINED
                }
                self.notes.push_back(Note::Msg {
                    room,
                    seq,
                    ts_ms,
                    user,
                    text,
                });
            }
            Reply::Ack { id, seq } => {
                self.unacked.remove(&id);
                self.notes.push_back(Note::Ack { id, seq });
            }
            Reply::Error {
                code,
                reference,
                message,
            } => self.on_error(code, reference, message, answered),
            Reply::Pong { .. } | Reply::Welcome { .. } => {}
        }
    }

    fn on_error(&mut self, code: u16, reference: u64, message: String, answered: Option<Request>) {
        if reference != 0 {
            if self.unacked.remove(&reference).is_none() {
                return; // answered already (its room's JOIN was refused first)
            }
            self.notes.push_back(Note::Refused {
                id: reference,
                code,
                message,
            });
            return;
        }
        match answered {
            Some(Request::Join(room)) => {
                self.rooms.retain(|r| r.name != room);
                // Its messages can never go now: each is refused for the room's reason.
                let stuck: Vec<u64> = self
                    .unacked
                    .iter()
                    .filter(|(_, (r, _))| *r == room)
                    .map(|(&id, _)| id)
                    .collect();
                for id in stuck {
                    self.unacked.remove(&id);
                    self.notes.push_back(Note::Refused {
                        id,
                        code,
                        message: message.clone(),
                    });
                }
                self.notes.push_back(Note::JoinFailed {
                    room,
                    code,
                    message,
                });
            }
            Some(Request::Who(room)) => self.notes.push_back(Note::WhoFailed {
                room,
                code,
                message,
            }),
            Some(Request::Watch(room)) => {
                if let Some(live) = &mut self.live {
                    live.watch_refused = true;
                }
                if !std::mem::replace(&mut self.watch_told, true) {
                    self.notes.push_back(Note::WhoFailed {
                        room,
                        code,
                        message,
                    });
                }
            }
            Some(Request::Leave(_)) | None => self.notes.push_back(Note::Error { code, message }),
        }
    }

    /// Connection `conn` ended.
    ///
    /// # Errors
    /// A one-shot link lost its connection.
    pub fn on_closed(&mut self, conn: u64, why: String) -> Result<(), Failure> {
        let Some(live) = self.live.take_if(|l| l.conn.id == conn) else {
            return Ok(()); // the close of a connection already replaced
        };
        if self.quitting {
            self.notes.push_back(Note::Closed);
            return Ok(());
        }
        let addr = &self.target.addr;
        let failure = match live.fatal {
            Some((code, _)) if code == ErrorCode::ShuttingDown.as_u16() => Failure::new(
                Exit::ShuttingDown,
                format!("chatd at {addr} is shutting down (SHUTTING_DOWN)"),
            ),
            Some((code, message)) => Failure {
                exit: Exit::Lost,
                ..Failure::server(
                    code,
                    &message,
                    &format!("chatd at {addr} closed the connection"),
                )
            },
            None => Failure::new(
                Exit::Lost,
                format!(
                    "lost the connection to chatd at {addr}: {}",
                    live.broken.unwrap_or(why)
                ),
            ),
        };
        match self.mode {
            Mode::OneShot => Err(failure),
            Mode::Resilient | Mode::Patient => {
                let retry_in = self.backoff();
                self.retry_at = Some(Instant::now() + retry_in);
                self.notes.push_back(Note::Down {
                    why: failure.message,
                    retry_in,
                });
                Ok(())
            }
        }
    }

    fn add_room(&mut self, name: String, start: Start) {
        self.rooms.push(Room {
            name,
            start,
            cursor: None,
            asked: (0, 0),
            ready: false,
        });
    }

    fn connect(&mut self) -> Result<(), Failure> {
        self.conn_ids += 1;
        let t = &self.target;
        let (conn, welcome) = Conn::open(t, self.conn_ids, &self.events)?;
        if welcome.fell_back {
            // Ask an old server in version 1 straight away from now on.
            self.target.version = Version::V1;
        }
        let again = self.epoch.is_some();
        let epoch_changed = self.epoch.is_some_and(|e| e != welcome.epoch);
        if epoch_changed {
            for r in &mut self.rooms {
                r.cursor = None;
                r.start = Start::Window {
                    after: 0,
                    limit: self.history,
                };
            }
        }
        self.epoch = Some(welcome.epoch);
        let ping_every = (welcome.idle_timeout / 3).max(MIN_PING);
        let now = Instant::now();
        self.live = Some(Live {
            conn,
            ping_every,
            next_ping: now + ping_every,
            heard: now,
            dead_after: ping_every * 2 + DEAD_SLACK,
            nonce: 0,
            requests: VecDeque::new(),
            fatal: None,
            broken: None,
            version: welcome.version,
            watch_refused: false,
        });
        self.notes.push_back(Note::Connected {
            again,
            epoch_changed,
            version: welcome.version,
            fell_back: welcome.fell_back,
        });
        for r in &mut self.rooms {
            r.ready = false;
        }
        for i in 0..self.rooms.len() {
            self.send_join(i);
        }
        Ok(())
    }

    /// JOINs room `i` from its cursor if it has one, else from its start.
    fn send_join(&mut self, i: usize) {
        let (Some(epoch), Some(room)) = (self.epoch, self.rooms.get(i)) else {
            return;
        };
        let asked = match (room.cursor, room.start) {
            (Some(c), _) => (c, u32::MAX),
            (None, Start::Window { after, limit }) => (after, limit),
            (None, Start::Seen { epoch: e, seq }) if e == epoch => {
                (seq.saturating_sub(u64::from(self.history)), u32::MAX)
            }
            (None, Start::Seen { .. }) => (0, self.history),
        };
        let name = room.name.clone();
        let join = ClientFrame::Join {
            room: &name,
            after: asked.0,
            limit: asked.1,
        };
        if self.write(&join).is_ok() {
            if let Some(live) = &mut self.live {
                live.requests.push_back(Request::Join(name.clone()));
            }
            if let Some(room) = self.rooms.get_mut(i) {
                room.asked = asked;
                room.ready = true;
            }
            self.resend(&name);
        }
    }

    /// Writes every unanswered SEND of `room` again, in id order. The server reads a
    /// connection in order, so right after the JOIN is soon enough.
    fn resend(&mut self, room: &str) {
        let resend: Vec<(u64, String)> = self
            .unacked
            .iter()
            .filter(|(_, (r, _))| r == room)
            .map(|(&id, (_, text))| (id, text.clone()))
            .collect();
        for (id, text) in resend {
            let send = ClientFrame::Send {
                room,
                id,
                text: &text,
            };
            if self.write(&send).is_err() {
                break; // the connection is being replaced; the next one sends them
            }
        }
    }

    fn on_joined(&mut self, room: String, first: u64, head: u64) {
        let Some(r) = self.rooms.iter_mut().find(|r| r.name == room) else {
            return; // left meanwhile
        };
        let next = replay_start(r.asked.0, r.asked.1, first, head);
        let resumed = r.cursor.is_some();
        let gap = r
            .cursor
            .filter(|&c| next > c.saturating_add(1))
            .map(|c| (c + 1, next - 1));
        r.cursor = Some(r.cursor.unwrap_or(0).max(next.saturating_sub(1)));
        let watch = self.watch
            && self
                .live
                .as_ref()
                .is_some_and(|l| l.version >= Version::V2 && !l.watch_refused);
        if watch
            && self
                .write(&ClientFrame::Watch { room: &room, on: 1 })
                .is_ok()
            && let Some(live) = &mut self.live
        {
            live.requests.push_back(Request::Watch(room.clone()));
        }
        self.notes.push_back(Note::Joined {
            room,
            head,
            next,
            resumed,
            gap,
        });
    }

    fn write(&mut self, frame: &ClientFrame<'_>) -> Result<(), String> {
        let Some(live) = self.live.as_mut().filter(|l| l.broken.is_none()) else {
            return Err("not connected".into());
        };
        live.conn.send(frame).map_err(|e| {
            let why = crate::failure::describe(&e);
            live.broken = Some(why.clone());
            live.conn.close();
            why
        })
    }

    /// The pause before the next attempt: doubling from [`BACKOFF_BASE`] up to
    /// [`BACKOFF_CAP`], then a random half of it taken off so that many clients dropped at
    /// once do not come back at once.
    fn backoff(&mut self) -> Duration {
        let full = BACKOFF_BASE
            .saturating_mul(1 << self.attempts.min(10))
            .min(BACKOFF_CAP);
        self.attempts = self.attempts.saturating_add(1);
        let random = getrandom::u64().unwrap_or_else(|_| u64::from(std::process::id()));
        let fraction = (random % 1000) as f64 / 1000.0;
        full.mul_f64(0.5 + 0.5 * fraction)
    }
}

/// Whether an ERROR with `ref` 0 ends the connection. TOO_MANY after the login is about
/// rooms and is not; a code this client does not know is taken as not fatal either.
fn is_fatal(code: u16) -> bool {
    matches!(
        ErrorCode::from_u16(code),
        Some(
            ErrorCode::Malformed
                | ErrorCode::TooLarge
                | ErrorCode::UnknownKind
                | ErrorCode::UnsupportedVersion
                | ErrorCode::AuthFailed
                | ErrorCode::NotAuthenticated
                | ErrorCode::SlowConsumer
                | ErrorCode::Timeout
                | ErrorCode::ShuttingDown
                | ErrorCode::Internal
        )
    )
}
