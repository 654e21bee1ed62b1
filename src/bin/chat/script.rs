//! `chat send` and `chat tail`, for scripts: no prompts, no colour, one line per message, and
//! an exit status that says what happened. `send` waits for the ACK of each message before
//! the next (so messages are stored in the order given, and a failure names the exact one),
//! and backs off when the server says RATE_LIMITED. `tail` stops at the head the server
//! reported, unless asked to follow.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chatd::protocol::ErrorCode;

use crate::config::Settings;
use crate::events::{Driver, Step};
use crate::failure::{Exit, Failure, check_room, reason};
use crate::link::{Link, Mode, Note, Start, Target};
use crate::render::{json_line, tail_line};
use crate::tls::Secure;

/// How often one message is retried after RATE_LIMITED before `send` gives up.
const RATE_TRIES: u32 = 12;
/// The first pause after RATE_LIMITED; it doubles while the server keeps refusing.
const PACE_MIN: Duration = Duration::from_millis(50);
/// The longest pause between two sends.
const PACE_MAX: Duration = Duration::from_secs(2);

/// Whom to connect to and how, from the settings; the CA file is read here, once.
///
/// # Errors
/// The TLS settings are unusable (see [`Secure::new`]).
pub fn target(s: &Settings) -> Result<Target, Failure> {
    let tls = match &s.tls {
        Some(t) => Some(Secure::new(t, &s.server)?),
        None => None,
    };
    Ok(Target {
        addr: s.server.clone(),
        user: s.user.clone(),
        token: s.token.clone(),
        tls,
    })
}

/// Posts `text`, or each non-empty line of stdin, to `room`.
///
/// # Errors
/// Any message not ACKed, with the server's reason; or the connection failed.
pub fn send(s: &Settings, room: &str, text: Option<String>) -> Result<(), Failure> {
    check_room(room)?;
    if text.as_deref() == Some("") {
        return Err(Failure::new(
            Exit::Invalid,
            "empty message: nothing to send",
        ));
    }
    let (tx, rx) = mpsc::channel();
    let live_only = Start::Window { after: 0, limit: 0 };
    let link = Link::open(
        target(s)?,
        tx.clone(),
        Mode::OneShot,
        0,
        vec![(room.into(), live_only)],
    )?;
    let mut sender = Poster {
        d: Driver::new(link, rx),
        lines: VecDeque::new(),
        input_done: text.is_some(),
        gap: Duration::ZERO,
        next_at: None,
    };
    sender.joined(room)?;
    let from_stdin = text.is_none();
    if let Some(text) = text {
        sender.lines.push_back(text);
    } else {
        crate::input::spawn_plain(tx);
    }
    let mut line = 0;
    let mut id = 0;
    while let Some(text) = sender.next_line()? {
        line += 1;
        if text.is_empty() {
            continue;
        }
        id += 1;
        let what = if from_stdin {
            format!("line {line}")
        } else {
            "the message".to_string()
        };
        sender.deliver(room, id, &text, &what)?;
    }
    sender.d.link.bye();
    Ok(())
}

struct Poster {
    d: Driver,
    lines: VecDeque<String>,
    input_done: bool,
    /// The pause kept between sends, learnt from RATE_LIMITED answers.
    gap: Duration,
    next_at: Option<Instant>,
}

enum Answer {
    Ack,
    Refused(u16, String),
}

impl Poster {
    fn joined(&mut self, room: &str) -> Result<(), Failure> {
        loop {
            match self.step(None)? {
                Some(Note::Joined { .. }) => return Ok(()),
                Some(Note::JoinFailed { code, message, .. }) => {
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

    /// Sends one message and waits for its ACK, retrying it after RATE_LIMITED.
    fn deliver(&mut self, room: &str, id: u64, text: &str, what: &str) -> Result<(), Failure> {
        let mut tries = 0;
        loop {
            while let Some(at) = self.next_at.filter(|&at| at > Instant::now()) {
                self.step(Some(at))?;
            }
            if let Err(why) = self.d.link.send(room, id, text) {
                let addr = self.d.link.addr();
                return Err(Failure::new(
                    Exit::Lost,
                    format!("lost the connection to chatd at {addr}: {why}"),
                ));
            }
            match self.answer(id)? {
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
                    let mut f =
                        Failure::server(code, &message, &format!("{what} was not sent to {room}"));
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

    /// One step of the driver: input is queued, notes are returned, a timeout is `None`.
    fn step(&mut self, until: Option<Instant>) -> Result<Option<Note>, Failure> {
        match self.d.step(until)? {
            Step::Note(note) => Ok(Some(note)),
            Step::Line(line) => {
                self.lines.push_back(line);
                Ok(None)
            }
            Step::InputDone => {
                self.input_done = true;
                Ok(None)
            }
            Step::Timeout => Ok(None),
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
    let link = Link::open(target(s)?, tx, mode, limit, vec![(room.into(), start)])?;
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
