//! The flags of `chat-bench lab`: words in, a checked `Lab` out, with a message naming the
//! flag for every value refused. Parsing only; it never starts or reads anything.

use std::path::PathBuf;

use lexopt::prelude::*;

use crate::args::{number, text};

/// How the N connections of a run are spread over rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Each connection in a room of its own: per message one frame in, an ACK and one MSG
    /// (back to the sender) out.
    Own,
    /// All N connections in one room: per message one frame in, an ACK and N MSGs out.
    Shared,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Own => "own",
            Workload::Shared => "shared",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Lab {
    pub chatd: PathBuf,
    pub workloads: Vec<Workload>,
    pub models: Vec<String>,
    /// Increasing, no repeats: the survival ladder climbs it.
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
    /// Runs per (workload, model, N), each with a daemon of its own; the line shows medians.
    pub runs: usize,
    /// One more run per (workload, model, N) under `strace -f -c`, for syscalls per message.
    pub syscalls: bool,
}

/// The most runs per (workload, model, N): past this a median changes little and the lab
/// takes hours.
pub const MAX_RUNS: usize = 99;

/// The longest text the lab sends: with the frame's header and room name it stays inside the
/// daemon's default --max-frame (64 KiB), which the lab leaves alone.
const MAX_SIZE: usize = 60_000;

/// Parses the flags after `lab`.
///
/// # Errors
/// A message naming the bad flag or value; `help` when help was asked for.
pub fn parse(p: &mut lexopt::Parser) -> Result<Lab, String> {
    let mut lab = Lab {
        chatd: crate::args::default_chatd(),
        workloads: vec![Workload::Own],
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
        runs: 3,
        syscalls: false,
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("chatd") => lab.chatd = PathBuf::from(text(p)?),
            Long("workload") => lab.workloads = workloads(&text(p)?)?,
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
            Long("runs") => lab.runs = runs(&text(p)?)?,
            Long("syscalls") => lab.syscalls = true,
            Long("help") | Short('h') => return Err("help".into()),
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(lab)
}

fn workloads(v: &str) -> Result<Vec<Workload>, String> {
    let mut out = Vec::new();
    for w in v.split(',').map(str::trim) {
        let w = match w {
            "own" => Workload::Own,
            "shared" => Workload::Shared,
            _ => {
                return Err(format!(
                    "--workload: '{w}' is not one of own, shared (a comma list of them)"
                ));
            }
        };
        if !out.contains(&w) {
            out.push(w);
        }
    }
    Ok(out)
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

/// Connection counts in increasing order, each once: the ladder climbs them.
fn counts(v: &str) -> Result<Vec<usize>, String> {
    let mut out = v
        .split(',')
        .map(|s| match s.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!("--conns: '{s}' is not a connection count >= 1")),
        })
        .collect::<Result<Vec<usize>, String>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn runs(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(k) if (1..=MAX_RUNS).contains(&k) => Ok(k),
        _ => Err(format!(
            "--runs: '{v}' is not a run count of 1 to {MAX_RUNS}"
        )),
    }
}

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
        assert_eq!((l.workloads.as_slice(), l.runs), (&[Workload::Own][..], 3));
        assert!(!l.syscalls);
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
    fn workloads_runs_and_syscalls_are_read() {
        let l = lab(&[
            "--workload",
            "shared, own,shared",
            "--runs",
            "5",
            "--syscalls",
        ])
        .expect("parses");
        assert_eq!(l.workloads, [Workload::Shared, Workload::Own]);
        assert_eq!((l.runs, l.syscalls), (5, true));
        assert_eq!(Workload::Shared.name(), "shared");
    }

    #[test]
    fn every_flag_is_explained_in_the_help() {
        for flag in [
            "--workload",
            "--models",
            "--conns",
            "--runs",
            "--syscalls",
            "--mbps",
            "--secs",
            "--sample-ms",
            "--size",
            "--fsync",
            "--ring-messages",
            "--server-cpu",
            "--cpu",
            "--chatd",
        ] {
            let lab_help = crate::args::USAGE
                .split("THE CONCURRENCY LAB")
                .nth(1)
                .and_then(|rest| rest.split("MATRIX OPTIONS").next())
                .unwrap_or_default();
            assert!(lab_help.contains(flag), "{flag} is not in the lab's help");
        }
    }

    #[test]
    fn the_ladder_climbs_the_counts_in_increasing_order_once_each() {
        let l = lab(&["--conns", "64,1,8,8,2"]).expect("parses");
        assert_eq!(l.conns, [1, 2, 8, 64]);
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        for (bad, flag) in [
            (&["--conns", "0"][..], "--conns"),
            (&["--conns", "1,x"], "--conns"),
            (&["--mbps", "0"], "--mbps"),
            (&["--mbps", "nan"], "--mbps"),
            (&["--models", "reactor,,fork"], "--models"),
            (&["--server-cpu", "first"], "--server-cpu"),
            (&["--sample-ms", "1"], "--sample-ms"),
            (&["--size", "70000"], "--size"),
            (&["--fsync", "sometimes"], "fsync"),
            (&["--workload", "private"], "--workload"),
            (&["--workload", "own,"], "--workload"),
            (&["--runs", "0"], "--runs"),
            (&["--runs", "100"], "--runs"),
            (&["--runs", "two"], "--runs"),
            (&["--syscalls=yes"], "syscalls"),
        ] {
            match lab(bad) {
                Ok(l) => panic!("{bad:?} accepted: {l:?}"),
                Err(e) => assert!(e.contains(flag), "{bad:?}: {e}"),
            }
        }
    }
}
