//! The poll loop of `fanout`/`rooms`: every publisher and subscriber connection non-blocking on
//! one mio `Poll` in one thread. Phases: each connection says hello and (subscribers, and
//! chatd's publishers, which must be members to send) subscribes; once all are ready the
//! clock starts; publishers fill their windows on every answer (or every millisecond when
//! paced); when all publishers are done, the loop ends as soon as every subscriber has what it
//! was owed, or after `DRAIN` without a delivery.

use std::time::{Duration, Instant};

use mio::{Events, Poll};

use super::{Measured, PubSub};
use crate::login::FRAME_DEADLINE;
use crate::net::{Endpoint, Link, own_cpu_secs};
use crate::payload::{Clock, Stamp, decode, encode};
use crate::server::Server;
use crate::stats::Latency;
use crate::track::Stream;
use crate::wire::{Creds, In, Wire};

/// After the publishers finish, how long subscribers may go without a delivery before what
/// they still miss counts as lost.
const DRAIN: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Hello,
    Subscribing,
    Ready,
    Running,
    Done,
    Over,
}

struct Pub {
    id: u32,
    sent: u64,
    in_flight: usize,
    acked: u64,
    /// Messages sent to each room.
    per_room: Vec<u64>,
    /// The rooms it sends to, in turn.
    targets: Vec<usize>,
    done_at: Option<Instant>,
}

struct Sub {
    room: usize,
    /// By publisher id.
    streams: Vec<Stream>,
    received: u64,
}

enum Role {
    Pub(Pub),
    Sub(Sub),
}

struct Conn {
    link: Option<Link>,
    wire: Box<dyn Wire>,
    role: Role,
    phase: Phase,
    /// SUBSCRIBEs not answered yet.
    pending: usize,
}

/// What every connection's events feed.
struct Shared {
    clock: Clock,
    latency: Latency,
    errors: u64,
    failures: Vec<String>,
    last_delivery: Option<Instant>,
}

pub fn drive(ps: &PubSub, server: &Server) -> Result<Measured, String> {
    let to = server.endpoint();
    let at = Ends {
        publishers: &to,
        subscribers: &to,
        creds: &server.creds,
        server_cpu: &|| server.usage().and_then(|u| u.cpu_secs),
    };
    drive_to(ps, &at)
}

/// Where a run's connections go and how its servers' CPU is read: `drive` sends both kinds
/// to one server; `chat-bench cluster` puts the publishers on one chatd node and the
/// subscribers on another, and sums the CPU of every process of the cluster.
pub struct Ends<'a> {
    pub publishers: &'a Endpoint,
    pub subscribers: &'a Endpoint,
    pub creds: &'a Creds,
    /// CPU seconds the servers spent so far; `None` when unknown.
    pub server_cpu: &'a dyn Fn() -> Option<f64>,
}

/// `drive` with the ends given apart.
///
/// # Errors
/// No connection could be set up.
pub fn drive_to(ps: &PubSub, at: &Ends<'_>) -> Result<Measured, String> {
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut shared = Shared {
        clock: Clock::new(),
        latency: Latency::new(),
        errors: 0,
        failures: Vec::new(),
        last_delivery: None,
    };
    let mut conns = Vec::with_capacity(ps.publishers + ps.subscribers);
    for i in 0..ps.publishers + ps.subscribers {
        let publisher = i < ps.publishers;
        let role = if publisher {
            Role::Pub(Pub {
                id: u32::try_from(i).unwrap_or(u32::MAX),
                sent: 0,
                in_flight: 0,
                acked: 0,
                per_room: vec![0; ps.rooms.max(1)],
                targets: ps.rooms_of(i),
                done_at: None,
            })
        } else {
            Role::Sub(Sub {
                room: (i - ps.publishers) % ps.rooms.max(1),
                streams: (0..ps.publishers).map(|_| Stream::new()).collect(),
                received: 0,
            })
        };
        let mut c = Conn {
            link: None,
            wire: crate::wire::new(ps.kind, publisher, at.creds),
            role,
            phase: Phase::Hello,
            pending: 0,
        };
        let to = if publisher {
            at.publishers
        } else {
            at.subscribers
        };
        match Link::open(&poll, to, i) {
            Ok(mut link) => {
                c.wire.hello(&mut link.out);
                if let Err(e) = link.flush() {
                    shared
                        .failures
                        .push(format!("connection {i}: sending: {e}"));
                    c.phase = Phase::Over;
                } else {
                    c.link = Some(link);
                }
            }
            Err(e) => {
                shared
                    .failures
                    .push(format!("connection {i}: connecting: {e}"));
                c.phase = Phase::Over;
            }
        }
        conns.push(c);
    }
    let mut scratch = vec![0u8; 256 * 1024];
    let mut text = String::new();
    let mut start: Option<(Instant, f64, Option<f64>)> = None;
    let mut last_event = Instant::now();
    let per_pub_rate = ps.rate.map(|r| r / ps.publishers.max(1) as f64);
    let mut pubs_done_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if start.is_none() {
            let setting_up = conns
                .iter()
                .any(|c| matches!(c.phase, Phase::Hello | Phase::Subscribing));
            if !setting_up {
                if conns.iter().all(|c| c.phase == Phase::Over) {
                    let why = shared.failures.first().cloned().unwrap_or_default();
                    return Err(format!("no connection could be set up: {why}"));
                }
                let server_cpu = (at.server_cpu)();
                start = Some((now, own_cpu_secs(), server_cpu));
                for c in &mut conns {
                    if c.phase == Phase::Ready {
                        c.phase = Phase::Running;
                    }
                }
            }
        }
        if let Some((t0, _, _)) = start {
            // Publishers are the first connections: only they are visited on every turn of
            // the loop, not the (up to thousands of) subscribers, which only events wake.
            let pubs = conns.get_mut(..ps.publishers).unwrap_or_default();
            for c in pubs.iter_mut() {
                pump(ps, c, t0, now, per_pub_rate, &shared.clock, &mut text);
            }
            let pubs_done = pubs.iter().all(|c| {
                !matches!(c.role, Role::Pub(_)) || matches!(c.phase, Phase::Done | Phase::Over)
            });
            if pubs_done && pubs_done_at.is_none() {
                pubs_done_at = Some(now);
            }
            if let Some(done) = pubs_done_at {
                let owed = owed_per_room(&conns, ps.rooms.max(1));
                let all_in = conns.iter().all(|c| match &c.role {
                    Role::Sub(s) => c.phase == Phase::Over || s.received >= owed[s.room],
                    Role::Pub(_) => true,
                });
                let quiet = shared.last_delivery.unwrap_or(done).max(done);
                if all_in || now.duration_since(quiet) > DRAIN {
                    break;
                }
            }
        }
        if last_event.elapsed() > FRAME_DEADLINE {
            shared.failures.push(format!(
                "nothing arrived for {} s",
                FRAME_DEADLINE.as_secs()
            ));
            break;
        }
        let tick = if start.is_some() && ps.rate.is_some() {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(50)
        };
        match poll.poll(&mut events, Some(tick)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        for ev in &events {
            let Some(c) = conns.get_mut(ev.token().0) else {
                continue;
            };
            if c.phase == Phase::Over {
                continue;
            }
            if service(ps, c, &mut scratch, &mut shared) {
                last_event = Instant::now();
            }
        }
    }
    let end = Instant::now();
    let (t0, cpu0, server0) = start.unwrap_or((end, own_cpu_secs(), None));
    let owed = owed_per_room(&conns, ps.rooms.max(1));
    let mut m = Measured {
        bench_cpu_secs: own_cpu_secs() - cpu0,
        server_cpu_secs: server0.and_then(|c0| Some((at.server_cpu)()? - c0)),
        ..Measured::default()
    };
    let mut sent_by: Vec<Vec<u64>> = Vec::new();
    let mut last_pub = t0;
    for c in &conns {
        if let Role::Pub(p) = &c.role {
            m.published += p.sent;
            m.acked += p.acked;
            last_pub = last_pub.max(p.done_at.unwrap_or(end));
            sent_by.push(p.per_room.clone());
        }
    }
    for c in &conns {
        if let Role::Sub(s) = &c.role {
            m.expected += owed.get(s.room).copied().unwrap_or(0);
            for (p, stream) in s.streams.iter().enumerate() {
                let sent = sent_by
                    .get(p)
                    .and_then(|r| r.get(s.room))
                    .copied()
                    .unwrap_or(0);
                m.tally.add(stream.close(sent));
            }
        }
    }
    let last = shared.last_delivery.unwrap_or(last_pub).max(last_pub);
    m.secs = last.duration_since(t0).as_secs_f64();
    m.pub_secs = last_pub.duration_since(t0).as_secs_f64();
    m.latency = shared.latency;
    m.errors = shared.errors;
    m.failures = shared.failures;
    Ok(m)
}

/// What was published to each room, in all.
fn owed_per_room(conns: &[Conn], rooms: usize) -> Vec<u64> {
    let mut owed = vec![0; rooms];
    for c in conns {
        if let Role::Pub(p) = &c.role {
            for (o, n) in owed.iter_mut().zip(&p.per_room) {
                *o += n;
            }
        }
    }
    owed
}

/// A publisher sends what its window, its pace and its budget allow.
fn pump(
    ps: &PubSub,
    c: &mut Conn,
    t0: Instant,
    now: Instant,
    rate: Option<f64>,
    clock: &Clock,
    text: &mut String,
) {
    let (Role::Pub(p), Some(link)) = (&mut c.role, c.link.as_mut()) else {
        return;
    };
    if c.phase != Phase::Running {
        return;
    }
    let elapsed = now.duration_since(t0).as_secs_f64();
    let budget = ps.messages.unwrap_or(u64::MAX);
    let out_of_time = ps.messages.is_none() && elapsed >= ps.secs;
    let due = match rate {
        Some(r) => ((elapsed * r) as u64 + 1).min(budget),
        None => budget,
    };
    if !out_of_time {
        let turns = p.targets.len().max(1) as u64;
        while p.sent < due && p.in_flight < ps.window {
            let turn = usize::try_from(p.sent % turns).unwrap_or(0);
            let room = p.targets.get(turn).copied().unwrap_or(0);
            let seq = p.per_room.get(room).copied().unwrap_or(0) + 1;
            let stamp = Stamp {
                publisher: p.id,
                seq,
                sent_ns: clock.ns(Instant::now()),
            };
            encode(stamp, ps.size, text);
            c.wire.publish(&ps.room_name(room), text, &mut link.out);
            if let Some(n) = p.per_room.get_mut(room) {
                *n = seq;
            }
            p.sent += 1;
            p.in_flight += 1;
        }
    }
    if (out_of_time || p.sent >= budget) && p.in_flight == 0 {
        c.phase = Phase::Done;
        p.done_at = Some(now);
    }
    if let Err(e) = link.flush() {
        c.phase = Phase::Over;
        c.link = None;
        let _ = e;
    }
}

/// Reads, parses and reacts to what arrived on one connection; true if anything did. Each
/// read is parsed where it landed (`Link::read_through`), and each delivery is accounted for
/// there: attributed to its publisher and seq by its stamp, sorted into in order, late or
/// duplicate, and its latency recorded against the time of the read that brought it.
fn service(ps: &PubSub, c: &mut Conn, scratch: &mut [u8], shared: &mut Shared) -> bool {
    let Some(link) = c.link.as_mut() else {
        return false;
    };
    let mut got = false;
    let mut ready = false;
    let mut subscribed = 0;
    let mut refused = None;
    let (wire, role) = (&mut c.wire, &mut c.role);
    let read = link.read_through(scratch, &mut |buf, out| {
        got |= !buf.is_empty();
        let now = Instant::now();
        let now_ns = shared.clock.ns(now);
        wire.parse(buf, out, &mut |ev| match ev {
            In::Ready => ready = true,
            In::Subscribed => subscribed += 1,
            In::Ack => {
                if let Role::Pub(p) = role {
                    p.in_flight = p.in_flight.saturating_sub(1);
                    p.acked += 1;
                }
            }
            In::Message(text) => {
                if let Role::Sub(s) = role
                    && let Some(stamp) = decode(text)
                    && let Some(st) = s.streams.get_mut(stamp.publisher as usize)
                {
                    st.arrive(stamp.seq);
                    s.received += 1;
                    shared
                        .latency
                        .record_us(now_ns.saturating_sub(stamp.sent_ns) / 1000);
                    shared.last_delivery = Some(now);
                }
            }
            In::Error(e) => {
                shared.errors += 1;
                refused.get_or_insert_with(|| e.clone());
                if shared.errors <= 3 {
                    eprintln!("chat-bench: server error: {e}");
                }
            }
            In::Other => {}
        })
    });
    let eof = match read {
        Ok(eof) => eof,
        Err(e) => {
            shared.failures.push(e);
            c.phase = Phase::Over;
            c.link = None;
            return got;
        }
    };
    if let Some(e) = refused.filter(|_| matches!(c.phase, Phase::Hello | Phase::Subscribing)) {
        shared.failures.push(format!("refused during setup: {e}"));
        c.phase = Phase::Over;
        c.link = None;
        return got;
    }
    if ready && c.phase == Phase::Hello {
        // A subscriber joins its room; a chatd publisher every room it will send to.
        let rooms: Vec<usize> = match &c.role {
            Role::Sub(s) => vec![s.room],
            Role::Pub(p) if c.wire.publisher_subscribes() => p.targets.clone(),
            Role::Pub(_) => Vec::new(),
        };
        for &r in &rooms {
            c.wire.subscribe(&ps.room_name(r), &mut link.out);
        }
        c.pending = rooms.len();
        c.phase = if rooms.is_empty() {
            Phase::Ready
        } else {
            Phase::Subscribing
        };
    }
    if c.phase == Phase::Subscribing {
        c.pending = c.pending.saturating_sub(subscribed);
        if c.pending == 0 {
            c.phase = Phase::Ready;
        }
    }
    let flushed = link.flush();
    if eof || flushed.is_err() {
        if c.phase != Phase::Done {
            shared
                .failures
                .push("the server closed the connection".into());
        }
        c.phase = Phase::Over;
        c.link = None;
    }
    got
}
