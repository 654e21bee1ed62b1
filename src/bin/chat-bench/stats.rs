//! What a run measured: latency percentiles (HdrHistogram, in microseconds) and errors counted
//! by code. Pure bookkeeping: no clocks are read here, callers pass durations in.

use std::collections::BTreeMap;
use std::time::Duration;

use chatd::protocol::ErrorCode;
use hdrhistogram::Histogram;

/// The longest latency kept exactly; anything slower is recorded as this (a minute is far past
/// any deadline the daemon has, so such a value is a failure either way).
const LATENCY_CEILING_US: u64 = 60_000_000;

/// A latency distribution in microseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

/// The figures a report shows of a `Latency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn new() -> Latency {
        // Three significant figures: 0.1% error, about 200 KiB per histogram.
        let hist = Histogram::new_with_bounds(1, LATENCY_CEILING_US, 3)
            .expect("constant bounds are valid");
        Latency { hist }
    }

    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.record_us(us);
    }

    pub fn record_us(&mut self, us: u64) {
        self.hist.saturating_record(us.max(1));
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail; saturate rather than panic anyway.
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                self.hist
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    pub fn percentiles(&self) -> Percentiles {
        if self.hist.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: self.hist.len(),
            p50_us: self.hist.value_at_quantile(0.50),
            p90_us: self.hist.value_at_quantile(0.90),
            p99_us: self.hist.value_at_quantile(0.99),
            p999_us: self.hist.value_at_quantile(0.999),
            max_us: self.hist.max(),
        }
    }
}

impl Default for Latency {
    fn default() -> Latency {
        Latency::new()
    }
}

/// ERROR frames received, by code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    by_code: BTreeMap<u16, u64>,
}

impl ErrorCounts {
    pub fn add(&mut self, code: u16) {
        *self.by_code.entry(code).or_default() += 1;
    }

    pub fn merge(&mut self, other: &ErrorCounts) {
        for (code, n) in &other.by_code {
            *self.by_code.entry(*code).or_default() += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.by_code.values().sum()
    }

    /// `(name, count)` in code order; a code this build does not know shows as `CODE_n`.
    pub fn named(&self) -> Vec<(String, u64)> {
        self.by_code
            .iter()
            .map(|(code, n)| {
                let name = ErrorCode::from_u16(*code)
                    .map_or_else(|| format!("CODE_{code}"), |c| c.name().to_string());
                (name, *n)
            })
            .collect()
    }
}

/// The median of some figures (the mean of the middle two for an even count); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => v.get(n / 2).copied(),
        _ => Some((v.get(n / 2 - 1)? + v.get(n / 2)?) / 2.0),
    }
}

/// The median, smallest and largest of some figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// The spread of the figures that were measured; `None` when none was.
pub fn spread(values: impl IntoIterator<Item = Option<f64>>) -> Option<Spread> {
    let v: Vec<f64> = values
        .into_iter()
        .flatten()
        .filter(|x| x.is_finite())
        .collect();
    Some(Spread {
        median: median(&v)?,
        min: v.iter().copied().reduce(f64::min)?,
        max: v.iter().copied().reduce(f64::max)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_a_thousand_are_exact_enough() {
        let mut l = Latency::new();
        for us in 1..=1000 {
            l.record_us(us);
        }
        let p = l.percentiles();
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50_us, 500);
        assert_eq!(p.p90_us, 900);
        assert_eq!(p.p99_us, 990);
        assert_eq!(p.p999_us, 999);
        assert_eq!(p.max_us, 1000);
    }

    #[test]
    fn p99_9_sees_fifteen_slow_messages_in_ten_thousand_and_p99_does_not() {
        let mut l = Latency::new();
        for _ in 0..9985 {
            l.record_us(50);
        }
        for _ in 0..15 {
            l.record_us(70_000);
        }
        let p = l.percentiles();
        assert_eq!((p.p50_us, p.p99_us), (50, 50));
        assert!(p.p999_us.abs_diff(70_000) <= 70, "p99.9 {}", p.p999_us);
        assert_eq!(p.count, 10_000);
    }

    #[test]
    fn a_single_outlier_moves_max_but_not_p99() {
        let mut l = Latency::new();
        for _ in 0..999 {
            l.record(Duration::from_micros(100));
        }
        l.record(Duration::from_secs(2));
        let p = l.percentiles();
        assert_eq!((p.p50_us, p.p90_us, p.p99_us), (100, 100, 100));
        // Three significant figures: within 0.1% of 2 s.
        assert!(p.max_us.abs_diff(2_000_000) <= 2_000, "max {}", p.max_us);
    }

    #[test]
    fn merged_histograms_count_both_sides() {
        let (mut a, mut b) = (Latency::new(), Latency::new());
        for us in 1..=50 {
            a.record_us(us);
        }
        for us in 51..=100 {
            b.record_us(us);
        }
        a.merge(&b);
        let p = a.percentiles();
        assert_eq!((p.count, p.p50_us, p.max_us), (100, 50, 100));
    }

    #[test]
    fn latencies_past_the_ceiling_saturate() {
        let mut l = Latency::new();
        l.record(Duration::from_secs(3600));
        assert!(l.percentiles().max_us >= LATENCY_CEILING_US * 999 / 1000);
        assert_eq!(Latency::new().percentiles(), Percentiles::default());
    }

    #[test]
    fn errors_are_counted_by_name() {
        let mut e = ErrorCounts::default();
        e.add(ErrorCode::Storage.as_u16());
        e.add(ErrorCode::Storage.as_u16());
        let mut other = ErrorCounts::default();
        other.add(9);
        other.add(999);
        e.merge(&other);
        assert_eq!(e.total(), 4);
        assert_eq!(
            e.named(),
            [
                ("RATE_LIMITED".to_string(), 1),
                ("STORAGE".to_string(), 2),
                ("CODE_999".to_string(), 1)
            ]
        );
    }

    #[test]
    fn median_takes_the_middle() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn spread_is_the_median_and_the_extremes_of_what_was_measured() {
        let s = spread([Some(3.0), None, Some(1.0), Some(10.0)]).expect("three figures");
        assert_eq!(
            s,
            Spread {
                median: 3.0,
                min: 1.0,
                max: 10.0
            }
        );
        let even = spread([Some(4.0), Some(2.0)]).expect("two figures");
        assert_eq!(even.median, 3.0);
        assert_eq!(spread([None, Some(f64::NAN)]), None);
    }
}
