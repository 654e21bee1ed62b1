//! `chat send` and `chat tail`, for scripts: no prompts, no colour, one line per message, and
//! an exit status that says what happened. `send` waits for the ACK of each message before
//! the next (so messages are stored in the order given, and a failure names the exact one),
//! and backs off when the server says RATE_LIMITED. It keeps each message in the outbox until
//! its ACK and rides out an unreachable server for `--wait`, sending again with the same id. `tail` stops at the head the server
//! reported, unless asked to follow.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chatd::protocol::{ErrorCode, Version};

use crate::config::Settings;
use crate::events::{Driver, Step};
use crate::failure::{Exit, Failure, check_room, reason};
use crate::link::{Link, Mode, Note, Start, Target};
use crate::local::Local;
use crate::outbox::Entry;
use crate::render::{json_line, tail_line};
use crate::tls::Secure;

/// How often one message is retried after RATE_LIMITED before `send` gives up.
const RATE_TRIES: u32 = 12;
/// The first pause after RATE_LIMITED; it doubles while the server keeps refusing.
const PACE_MIN: Duration = Duration::from_millis(50);
/// The longest pause between two sends.
const PACE_MAX: Duration = Duration::from_secs(2);

/// Whom to connect to and how, from the settings; the CA file is read here, once. `client`
/// is the client id for a version 2 HELLO (0: none).
///
/// # Errors
/// The TLS settings are unusable (see [`Secure::new`]).
pub fn target(s: &Settings, client: u64) -> Result<Target, Failure> {
    let tls = match &s.tls {
        Some(t) => Some(Secure::new(t, &s.server)?),
        None => None,
    };
    Ok(Target {
        addr: s.server.clone(),
        user: s.user.clone(),
        token: s.token.clone(),
        tls,
        version: Version::V2,
        client,
    })
}

/// Posts `text`, or each non-empty line of stdin, to `room`, after what earlier runs left in
/// the outbox. Each message is in the outbox until its ACK; while the server cannot be
/// reached, it reconnects for up to `wait` (none: the first failure ends it).
///
/// # Errors
/// Any message not ACKed, with the server's reason; or the server stayed unreachable.
pub fn send(s: &Settings, room: &str, text: Option<String>, wait: Duration) -> Result<(), Failure> {
    check_room(room)?;
    if text.as_deref() == Some("") {
        return Err(Failure::new(
            Exit::Invalid,
            "empty message: nothing to send",
        ));
    }
    let mut local = Local::open(s);
    for w in local.warnings.drain(..) {
        eprintln!("chat: warning: {w}");
    }
    let leftovers = local.pending();
    // A message given as words is in the outbox before the first connection is tried, so
    // that it survives whatever happens next.
    let from_stdin = text.is_none();
    let mut given = None;
    if let Some(text) = text {
        let id = local.queue(room, &text).map_err(|why| {
            Failure::new(
                Exit::Other,
                format!("the message was not sent to {room}: {why}"),
            )
        })?;
        given = Some((id, text));
    }
    let live_only = Start::Window { after: 0, limit: 0 };
    let mut rooms: Vec<(String, Start)> = vec![(room.into(), live_only)];
    for (_, e) in &leftovers {
        if !rooms.iter().any(|(r, _)| *r == e.room) {
            rooms.push((e.room.clone(), live_only));
        }
    }
    let (tx, rx) = mpsc::channel();
    let mode = if wait.is_zero() {
        Mode::OneShot
    } else {
        Mode::Patient
    };
    let link = Link::open(target(s, local.client())?, tx.clone(), mode, 0, rooms)?;
    let mut sender = Poster {
        d: Driver::new(link, rx),
        lines: VecDeque::new(),
        input_done: !from_stdin,
        gap: Duration::ZERO,
        next_at: None,
        local,
        wait,
        down_since: None,
        ever_connected: false,
    };
    let result = sender.run(room, given, leftovers, tx);
    result.map_err(|mut f| {
        if sender.local.keeps() {
            f.message = format!(
                "{}; the unconfirmed messages stay in the outbox, for the next chat of {} \
                 at {} to send",
                f.message, s.user, s.server
            );
        }
        f
    })
}

struct Poster {
    d: Driver,
    lines: VecDeque<String>,
    input_done: bool,
    /// The pause kept between sends, learnt from RATE_LIMITED answers.
    gap: Duration,
    next_at: Option<Instant>,
    local: Local,
    /// How long the server may stay unreachable.
    wait: Duration,
    down_since: Option<Instant>,
    /// Whether any connection got through: giving up is then Lost, else Unreachable.
    ever_connected: bool,
}

enum Answer {
    Ack,
    Refused(u16, String),
}

impl Poster {
    fn run(
        &mut self,
        room: &str,
        given: Option<(u64, String)>,
        leftovers: Vec<(u64, Entry)>,
        input: mpsc::Sender<crate::events::Event>,
    ) -> Result<(), Failure> {
        self.joined(room)?;
        for (id, e) in leftovers {
            self.deliver(&e.room, id, &e.text, "a message left in the outbox")?;
        }
        if let Some((id, text)) = given {
            return self
                .deliver(room, id, &text, "the message")
                .map(|()| self.bye());
        }
        crate::input::spawn_plain(input);
        let mut line = 0;
        while let Some(text) = self.next_line()? {
            line += 1;
            if text.is_empty() {
                continue;
            }
            let what = format!("line {line}");
            let id = self.local.queue(room, &text).map_err(|why| {
                Failure::new(Exit::Other, format!("{what} was not sent to {room}: {why}"))
            })?;
            self.deliver(room, id, &text, &what)?;
        }
        self.bye();
        Ok(())
    }

    fn bye(&mut self) {
        for w in self.local.warnings.drain(..) {
            eprintln!("chat: warning: {w}");
        }
        self.d.link.bye();
    }

    fn joined(&mut self, room: &str) -> Result<(), Failure> {
        loop {
            match self.step(None)? {
                Some(Note::Joined { room: r, .. }) if r == room => return Ok(()),
                Some(Note::JoinFailed {
                    room: r,
                    code,
                    message,
                }) if r == room => {
                    return Err(Failure::server(
                        code,
                        &message,
                        &format!("cannot join {room}"),
                    ));
                }
                _ => {}
            }
        }
    }

    fn next_line(&mut self) -> Result<Option<String>, Failure> {
        loop {
            if let Some(line) = self.lines.pop_front() {
                return Ok(Some(line));
            }
            if self.input_done {
                return Ok(None);
            }
            self.step(None)?;
        }
    }

    /// Sends one message and waits for its answer, retrying it after RATE_LIMITED (the link
    /// itself sends it again after a reconnect); it leaves the outbox once answered.
    fn deliver(&mut self, room: &str, id: u64, text: &str, what: &str) -> Result<(), Failure> {
        let mut tries = 0;
        loop {
            while let Some(at) = self.next_at.filter(|&at| at > Instant::now()) {
                self.step(Some(at))?;
            }
            self.d.link.send(room, id, text);
            let answer = self.answer(id)?;
            if !matches!(&answer, Answer::Refused(code, _)
                if *code == ErrorCode::RateLimited.as_u16() && tries < RATE_TRIES)
            {
                self.local.done(id);
            }
            match answer {
                Answer::Ack => {
                    self.gap = self.gap * 15 / 16;
                    self.next_at = Some(Instant::now() + self.gap);
                    return Ok(());
                }
                Answer::Refused(code, _)
                    if code == ErrorCode::RateLimited.as_u16() && tries < RATE_TRIES =>
                {
                    tries += 1;
                    self.gap = (self.gap * 2).clamp(PACE_MIN, PACE_MAX);
                    self.next_at = Some(Instant::now() + self.gap);
                }
                Answer::Refused(code, message) => {
                    let doing = if code == ErrorCode::StaleId.as_u16() {
                        format!(
                            "{what} to {room} may or may not have been stored (look in the \
                             room's history)"
                        )
                    } else {
                        format!("{what} was not sent to {room}")
                    };
                    let mut f = Failure::server(code, &message, &doing);
                    if tries > 0 {
                        f.message = format!("{}, still after {tries} tries", f.message);
                    }
                    return Err(f);
                }
            }
        }
    }

    fn answer(&mut self, id: u64) -> Result<Answer, Failure> {
        loop {
            match self.step(None)? {
                Some(Note::Ack { id: i, .. }) if i == id => return Ok(Answer::Ack),
                Some(Note::Refused {
                    id: i,
                    code,
                    message,
                }) if i == id => return Ok(Answer::Refused(code, message)),
                _ => {}
            }
        }
    }

    fn gave_up(&self) -> Exit {
        if self.ever_connected {
            Exit::Lost
        } else {
            Exit::Unreachable
        }
    }

    /// One step of the driver: input is queued, notes are returned, a timeout is `None`.
    /// Reconnects are reported on stderr, and a server away for longer than `wait` ends it.
    fn step(&mut self, until: Option<Instant>) -> Result<Option<Note>, Failure> {
        let give_up = self.down_since.map(|t| t + self.wait);
        let until = match (until, give_up) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match self.d.step(until)? {
            Step::Note(note) => {
                match &note {
                    Note::Connected { fell_back, .. } => {
                        self.down_since = None;
                        self.ever_connected = true;
                        if *fell_back {
                            eprintln!(
                                "chat: chatd at {} does not speak protocol version 2 \
                                 (UNSUPPORTED_VERSION): using version 1",
                                self.d.link.addr()
                            );
                        }
                    }
                    Note::Down { why, retry_in } | Note::Retrying { why, retry_in } => {
                        self.down_since.get_or_insert_with(Instant::now);
                        let since = self.down_since.map_or(Duration::ZERO, |t| t.elapsed());
                        if since + *retry_in > self.wait {
                            return Err(Failure::new(
                                self.gave_up(),
                                format!("{why}; gave up after {} s", self.wait.as_secs()),
                            ));
                        }
                        eprintln!(
                            "chat: {why}; trying again in {:.1} s",
                            retry_in.as_secs_f64()
                        );
                    }
                    _ => {}
                }
                Ok(Some(note))
            }
            Step::Line(line) => {
                self.lines.push_back(line);
                Ok(None)
            }
            Step::InputDone => {
                self.input_done = true;
                Ok(None)
            }
            Step::Timeout => {
                if self.down_since.is_some_and(|t| t.elapsed() >= self.wait) {
                    return Err(Failure::new(
                        self.gave_up(),
                        format!(
                            "cannot reach chatd at {}: gave up after {} s",
                            self.d.link.addr(),
                            self.wait.as_secs()
                        ),
                    ));
                }
                Ok(None)
            }
        }
    }
}

/// What `chat tail` was asked for.
pub struct Tail {
    pub after: Option<u64>,
    pub limit: Option<u32>,
    pub follow: bool,
    pub json: bool,
}

/// Prints `room`'s history, then (with `follow`) its new messages as they come.
///
/// # Errors
/// The room cannot be joined, or the connection failed (without `follow`).
pub fn tail(s: &Settings, room: &str, t: &Tail) -> Result<(), Failure> {
    check_room(room)?;
    let limit = t.limit.unwrap_or(if t.after.is_some() {
        u32::MAX
    } else {
        s.history
    });
    let start = Start::Window {
        after: t.after.unwrap_or(0),
        limit,
    };
    let mode = if t.follow {
        Mode::Resilient
    } else {
        Mode::OneShot
    };
    let (tx, rx) = mpsc::channel();
    let link = Link::open(target(s, 0)?, tx, mode, limit, vec![(room.into(), start)])?;
    let mut d = Driver::new(link, rx);
    let mut head = None;
    let mut out = io::stdout().lock();
    loop {
        let Step::Note(note) = d.step(None)? else {
            continue;
        };
        match note {
            Note::Joined {
                head: h, next, gap, ..
            } => {
                if let Some((a, b)) = gap {
                    eprintln!(
                        "chat: messages {a}-{b} of {room} were deleted before they could be shown"
                    );
                }
                if !t.follow && next > h {
                    break;
                }
                head = Some(h);
            }
            Note::Msg {
                room,
                seq,
                ts_ms,
                user,
                text,
            } => {
                let line = if t.json {
                    json_line(&room, seq, ts_ms, &user, &text)
                } else {
                    tail_line(&room, seq, ts_ms, &user, &text)
                };
                if let Err(e) = writeln!(out, "{line}") {
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        return Ok(()); // the reader has had enough (`| head`)
                    }
                    return Err(Failure::new(Exit::Other, format!("cannot write: {e}")));
                }
                if !t.follow && head.is_some_and(|h| seq >= h) {
                    break;
                }
            }
            Note::JoinFailed { code, message, .. } => {
                return Err(Failure::server(
                    code,
                    &message,
                    &format!("cannot join {room}"),
                ));
            }
            Note::Connected {
                epoch_changed: true,
                ..
            } => eprintln!("chat: the server's message store was replaced; starting {room} over"),
            Note::Down { why, retry_in } | Note::Retrying { why, retry_in } => {
                eprintln!(
                    "chat: {why}; reconnecting in {:.1} s",
                    retry_in.as_secs_f64()
                );
            }
            Note::Error { code, message } => eprintln!("chat: {}", reason(code, &message)),
            _ => {}
        }
    }
    d.link.bye();
    Ok(())
}
