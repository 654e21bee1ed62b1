//! A latency histogram for the metrics: fixed buckets in microseconds, relaxed atomic counts,
//! rendered as a Prometheus histogram in seconds.
//!
//! Observing is a handful of relaxed adds and never blocks or allocates, so the sequencer and
//! the reactors may observe on their hot paths.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Bucket bounds, in microseconds: from the tens of microseconds a wake-up takes to the
/// second a stalled disk can.
pub const BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 250_000, 1_000_000,
];

#[derive(Debug, Default)]
pub struct Histogram {
    /// Counts per bucket of `BUCKETS_US` (not cumulative), plus +Inf last.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, micros: u64) {
        self.sum_us.fetch_add(micros, Relaxed);
        let bucket = BUCKETS_US.partition_point(|&b| b < micros);
        if let Some(c) = self.buckets.get(bucket) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Writes the family `chatd_<name>_seconds`: its HELP and TYPE lines, cumulative buckets,
    /// sum and count.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(
            out,
            "# HELP chatd_{name}_seconds {help}\n# TYPE chatd_{name}_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, c) in self.buckets.iter().enumerate() {
            cumulative += c.load(Relaxed);
            match BUCKETS_US.get(i) {
                Some(&bound) => {
                    let _ = writeln!(
                        out,
                        "chatd_{name}_seconds_bucket{{le=\"{}\"}} {cumulative}",
                        bound as f64 / 1e6
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "chatd_{name}_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
                    );
                }
            }
        }
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "chatd_{name}_seconds_sum {sum}\nchatd_{name}_seconds_count {cumulative}"
        );
    }
}

/// Microseconds of a duration, saturating, for `observe`.
pub fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_on_a_bound_counts_in_that_bucket_and_buckets_accumulate() {
        let h = Histogram::default();
        h.observe(50);
        h.observe(51);
        h.observe(2_000_000);
        let mut out = String::new();
        h.render(&mut out, "x", "help text");
        assert!(
            out.starts_with("# HELP chatd_x_seconds help text\n# TYPE chatd_x_seconds histogram\n")
        );
        assert!(
            out.contains("chatd_x_seconds_bucket{le=\"0.00005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("chatd_x_seconds_bucket{le=\"0.0001\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("chatd_x_seconds_bucket{le=\"1\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("chatd_x_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("chatd_x_seconds_sum 2.000101\n"), "{out}");
        assert!(out.ends_with("chatd_x_seconds_count 3\n"), "{out}");
    }
}
