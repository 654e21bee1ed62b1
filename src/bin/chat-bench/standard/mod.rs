//! `standard`: the set `make bench` runs. For each system (chatd, Redis, NATS, each spawned
//! fresh per run and pinned to `--server-cpu`, the bench pinned to `--cpu`): fanout at full
//! speed (a publisher window large enough that the server sets the pace) at several
//! subscriber counts; rooms; fanout with a window of 16 (request/response); paced fanout for
//! end-to-end latency, chatd with and without fsync; idle connections; connection set-up.
//! Every row runs K times (the latency rows L times) in interleaved rounds (`plan`), and its
//! table shows medians with min–max (`aggregate`, `render`) and the exact commands. Results
//! go into docs/benchmarks.md between the `standard-set` markers (the rest of the page is
//! kept) and into two SVG plots (`plots`).
//!
//! It only runs the commands its plan names, through the same parser as the command line,
//! and writes only the page and the plot directory it was given.

mod aggregate;
mod flags;
mod plan;
mod plots;
mod render;

use std::time::Instant;

pub use flags::{Standard, USAGE, parse};

use crate::args::Command;
use crate::record::Record;

/// Runs the set and writes the page and the plots, even when some runs failed.
///
/// # Errors
/// The bench could not be pinned, or the page or a plot could not be written. `Ok(false)`
/// when a run failed or did not balance (its row says so).
pub fn run_set(s: &Standard) -> Result<bool, String> {
    if let Some(cpu) = s.cpu {
        crate::net::pin(cpu)?;
    }
    let started = Instant::now();
    let mut tables = plan::plan(s);
    let slots = plan::schedule(&tables);
    let total = slots.len();
    let mut clean = true;
    for (i, slot) in slots.into_iter().enumerate() {
        let Some(row) = tables
            .get_mut(slot.table)
            .and_then(|t| t.rows.get_mut(slot.row))
        else {
            continue;
        };
        let cmd = row.command();
        eprintln!(
            "chat-bench standard: [{}/{total}] round {}, {} s in: {cmd}",
            i + 1,
            slot.round,
            started.elapsed().as_secs()
        );
        match once(&row.args) {
            Ok(mut rec) => {
                rec.int("round", slot.round as u64);
                println!("{}", rec.json());
                clean &= balanced(&rec);
                row.recs.push(rec);
            }
            Err(e) => {
                eprintln!("chat-bench standard: {cmd}: {e}");
                row.errors.push(format!("round {}: {e}", slot.round));
                clean = false;
            }
        }
    }
    let secs = started.elapsed().as_secs();
    std::fs::create_dir_all(&s.plots).map_err(|e| format!("{}: {e}", s.plots.display()))?;
    for (name, svg) in plots::draw(&tables)? {
        let path = s.plots.join(name);
        std::fs::write(&path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let md = render::section(s, &tables, secs, &crate::os::machine());
    let old = std::fs::read_to_string(&s.out).unwrap_or_default();
    std::fs::write(&s.out, render::splice(&old, &md))
        .map_err(|e| format!("{}: {e}", s.out.display()))?;
    Ok(clean)
}

/// One run of a row's command, parsed as the command line would parse it.
fn once(args: &[String]) -> Result<Record, String> {
    match crate::args::parse(args.iter().cloned())? {
        Command::Live(l) => crate::live::run(&l),
        other => Err(format!("not a pub/sub, idle or connect run: {other:?}")),
    }
}

/// No loss, duplicate, reordering or failed connection.
fn balanced(rec: &Record) -> bool {
    ["lost", "duplicates", "reordered", "failures", "failed"]
        .iter()
        .all(|k| rec.f(k).is_none_or(|n| n == 0.0))
}
