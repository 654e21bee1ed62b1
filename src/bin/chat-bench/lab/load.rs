//! The lab's load: N connections, each logged in and joined to a room of its own (workload
//! `own`) or all to one room (`shared`), each sending SEND frames of `size` bytes of text on
//! a fixed schedule, one every size × 8 / (mbps × 10⁶) seconds, whatever the server answers
//! (open loop, like tcpkali `-r`). Connection i starts i/N of a period after the others so
//! the sends are spread over the period, not bunched. All connections are non-blocking on
//! one mio `Poll` on one thread, which reads every connection to `WouldBlock` at each wake:
//! in a shared room the MSGs to read grow as N², and a bench that read less would be the
//! bottleneck without saying so.
//!
//! Every MSG is counted per member, and every member must get every message of its room:
//! its own for `own`, everyone's for `shared`; a member short of that is a shortfall, which
//! unbalances the run as an unanswered SEND does.
//!
//! ACK latency is measured from the moment a SEND was due, not from when the bench got to
//! write it, so a late bench cannot hide the server's delay (no coordinated omission). The
//! load never sends more than the schedule, and every wait in it is bounded.

use std::collections::HashMap;
use std::io::{self, Read};
use std::time::{Duration, Instant};

use chatd::client::CLIENT_MAX_FRAME;
use chatd::protocol::codec::parse_server;
use chatd::protocol::{ClientFrame, Decoded, Deframer, ServerFrame, encode_client};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::flags::Workload;
use crate::login::{Target, join_live, login};
use crate::stats::{ErrorCounts, Latency};

/// How long the lab waits, after the last SEND, for the answers and deliveries still owed.
const DRAIN: Duration = Duration::from_secs(10);

/// Bytes read per `read` call; one buffer shared by all connections.
const SCRATCH: usize = 64 * 1024;

/// The room every connection joins in the `shared` workload.
const SHARED_ROOM: &str = "lab-shared";

struct Conn {
    /// Its place among the N, for messages about it.
    index: usize,
    stream: TcpStream,
    room: String,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    next_id: u64,
    /// When the next SEND is due.
    due: Instant,
    /// SENDs unanswered: id and when each was due.
    pending: HashMap<u64, Instant>,
    /// SENDs written by this connection.
    sent: u64,
    /// MSGs this connection received.
    msgs: u64,
    /// The connection ended (closed by the server, or failed); no more sends.
    over: bool,
}

/// What the load saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub sent: u64,
    pub acked: u64,
    /// MSG frames received, by all members together.
    pub msgs: u64,
    /// MSG frames owed when the drain ended: every member gets every message of its room.
    pub msgs_expected: u64,
    /// MSG frames members were still short of when the drain gave up (a member that got
    /// more than its due does not make up for one that got less).
    pub msgs_shortfall: u64,
    pub latency: Latency,
    pub errors: ErrorCounts,
    pub failures: Vec<String>,
    /// SENDs still unanswered when the drain gave up.
    pub unanswered: u64,
    /// The furthest the bench fell behind its schedule, in seconds.
    pub max_lag_secs: f64,
}

pub struct Load {
    poll: Poll,
    workload: Workload,
    conns: Vec<Conn>,
    text: String,
    period: Duration,
    pub tally: Tally,
}

impl Load {
    /// Logs `n` connections in (blocking, one after the other), each into room `lab-i`
    /// (`own`) or all into one room (`shared`).
    ///
    /// # Errors
    /// A connection could not log in or join: the run cannot have the shape asked for.
    pub fn connect(
        target: &Target,
        workload: Workload,
        n: usize,
        size: usize,
        mbps: f64,
    ) -> Result<Load, String> {
        let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
        let period = Duration::from_secs_f64(size as f64 * 8.0 / (mbps * 1e6));
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            let room = match workload {
                Workload::Own => format!("lab-{i}"),
                Workload::Shared => SHARED_ROOM.to_string(),
            };
            let mut c = login(target).map_err(|e| format!("connection {i}: login: {e}"))?;
            join_live(&mut c, &room).map_err(|e| format!("connection {i}: join: {e}"))?;
            // Nothing can follow JOINED before the first SEND (no one sends before every
            // connection has joined), so the client holds no bytes the poll loop would miss.
            let s = c
                .stream()
                .try_clone()
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .map_err(|e| format!("connection {i}: {e}"))?;
            let mut stream = TcpStream::from_std(s);
            poll.registry()
                .register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| format!("connection {i}: {e}"))?;
            conns.push(Conn {
                index: i,
                stream,
                room,
                inbuf: Vec::new(),
                out: Vec::new(),
                next_id: 1,
                due: Instant::now(),
                pending: HashMap::new(),
                sent: 0,
                msgs: 0,
                over: false,
            });
        }
        Ok(Load {
            poll,
            workload,
            conns,
            text: "m".repeat(size),
            period,
            tally: Tally::default(),
        })
    }

    /// Sends on schedule for `secs`, reading answers as they come.
    ///
    /// # Errors
    /// The poll itself failed.
    pub fn send_for(&mut self, secs: f64) -> Result<(), String> {
        let start = Instant::now();
        let n = self.conns.len().max(1) as u32;
        for (i, c) in self.conns.iter_mut().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            c.due = start + self.period * i / n;
        }
        let end = start + Duration::from_secs_f64(secs);
        let mut events = Events::with_capacity(1024);
        let mut scratch = vec![0u8; SCRATCH];
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            for c in self.conns.iter_mut().filter(|c| !c.over) {
                while c.due <= now && c.due < end {
                    let lag = now.duration_since(c.due).as_secs_f64();
                    self.tally.max_lag_secs = self.tally.max_lag_secs.max(lag);
                    let frame = ClientFrame::Send {
                        room: &c.room,
                        id: c.next_id,
                        text: &self.text,
                    };
                    encode_client(&frame, &mut c.out);
                    c.pending.insert(c.next_id, c.due);
                    c.next_id += 1;
                    c.due += self.period;
                    c.sent += 1;
                    self.tally.sent += 1;
                }
                c.flush(&mut self.tally);
            }
            let next_due = self.conns.iter().filter(|c| !c.over).map(|c| c.due).min();
            let wake = next_due.unwrap_or(end).min(end);
            self.wait(&mut events, &mut scratch, wake)?;
        }
    }

    /// `settle`, then `bye`.
    ///
    /// # Errors
    /// The poll itself failed.
    pub fn drain(&mut self) -> Result<(), String> {
        self.settle()?;
        self.bye();
        Ok(())
    }

    /// Sends nothing more and reads until every SEND is answered and every member has every
    /// message of its room, or `DRAIN` is up; then counts what is still owed.
    ///
    /// # Errors
    /// The poll itself failed.
    pub fn settle(&mut self) -> Result<(), String> {
        let end = Instant::now() + DRAIN;
        let mut events = Events::with_capacity(1024);
        let mut scratch = vec![0u8; SCRATCH];
        while Instant::now() < end && (self.owed() > 0 || self.shortfall() > 0) {
            self.wait(&mut events, &mut scratch, end)?;
        }
        self.tally.unanswered = self.owed();
        self.tally.msgs_expected = self.conns.iter().map(|c| self.due_to(c)).sum();
        self.tally.msgs_shortfall = self.shortfall();
        Ok(())
    }

    /// Says BYE on every connection still open, and closes our side of each whose BYE went
    /// out whole: the server then closes at once, where it would otherwise wait a grace
    /// period for our end (and hold up its own stop by as much).
    pub fn bye(&mut self) {
        for c in self.conns.iter_mut().filter(|c| !c.over) {
            encode_client(&ClientFrame::Bye, &mut c.out);
            c.flush(&mut self.tally);
            if c.out.is_empty() {
                // Already closed by the server, or the socket is gone: nothing left to tell.
                let _ = c.stream.shutdown(std::net::Shutdown::Write);
            }
        }
    }

    fn owed(&self) -> u64 {
        self.conns.iter().map(|c| c.pending.len() as u64).sum()
    }

    /// The MSGs a member is due: every message sent into its room.
    fn due_to(&self, c: &Conn) -> u64 {
        match self.workload {
            Workload::Own => c.sent,
            Workload::Shared => self.tally.sent,
        }
    }

    /// MSGs the members are still short of, summed over members.
    fn shortfall(&self) -> u64 {
        self.conns
            .iter()
            .map(|c| self.due_to(c).saturating_sub(c.msgs))
            .sum()
    }

    /// Polls until `until` or an event, then reads and writes what is ready.
    fn wait(
        &mut self,
        events: &mut Events,
        scratch: &mut [u8],
        until: Instant,
    ) -> Result<(), String> {
        let timeout = until.saturating_duration_since(Instant::now());
        match self.poll.poll(events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(format!("poll: {e}")),
        }
        for ev in events.iter() {
            let Some(c) = self.conns.get_mut(ev.token().0) else {
                continue;
            };
            if c.over {
                continue;
            }
            c.read(scratch, &mut self.tally);
            c.flush(&mut self.tally);
        }
        Ok(())
    }
}

impl Conn {
    fn read(&mut self, scratch: &mut [u8], t: &mut Tally) {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => {
                    self.frames(t);
                    return self.fail(t, "the server closed the connection".into());
                }
                Ok(n) => self
                    .inbuf
                    .extend_from_slice(scratch.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(t, format!("receiving: {e}")),
            }
        }
        self.frames(t);
    }

    /// Handles the whole frames at the front of `inbuf`.
    fn frames(&mut self, t: &mut Tally) {
        let deframer = Deframer::for_client(CLIENT_MAX_FRAME);
        let now = Instant::now();
        let mut used = 0;
        loop {
            let rest = self.inbuf.get(used..).unwrap_or_default();
            let raw = match deframer.next(rest) {
                Ok(Decoded::Frame(raw)) => raw,
                Ok(Decoded::NeedMore) => break,
                Err(e) => return self.fail(t, format!("bad frame: {}", e.reason)),
            };
            used += raw.wire_len;
            match parse_server(&raw) {
                Ok(ServerFrame::Ack { id, .. }) => {
                    if let Some(due) = self.pending.remove(&id) {
                        t.latency.record(now.saturating_duration_since(due));
                        t.acked += 1;
                    }
                }
                Ok(ServerFrame::Error {
                    code, reference, ..
                }) => {
                    t.errors.add(code);
                    self.pending.remove(&reference);
                }
                Ok(ServerFrame::Msg { .. }) => {
                    self.msgs += 1;
                    t.msgs += 1;
                }
                Ok(_) => {}
                Err(e) => return self.fail(t, format!("bad frame: {}", e.reason)),
            }
        }
        self.inbuf.drain(..used.min(self.inbuf.len()));
    }

    /// Writes `out` to `WouldBlock`; the writable event brings us back for the rest.
    fn flush(&mut self, t: &mut Tally) {
        match crate::net::write_until_blocked(&mut self.stream, &self.out) {
            Ok(written) => {
                self.out.drain(..written);
            }
            Err(e) => {
                self.out.clear();
                self.fail(t, format!("sending: {e}"));
            }
        }
    }

    /// Ends the connection: what it still owed stays unanswered.
    fn fail(&mut self, t: &mut Tally, why: String) {
        if !self.over {
            self.over = true;
            t.failures
                .push(format!("connection {} ({}): {why}", self.index, self.room));
        }
    }
}
