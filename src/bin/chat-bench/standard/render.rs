//! The standard set's results as Markdown: a header saying how the set ran, then a table per
//! `plan::Table` with its figures (medians with min–max), its notes and the exact commands
//! that made them; and the splice of that section into docs/benchmarks.md between the
//! `standard-set` markers, keeping the rest of the page. Pure text: the caller writes files.

use std::fmt::Write as _;

use super::aggregate::{cell, generator_bound, spread_of, sum_of};
use super::flags::Standard;
use super::plan::{Id, Row, Table};
use crate::wire::Kind;

pub const BEGIN: &str = "<!-- standard-set:begin (written by `chat-bench standard`) -->";
pub const END: &str = "<!-- standard-set:end -->";

/// A column of a table.
#[derive(Debug, Clone, Copy)]
enum Col {
    /// The row's system (and chatd's fsync policy).
    Label,
    /// Runs measured, and of how many.
    Runs,
    /// Heading, record key, decimal places: median (min–max).
    Fig(&'static str, &'static str, usize),
    /// Heading and counters, each summed over the runs, joined by `/`.
    Sums(&'static str, &'static [&'static str]),
    /// Generator-bound in any run.
    Bound,
}

const TROUBLES: Col = Col::Sums(
    "lost / dup / reord / failed",
    &["lost", "duplicates", "reordered", "failures"],
);

const PUBSUB: &[Col] = &[
    Col::Label,
    Col::Fig("subscribers", "subscribers", 0),
    Col::Runs,
    Col::Fig("delivered/s", "delivered_per_sec", 0),
    Col::Fig("published/s", "published_per_sec", 0),
    Col::Fig(
        "delivered per server CPU-s",
        "delivered_per_server_cpu_sec",
        0,
    ),
    Col::Fig("p50 µs", "p50_us", 0),
    Col::Fig("p99 µs", "p99_us", 0),
    Col::Fig("p99.9 µs", "p999_us", 0),
    Col::Fig("server CPU %", "server_cpu_pct", 0),
    Col::Fig("bench CPU %", "bench_cpu_pct", 0),
    Col::Bound,
    TROUBLES,
    Col::Fig("server peak RSS KiB", "server_peak_rss_kib", 0),
];

const PACED: &[Col] = &[
    Col::Label,
    Col::Fig("msgs/s", "rate", 0),
    Col::Fig("subscribers", "subscribers", 0),
    Col::Runs,
    Col::Fig("delivered/s", "delivered_per_sec", 0),
    Col::Fig("p50 µs", "p50_us", 0),
    Col::Fig("p99 µs", "p99_us", 0),
    Col::Fig("p99.9 µs", "p999_us", 0),
    Col::Fig("max µs", "max_us", 0),
    Col::Fig("server CPU %", "server_cpu_pct", 0),
    Col::Fig("bench CPU %", "bench_cpu_pct", 0),
    Col::Bound,
    TROUBLES,
];

const IDLE: &[Col] = &[
    Col::Label,
    Col::Runs,
    Col::Fig("held", "held", 0),
    Col::Fig("set-up s", "setup_secs", 2),
    Col::Fig("RSS before KiB", "rss_before_kib", 0),
    Col::Fig("RSS after KiB", "rss_after_kib", 0),
    Col::Fig("bytes per connection", "bytes_per_conn", 0),
    Col::Sums("failed", &["failed"]),
];

const CONNECT: &[Col] = &[
    Col::Label,
    Col::Runs,
    Col::Fig("set-ups/s", "conns_per_sec", 0),
    Col::Fig("set-ups per server CPU-s", "conns_per_server_cpu_sec", 0),
    Col::Fig("p50 µs", "p50_us", 0),
    Col::Fig("p99 µs", "p99_us", 0),
    Col::Fig("server CPU %", "server_cpu_pct", 0),
    Col::Fig("bench CPU %", "bench_cpu_pct", 0),
    Col::Bound,
    Col::Sums("failed", &["failed"]),
];

fn columns(id: Id) -> &'static [Col] {
    match id {
        Id::Fanout | Id::Rooms | Id::RequestResponse => PUBSUB,
        Id::Paced => PACED,
        Id::Idle => IDLE,
        Id::Connect => CONNECT,
    }
}

/// What a reader needs to know to read the table, beyond its title.
fn note(id: Id) -> &'static str {
    match id {
        Id::Fanout => {
            "The publisher keeps up to the window unanswered, so the server, not the round \
             trip, sets the pace; latency here is mostly queueing (a message waits behind the \
             window's worth of deliveries), not what a paced load sees. chatd writes every \
             message to its log (`--fsync never`); the peers keep nothing."
        }
        Id::Rooms => {
            "Subscriber i is in room i mod 100; room r is fed by publisher r mod 10. Latency \
             is queueing, as at full speed."
        }
        Id::RequestResponse => {
            "**Request/response (window 16)**: at most 16 publishes unanswered, so each run \
             measures the publish-answer-publish round trip more than what the server can \
             deliver. Kept beside the full-speed tables because it was the standard set's \
             figure before issue 14; do not read it as a server's capacity."
        }
        Id::Paced => {
            "One publisher paced at the given rate in all, the window large enough never to \
             hold it back: latency is end to end (publisher's stamp to the subscriber's read) \
             at a load the server keeps up with. chatd runs twice: with `--fsync always` (its \
             own default: a message is delivered and ACKed only after the group commit that \
             holds it is on disk) and with `--fsync never`; the peers keep nothing."
        }
        Id::Idle => {
            "Bytes per connection = (settled server RSS with all held − RSS before) / held. \
             A memory figure: the bench's speed does not enter it, so the table has no \
             generator-bound column."
        }
        Id::Connect => {
            "Connect, hello (chatd HELLO, Redis PING, NATS CONNECT+PING), its answer, then a \
             reset; set-ups per second and set-up latency."
        }
    }
}

/// A row's cell in column `c`.
fn value(row: &Row, c: Col) -> String {
    let recs = &row.recs;
    match c {
        Col::Label => row.label.clone(),
        Col::Runs if recs.len() == row.runs => row.runs.to_string(),
        Col::Runs => format!("{} of {}", recs.len(), row.runs),
        Col::Fig(_, key, places) => cell(spread_of(recs, key), places),
        Col::Sums(_, keys) => {
            let sums: Vec<String> = keys
                .iter()
                .map(|k| sum_of(recs, k).map_or("-".into(), |n| n.to_string()))
                .collect();
            sums.join(" / ")
        }
        Col::Bound => generator_bound(recs),
    }
}

fn heading(c: Col) -> &'static str {
    match c {
        Col::Label => "system",
        Col::Runs => "runs",
        Col::Fig(h, _, _) | Col::Sums(h, _) => h,
        Col::Bound => "generator-bound",
    }
}

/// One table: title, note, figures, the chatd fsync comparison for paced latency, the
/// commands that made it, and the runs that failed.
pub fn table(t: &Table) -> String {
    let cols = columns(t.id);
    let mut md = String::new();
    let _ = writeln!(md, "### {}\n", t.title);
    let _ = writeln!(md, "{}\n", note(t.id));
    let heads: Vec<&str> = cols.iter().map(|c| heading(*c)).collect();
    let _ = writeln!(md, "| {} |", heads.join(" | "));
    let _ = writeln!(md, "|{}", "---|".repeat(cols.len()));
    for r in &t.rows {
        let cells: Vec<String> = cols.iter().map(|c| value(r, *c)).collect();
        let _ = writeln!(md, "| {} |", cells.join(" | "));
    }
    if t.id == Id::Paced {
        md.push_str(&fsync_cost(t));
    }
    let runs: Vec<usize> = t.rows.iter().map(|r| r.runs).collect();
    let times = match (runs.iter().min(), runs.iter().max()) {
        (Some(a), Some(b)) if a == b => format!("each run {}", times(*a)),
        _ => "each run the number of times in its row".into(),
    };
    let _ = writeln!(md, "\nCommands ({times}, in rounds):\n\n```");
    for r in &t.rows {
        let _ = writeln!(md, "{}", r.command());
    }
    let _ = writeln!(md, "```\n");
    for r in &t.rows {
        for e in &r.errors {
            let _ = writeln!(md, "- {} failed: {}", r.label, one_line(e));
        }
    }
    if t.rows.iter().any(|r| !r.errors.is_empty()) {
        md.push('\n');
    }
    md
}

/// chatd's p50 and p99 with `--fsync always` against `--fsync never`, per paced load.
fn fsync_cost(t: &Table) -> String {
    let chatd = |f: &str, n: Option<usize>, rate: Option<f64>| {
        t.rows.iter().find(|r| {
            r.target == Kind::Chatd
                && r.fsync == Some(f)
                && r.subscribers == n
                && spread_of(&r.recs, "rate").map(|s| s.median) == rate
        })
    };
    let mut lines = Vec::new();
    for r in t.rows.iter().filter(|r| r.fsync == Some("always")) {
        let rate = spread_of(&r.recs, "rate").map(|s| s.median);
        let Some(never) = chatd("never", r.subscribers, rate) else {
            continue;
        };
        let mid = |row: &Row, key: &str| spread_of(&row.recs, key).map(|s| s.median);
        let ratio = |key: &str| match (mid(r, key), mid(never, key)) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        let fig = |row: &Row, key: &str| mid(row, key).map_or("-".into(), |x| format!("{x:.0}"));
        lines.push(format!(
            "| {} msgs/s × {} | {} | {} | {} | {} | {} | {} |",
            rate.map_or("-".into(), |x| format!("{x:.0}")),
            r.subscribers.map_or("-".into(), |n| n.to_string()),
            fig(r, "p50_us"),
            fig(never, "p50_us"),
            ratio("p50_us"),
            fig(r, "p99_us"),
            fig(never, "p99_us"),
            ratio("p99_us"),
        ));
    }
    if lines.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "\nWhat the group commit costs chatd (medians above; ratio = always / never):\n\n\
         | load | p50 µs always | p50 µs never | p50 always / never | p99 µs always \
         | p99 µs never | p99 always / never |\n|---|---|---|---|---|---|---|\n",
    );
    for l in lines {
        let _ = writeln!(md, "{l}");
    }
    md
}

/// `once`, `twice`, `3 times`.
pub fn times(n: usize) -> String {
    match n {
        1 => "once".into(),
        2 => "twice".into(),
        n => format!("{n} times"),
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ").replace('|', "\\|")
}

/// What chatd's reactor counts say: one per run when pinned to one core.
fn reactors(tables: &[Table]) -> String {
    let mut counts: Vec<String> = tables
        .iter()
        .flat_map(|t| t.rows.iter())
        .filter(|r| r.target == Kind::Chatd)
        .flat_map(|r| r.recs.iter().map(|rec| rec.show("server_reactors")))
        .collect();
    let runs = counts.len();
    counts.sort();
    counts.dedup();
    match counts.as_slice() {
        [] => String::new(),
        [one] if one == "1" => format!(
            "chatd ran one reactor thread in each of its {runs} runs (its threads named \
             `reactor-N` in /proc/PID/task, counted during each run). "
        ),
        _ => format!(
            "chatd's reactor threads per run (threads named `reactor-N` in /proc/PID/task): \
             {}. ",
            counts.join(", ")
        ),
    }
}

/// The whole generated section, markers included.
pub fn section(s: &Standard, tables: &[Table], secs: u64, machine: &str) -> String {
    let runs: usize = tables
        .iter()
        .flat_map(|t| t.rows.iter())
        .map(|r| r.recs.len() + r.errors.len())
        .sum();
    let pinned = match (s.server_cpu, s.cpu) {
        (Some(a), Some(b)) => format!("every server pinned to CPU {a}, the bench to CPU {b}"),
        (Some(a), None) => format!("every server pinned to CPU {a}, the bench not pinned"),
        (None, Some(b)) => format!("servers not pinned, the bench pinned to CPU {b}"),
        (None, None) => "nothing pinned".into(),
    };
    let mut md = String::new();
    let _ = writeln!(md, "{BEGIN}\n");
    let _ = writeln!(
        md,
        "Written by `chat-bench standard` (`make bench`) on {machine}: `{}`. The set took {secs} s for {runs} runs, \
         {pinned}. {}A cell is the median of a row's runs with their min–max in brackets \
         (one figure when every run agreed); counters are sums over the runs. \
         **generator-bound** is `yes (J of K)` when in J of the row's K runs the bench's \
         one thread used at least 90% of its core: that row's rates are lower bounds of \
         what the server can do.\n",
        s.command(),
        reactors(tables)
    );
    let _ = writeln!(
        md,
        "![delivered msgs/s](plots/fanout-throughput.svg)\n![p99 latency](plots/fanout-p99.svg)\n"
    );
    for t in tables {
        md.push_str(&table(t));
    }
    let _ = writeln!(md, "{END}");
    md
}

/// `page` with its generated section replaced by `section` (appended when it has none).
pub fn splice(page: &str, section: &str) -> String {
    let begin = page.find(BEGIN);
    let end = page.find(END).map(|e| e + END.len());
    match (begin, end) {
        (Some(b), Some(e)) if e > b => {
            let before = page.get(..b).unwrap_or_default();
            let after = page.get(e..).unwrap_or_default();
            format!("{before}{}{after}", section.trim_end())
        }
        _ => format!("{}\n{section}", page.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use crate::standard::aggregate::tests::rec;
    use crate::standard::plan::plan;

    fn tables_with(f: impl Fn(&Row) -> Vec<Record>) -> Vec<Table> {
        let mut tables = plan(&Standard::default());
        for t in &mut tables {
            for r in &mut t.rows {
                r.recs = f(r);
            }
        }
        tables
    }

    fn paced(r: &Row, p50: u64) -> Record {
        let mut x = rec(1000.0, 10, "no");
        x.num(
            "rate",
            Some(if r.subscribers == Some(100) {
                10_000.0
            } else {
                1000.0
            }),
            0,
        );
        x.int("subscribers", r.subscribers.unwrap_or(0) as u64);
        x.int("p50_us", p50);
        x
    }

    #[test]
    fn a_table_names_its_commands_and_shows_min_and_max() {
        let tables = tables_with(|_| {
            vec![
                rec(300.0, 9, "no"),
                rec(100.0, 5, "yes"),
                rec(200.0, 7, "no"),
            ]
        });
        let full = &tables[0];
        let md = table(full);
        assert!(md.starts_with("### Fanout at full speed"), "{md}");
        assert!(md.contains("| 200 (100–300) |"), "{md}");
        assert!(md.contains("| yes (1 of 3) |"), "{md}");
        assert!(md.contains("| 3 / - / - / - |"), "lost summed: {md}");
        assert!(md.contains("each run 3 times"), "{md}");
        for r in &full.rows {
            assert!(md.contains(&format!("\n{}\n", r.command())), "{md}");
        }
        assert!(
            md.contains(
                "chat-bench fanout --spawn --target chatd --server-cpu 0 --cpu 1 \
                 --subscribers 1000 --window 1000 --secs 5 --fsync never\n"
            ),
            "{md}"
        );
        let rr = table(&tables[2]);
        assert!(rr.contains("Request/response (window 16)"), "{rr}");
        assert!(rr.contains("--window 16 --secs 5"), "{rr}");
    }

    #[test]
    fn missing_runs_and_failures_are_shown() {
        let mut tables = tables_with(|_| vec![rec(1.0, 1, "no")]);
        let row = &mut tables[0].rows[0];
        row.errors
            .push("round 2: chatd did not\nreport its address".into());
        let md = table(&tables[0]);
        assert!(md.contains("| 1 of 3 |"), "{md}");
        assert!(
            md.contains("- chatd (fsync never) failed: round 2: chatd did not report its address"),
            "{md}"
        );
    }

    #[test]
    fn paced_latency_shows_what_the_fsync_costs_chatd() {
        let tables = tables_with(|r| {
            let p50 = if r.fsync == Some("always") { 300 } else { 100 };
            vec![paced(r, p50), paced(r, p50)]
        });
        let md = table(&tables[3]);
        assert!(
            md.contains("| chatd (fsync always) | 10000 | 100 | 2 of 5 |"),
            "{md}"
        );
        assert!(
            md.contains("| 10000 msgs/s × 100 | 300 | 100 | 3.00 | 10 | 10 | 1.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| 1000 msgs/s × 1000 | 300 | 100 | 3.00 |"),
            "{md}"
        );
        assert!(md.contains("each run 5 times"), "{md}");
    }

    #[test]
    fn the_section_says_how_it_ran_and_replaces_the_old_one() {
        let tables = tables_with(|r| {
            let mut x = rec(1.0, 1, "no");
            if r.target == Kind::Chatd {
                x.int("server_reactors", 1);
            }
            vec![x]
        });
        let md = section(&Standard::default(), &tables, 700, "2 CPUs");
        assert!(md.starts_with(BEGIN) && md.trim_end().ends_with(END));
        assert!(
            md.contains("`chat-bench standard --targets chatd,redis,nats --runs 3"),
            "{md}"
        );
        assert!(md.contains("one reactor thread in each of its"), "{md}");
        assert!(md.contains("took 700 s"), "{md}");
        for t in &tables {
            assert!(md.contains(&format!("### {}\n", t.title)));
        }
        let page = format!("# Benchmarks\n\nintro\n{BEGIN}\nold\n{END}\n\n## After\n");
        let new = splice(&page, &md);
        assert!(new.starts_with("# Benchmarks\n\nintro\n"));
        assert!(
            new.ends_with("\n\n## After\n") && !new.contains("\nold\n"),
            "{new}"
        );
        assert_eq!(splice("# B\n", "S\n"), "# B\nS\n");
    }
}
