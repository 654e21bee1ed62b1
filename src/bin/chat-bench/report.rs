//! Turning a run into output: one JSON line per run (for machines and for the docs' history)
//! and a fixed-width table (for people). Figures the run could not know, such as fsyncs when
//! the daemon was not ours, are `null` in JSON and `-` in the table.

use std::fmt::Write as _;

use crate::daemon::Stopped;
use crate::scenario::Outcome;
use crate::stats::{ErrorCounts, median};

/// One run, as reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub scenario: &'static str,
    /// The protocol version the senders spoke (2: with a client id, so every SEND is
    /// checked for a duplicate).
    pub protocol: u8,
    pub fsync: Option<String>,
    pub senders: usize,
    pub window: usize,
    pub size: usize,
    /// Per sender.
    pub messages: u64,
    pub acked: u64,
    /// MSG frames the senders received (the room's fanout back to them).
    pub msgs_received: u64,
    pub secs: f64,
    pub msgs_per_sec: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub msgs_per_fsync: Option<f64>,
    pub records_per_batch: Option<f64>,
    pub server_cpu_secs: Option<f64>,
    pub server_peak_rss_kib: Option<u64>,
    pub errors: ErrorCounts,
    pub violations: usize,
    pub failures: usize,
}

/// The run's shape, before it ran.
pub struct Shape<'a> {
    pub scenario: &'static str,
    pub protocol: u8,
    pub fsync: Option<&'a str>,
    pub senders: usize,
    pub window: usize,
    pub size: usize,
    pub messages: u64,
}

impl Run {
    pub fn new(shape: &Shape<'_>, o: &Outcome, daemon: Option<&Stopped>) -> Run {
        let p = o.latency.percentiles();
        let log = daemon.and_then(|d| d.log);
        Run {
            scenario: shape.scenario,
            protocol: shape.protocol,
            fsync: shape.fsync.map(str::to_string),
            senders: shape.senders,
            window: shape.window,
            size: shape.size,
            messages: shape.messages,
            acked: o.acked,
            msgs_received: o.msgs_received,
            secs: o.secs,
            msgs_per_sec: o.msgs_per_sec(),
            p50_us: p.p50_us,
            p90_us: p.p90_us,
            p99_us: p.p99_us,
            max_us: p.max_us,
            msgs_per_fsync: log.and_then(|l| ratio(l.records, l.fsyncs)),
            records_per_batch: log.and_then(|l| ratio(l.records, l.batches)),
            server_cpu_secs: daemon.and_then(|d| d.usage.cpu_secs),
            server_peak_rss_kib: daemon.and_then(|d| d.usage.peak_rss_kib),
            errors: o.errors.clone(),
            violations: o.violations.len(),
            failures: o.failures.len(),
        }
    }

    /// The field-wise median of runs of the same shape (errors, violations and failures are
    /// summed instead: one is too many). `None` for no runs.
    pub fn median_of(runs: &[Run]) -> Option<Run> {
        let first = runs.first()?;
        let f = |get: fn(&Run) -> f64| med(runs, get);
        let u = |get: fn(&Run) -> u64| med(runs, |r| get(r) as f64).map_or(0, |x| x.round() as u64);
        let opt =
            |get: fn(&Run) -> Option<f64>| median(&runs.iter().filter_map(get).collect::<Vec<_>>());
        let mut errors = ErrorCounts::default();
        for r in runs {
            errors.merge(&r.errors);
        }
        Some(Run {
            acked: u(|r| r.acked),
            msgs_received: u(|r| r.msgs_received),
            secs: f(|r| r.secs).unwrap_or(0.0),
            msgs_per_sec: f(|r| r.msgs_per_sec).unwrap_or(0.0),
            p50_us: u(|r| r.p50_us),
            p90_us: u(|r| r.p90_us),
            p99_us: u(|r| r.p99_us),
            max_us: u(|r| r.max_us),
            msgs_per_fsync: opt(|r| r.msgs_per_fsync),
            records_per_batch: opt(|r| r.records_per_batch),
            server_cpu_secs: opt(|r| r.server_cpu_secs),
            server_peak_rss_kib: opt(|r| r.server_peak_rss_kib.map(|k| k as f64))
                .map(|k| k.round() as u64),
            errors,
            violations: runs.iter().map(|r| r.violations).sum(),
            failures: runs.iter().map(|r| r.failures).sum(),
            ..first.clone()
        })
    }

    /// One line of JSON with the fields in a fixed order.
    pub fn json(&self) -> String {
        let mut errors = String::from("{");
        for (i, (name, n)) in self.errors.named().iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(errors, "{sep}\"{}\":{n}", escape(name));
        }
        errors.push('}');
        let fsync = self
            .fsync
            .as_deref()
            .map_or_else(|| "null".to_string(), |f| format!("\"{}\"", escape(f)));
        format!(
            "{{\"scenario\":\"{}\",\"protocol\":{},\"fsync\":{fsync},\"senders\":{},\"window\":{},\"size\":{},\
             \"messages\":{},\"acked\":{},\"msgs_received\":{},\"secs\":{:.3},\"msgs_per_sec\":{:.1},\"p50_us\":{},\
             \"p90_us\":{},\"p99_us\":{},\"max_us\":{},\"msgs_per_fsync\":{},\
             \"records_per_batch\":{},\"server_cpu_secs\":{},\"server_peak_rss_kib\":{},\
             \"errors\":{errors},\"violations\":{},\"failures\":{}}}",
            escape(self.scenario),
            self.protocol,
            self.senders,
            self.window,
            self.size,
            self.messages,
            self.acked,
            self.msgs_received,
            self.secs,
            self.msgs_per_sec,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.max_us,
            num(self.msgs_per_fsync, 1),
            num(self.records_per_batch, 1),
            num(self.server_cpu_secs, 2),
            self.server_peak_rss_kib
                .map_or_else(|| "null".into(), |k| k.to_string()),
            self.violations,
            self.failures,
        )
    }
}

fn med(runs: &[Run], get: impl Fn(&Run) -> f64) -> Option<f64> {
    median(&runs.iter().map(get).collect::<Vec<_>>())
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn num(v: Option<f64>, places: usize) -> String {
    v.map_or_else(|| "null".into(), |x| format!("{x:.places$}"))
}

/// `s` as the inside of a JSON string: quotes, backslashes and control characters escaped.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// A table with one row per run, for people.
pub fn table(runs: &[Run]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:>5} {:>7} {:>6} {:>8} {:>6} {:>10} {:>8} {:>8} {:>8} {:>8} {:>10} {:>9} {:>7} {:>8} {:>6}",
        "fsync",
        "proto",
        "senders",
        "window",
        "acked",
        "secs",
        "msgs/s",
        "p50 us",
        "p90 us",
        "p99 us",
        "max us",
        "msgs/fsync",
        "rec/batch",
        "cpu s",
        "rss KiB",
        "errors"
    );
    for r in runs {
        let _ = writeln!(
            out,
            "{:<8} {:>5} {:>7} {:>6} {:>8} {:>6.2} {:>10.0} {:>8} {:>8} {:>8} {:>8} {:>10} {:>9} {:>7} {:>8} {:>6}",
            r.fsync.as_deref().unwrap_or("-"),
            r.protocol,
            r.senders,
            r.window,
            r.acked,
            r.secs,
            r.msgs_per_sec,
            r.p50_us,
            r.p90_us,
            r.p99_us,
            r.max_us,
            dash(r.msgs_per_fsync, 1),
            dash(r.records_per_batch, 1),
            dash(r.server_cpu_secs, 2),
            r.server_peak_rss_kib
                .map_or_else(|| "-".into(), |k| k.to_string()),
            r.errors.total(),
        );
    }
    out
}

fn dash(v: Option<f64>, places: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.places$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(msgs_per_sec: f64, fsync: Option<f64>, max_us: u64) -> Run {
        Run {
            scenario: "durable",
            protocol: 1,
            fsync: Some("always".into()),
            senders: 16,
            window: 1,
            size: 200,
            messages: 400,
            acked: 6400,
            msgs_received: 6400,
            secs: 6400.0 / msgs_per_sec,
            msgs_per_sec,
            p50_us: 100,
            p90_us: 200,
            p99_us: 300,
            max_us,
            msgs_per_fsync: fsync,
            records_per_batch: fsync,
            server_cpu_secs: Some(1.5),
            server_peak_rss_kib: Some(4096),
            errors: ErrorCounts::default(),
            violations: 0,
            failures: 0,
        }
    }

    #[test]
    fn json_has_every_field_and_nulls_for_the_unknown() {
        let mut r = run(1000.0, None, 900);
        r.errors.add(14);
        let j = r.json();
        for field in [
            "\"scenario\":\"durable\"",
            "\"fsync\":\"always\"",
            "\"msgs_per_sec\":1000.0",
            "\"msgs_per_fsync\":null",
            "\"server_peak_rss_kib\":4096",
            "\"errors\":{\"STORAGE\":1}",
        ] {
            assert!(j.contains(field), "{field} missing from {j}");
        }
        assert!(j.starts_with('{') && j.ends_with('}') && !j.contains('\n'));
    }

    #[test]
    fn the_median_run_takes_each_field_s_middle_value() {
        let runs = [
            run(100.0, Some(10.0), 5),
            run(300.0, None, 1),
            run(200.0, Some(30.0), 9),
        ];
        let m = Run::median_of(&runs).expect("three runs");
        assert_eq!(m.msgs_per_sec, 200.0);
        assert_eq!(m.max_us, 5);
        assert_eq!(
            m.msgs_per_fsync,
            Some(20.0),
            "median of the runs that knew it"
        );
        assert!(Run::median_of(&[]).is_none());
    }

    #[test]
    fn the_table_has_a_row_per_run() {
        let t = table(&[run(100.0, Some(2.0), 5), run(100.0, None, 5)]);
        assert_eq!(t.lines().count(), 3);
        assert!(t.lines().nth(2).is_some_and(|l| l.contains(" - ")));
    }
}
