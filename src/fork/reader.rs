//! The reader process of a pair: it reads the client's frames, checks them, logs the client
//! in against the users file, and appends each SEND to its room's file under an exclusive
//! `flock`; then it signals the whole group of client processes with SIGUSR1, so that every
//! sender (the thundering herd this driver exists to show) looks for what is new.
//!
//! It never writes to the socket. Every answer (WELCOME, ACK, PONG, ERROR, JOINED through the
//! sender's JOIN) goes to its sender through their pipe, in request order, and the sender is
//! the only writer of the socket, so frames never interleave. It waits for the client, its
//! deadline, or the daemon's end (the lifeline pipe reading EOF) in one `poll`. It must never
//! hold a room's lock while it waits for anything but the disk.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::PairConfig;
use super::history::Refusal;
use super::log::{self as roomlog, LogFile};
use super::note::{self, Note};
use crate::auth::Watch;
use crate::protocol::codec::{FrameError, RawFrame, msg_length, parse_client};
use crate::protocol::name::{is_valid_room, is_valid_user};
use crate::protocol::{ClientFrame, Decoded, Deframer, ErrorCode, ServerFrame, VERSION, kind};
use crate::session::SERVER_NAME;
use crate::session::rate::TokenBucket;

/// Bytes taken from the socket per read.
const READ_CHUNK: usize = 16 << 10;

/// How a connection ends, as the sender is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// BYE or FIN: what is owed, the rooms' new messages, then close.
    Finish,
    /// A fatal ERROR was queued (or the socket failed): what is owed, then close.
    Close,
}

/// What woke the reader.
enum Wake {
    Input,
    Deadline,
    /// The daemon is stopping, or gone.
    Stop,
    Nothing,
}

/// One client's reader process.
pub struct Reader<'a> {
    socket: TcpStream,
    notes: File,
    lifeline: OwnedFd,
    sender: Pid,
    config: &'a PairConfig,
    session: u64,
    /// The logged-in user; `None` until HELLO succeeds.
    user: Option<String>,
    rooms: Vec<(String, LogFile)>,
    bucket: TokenBucket,
    /// Notes not yet written to the pipe.
    out: Vec<u8>,
    /// A SEND was stored since the last flush: wake every sender, not only ours.
    stored: bool,
}

impl<'a> Reader<'a> {
    pub fn new(
        socket: TcpStream,
        notes: OwnedFd,
        lifeline: OwnedFd,
        sender: Pid,
        config: &'a PairConfig,
        session: u64,
    ) -> Reader<'a> {
        Reader {
            socket,
            notes: File::from(notes),
            lifeline,
            sender,
            config,
            session,
            user: None,
            rooms: Vec::new(),
            bucket: TokenBucket::new(Instant::now()),
            out: Vec::new(),
            stored: false,
        }
    }

    /// Serves the connection until it ends; the process's exit code.
    pub fn run(mut self) -> i32 {
        match self.serve() {
            Ok(()) => 0,
            // The sender is gone (its client went away first): nothing is left to do.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => 0,
            Err(e) => {
                log::warn!("session {}: reader: {e}", self.session);
                1
            }
        }
    }

    fn serve(&mut self) -> io::Result<()> {
        let limits = &self.config.limits;
        let deframer = Deframer::for_server(limits.max_frame);
        let mut deadline = Instant::now() + limits.handshake_timeout;
        let idle = limits.idle_timeout;
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = vec![0; READ_CHUNK];
        loop {
            let mut used = 0;
            let mut end = None;
            while end.is_none() {
                match deframer.next(buf.get(used..).unwrap_or_default()) {
                    Ok(Decoded::NeedMore) => break,
                    Ok(Decoded::Frame(raw)) => {
                        used += raw.wire_len;
                        deadline = Instant::now() + idle;
                        end = self.frame(&raw);
                    }
                    Err(FrameError { code, reason }) => end = Some(self.fatal(code, reason)),
                }
            }
            if let Some(end) = end {
                return self.finish(end);
            }
            buf.drain(..used);
            self.flush()?;
            match self.wait(deadline)? {
                Wake::Nothing => {}
                Wake::Stop => {
                    let end = self.fatal(ErrorCode::ShuttingDown, "the server is shutting down");
                    return self.finish(end);
                }
                Wake::Deadline => {
                    let why = match self.user {
                        None => "no HELLO in time",
                        Some(_) => "idle for too long",
                    };
                    let end = self.fatal(ErrorCode::Timeout, why);
                    return self.finish(end);
                }
                Wake::Input => match self.socket.read(&mut chunk) {
                    Ok(0) => return self.finish(End::Finish),
                    Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        log::debug!("session {}: {e}", self.session);
                        return self.finish(End::Close);
                    }
                },
            }
        }
    }

    /// Waits for input, the deadline or the daemon's end, whichever comes first.
    fn wait(&self, deadline: Instant) -> io::Result<Wake> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Wake::Deadline);
        }
        // Rounded up: a timeout that ends before the deadline only wakes us to wait again.
        let timeout =
            PollTimeout::try_from(left + Duration::from_micros(999)).unwrap_or(PollTimeout::MAX);
        let mut fds = [
            PollFd::new(self.socket.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.lifeline.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(Wake::Nothing),
            Err(e) => return Err(e.into()),
        }
        let [socket, lifeline] = fds;
        if lifeline.any().unwrap_or(false) {
            return Ok(Wake::Stop);
        }
        Ok(if socket.any().unwrap_or(false) {
            Wake::Input
        } else {
            Wake::Nothing
        })
    }

    /// Handles one whole frame; `Some` when it ends the connection.
    fn frame(&mut self, raw: &RawFrame<'_>) -> Option<End> {
        if self.user.is_none() && raw.kind != kind::HELLO {
            return Some(self.fatal(ErrorCode::NotAuthenticated, "send HELLO first"));
        }
        let frame = match parse_client(raw) {
            Ok(frame) => frame,
            Err(FrameError { code, reason }) => return Some(self.fatal(code, reason)),
        };
        match frame {
            // The fork model speaks version 1 only: a HELLO of any other version, 2 included,
            // is UNSUPPORTED_VERSION.
            ClientFrame::Hello {
                version,
                user,
                token,
                ..
            } => self.hello(version, user, token),
            ClientFrame::HelloUnsupported { version, .. } => self.hello(version, "", ""),
            ClientFrame::Join { room, after, limit } => self.join(room, after, limit),
            ClientFrame::Leave { room } => {
                self.leave(room);
                None
            }
            ClientFrame::Send { room, id, text } => {
                self.send(room, id, text);
                None
            }
            ClientFrame::Ping { nonce } => {
                self.reply(&ServerFrame::Pong { nonce });
                None
            }
            ClientFrame::Bye => Some(End::Finish),
            // Version 2's kinds: the version 1 deframer above refuses them from their kind
            // byte, so they never get here; should one, it is what version 1 says it is.
            ClientFrame::Who { .. } | ClientFrame::Watch { .. } => {
                Some(self.fatal(ErrorCode::UnknownKind, "unknown frame kind"))
            }
        }
    }

    fn hello(&mut self, version: u8, user: &str, token: &str) -> Option<End> {
        if self.user.is_some() {
            return Some(self.fatal(ErrorCode::NotAuthenticated, "already authenticated"));
        }
        if version != VERSION {
            return Some(self.fatal(
                ErrorCode::UnsupportedVersion,
                "this server speaks version 1",
            ));
        }
        if !is_valid_user(user) || !self.authenticate(user, token) {
            return Some(self.fatal(ErrorCode::AuthFailed, "unknown user or wrong token"));
        }
        self.user = Some(user.into());
        let limits = &self.config.limits;
        let welcome = ServerFrame::Welcome {
            version: VERSION,
            epoch: self.config.epoch,
            session: self.session,
            max_frame: limits.max_frame,
            idle_timeout_ms: u32::try_from(limits.idle_timeout.as_millis()).unwrap_or(u32::MAX),
            server: SERVER_NAME,
        };
        self.reply(&welcome);
        None
    }

    /// Checks a HELLO against the users file as it is now: no watcher here, the file is read
    /// at every login.
    fn authenticate(&self, user: &str, token: &str) -> bool {
        match Watch::open(self.config.users.clone()) {
            Ok((_, table)) => table.verify(user, token),
            Err(e) => {
                log::warn!("session {}: cannot read the users file: {e}", self.session);
                false
            }
        }
    }

    /// Whether the user may use `room`, by the private-rooms file as it is now: read at every
    /// JOIN and SEND, as the users file is at every HELLO. A file that cannot be read or
    /// parsed lets nobody in, rather than everybody.
    fn may_use(&self, room: &str) -> bool {
        let user = self.user.as_deref().unwrap_or("");
        match crate::access::Watch::open(self.config.access.clone()) {
            Ok((_, access)) => access.may_use(room, user),
            Err(e) => {
                log::warn!(
                    "session {}: cannot read the private-rooms file: {e}",
                    self.session
                );
                false
            }
        }
    }

    fn join(&mut self, room: &str, after: u64, limit: u32) -> Option<End> {
        if !is_valid_room(room) {
            self.error(ErrorCode::Invalid, 0, "invalid room name");
            return None;
        }
        if !self.may_use(room) {
            self.error(ErrorCode::Forbidden, 0, "you may not use that room");
            return None;
        }
        let at = match self.rooms.iter().position(|(name, _)| name == room) {
            Some(at) => at,
            None => {
                if self.rooms.len() >= self.config.limits.max_rooms_per_connection {
                    self.error(ErrorCode::TooMany, 0, "too many rooms joined");
                    return None;
                }
                let max_rooms = self.config.limits.max_rooms;
                match self.config.history.open_for_writing(room, max_rooms) {
                    Ok(file) => self.rooms.push((room.to_string(), file)),
                    Err(Refusal::TooMany) => {
                        self.error(ErrorCode::TooMany, 0, "the server holds too many rooms");
                        return None;
                    }
                    Err(Refusal::Io(e)) => {
                        log::error!("session {}: cannot open room {room}: {e}", self.session);
                        return Some(self.fatal(ErrorCode::Internal, "cannot open the room"));
                    }
                }
                self.rooms.len() - 1
            }
        };
        // The head as of this JOIN, in request order: a SEND read after it is live to this
        // member, even if the sender gets to the JOIN only after it was stored.
        let tail = match self
            .rooms
            .get_mut(at)
            .map(|(_, file)| file.shared(roomlog::tail))
        {
            Some(Ok(tail)) => tail,
            Some(Err(e)) => {
                log::error!("session {}: cannot read room {room}: {e}", self.session);
                return Some(self.fatal(ErrorCode::Internal, "cannot read the room"));
            }
            None => return Some(self.fatal(ErrorCode::Internal, "cannot read the room")),
        };
        let join = Note::Join {
            room,
            after,
            limit,
            tail,
        };
        note::push(&join, &mut self.out);
        None
    }

    fn leave(&mut self, room: &str) {
        if !is_valid_room(room) {
            return self.error(ErrorCode::Invalid, 0, "invalid room name");
        }
        let Some(i) = self.rooms.iter().position(|(name, _)| name == room) else {
            return self.error(ErrorCode::NotJoined, 0, "not a member of that room");
        };
        self.rooms.remove(i);
        note::push(&Note::Leave { room }, &mut self.out);
    }

    fn send(&mut self, room: &str, id: u64, text: &str) {
        match self.store(room, text) {
            Ok(seq) => {
                self.stored = true;
                self.reply(&ServerFrame::Ack { id, seq });
            }
            Err((code, message)) => self.error(code, id, message),
        }
    }

    /// Checks a SEND in the order the real daemon does, then appends it to its room.
    fn store(&mut self, room: &str, text: &str) -> Result<u64, (ErrorCode, &'static str)> {
        if !is_valid_room(room) {
            return Err((ErrorCode::Invalid, "invalid room name"));
        }
        if self.user.is_some() && !self.may_use(room) {
            return Err((ErrorCode::Forbidden, "you may not use that room"));
        }
        let Some(user) = &self.user else {
            return Err((ErrorCode::NotAuthenticated, "send HELLO first"));
        };
        let Some((_, file)) = self.rooms.iter_mut().find(|(name, _)| name == room) else {
            return Err((ErrorCode::NotJoined, "join the room before sending to it"));
        };
        if text.is_empty() {
            return Err((ErrorCode::Invalid, "empty message"));
        }
        let limits = &self.config.limits;
        if msg_length(room, user, text) > usize::try_from(limits.max_frame).unwrap_or(usize::MAX) {
            return Err((ErrorCode::Invalid, "message longer than max_frame"));
        }
        if !self
            .bucket
            .take(Instant::now(), limits.send_rate, limits.send_burst)
        {
            return Err((ErrorCode::RateLimited, "slow down"));
        }
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let sync = self.config.sync;
        file.exclusive(|f| roomlog::append(f, ts_ms, user, text, sync))
            .map_err(|e| {
                log::warn!("session {}: cannot store in {room}: {e}", self.session);
                (ErrorCode::Storage, "the message could not be stored")
            })
    }

    fn reply(&mut self, frame: &ServerFrame<'_>) {
        note::push_reply(frame, &mut self.out);
    }

    fn error(&mut self, code: ErrorCode, reference: u64, message: &str) {
        self.reply(&ServerFrame::Error {
            code: code.as_u16(),
            reference,
            message,
        });
    }

    /// Queues a fatal ERROR; the connection closes after it.
    fn fatal(&mut self, code: ErrorCode, message: &str) -> End {
        self.error(code, 0, message);
        End::Close
    }

    /// Hands the queued notes to the sender, then wakes it: every sender of the group when
    /// a message was stored (each looks at its rooms), ours alone otherwise.
    fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.notes.write_all(&self.out)?;
        self.out.clear();
        let woken = if std::mem::take(&mut self.stored) {
            killpg(self.config.group, Signal::SIGUSR1)
        } else {
            kill(self.sender, Signal::SIGUSR1)
        };
        match woken {
            // Our sender ended already; the pipe tells us so at the next write.
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Tells the sender how the connection ends, and ends.
    fn finish(&mut self, end: End) -> io::Result<()> {
        let last = match end {
            End::Finish => Note::Finish,
            End::Close => Note::Close,
        };
        note::push(&last, &mut self.out);
        self.flush()
    }
}
