//! The command line of `chat-bench standard`: flags in, a `Standard` out. Parsing only; it
//! never spawns, connects or writes.

use std::path::PathBuf;

use lexopt::prelude::*;

use crate::args::{number, text};
use crate::live::PUBLISH_WINDOW;
use crate::wire::Kind;

pub const USAGE: &str = "\
chat-bench standard - the set `make bench` runs (see docs/benchmarks.md)

USAGE:
    chat-bench standard [OPTIONS]

OPTIONS:
    --targets LIST           systems to run (default chatd,redis,nats)
    --runs K                 runs of every full-speed, idle and connect row (default 3)
    --latency-runs L         runs of every paced-latency row (default 5)
    --secs S                 seconds of publishing per fanout/rooms run (default 5)
    --window W               publishes in flight per publisher at full speed and paced
                             (default 1000); the request/response table keeps 16
    --subscriber-counts LIST full-speed fanout at these subscriber counts (default
                             1,10,100,1000); request/response runs at the largest
    --paced LIST             paced latency loads as RATExSUBSCRIBERS (default
                             10000x100,1000x1000)
    --idle C                 idle connections held (default 18000)
    --idle-procs N           processes holding them (default 2)
    --connect N              connection set-ups per connect run (default 5000)
    --server-cpu C|none      pin every server to CPU C (default 0)
    --cpu C|none             pin the bench to CPU C (default 1)
    --out FILE               the page to write the results into (default docs/benchmarks.md)
    --plots DIR              where the SVG plots go (default docs/plots)
";

/// A paced load: `rate` msgs/s in all from one publisher to `subscribers` in one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paced {
    pub rate: u64,
    pub subscribers: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Standard {
    pub out: PathBuf,
    pub plots: PathBuf,
    pub targets: Vec<Kind>,
    pub runs: usize,
    pub latency_runs: usize,
    pub secs: u64,
    pub window: usize,
    pub subscriber_counts: Vec<usize>,
    pub paced: Vec<Paced>,
    pub idle: usize,
    pub idle_procs: usize,
    pub connect: usize,
    pub server_cpu: Option<usize>,
    pub cpu: Option<usize>,
}

impl Default for Standard {
    fn default() -> Standard {
        Standard {
            out: "docs/benchmarks.md".into(),
            plots: "docs/plots".into(),
            targets: vec![Kind::Chatd, Kind::Redis, Kind::Nats],
            runs: 3,
            latency_runs: 5,
            secs: 5,
            window: PUBLISH_WINDOW,
            subscriber_counts: vec![1, 10, 100, 1000],
            paced: vec![
                Paced {
                    rate: 10_000,
                    subscribers: 100,
                },
                Paced {
                    rate: 1000,
                    subscribers: 1000,
                },
            ],
            idle: 18_000,
            idle_procs: 2,
            connect: 5000,
            server_cpu: Some(0),
            cpu: Some(1),
        }
    }
}

impl Standard {
    /// The command line that runs this set, every flag spelled out.
    pub fn command(&self) -> String {
        let join = |v: Vec<String>| v.join(",");
        let cpu = |c: Option<usize>| c.map_or("none".into(), |c| c.to_string());
        format!(
            "chat-bench standard --targets {} --runs {} --latency-runs {} --secs {} --window {} \
             --subscriber-counts {} --paced {} --idle {} --idle-procs {} --connect {} \
             --server-cpu {} --cpu {}",
            join(self.targets.iter().map(|k| k.name().to_string()).collect()),
            self.runs,
            self.latency_runs,
            self.secs,
            self.window,
            join(
                self.subscriber_counts
                    .iter()
                    .map(|n| n.to_string())
                    .collect()
            ),
            join(
                self.paced
                    .iter()
                    .map(|p| format!("{}x{}", p.rate, p.subscribers))
                    .collect()
            ),
            self.idle,
            self.idle_procs,
            self.connect,
            cpu(self.server_cpu),
            cpu(self.cpu),
        )
    }
}

/// Repetitions beyond this are a typo, not a plan: the set would run for hours.
const MAX_RUNS: usize = 99;

/// Parses the flags after `standard`; `Err("help")` for `--help`.
///
/// # Errors
/// A message naming the bad flag or value.
pub fn parse(p: &mut lexopt::Parser) -> Result<Standard, String> {
    let mut s = Standard::default();
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("out") => s.out = text(p)?.into(),
            Long("plots") => s.plots = text(p)?.into(),
            Long("targets") => s.targets = list(&text(p)?, Kind::parse)?,
            Long("runs") => s.runs = runs(p, "--runs")?,
            Long("latency-runs") => s.latency_runs = runs(p, "--latency-runs")?,
            Long("secs") => s.secs = number(p, "--secs", 1)?,
            Long("window") => s.window = number(p, "--window", 1)?,
            Long("subscriber-counts") => {
                s.subscriber_counts = list(&text(p)?, |v| count(v, "--subscriber-counts"))?;
            }
            Long("paced") => s.paced = list(&text(p)?, paced)?,
            Long("idle") => s.idle = number(p, "--idle", 1)?,
            Long("idle-procs") => s.idle_procs = number(p, "--idle-procs", 1)?,
            Long("connect") => s.connect = number(p, "--connect", 1)?,
            Long("server-cpu") => s.server_cpu = cpu(&text(p)?, "--server-cpu")?,
            Long("cpu") => s.cpu = cpu(&text(p)?, "--cpu")?,
            Long("help") | Short('h') => return Err("help".into()),
            other => return Err(other.unexpected().to_string()),
        }
    }
    if s.targets.is_empty() {
        return Err("--targets: name at least one of chatd, redis, nats".into());
    }
    Ok(s)
}

fn runs(p: &mut lexopt::Parser, flag: &str) -> Result<usize, String> {
    let n: usize = number(p, flag, 1)?;
    if n > MAX_RUNS {
        return Err(format!("{flag}: {n} is more than {MAX_RUNS}"));
    }
    Ok(n)
}

fn list<T>(v: &str, one: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    v.split(',').map(|s| one(s.trim())).collect()
}

fn count(v: &str, flag: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{flag}: '{v}' is not a number >= 1")),
    }
}

/// `RATExSUBSCRIBERS`, such as `10000x100`.
fn paced(v: &str) -> Result<Paced, String> {
    let (rate, subs) = v
        .split_once('x')
        .ok_or_else(|| format!("--paced: '{v}' is not RATExSUBSCRIBERS (such as 10000x100)"))?;
    Ok(Paced {
        rate: count(rate, "--paced")? as u64,
        subscribers: count(subs, "--paced")?,
    })
}

fn cpu(v: &str, flag: &str) -> Result<Option<usize>, String> {
    if v == "none" {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("{flag}: '{v}' is not a CPU number or none"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(words: &[&str]) -> Result<Standard, String> {
        parse(&mut lexopt::Parser::from_args(words.iter().copied()))
    }

    #[test]
    fn defaults_are_the_documented_set() {
        let s = run(&[]).expect("no flags");
        assert_eq!((s.runs, s.latency_runs, s.secs), (3, 5, 5));
        assert_eq!(s.window, 1000);
        assert_eq!((s.idle, s.idle_procs, s.connect), (18_000, 2, 5000));
        assert_eq!((s.server_cpu, s.cpu), (Some(0), Some(1)));
        assert_eq!(
            s.paced,
            [
                Paced {
                    rate: 10_000,
                    subscribers: 100
                },
                Paced {
                    rate: 1000,
                    subscribers: 1000
                }
            ]
        );
    }

    #[test]
    fn new_flags_are_read() {
        let s = run(&[
            "--runs",
            "1",
            "--latency-runs",
            "7",
            "--secs",
            "2",
            "--window",
            "64",
            "--paced",
            "100x2",
            "--idle",
            "100",
            "--idle-procs",
            "1",
            "--connect",
            "50",
            "--server-cpu",
            "none",
            "--cpu",
            "0",
            "--targets",
            "chatd,nats",
            "--subscriber-counts",
            "2,3",
        ])
        .expect("parses");
        assert_eq!((s.runs, s.latency_runs, s.secs, s.window), (1, 7, 2, 64));
        assert_eq!(
            s.paced,
            [Paced {
                rate: 100,
                subscribers: 2
            }]
        );
        assert_eq!((s.idle, s.idle_procs, s.connect), (100, 1, 50));
        assert_eq!((s.server_cpu, s.cpu), (None, Some(0)));
        assert_eq!(s.targets, [Kind::Chatd, Kind::Nats]);
        assert_eq!(s.subscriber_counts, [2, 3]);
    }

    #[test]
    fn the_command_spells_out_every_flag_and_parses_back() {
        let s = run(&["--runs", "1", "--paced", "100x2,5x7", "--cpu", "none"]).expect("parses");
        let cmd = s.command();
        assert!(
            cmd.contains("--runs 1 --latency-runs 5 --secs 5 --window 1000"),
            "{cmd}"
        );
        assert!(
            cmd.contains("--paced 100x2,5x7") && cmd.ends_with("--cpu none"),
            "{cmd}"
        );
        let words: Vec<&str> = cmd.split_whitespace().skip(2).collect();
        assert_eq!(run(&words), Ok(s));
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            &["--runs", "0"][..],
            &["--runs", "100"],
            &["--latency-runs", "x"],
            &["--secs", "0"],
            &["--paced", "100"],
            &["--paced", "0x10"],
            &["--paced", "10x"],
            &["--cpu", "one"],
            &["--targets", "kafka"],
            &["--subscriber-counts", "0"],
            &["--rate", "1000"],
        ] {
            assert!(run(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(run(&["--help"]), Err("help".into()));
    }
}
