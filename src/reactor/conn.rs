//! A connection as the reactor sees it: a socket, its transport, its session, and the few
//! flags that say what the socket is ready for. This is where bytes move between the kernel
//! and a session, in the clear or through TLS (`crate::transport`), and for web listeners
//! through HTTP and WebSocket as well (`web`, beside this file).

pub(crate) mod web;
#[cfg(test)]
mod web_tests;

use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Shutdown};

use mio::Interest;
use mio::net::TcpStream;

use crate::session::{Env, Session};
use crate::shared::Shared;
use crate::transport::Transport;
use crate::transport::tls::{Failure, SEAL_CHUNK};

/// Reads per connection per turn: enough to take a burst, few enough that one flooding
/// client cannot hold the reactor while others wait.
const READS_PER_TURN: usize = 4;

/// Bytes written per connection per turn, for the same reason.
const WRITE_BUDGET: usize = 1 << 20;

/// Buffers the reactor lends to whichever connection it is servicing, so that no connection
/// owns I/O buffers of its own, and the turn's TLS handshake budget.
pub struct Scratch {
    /// Socket reads land here (after a TLS connection's partial record).
    pub read: Vec<u8>,
    /// A TLS or WebSocket connection's frames gathered for sealing or framing; on the way
    /// in, a web connection's input with its partial frame in front, unmasked in place.
    pub plain: Vec<u8>,
    /// Ciphertext on its way to a TLS socket.
    pub cipher: Vec<u8>,
    /// TLS connections that may still work on their handshake this turn: handshakes cost
    /// real CPU, and a flood of them must not delay established members.
    pub handshakes: usize,
}

impl Scratch {
    /// Room for one read of `read_len` bytes behind a partial TLS record.
    pub fn new(read_len: usize) -> Scratch {
        Scratch {
            read: vec![0; read_len + crate::transport::tls::MAX_RECORD],
            plain: Vec::with_capacity(SEAL_CHUNK),
            cipher: Vec::with_capacity(SEAL_CHUNK + 1024),
            handshakes: 0,
        }
    }
}

// Every connection, idle or not, costs at least this (see "Memory per idle connection" in
// docs/architecture.md): the reactor keeps its `Conn`s inline in a slab, and that is most of
// what an idle connection holds. The slab's entry is `Vacant(usize)` or `Occupied(Conn)`,
// laid out like an `Option<Conn>`: the vacant case must fit in the `Conn`'s niches, or every
// entry grows by 8 bytes. In debug builds mio's `TcpStream` also remembers which `Poll` it is
// registered with, 8 bytes more.
#[cfg(not(debug_assertions))]
const CONN_BYTES: usize = 168;
#[cfg(debug_assertions)]
const CONN_BYTES: usize = 176;
const _: () = assert!(std::mem::size_of::<Conn>() == CONN_BYTES);
const _: () = assert!(std::mem::size_of::<Option<Conn>>() == CONN_BYTES);

pub struct Conn {
    pub stream: TcpStream,
    pub peer: IpAddr,
    pub serial: u64,
    pub session: Session,
    /// Plain or TLS; it also keeps the partial frame carried over between reads.
    pub transport: Transport,
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

/// What one read from the socket came to.
enum Read1 {
    Data,
    Eof,
    Drained,
    Failed,
}

impl Conn {
    pub fn new(
        stream: TcpStream,
        peer: IpAddr,
        serial: u64,
        session: Session,
        transport: Transport,
    ) -> Conn {
        Conn {
            stream,
            peer,
            serial,
            session,
            transport,
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
    pub fn service(
        &mut self,
        scratch: &mut Scratch,
        shared: &Shared,
        env: &mut impl Env,
    ) -> Serviced {
        let now = env.now();
        if let Some(tls) = self.transport.tls()
            && tls.is_handshaking()
        {
            // The session's HELLO deadline covers the TLS handshake too: it fired.
            if self.session.is_closing() {
                tls.failure = Some(Failure::Timeout);
                return Serviced::Close;
            }
            if scratch.handshakes == 0 {
                return Serviced::Again;
            }
            scratch.handshakes -= 1;
        }
        if self.transport.has_inbuf() && self.session.wants_input() {
            let mut inbuf = self.transport.take_inbuf();
            let used = self.session.receive(&inbuf, env);
            inbuf.drain(..used.min(inbuf.len()));
            self.transport.put_inbuf(inbuf);
        }
        let mut again = false;
        let mut reads = 0;
        // A web connection owing the socket a response or a Pong reads no more until it is
        // sent: input can never make what it owes grow without bound.
        while self.readable
            && !self.web_owes()
            && (self.transport.is_handshaking()
                || self.session.wants_input()
                || self.session.is_closing())
        {
            if reads == READS_PER_TURN {
                again = true;
                break;
            }
            reads += 1;
            let read = match &mut self.transport {
                Transport::Plain(_) => self.read_plain(scratch, env),
                Transport::Tls(_) | Transport::WebTls(_) => self.read_tls(scratch, shared, env),
                Transport::Web(_) => self.read_web(scratch, shared, env),
            };
            match read {
                Read1::Data => {}
                Read1::Drained => self.readable = false,
                Read1::Eof => {
                    self.readable = false;
                    self.eof = true;
                    if let Some(tls) = self.transport.tls()
                        && tls.is_handshaking()
                    {
                        tls.failure = Some(Failure::Eof);
                        return Serviced::Close;
                    }
                    // A peer that half-closes is owed the answers to what it sent, as after BYE.
                    self.session.on_eof(now);
                }
                Read1::Failed => return Serviced::Close,
            }
        }
        // An empty buffer's memory goes back: an idle connection holds none.
        if !self.transport.has_inbuf() {
            let inbuf = self.transport.take_inbuf();
            self.transport.put_inbuf(inbuf);
        }
        let paused = !self.session.wants_input() || self.web_owes();
        let flushed = match &self.transport {
            Transport::Plain(_) => self.flush_plain(env),
            Transport::Tls(_) | Transport::WebTls(_) => self.flush_tls(scratch, env),
            Transport::Web(_) => self.flush_web(scratch, env),
        };
        match flushed {
            Ok(true) => again = true,
            Ok(false) => {}
            Err(_) => return Serviced::Close,
        }
        // Writing can lift a pause (a PONG's barrier settled, the backlog drained): input that
        // waited, buffered or still in the socket, is taken on the next turn.
        let waiting = self.readable || self.transport.has_inbuf();
        if paused && self.session.wants_input() && !self.web_owes() && waiting {
            again = true;
        }
        if self.session.is_done() {
            match self.finish(scratch, env) {
                Ok(true) => {}
                // The close_notify waits for the socket (or the next turn's budget) to take
                // what is queued before it.
                Ok(false) if self.write_blocked => return Serviced::Wait,
                Ok(false) => return Serviced::Again,
                Err(_) => return Serviced::Close,
            }
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

    /// One read of plaintext, straight into the scratch buffer and on to the session.
    fn read_plain(&mut self, scratch: &mut Scratch, env: &mut impl Env) -> Read1 {
        let Transport::Plain(inbuf) = &mut self.transport else {
            return Read1::Failed;
        };
        loop {
            match self.stream.read(&mut scratch.read) {
                Ok(0) => return Read1::Eof,
                Ok(n) => {
                    env.transferred(n as u64, 0);
                    let data = scratch.read.get(..n).unwrap_or_default();
                    feed(&mut self.session, inbuf, data, env);
                    return Read1::Data;
                }
                // Drained: the next edge will tell us when there is more.
                Err(e) if would_block(&e) => return Read1::Drained,
                // A signal interrupted the read: just try again.
                Err(e) if interrupted(&e) => {}
                // Reset or worse: this connection is over.
                Err(_) => return Read1::Failed,
            }
        }
    }

    /// One read of ciphertext behind the partial record kept from last time; whole records
    /// are decrypted in the scratch buffer and their plaintext fed to the session, handshake
    /// answers are sent, and only a new partial record is kept.
    fn read_tls(&mut self, scratch: &mut Scratch, shared: &Shared, env: &mut impl Env) -> Read1 {
        let peer = self.peer;
        let (tls, mut ws) = match &mut self.transport {
            Transport::Tls(tls) => (&mut **tls, None),
            Transport::WebTls(web) => (&mut web.tls, Some(&mut web.ws)),
            Transport::Plain(_) | Transport::Web(_) => return Read1::Failed,
        };
        let kept = tls.rx.len();
        let Some(front) = scratch.read.get_mut(..kept) else {
            return Read1::Failed;
        };
        front.copy_from_slice(&tls.rx);
        let n = loop {
            match self
                .stream
                .read(scratch.read.get_mut(kept..).unwrap_or_default())
            {
                Ok(0) => return Read1::Eof,
                Ok(n) => break n,
                Err(e) if would_block(&e) => return Read1::Drained,
                Err(e) if interrupted(&e) => {}
                Err(_) => return Read1::Failed,
            }
        };
        env.transferred(n as u64, 0);
        let total = kept + n;
        scratch.cipher.clear();
        // Out of the state for the call, since rustls holds the state while it hands out
        // plaintext; put back right after.
        let mut inbuf = std::mem::take(&mut tls.inbuf);
        let session = &mut self.session;
        let incoming = scratch.read.get_mut(..total).unwrap_or_default();
        let unmask = &mut scratch.plain;
        let mut upgraded = None;
        let received = tls.receive(incoming, &mut scratch.cipher, |plain| {
            match ws.as_deref_mut() {
                None => feed(session, &mut inbuf, plain, env),
                Some(ws) => {
                    let site = web::Peer {
                        shared,
                        addr: peer,
                        tls: true,
                    };
                    if let Some(client) = web::input(ws, session, plain, unmask, &site, env) {
                        upgraded = Some(client);
                    }
                }
            }
        });
        tls.inbuf = inbuf;
        let received = match received {
            Ok(r) => r,
            Err(e) => {
                log::debug!("TLS from {}: {}", self.peer, e.detail);
                tls.failure = Some(e.failure);
                return Read1::Failed;
            }
        };
        tls.rx.clear();
        tls.rx.extend_from_slice(
            scratch
                .read
                .get(received.consumed..total)
                .unwrap_or_default(),
        );
        if tls.rx.is_empty() {
            tls.rx = Vec::new();
        }
        // Handshake records (and alerts) go out now, ahead of anything the session queues.
        tls.tx.extend_from_slice(&scratch.cipher);
        if received.peer_closed {
            // close_notify: the peer says it will send nothing more, as a FIN would.
            self.session.on_eof(env.now());
        }
        if let Some(client) = upgraded {
            self.upgraded(client, shared, env);
        }
        Read1::Data
    }

    /// Tops up and writes the outbox until it is empty, the socket refuses, or the budget is
    /// spent. Returns whether the budget ran out with bytes left.
    fn flush_plain(&mut self, env: &mut impl Env) -> io::Result<bool> {
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
                .write_counted(&mut self.stream, |kind, count| env.frame_out(kind, count))
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

    /// Like `flush_plain`, through TLS: ciphertext the socket refused goes first; then the
    /// session's frames are gathered into up to `SEAL_CHUNK` bytes (in a WebSocket frame on a
    /// web connection, behind what the web state owes), sealed into as few records as that
    /// takes, and written with one call.
    fn flush_tls(&mut self, scratch: &mut Scratch, env: &mut impl Env) -> io::Result<bool> {
        let mut budget = WRITE_BUDGET;
        let (tls, mut ws) = match &mut self.transport {
            Transport::Tls(tls) => (&mut **tls, None),
            Transport::WebTls(web) => (&mut web.tls, Some(&mut web.ws)),
            Transport::Plain(_) | Transport::Web(_) => return Ok(false),
        };
        loop {
            if !tls.tx.is_empty() {
                if self.write_blocked {
                    return Ok(false);
                }
                if budget == 0 {
                    return Ok(true);
                }
                let n = write_some(
                    &mut self.stream,
                    &mut self.session,
                    &mut self.write_blocked,
                    &tls.tx,
                    env,
                )?;
                if n == 0 {
                    return Ok(false);
                }
                budget = budget.saturating_sub(n);
                tls.tx.drain(..n.min(tls.tx.len()));
                if tls.tx.is_empty() {
                    tls.tx = Vec::new();
                }
                continue;
            }
            if tls.is_handshaking() {
                return Ok(false);
            }
            if let Some(ws) = ws.as_deref_mut()
                && !ws.tx().is_empty()
            {
                // A response, a Pong or a Close, ahead of anything newer.
                scratch.cipher.clear();
                tls.seal(ws.tx(), &mut scratch.cipher)
                    .map_err(|e| io::Error::other(e.detail))?;
                let sealed = ws.tx().len();
                ws.drain_tx(sealed);
                tls.tx.extend_from_slice(&scratch.cipher);
                continue;
            }
            self.session.fill(env);
            if self.session.out.is_empty() || self.write_blocked || self.shut_write {
                return Ok(false);
            }
            if budget == 0 {
                return Ok(true);
            }
            let start = match ws.as_deref_mut() {
                Some(ws) => {
                    match web::gather_framed(ws, &mut self.session, &mut scratch.plain, env)? {
                        Some(start) => start,
                        None => continue,
                    }
                }
                None => {
                    scratch.plain.clear();
                    let mut gather = Gather {
                        into: &mut scratch.plain,
                        cap: SEAL_CHUNK,
                    };
                    self.session
                        .out
                        .write_counted(&mut gather, |kind, count| env.frame_out(kind, count))?;
                    0
                }
            };
            scratch.cipher.clear();
            tls.seal(
                scratch.plain.get(start..).unwrap_or_default(),
                &mut scratch.cipher,
            )
            .map_err(|e| io::Error::other(e.detail))?;
            tls.tx.extend_from_slice(&scratch.cipher);
        }
    }

    /// Before the FIN, a WebSocket's Close and a TLS connection's close_notify, once the
    /// socket has taken everything before them. Returns whether the connection may send its
    /// FIN now.
    fn finish(&mut self, scratch: &mut Scratch, env: &mut impl Env) -> io::Result<bool> {
        if self.shut_write {
            return Ok(true);
        }
        let code = web::close_code(&self.session);
        if let Some(ws) = self.transport.ws() {
            ws.finish(code);
        }
        if let Transport::Web(_) = self.transport {
            self.flush_web(scratch, env)?;
            return Ok(!self.web_owes());
        }
        let Some(tls) = self.transport.tls() else {
            return Ok(true);
        };
        if !tls.is_handshaking() && !self.web_owes() {
            scratch.cipher.clear();
            let Some(tls) = self.transport.tls() else {
                return Ok(true);
            };
            tls.close_notify(&mut scratch.cipher)
                .map_err(|e| io::Error::other(e.detail))?;
            tls.tx.extend_from_slice(&scratch.cipher);
        }
        // The alert leaves like any ciphertext, behind what was queued before it.
        self.flush_tls(scratch, env)?;
        let sent = self.transport.tls().is_none_or(|tls| tls.tx.is_empty());
        Ok(sent && !self.web_owes())
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

/// Hands freshly read (or decrypted) bytes to the session, keeping any partial frame in
/// `inbuf` for later.
fn feed(session: &mut Session, inbuf: &mut Vec<u8>, data: &[u8], env: &mut impl Env) {
    if session.is_closing() {
        return;
    }
    if inbuf.is_empty() {
        let used = session.receive(data, env);
        inbuf.extend_from_slice(data.get(used..).unwrap_or_default());
    } else {
        inbuf.extend_from_slice(data);
        let used = session.receive(inbuf, env);
        inbuf.drain(..used.min(inbuf.len()));
    }
}

/// One write of `bytes` to the socket, counted for the metrics and the session's stall
/// clock: the bytes taken, or 0 when the socket is full (`blocked` is then set, and WRITABLE
/// armed by the reactor). A signal retries; an empty write, a reset or worse is an error.
fn write_some(
    stream: &mut TcpStream,
    session: &mut Session,
    blocked: &mut bool,
    bytes: &[u8],
    env: &mut impl Env,
) -> io::Result<usize> {
    let now = env.now();
    loop {
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                env.transferred(0, n as u64);
                session.on_written(n, false, now);
                return Ok(n);
            }
            Err(e) if would_block(&e) => {
                *blocked = true;
                session.on_written(0, true, now);
                return Ok(0);
            }
            Err(e) if interrupted(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

/// A `Write` that copies what the outbox offers into a buffer, up to `cap` bytes in all: how
/// frames are gathered for sealing or framing without the outbox knowing about TLS or
/// WebSocket (the web fuzzer gathers with it too).
pub struct Gather<'a> {
    pub into: &'a mut Vec<u8>,
    pub cap: usize,
}

impl Write for Gather<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut taken = 0;
        for buf in bufs {
            let room = self.cap.saturating_sub(self.into.len());
            if room == 0 {
                break;
            }
            let take = buf.get(..room.min(buf.len())).unwrap_or_default();
            self.into.extend_from_slice(take);
            taken += take.len();
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

pub fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}
