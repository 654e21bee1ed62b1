//! The command line and the runs of `fanout`, `rooms`, `idle`, `connect` (and the hidden
//! `idle-hold` child): flags in, a server got (spawned or running), the scenario run, a
//! `Record` out. Shared by the single-run commands and the standard set.

use crate::args::{number, text};
use std::path::PathBuf;

use lexopt::prelude::*;

use crate::net::{Endpoint, Transport, own_cpu_secs};
use crate::record::{Record, Val};
use crate::scenario::idle::{Dial, Holders, set_up, settled_rss};
use crate::scenario::pubsub::PubSub;
use crate::server::{Server, ServerSpec};
use crate::tls::TlsClient;
use crate::wire::Kind;
use crate::ws::WsClient;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Fanout,
    Rooms,
    Idle,
    Connect,
    Hold,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    pub which: Which,
    /// The server to run against; its `transport` is the run's.
    pub server: ServerSpec,
    /// `--transport` as given: one run for each, in this order, each with a server of its own.
    pub transports: Vec<Transport>,
    pub ps: PubSub,
    pub connections: usize,
    pub procs: usize,
    pub concurrency: usize,
    pub cpu: Option<usize>,
}

impl Which {
    pub fn name(self) -> &'static str {
        match self {
            Which::Fanout => "fanout",
            Which::Rooms => "rooms",
            Which::Idle => "idle",
            Which::Connect => "connect",
            Which::Hold => "idle-hold",
        }
    }
}

/// Publishes a publisher keeps unanswered by default. With 16 (the old default) a run measured
/// the round trip (publish, answer, publish) more than what the server can deliver; with
/// 1000 the server, not the window, sets the pace on the development machine (raising it
/// further did not raise chatd's deliveries at 1 -> 100 or 1 -> 1000, see docs/benchmarks.md).
pub const PUBLISH_WINDOW: usize = 1000;

/// Defaults for `which` against `kind`, before flags.
pub fn defaults(which: Which, kind: Kind) -> Live {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(PathBuf::from))
        .unwrap_or_default();
    Live {
        which,
        server: ServerSpec {
            kind,
            addr: None,
            user: "bench".into(),
            token_file: None,
            server_pid: None,
            chatd: exe_dir.join("chatd"),
            redis_bin: "redis-server".into(),
            nats_bin: "nats-server".into(),
            server_cpu: None,
            transport: Transport::Plain,
            tls_ca: None,
            fsync: "never".into(),
        },
        transports: vec![Transport::Plain],
        ps: PubSub {
            kind,
            publishers: if which == Which::Rooms { 10 } else { 1 },
            subscribers: if which == Which::Rooms { 1000 } else { 100 },
            rooms: if which == Which::Rooms { 100 } else { 1 },
            size: 100,
            window: PUBLISH_WINDOW,
            rate: None,
            messages: None,
            secs: 2.0,
            room: "bench".into(),
        },
        connections: if which == Which::Connect { 5000 } else { 1000 },
        procs: 1,
        concurrency: 32,
        cpu: None,
    }
}

/// Parses the flags after `fanout|rooms|idle|connect|idle-hold`.
///
/// # Errors
/// A message naming the bad flag.
pub fn parse(which: Which, p: &mut lexopt::Parser) -> Result<Live, String> {
    let mut l = defaults(which, Kind::Chatd);
    let mut spawn = false;
    let mut rooms = None;
    let (mut transports, mut tls) = (None, false);
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("target") => l.server.kind = Kind::parse(&text(p)?)?,
            Long("addr") => l.server.addr = Some(text(p)?),
            Long("user") => l.server.user = text(p)?,
            Long("token-file") => l.server.token_file = Some(PathBuf::from(text(p)?)),
            Long("server-pid") => l.server.server_pid = Some(number(p, "--server-pid", 1)?),
            Long("spawn") => spawn = true,
            Long("chatd") => l.server.chatd = PathBuf::from(text(p)?),
            Long("redis-server") => l.server.redis_bin = PathBuf::from(text(p)?),
            Long("nats-server") => l.server.nats_bin = PathBuf::from(text(p)?),
            Long("server-cpu") => l.server.server_cpu = Some(number(p, "--server-cpu", 0)?),
            Long("cpu") => l.cpu = Some(number(p, "--cpu", 0)?),
            Long("transport") => {
                let list: Result<Vec<_>, _> = text(p)?.split(',').map(Transport::parse).collect();
                transports = Some(list?);
            }
            Long("tls") => tls = true,
            Long("fsync") => l.server.fsync = crate::args::policy(&text(p)?)?,
            Long("tls-ca") => l.server.tls_ca = Some(PathBuf::from(text(p)?)),
            Long("publishers") => l.ps.publishers = number(p, "--publishers", 1)?,
            Long("subscribers") => l.ps.subscribers = number(p, "--subscribers", 1)?,
            Long("rooms") => rooms = Some(number(p, "--rooms", 1)?),
            Long("size") => l.ps.size = number(p, "--size", 1)?,
            Long("window") => l.ps.window = number(p, "--window", 1)?,
            Long("rate") => l.ps.rate = Some(number::<u64>(p, "--rate", 1)? as f64),
            Long("messages") => l.ps.messages = Some(number(p, "--messages", 1)?),
            Long("secs") => l.ps.secs = number::<u64>(p, "--secs", 1)? as f64,
            Long("room") => l.ps.room = text(p)?,
            Long("connections") => l.connections = number(p, "--connections", 1)?,
            Long("procs") => l.procs = number(p, "--procs", 1)?,
            Long("concurrency") => l.concurrency = number(p, "--concurrency", 1)?,
            Long("help") | Short('h') => return Err("help".into()),
            other => return Err(other.unexpected().to_string()),
        }
    }
    l.ps.kind = l.server.kind;
    l.ps.rooms = match (which, rooms) {
        (Which::Fanout, Some(k)) if k > 1 => return Err("fanout is one room: use rooms".into()),
        (Which::Fanout, _) => 1,
        (_, Some(k)) => k,
        (_, None) => l.ps.rooms,
    };
    if which != Which::Hold && spawn == l.server.addr.is_some() {
        return Err("give --addr ADDR or --spawn (one of them)".into());
    }
    if which == Which::Hold && l.server.addr.is_none() {
        return Err("idle-hold needs --addr".into());
    }
    l.transports = match (transports, tls) {
        (None, false) => vec![Transport::Plain],
        (None, true) => vec![Transport::Tls],
        (Some(list), false) => list,
        (Some(list), true) if list == [Transport::Tls] => list,
        (Some(_), true) => return Err("--tls is --transport tls: give one or the other".into()),
    };
    l.server.transport = l.transports.first().copied().unwrap_or(Transport::Plain);
    if l.transports.len() > 1 && (which == Which::Hold || l.server.addr.is_some()) {
        return Err("--addr is one listener: give one --transport with it".into());
    }
    if l.server.kind == Kind::Redis && l.transports.contains(&Transport::Ws) {
        return Err(
            "redis-server has no WebSocket listener: --transport ws is for \
                    --target chatd or nats"
                .into(),
        );
    }
    if l.server.tls_ca.is_some() && !l.transports.contains(&Transport::Tls) {
        return Err("--tls-ca is for --transport tls runs".into());
    }
    if spawn && l.server.tls_ca.is_some() {
        return Err("--spawn makes its own CA for --tls: drop --tls-ca".into());
    }
    Ok(l)
}

/// Runs one scenario once and reports it.
///
/// # Errors
/// The server or the load could not be set up.
pub fn run(l: &Live) -> Result<Record, String> {
    if l.which == Which::Hold {
        let addr = l.server.addr.as_deref().unwrap_or_default();
        let addr = addr.parse().map_err(|e| format!("--addr {addr}: {e}"))?;
        let tls = match (&l.server.tls_ca, l.server.transport) {
            (Some(ca), Transport::Tls) => Some(TlsClient::new(l.server.kind, ca)?),
            (None, Transport::Tls) => return Err("idle-hold --tls needs --tls-ca".into()),
            _ => None,
        };
        let ws = (l.server.transport == Transport::Ws).then(|| WsClient::new(l.server.kind, addr));
        let to = Endpoint { addr, tls, ws };
        let code = crate::scenario::idle::hold_child(l.server.kind, &to, l.connections, &l.ps.room);
        std::process::exit(code);
    }
    let conns = match l.which {
        Which::Fanout | Which::Rooms => l.ps.publishers + l.ps.subscribers,
        _ => l.connections,
    };
    let server = Server::get(&l.server, conns)?;
    let mut r = Record::default();
    r.text("scenario", l.which.name());
    r.text("target", l.server.kind.name());
    r.text("transport", l.server.transport.record_name());
    let result = match l.which {
        Which::Fanout | Which::Rooms => pubsub(l, &server, &mut r),
        Which::Idle => idle(l, &server, &mut r),
        _ => connect(l, &server, &mut r),
    };
    // Read while the server runs: a chatd pinned to one core must run one reactor, and the
    // standard set says so from this figure rather than from what chatd's defaults promise.
    let reactors = server.reactors().map(|n| n as u64);
    r.put("server_reactors", reactors.map_or(Val::Null, Val::Int));
    let usage = server.usage();
    // Unknown (no --server-pid, or FreeBSD) is null, never a 0 that reads as a figure.
    let peak = usage.and_then(|u| u.peak_rss_kib);
    r.put("server_peak_rss_kib", peak.map_or(Val::Null, Val::Int));
    server.stop()?;
    result.map(|()| r)
}

fn pubsub(l: &Live, server: &Server, r: &mut Record) -> Result<(), String> {
    let ps = &l.ps;
    let m = ps.run(server)?;
    for f in m.failures.iter().take(5) {
        eprintln!("chat-bench: connection failed: {f}");
    }
    let p = m.latency.percentiles();
    let per = |n: u64, s: f64| (s > 0.0).then(|| n as f64 / s);
    r.int("publishers", ps.publishers as u64);
    r.int("subscribers", ps.subscribers as u64);
    r.int("rooms", ps.rooms as u64);
    r.int("size", ps.size as u64);
    r.num("rate", ps.rate, 0);
    r.int("published", m.published);
    r.num("published_per_sec", per(m.published, m.pub_secs), 0);
    r.int("expected", m.expected);
    r.int("delivered", m.tally.received);
    r.num("delivered_per_sec", per(m.tally.received, m.secs), 0);
    r.int("lost", m.tally.lost);
    r.int("duplicates", m.tally.duplicates);
    r.int("reordered", m.tally.reordered);
    r.num("secs", Some(m.secs), 3);
    for (k, v) in [
        ("p50_us", p.p50_us),
        ("p90_us", p.p90_us),
        ("p99_us", p.p99_us),
        ("p999_us", p.p999_us),
        ("max_us", p.max_us),
    ] {
        r.int(k, v);
    }
    r.num("bench_cpu_secs", Some(m.bench_cpu_secs), 2);
    r.num("bench_cpu_pct", per_cent(Some(m.bench_cpu_secs), m.secs), 0);
    r.num("server_cpu_secs", m.server_cpu_secs, 2);
    r.num("server_cpu_pct", per_cent(m.server_cpu_secs, m.secs), 0);
    // Deliveries per second of server CPU: the rate a whole server core would give, which
    // holds still when other processes on the machine take turns on that core.
    let per_core = m.server_cpu_secs.filter(|s| *s > 0.0);
    r.num(
        "delivered_per_server_cpu_sec",
        per_core.map(|s| m.tally.received as f64 / s),
        0,
    );
    let bench_pct = per_cent(Some(m.bench_cpu_secs), m.secs);
    r.text("generator_bound", generator_bound(bench_pct));
    r.int("errors", m.errors);
    r.int("failures", m.failures.len() as u64);
    Ok(())
}

pub(crate) fn per_cent(cpu: Option<f64>, secs: f64) -> Option<f64> {
    cpu.filter(|_| secs > 0.0).map(|c| 100.0 * c / secs)
}

/// The bench's one thread busy at or above this share of its core sets the pace itself.
const GENERATOR_SATURATED_PCT: f64 = 90.0;

/// `yes` when the bench's own CPU, not the server, likely set the pace of the run: then its
/// rate is a lower bound of what the server can do.
pub(crate) fn generator_bound(bench_cpu_pct: Option<f64>) -> &'static str {
    match bench_cpu_pct {
        Some(p) if p >= GENERATOR_SATURATED_PCT => "yes",
        Some(_) => "no",
        None => "-",
    }
}

fn idle(l: &Live, server: &Server, r: &mut Record) -> Result<(), String> {
    let before = settled_rss(server);
    let t0 = std::time::Instant::now();
    let to = Dial {
        kind: l.server.kind,
        addr: server.addr,
        transport: l.server.transport,
        tls_ca: server.tls_ca.as_deref(),
    };
    let holders = Holders::start(&to, &server.creds, l.connections, l.procs, &l.ps.room)?;
    let setup_secs = t0.elapsed().as_secs_f64();
    let after = settled_rss(server);
    let n = holders.held;
    r.int("connections", l.connections as u64);
    r.int("procs", l.procs as u64);
    r.int("held", n as u64);
    r.int("failed", holders.failed as u64);
    r.num("setup_secs", Some(setup_secs), 2);
    r.num("rss_before_kib", before.map(|k| k as f64), 0);
    r.num("rss_after_kib", after.map(|k| k as f64), 0);
    let per = match (before, after) {
        (Some(b), Some(a)) if n > 0 => Some((a.saturating_sub(b) * 1024) as f64 / n as f64),
        _ => None,
    };
    r.num("bytes_per_conn", per, 0);
    drop(holders);
    Ok(())
}

fn connect(l: &Live, server: &Server, r: &mut Record) -> Result<(), String> {
    let cpu0 = own_cpu_secs();
    let srv0 = server.usage().and_then(|u| u.cpu_secs);
    let t0 = std::time::Instant::now();
    let (_, failures, latency) = set_up(
        l.server.kind,
        &server.endpoint(),
        &server.creds,
        l.connections,
        None,
        l.concurrency,
        false,
    );
    let secs = t0.elapsed().as_secs_f64();
    if let Some(f) = failures.first() {
        eprintln!("chat-bench: {} setups failed, first: {f}", failures.len());
    }
    let p = latency.percentiles();
    r.int("connections", l.connections as u64);
    r.int("concurrency", l.concurrency as u64);
    r.int("failed", failures.len() as u64);
    r.num("secs", Some(secs), 3);
    r.num("conns_per_sec", Some(p.count as f64 / secs.max(1e-9)), 0);
    r.int("p50_us", p.p50_us);
    r.int("p99_us", p.p99_us);
    r.int("max_us", p.max_us);
    let bench_pct = per_cent(Some(own_cpu_secs() - cpu0), secs);
    r.num("bench_cpu_pct", bench_pct, 0);
    let srv = srv0.and_then(|c0| Some(server.usage()?.cpu_secs? - c0));
    r.num("server_cpu_pct", per_cent(srv, secs), 0);
    // Set-ups per second of server CPU: what one server core would do if the bench kept up.
    let per_core = srv.filter(|s| *s > 0.0).map(|s| p.count as f64 / s);
    r.num("conns_per_server_cpu_sec", per_core, 0);
    r.text("generator_bound", generator_bound(bench_pct));
    Ok(())
}
