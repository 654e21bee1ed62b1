//! The poll loop of the cluster's write load (`throughput` and `kills`): every sender
//! connection, on whichever node it was given, non-blocking on one mio `Poll` in one thread.
//! Each connection pipelines HELLO and JOIN (live only: a sender is a member of its room, as
//! chatd demands, and reads the room's MSGs like any member); once all are ready the clock
//! starts and each keeps its window full while `Signals::stop` is not set; then it waits for
//! the answers still owed, at most `DRAIN`.
//!
//! It only connects to the addresses it is given, and every wait is bounded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chatd::client::CLIENT_MAX_FRAME;
use chatd::protocol::codec::parse_server;
use chatd::protocol::{
    ClientFrame, Decoded, Deframer, ErrorCode, ServerFrame, encode_client, kind,
};
use mio::{Events, Poll};

use super::sender::{Acked, Sender, Stall, Tally};
use crate::login::FRAME_DEADLINE;
use crate::net::{Endpoint, Link};
use crate::runner::SPAWN_USER;

/// After sending stops, how long the answers still owed may take. More than chatd's
/// `--nats-ack-timeout` (3 s by default), after which every SEND has its answer.
const DRAIN: Duration = Duration::from_secs(10);

/// How often the loop wakes with nothing to do, to look at the clock and the stop signal.
const TICK: Duration = Duration::from_millis(5);

/// A JOIN refused with STORAGE ("cannot be read now; try again", as when a young JetStream
/// cluster cannot place a new room's stream yet) is sent again after this pause, at most
/// `JOIN_TRIES` times, as a client would.
const JOIN_RETRY_AFTER: Duration = Duration::from_millis(100);
const JOIN_TRIES: u32 = 100;

/// Bytes read per `read` call; one buffer shared by all connections.
const SCRATCH: usize = 256 * 1024;

/// Between the load and whoever decides how long it runs (the clock, or the NATS killer).
#[derive(Debug, Default)]
pub struct Signals {
    /// Set by the load once every connection is ready and the clock runs.
    pub started: AtomicBool,
    /// Set by the other side: stop sending, collect the last answers.
    pub stop: AtomicBool,
}

/// Where each sender goes: its node and its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seat {
    pub node: usize,
    pub room: usize,
}

/// Sender `i` of `senders` over `rooms` rooms and `nodes` nodes: room `i mod rooms`, and the
/// node `(i / rooms) mod nodes`, so that each room has senders on every node as soon as there
/// are `rooms * nodes` senders.
pub fn seat(i: usize, rooms: usize, nodes: usize) -> Seat {
    let (rooms, nodes) = (rooms.max(1), nodes.max(1));
    Seat {
        node: (i / rooms) % nodes,
        room: i % rooms,
    }
}

/// What the load measured.
#[derive(Debug, Default)]
pub struct Loaded {
    /// From the start to the moment sending stopped.
    pub send_secs: f64,
    pub tally: Tally,
    pub acked: Vec<Acked>,
    pub longest_stall: Duration,
    pub stall_ended_at: Duration,
    /// SENDs with no answer when the connection ended or the drain ran out.
    pub unanswered: u64,
    /// JOINs sent again during set-up after a STORAGE refusal.
    pub join_retries: u64,
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Hello,
    Join,
    Ready,
    Sending,
    Over,
}

struct Conn {
    link: Option<Link>,
    phase: Phase,
    room: String,
    sender: Sender,
    /// When to send the JOIN again after a refusal.
    rejoin_at: Option<Instant>,
    join_tries: u32,
}

/// Runs the load: `rooms[s.room]` for each seat, on `nodes[s.node]`.
///
/// # Errors
/// No connection could be set up, or the poll failed.
pub fn drive(
    nodes: &[SocketAddr],
    token: &str,
    rooms: &[String],
    seats: &[Seat],
    window: usize,
    size: usize,
    signals: &Signals,
) -> Result<Loaded, String> {
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut out = Loaded::default();
    let mut conns = Vec::with_capacity(seats.len());
    for (i, s) in seats.iter().enumerate() {
        let room = rooms.get(s.room).cloned().unwrap_or_default();
        let addr = *nodes.get(s.node).ok_or("a seat on no node")?;
        let index = u32::try_from(i).map_err(|_| "too many senders")?;
        let room_ix = u32::try_from(s.room).map_err(|_| "too many rooms")?;
        let mut c = Conn {
            link: None,
            phase: Phase::Hello,
            room,
            sender: Sender::new(index, room_ix, window, size),
            rejoin_at: None,
            join_tries: 1,
        };
        let to = Endpoint {
            addr,
            tls: None,
            ws: None,
        };
        match Link::open(&poll, &to, i) {
            Ok(mut link) => {
                let hello = ClientFrame::Hello {
                    version: chatd::protocol::VERSION,
                    user: SPAWN_USER,
                    token,
                    client: 0,
                };
                encode_client(&hello, &mut link.out);
                let join = ClientFrame::Join {
                    room: &c.room,
                    after: 0,
                    limit: 0,
                };
                encode_client(&join, &mut link.out);
                match link.flush() {
                    Ok(()) => c.link = Some(link),
                    Err(e) => {
                        out.failures.push(format!("sender {i}: sending: {e}"));
                        c.phase = Phase::Over;
                    }
                }
            }
            Err(e) => {
                out.failures.push(format!("sender {i}: connecting: {e}"));
                c.phase = Phase::Over;
            }
        }
        conns.push(c);
    }
    let mut scratch = vec![0u8; SCRATCH];
    let mut start: Option<Instant> = None;
    let mut stall = Stall::new(Instant::now());
    let mut stopped_at: Option<Instant> = None;
    let mut last_frame = Instant::now();
    loop {
        let now = Instant::now();
        if start.is_none()
            && !conns
                .iter()
                .any(|c| matches!(c.phase, Phase::Hello | Phase::Join))
        {
            if conns.iter().all(|c| c.phase == Phase::Over) {
                let why = out.failures.first().cloned().unwrap_or_default();
                return Err(format!("no sender could start: {why}"));
            }
            start = Some(now);
            stall = Stall::new(now);
            for c in &mut conns {
                if c.phase == Phase::Ready {
                    c.phase = Phase::Sending;
                }
            }
            signals.started.store(true, Ordering::SeqCst);
        }
        if start.is_some() && stopped_at.is_none() && signals.stop.load(Ordering::SeqCst) {
            stopped_at = Some(now);
        }
        let sending = start.is_some() && stopped_at.is_none();
        for c in &mut conns {
            pump(c, sending, now, &mut out.failures);
        }
        if let Some(t) = stopped_at {
            let owed = conns
                .iter()
                .any(|c| c.phase != Phase::Over && c.sender.unanswered() > 0);
            if !owed || now.duration_since(t) > DRAIN {
                break;
            }
        }
        if last_frame.elapsed() > FRAME_DEADLINE {
            out.failures.push(format!(
                "nothing arrived for {} s",
                FRAME_DEADLINE.as_secs()
            ));
            break;
        }
        match poll.poll(&mut events, Some(TICK)) {
            Ok(()) => {}
            // A signal woke us: poll again.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        for ev in &events {
            // An event for a connection already over is stale: ignore it.
            let Some(c) = conns.get_mut(ev.token().0) else {
                continue;
            };
            if c.phase == Phase::Over {
                continue;
            }
            let now = Instant::now();
            match service(c, &mut scratch, now, &mut out.acked, &mut stall) {
                Ok(true) => last_frame = now,
                Ok(false) => {}
                Err(e) => {
                    out.failures.push(format!("sender {}: {e}", c.sender.index));
                    c.phase = Phase::Over;
                    c.link = None;
                }
            }
            if c.phase != Phase::Over {
                pump(c, sending, now, &mut out.failures);
            }
        }
    }
    let end = stopped_at.unwrap_or_else(Instant::now);
    out.send_secs = start.map_or(0.0, |t| end.duration_since(t).as_secs_f64());
    out.longest_stall = stall.longest;
    out.stall_ended_at = stall.ended_at;
    for c in conns {
        out.join_retries += u64::from(c.join_tries.saturating_sub(1));
        out.unanswered += c.sender.unanswered() as u64;
        merge(&mut out.tally, c.sender.tally);
    }
    Ok(out)
}

fn merge(into: &mut Tally, t: Tally) {
    into.sent += t.sent;
    into.acked += t.acked;
    into.latency.merge(&t.latency);
    into.errors.merge(&t.errors);
    into.refused += t.refused;
    into.stray += t.stray;
    into.msgs += t.msgs;
}

/// Fills the window while sending, then writes what is queued.
fn pump(c: &mut Conn, sending: bool, now: Instant, failures: &mut Vec<String>) {
    let Some(link) = c.link.as_mut() else {
        return;
    };
    if sending && c.phase == Phase::Sending {
        c.sender.fill(&c.room, &mut link.out, now);
    }
    if c.phase == Phase::Join && c.rejoin_at.is_some_and(|t| now >= t) {
        c.rejoin_at = None;
        let join = ClientFrame::Join {
            room: &c.room,
            after: 0,
            limit: 0,
        };
        encode_client(&join, &mut link.out);
    }
    if link.out.is_empty() {
        return;
    }
    if let Err(e) = link.flush() {
        failures.push(format!("sender {}: sending: {e}", c.sender.index));
        c.phase = Phase::Over;
        c.link = None;
    }
}

/// Reads what arrived on one connection and accounts for each frame; true if any came.
///
/// # Errors
/// A socket error, a bad frame, a refusal while setting up, or the server's close.
fn service(
    c: &mut Conn,
    scratch: &mut [u8],
    now: Instant,
    acked: &mut Vec<Acked>,
    stall: &mut Stall,
) -> Result<bool, String> {
    let Some(link) = c.link.as_mut() else {
        return Ok(false);
    };
    let deframer = Deframer::for_client(CLIENT_MAX_FRAME);
    let mut got = false;
    let mut refused = false;
    let (phase, sender, room) = (&mut c.phase, &mut c.sender, c.room.as_str());
    let eof = link.read_through(scratch, &mut |buf, _out| {
        let mut used = 0;
        loop {
            let rest = buf.get(used..).unwrap_or_default();
            let raw = match deframer.next(rest) {
                Ok(Decoded::Frame(raw)) => raw,
                Ok(Decoded::NeedMore) => return Ok(used),
                Err(e) => return Err(format!("bad frame from chatd: {}", e.reason)),
            };
            used += raw.wire_len;
            got = true;
            // A MSG is only counted: the read-back checks the room's contents.
            if raw.kind == kind::MSG {
                sender.tally.msgs += 1;
                continue;
            }
            let f = parse_server(&raw).map_err(|e| format!("bad frame: {}", e.reason))?;
            refused |= step(phase, room, sender, &f, now, acked, stall)?;
        }
    })?;
    if eof {
        return Err("the server closed the connection".into());
    }
    if refused {
        if c.join_tries >= JOIN_TRIES {
            return Err(format!("JOIN of {} refused {JOIN_TRIES} times", c.room));
        }
        c.join_tries += 1;
        c.rejoin_at = Some(now + JOIN_RETRY_AFTER);
    }
    Ok(got)
}

/// What one frame (not a MSG) does to a connection; true when it refused the JOIN for now.
fn step(
    phase: &mut Phase,
    room: &str,
    sender: &mut Sender,
    f: &ServerFrame<'_>,
    now: Instant,
    acked: &mut Vec<Acked>,
    stall: &mut Stall,
) -> Result<bool, String> {
    match (*phase, f) {
        (Phase::Hello, ServerFrame::Welcome { .. }) => *phase = Phase::Join,
        (Phase::Join, ServerFrame::Joined { room: r, .. }) if *r == room => *phase = Phase::Ready,
        (
            Phase::Join,
            ServerFrame::Error {
                code, reference: 0, ..
            },
        ) if *code == ErrorCode::Storage as u16 => return Ok(true),
        (Phase::Hello | Phase::Join, other) => {
            return Err(format!("expected WELCOME then JOINED, got {other:?}"));
        }
        (_, ServerFrame::Ack { id, seq }) => {
            if let Some(a) = sender.ack(*id, *seq, now) {
                acked.push(a);
                stall.ack(now);
            }
        }
        (
            _,
            ServerFrame::Error {
                code, reference, ..
            },
        ) => sender.error(*code, *reference),
        _ => {}
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_room_gets_senders_on_every_node() {
        let (rooms, nodes) = (64, 2);
        let mut on = vec![[0usize; 2]; rooms];
        for i in 0..256 {
            let s = seat(i, rooms, nodes);
            if let Some(n) = on.get_mut(s.room).and_then(|r| r.get_mut(s.node)) {
                *n += 1;
            }
        }
        assert!(on.iter().all(|r| *r == [2, 2]), "{on:?}");
        assert_eq!(seat(65, 64, 2), Seat { node: 1, room: 1 });
    }
}
