//! From the K runs of one row of the standard set to the figures its table shows: each figure
//! the median over the runs that measured it with the smallest and largest beside it, each
//! counter (lost, duplicates, failed connections) the sum over the runs, and whether the
//! generator rather than the server set the pace in any run.
//!
//! Pure arithmetic on what the runs recorded: a figure no run measured is shown as `-`,
//! never as 0.

use crate::record::Record;
use crate::stats::{Spread, spread};

/// The median, min and max of `key` over the runs that measured it.
pub fn spread_of(recs: &[Record], key: &str) -> Option<Spread> {
    spread(recs.iter().map(|r| r.f(key)))
}

/// The sum of counter `key` over the runs that counted it; `None` when none did.
pub fn sum_of(recs: &[Record], key: &str) -> Option<u64> {
    let counted: Vec<f64> = recs.iter().filter_map(|r| r.f(key)).collect();
    (!counted.is_empty()).then(|| counted.iter().map(|n| *n as u64).sum())
}

/// `yes (J of K)` when J of the K runs that could tell were generator-bound: one such run
/// is enough to flag the row, since its rate is then a lower bound of the server's. `no`
/// when none was, `-` when no run could tell.
pub fn generator_bound(recs: &[Record]) -> String {
    let told: Vec<String> = recs
        .iter()
        .map(|r| r.show("generator_bound"))
        .filter(|v| v == "yes" || v == "no")
        .collect();
    let yes = told.iter().filter(|v| *v == "yes").count();
    match (yes, told.len()) {
        (_, 0) => "-".into(),
        (0, _) => "no".into(),
        (j, k) => format!("yes ({j} of {k})"),
    }
}

/// A spread as a table cell: `12.3 (11.9–12.8)`, the single figure when every run agreed
/// (or one ran), `-` when none measured it.
pub fn cell(s: Option<Spread>, places: usize) -> String {
    match s {
        None => "-".into(),
        Some(s) if s.min == s.max => format!("{:.places$}", s.median),
        Some(s) => format!(
            "{:.places$} ({:.places$}–{:.places$})",
            s.median, s.min, s.max
        ),
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A record of a pub/sub run with the figures the tests look at.
    pub fn rec(delivered: f64, p99: u64, bound: &str) -> Record {
        let mut r = Record::default();
        r.text("target", "chatd");
        r.num("delivered_per_sec", Some(delivered), 0);
        r.int("p99_us", p99);
        r.int("lost", 1);
        r.num("server_cpu_pct", None, 0);
        r.text("generator_bound", bound);
        r
    }

    #[test]
    fn an_odd_number_of_runs_gives_the_middle_one_and_the_extremes() {
        let runs = [
            rec(300.0, 9, "no"),
            rec(100.0, 5, "no"),
            rec(200.0, 7, "no"),
        ];
        let s = spread_of(&runs, "delivered_per_sec").expect("measured");
        assert_eq!((s.median, s.min, s.max), (200.0, 100.0, 300.0));
        assert_eq!(cell(Some(s), 0), "200 (100–300)");
        let p99 = spread_of(&runs, "p99_us").expect("measured");
        assert_eq!((p99.median, p99.min, p99.max), (7.0, 5.0, 9.0));
    }

    #[test]
    fn an_even_number_of_runs_gives_the_mean_of_the_middle_two() {
        let runs = [
            rec(400.0, 1, "no"),
            rec(100.0, 1, "no"),
            rec(200.0, 1, "no"),
            rec(300.0, 1, "no"),
        ];
        let s = spread_of(&runs, "delivered_per_sec").expect("measured");
        assert_eq!((s.median, s.min, s.max), (250.0, 100.0, 400.0));
        assert_eq!(cell(spread_of(&runs, "p99_us"), 0), "1", "every run agreed");
    }

    #[test]
    fn what_no_run_measured_is_a_dash_and_counters_are_summed() {
        let runs = [rec(1.0, 1, "no"), rec(2.0, 1, "no")];
        assert_eq!(spread_of(&runs, "server_cpu_pct"), None);
        assert_eq!(cell(spread_of(&runs, "server_cpu_pct"), 0), "-");
        assert_eq!(sum_of(&runs, "lost"), Some(2));
        assert_eq!(sum_of(&runs, "duplicates"), None);
        assert_eq!(spread_of(&[], "p99_us"), None);
    }

    #[test]
    fn one_generator_bound_run_flags_the_row() {
        let clean = [rec(1.0, 1, "no"), rec(1.0, 1, "no"), rec(1.0, 1, "no")];
        assert_eq!(generator_bound(&clean), "no");
        let one = [rec(1.0, 1, "no"), rec(1.0, 1, "yes"), rec(1.0, 1, "no")];
        assert_eq!(generator_bound(&one), "yes (1 of 3)");
        let blind = [rec(1.0, 1, "-"), rec(1.0, 1, "yes")];
        assert_eq!(generator_bound(&blind), "yes (1 of 1)");
        assert_eq!(generator_bound(&[rec(1.0, 1, "-")]), "-");
        assert_eq!(generator_bound(&[]), "-");
    }
}
