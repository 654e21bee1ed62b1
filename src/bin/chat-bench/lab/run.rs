//! One run of the lab: a chatd of its own for one (workload, model, N), N connections logged
//! in, the sending phase with the server's process tree sampled, the drain, the stop; and
//! what it measured as typed figures (`Run`), which `aggregate` turns into a line over the
//! runs. Also the run under `strace` for syscalls per message, which measures nothing else.
//!
//! It only ever starts and stops daemons of its own, and reads /proc.

use std::time::{Duration, Instant};

use super::flags::{Lab, Workload};
use super::load::Load;
use super::sampler::{Sampler, summarise};
use super::syscalls::{Syscalls, Tracer};
use super::tree;
use crate::daemon::{Daemon, Listen};
use crate::login::Target;
use crate::net::own_cpu_secs;
use crate::runner::SPAWN_USER;
use crate::stats::Percentiles;

/// The longest sending phase of the run under strace: long enough for thousands of
/// messages, short because the server is slowed many times over and its figures are not kept.
const TRACED_SECS: f64 = 5.0;

/// What one run measured. A figure the OS did not give is `None`, never 0.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Run {
    pub secs: f64,
    pub samples: u64,
    pub cpu_mean_pct: Option<f64>,
    pub cpu_cv: Option<f64>,
    pub paper_style_cpu_pct: Option<f64>,
    pub paper_style_cv: Option<f64>,
    pub processes: Option<f64>,
    pub threads: Option<f64>,
    pub rss_kib: Option<f64>,
    /// `pss` or `rss`, with `rss_kib`.
    pub rss_kind: Option<&'static str>,
    /// (voluntary, involuntary) over the sending phase.
    pub ctxsw: Option<(u64, u64)>,
    pub sent: u64,
    pub acked: u64,
    pub msgs_received: u64,
    pub msgs_expected: u64,
    pub msgs_shortfall: u64,
    pub unanswered: u64,
    pub errors: u64,
    pub failures: u64,
    /// The first connection that failed, and how.
    pub first_failure: Option<String>,
    pub ack: Percentiles,
    pub generator_cpu_pct: f64,
    pub generator_max_lag_ms: f64,
    /// The daemon did not stop cleanly after the run (what it measured stands).
    pub stop_error: Option<String>,
}

impl Run {
    /// Why this run did not balance, or `None` when it did: every SEND ACKed, every member
    /// given every message, no ERROR, no connection lost.
    pub fn trouble(&self) -> Option<String> {
        let mut why = Vec::new();
        if self.failures > 0 {
            let first = self.first_failure.as_deref().unwrap_or("?");
            why.push(format!("{} connections failed ({first})", self.failures));
        }
        if self.errors > 0 {
            why.push(format!("{} ERROR frames", self.errors));
        }
        if self.unanswered > 0 {
            why.push(format!("{} SENDs unanswered", self.unanswered));
        }
        if self.msgs_shortfall > 0 {
            why.push(format!(
                "{} of {} deliveries missing",
                self.msgs_shortfall, self.msgs_expected
            ));
        }
        if why.is_empty() && self.acked != self.sent {
            why.push(format!("{} of {} SENDs ACKed", self.acked, self.sent));
        }
        if let Some(e) = &self.stop_error {
            why.push(format!("the daemon did not stop cleanly: {e}"));
        }
        (!why.is_empty()).then(|| why.join(", "))
    }

    /// Context switches per message sent: (all, voluntary, involuntary).
    pub fn ctxsw_per_msg(&self) -> Option<(f64, f64, f64)> {
        let (v, i) = self.ctxsw?;
        let sent = (self.sent > 0).then_some(self.sent as f64)?;
        Some(((v + i) as f64 / sent, v as f64 / sent, i as f64 / sent))
    }
}

/// A daemon of its own for `model`, and the account to log in with.
fn start(lab: &Lab, model: &str, n: usize) -> Result<(Daemon, Target), String> {
    // Each room keeps its history in memory: a small ring keeps that from growing with the
    // run's length and hiding the per-connection cost of the model.
    let mut extra = vec!["--ring-messages".to_string(), lab.ring_messages.to_string()];
    // The reactor is the daemon's default: ask for other models only.
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
    Ok((daemon, target))
}

/// Stops the daemon with SIGTERM; if it will not stop (it is then killed), kills what it
/// left of its tree too, so that orphans (a process per client) cannot load the next run.
fn stop(daemon: Daemon) -> Result<(), String> {
    let below = tree::descendants_now(daemon.pid()).unwrap_or_default();
    daemon.stop().map(|_| ()).map_err(|e| {
        let killed = tree::kill_leftovers(&below);
        if killed > 0 {
            format!("{e} (killed it and the {killed} processes it left)")
        } else {
            format!("{e} (killed it)")
        }
    })
}

/// One measured run: spawn, connect, load and sample, drain, stop.
///
/// # Errors
/// The run could not be set up (the daemon refused the model or would not start, a
/// connection could not log in).
pub fn one(lab: &Lab, workload: Workload, model: &str, n: usize) -> Result<Run, String> {
    let (daemon, target) = start(lab, model, n)?;
    let mut load = Load::connect(&target, workload, n, lab.size, lab.mbps)?;
    let root = daemon.pid();
    let sampler = Sampler::start(root, Duration::from_millis(lab.sample_ms));
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
    let stop_error = stop(daemon).err();
    let t = &load.tally;
    let summary = samples.as_deref().and_then(summarise);
    let ctxsw = match (&switches0, &switches1) {
        (Some(a), Some(b)) => Some(tree::switches_between(a, b)),
        _ => None,
    };
    for f in t.failures.iter().take(5) {
        eprintln!("chat-bench lab: connection failed: {f}");
    }
    let s = summary.as_ref();
    let rss_kib = s.and_then(|s| s.peak_mem_kib.map(|k| k as f64));
    Ok(Run {
        secs,
        samples: s.map_or(0, |s| s.intervals as u64),
        cpu_mean_pct: s.map(|s| s.cpu_mean_pct),
        cpu_cv: s.and_then(|s| s.cpu_cv),
        paper_style_cpu_pct: s.map(|s| s.paper_style_cpu_pct),
        paper_style_cv: s.and_then(|s| s.paper_style_cv),
        processes: s.map(|s| s.max_processes as f64),
        threads: s.map(|s| s.max_threads as f64),
        rss_kib,
        rss_kind: s.filter(|_| rss_kib.is_some()).map(|s| s.mem_kind),
        ctxsw,
        sent: t.sent,
        acked: t.acked,
        msgs_received: t.msgs,
        msgs_expected: t.msgs_expected,
        msgs_shortfall: t.msgs_shortfall,
        unanswered: t.unanswered,
        errors: t.errors.total(),
        failures: t.failures.len() as u64,
        first_failure: t.failures.first().cloned(),
        ack: t.latency.percentiles(),
        generator_cpu_pct: gen_pct,
        generator_max_lag_ms: t.max_lag_secs * 1e3,
        stop_error,
    })
}

/// The run under strace: a daemon of its own, N connections logged in, then every process
/// and thread of its tree traced (`strace -f` follows what they start later) from the first
/// SEND until every answer is in, for at most `TRACED_SECS`. Returns the counts and the
/// messages sent meanwhile.
///
/// # Errors
/// The run could not be set up, or strace is missing, could not attach (ptrace not
/// permitted) or left no summary; on an OS without strace, that it is not available.
pub fn traced(
    lab: &Lab,
    workload: Workload,
    model: &str,
    n: usize,
) -> Result<(Syscalls, u64), String> {
    let (daemon, target) = start(lab, model, n)?;
    let mut load = Load::connect(&target, workload, n, lab.size, lab.mbps)?;
    let tracer = Tracer::attach(daemon.pid())?;
    let sent = load
        .send_for(lab.secs.min(TRACED_SECS))
        .and_then(|()| load.settle());
    let counts = tracer.detach();
    load.bye();
    stop(daemon)?;
    sent?;
    Ok((counts?, load.tally.sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balanced() -> Run {
        Run {
            sent: 10,
            acked: 10,
            msgs_received: 20,
            msgs_expected: 20,
            ctxsw: Some((30, 10)),
            ..Run::default()
        }
    }

    #[test]
    fn a_balanced_run_has_no_trouble_and_every_shortfall_is_named() {
        assert_eq!(balanced().trouble(), None);
        let short = Run {
            msgs_received: 19,
            msgs_shortfall: 1,
            ..balanced()
        };
        assert_eq!(
            short.trouble().as_deref(),
            Some("1 of 20 deliveries missing")
        );
        let lost = Run {
            acked: 8,
            unanswered: 2,
            failures: 1,
            first_failure: Some("connection 3 (lab-3): reset".into()),
            ..balanced()
        };
        assert_eq!(
            lost.trouble().as_deref(),
            Some("1 connections failed (connection 3 (lab-3): reset), 2 SENDs unanswered")
        );
        let unstopped = Run {
            stop_error: Some("chatd did not exit within 30 s of SIGTERM".into()),
            ..balanced()
        };
        assert_eq!(
            unstopped.trouble().as_deref(),
            Some("the daemon did not stop cleanly: chatd did not exit within 30 s of SIGTERM")
        );
        let unacked = Run {
            acked: 9,
            ..balanced()
        };
        assert!(unacked.trouble().is_some());
    }

    #[test]
    fn context_switches_are_split_per_message() {
        assert_eq!(balanced().ctxsw_per_msg(), Some((4.0, 3.0, 1.0)));
        let nothing_sent = Run {
            sent: 0,
            ..balanced()
        };
        assert_eq!(nothing_sent.ctxsw_per_msg(), None);
        let unmeasured = Run {
            ctxsw: None,
            ..balanced()
        };
        assert_eq!(unmeasured.ctxsw_per_msg(), None);
    }
}
