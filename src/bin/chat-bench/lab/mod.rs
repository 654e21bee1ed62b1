//! `chat-bench lab`: the concurrency lab. For each workload (each connection in a room of its
//! own, or all N in one room), each server model (chatd's `--driver`) and each connection
//! count N, it runs K times a chatd of its own pinned to one CPU with N connections sending
//! at a fixed bit rate (open loop, `load`), samples the server's whole process tree meanwhile
//! (`sampler`, `tree`) and prints one JSON line of medians over the runs (`aggregate`): mean
//! CPU % and its Cv for the whole tree, the figure `top` would have shown for the daemon's
//! main process alone (the paper's method), peak memory of the tree, context switches per
//! message, ACK latency and the accounting; with `--syscalls`, one more run under strace for
//! system calls per message (`syscalls`).
//!
//! The connection counts are a survival ladder (`ladder`): once a model fails at some N, the
//! larger ones are skipped. A model the daemon refuses, or any run that cannot be set up, is
//! a line with an `error` field, and the lab goes on. It only ever starts and stops daemons
//! (and straces) of its own, and reads /proc.

mod aggregate;
mod flags;
mod ladder;
mod line;
mod load;
pub mod plots;
pub mod report;
mod run;
mod sampler;
mod syscalls;
mod tree;

pub use flags::{Lab, parse};

use aggregate::Head;
use flags::Workload;
use ladder::{Ladder, Step};
use line::{Field, Line};

/// The bench's own CPU at or above this share of its core: it, not the server, may have set
/// the pace (it fell behind its schedule).
const GENERATOR_SATURATED_PCT: f64 = 90.0;

/// Runs the ladder of every (workload, model) and prints a JSON line for each N. True when
/// every run that could be measured balanced (every SEND ACKed, every member given every
/// message, no ERROR, no failed connection).
///
/// # Errors
/// Pinning the bench failed.
pub fn run(lab: &Lab) -> Result<bool, String> {
    if let Some(cpu) = lab.cpu {
        crate::net::pin(cpu)?;
    }
    let fd_limit = ladder::fd_limit();
    let mut clean = true;
    for &workload in &lab.workloads {
        for model in &lab.models {
            let mut ladder = Ladder::default();
            for &n in &lab.conns {
                let head = Head {
                    workload: workload.name(),
                    model,
                    conns: n,
                    runs: lab.runs,
                    mbps: lab.mbps,
                    size: lab.size,
                };
                let line = match ladder.step(n, fd_limit) {
                    Step::Skip(why) => aggregate::skipped(&head, &why),
                    Step::Unfit(e) => {
                        eprintln!(
                            "chat-bench lab: {} {model}, {n} connections: {e}",
                            head.workload
                        );
                        aggregate::unmeasured(&head, &e, false)
                    }
                    Step::Run => {
                        let (line, survived, balanced) = rung(lab, workload, &head);
                        ladder.record(n, survived);
                        clean &= balanced;
                        line
                    }
                };
                println!("{}", line.json());
            }
        }
    }
    Ok(clean)
}

/// The K runs of one (workload, model, N), and the run under strace when asked for: the line,
/// whether the model survived, and whether every measured run balanced.
fn rung(lab: &Lab, workload: Workload, head: &Head) -> (Line, bool, bool) {
    let (w, model, n) = (head.workload, head.model, head.conns);
    let mut runs = Vec::new();
    let mut error = None;
    for k in 1..=lab.runs {
        eprintln!(
            "chat-bench lab: {w} {model}, {n} connections, run {k} of {}, {} s",
            lab.runs, lab.secs
        );
        match run::one(lab, workload, model, n) {
            Ok(r) => runs.push(r),
            Err(e) => {
                eprintln!("chat-bench lab: {w} {model}, {n} connections: {e}");
                // The next run would meet the same refusal or limit: go on with the next N.
                error = Some(e);
                break;
            }
        }
    }
    let survived = aggregate::survival(&runs, error.as_deref());
    if let Err(why) = &survived {
        eprintln!("chat-bench lab: {w} {model} did not survive {n} connections: {why}");
    }
    let balanced = runs.iter().all(|r| r.trouble().is_none());
    let mut line = match (&error, runs.is_empty()) {
        (Some(e), true) => aggregate::unmeasured(head, e, true),
        _ => aggregate::measured(head, &runs, error.as_deref()),
    };
    if lab.syscalls && !runs.is_empty() {
        syscall_fields(&mut line, lab, workload, head);
    }
    (line, survived.is_ok(), balanced)
}

/// Adds `syscalls_per_msg`, `syscalls_top`, `syscalls_sent` (and `syscalls_error` when they
/// could not be counted) from one run under strace.
fn syscall_fields(line: &mut Line, lab: &Lab, workload: Workload, head: &Head) {
    let (w, model, n) = (head.workload, head.model, head.conns);
    eprintln!("chat-bench lab: {w} {model}, {n} connections, under strace -f -c");
    match run::traced(lab, workload, model, n) {
        Ok((counts, sent)) if sent > 0 => {
            let per = |calls: u64| calls as f64 / sent as f64;
            line.num("syscalls_per_msg", Some(per(counts.total)), 2);
            let top = counts
                .top()
                .iter()
                .map(|(name, c)| (name.clone(), per(*c), 3));
            line.put("syscalls_top", Field::Object(top.collect()));
            line.int("syscalls_sent", sent);
        }
        other => {
            let why = match other {
                Err(e) => e,
                Ok(_) => "no message was sent in the traced run".into(),
            };
            eprintln!(
                "chat-bench lab: !!! SYSCALLS NOT COUNTED for {w} {model}, {n} connections: {why}"
            );
            line.put("syscalls_per_msg", Field::Null);
            line.put("syscalls_top", Field::Null);
            line.put("syscalls_sent", Field::Null);
            line.text("syscalls_error", &why);
        }
    }
}
