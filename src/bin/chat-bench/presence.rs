//! `chat-bench presence`: what "who is here" costs the daemon. A room of M members, each a
//! user of its own on a version 2 connection, and C churners (more users) that join and leave
//! it at a paced rate. Each run is done twice on fresh daemons, taking turns: with every
//! member watching the room (WATCH on: each arrival and departure is a PRESENCE to all M) and
//! with nobody watching (the daemon still counts who is in the room, but tells no one). The
//! difference in the daemon's CPU time is the cost of the fanout.
//!
//! Accounting: with WATCH on, every member must get exactly one PRESENCE per churn event (the
//! churners start only once every member has its MEMBERS snapshot, and only churners' events
//! are counted); with it off, none. Anything else is a violation and the run exits 1.
//!
//! The generator's own CPU time is reported beside the daemon's: the members are read on one
//! mio loop, so a run whose generator used most of a core is flagged as generator-bound.
//!
//! `--nodes 2` runs the same room across two chatd nodes instead (`presence_nodes`), which
//! shares the members, churners and users file code here.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use chatd::client::{Client, Reply};
use chatd::protocol::codec::parse_server;
use chatd::protocol::{ClientFrame, Decoded, Deframer, ServerFrame, Version, encode_client};
use lexopt::prelude::*;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use sha2::{Digest as _, Sha256};

use crate::daemon::{Daemon, Listen};
use crate::os::usage_of;

pub const USAGE: &str = "\
PRESENCE (who is here: docs/benchmarks.md):
    chat-bench presence [--members M] [--churners C] [--rate R] [--secs S] [--runs N]
                        [--chatd PATH] [--nodes 2 [--nats-server PATH]]
    --members M            users in the room, each on a version 2 connection (default 1000)
    --churners C           more users that join and leave the room (default 20)
    --rate R               joins plus leaves per second, all churners together (default 200)
    --secs S               seconds of churn per run (default 5)
    --runs N               runs of each mode, WATCH on and off taking turns (default 3)
    --nodes 2              across two nodes instead: one nats-server, two chatd --store
                           jetstream nodes, the members (watching) on the first, the churners
                           on the second; measures the delay from a churner's JOINED/LEFT to
                           each member's PRESENCE. Each churner stays in and out of the room
                           at least 300 ms (3 presence ticks), so C is raised to R x 0.3 when
                           it is lower. WATCH is always on.
    --nats-server PATH     with --nodes 2 (default /usr/sbin/nats-server)
";

/// The room everyone meets in.
pub(crate) const ROOM: &str = "#presence";

/// Read buffer per member, and the frame limit we accept.
const MAX_FRAME: u32 = 1 << 20;

/// How long the members may take to get every PRESENCE once the churn stopped.
pub(crate) const DRAIN: Duration = Duration::from_secs(10);

/// How long setting up (logins, joins, snapshots) may take.
pub(crate) const SETUP: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq)]
pub struct Presence {
    pub chatd: PathBuf,
    pub members: usize,
    pub churners: usize,
    pub rate: u32,
    pub secs: f64,
    pub runs: usize,
    /// 1: one daemon; 2: the room across two nodes (`presence_nodes`).
    pub nodes: usize,
    pub nats: PathBuf,
}

/// Parses the flags after `presence`; `Err("help")` for `--help`.
///
/// # Errors
/// A bad flag or value.
pub fn parse(p: &mut lexopt::Parser) -> Result<Presence, String> {
    let mut out = Presence {
        chatd: crate::args::default_chatd(),
        members: 1000,
        churners: 20,
        rate: 200,
        secs: 5.0,
        runs: 3,
        nodes: 1,
        nats: PathBuf::from("/usr/sbin/nats-server"),
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("members") => out.members = positive(&value(p)?, "--members")?,
            Long("churners") => out.churners = positive(&value(p)?, "--churners")?,
            Long("rate") => out.rate = positive(&value(p)?, "--rate")?,
            Long("secs") => {
                out.secs = value(p)?
                    .parse::<f64>()
                    .ok()
                    .filter(|s| *s > 0.0 && s.is_finite())
                    .ok_or("--secs takes a number of seconds > 0")?;
            }
            Long("runs") => out.runs = positive(&value(p)?, "--runs")?,
            Long("chatd") => out.chatd = PathBuf::from(value(p)?),
            Long("nodes") => {
                out.nodes = match value(p)?.as_str() {
                    "1" => 1,
                    "2" => 2,
                    v => return Err(format!("--nodes takes 1 or 2, not '{v}'")),
                };
            }
            Long("nats-server") => out.nats = PathBuf::from(value(p)?),
            Long("help") | Short('h') => return Err("help".into()),
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(out)
}

fn value(p: &mut lexopt::Parser) -> Result<String, String> {
    p.value()
        .map_err(|e| e.to_string())?
        .string()
        .map_err(|e| e.to_string())
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(v: &str, flag: &str) -> Result<T, String> {
    v.parse::<T>()
        .ok()
        .filter(|n| *n > T::default())
        .ok_or_else(|| format!("{flag} takes a whole number > 0, not '{v}'"))
}

/// One run's figures.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub watch: bool,
    pub members: usize,
    /// Joins plus leaves the churners completed.
    pub events: u64,
    pub secs: f64,
    /// PRESENCE frames the members got for churners.
    pub frames: u64,
    pub daemon_cpu_secs: Option<f64>,
    pub generator_cpu_secs: Option<f64>,
    pub violations: usize,
}

impl Row {
    pub fn json(&self) -> String {
        let opt = |v: Option<f64>| v.map_or_else(|| "null".into(), |x| format!("{x:.3}"));
        format!(
            "{{\"scenario\":\"presence\",\"watch\":{},\"members\":{},\"events\":{},\"secs\":{:.3},\
             \"frames\":{},\"daemon_cpu_secs\":{},\"generator_cpu_secs\":{},\"violations\":{}}}",
            self.watch,
            self.members,
            self.events,
            self.secs,
            self.frames,
            opt(self.daemon_cpu_secs),
            opt(self.generator_cpu_secs),
            self.violations
        )
    }

    /// Daemon CPU microseconds per churn event.
    fn us_per_event(&self) -> Option<f64> {
        let cpu = self.daemon_cpu_secs?;
        (self.events > 0).then(|| cpu * 1e6 / self.events as f64)
    }

    fn generator_bound(&self) -> bool {
        generator_bound(self.generator_cpu_secs, self.secs)
    }
}

/// Whether the generator used most of a core over `secs`: then it, not the daemon, may set
/// the pace.
pub(crate) fn generator_bound(cpu_secs: Option<f64>, secs: f64) -> bool {
    cpu_secs.is_some_and(|g| secs > 0.0 && g / secs > 0.8)
}

/// Runs every run and prints a JSON line per run and a table of medians. Returns whether
/// every run balanced.
///
/// # Errors
/// A daemon or the load could not be set up.
pub fn run(p: &Presence) -> Result<bool, String> {
    if p.nodes == 2 {
        return crate::presence_nodes::run(p);
    }
    let mut rows: [Vec<Row>; 2] = [Vec::new(), Vec::new()];
    for rep in 1..=p.runs {
        for (i, watch) in [false, true].into_iter().enumerate() {
            eprintln!(
                "chat-bench presence: {} members, WATCH {}, run {rep}/{}",
                p.members,
                if watch { "on" } else { "off" },
                p.runs
            );
            let row = once(p, watch)?;
            println!("{}", row.json());
            let _ = io::stdout().flush();
            if let Some(list) = rows.get_mut(i) {
                list.push(row);
            }
        }
    }
    print!("{}", table(p, &rows));
    Ok(rows.iter().flatten().all(|r| r.violations == 0))
}

/// The medians of each mode, and the difference that is the fanout's cost.
fn table(p: &Presence, rows: &[Vec<Row>; 2]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nmedians of {} runs (min-max); {} members, {} churners, {} events/s asked\n",
        p.runs, p.members, p.churners, p.rate
    );
    let _ = writeln!(
        out,
        "| WATCH | events/s | PRESENCE frames/s | daemon cpu s | daemon µs per event | generator cpu s | violations |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let mut per_event = [None, None];
    for (i, list) in rows.iter().enumerate() {
        let rate = spread(list, |r| (r.secs > 0.0).then(|| r.events as f64 / r.secs));
        let frames = spread(list, |r| (r.secs > 0.0).then(|| r.frames as f64 / r.secs));
        let cpu = spread(list, |r| r.daemon_cpu_secs);
        let us = spread(list, Row::us_per_event);
        let generator = spread(list, |r| r.generator_cpu_secs);
        if let Some(slot) = per_event.get_mut(i) {
            *slot = us.map(|(m, _, _)| m);
        }
        let bound = list.iter().any(Row::generator_bound);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {}{} | {} |",
            if i == 1 { "on" } else { "off" },
            show(rate, 0),
            show(frames, 0),
            show(cpu, 2),
            show(us, 1),
            show(generator, 2),
            if bound { " (generator-bound)" } else { "" },
            list.iter().map(|r| r.violations).sum::<usize>()
        );
    }
    if let [Some(off), Some(on)] = per_event {
        let _ = writeln!(
            out,
            "\nfanout cost: {:.1} µs of daemon CPU per event, {:.0} ns per PRESENCE frame delivered",
            on - off,
            (on - off) * 1000.0 / p.members as f64
        );
    }
    out
}

/// Median, min and max of the runs' values, where known.
pub(crate) fn spread<R>(rows: &[R], get: impl Fn(&R) -> Option<f64>) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = rows.iter().filter_map(get).collect();
    v.sort_by(f64::total_cmp);
    let median = *v.get(v.len() / 2)?;
    Some((median, *v.first()?, *v.last()?))
}

pub(crate) fn show(v: Option<(f64, f64, f64)>, places: usize) -> String {
    v.map_or_else(
        || "-".into(),
        |(m, lo, hi)| format!("{m:.places$} ({lo:.places$}-{hi:.places$})"),
    )
}

/// One run on a fresh daemon.
fn once(p: &Presence, watch: bool) -> Result<Row, String> {
    let connections = p.members + p.churners + 16;
    let (daemon, _) =
        Daemon::start_pinned(&p.chatd, "never", "bench", connections, None, Listen::Plain)?;
    let members: Vec<(String, String)> = (0..p.members)
        .map(|i| (format!("m{i}"), format!("token-m{i}")))
        .collect();
    let churners: Vec<(String, String)> = (0..p.churners)
        .map(|i| (format!("c{i}"), format!("token-c{i}")))
        .collect();
    add_users(&daemon.data_dir(), members.iter().chain(&churners))?;
    let last = churners.last().or(members.last()).ok_or("no users")?;
    wait_for_login(daemon.addr, last)?;

    let mut room = Members::open(daemon.addr, &members, watch, false)?;
    room.until_ready()?;

    let stop = Arc::new(AtomicBool::new(false));
    let daemon_before = daemon.usage().cpu_secs;
    let generator_before = usage_of(std::process::id()).cpu_secs;
    let started = Instant::now();
    let per_churner = f64::from(p.rate) / p.churners as f64;
    let pace = |_| Pace {
        events_per_sec: per_churner,
        hold: false,
        offset: Duration::ZERO,
    };
    let handles = start_churners(daemon.addr, churners, pace, &stop)?;
    let churn_for = Duration::from_secs_f64(p.secs);
    while started.elapsed() < churn_for {
        room.turn(Duration::from_millis(50))?;
    }
    stop.store(true, Ordering::Relaxed);
    let mut events = 0;
    for h in handles {
        events += h.join().map_err(|_| "a churner panicked")??.len() as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    let expected = if watch { events } else { 0 };
    let drain_until = Instant::now() + DRAIN;
    while !room.all_have(expected) && Instant::now() < drain_until {
        room.turn(Duration::from_millis(50))?;
    }
    let daemon_cpu = daemon.usage().cpu_secs;
    let generator_cpu = usage_of(std::process::id()).cpu_secs;
    let violations = room.tallies.iter().filter(|t| t.churn != expected).count();
    room.report_violations(
        violations,
        &format!("did not get exactly {expected} PRESENCE frames"),
    );
    let frames = room.frames();
    drop(room);
    daemon.stop()?;
    Ok(Row {
        watch,
        members: p.members,
        events,
        secs,
        frames,
        daemon_cpu_secs: daemon_before.zip(daemon_cpu).map(|(a, b)| b - a),
        generator_cpu_secs: generator_before.zip(generator_cpu).map(|(a, b)| b - a),
        violations,
    })
}

/// Adds users to the users file in the data directory `data`, as `chatd user add` would
/// write them (a name and the SHA-256 of its token); the daemon's watcher loads the file
/// within a second. Writing the lines directly saves a thousand processes per run.
pub(crate) fn add_users<'a>(
    data: &Path,
    users: impl Iterator<Item = &'a (String, String)>,
) -> Result<(), String> {
    let path = data.join("users");
    let mut text = std::fs::read_to_string(&path).map_err(|e| format!("users file: {e}"))?;
    for (user, token) in users {
        let digest = Sha256::digest(token.as_bytes());
        let _ = write!(text, "{user} ");
        for b in digest {
            let _ = write!(text, "{b:02x}");
        }
        text.push('\n');
    }
    let new = path.with_extension("new");
    std::fs::write(&new, text).map_err(|e| format!("users file: {e}"))?;
    std::fs::rename(&new, &path).map_err(|e| format!("users file: {e}"))
}

/// Logs in as `user` until the daemon knows it (its watcher looks every 250 ms).
pub(crate) fn wait_for_login(
    addr: SocketAddr,
    (user, token): &(String, String),
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if login(addr, user, token).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the daemon never let {user} log in"));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A blocking version 2 connection of `user`, past WELCOME.
pub(crate) fn login(addr: SocketAddr, user: &str, token: &str) -> io::Result<Client> {
    let mut c = Client::connect(addr)?;
    c.set_timeout(Some(Duration::from_secs(30)))?;
    c.speak(Version::V2);
    c.send(&ClientFrame::Hello {
        version: 2,
        user,
        token,
        client: 0,
    })?;
    match c.recv()? {
        Some(Reply::Welcome { .. }) => Ok(c),
        other => Err(io::Error::other(format!("expected WELCOME, got {other:?}"))),
    }
}

/// How a churner paces itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    /// Joins plus leaves per second (a join and a leave are two events).
    pub events_per_sec: f64,
    /// Stay in the room half of each period rather than leave at once: across nodes, more
    /// than one visit or return of a user within one presence tick is told as its net effect.
    pub hold: bool,
    /// Before the first join, so that churners do not all move at once.
    pub offset: Duration,
}

/// A churner's thread: when it ends, the times its JOINs and LEAVEs were answered.
pub(crate) type Churner = thread::JoinHandle<Result<Vec<Instant>, String>>;

/// A thread per churner of `users` on `addr`, the `i`th paced by `pace(i)`, until `stop`.
///
/// # Errors
/// A thread could not be started.
pub(crate) fn start_churners(
    addr: SocketAddr,
    users: Vec<(String, String)>,
    pace: impl Fn(usize) -> Pace,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<Churner>, String> {
    let mut handles = Vec::new();
    for (i, (user, token)) in users.into_iter().enumerate() {
        let (stop, pace) = (Arc::clone(stop), pace(i));
        let spawned = thread::Builder::new()
            .name(format!("churn-{user}"))
            .spawn(move || churn(addr, &user, &token, pace, &stop));
        handles.push(spawned.map_err(|e| format!("cannot start a churner: {e}"))?);
    }
    Ok(handles)
}

/// One churner: JOIN, wait for JOINED, LEAVE, wait for LEFT, paced by `pace`, until `stop`.
/// Returns when each answer (JOINED, then LEFT, in turn) arrived: one per event completed.
pub(crate) fn churn(
    addr: SocketAddr,
    user: &str,
    token: &str,
    pace: Pace,
    stop: &AtomicBool,
) -> Result<Vec<Instant>, String> {
    let mut c = login(addr, user, token).map_err(|e| format!("{user}: {e}"))?;
    let period = Duration::from_secs_f64(2.0 / pace.events_per_sec);
    let mut next = Instant::now() + pace.offset;
    let mut answers = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        sleep_until(next);
        let join = ClientFrame::Join {
            room: ROOM,
            after: 0,
            limit: 0,
        };
        c.send(&join).map_err(|e| format!("{user}: {e}"))?;
        wait(&mut c, user, |r| matches!(r, Reply::Joined { .. }))?;
        answers.push(Instant::now());
        if pace.hold {
            sleep_until(next + period / 2);
        }
        c.send(&ClientFrame::Leave { room: ROOM })
            .map_err(|e| format!("{user}: {e}"))?;
        wait(&mut c, user, |r| matches!(r, Reply::Left { .. }))?;
        answers.push(Instant::now());
        next += period;
    }
    Ok(answers)
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        thread::sleep(at - now);
    }
}

/// Reads until a frame `wanted` accepts; an ERROR or a close is a failure.
pub(crate) fn wait(
    c: &mut Client,
    user: &str,
    wanted: impl Fn(&Reply) -> bool,
) -> Result<(), String> {
    loop {
        match c.recv() {
            Ok(Some(r)) if wanted(&r) => return Ok(()),
            Ok(Some(Reply::Error { code, message, .. })) => {
                return Err(format!("{user}: ERROR {code} {message}"));
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err(format!("{user}: the server closed the connection")),
            Err(e) => return Err(format!("{user}: {e}")),
        }
    }
}

/// The members' connections, on one poll loop.
pub(crate) struct Members {
    poll: Poll,
    events: Events,
    conns: Vec<Member>,
    /// What each member was told.
    pub tallies: Vec<Tally>,
    /// Keep every PRESENCE about a churner in `Tally::receipts`.
    keep: bool,
}

/// The PRESENCE frames one member got.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    /// About churners.
    pub churn: u64,
    /// About the anchor (`ANCHOR`, the idle user of the cross-node mode).
    pub anchor: u64,
    /// With `keep`, each PRESENCE about a churner: the churner's number, whether it said
    /// "here", and when the poll that read it woke.
    pub receipts: Vec<(usize, bool, Instant)>,
}

/// The idle user that opens the room on the churners' node in the cross-node mode; not a
/// churner, so not counted as one.
pub(crate) const ANCHOR: &str = "anchor";

/// The number of a churner (`c<N>`), `None` for anyone else.
fn churner(user: &str) -> Option<usize> {
    user.strip_prefix('c')?.parse().ok()
}

struct Member {
    stream: TcpStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    /// Answers still owed before the member is ready: WELCOME, JOINED, and MEMBERS if it
    /// watches.
    owed: u8,
}

impl Members {
    /// Connects every member and queues HELLO, JOIN and (if `watch`) WATCH; with `keep`,
    /// each PRESENCE about a churner is kept with the time it was read.
    pub(crate) fn open(
        addr: SocketAddr,
        users: &[(String, String)],
        watch: bool,
        keep: bool,
    ) -> Result<Members, String> {
        let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
        let mut conns = Vec::with_capacity(users.len());
        for (i, (user, token)) in users.iter().enumerate() {
            let std = std::net::TcpStream::connect(addr)
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .map_err(|e| format!("member {i}: {e}"))?;
            let mut stream = TcpStream::from_std(std);
            poll.registry()
                .register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| format!("member {i}: {e}"))?;
            let mut out = Vec::new();
            let hello = ClientFrame::Hello {
                version: 2,
                user,
                token,
                client: 0,
            };
            encode_client(&hello, &mut out);
            let join = ClientFrame::Join {
                room: ROOM,
                after: 0,
                limit: 0,
            };
            encode_client(&join, &mut out);
            if watch {
                encode_client(&ClientFrame::Watch { room: ROOM, on: 1 }, &mut out);
            }
            conns.push(Member {
                stream,
                inbuf: Vec::new(),
                out,
                owed: if watch { 3 } else { 2 },
            });
        }
        Ok(Members {
            poll,
            events: Events::with_capacity(1024),
            tallies: vec![Tally::default(); conns.len()],
            conns,
            keep,
        })
    }

    pub(crate) fn until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + SETUP;
        while self.conns.iter().any(|m| m.owed > 0) {
            if Instant::now() > deadline {
                let waiting = self.conns.iter().filter(|m| m.owed > 0).count();
                return Err(format!("{waiting} members never got their answers"));
            }
            self.turn(Duration::from_millis(100))?;
        }
        Ok(())
    }

    pub(crate) fn all_have(&self, n: u64) -> bool {
        self.tallies.iter().all(|t| t.churn >= n)
    }

    /// PRESENCE frames about churners, over every member.
    pub(crate) fn frames(&self) -> u64 {
        self.tallies.iter().map(|t| t.churn).sum()
    }

    /// Says on stderr that `violations` members were not told right (`what`), with the first
    /// members' counts.
    pub(crate) fn report_violations(&self, violations: usize, what: &str) {
        if violations > 0 {
            let first: Vec<u64> = self.tallies.iter().take(8).map(|t| t.churn).collect();
            eprintln!("{violations} members {what} (first counts: {first:?})");
        }
    }

    /// One poll: reads and writes what is ready.
    pub(crate) fn turn(&mut self, timeout: Duration) -> Result<(), String> {
        self.poll
            .poll(&mut self.events, Some(timeout))
            .map_err(|e| format!("poll: {e}"))?;
        // One clock reading per wakeup: what the frames read now arrived by.
        let now = self.keep.then(Instant::now);
        let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
        for i in ready {
            let (Some(m), Some(tally)) = (self.conns.get_mut(i), self.tallies.get_mut(i)) else {
                continue;
            };
            m.service(tally, now)
                .map_err(|e| format!("member {i}: {e}"))?;
        }
        Ok(())
    }
}

impl Member {
    fn service(&mut self, tally: &mut Tally, now: Option<Instant>) -> Result<(), String> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("writing: {e}")),
            }
        }
        let mut buf = [0u8; 16 << 10];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => self
                    .inbuf
                    .extend_from_slice(buf.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading: {e}")),
            }
        }
        let deframer = Deframer::for_client_in(Version::V2, MAX_FRAME);
        let mut used = 0;
        loop {
            let rest = self.inbuf.get(used..).unwrap_or_default();
            let raw = match deframer.next(rest) {
                Ok(Decoded::Frame(raw)) => raw,
                Ok(Decoded::NeedMore) => break,
                Err(e) => return Err(format!("bad frame: {}", e.reason)),
            };
            used += raw.wire_len;
            match parse_server(&raw).map_err(|e| format!("bad frame: {}", e.reason))? {
                ServerFrame::Welcome { .. }
                | ServerFrame::Joined { .. }
                | ServerFrame::Members { .. } => self.owed = self.owed.saturating_sub(1),
                ServerFrame::Presence { user, here, .. } => {
                    if let Some(c) = churner(user) {
                        tally.churn += 1;
                        if let Some(at) = now {
                            tally.receipts.push((c, here, at));
                        }
                    } else if user == ANCHOR {
                        tally.anchor += 1;
                    }
                }
                ServerFrame::Msg { .. } => {}
                ServerFrame::Error { code, message, .. } => {
                    return Err(format!("ERROR {code} {message}"));
                }
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        self.inbuf.drain(..used.min(self.inbuf.len()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(words: &[&str]) -> Result<Presence, String> {
        parse(&mut lexopt::Parser::from_args(words.iter().copied()))
    }

    #[test]
    fn flags_have_defaults_and_refuse_nonsense() {
        let p = parse_words(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.members, p.churners, p.rate, p.runs), (1000, 20, 200, 3));
        let p = parse_words(&["--members", "10", "--rate", "50", "--secs", "0.5"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.members, p.rate, p.secs), (10, 50, 0.5));
        assert!(parse_words(&["--members", "0"]).is_err());
        assert!(parse_words(&["--secs", "-1"]).is_err());
        assert_eq!(parse_words(&["--help"]), Err("help".into()));
        let p = parse_words(&["--nodes", "2", "--nats-server", "/x/nats"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.nodes, p.nats), (2, PathBuf::from("/x/nats")));
        assert!(parse_words(&["--nodes", "3"]).is_err());
    }

    #[test]
    fn the_table_gives_the_fanout_cost_as_the_difference_of_the_modes() {
        let row = |watch, cpu| Row {
            watch,
            members: 100,
            events: 1000,
            secs: 5.0,
            frames: if watch { 100_000 } else { 0 },
            daemon_cpu_secs: Some(cpu),
            generator_cpu_secs: Some(0.5),
            violations: 0,
        };
        let p = Presence {
            chatd: PathBuf::new(),
            members: 100,
            churners: 10,
            rate: 200,
            secs: 5.0,
            runs: 1,
            nodes: 1,
            nats: PathBuf::new(),
        };
        let text = table(&p, &[vec![row(false, 0.1)], vec![row(true, 0.3)]]);
        assert!(
            text.contains("fanout cost: 200.0 µs of daemon CPU per event, 2000 ns"),
            "{text}"
        );
        assert!(!text.contains("generator-bound"), "{text}");
    }
}
