//! A connection as the reactor sees it: a socket, its session, and the few flags that say
//! what the socket is ready for. This is where bytes move between the kernel and a session.

use std::io::{self, Read};
use std::net::{IpAddr, Shutdown};

use mio::Interest;
use mio::net::TcpStream;

use crate::session::{Env, Session};

/// Reads per connection per turn: enough to take a burst, few enough that one flooding
/// client cannot hold the reactor while others wait.
const READS_PER_TURN: usize = 4;

/// Bytes written per connection per turn, for the same reason.
const WRITE_BUDGET: usize = 1 << 20;

pub struct Conn {
    pub stream: TcpStream,
    pub peer: IpAddr,
    pub serial: u64,
    pub session: Session,
    /// A partial frame carried over between reads; empty (and unallocated) almost always.
    inbuf: Vec<u8>,
    /// The socket may hold bytes we have not read (we have not seen `WouldBlock` since).
    pub readable: bool,
    /// The last write was refused; WRITABLE is armed and we wait for it.
    pub write_blocked: bool,
    /// The peer sent FIN.
    eof: bool,
    /// We sent FIN, after the last frame.
    shut_write: bool,
    /// WRITABLE is part of the registered interest.
    registered_writable: bool,
    /// Already in the reactor's ready list.
    pub scheduled: bool,
}

/// What servicing a connection leaves for the reactor to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serviced {
    /// Nothing more this turn; wait for an event.
    Wait,
    /// A budget ran out with work left: service again next turn.
    Again,
    /// Close it.
    Close,
}

impl Conn {
    pub fn new(stream: TcpStream, peer: IpAddr, serial: u64, session: Session) -> Conn {
        Conn {
            stream,
            peer,
            serial,
            session,
            inbuf: Vec::new(),
            // An edge may have passed before we registered: look once.
            readable: true,
            write_blocked: false,
            eof: false,
            shut_write: false,
            registered_writable: false,
            scheduled: false,
        }
    }

    /// Reads what the session will take, then writes what it owes, within this turn's budgets.
    pub fn service(&mut self, scratch: &mut [u8], env: &mut impl Env) -> Serviced {
        let now = env.now();
        if !self.inbuf.is_empty() && self.session.wants_input() {
            let used = self.session.receive(&self.inbuf, env);
            self.inbuf.drain(..used.min(self.inbuf.len()));
        }
        let mut again = false;
        let mut reads = 0;
        while self.readable && (self.session.wants_input() || self.session.is_closing()) {
            if reads == READS_PER_TURN {
                again = true;
                break;
            }
            reads += 1;
            match self.stream.read(scratch) {
                Ok(0) => {
                    self.readable = false;
                    self.eof = true;
                    // A peer that half-closes is owed the answers to what it sent, as after BYE.
                    self.session.on_eof(now);
                }
                Ok(n) => {
                    env.transferred(n as u64, 0);
                    self.feed(scratch.get(..n).unwrap_or_default(), env);
                }
                // Drained: the next edge will tell us when there is more.
                Err(e) if would_block(&e) => self.readable = false,
                // A signal interrupted the read: just try again.
                Err(e) if interrupted(&e) => {}
                // Reset or worse: this connection is over.
                Err(_) => return Serviced::Close,
            }
        }
        if self.inbuf.is_empty() && self.inbuf.capacity() > 0 {
            self.inbuf = Vec::new();
        }
        let paused = !self.session.wants_input();
        match self.flush(env) {
            Ok(true) => again = true,
            Ok(false) => {}
            Err(_) => return Serviced::Close,
        }
        // Writing can lift a pause (a PONG's barrier settled, the backlog drained): input that
        // waited, buffered or still in the socket, is taken on the next turn.
        if paused && self.session.wants_input() && (self.readable || !self.inbuf.is_empty()) {
            again = true;
        }
        if self.session.is_done() {
            if self.eof {
                return Serviced::Close;
            }
            if !self.shut_write {
                // FIN after the last frame; keep reading (and discarding) until the peer's FIN
                // so that unread input does not turn our close into a reset that eats the tail.
                self.shut_write = true;
                if self.stream.shutdown(Shutdown::Write).is_err() {
                    return Serviced::Close;
                }
            }
        }
        if again {
            Serviced::Again
        } else {
            Serviced::Wait
        }
    }

    /// Hands freshly read bytes to the session, keeping any partial frame for later.
    fn feed(&mut self, data: &[u8], env: &mut impl Env) {
        if self.session.is_closing() {
            return;
        }
        if self.inbuf.is_empty() {
            let used = self.session.receive(data, env);
            self.inbuf
                .extend_from_slice(data.get(used..).unwrap_or_default());
        } else {
            self.inbuf.extend_from_slice(data);
            let used = self.session.receive(&self.inbuf, env);
            self.inbuf.drain(..used.min(self.inbuf.len()));
        }
    }

    /// Tops up and writes the outbox until it is empty, the socket refuses, or the budget is
    /// spent. Returns whether the budget ran out with bytes left.
    fn flush(&mut self, env: &mut impl Env) -> io::Result<bool> {
        let now = env.now();
        let mut budget = WRITE_BUDGET;
        loop {
            self.session.fill(env);
            if self.session.out.is_empty() || self.write_blocked || self.shut_write {
                return Ok(false);
            }
            if budget == 0 {
                return Ok(true);
            }
            match self
                .session
                .out
                .write_counted(&mut self.stream, |kind| env.frame_out(kind))
            {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    env.transferred(0, n as u64);
                    budget = budget.saturating_sub(n);
                    self.session.on_written(n, false, now);
                }
                // The socket buffer is full: arm WRITABLE and wait.
                Err(e) if would_block(&e) => {
                    self.write_blocked = true;
                    self.session.on_written(0, true, now);
                }
                // A signal interrupted the write: just try again.
                Err(e) if interrupted(&e) => {}
                // Broken pipe or reset: the connection is over.
                Err(e) => return Err(e),
            }
        }
    }

    /// The interest the connection needs now, derived from its state, and whether that
    /// differs from what is registered (the caller re-registers then).
    pub fn interest_change(&mut self) -> Option<Interest> {
        let want_writable = self.write_blocked;
        if want_writable == self.registered_writable {
            return None;
        }
        self.registered_writable = want_writable;
        Some(if want_writable {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        })
    }
}

pub fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

pub fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}
