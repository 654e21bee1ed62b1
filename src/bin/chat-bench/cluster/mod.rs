//! `chat-bench cluster`: chatd nodes sharing their rooms through NATS JetStream (issue 15).
//! With `--spawn` it starts three `nats-server` processes as one JetStream cluster and two
//! chatd nodes with `--store jetstream --jetstream-replicas 3`, all on 127.0.0.1, and runs one
//! of three loads against them:
//!
//! - `throughput`: senders on both nodes over many rooms, each with a window of SENDs; acked
//!   SENDs/s and SEND->ACK latency, then every room read back on every node (`readback`).
//! - `latency`: one publisher on node A paced at `--rate`, subscribers on node B; the time
//!   from the publisher's stamp to the read on B (the pub/sub driver, split over two nodes).
//! - `kills`: the throughput load while one NATS server at a time is SIGKILLed and started
//!   again; the longest time with no ACK, and the read-back, where nothing ACKed may be lost.
//!
//! Each run reports the CPU the bench and the five servers spent while it sent. Everything it
//! starts is stopped and removed at the end, on errors too (`Drop` of `Nats` and `Nodes`); it
//! never signals a process it did not start.

mod load;
pub(crate) mod nats;
pub(crate) mod nodes;
mod readback;
mod sender;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lexopt::prelude::*;

use crate::args::{number, text};
use crate::live::{PUBLISH_WINDOW, generator_bound, per_cent};
use crate::net::{Endpoint, own_cpu_secs};
use crate::record::{Record, Val};
use crate::runner::SPAWN_USER;
use crate::scenario::pubsub::{Ends, PubSub};
use crate::wire::{Creds, Kind};
use load::{Loaded, Signals};
use nats::Nats;
use nodes::Nodes;
use readback::Checked;

pub const USAGE: &str = "\
CLUSTER (chatd nodes over NATS JetStream, see docs/cluster.md):
    chat-bench cluster --spawn [--mode throughput|latency|kills] [OPTIONS]
                           starts 3 nats-server (one JetStream cluster) and 2 chatd nodes
                           (--store jetstream --jetstream-replicas 3) on 127.0.0.1, runs the
                           load, stops and removes everything
    --mode throughput      (default) --senders N (default 256) over --rooms K (default 64),
                           split over both nodes so that each room has senders on both, each
                           with --window W SENDs unanswered (default 16) of --size B bytes
                           (default 100), for --secs S (default 10); then every room is read
                           back on both nodes: every ACKed message at its seq with its text,
                           seqs without gaps, no text twice
    --mode latency         one publisher on node A at --rate R msgs/s (default 1000) into one
                           room, --subscribers N on node B (default 10), for --secs S: the
                           time from the publisher's stamp to the read on B
    --mode kills           the throughput load while one random nats-server is SIGKILLed every
                           --kill-every S seconds (default 3) and started again (same store and
                           ports) once it is gone, --kills N times (default 20); the longest
                           time with no ACK, then the read-back (nothing ACKed may be lost)
    --chatd PATH           the chatd binary (default: next to this executable)
    --nats-server PATH     default /usr/sbin/nats-server
    --keep-logs            leave the NATS servers' and chatd nodes' logs and stores behind (the
                           paths are printed), to find what a kill or a lost message did
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Throughput,
    Latency,
    Kills,
}

impl Mode {
    fn parse(v: &str) -> Result<Mode, String> {
        match v {
            "throughput" => Ok(Mode::Throughput),
            "latency" => Ok(Mode::Latency),
            "kills" => Ok(Mode::Kills),
            _ => Err(format!("--mode: '{v}' is not throughput, latency or kills")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Throughput => "throughput",
            Mode::Latency => "latency",
            Mode::Kills => "kills",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub mode: Mode,
    pub secs: u64,
    pub rooms: usize,
    pub senders: usize,
    pub window: usize,
    pub size: usize,
    pub rate: u64,
    pub subscribers: usize,
    pub kills: usize,
    pub kill_every: u64,
    pub chatd: PathBuf,
    pub nats: PathBuf,
    /// Leave the servers' and nodes' directories (logs and stores) in place at the end.
    pub keep_logs: bool,
}

/// The chatd nodes of a run.
const NODES: usize = 2;

/// Lost messages named on stderr per room and node, at most.
const LOST_SHOWN: usize = 20;

/// `HH:MM:SS.mmm` (UTC) of a Unix time in ms, as nats-server's log lines show the time.
fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03} UTC",
        s / 3600 % 24,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}

/// Parses the flags after `cluster`.
///
/// # Errors
/// A message naming the bad flag; `help` for `--help`.
pub fn parse(p: &mut lexopt::Parser) -> Result<Cluster, String> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(PathBuf::from))
        .unwrap_or_default();
    let mut c = Cluster {
        mode: Mode::Throughput,
        secs: 10,
        rooms: 64,
        senders: 256,
        window: 16,
        size: 100,
        rate: 1000,
        subscribers: 10,
        kills: 20,
        kill_every: 3,
        chatd: exe_dir.join("chatd"),
        nats: PathBuf::from("/usr/sbin/nats-server"),
        keep_logs: false,
    };
    let mut spawn = false;
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("spawn") => spawn = true,
            Long("mode") => c.mode = Mode::parse(&text(p)?)?,
            Long("secs") => c.secs = number(p, "--secs", 1)?,
            Long("rooms") => c.rooms = number(p, "--rooms", 1)?,
            Long("senders") => c.senders = number(p, "--senders", 1)?,
            Long("window") => c.window = number(p, "--window", 1)?,
            Long("size") => c.size = number(p, "--size", 1)?,
            Long("rate") => c.rate = number(p, "--rate", 1)?,
            Long("subscribers") => c.subscribers = number(p, "--subscribers", 1)?,
            Long("kills") => c.kills = number(p, "--kills", 1)?,
            Long("kill-every") => c.kill_every = number(p, "--kill-every", 1)?,
            Long("chatd") => c.chatd = PathBuf::from(text(p)?),
            Long("nats-server") => c.nats = PathBuf::from(text(p)?),
            Long("keep-logs") => c.keep_logs = true,
            Long("help") | Short('h') => return Err("help".into()),
            other => return Err(other.unexpected().to_string()),
        }
    }
    if !spawn {
        return Err("cluster starts its own NATS servers and chatd nodes: pass --spawn".into());
    }
    if c.mode != Mode::Latency && c.senders < c.rooms * NODES {
        return Err(format!(
            "--senders {} cannot give each of {} rooms a sender on both nodes: give at least {}",
            c.senders,
            c.rooms,
            c.rooms * NODES
        ));
    }
    Ok(c)
}

/// CPU seconds so far of the bench, the chatd nodes and the NATS servers.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    at: Option<Instant>,
    bench: f64,
    chatd: Option<f64>,
    nats: Option<f64>,
}

fn cpu_now(nodes: &Nodes, nats: &Nats) -> Cpu {
    Cpu {
        at: Some(Instant::now()),
        bench: own_cpu_secs(),
        chatd: nodes.cpu_secs(),
        nats: nats.cpu_secs(),
    }
}

/// Puts the shares of a core each side used between `a` and `b` into `r`.
fn put_cpu(r: &mut Record, a: Cpu, b: Cpu) {
    let secs = match (a.at, b.at) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let diff = |x: Option<f64>, y: Option<f64>| Some(y? - x?);
    let bench = per_cent(Some(b.bench - a.bench), secs);
    let chatd = diff(a.chatd, b.chatd);
    let nats = diff(a.nats, b.nats);
    let servers = chatd.zip(nats).map(|(c, n)| c + n);
    r.num("bench_cpu_pct", bench, 0);
    r.num("chatd_cpu_pct", per_cent(chatd, secs), 0);
    r.num("nats_cpu_pct", per_cent(nats, secs), 0);
    r.num("server_cpu_pct", per_cent(servers, secs), 0);
    r.text("generator_bound", generator_bound(bench));
}

/// Runs one mode once and reports it.
///
/// # Errors
/// The servers or the load could not be set up.
pub fn run(c: &Cluster) -> Result<Record, String> {
    let mut nats = Nats::start(&c.nats)?;
    nats.keep = c.keep_logs;
    let conns = c.senders.max(c.subscribers + 1);
    let mut nodes = Nodes::start(&c.chatd, &nats.urls(), NODES, conns, nats::SERVERS)?;
    nodes.keep = c.keep_logs;
    let mut r = Record::default();
    r.text("scenario", "cluster");
    r.text("mode", c.mode.name());
    r.int("nats_servers", nats::SERVERS as u64);
    r.int("chatd_nodes", NODES as u64);
    let result = match c.mode {
        Mode::Latency => latency(c, &nodes, &nats, &mut r),
        Mode::Throughput | Mode::Kills => writes(c, &nodes, &mut nats, &mut r),
    };
    // Dropping `nats` and `nodes` on an error kills and removes them all the same.
    result?;
    nodes.stop()?;
    Ok(r)
}

fn latency(c: &Cluster, nodes: &Nodes, nats: &Nats, r: &mut Record) -> Result<(), String> {
    let end = |i: usize| {
        nodes.nodes.get(i).map(|n| Endpoint {
            addr: n.addr,
            tls: None,
            ws: None,
        })
    };
    let (Some(a), Some(b)) = (end(0), end(1)) else {
        return Err("two chatd nodes are needed".into());
    };
    let ps = PubSub {
        kind: Kind::Chatd,
        publishers: 1,
        subscribers: c.subscribers,
        rooms: 1,
        size: c.size,
        window: PUBLISH_WINDOW,
        rate: Some(c.rate as f64),
        messages: None,
        secs: c.secs as f64,
        room: "cluster-latency".into(),
    };
    let creds = Creds {
        user: SPAWN_USER.into(),
        token: nodes.token.clone(),
    };
    let sum = || Some(nodes.cpu_secs()? + nats.cpu_secs()?);
    let at = Ends {
        publishers: &a,
        subscribers: &b,
        creds: &creds,
        server_cpu: &sum,
    };
    let cpu0 = cpu_now(nodes, nats);
    let m = ps.run_to(&at)?;
    let cpu1 = cpu_now(nodes, nats);
    for f in m.failures.iter().take(5) {
        eprintln!("chat-bench: connection failed: {f}");
    }
    let p = m.latency.percentiles();
    r.int("rate", c.rate);
    r.int("subscribers", c.subscribers as u64);
    r.int("size", c.size as u64);
    r.num("secs", Some(m.secs), 3);
    r.int("published", m.published);
    r.int("acked", m.acked);
    r.int("expected", m.expected);
    r.int("delivered", m.tally.received);
    r.int("lost", m.tally.lost);
    r.int("duplicates", m.tally.duplicates);
    r.int("reordered", m.tally.reordered);
    for (k, v) in [
        ("p50_us", p.p50_us),
        ("p99_us", p.p99_us),
        ("p999_us", p.p999_us),
        ("max_us", p.max_us),
    ] {
        r.int(k, v);
    }
    r.int("errors", m.errors);
    r.int("failures", m.failures.len() as u64);
    put_cpu(r, cpu0, cpu1);
    Ok(())
}

/// What the side that decides how long the write load runs saw.
#[derive(Debug, Default)]
struct Control {
    cpu: (Cpu, Cpu),
    kills: u64,
    /// The longest a killed server took from its restart to answering healthy.
    slowest_restart: Duration,
    problem: Option<String>,
}

fn writes(c: &Cluster, nodes: &Nodes, nats: &mut Nats, r: &mut Record) -> Result<(), String> {
    let addrs: Vec<_> = nodes.nodes.iter().map(|n| n.addr).collect();
    let rooms: Vec<String> = (0..c.rooms).map(|i| format!("cluster-{i}")).collect();
    let seats: Vec<_> = (0..c.senders)
        .map(|i| load::seat(i, c.rooms, NODES))
        .collect();
    let signals = Signals::default();
    let over = AtomicBool::new(false);
    let (loaded, control) = std::thread::scope(|s| {
        let control = s.spawn(|| steer(c, nodes, nats, &signals, &over));
        let loaded = load::drive(
            &addrs,
            &nodes.token,
            &rooms,
            &seats,
            c.window,
            c.size,
            &signals,
        );
        over.store(true, Ordering::SeqCst);
        let control = control.join().unwrap_or_else(|_| Control {
            problem: Some("the controlling thread panicked".into()),
            ..Control::default()
        });
        (loaded, control)
    });
    let loaded = loaded?;
    for f in loaded.failures.iter().take(5) {
        eprintln!("chat-bench: connection failed: {f}");
    }
    if let Some(p) = &control.problem {
        eprintln!("chat-bench: {p}");
    }
    let mut checked = [Checked::default(); NODES];
    let mut read_errors = Vec::new();
    for (n, addr) in addrs.iter().enumerate() {
        for (i, room) in rooms.iter().enumerate() {
            let acked: Vec<_> = loaded
                .acked
                .iter()
                .filter(|a| a.room as usize == i)
                .copied()
                .collect();
            match readback::read_room(*addr, &nodes.token, room) {
                Ok(read) => {
                    if let Some(t) = checked.get_mut(n) {
                        t.add(readback::check(&acked, &read));
                    }
                    // Each one named, so that it can be found in the servers' logs.
                    for (a, there) in readback::lost(&acked, &read, LOST_SHOWN) {
                        let holds = there
                            .map_or("nothing of ours".into(), |(s, i)| format!("SEND {s}:{i}"));
                        eprintln!(
                            "chat-bench: lost: {room} seq {} on node {n}: SEND {}:{} ACKed at {}; the seq holds {holds}",
                            a.seq,
                            a.sender,
                            a.id,
                            clock(a.at_ms)
                        );
                    }
                }
                Err(e) => read_errors.push(e),
            }
        }
    }
    for e in read_errors.iter().take(5) {
        eprintln!("chat-bench: read-back: {e}");
    }
    report_writes(c, &loaded, &control, &checked, read_errors.len(), r);
    Ok(())
}

/// Decides how long the write load runs: `--secs` after it started, or (kills) until the
/// last killed server is back and one more interval has passed. Reads the CPU at both ends.
fn steer(
    c: &Cluster,
    nodes: &Nodes,
    nats: &mut Nats,
    signals: &Signals,
    over: &AtomicBool,
) -> Control {
    let mut ctl = Control::default();
    // Waits for the load to start; false if it ended (failed) first.
    while !signals.started.load(Ordering::SeqCst) {
        if over.load(Ordering::SeqCst) {
            return ctl;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    ctl.cpu.0 = cpu_now(nodes, nats);
    let wait = |d: Duration| {
        let until = Instant::now() + d;
        while Instant::now() < until && !over.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    match c.mode {
        Mode::Kills => {
            let every = Duration::from_secs(c.kill_every);
            for _ in 0..c.kills {
                wait(every);
                if over.load(Ordering::SeqCst) {
                    break;
                }
                let victim = getrandom::u32().map_or(0, |x| x as usize % nats::SERVERS);
                let at = sender::unix_ms();
                let restarted = nats.kill(victim).and_then(|()| nats.restart(victim));
                match restarted {
                    Ok(took) => {
                        eprintln!(
                            "chat-bench: killed nats n{victim} at {}, current again after {} ms",
                            clock(at),
                            took.as_millis()
                        );
                        ctl.kills += 1;
                        ctl.slowest_restart = ctl.slowest_restart.max(took);
                    }
                    Err(e) => {
                        ctl.problem = Some(format!("kill {}: {e}", ctl.kills + 1));
                        break;
                    }
                }
            }
            wait(every);
        }
        _ => wait(Duration::from_secs(c.secs)),
    }
    ctl.cpu.1 = cpu_now(nodes, nats);
    signals.stop.store(true, Ordering::SeqCst);
    ctl
}

fn report_writes(
    c: &Cluster,
    l: &Loaded,
    ctl: &Control,
    checked: &[Checked; NODES],
    read_errors: usize,
    r: &mut Record,
) {
    let p = l.tally.latency.percentiles();
    r.int("rooms", c.rooms as u64);
    r.int("senders", c.senders as u64);
    r.int("window", c.window as u64);
    r.int("size", c.size as u64);
    r.num("secs", Some(l.send_secs), 3);
    r.int("sent", l.tally.sent);
    r.int("acked", l.tally.acked);
    let per_sec = (l.send_secs > 0.0).then(|| l.tally.acked as f64 / l.send_secs);
    r.num("acked_per_sec", per_sec, 0);
    r.int("p50_us", p.p50_us);
    r.int("p99_us", p.p99_us);
    r.int("max_us", p.max_us);
    r.int("errors", l.tally.errors.total());
    let storage = l
        .tally
        .errors
        .named()
        .into_iter()
        .find(|(n, _)| n == "STORAGE")
        .map_or(0, |(_, n)| n);
    r.int("storage_errors", storage);
    r.int("msgs_received", l.tally.msgs);
    r.int("unanswered", l.unanswered);
    r.int("stray_answers", l.tally.stray);
    r.int("failures", l.failures.len() as u64);
    r.int("join_retries", l.join_retries);
    r.num(
        "longest_stall_ms",
        Some(l.longest_stall.as_secs_f64() * 1000.0),
        0,
    );
    r.num("stall_ended_at_s", Some(l.stall_ended_at.as_secs_f64()), 1);
    if c.mode == Mode::Kills {
        r.int("kills", ctl.kills);
        r.num(
            "slowest_restart_ms",
            Some(ctl.slowest_restart.as_secs_f64() * 1000.0),
            0,
        );
        r.put(
            "kill_problem",
            ctl.problem
                .as_deref()
                .map_or(Val::Null, |p| Val::Text(p.into())),
        );
    }
    let mut all = Checked::default();
    for n in checked {
        all.add(*n);
    }
    // Each ACKed message is checked on every node, so on the node it was not sent through.
    r.int("read_back", all.read);
    r.int("lost", all.lost);
    r.int("dups", all.dups);
    r.int("gaps", all.gaps);
    r.int("unacked_present", all.unacked_present);
    r.int("read_errors", read_errors as u64);
    put_cpu(r, ctl.cpu.0, ctl.cpu.1);
}

/// Whether a run broke the contract: something ACKed lost, a duplicate, a gap, an answer
/// that should not have come or never came, or a room that could not be read back.
pub fn broken(r: &Record) -> bool {
    [
        "lost",
        "dups",
        "duplicates",
        "gaps",
        "unanswered",
        "stray_answers",
        "read_errors",
    ]
    .iter()
    .any(|k| r.f(k).is_some_and(|n| n > 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(words: &[&str]) -> Result<Cluster, String> {
        let mut p = lexopt::Parser::from_args(words.iter().map(|w| w.to_string()));
        parse(&mut p)
    }

    #[test]
    fn the_defaults_are_the_issue_s_load() {
        let c = parsed(&["--spawn"]).expect("parses");
        assert_eq!(c.mode, Mode::Throughput);
        assert_eq!((c.rooms, c.senders, c.window, c.secs), (64, 256, 16, 10));
        assert_eq!((c.rate, c.kills), (1000, 20));
        assert_eq!(c.nats, PathBuf::from("/usr/sbin/nats-server"));
    }

    #[test]
    fn flags_set_the_mode_and_the_load() {
        let c = parsed(&[
            "--spawn",
            "--mode",
            "kills",
            "--kills",
            "3",
            "--kill-every",
            "2",
            "--senders",
            "8",
            "--rooms",
            "4",
            "--window",
            "2",
            "--size",
            "30",
        ])
        .expect("parses");
        assert_eq!(c.mode, Mode::Kills);
        assert_eq!((c.kills, c.kill_every, c.senders, c.rooms), (3, 2, 8, 4));
        assert_eq!((c.window, c.size), (2, 30));
        let l = parsed(&[
            "--spawn",
            "--mode",
            "latency",
            "--rate",
            "500",
            "--subscribers",
            "3",
        ])
        .expect("parses");
        assert_eq!((l.mode, l.rate, l.subscribers), (Mode::Latency, 500, 3));
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parsed(&[]).is_err_and(|e| e.contains("--spawn")));
        assert!(parsed(&["--spawn", "--mode", "chaos"]).is_err());
        assert!(parsed(&["--spawn", "--window", "0"]).is_err());
        assert!(parsed(&["--spawn", "--addr", "x"]).is_err());
        let few = parsed(&["--spawn", "--senders", "100"]);
        assert!(few.is_err_and(|e| e.contains("at least 128")));
        assert!(parsed(&["--spawn", "--help"]).is_err_and(|e| e == "help"));
    }

    #[test]
    fn a_run_is_broken_by_any_loss_duplicate_or_gap() {
        let mut r = Record::default();
        r.int("lost", 0);
        r.int("dups", 0);
        assert!(!broken(&r));
        r.int("gaps", 1);
        assert!(broken(&r));
    }
}
