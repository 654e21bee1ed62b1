//! What the standard set runs, before it runs: its tables, each row's exact `chat-bench`
//! command, how many times each row runs, and the order of the runs (rounds: each round runs
//! every row once, in page order, so the systems alternate within a round and a slow spell of
//! the machine touches all of them rather than one). Pure: it never runs anything.
//!
//! A row's command is what the set runs: the runner parses these very words with the same
//! parser as the command line, so the command a table names is the one that made its figures.

use super::flags::Standard;
use crate::record::Record;
use crate::wire::Kind;

/// Publishes in flight per publisher in the request/response table: what every fanout run of
/// the set used before issue 14, kept as a table of its own because it measures a round trip
/// (publish, answer, next publish) rather than what the server can deliver.
pub const REQUEST_RESPONSE_WINDOW: usize = 16;

/// Connection set-ups in flight in the connect table (chat-bench's default).
const CONNECT_CONCURRENCY: usize = 32;

/// The rooms table's shape (chat-bench's defaults for `rooms`).
const ROOMS: (usize, usize, usize) = (10, 1000, 100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Id {
    Fanout,
    Rooms,
    RequestResponse,
    Paced,
    Idle,
    Connect,
}

/// One row: one system (and, for chatd, one fsync policy) under one load, run `runs` times.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub label: String,
    pub target: Kind,
    /// The subscriber count (a plot's x) for pub/sub rows.
    pub subscribers: Option<usize>,
    /// chatd's `--fsync` in a pub/sub row.
    pub fsync: Option<&'static str>,
    /// The words after `chat-bench`.
    pub args: Vec<String>,
    pub runs: usize,
    /// What the runs recorded, in the order they ran.
    pub recs: Vec<Record>,
    /// Runs that could not be set up or measured, with why.
    pub errors: Vec<String>,
}

impl Row {
    pub fn command(&self) -> String {
        format!("chat-bench {}", self.args.join(" "))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub id: Id,
    pub title: String,
    pub rows: Vec<Row>,
}

/// A run in the schedule: its round (from 1), table and row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub round: usize,
    pub table: usize,
    pub row: usize,
}

/// The tables of the set `s` asks for, rows not yet run.
pub fn plan(s: &Standard) -> Vec<Table> {
    let largest = s.subscriber_counts.iter().copied().max().unwrap_or(1000);
    let mut fanout = Vec::new();
    for &n in &s.subscriber_counts {
        for &kind in &s.targets {
            fanout.push(pubsub(s, kind, "never", n, s.window, None, s.runs));
        }
    }
    let rooms = s.targets.iter().map(|&kind| rooms_row(s, kind)).collect();
    let rr = s.targets.iter().map(|&kind| {
        pubsub(
            s,
            kind,
            "never",
            largest,
            REQUEST_RESPONSE_WINDOW,
            None,
            s.runs,
        )
    });
    let mut paced = Vec::new();
    for p in &s.paced {
        for &kind in &s.targets {
            // chatd twice: with its own default, and without the fsync, so the cost of the
            // group commit shows beside the peers, which keep nothing.
            let policies: &[&'static str] = match kind {
                Kind::Chatd => &["always", "never"],
                _ => &["never"],
            };
            for &f in policies {
                let rate = Some(p.rate);
                let row = pubsub(s, kind, f, p.subscribers, s.window, rate, s.latency_runs);
                paced.push(row);
            }
        }
    }
    let idle = s.targets.iter().map(|&kind| {
        let extra = [
            ("connections", s.idle.to_string()),
            ("procs", s.idle_procs.to_string()),
        ];
        row(s, "idle", kind, &extra, None, None, s.runs)
    });
    let connect = s.targets.iter().map(|&kind| {
        let extra = [
            ("connections", s.connect.to_string()),
            ("concurrency", CONNECT_CONCURRENCY.to_string()),
        ];
        row(s, "connect", kind, &extra, None, None, s.runs)
    });
    let (secs, w) = (s.secs, s.window);
    vec![
        Table {
            id: Id::Fanout,
            title: format!(
                "Fanout at full speed (1 publisher, window {w}, 100-byte messages, {secs} s per run)"
            ),
            rows: fanout,
        },
        Table {
            id: Id::Rooms,
            title: format!(
                "Rooms at full speed ({} publishers, {} subscribers over {} rooms, window {w}, \
                 {secs} s per run)",
                ROOMS.0, ROOMS.1, ROOMS.2
            ),
            rows: rooms,
        },
        Table {
            id: Id::RequestResponse,
            title: format!(
                "Request/response (window {REQUEST_RESPONSE_WINDOW}): fanout 1 → {largest}, \
                 {secs} s per run"
            ),
            rows: rr.collect(),
        },
        Table {
            id: Id::Paced,
            title: format!(
                "Paced latency (1 publisher, window {w}, {secs} s per run, each row run {})",
                super::render::times(s.latency_runs)
            ),
            rows: paced,
        },
        Table {
            id: Id::Idle,
            title: format!(
                "Idle connections ({} held by {} process{})",
                s.idle,
                s.idle_procs,
                if s.idle_procs == 1 { "" } else { "es" }
            ),
            rows: idle.collect(),
        },
        Table {
            id: Id::Connect,
            title: format!(
                "Connection set-up (connect + hello + answer, {} set-ups, {CONNECT_CONCURRENCY} \
                 at once)",
                s.connect
            ),
            rows: connect.collect(),
        },
    ]
}

/// The order of the runs: round 1 runs every row once, in table and row order; round 2
/// again; a row with fewer runs than the round number sits the later rounds out.
pub fn schedule(tables: &[Table]) -> Vec<Slot> {
    let rounds = tables
        .iter()
        .flat_map(|t| t.rows.iter().map(|r| r.runs))
        .max()
        .unwrap_or(0);
    let mut slots = Vec::new();
    for round in 1..=rounds {
        for (ti, t) in tables.iter().enumerate() {
            for (ri, r) in t.rows.iter().enumerate() {
                if r.runs >= round {
                    slots.push(Slot {
                        round,
                        table: ti,
                        row: ri,
                    });
                }
            }
        }
    }
    slots
}

fn pubsub(
    s: &Standard,
    kind: Kind,
    fsync: &'static str,
    subscribers: usize,
    window: usize,
    rate: Option<u64>,
    runs: usize,
) -> Row {
    let mut extra = vec![
        ("subscribers", subscribers.to_string()),
        ("window", window.to_string()),
        ("secs", s.secs.to_string()),
    ];
    if let Some(r) = rate {
        extra.push(("rate", r.to_string()));
    }
    row(
        s,
        "fanout",
        kind,
        &extra,
        Some(subscribers),
        Some(fsync),
        runs,
    )
}

fn rooms_row(s: &Standard, kind: Kind) -> Row {
    let (p, n, k) = ROOMS;
    let extra = [
        ("publishers", p.to_string()),
        ("subscribers", n.to_string()),
        ("rooms", k.to_string()),
        ("window", s.window.to_string()),
        ("secs", s.secs.to_string()),
    ];
    row(s, "rooms", kind, &extra, Some(n), Some("never"), s.runs)
}

/// A row running `scenario` against a spawned `kind` with `extra` flags; `fsync` is passed to
/// chatd only (the peers have no such flag).
fn row(
    s: &Standard,
    scenario: &str,
    kind: Kind,
    extra: &[(&str, String)],
    subscribers: Option<usize>,
    fsync: Option<&'static str>,
    runs: usize,
) -> Row {
    let mut args: Vec<String> = [scenario, "--spawn", "--target", kind.name()]
        .map(String::from)
        .to_vec();
    if let Some(c) = s.server_cpu {
        args.extend(["--server-cpu".into(), c.to_string()]);
    }
    if let Some(c) = s.cpu {
        args.extend(["--cpu".into(), c.to_string()]);
    }
    for (k, v) in extra {
        args.extend([format!("--{k}"), v.clone()]);
    }
    let fsync = fsync.filter(|_| kind == Kind::Chatd);
    let label = match fsync {
        Some(f) => {
            args.extend(["--fsync".into(), f.into()]);
            format!("chatd (fsync {f})")
        }
        None => kind.name().into(),
    };
    Row {
        label,
        target: kind,
        subscribers,
        fsync,
        args,
        runs,
        recs: Vec::new(),
        errors: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Command;
    use crate::live::{Live, Which};

    fn parsed(row: &Row) -> Live {
        match crate::args::parse(row.args.iter().cloned()) {
            Ok(Command::Live(l)) => *l,
            other => panic!("{}: {other:?}", row.command()),
        }
    }

    fn table(tables: &[Table], id: Id) -> &Table {
        tables.iter().find(|t| t.id == id).expect("table")
    }

    #[test]
    fn every_command_parses_to_the_run_its_table_claims() {
        let tables = plan(&Standard::default());
        for t in &tables {
            for r in &t.rows {
                let l = parsed(r);
                assert_eq!(l.server.kind, r.target, "{}", r.command());
                assert_eq!((l.server.server_cpu, l.cpu), (Some(0), Some(1)));
                if let Some(n) = r.subscribers {
                    assert_eq!(l.ps.subscribers, n, "{}", r.command());
                }
                match t.id {
                    Id::Fanout | Id::Rooms | Id::Paced => {
                        assert_eq!((l.ps.window, l.ps.secs), (1000, 5.0), "{}", r.command());
                    }
                    Id::RequestResponse => {
                        assert_eq!(l.ps.window, 16, "{}", r.command());
                        assert_eq!((l.which, l.ps.subscribers), (Which::Fanout, 1000));
                    }
                    Id::Idle => assert_eq!((l.connections, l.procs), (18_000, 2)),
                    Id::Connect => assert_eq!((l.connections, l.concurrency), (5000, 32)),
                }
                let want = r.fsync.unwrap_or("never");
                assert_eq!(l.server.fsync, want, "{}", r.command());
            }
        }
        let rooms = table(&tables, Id::Rooms);
        let l = parsed(&rooms.rows[0]);
        assert_eq!((l.ps.publishers, l.ps.rooms), (10, 100));
    }

    #[test]
    fn paced_rows_have_chatd_with_and_without_fsync_and_latency_runs() {
        let tables = plan(&Standard::default());
        let paced = table(&tables, Id::Paced);
        let labels: Vec<&str> = paced.rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "chatd (fsync always)",
                "chatd (fsync never)",
                "redis",
                "nats",
                "chatd (fsync always)",
                "chatd (fsync never)",
                "redis",
                "nats"
            ]
        );
        assert!(paced.rows.iter().all(|r| r.runs == 5));
        let first = parsed(&paced.rows[0]);
        assert_eq!((first.ps.rate, first.ps.subscribers), (Some(10_000.0), 100));
        assert!(paced.rows[0].command().contains("--fsync always"));
        let redis = &paced.rows[2];
        assert!(!redis.command().contains("--fsync"), "{}", redis.command());
        let full = table(&tables, Id::Fanout);
        assert_eq!(full.rows.len(), 12);
        assert!(full.rows.iter().all(|r| r.runs == 3));
    }

    #[test]
    fn rounds_interleave_the_systems_and_latency_rows_run_longer() {
        let s = Standard {
            subscriber_counts: vec![100],
            ..Standard::default()
        };
        let tables = plan(&s);
        let slots = schedule(&tables);
        let runs: usize = tables
            .iter()
            .flat_map(|t| t.rows.iter().map(|r| r.runs))
            .sum();
        assert_eq!(slots.len(), runs);
        // Round 1 begins with the fanout table's rows: chatd, redis, nats in turn.
        let first: Vec<&str> = slots
            .iter()
            .take(3)
            .map(|s| tables[s.table].rows[s.row].label.as_str())
            .collect();
        assert_eq!(
            first,
            ["chatd (fsync never)", "redis", "nats"],
            "interleaved"
        );
        assert!(slots.windows(2).all(|w| w[0].round <= w[1].round));
        let late: Vec<Id> = slots
            .iter()
            .filter(|s| s.round > 3)
            .map(|s| tables[s.table].id)
            .collect();
        assert!(!late.is_empty() && late.iter().all(|id| *id == Id::Paced));
        assert_eq!(slots.last().map(|s| s.round), Some(5));
    }

    #[test]
    fn unpinned_sets_name_no_cpu() {
        let s = Standard {
            server_cpu: None,
            cpu: None,
            ..Standard::default()
        };
        let tables = plan(&s);
        let cmd = tables[0].rows[0].command();
        assert!(!cmd.contains("cpu"), "{cmd}");
        assert!(cmd.starts_with("chat-bench fanout --spawn --target chatd"));
    }
}
