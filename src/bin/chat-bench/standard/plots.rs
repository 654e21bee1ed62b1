//! The standard set's two plots, drawn from the same rows as its tables: full-speed fanout
//! deliveries per second, and paced p99 latency, each against the subscriber count, one line
//! per system with the median of its runs and a min–max error bar. Pure: SVG text out.

use super::aggregate::spread_of;
use super::plan::{Id, Row, Table};
use crate::plot::{Series, chart};
use crate::wire::Kind;

/// A system keeps its colour in both plots.
fn colour(kind: Kind) -> usize {
    match kind {
        Kind::Chatd => 0,
        Kind::Redis => 1,
        Kind::Nats => 2,
    }
}

/// One series per row label, in the order the labels first appear: `(x, median)` points and
/// `(x, min, max)` ranges of `key` times `scale`.
fn series(rows: &[&Row], key: &str, scale: f64) -> Vec<Series> {
    let mut labels: Vec<&Row> = Vec::new();
    for r in rows {
        if !labels.iter().any(|l| l.label == r.label) {
            labels.push(r);
        }
    }
    labels
        .iter()
        .map(|first| {
            let mut points = Vec::new();
            let mut ranges = Vec::new();
            for r in rows.iter().filter(|r| r.label == first.label) {
                let (Some(x), Some(s)) = (r.subscribers, spread_of(&r.recs, key)) else {
                    continue;
                };
                let x = x as f64;
                points.push((x, s.median * scale));
                ranges.push((x, s.min * scale, s.max * scale));
            }
            let s = Series::new(first.label.clone(), points)
                .ranges(ranges)
                .colour(colour(first.target));
            // chatd without the fsync beside chatd with it: the same colour, dashed.
            let beside = rows.iter().any(|r| r.fsync == Some("always"));
            if first.target == Kind::Chatd && first.fsync == Some("never") && beside {
                return s.dashed();
            }
            s
        })
        .collect()
}

fn rows_of(tables: &[Table], id: Id) -> Vec<&Row> {
    tables
        .iter()
        .filter(|t| t.id == id)
        .flat_map(|t| t.rows.iter())
        .collect()
}

/// `(file name, SVG)` for each plot.
///
/// # Errors
/// What drawing reports.
pub fn draw(tables: &[Table]) -> Result<Vec<(&'static str, String)>, String> {
    let full = rows_of(tables, Id::Fanout);
    let throughput = chart(
        "fanout at full speed: deliveries/s",
        "subscribers (one room, one publisher)",
        "delivered msgs/s (median, min–max)",
        &series(&full, "delivered_per_sec", 1.0),
    )?;
    let paced = rows_of(tables, Id::Paced);
    let mut loads: Vec<String> = paced
        .iter()
        .filter_map(|r| {
            let rate = spread_of(&r.recs, "rate")?.median;
            Some(format!("{rate:.0}/s × {}", r.subscribers?))
        })
        .collect();
    loads.dedup();
    let p99 = chart(
        "paced fanout: p99 end-to-end latency",
        &format!("subscribers (paced: {})", loads.join(", ")),
        "p99 latency ms (median, min–max)",
        &series(&paced, "p99_us", 1e-3),
    )?;
    Ok(vec![
        ("fanout-throughput.svg", throughput),
        ("fanout-p99.svg", p99),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standard::aggregate::tests::rec;
    use crate::standard::flags::Standard;
    use crate::standard::plan::plan;

    #[test]
    fn each_system_is_a_line_of_medians_with_min_max_bars() {
        let mut tables = plan(&Standard::default());
        for t in &mut tables {
            for r in &mut t.rows {
                let mut a = rec(100.0, 2000, "no");
                let mut b = rec(300.0, 4000, "no");
                let mut c = rec(200.0, 3000, "no");
                for x in [&mut a, &mut b, &mut c] {
                    x.num("rate", Some(1000.0), 0);
                }
                r.recs = vec![a, b, c];
            }
        }
        let full = rows_of(&tables, Id::Fanout);
        let s = series(&full, "delivered_per_sec", 1.0);
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["chatd (fsync never)", "redis", "nats"]);
        assert_eq!(
            s[0].points,
            [(1.0, 200.0), (10.0, 200.0), (100.0, 200.0), (1000.0, 200.0)]
        );
        assert_eq!(s[0].ranges[0], (1.0, 100.0, 300.0));
        assert!(!s[0].dashed);
        let paced = rows_of(&tables, Id::Paced);
        let s = series(&paced, "p99_us", 1e-3);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].points, [(100.0, 3.0), (1000.0, 3.0)]);
        assert!(
            s[1].dashed && s[1].colour == s[0].colour,
            "chatd never dashed beside always"
        );
        let svgs = draw(&tables).expect("drawn");
        assert_eq!(svgs.len(), 2);
        assert!(svgs.iter().all(|(_, svg)| svg.starts_with("<svg")));
    }
}
