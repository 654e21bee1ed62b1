//! `chat-bench lab-report`: turns the lab's JSON lines into docs/lab.md's results section and
//! its SVG plots (`plots`). The section is the text between the `lab-results` markers: the
//! paper's table beside ours, a full table per workload and model, the context switches and
//! syscalls per message where measured, the command, date and machine, and links to the plots.
//! Every line is shown, an `error` or `skipped` one as such, and a missing or null figure
//! reads "–".
//!
//! It never writes outside the section between the markers, and writes nothing at all when
//! the doc lacks them or the input cannot be read.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use lexopt::prelude::*;
use serde_json::{Map, Value};

use crate::args::text;

pub const BEGIN: &str = "<!-- lab-results:begin -->";
pub const END: &str = "<!-- lab-results:end -->";

pub const USAGE: &str = "
LAB REPORT (see docs/lab.md):
    chat-bench lab-report --input FILE [--doc FILE] [--plots DIR] [--command CMD]
                           reads `chat-bench lab`'s JSON lines and writes the results section
                           of the doc (between the lines <!-- lab-results:begin --> and
                           <!-- lab-results:end -->; refused, nothing written, when they are
                           missing) and its SVG plots
    --input FILE           the lab's JSON lines (`make lab` keeps them in target/lab.jsonl)
    --doc FILE             the page to write the section into (default docs/lab.md)
    --plots DIR            where the SVGs go (default docs/lab); the page links them
    --command CMD          the command that produced the input, quoted in the section
                           (default: a `command` field of the first line, if any)
";

/// The papayaChat paper (E. Rodriguez Fernandez, TUM), its table of `top`'s %CPU of one
/// process on a 1-vCPU FreeBSD VM, N connections of 1 Mbit/s each (tcpkali, 60 s, sampled
/// every 500 ms): (N, C fork mean %, C fork Cv, Go mean %, Go Cv).
pub const PAPER: [(u32, f64, f64, f64, f64); 5] = [
    (1, 0.34, 0.159, 1.94, 0.169),
    (8, 1.37, 0.137, 6.15, 0.276),
    (16, 2.17, 0.147, 11.71, 0.229),
    (32, 2.53, 0.172, 22.71, 0.322),
    (64, 2.53, 0.180, 36.08, 0.243),
];

/// The workload a line without a `workload` field ran: each connection in a room of its own.
pub const OWN: &str = "own";

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub input: PathBuf,
    pub doc: PathBuf,
    pub plots: PathBuf,
    pub command: Option<String>,
}

/// Parses the flags after `lab-report`.
///
/// # Errors
/// A message naming the bad or missing flag; `help` when help was asked for.
pub fn parse(p: &mut lexopt::Parser) -> Result<Report, String> {
    let (mut input, mut command) = (None, None);
    let mut doc = PathBuf::from("docs/lab.md");
    let mut plots = PathBuf::from("docs/lab");
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("input") => input = Some(PathBuf::from(text(p)?)),
            Long("doc") => doc = PathBuf::from(text(p)?),
            Long("plots") => plots = PathBuf::from(text(p)?),
            Long("command") => command = Some(text(p)?),
            Long("help") | Short('h') => return Err("help".into()),
            other => return Err(other.unexpected().to_string()),
        }
    }
    let input = input.ok_or("--input FILE is missing")?;
    Ok(Report {
        input,
        doc,
        plots,
        command,
    })
}

/// One JSON line of the lab, read back by name: every field may be missing or null.
#[derive(Debug, Clone, PartialEq)]
pub struct Line(Map<String, Value>);

impl Line {
    pub fn num(&self, key: &str) -> Option<f64> {
        self.0.get(key)?.as_f64().filter(|x| x.is_finite())
    }

    pub fn text(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.as_str()
    }

    pub fn model(&self) -> &str {
        self.text("model").unwrap_or("?")
    }

    pub fn workload(&self) -> &str {
        self.text("workload").unwrap_or(OWN)
    }

    pub fn conns(&self) -> Option<f64> {
        self.num("conns")
    }

    /// Measured: neither an `error` nor a `skipped` line.
    pub fn measured(&self) -> bool {
        self.text("error").is_none() && self.text("skipped").is_none()
    }

    /// `KEY_min` and `KEY_max`, when the line is the median of several runs.
    pub fn range(&self, key: &str) -> Option<(f64, f64)> {
        Some((
            self.num(&format!("{key}_min"))?,
            self.num(&format!("{key}_max"))?,
        ))
    }

    /// `(x, y)` to plot `key` against N, from a measured line.
    pub fn point(&self, key: &str) -> Option<(f64, f64)> {
        self.measured().then_some(())?;
        Some((self.conns()?, self.num(key)?))
    }
}

/// Reads JSON lines; blank lines are skipped.
///
/// # Errors
/// A line that is not a JSON object, named by its number.
pub fn read_lines(input: &str) -> Result<Vec<Line>, String> {
    let mut out = Vec::new();
    for (i, l) in input.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(m)) => out.push(Line(m)),
            Ok(_) => return Err(format!("line {}: not a JSON object", i + 1)),
            Err(e) => return Err(format!("line {}: {e}", i + 1)),
        }
    }
    Ok(out)
}

/// Names in the order they first appear.
pub fn in_order<'a>(lines: &'a [Line], name: impl Fn(&'a Line) -> &'a str) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for l in lines {
        let n = name(l);
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// Workloads, `own` (the paper's comparison) first.
pub fn workloads(lines: &[Line]) -> Vec<&str> {
    let mut w = in_order(lines, Line::workload);
    w.sort_by_key(|&n| n != OWN);
    w
}

/// The lines of one workload and model, by N (input order among equal N).
pub fn rows<'a>(lines: &'a [Line], workload: &str, model: &str) -> Vec<&'a Line> {
    let mut out: Vec<&Line> = lines
        .iter()
        .filter(|l| l.workload() == workload && l.model() == model)
        .collect();
    out.sort_by(|a, b| {
        a.conns()
            .unwrap_or(0.0)
            .total_cmp(&b.conns().unwrap_or(0.0))
    });
    out
}

/// Runs the report: reads everything, checks the doc's markers, then writes the plots and
/// the doc.
///
/// # Errors
/// Unreadable input, no lab line in it, a doc without the markers, a file not written.
pub fn run(r: &Report) -> Result<(), String> {
    let name = r.input.display();
    let raw = std::fs::read_to_string(&r.input).map_err(|e| format!("{name}: {e}"))?;
    let lines = read_lines(&raw).map_err(|e| format!("{name}: {e}"))?;
    if lines.is_empty() {
        return Err(format!("{name}: no lab lines; nothing written"));
    }
    let doc_name = r.doc.display();
    let doc = std::fs::read_to_string(&r.doc).map_err(|e| format!("{doc_name}: {e}"))?;
    let figures = super::plots::figures(&lines)?;
    let command = r
        .command
        .as_deref()
        .or_else(|| lines.iter().find_map(|l| l.text("command")))
        .map(|c| c.trim().to_string());
    let about = About {
        input: r.input.display().to_string(),
        command,
        date: jiff::Zoned::now().date().to_string(),
        machine: crate::os::machine(),
        plots: link_dir(&r.doc, &r.plots),
    };
    let md = section(&lines, &about, &figures);
    let new = splice(&doc, &md).map_err(|e| format!("{doc_name}: {e}"))?;
    std::fs::create_dir_all(&r.plots).map_err(|e| format!("{}: {e}", r.plots.display()))?;
    for f in &figures {
        let path = r.plots.join(&f.file);
        std::fs::write(&path, &f.svg).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    std::fs::write(&r.doc, new).map_err(|e| format!("{doc_name}: {e}"))
}

/// The plots' directory as the doc links it: relative to the doc's own directory when it is
/// inside it.
fn link_dir(doc: &Path, plots: &Path) -> String {
    let base = doc.parent().unwrap_or(Path::new(""));
    let rel = plots.strip_prefix(base).unwrap_or(plots);
    rel.display().to_string()
}

/// `doc` with the text between the markers replaced by `md`. A marker counts only on a line
/// of its own, so prose that quotes one is left alone.
///
/// # Errors
/// The markers are missing or out of order.
pub fn splice(doc: &str, md: &str) -> Result<String, String> {
    let mut at = 0;
    let (mut begin, mut end) = (None, None);
    for line in doc.split_inclusive('\n') {
        match line.trim() {
            BEGIN if begin.is_none() => begin = Some(at + line.len()),
            END if begin.is_some() => {
                end = Some(at);
                break;
            }
            _ => {}
        }
        at += line.len();
    }
    match (begin, end) {
        (Some(b), Some(e)) => Ok(format!(
            "{}{}\n{}",
            doc.get(..b).unwrap_or_default(),
            md.trim(),
            doc.get(e..).unwrap_or_default()
        )),
        _ => Err(format!(
            "no results section: the page needs a line `{BEGIN}` and, after it, a line \
             `{END}`; the results go between them. Nothing was written."
        )),
    }
}

/// What the section says about where its numbers came from.
pub struct About {
    pub input: String,
    pub command: Option<String>,
    pub date: String,
    pub machine: String,
    /// The plots' directory as the page links it.
    pub plots: String,
}

/// The generated Markdown between the markers.
pub fn section(lines: &[Line], about: &About, figures: &[super::plots::Figure]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Written by `chat-bench lab-report` from `{}` on {}, on {} (the machine the report \
         ran on; `make lab` measures and reports on the same one). The data came from:\n",
        about.input, about.date, about.machine
    );
    match &about.command {
        Some(c) => {
            let _ = writeln!(md, "    {c}\n");
        }
        None => md.push_str("    (command not recorded: pass lab-report --command)\n\n"),
    }
    for f in figures {
        let _ = writeln!(md, "![{}]({}/{})", f.title, about.plots, f.file);
    }
    md.push('\n');
    paper_table(&mut md, lines);
    for w in workloads(lines) {
        for m in in_order(lines, Line::model) {
            let rows = rows(lines, w, m);
            if !rows.is_empty() {
                full_table(&mut md, w, m, &rows);
            }
        }
    }
    per_message_table(&mut md, lines);
    md
}

/// `x` to `places` decimals, or "–".
fn fixed(x: Option<f64>, places: usize) -> String {
    x.map_or("–".into(), |x| format!("{x:.places$}"))
}

/// A median and its min–max over runs, where the line has them: `12.30 (11.90–12.80)`.
fn spread(l: &Line, key: &str, places: usize) -> String {
    let mid = fixed(l.num(key), places);
    match l.range(key) {
        Some((lo, hi)) => format!("{mid} ({lo:.places$}–{hi:.places$})"),
        None => mid,
    }
}

/// Text safe inside a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// What a line that was not measured says instead of figures.
fn not_measured(l: &Line) -> Option<String> {
    if let Some(e) = l.text("error") {
        return Some(format!("error: {}", cell(e)));
    }
    l.text("skipped").map(|s| format!("skipped: {}", cell(s)))
}

fn paper_table(md: &mut String, lines: &[Line]) {
    let models = in_order(lines, Line::model);
    let _ = writeln!(
        md,
        "### The paper beside ours\n\nThe paper: papayaChat paper (E. Rodriguez Fernandez, \
         TUM), `top`'s %CPU of one process, 1-vCPU FreeBSD VM. Ours: workload `{OWN}` (each \
         connection in a room of its own), CPU % of the whole process tree and `top`'s figure \
         for the daemon's main process; medians where the lab repeated runs.\n"
    );
    let mut head = String::from("| N | paper C fork % | Cv | paper Go % | Cv |");
    for m in &models {
        let _ = write!(head, " {m} % | Cv | {m} `top` % |");
    }
    let _ = writeln!(md, "{head}");
    let _ = writeln!(md, "|{}", "---|".repeat(5 + 3 * models.len()));
    for (n, fork, fork_cv, go, go_cv) in PAPER {
        let mut row = format!("| {n} | {fork:.2} | {fork_cv:.3} | {go:.2} | {go_cv:.3} |");
        for m in &models {
            let line = rows(lines, OWN, m)
                .into_iter()
                .rfind(|l| l.conns() == Some(f64::from(n)));
            let cells = match line {
                None => ["–".to_string(), "–".into(), "–".into()],
                // The reason is in the model's own table below; here it would swamp the row.
                Some(l) if l.text("error").is_some() => ["error".into(), "–".into(), "–".into()],
                Some(l) if !l.measured() => ["skipped".into(), "–".into(), "–".into()],
                Some(l) => [
                    fixed(l.num("cpu_mean_pct"), 2),
                    fixed(l.num("cpu_cv"), 3),
                    fixed(l.num("paper_style_cpu_pct"), 2),
                ],
            };
            let _ = write!(row, " {} |", cells.join(" | "));
        }
        let _ = writeln!(md, "{row}");
    }
    md.push('\n');
}

fn full_table(md: &mut String, workload: &str, model: &str, rows: &[&Line]) {
    let _ = writeln!(md, "### `{model}`, workload `{workload}`\n");
    let _ = writeln!(
        md,
        "| N | runs | CPU % (min–max) | Cv | `top` % | memory KiB | ctxsw/msg | ACK p50 µs | \
         ACK p99 µs | survived | notes |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for l in rows {
        let n = fixed(l.conns(), 0);
        if let Some(why) = not_measured(l) {
            let survived = survived(l);
            let _ = writeln!(
                md,
                "| {n} | – | – | – | – | – | – | – | – | {survived} | {why} |"
            );
            continue;
        }
        let _ = writeln!(
            md,
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            fixed(l.num("runs"), 0),
            spread(l, "cpu_mean_pct", 2),
            spread(l, "cpu_cv", 3),
            spread(l, "paper_style_cpu_pct", 2),
            spread(l, "rss_kib", 0),
            spread(l, "ctxsw_per_msg", 2),
            spread(l, "ack_p50_us", 0),
            spread(l, "ack_p99_us", 0),
            survived(l),
            notes(l),
        );
    }
    md.push('\n');
}

fn survived(l: &Line) -> &'static str {
    match l.0.get("survived").and_then(Value::as_bool) {
        Some(true) => "yes",
        Some(false) => "no",
        None => "–",
    }
}

/// What a reader must know before trusting a row.
fn notes(l: &Line) -> String {
    let mut out = Vec::new();
    if l.text("generator_bound") == Some("yes") {
        out.push(format!(
            "**generator-bound** (bench CPU {} %)",
            fixed(l.num("generator_cpu_pct"), 0)
        ));
    }
    for k in ["unanswered", "errors", "failures"] {
        if let Some(n) = l.num(k).filter(|&n| n > 0.0) {
            out.push(format!("{k} {n}"));
        }
    }
    if l.text("rss_kind") == Some("rss") {
        out.push("memory is RSS (no Pss)".into());
    }
    out.join("; ")
}

/// The heaviest syscalls of a line, by calls per message: `write 2.00, read 1.00`.
fn top_syscalls(l: &Line) -> String {
    let Some(Value::Object(m)) = l.0.get("syscalls_top") else {
        return "–".into();
    };
    let mut calls: Vec<(&String, f64)> = m
        .iter()
        .filter_map(|(k, v)| Some((k, v.as_f64()?)))
        .collect();
    calls.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let shown: Vec<String> = calls
        .iter()
        .take(6)
        .map(|(k, v)| format!("{} {v:.2}", cell(k)))
        .collect();
    if shown.is_empty() {
        "–".into()
    } else {
        shown.join(", ")
    }
}

fn per_message_table(md: &mut String, lines: &[Line]) {
    let carries = |l: &Line| {
        l.num("syscalls_per_msg").is_some()
            || matches!(l.0.get("syscalls_top"), Some(Value::Object(m)) if !m.is_empty())
    };
    if !lines.iter().any(carries) {
        return;
    }
    let _ = writeln!(
        md,
        "### Per message: context switches and syscalls\n\n\
         | workload | model | N | ctxsw voluntary/msg | involuntary/msg | syscalls/msg | \
         most frequent (calls/msg) |\n|---|---|---|---|---|---|---|"
    );
    for w in workloads(lines) {
        for m in in_order(lines, Line::model) {
            for l in rows(lines, w, m).into_iter().filter(|l| carries(l)) {
                let _ = writeln!(
                    md,
                    "| {w} | {m} | {} | {} | {} | {} | {} |",
                    fixed(l.conns(), 0),
                    fixed(l.num("ctxsw_voluntary_per_msg"), 2),
                    fixed(l.num("ctxsw_involuntary_per_msg"), 2),
                    fixed(l.num("syscalls_per_msg"), 2),
                    top_syscalls(l),
                );
            }
        }
    }
    md.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
{"model":"reactor","conns":1,"cpu_mean_pct":2.35,"cpu_cv":0.421,"paper_style_cpu_pct":2.35,"rss_kib":2301,"ctxsw_per_msg":4.16,"ack_p50_us":961,"ack_p99_us":2253,"unanswered":0,"errors":0,"failures":0,"generator_bound":"no"}
{"model":"reactor","conns":8,"runs":3,"cpu_mean_pct":9.18,"cpu_mean_pct_min":8.5,"cpu_mean_pct_max":10.25,"cpu_cv":null,"paper_style_cpu_pct":9.18,"rss_kib":3044,"ack_p99_us":2107,"survived":true,"generator_bound":"yes","generator_cpu_pct":95.0}
{"model":"fork","conns":1,"error":"chatd: invalid option '--driver' | see help"}
{"model":"fork","conns":8,"workload":"own","skipped":"fork did not survive N = 4","survived":false}
{"model":"reactor","conns":8,"workload":"shared","cpu_mean_pct":12.5,"syscalls_per_msg":7.5,"syscalls_top":{"write":2.0,"read":1.0,"futex":3.5},"ctxsw_voluntary_per_msg":1.25}
"#;

    fn about() -> About {
        About {
            input: "target/lab.jsonl".into(),
            command: Some("chat-bench lab --models reactor,fork".into()),
            date: "2026-12-02".into(),
            machine: "2 CPUs (test), Linux 6.18".into(),
            plots: "lab".into(),
        }
    }

    fn md() -> String {
        let lines = read_lines(SAMPLE).expect("parses");
        let figs = super::super::plots::figures(&lines).expect("drawn");
        section(&lines, &about(), &figs)
    }

    #[test]
    fn the_markers_are_replaced_and_the_rest_of_the_page_kept() {
        let doc = format!("# Lab\n\nprose\n\n{BEGIN}\nold results\n{END}\n\nafter\n");
        let new = splice(&doc, "new results\n").expect("spliced");
        assert_eq!(
            new,
            format!("# Lab\n\nprose\n\n{BEGIN}\nnew results\n{END}\n\nafter\n")
        );
        let quoted = format!("Prose quoting `{BEGIN}` and `{END}`.\n{doc}");
        let spliced = splice(&quoted, "new results\n").expect("spliced");
        assert_eq!(
            spliced,
            format!("Prose quoting `{BEGIN}` and `{END}`.\n{new}")
        );
        let again = splice(&new, "newer").expect("spliced twice");
        assert!(again.contains("newer") && !again.contains("new results"));
        assert_eq!(again.matches(BEGIN).count(), 1);
    }

    #[test]
    fn a_page_without_the_markers_is_refused() {
        for doc in [
            "# Lab\nno markers\n".to_string(),
            format!("{BEGIN}\nonly the first\n"),
            format!("{END}\nin the wrong order\n{BEGIN}\n"),
        ] {
            let e = splice(&doc, "x").expect_err("refused");
            assert!(
                e.contains(BEGIN) && e.contains("Nothing was written"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_doc_without_markers_is_left_untouched_and_no_plot_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (input, doc) = (dir.path().join("lab.jsonl"), dir.path().join("lab.md"));
        std::fs::write(&input, SAMPLE).expect("input");
        std::fs::write(&doc, "# Lab\n").expect("doc");
        let plots = dir.path().join("plots");
        let r = Report {
            input,
            doc: doc.clone(),
            plots: plots.clone(),
            command: None,
        };
        assert!(run(&r).is_err());
        assert_eq!(std::fs::read_to_string(&doc).expect("doc"), "# Lab\n");
        assert!(!plots.exists());
        std::fs::write(&doc, format!("# Lab\n{BEGIN}\n{END}\n")).expect("doc");
        run(&r).expect("written");
        let page = std::fs::read_to_string(&doc).expect("doc");
        assert!(page.contains("![CPU % of the whole process tree"), "{page}");
        assert!(
            page.contains("](plots/cpu.svg)"),
            "links relative to the page: {page}"
        );
        assert!(plots.join("cpu.svg").exists() && plots.join("cpu-shared.svg").exists());
    }

    #[test]
    fn error_and_skipped_lines_are_shown_not_dropped() {
        let md = md();
        assert!(
            md.contains("| 1 | – | – | – | – | – | – | – | – | – | error: chatd: invalid option '--driver' \\| see help |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| 8 | – | – | – | – | – | – | – | – | no | skipped: fork did not survive N = 4 |"
            ),
            "{md}"
        );
        // In the paper table too, in fork's column, without the reason.
        assert!(
            md.contains(
                "| 1 | 0.34 | 0.159 | 1.94 | 0.169 | 2.35 | 0.421 | 2.35 | error | – | – |"
            ),
            "{md}"
        );
        let skipped = "| 8 | 1.37 | 0.137 | 6.15 | 0.276 | 9.18 | – | 9.18 | skipped | – | – |";
        assert!(md.contains(skipped), "{md}");
    }

    #[test]
    fn the_paper_table_has_its_five_rows_and_a_column_per_model() {
        let md = md();
        assert!(md.contains("| N | paper C fork % | Cv | paper Go % | Cv | reactor % | Cv | reactor `top` % | fork % | Cv | fork `top` % |"), "{md}");
        for row in [
            "| 16 | 2.17 | 0.147 | 11.71 | 0.229 | – | – | – | – | – | – |",
            "| 64 | 2.53 | 0.180 | 36.08 | 0.243 |",
        ] {
            assert!(md.contains(row), "{row}: {md}");
        }
        assert!(md.contains("papayaChat paper (E. Rodriguez Fernandez, TUM)"));
    }

    #[test]
    fn medians_show_their_min_max_and_missing_figures_a_dash() {
        let md = md();
        assert!(
            md.contains("| 8 | 3 | 9.18 (8.50–10.25) | – | 9.18 | 3044 | – | – | 2107 | yes | **generator-bound** (bench CPU 95 %) |"),
            "{md}"
        );
        assert!(
            md.contains("| 1 | – | 2.35 | 0.421 | 2.35 | 2301 | 4.16 | 961 | 2253 | – |  |"),
            "{md}"
        );
    }

    #[test]
    fn syscalls_are_tabled_when_lines_carry_them() {
        let md = md();
        assert!(
            md.contains(
                "| shared | reactor | 8 | 1.25 | – | 7.50 | futex 3.50, write 2.00, read 1.00 |"
            ),
            "{md}"
        );
        let without: String = SAMPLE
            .lines()
            .filter(|l| !l.contains("syscalls"))
            .collect::<Vec<_>>()
            .join("\n");
        let lines = read_lines(&without).expect("parses");
        assert!(!section(&lines, &about(), &[]).contains("syscalls/msg"));
    }

    #[test]
    fn the_header_names_command_date_machine_and_plots() {
        let md = md();
        for s in [
            "    chat-bench lab --models reactor,fork\n",
            "2026-12-02",
            "2 CPUs (test), Linux 6.18",
            "](lab/cpu.svg)",
            "](lab/memory-shared.svg)",
            "### `reactor`, workload `shared`",
        ] {
            assert!(md.contains(s), "{s}: {md}");
        }
    }

    #[test]
    fn a_line_that_is_not_json_is_named() {
        let e = read_lines("{\"model\":\"a\"}\n\nnot json\n").expect_err("refused");
        assert!(e.starts_with("line 3:"), "{e}");
        assert!(read_lines("[1]").is_err());
    }

    fn report(words: &[&str]) -> Result<Report, String> {
        let mut p = lexopt::Parser::from_args(words.iter().map(|s| s.to_string()));
        parse(&mut p)
    }

    #[test]
    fn flags_have_the_make_lab_defaults_and_input_is_required() {
        let r = report(&["--input", "t.jsonl"]).expect("parses");
        assert_eq!(
            (r.doc.to_str(), r.plots.to_str(), r.command),
            (Some("docs/lab.md"), Some("docs/lab"), None)
        );
        let r = report(&[
            "--input",
            "a",
            "--doc",
            "b.md",
            "--plots",
            "p",
            "--command",
            "c d",
        ])
        .expect("parses");
        assert_eq!(
            (r.plots.to_str(), r.command.as_deref()),
            (Some("p"), Some("c d"))
        );
        assert!(report(&[]).expect_err("no input").contains("--input"));
        assert!(report(&["--input", "a", "--out", "x"]).is_err());
        assert_eq!(report(&["--help"]), Err("help".into()));
    }

    #[test]
    fn plots_are_linked_relative_to_the_page() {
        assert_eq!(
            link_dir(Path::new("docs/lab.md"), Path::new("docs/lab")),
            "lab"
        );
        assert_eq!(link_dir(Path::new("lab.md"), Path::new("out")), "out");
        assert_eq!(
            link_dir(Path::new("docs/lab.md"), Path::new("/tmp/x")),
            "/tmp/x"
        );
    }
}
