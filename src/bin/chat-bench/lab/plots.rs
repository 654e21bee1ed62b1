//! The lab's plots, against the connection count N: CPU % of the whole process tree, its Cv,
//! peak memory, and `top`'s figure for the main process beside the tree's, one line per model
//! (min–max error bars where runs were repeated), the paper's curves dashed beside ours; then
//! CPU and memory again for every workload other than `own`.
//!
//! It only draws: lines that were not measured (`error`, `skipped`) and null figures leave a
//! gap, never a point at zero; the report decides where the SVGs go.

use super::report::{Line, OWN, PAPER, in_order, rows, workloads};
use crate::plot::{Series, chart};

/// One SVG and what the page calls it.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub file: String,
    pub title: String,
    pub svg: String,
}

/// Palette places of the paper's two curves, apart from the models' (which start at 0).
const PAPER_FORK_COLOUR: usize = 6;
const PAPER_GO_COLOUR: usize = 7;

/// Every plot of the report.
///
/// # Errors
/// Drawing failed.
pub fn figures(lines: &[Line]) -> Result<Vec<Figure>, String> {
    let x = x_label(lines);
    let mut out = Vec::new();
    let mut add = |file: String, title: String, y: &str, series: Vec<Series>| {
        let svg = chart(&title, &x, y, &series)?;
        out.push(Figure { file, title, svg });
        Ok::<(), String>(())
    };
    for w in workloads(lines) {
        let (suffix, of) = if w == OWN {
            (String::new(), String::new())
        } else {
            (format!("-{}", file_safe(w)), format!(", workload {w}"))
        };
        let mut cpu = per_model(lines, w, "cpu_mean_pct", |_| String::new());
        cpu.extend(paper(false));
        add(
            format!("cpu{suffix}.svg"),
            format!("CPU % of the whole process tree vs N{of}"),
            "% of one CPU (mean over the run)",
            cpu,
        )?;
        if w == OWN {
            let mut cv = per_model(lines, w, "cpu_cv", |_| String::new());
            cv.extend(paper(true));
            add(
                "cv.svg".into(),
                "Cv of the CPU samples (σ/μ) vs N".into(),
                "Cv",
                cv,
            )?;
        }
        add(
            format!("memory{suffix}.svg"),
            format!("peak memory of the tree vs N{of}"),
            memory_label(lines),
            per_model(lines, w, "rss_kib", |_| String::new()),
        )?;
        if w == OWN {
            let mut both = Vec::new();
            let tree = per_model(lines, w, "cpu_mean_pct", |m| format!("{m}, tree"));
            let top = per_model(lines, w, "paper_style_cpu_pct", |m| format!("{m}, top"));
            for (t, p) in tree.into_iter().zip(top) {
                both.push(t);
                both.push(p.dashed());
            }
            both.extend(paper(false));
            add(
                "paper-style.svg".into(),
                "top's figure (main process) vs the whole tree".into(),
                "% of one CPU (mean over the run)",
                both,
            )?;
        }
    }
    Ok(out)
}

/// One series per model (in the order the lines name them, so a model keeps its colour in
/// every plot) of `key` against N, with min–max bars where the lines have them.
fn per_model(
    lines: &[Line],
    workload: &str,
    key: &str,
    name: impl Fn(&str) -> String,
) -> Vec<Series> {
    let models = in_order(lines, Line::model);
    models
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let rows = rows(lines, workload, m);
            let points = rows.iter().filter_map(|l| l.point(key)).collect();
            let ranges = rows
                .iter()
                .filter_map(|l| {
                    let (x, _) = l.point(key)?;
                    let (lo, hi) = l.range(key)?;
                    Some((x, lo, hi))
                })
                .collect();
            let label = name(m);
            let label = if label.is_empty() {
                m.to_string()
            } else {
                label
            };
            Series::new(label, points).ranges(ranges).colour(i)
        })
        .collect()
}

/// The paper's two curves: mean CPU %, or its Cv.
fn paper(cv: bool) -> [Series; 2] {
    let fork = PAPER.map(|(n, mu, c, _, _)| (f64::from(n), if cv { c } else { mu }));
    let go = PAPER.map(|(n, _, _, mu, c)| (f64::from(n), if cv { c } else { mu }));
    [
        Series::new("paper: C fork", fork.to_vec())
            .colour(PAPER_FORK_COLOUR)
            .dashed(),
        Series::new("paper: Go", go.to_vec())
            .colour(PAPER_GO_COLOUR)
            .dashed(),
    ]
}

/// "connections N", with their bit rate when every measured line has the same.
fn x_label(lines: &[Line]) -> String {
    let mut rates = lines
        .iter()
        .filter(|l| l.measured())
        .filter_map(|l| l.num("mbps"));
    match rates.next() {
        Some(r) if rates.all(|o| o == r) => format!("connections N ({r} Mbit/s each)"),
        _ => "connections N".into(),
    }
}

/// Pss unless some line could only read RSS (the table's notes say which).
fn memory_label(lines: &[Line]) -> &'static str {
    if lines.iter().any(|l| l.text("rss_kind") == Some("rss")) {
        "KiB (Pss or RSS, summed over the tree)"
    } else {
        "KiB (Pss, summed over the tree)"
    }
}

/// A workload name as part of a file name.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::report::read_lines;
    use super::*;

    const SAMPLE: &str = r#"
{"model":"reactor","conns":1,"mbps":1.0,"cpu_mean_pct":2.0,"cpu_cv":0.4,"paper_style_cpu_pct":2.0,"rss_kib":2000}
{"model":"reactor","conns":8,"mbps":1.0,"cpu_mean_pct":9.0,"cpu_mean_pct_min":8.0,"cpu_mean_pct_max":10.0,"cpu_cv":0.2,"paper_style_cpu_pct":9.0,"rss_kib":3000}
{"model":"fork","conns":1,"mbps":1.0,"cpu_mean_pct":3.0,"cpu_cv":0.3,"paper_style_cpu_pct":1.0,"rss_kib":null}
{"model":"fork","conns":8,"error":"refused"}
{"model":"reactor","conns":8,"mbps":1.0,"workload":"shared","cpu_mean_pct":12.0,"rss_kib":3500}
"#;

    #[test]
    fn every_plot_is_made_and_per_workload_plots_are_named_after_it() {
        let lines = read_lines(SAMPLE).expect("parses");
        let figs = figures(&lines).expect("drawn");
        let files: Vec<&str> = figs.iter().map(|f| f.file.as_str()).collect();
        assert_eq!(
            files,
            [
                "cpu.svg",
                "cv.svg",
                "memory.svg",
                "paper-style.svg",
                "cpu-shared.svg",
                "memory-shared.svg"
            ]
        );
        assert_eq!(file_safe("fan out/2"), "fan-out-2");
    }

    /// A text element (legend entry, title, axis label) reading exactly `name`.
    fn shows(svg: &str, name: &str) -> bool {
        svg.contains(&format!("\n{name}\n</text>"))
    }

    /// Filled markers (measured points and the legend's) in palette colour `i`.
    fn dots(svg: &str, hex: &str) -> usize {
        svg.lines()
            .filter(|l| l.starts_with("<circle") && l.contains(&format!("fill=\"{hex}\"")))
            .count()
    }

    #[test]
    fn the_cpu_plot_has_a_line_per_model_and_the_papers_curves() {
        let lines = read_lines(SAMPLE).expect("parses");
        let figs = figures(&lines).expect("drawn");
        let cpu = &figs[0].svg;
        for name in ["reactor", "fork", "paper: C fork", "paper: Go"] {
            assert!(shows(cpu, name), "{name} not in the legend");
        }
        assert!(shows(cpu, "connections N (1 Mbit/s each)"));
        // reactor (red): two points and the legend's marker; fork (blue): the error line
        // leaves a gap, so one point and the legend's.
        assert_eq!(dots(cpu, "#D62728"), 3);
        assert_eq!(dots(cpu, "#1F77B4"), 2);
        // reactor's N = 8 is a median with a min–max bar: three <line>s in its colour.
        let bar = cpu
            .lines()
            .filter(|l| l.starts_with("<line") && l.contains("stroke=\"#D62728\""))
            .count();
        assert_eq!(bar, 3);
        let memory = &figs[2].svg;
        assert_eq!(
            dots(memory, "#1F77B4"),
            1,
            "a null rss_kib is a gap, not a 0"
        );
        assert!(shows(memory, "KiB (Pss, summed over the tree)"));
        let rss =
            format!("{SAMPLE}{{\"model\":\"x\",\"conns\":1,\"rss_kib\":9,\"rss_kind\":\"rss\"}}\n");
        let figs = figures(&read_lines(&rss).expect("parses")).expect("drawn");
        assert!(shows(
            &figs[2].svg,
            "KiB (Pss or RSS, summed over the tree)"
        ));
    }

    #[test]
    fn the_paper_style_plot_pairs_tree_and_top_per_model() {
        let lines = read_lines(SAMPLE).expect("parses");
        let figs = figures(&lines).expect("drawn");
        let svg = &figs[3].svg;
        for name in [
            "reactor, tree",
            "reactor, top",
            "fork, tree",
            "fork, top",
            "paper: Go",
        ] {
            assert!(shows(svg, name), "{name} not in the legend");
        }
        let shared = &figs[4].svg;
        assert!(shows(
            shared,
            "CPU % of the whole process tree vs N, workload shared"
        ));
    }
}
