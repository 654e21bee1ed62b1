//! `standard`: the set `make bench` runs. For each system (chatd, Redis, NATS, each spawned
//! fresh per run and pinned to `--server-cpu`, the bench pinned to `--cpu`): `fanout` at
//! full speed and paced, at several subscriber counts; `rooms`; `idle`; `connect`. Results go
//! into docs/benchmarks.md between the `standard-set` markers (the rest of the page is kept)
//! and into SVG plots of delivered msgs/s and p99 latency against subscriber count.

use std::fmt::Write as _;
use std::path::PathBuf;

use lexopt::prelude::*;

use crate::live::{Live, Which, defaults, run};
use crate::plot::{Series, chart};
use crate::record::Record;
use crate::wire::Kind;

const BEGIN: &str = "<!-- standard-set:begin (written by `chat-bench standard`) -->";
const END: &str = "<!-- standard-set:end -->";

#[derive(Debug, Clone, PartialEq)]
pub struct Standard {
    pub out: PathBuf,
    pub plots: PathBuf,
    pub targets: Vec<Kind>,
    pub subscriber_counts: Vec<usize>,
    pub rate: u64,
    pub idle: usize,
    pub server_cpu: usize,
    pub cpu: usize,
}

pub fn parse(p: &mut lexopt::Parser) -> Result<Standard, String> {
    let mut s = Standard {
        out: "docs/benchmarks.md".into(),
        plots: "docs/plots".into(),
        targets: vec![Kind::Chatd, Kind::Redis, Kind::Nats],
        subscriber_counts: vec![1, 10, 100, 1000],
        rate: 1000,
        idle: 5000,
        server_cpu: 0,
        cpu: 1,
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        let n = |v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("'{v}' is not a number"))
        };
        match arg {
            Long("out") => s.out = val(p)?.into(),
            Long("plots") => s.plots = val(p)?.into(),
            Long("targets") => {
                s.targets = val(p)?
                    .split(',')
                    .map(Kind::parse)
                    .collect::<Result<_, _>>()?;
            }
            Long("subscriber-counts") => {
                s.subscriber_counts = val(p)?
                    .split(',')
                    .map(|v| n(v.into()))
                    .collect::<Result<_, _>>()?;
            }
            Long("rate") => s.rate = n(val(p)?)? as u64,
            Long("idle") => s.idle = n(val(p)?)?,
            Long("server-cpu") => s.server_cpu = n(val(p)?)?,
            Long("cpu") => s.cpu = n(val(p)?)?,
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(s)
}

fn val(p: &mut lexopt::Parser) -> Result<String, String> {
    p.value()
        .map_err(|e| e.to_string())?
        .string()
        .map_err(|e| e.to_string())
}

/// One run of the set: its command line (for the docs) and what it found.
struct Ran {
    cmd: String,
    rec: Record,
}

fn one(s: &Standard, which: Which, kind: Kind, flags: &[(&str, String)]) -> Option<Ran> {
    let mut l: Live = defaults(which, kind);
    l.server.server_cpu = Some(s.server_cpu);
    let mut cmd = format!(
        "chat-bench {} --spawn --target {kind} --server-cpu {} --cpu {}",
        which.name(),
        s.server_cpu,
        s.cpu
    );
    for (k, v) in flags {
        let _ = write!(cmd, " --{k} {v}");
        let n = v.parse::<usize>().unwrap_or(0);
        match *k {
            "subscribers" => l.ps.subscribers = n,
            "publishers" => l.ps.publishers = n,
            "rooms" => l.ps.rooms = n,
            "rate" => l.ps.rate = Some(n as f64),
            "connections" => l.connections = n,
            _ => {}
        }
    }
    eprintln!("chat-bench: {cmd}");
    match run(&l) {
        Ok(rec) => {
            println!("{}", rec.json());
            Some(Ran { cmd, rec })
        }
        Err(e) => {
            eprintln!("chat-bench: {cmd}: {e}");
            None
        }
    }
}

pub fn run_set(s: &Standard) -> Result<(), String> {
    crate::net::pin(s.cpu)?;
    let started = std::time::Instant::now();
    let mut max_rate = Vec::new();
    let mut paced = Vec::new();
    let mut rooms = Vec::new();
    let mut idle = Vec::new();
    let mut connect = Vec::new();
    for &kind in &s.targets {
        for &n in &s.subscriber_counts {
            let subs = [("subscribers", n.to_string())];
            max_rate.extend(one(s, Which::Fanout, kind, &subs));
            let paced_flags = [("subscribers", n.to_string()), ("rate", s.rate.to_string())];
            paced.extend(one(s, Which::Fanout, kind, &paced_flags));
        }
        rooms.extend(one(s, Which::Rooms, kind, &[]));
        idle.extend(one(
            s,
            Which::Idle,
            kind,
            &[("connections", s.idle.to_string())],
        ));
        connect.extend(one(s, Which::Connect, kind, &[]));
    }
    let secs = started.elapsed().as_secs();
    std::fs::create_dir_all(&s.plots).map_err(|e| format!("{}: {e}", s.plots.display()))?;
    let plot = |name: &str, title: &str, y: &str, key: &str, runs: &[Ran], scale: f64| {
        let series: Vec<Series> = s
            .targets
            .iter()
            .map(|k| {
                let points = runs
                    .iter()
                    .filter(|r| r.rec.show("target") == k.name())
                    .filter_map(|r| Some((r.rec.f("subscribers")?, r.rec.f(key)? * scale)))
                    .collect();
                Series::new(k.name(), points)
            })
            .collect();
        let path = s.plots.join(name);
        std::fs::write(&path, chart(title, "subscribers (one room)", y, &series)?)
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    plot(
        "fanout-throughput.svg",
        "fanout, full speed: deliveries/s",
        "delivered msgs/s",
        "delivered_per_sec",
        &max_rate,
        1.0,
    )?;
    let t = format!("fanout at {} msgs/s: p99 latency", s.rate);
    plot(
        "fanout-p99.svg",
        &t,
        "p99 end-to-end latency (ms)",
        "p99_us",
        &paced,
        1e-3,
    )?;
    let pubsub_cols = [
        "target",
        "subscribers",
        "published_per_sec",
        "delivered_per_sec",
        "p50_us",
        "p99_us",
        "p999_us",
        "max_us",
        "lost",
        "duplicates",
        "reordered",
        "server_cpu_pct",
        "bench_cpu_pct",
        "server_peak_rss_kib",
    ];
    let mut md = String::new();
    let _ = writeln!(md, "{BEGIN}\n");
    let _ = writeln!(
        md,
        "Written by `make bench` (`chat-bench standard`) on {}; the set took {secs} s.\n",
        crate::os::machine()
    );
    let _ = writeln!(
        md,
        "![delivered msgs/s](plots/fanout-throughput.svg)\n![p99 latency](plots/fanout-p99.svg)\n"
    );
    section(
        &mut md,
        "Fanout, full speed (1 publisher, window 16, 100-byte messages, 2 s)",
        &pubsub_cols,
        &max_rate,
    );
    section(
        &mut md,
        &format!("Fanout paced at {} msgs/s (1 publisher)", s.rate),
        &pubsub_cols,
        &paced,
    );
    section(
        &mut md,
        "Rooms (10 publishers, 1000 subscribers over 100 rooms, full speed)",
        &pubsub_cols,
        &rooms,
    );
    section(
        &mut md,
        "Idle connections",
        &[
            "target",
            "held",
            "failed",
            "setup_secs",
            "rss_before_kib",
            "rss_after_kib",
            "bytes_per_conn",
        ],
        &idle,
    );
    section(
        &mut md,
        "Connection set-up (connect + hello + answer, 32 at once)",
        &[
            "target",
            "connections",
            "failed",
            "conns_per_sec",
            "p50_us",
            "p99_us",
            "server_cpu_pct",
            "bench_cpu_pct",
        ],
        &connect,
    );
    let _ = writeln!(md, "{END}");
    let path = &s.out;
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{}{}", &old[..b], md.trim_end(), &old[e + END.len()..])
        }
        _ => format!("{}\n{md}", old.trim_end()),
    };
    std::fs::write(path, new).map_err(|e| format!("{}: {e}", path.display()))
}

fn section(md: &mut String, title: &str, cols: &[&str], runs: &[Ran]) {
    let _ = writeln!(md, "### {title}\n");
    let _ = writeln!(md, "| {} |", cols.join(" | "));
    let _ = writeln!(md, "|{}", "---|".repeat(cols.len()));
    for r in runs {
        let row: Vec<String> = cols.iter().map(|c| r.rec.show(c)).collect();
        let _ = writeln!(md, "| {} |", row.join(" | "));
    }
    let _ = writeln!(md, "\nCommands:\n\n```");
    for r in runs {
        let _ = writeln!(md, "{}", r.cmd);
    }
    let _ = writeln!(md, "```\n");
}
