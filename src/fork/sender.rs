//! The sender process of a pair: the only writer of its client's socket. It sleeps in
//! `sigwait` for SIGUSR1 and, at every wake, takes its reader's notes (answers, JOINs, LEAVEs,
//! the end) in order, then reads every joined room's file past its cursor and sends what is
//! new as MSG frames.
//!
//! SIGUSR1 stays blocked from the process's first instruction (it inherits the daemon's mask),
//! so a signal sent while it works stays pending and the next `sigwait` returns at once: no
//! wake-up is lost, and many coalesce into one, since every wake takes everything there is.
//! Every sender of the daemon wakes for every message stored in any room, its own or not:
//! papayaChat's thundering herd, kept because it is what this driver is for. A sender that
//! has nothing new to read learns it from one `fstat` per room.
//!
//! It must never hold a room's lock while it writes to the socket: a slow client would stall
//! every writer of the room. It reads a bounded batch under the shared lock, lets go, then
//! writes.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

use super::PairConfig;
use super::log::{self as roomlog, Cursor, LogFile, Tail};
use super::note::{self, Note};
use crate::protocol::{ErrorCode, ServerFrame, encode_server, replay_start};
use crate::session::CLOSE_GRACE;

/// Bytes of a room file read under one lock.
const BATCH_BYTES: usize = 64 << 10;
/// Bytes taken from the pipe per read.
const NOTES_CHUNK: usize = 64 << 10;
/// Output is written once this much is queued, and at the end of every wake.
const WRITE_AT: usize = 64 << 10;

/// A room this client joined, and how far it has been sent.
struct Member {
    room: String,
    log: LogFile,
    cursor: Cursor,
}

/// How the reader said the connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Finish,
    Close,
}

/// One client's sender process.
pub struct Sender<'a> {
    socket: TcpStream,
    notes: File,
    /// Bytes read from the pipe and not yet a whole note.
    inbox: Vec<u8>,
    out: Vec<u8>,
    members: Vec<Member>,
    config: &'a PairConfig,
    session: u64,
}

impl<'a> Sender<'a> {
    /// `notes` is the pipe's read end; it is made non-blocking here.
    ///
    /// # Errors
    /// The pipe or the socket cannot be set up.
    pub fn new(
        socket: TcpStream,
        notes: OwnedFd,
        config: &'a PairConfig,
        session: u64,
    ) -> io::Result<Sender<'a>> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        use std::os::fd::AsRawFd;
        fcntl(notes.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        socket.set_write_timeout(Some(config.limits.write_stall_timeout))?;
        Ok(Sender {
            socket,
            notes: File::from(notes),
            inbox: Vec::new(),
            out: Vec::new(),
            members: Vec::new(),
            config,
            session,
        })
    }

    /// Serves the connection until it ends; the process's exit code.
    pub fn run(mut self) -> i32 {
        let served = self.serve();
        let closed = self.close();
        match served.and(closed) {
            Ok(()) => 0,
            Err(e) => {
                log::debug!("session {}: sender: {e}", self.session);
                1
            }
        }
    }

    fn serve(&mut self) -> io::Result<()> {
        let mut wake = SigSet::empty();
        wake.add(Signal::SIGUSR1);
        loop {
            let end = self.take_notes()?;
            if end.is_some() {
                // What is owed now gets as long as after a fatal error, no longer.
                self.socket.set_write_timeout(Some(CLOSE_GRACE))?;
            }
            match end {
                Some(End::Finish) => {
                    self.deliver_all()?;
                    return self.write_out();
                }
                Some(End::Close) => return self.write_out(),
                None => {}
            }
            self.deliver_all()?;
            self.write_out()?;
            wake.wait()?;
        }
    }

    /// Carries out every note in the pipe, in order; `Some` once the reader said the end.
    fn take_notes(&mut self) -> io::Result<Option<End>> {
        let mut chunk = vec![0; NOTES_CHUNK];
        loop {
            match self.notes.read(&mut chunk) {
                // The reader is gone without a word (the daemon ends this pair too).
                Ok(0) => return Ok(Some(End::Close)),
                Ok(n) => self
                    .inbox
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let inbox = std::mem::take(&mut self.inbox);
            let mut used = 0;
            let end = loop {
                match note::next(inbox.get(used..).unwrap_or_default()) {
                    Ok(Some((note, size))) => {
                        used += size;
                        if let Some(end) = self.carry_out(note)? {
                            break Some(end);
                        }
                    }
                    Ok(None) => break None,
                    Err(note::BadNote) => {
                        log::error!("session {}: a note out of step", self.session);
                        self.internal_error();
                        break Some(End::Close);
                    }
                }
            };
            self.inbox = inbox;
            self.inbox.drain(..used.min(self.inbox.len()));
            if end.is_some() {
                return Ok(end);
            }
        }
    }

    fn carry_out(&mut self, note: Note<'_>) -> io::Result<Option<End>> {
        match note {
            Note::Reply(frame) => self.queue(frame)?,
            Note::Join {
                room,
                after,
                limit,
                tail,
            } => {
                if let Err(e) = self.join(room, after, limit, tail) {
                    log::error!("session {}: cannot replay {room}: {e}", self.session);
                    self.internal_error();
                    return Ok(Some(End::Close));
                }
            }
            Note::Leave { room } => {
                self.members.retain(|m| m.room != room);
                let mut frame = Vec::new();
                encode_server(&ServerFrame::Left { room }, &mut frame);
                self.queue(&frame)?;
            }
            Note::Finish => return Ok(Some(End::Finish)),
            Note::Close => return Ok(Some(End::Close)),
        }
        Ok(None)
    }

    /// JOINED with the head the reader saw, then the replay up to it, before any later
    /// answer; what was stored after it follows live.
    fn join(&mut self, room: &str, after: u64, limit: u32, tail: Tail) -> io::Result<()> {
        let at = match self.members.iter().position(|m| m.room == room) {
            Some(at) => at,
            None => {
                let log = self.config.history.open_for_reading(room)?;
                self.members.push(Member {
                    room: room.to_string(),
                    log,
                    cursor: Cursor::START,
                });
                self.members.len() - 1
            }
        };
        let Some(member) = self.members.get_mut(at) else {
            return Ok(());
        };
        let first = u64::from(tail.head > 0);
        let mut frame = Vec::new();
        let joined = ServerFrame::Joined {
            room,
            first,
            head: tail.head,
        };
        encode_server(&joined, &mut frame);
        let start = replay_start(after, limit, first, tail.head);
        member.cursor = if start > tail.head {
            tail.cursor()
        } else {
            let mut cursor = Cursor::START;
            while cursor.next < start {
                let skipped = member
                    .log
                    .shared(|f| roomlog::read(f, &mut cursor, start - 1, BATCH_BYTES))?;
                if skipped.is_empty() {
                    break;
                }
            }
            cursor
        };
        self.queue(&frame)?;
        self.deliver(at, tail.head)
    }

    fn deliver_all(&mut self) -> io::Result<()> {
        for at in 0..self.members.len() {
            self.deliver(at, u64::MAX)?;
        }
        Ok(())
    }

    /// Sends the MSGs of one room from its cursor up to seq `until`.
    fn deliver(&mut self, at: usize, until: u64) -> io::Result<()> {
        loop {
            let Some(member) = self.members.get_mut(at) else {
                return Ok(());
            };
            if member.cursor.next > until || member.log.size()? <= member.cursor.offset {
                return Ok(());
            }
            let cursor = &mut member.cursor;
            let bytes = member
                .log
                .shared(|f| roomlog::read(f, cursor, until, BATCH_BYTES))?;
            if bytes.is_empty() {
                return Ok(());
            }
            for record in roomlog::records(&bytes) {
                let msg = ServerFrame::Msg {
                    room: &member.room,
                    seq: record.seq,
                    ts_ms: record.ts_ms,
                    user: record.user,
                    text: record.text,
                };
                encode_server(&msg, &mut self.out);
            }
            if self.out.len() >= WRITE_AT {
                self.write_out()?;
            }
        }
    }

    fn queue(&mut self, frame: &[u8]) -> io::Result<()> {
        self.out.extend_from_slice(frame);
        if self.out.len() >= WRITE_AT {
            self.write_out()?;
        }
        Ok(())
    }

    /// Queues a fatal INTERNAL error: the connection closes after it.
    fn internal_error(&mut self) {
        let error = ServerFrame::Error {
            code: ErrorCode::Internal.as_u16(),
            reference: 0,
            message: "internal error",
        };
        encode_server(&error, &mut self.out);
    }

    /// Writes everything queued. The socket's write timeout is `--write-stall-timeout`: a
    /// client that takes nothing for that long ends the connection.
    fn write_out(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let written = self.socket.write_all(&self.out);
        self.out.clear();
        written
    }

    /// FIN after the last frame, then reads (and drops) what the client still sends until
    /// its own FIN, for at most [`CLOSE_GRACE`]: closing with unread input would reset the
    /// connection and could take our last frames with it.
    fn close(&mut self) -> io::Result<()> {
        self.socket.shutdown(Shutdown::Write)?;
        let deadline = Instant::now() + CLOSE_GRACE;
        let mut sink = [0; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < Duration::from_millis(1) {
                return Ok(());
            }
            self.socket.set_read_timeout(Some(left))?;
            match self.socket.read(&mut sink) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Ok(()),
            }
        }
    }
}
