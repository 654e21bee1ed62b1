//! `durable-matrix`: the `durable` scenario for every fsync policy x sender count, each run on
//! a daemon of its own so that no run inherits another's log or page cache state beyond what
//! the machine keeps. Prints a JSON line as each run ends and a table of medians at the end.

use std::io::Write;

use crate::args::{Matrix, Spawn, matrix_messages};
use crate::report::{Run, table};
use crate::runner::{complain, spawned};
use crate::scenario::durable::Durable;

/// What the whole matrix came to.
pub enum Verdict {
    Clean,
    /// Some run's accounting did not balance.
    Violations,
    /// Some run could not be carried out at all.
    Broken,
}

pub fn run(m: &Matrix) -> Verdict {
    let mut medians = Vec::new();
    let (mut violations, mut broken) = (false, false);
    for policy in &m.policies {
        let spawn = Spawn {
            chatd: m.chatd.clone(),
            fsync: policy.clone(),
        };
        for &senders in &m.sender_counts {
            let mut load = m.load.clone();
            load.senders = senders;
            load.messages = m.messages.unwrap_or_else(|| matrix_messages(senders));
            // One list of runs per protocol; the protocols take turns within each repeat.
            let mut runs: Vec<Vec<Run>> = m.protocols.iter().map(|_| Vec::new()).collect();
            for rep in 1..=m.repeat {
                for (&protocol, runs) in m.protocols.iter().zip(runs.iter_mut()) {
                    load.protocol = protocol;
                    let scenario = Durable { load: load.clone() };
                    eprintln!(
                        "chat-bench: fsync {policy}, {senders} senders x {} messages, protocol \
                         {protocol}, run {rep}/{}",
                        load.messages, m.repeat
                    );
                    match spawned(&scenario, &spawn, &load) {
                        Ok(done) => {
                            complain(&done);
                            violations |= done.run.violations > 0;
                            println!("{}", done.run.json());
                            let _ = std::io::stdout().flush();
                            runs.push(done.run);
                        }
                        Err(e) => {
                            eprintln!("chat-bench: run failed: {e}");
                            broken = true;
                        }
                    }
                }
            }
            for runs in &runs {
                medians.extend(Run::median_of(runs));
            }
        }
    }
    if m.repeat > 1 {
        println!("\nmedians of {} runs each:", m.repeat);
    } else {
        println!();
    }
    print!("{}", table(&medians));
    match (broken, violations) {
        (true, _) => Verdict::Broken,
        (false, true) => Verdict::Violations,
        (false, false) => Verdict::Clean,
    }
}
