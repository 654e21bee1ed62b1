//! `chat-bench lab`: the concurrency lab. For each server model (chatd's `--driver`) and each
//! connection count N, it starts a chatd of its own pinned to one CPU, logs N connections in
//! (each into a room of its own), has each send at a fixed bit rate for a while (open loop,
//! `load`), samples the server's whole process tree meanwhile (`sampler`, `tree`) and prints
//! one JSON line: mean CPU % and its Cv for the whole tree, the figure `top` would have shown
//! for the daemon's main process alone (the paper's method), peak memory of the tree, context
//! switches per message, ACK latency and the accounting. A model the daemon refuses, or any
//! run that cannot be set up, is a line with an `error` field, and the lab goes on.
//!
//! It only ever starts and stops daemons of its own, and reads /proc.

mod load;
mod sampler;
mod tree;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use lexopt::prelude::*;

use crate::args::{number, text};
use crate::daemon::{Daemon, Listen};
use crate::login::Target;
use crate::net::own_cpu_secs;
use crate::record::Record;
use crate::runner::SPAWN_USER;
use load::Load;
use sampler::{Sampler, summarise};

/// The bench's own CPU at or above this share of its core: it, not the server, may have set
/// the pace (it fell behind its schedule).
const GENERATOR_SATURATED_PCT: f64 = 90.0;

#[derive(Debug, Clone, PartialEq)]
pub struct Lab {
    pub chatd: PathBuf,
    pub models: Vec<String>,
    pub conns: Vec<usize>,
    pub mbps: f64,
    pub secs: f64,
    pub sample_ms: u64,
    pub size: usize,
    pub fsync: String,
    /// The daemon's `--ring-messages`: history kept in memory per room.
    pub ring_messages: u64,
    pub server_cpu: Option<usize>,
    pub cpu: Option<usize>,
}

/// Parses the flags after `lab`.
///
/// # Errors
/// A message naming the bad flag or value; `help` when help was asked for.
pub fn parse(p: &mut lexopt::Parser) -> Result<Lab, String> {
    let mut lab = Lab {
        chatd: crate::args::default_chatd(),
        models: ["reactor", "threads", "fork"].map(String::from).to_vec(),
        conns: vec![1, 2, 4, 8, 16, 32, 64],
        mbps: 1.0,
        secs: 60.0,
        sample_ms: 500,
        size: 1000,
        fsync: "never".into(),
        ring_messages: 100,
        server_cpu: Some(0),
        cpu: Some(1),
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("chatd") => lab.chatd = PathBuf::from(text(p)?),
            Long("models") => lab.models = models(&text(p)?)?,
            Long("conns") => lab.conns = counts(&text(p)?)?,
            Long("mbps") => lab.mbps = positive(&text(p)?, "--mbps")?,
            Long("secs") => lab.secs = positive(&text(p)?, "--secs")?,
            Long("sample-ms") => lab.sample_ms = number(p, "--sample-ms", 10)?,
            Long("size") => lab.size = size(&text(p)?)?,
            Long("fsync") => lab.fsync = crate::args::policy(&text(p)?)?,
            Long("ring-messages") => lab.ring_messages = number(p, "--ring-messages", 1)?,
            Long("server-cpu") => lab.server_cpu = cpu(&text(p)?, "--server-cpu")?,
            Long("cpu") => lab.cpu = cpu(&text(p)?, "--cpu")?,
            Long("help") | Short('h') => return Err("help".into()),
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(lab)
}

fn models(v: &str) -> Result<Vec<String>, String> {
    let out: Vec<String> = v.split(',').map(|m| m.trim().to_string()).collect();
    match out
        .iter()
        .find(|m| m.is_empty() || m.contains(char::is_whitespace))
    {
        Some(_) => Err(format!("--models: '{v}' is not a list of driver names")),
        None => Ok(out),
    }
}

fn counts(v: &str) -> Result<Vec<usize>, String> {
    v.split(',')
        .map(|s| match s.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!("--conns: '{s}' is not a connection count >= 1")),
        })
        .collect()
}

/// The longest text the lab sends: with the frame's header and room name it stays inside the
/// daemon's default --max-frame (64 KiB), which the lab leaves alone.
const MAX_SIZE: usize = 60_000;

fn size(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=MAX_SIZE).contains(&n) => Ok(n),
        _ => Err(format!(
            "--size: '{v}' is not a text size of 1 to {MAX_SIZE} bytes"
        )),
    }
}

fn positive(v: &str, flag: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("{flag}: '{v}' is not a number > 0")),
    }
}

/// A CPU number, or `none` for no pinning.
fn cpu(v: &str, flag: &str) -> Result<Option<usize>, String> {
    if v == "none" {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("{flag}: '{v}' is not a CPU number or 'none'"))
}

/// Runs every (model, N) and prints a JSON line for each. True when every run that could be
/// measured balanced (every SEND ACKed, no ERROR, no failed connection).
///
/// # Errors
/// Pinning the bench failed.
pub fn run(lab: &Lab) -> Result<bool, String> {
    if let Some(cpu) = lab.cpu {
        crate::net::pin(cpu)?;
    }
    let mut clean = true;
    for model in &lab.models {
        for &n in &lab.conns {
            eprintln!("chat-bench lab: {model}, {n} connections, {} s", lab.secs);
            let line = match one(lab, model, n) {
                Ok(r) => {
                    let balanced = ["unanswered", "errors", "failures"]
                        .iter()
                        .all(|k| r.f(k) == Some(0.0));
                    clean &= balanced && r.f("acked") == r.f("sent");
                    r.json()
                }
                Err(e) => {
                    eprintln!("chat-bench lab: {model}, {n} connections: {e}");
                    let mut r = Record::default();
                    r.text("model", model);
                    r.int("conns", n as u64);
                    r.text("error", &e);
                    r.json()
                }
            };
            println!("{line}");
        }
    }
    Ok(clean)
}

/// One model at one N: spawn, connect, load and sample, drain, stop.
fn one(lab: &Lab, model: &str, n: usize) -> Result<Record, String> {
    // Every connection has a room of its own, and each room keeps its history in memory: a
    // small ring keeps that from growing with the run's length and hiding the per-connection
    // cost of the model.
    let mut extra = vec!["--ring-messages".to_string(), lab.ring_messages.to_string()];
    // Today's daemon is the reactor and knows no --driver flag: ask for other models only.
    if model != "reactor" {
        extra.extend(["--driver".to_string(), model.to_string()]);
    }
    let (daemon, token) = Daemon::start_with(
        &lab.chatd,
        &lab.fsync,
        SPAWN_USER,
        n,
        lab.server_cpu,
        Listen::Plain,
        &extra,
    )?;
    let target = Target {
        addr: daemon.addr,
        user: SPAWN_USER.into(),
        token,
    };
    let mut load = Load::connect(&target, n, lab.size, lab.mbps)?;
    let root = daemon.pid();
    let every = Duration::from_millis(lab.sample_ms);
    let sampler = Sampler::start(root, every);
    if let Err(e) = &sampler {
        eprintln!("chat-bench lab: CPU, memory and context switches not measured: {e}");
    }
    let switches0 = tree::switches(root).ok();
    let gen0 = own_cpu_secs();
    let t0 = Instant::now();
    load.send_for(lab.secs)?;
    let secs = t0.elapsed().as_secs_f64();
    let gen_pct = 100.0 * (own_cpu_secs() - gen0) / secs.max(1e-9);
    let switches1 = tree::switches(root).ok();
    let samples = match sampler {
        Ok(s) => Some(s.finish()?),
        Err(_) => None,
    };
    load.drain()?;
    daemon.stop()?;
    let t = &load.tally;
    let summary = samples.as_deref().and_then(summarise);
    let switches = match (&switches0, &switches1) {
        (Some(a), Some(b)) => Some(tree::switches_between(a, b)),
        _ => None,
    };
    let mut r = Record::default();
    r.text("model", model);
    r.int("conns", n as u64);
    r.num("mbps", Some(lab.mbps), 3);
    r.int("size", lab.size as u64);
    r.num("secs", Some(secs), 3);
    r.int(
        "samples",
        summary.as_ref().map_or(0, |s| s.intervals as u64),
    );
    r.num("cpu_mean_pct", summary.as_ref().map(|s| s.cpu_mean_pct), 2);
    r.num("cpu_cv", summary.as_ref().and_then(|s| s.cpu_cv), 3);
    let paper = summary.as_ref().map(|s| s.paper_style_cpu_pct);
    r.num("paper_style_cpu_pct", paper, 2);
    r.num(
        "paper_style_cv",
        summary.as_ref().and_then(|s| s.paper_style_cv),
        3,
    );
    let procs = summary.as_ref().map(|s| s.max_processes as f64);
    r.num("processes", procs, 0);
    r.num("threads", summary.as_ref().map(|s| s.max_threads as f64), 0);
    let mem = summary
        .as_ref()
        .and_then(|s| s.peak_mem_kib.map(|k| k as f64));
    r.num("rss_kib", mem, 0);
    match summary.as_ref() {
        Some(s) if mem.is_some() => r.text("rss_kind", s.mem_kind),
        _ => r.num("rss_kind", None, 0),
    }
    r.num("ctxsw_voluntary", switches.map(|s| s.0 as f64), 0);
    r.num("ctxsw_involuntary", switches.map(|s| s.1 as f64), 0);
    let per_msg = switches
        .filter(|_| t.sent > 0)
        .map(|(v, i)| (v + i) as f64 / t.sent as f64);
    r.num("ctxsw_per_msg", per_msg, 3);
    r.int("sent", t.sent);
    r.int("acked", t.acked);
    r.int("msgs_received", t.msgs);
    let p = t.latency.percentiles();
    r.int("ack_p50_us", p.p50_us);
    r.int("ack_p99_us", p.p99_us);
    r.int("ack_max_us", p.max_us);
    r.int("unanswered", t.unanswered);
    r.int("errors", t.errors.total());
    r.int("failures", t.failures.len() as u64);
    r.num("generator_cpu_pct", Some(gen_pct), 1);
    r.num("generator_max_lag_ms", Some(t.max_lag_secs * 1e3), 1);
    let bound = gen_pct >= GENERATOR_SATURATED_PCT;
    r.text("generator_bound", if bound { "yes" } else { "no" });
    for f in t.failures.iter().take(5) {
        eprintln!("chat-bench lab: connection failed: {f}");
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab(words: &[&str]) -> Result<Lab, String> {
        let mut p = lexopt::Parser::from_args(words.iter().map(|s| s.to_string()));
        parse(&mut p)
    }

    #[test]
    fn the_standard_experiment_is_the_default_and_lists_are_taken_as_given() {
        let l = lab(&[]).expect("defaults");
        assert_eq!(l.models, ["reactor", "threads", "fork"]);
        assert_eq!(l.conns, [1, 2, 4, 8, 16, 32, 64]);
        assert_eq!((l.mbps, l.secs, l.sample_ms), (1.0, 60.0, 500));
        assert_eq!((l.server_cpu, l.cpu), (Some(0), Some(1)));
        let l = lab(&[
            "--models",
            "reactor,uring",
            "--conns",
            "2,3",
            "--secs",
            "0.5",
            "--cpu",
            "none",
        ])
        .expect("parses");
        assert_eq!(l.models, ["reactor", "uring"]);
        assert_eq!(
            (l.conns.as_slice(), l.secs, l.cpu),
            (&[2, 3][..], 0.5, None)
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            &["--conns", "0"][..],
            &["--conns", "1,x"],
            &["--mbps", "0"],
            &["--mbps", "nan"],
            &["--models", "reactor,,fork"],
            &["--server-cpu", "first"],
            &["--sample-ms", "1"],
            &["--size", "70000"],
            &["--fsync", "sometimes"],
        ] {
            assert!(lab(bad).is_err(), "{bad:?} accepted");
        }
    }
}
