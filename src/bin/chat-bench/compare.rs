//! One scenario over several transports in one invocation (`--transport plain,ws`): each run
//! that is not plain set against the plain run beside it, in the figures the targets are
//! stated in — bytes per idle connection above plain, and deliveries or set-ups per second
//! (wall clock and per server CPU-second) as a share of plain. Records in, records out; a
//! figure either side lacks is null, never 0.

use crate::record::{Record, Val};

/// For each record whose `transport` is not `tcp`, how it compares with the `tcp` one; none
/// when no plain run is among `runs`.
pub fn against_plain(runs: &[Record]) -> Vec<Record> {
    let Some(plain) = runs.iter().find(|r| r.show("transport") == "tcp") else {
        return Vec::new();
    };
    runs.iter()
        .filter(|r| r.show("transport") != "tcp")
        .map(|r| one(plain, r))
        .collect()
}

fn one(plain: &Record, other: &Record) -> Record {
    let mut c = Record::default();
    c.text("scenario", &other.show("scenario"));
    c.text("target", &other.show("target"));
    c.text(
        "compare",
        &format!("{} against tcp", other.show("transport")),
    );
    let pct = |key: &str| match (other.f(key), plain.f(key)) {
        (Some(a), Some(b)) if b > 0.0 => Some(100.0 * a / b),
        _ => None,
    };
    match other.show("scenario").as_str() {
        "idle" => {
            let above = match (other.f("bytes_per_conn"), plain.f("bytes_per_conn")) {
                (Some(a), Some(b)) => Val::Num(a - b, 0),
                _ => Val::Null,
            };
            c.put("bytes_per_conn_above_tcp", above);
        }
        "connect" => {
            c.num("conns_per_sec_pct", pct("conns_per_sec"), 1);
            c.num(
                "conns_per_server_cpu_sec_pct",
                pct("conns_per_server_cpu_sec"),
                1,
            );
        }
        _ => {
            c.num("delivered_per_sec_pct", pct("delivered_per_sec"), 1);
            c.num(
                "delivered_per_server_cpu_sec_pct",
                pct("delivered_per_server_cpu_sec"),
                1,
            );
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(scenario: &str, transport: &str, figures: &[(&'static str, f64)]) -> Record {
        let mut r = Record::default();
        r.text("scenario", scenario);
        r.text("target", "chatd");
        r.text("transport", transport);
        for &(k, v) in figures {
            r.num(k, Some(v), 0);
        }
        r
    }

    #[test]
    fn websocket_is_set_against_plain_in_the_targets_terms() {
        let idle = [
            run("idle", "tcp", &[("bytes_per_conn", 500.0)]),
            run("idle", "ws", &[("bytes_per_conn", 540.0)]),
        ];
        let c = against_plain(&idle);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].f("bytes_per_conn_above_tcp"), Some(40.0));
        assert_eq!(c[0].show("compare"), "ws against tcp");

        let fanout = [
            run("fanout", "ws", &[("delivered_per_sec", 90.0)]),
            run("fanout", "tcp", &[("delivered_per_sec", 100.0)]),
        ];
        let c = against_plain(&fanout);
        assert_eq!(c[0].f("delivered_per_sec_pct"), Some(90.0));
        assert_eq!(
            c[0].get("delivered_per_server_cpu_sec_pct"),
            Some(&Val::Null),
            "unknown on both sides is null, not 0"
        );
    }

    #[test]
    fn without_a_plain_run_there_is_nothing_to_compare() {
        let runs = [run("idle", "ws", &[("bytes_per_conn", 1.0)])];
        assert!(against_plain(&runs).is_empty());
    }
}
