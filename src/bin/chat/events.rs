//! Everything `chat` waits for arrives on one channel as an [`Event`]: frames and closes from
//! the connection's reader thread, lines from the input thread. [`Driver`] turns that channel
//! plus the link's timers into one stream of [`Step`]s, so each mode is a plain loop and
//! nothing blocks where a timer is due.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use chatd::client::Reply;

use crate::failure::{Exit, Failure};
use crate::link::{Link, Note};

#[derive(Debug)]
pub enum Event {
    /// A frame from connection `conn`.
    Frame { conn: u64, reply: Reply },
    /// Connection `conn` ended; nothing more comes from it.
    Closed { conn: u64, why: String },
    /// A line typed or piped in.
    Line(String),
    /// The input ended (Ctrl-D, end of a pipe).
    InputDone,
}

/// What a mode's loop handles next.
#[derive(Debug)]
pub enum Step {
    Note(Note),
    Line(String),
    InputDone,
    /// The deadline given to [`Driver::step`] passed.
    Timeout,
}

pub struct Driver {
    pub link: Link,
    rx: Receiver<Event>,
}

impl Driver {
    pub fn new(link: Link, rx: Receiver<Event>) -> Driver {
        Driver { link, rx }
    }

    /// The next thing to handle, waiting at most until `until` (forever if `None`) while
    /// keeping the link's timers (PING, reconnect) running.
    ///
    /// # Errors
    /// The link gave up (a one-shot connection dropped, a reconnect was refused for good).
    pub fn step(&mut self, until: Option<Instant>) -> Result<Step, Failure> {
        loop {
            if let Some(note) = self.link.notes.pop_front() {
                return Ok(Step::Note(note));
            }
            let now = Instant::now();
            if until.is_some_and(|u| u <= now) {
                return Ok(Step::Timeout);
            }
            let timer = self.link.deadline();
            if timer.is_some_and(|t| t <= now) {
                self.link.tick(now)?;
                continue;
            }
            let wake = match (until, timer) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let event = match wake {
                Some(w) => match self.rx.recv_timeout(w.saturating_duration_since(now)) {
                    Ok(event) => event,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return Err(gone()),
                },
                None => self.rx.recv().map_err(|_| gone())?,
            };
            match event {
                Event::Frame { conn, reply } => self.link.on_frame(conn, reply),
                Event::Closed { conn, why } => self.link.on_closed(conn, why)?,
                Event::Line(line) => return Ok(Step::Line(line)),
                Event::InputDone => return Ok(Step::InputDone),
            }
        }
    }
}

fn gone() -> Failure {
    Failure::new(Exit::Other, "internal error: the event channel closed")
}
