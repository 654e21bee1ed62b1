//! The `poll` driver: one thread, one mio `Poll`, every sender connection non-blocking on it.
//! A connection pipelines HELLO and JOIN, waits for WELCOME and JOINED, and waits again until
//! every connection is ready; then all start at once. Reading drains to `WouldBlock`, each
//! frame goes to the connection's I/O-free `Sender`, and whatever SENDs its window allows are
//! written straight after. Per message that costs the bench a read and a write, not a thread
//! switch, so the daemon rather than the bench sets the pace.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatd::client::CLIENT_MAX_FRAME;
use chatd::protocol::codec::parse_server;
use chatd::protocol::{ClientFrame, Decoded, Deframer, ServerFrame, encode_client};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::Driven;
use super::sender::{Event, Sender};
use crate::args::Load;
use crate::login::{FRAME_DEADLINE, Target, client_id};

/// Bytes read per `read` call; one buffer shared by all connections.
const SCRATCH: usize = 64 * 1024;

/// How often the loop wakes with nothing to do, to check the deadline.
const TICK: Duration = Duration::from_millis(100);

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// HELLO and JOIN are out; waiting for WELCOME.
    Hello,
    /// Waiting for JOINED.
    Join,
    /// Logged in and joined; waiting for the others.
    Ready,
    Sending,
    /// Every SEND answered, BYE out; reading until the server closes.
    Bye,
    Over,
}

struct Conn {
    stream: Option<TcpStream>,
    room: String,
    phase: Phase,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    sender: Option<Sender>,
    result: Option<Result<super::Report, String>>,
}

pub fn drive(
    target: &Target,
    load: &Load,
    rooms: &[String],
    text: &Arc<str>,
) -> Result<Driven, String> {
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut conns = Vec::with_capacity(rooms.len());
    for (i, room) in rooms.iter().enumerate() {
        let sender = Sender::new(room.clone(), Arc::clone(text), load.messages, load.window);
        conns.push(open(&poll, i, target, load.protocol, room, sender));
    }
    let mut scratch = vec![0u8; SCRATCH];
    let mut start = None;
    let mut last_frame = Instant::now();
    loop {
        if conns.iter().all(|c| c.phase == Phase::Over) {
            break;
        }
        let waiting = [Phase::Hello, Phase::Join];
        if start.is_none() && !conns.iter().any(|c| waiting.contains(&c.phase)) {
            let now = Instant::now();
            start = Some(now);
            for c in conns.iter_mut().filter(|c| c.phase == Phase::Ready) {
                c.phase = Phase::Sending;
                c.pump(now);
            }
        }
        if last_frame.elapsed() > FRAME_DEADLINE {
            for c in conns.iter_mut().filter(|c| c.phase != Phase::Over) {
                c.fail(format!("no frame for {} s", FRAME_DEADLINE.as_secs()));
            }
            break;
        }
        match poll.poll(&mut events, Some(TICK)) {
            Ok(()) => {}
            // A signal woke us: just poll again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        for ev in &events {
            // A token of a connection already over is a stale event: ignore it.
            let Some(c) = conns.get_mut(ev.token().0) else {
                continue;
            };
            if c.phase == Phase::Over {
                continue;
            }
            if c.read(&mut scratch) {
                last_frame = Instant::now();
            }
            c.pump(Instant::now());
        }
    }
    let senders = conns
        .into_iter()
        .map(|c| {
            c.result
                .unwrap_or_else(|| Err(format!("{}: never finished", c.room)))
        })
        .collect();
    Ok(Driven {
        start: start.unwrap_or_else(Instant::now),
        senders,
    })
}

/// Connects (blocking: loopback connects at once) and queues HELLO and JOIN.
fn open(poll: &Poll, i: usize, target: &Target, protocol: u8, room: &str, sender: Sender) -> Conn {
    let mut c = Conn {
        stream: None,
        room: room.to_string(),
        phase: Phase::Hello,
        inbuf: Vec::new(),
        out: Vec::new(),
        sender: Some(sender),
        result: None,
    };
    let connected = std::net::TcpStream::connect(target.addr).and_then(|s| {
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        let mut s = TcpStream::from_std(s);
        let interest = Interest::READABLE | Interest::WRITABLE;
        poll.registry().register(&mut s, Token(i), interest)?;
        Ok(s)
    });
    match connected {
        Ok(s) => c.stream = Some(s),
        Err(e) => {
            c.fail(format!("connecting: {e}"));
            return c;
        }
    }
    let hello = ClientFrame::Hello {
        version: protocol,
        user: &target.user,
        token: &target.token,
        client: if protocol == 2 { client_id(i) } else { 0 },
    };
    encode_client(&hello, &mut c.out);
    let join = ClientFrame::Join {
        room,
        after: 0,
        limit: 0,
    };
    encode_client(&join, &mut c.out);
    c.pump(Instant::now());
    c
}

impl Conn {
    /// Reads to `WouldBlock` and handles every whole frame; true if any frame arrived.
    fn read(&mut self, scratch: &mut [u8]) -> bool {
        let Some(stream) = self.stream.as_mut() else {
            return false;
        };
        let mut eof = false;
        loop {
            match stream.read(scratch) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => self
                    .inbuf
                    .extend_from_slice(scratch.get(..n).unwrap_or_default()),
                // Drained for now: the next readable event brings more.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // A signal cut the call short: try again.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Anything else ends the connection.
                Err(e) => {
                    self.fail(format!("receiving: {e}"));
                    return false;
                }
            }
        }
        let got = self.frames();
        if eof && self.phase != Phase::Over {
            self.end(true, None);
        }
        got
    }

    /// Handles the whole frames at the front of `inbuf`.
    fn frames(&mut self) -> bool {
        let deframer = Deframer::for_client(CLIENT_MAX_FRAME);
        let (mut used, mut got) = (0, false);
        let now = Instant::now();
        let mut problem = None;
        while self.phase != Phase::Over {
            let rest = self.inbuf.get(used..).unwrap_or_default();
            let raw = match deframer.next(rest) {
                Ok(Decoded::Frame(raw)) => raw,
                Ok(Decoded::NeedMore) => break,
                Err(e) => {
                    problem = Some(format!("bad frame from the server: {}", e.reason));
                    break;
                }
            };
            used += raw.wire_len;
            got = true;
            match parse_server(&raw) {
                Ok(f) => {
                    if let Err(e) = step(&mut self.phase, &self.room, &mut self.sender, &f, now) {
                        problem = Some(e);
                        break;
                    }
                }
                Err(e) => {
                    problem = Some(format!("bad frame from the server: {}", e.reason));
                    break;
                }
            }
        }
        self.inbuf.drain(..used.min(self.inbuf.len()));
        if let Some(p) = problem {
            self.fail(p);
        }
        got
    }

    /// Queues what the window allows (BYE once all is answered) and writes to `WouldBlock`.
    fn pump(&mut self, now: Instant) {
        if self.phase == Phase::Sending
            && let Some(s) = self.sender.as_mut()
        {
            if s.done() {
                encode_client(&ClientFrame::Bye, &mut self.out);
                self.phase = Phase::Bye;
            } else {
                s.fill(&mut self.out, now);
            }
        }
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let mut written = 0;
        while written < self.out.len() {
            match stream.write(self.out.get(written..).unwrap_or_default()) {
                Ok(0) => break,
                Ok(n) => written += n,
                // The socket is full: the writable event brings us back.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // A signal cut the call short: try again.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Anything else ends the connection.
                Err(e) => {
                    self.out.clear();
                    self.fail(format!("sending: {e}"));
                    return;
                }
            }
        }
        self.out.drain(..written);
    }

    fn fail(&mut self, why: String) {
        self.end(false, Some(why));
    }

    /// Closes the connection and keeps its result.
    fn end(&mut self, closed: bool, failure: Option<String>) {
        self.stream = None;
        let result = match (self.phase, self.sender.take()) {
            (Phase::Sending | Phase::Bye, Some(s)) => Ok(s.finish(closed, failure, Instant::now())),
            (phase, _) => {
                let why = failure.unwrap_or_else(|| "the server closed the connection".into());
                Err(format!("{} (while {phase:?}): {why}", self.room))
            }
        };
        self.result = Some(result);
        self.phase = Phase::Over;
    }
}

/// What one frame does to a connection.
fn step(
    phase: &mut Phase,
    room: &str,
    sender: &mut Option<Sender>,
    f: &ServerFrame<'_>,
    now: Instant,
) -> Result<(), String> {
    match (*phase, f) {
        (Phase::Hello, ServerFrame::Welcome { .. }) => *phase = Phase::Join,
        (Phase::Join, ServerFrame::Joined { room: r, .. }) if *r == room => *phase = Phase::Ready,
        // Messages of the room may come before we start; they are not ours to count.
        (Phase::Join | Phase::Ready, ServerFrame::Msg { .. }) => {}
        (Phase::Hello | Phase::Join, other) => {
            return Err(format!("expected WELCOME then JOINED, got {other:?}"));
        }
        (Phase::Ready | Phase::Sending | Phase::Bye, f) => {
            if let Some(s) = sender.as_mut() {
                s.on_event(Event::of_frame(f), now);
            }
        }
        (Phase::Over, _) => {}
    }
    Ok(())
}
