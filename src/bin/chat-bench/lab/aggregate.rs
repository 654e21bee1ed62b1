//! From the K runs of one (workload, model, N) to its one JSON line: every figure the median
//! over the runs that measured it (with its smallest and largest beside it for the figures a
//! reader compares across models), every counter the sum over the runs, and whether the model
//! survived this N and, if not, why. A single run can read high or low on a machine shared
//! with other work; the median of a few, with their spread shown, says how much to trust a
//! difference between two lines.
//!
//! Pure arithmetic on what the runs measured: a figure no run measured is `null`, never 0.

use super::line::{Field, Line};
use super::run::Run;
use crate::stats::{Percentiles, spread};

/// Which (workload, model, N) a line is about, how many runs were asked for, and the load.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub workload: &'a str,
    pub model: &'a str,
    pub conns: usize,
    pub runs: usize,
    pub mbps: f64,
    pub size: usize,
}

/// An ACK latency figure of a run; a run with no ACK has no latency, not a latency of 0.
fn ack(r: &Run, p: fn(&Percentiles) -> u64) -> Option<f64> {
    (r.ack.count > 0).then(|| p(&r.ack) as f64)
}

/// The line's head: `workload`, `model`, `conns`.
fn head(h: &Head) -> Line {
    let mut l = Line::default();
    l.text("workload", h.workload);
    l.text("model", h.model);
    l.int("conns", h.conns as u64);
    l
}

/// The line for an N not run because the model failed at a smaller one.
pub fn skipped(h: &Head, why: &str) -> Line {
    let mut l = head(h);
    l.text("skipped", why);
    l
}

/// The line for an N with no measured run: refused before it started (`survived` null, the
/// model was not tried) or failed at setup (`survived` false).
pub fn unmeasured(h: &Head, error: &str, tried: bool) -> Line {
    let mut l = head(h);
    l.int("runs", h.runs as u64);
    l.int("runs_good", 0);
    l.int("runs_measured", 0);
    l.text("error", error);
    if tried {
        l.bool("survived", false);
        l.text("why", &format!("setup failed: {error}"));
    } else {
        l.put("survived", Field::Null);
    }
    l
}

/// Whether the model survived this N: no run errored and every run balanced; if not, why
/// (the first reason met).
pub fn survival(runs: &[Run], error: Option<&str>) -> Result<(), String> {
    if let Some(e) = error {
        return Err(format!("setup failed: {e}"));
    }
    match runs.iter().find_map(Run::trouble) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// The line for an N with at least one measured run; `error` is the first run that could not
/// be set up, if one could not (the runs after it were not tried).
pub fn measured(h: &Head, runs: &[Run], error: Option<&str>) -> Line {
    let mut l = head(h);
    let good = runs.iter().filter(|r| r.trouble().is_none()).count();
    l.int("runs", h.runs as u64);
    l.int("runs_good", good as u64);
    l.int("runs_measured", runs.len() as u64);
    if let Some(e) = error {
        l.text("error", e);
    }
    match survival(runs, error) {
        Ok(()) => l.bool("survived", true),
        Err(why) => {
            l.bool("survived", false);
            l.text("why", &why);
        }
    }
    let mid = |f: fn(&Run) -> Option<f64>| spread(runs.iter().map(f)).map(|s| s.median);
    // The median, then `_min` and `_max`.
    let full = |l: &mut Line, key: &str, f: fn(&Run) -> Option<f64>, places: usize| {
        let s = spread(runs.iter().map(f));
        l.num(key, s.map(|s| s.median), places);
        l.num(&format!("{key}_min"), s.map(|s| s.min), places);
        l.num(&format!("{key}_max"), s.map(|s| s.max), places);
    };
    let sum = |f: fn(&Run) -> u64| runs.iter().map(f).sum::<u64>();
    let most = |f: fn(&Run) -> Option<f64>| runs.iter().filter_map(f).reduce(f64::max);
    l.num("mbps", Some(h.mbps), 3);
    l.int("size", h.size as u64);
    l.num("secs", mid(|r| Some(r.secs)), 3);
    l.num("samples", mid(|r| Some(r.samples as f64)), 0);
    full(&mut l, "cpu_mean_pct", |r| r.cpu_mean_pct, 2);
    full(&mut l, "cpu_cv", |r| r.cpu_cv, 3);
    full(&mut l, "paper_style_cpu_pct", |r| r.paper_style_cpu_pct, 2);
    l.num("paper_style_cv", mid(|r| r.paper_style_cv), 3);
    l.num("processes", most(|r| r.processes), 0);
    l.num("threads", most(|r| r.threads), 0);
    full(&mut l, "rss_kib", |r| r.rss_kib, 0);
    let kinds: Vec<&str> = runs.iter().filter_map(|r| r.rss_kind).collect();
    match kinds.as_slice() {
        [] => l.put("rss_kind", Field::Null),
        k if k.iter().all(|k| *k == "pss") => l.text("rss_kind", "pss"),
        _ => l.text("rss_kind", "rss"),
    }
    l.num("ctxsw_voluntary", mid(|r| r.ctxsw.map(|c| c.0 as f64)), 0);
    l.num("ctxsw_involuntary", mid(|r| r.ctxsw.map(|c| c.1 as f64)), 0);
    full(
        &mut l,
        "ctxsw_per_msg",
        |r| r.ctxsw_per_msg().map(|c| c.0),
        3,
    );
    let vol = mid(|r| r.ctxsw_per_msg().map(|c| c.1));
    l.num("ctxsw_voluntary_per_msg", vol, 3);
    let invol = mid(|r| r.ctxsw_per_msg().map(|c| c.2));
    l.num("ctxsw_involuntary_per_msg", invol, 3);
    l.int("sent", sum(|r| r.sent));
    l.int("acked", sum(|r| r.acked));
    l.int("msgs_received", sum(|r| r.msgs_received));
    l.int("msgs_expected", sum(|r| r.msgs_expected));
    l.int("msgs_shortfall", sum(|r| r.msgs_shortfall));
    full(&mut l, "ack_p50_us", |r| ack(r, |p| p.p50_us), 0);
    full(&mut l, "ack_p99_us", |r| ack(r, |p| p.p99_us), 0);
    l.num("ack_max_us", most(|r| ack(r, |p| p.max_us)), 0);
    l.int("unanswered", sum(|r| r.unanswered));
    l.int("errors", sum(|r| r.errors));
    l.int("failures", sum(|r| r.failures));
    l.num("generator_cpu_pct", mid(|r| Some(r.generator_cpu_pct)), 1);
    l.num(
        "generator_cpu_pct_max",
        most(|r| Some(r.generator_cpu_pct)),
        1,
    );
    l.num(
        "generator_max_lag_ms",
        most(|r| Some(r.generator_max_lag_ms)),
        1,
    );
    let bound = runs
        .iter()
        .any(|r| r.generator_cpu_pct >= super::GENERATOR_SATURATED_PCT);
    l.text("generator_bound", if bound { "yes" } else { "no" });
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cpu: f64, p99: u64, sent: u64) -> Run {
        Run {
            secs: 2.0,
            samples: 8,
            cpu_mean_pct: Some(cpu),
            cpu_cv: Some(cpu / 100.0),
            paper_style_cpu_pct: Some(cpu),
            rss_kib: Some(1000.0 + cpu),
            rss_kind: Some("pss"),
            ctxsw: Some((3 * sent, sent)),
            sent,
            acked: sent,
            msgs_received: sent,
            msgs_expected: sent,
            ack: Percentiles {
                count: sent,
                p50_us: p99 / 2,
                p99_us: p99,
                max_us: p99 * 2,
                ..Percentiles::default()
            },
            generator_cpu_pct: 5.0,
            ..Run::default()
        }
    }

    fn head() -> Head<'static> {
        Head {
            workload: "shared",
            model: "reactor",
            conns: 4,
            runs: 3,
            mbps: 1.0,
            size: 1000,
        }
    }

    fn f(l: &Line, key: &str) -> Option<f64> {
        match l.get(key) {
            Some(Field::Num(x, _)) => Some(*x),
            Some(Field::Int(n)) => Some(*n as f64),
            _ => None,
        }
    }

    #[test]
    fn figures_are_medians_with_min_and_max_and_counters_are_sums() {
        let runs = [
            run(30.0, 900, 100),
            run(10.0, 5000, 120),
            run(20.0, 700, 110),
        ];
        let l = measured(&head(), &runs, None);
        assert_eq!(f(&l, "cpu_mean_pct"), Some(20.0));
        assert_eq!(f(&l, "cpu_mean_pct_min"), Some(10.0));
        assert_eq!(f(&l, "cpu_mean_pct_max"), Some(30.0));
        assert_eq!(f(&l, "rss_kib"), Some(1020.0));
        assert_eq!(f(&l, "ack_p99_us"), Some(900.0));
        assert_eq!(f(&l, "ack_p99_us_max"), Some(5000.0));
        assert_eq!(f(&l, "ack_max_us"), Some(10_000.0), "the worst of all runs");
        assert_eq!(f(&l, "ctxsw_per_msg"), Some(4.0));
        assert_eq!(f(&l, "ctxsw_voluntary_per_msg"), Some(3.0));
        assert_eq!(f(&l, "ctxsw_involuntary_per_msg"), Some(1.0));
        assert_eq!(f(&l, "sent"), Some(330.0));
        assert_eq!(f(&l, "acked"), Some(330.0));
        assert_eq!((f(&l, "runs"), f(&l, "runs_good")), (Some(3.0), Some(3.0)));
        assert_eq!(l.get("survived"), Some(&Field::Bool(true)));
        assert_eq!((l.get("why"), l.get("error")), (None, None));
        assert_eq!(l.get("rss_kind"), Some(&Field::Text("pss".into())));
        assert_eq!(l.get("workload"), Some(&Field::Text("shared".into())));
    }

    #[test]
    fn one_unbalanced_run_fails_the_n_and_a_setup_error_is_carried() {
        let short = Run {
            msgs_shortfall: 2,
            ..run(10.0, 100, 50)
        };
        let runs = [run(10.0, 100, 50), short];
        let l = measured(&head(), &runs, None);
        assert_eq!(l.get("survived"), Some(&Field::Bool(false)));
        assert_eq!(
            l.get("why"),
            Some(&Field::Text("2 of 50 deliveries missing".into()))
        );
        assert_eq!(f(&l, "runs_good"), Some(1.0));
        assert_eq!(f(&l, "msgs_shortfall"), Some(2.0));
        let l = measured(&head(), &runs[..1], Some("connection 3: login: refused"));
        assert_eq!(l.get("survived"), Some(&Field::Bool(false)));
        assert_eq!(
            l.get("error"),
            Some(&Field::Text("connection 3: login: refused".into()))
        );
        assert_eq!(
            (f(&l, "runs_good"), f(&l, "runs_measured")),
            (Some(1.0), Some(1.0))
        );
    }

    #[test]
    fn unmeasured_figures_are_null_and_other_lines_say_why() {
        let blind = Run {
            cpu_mean_pct: None,
            cpu_cv: None,
            ctxsw: None,
            ack: Percentiles::default(),
            ..run(1.0, 1, 1)
        };
        let l = measured(&head(), &[blind], None);
        for key in [
            "cpu_mean_pct",
            "cpu_mean_pct_min",
            "ctxsw_per_msg",
            "ack_p50_us",
        ] {
            assert_eq!(l.get(key), Some(&Field::Null), "{key}");
        }
        let s = skipped(&head(), "failed at N=2");
        assert_eq!(
            s.json(),
            "{\"workload\":\"shared\",\"model\":\"reactor\",\"conns\":4,\"skipped\":\"failed at N=2\"}"
        );
        let refused = unmeasured(&head(), "fd limit", false);
        assert_eq!(refused.get("survived"), Some(&Field::Null));
        let failed = unmeasured(&head(), "bad driver", true);
        assert_eq!(failed.get("survived"), Some(&Field::Bool(false)));
        assert_eq!(
            failed.get("why"),
            Some(&Field::Text("setup failed: bad driver".into()))
        );
    }
}
