//! Running one scenario once and turning it into a `Run`: against a daemon that is already
//! up, or against one the bench starts and stops around the scenario (`--spawn`). Shared by
//! the single-run commands and the matrix.

use crate::args::{Load, Spawn};
use crate::daemon::{Daemon, Stopped};
use crate::ledger::Violation;
use crate::login::Target;
use crate::report::{Run, Shape};
use crate::scenario::{Outcome, Scenario};

/// The user the bench adds to a daemon it spawns.
pub const SPAWN_USER: &str = "bench";

/// A finished run: the report, and what went wrong in detail (for stderr).
pub struct Done {
    pub run: Run,
    pub violations: Vec<Violation>,
    pub failures: Vec<String>,
}

/// Runs `scenario` against a daemon that is already running.
///
/// # Errors
/// The scenario could not start.
pub fn against(scenario: &dyn Scenario, target: &Target, load: &Load) -> Result<Done, String> {
    let outcome = scenario.run(target)?;
    Ok(done(scenario, load, None, None, outcome))
}

/// Starts a daemon with `spawn`, runs `scenario` against it, stops it.
///
/// # Errors
/// The daemon did not start or stop cleanly, or the scenario could not start.
pub fn spawned(scenario: &dyn Scenario, spawn: &Spawn, load: &Load) -> Result<Done, String> {
    let (daemon, token) = Daemon::start(&spawn.chatd, &spawn.fsync, SPAWN_USER, load.senders)?;
    let target = Target {
        addr: daemon.addr,
        user: SPAWN_USER.into(),
        token,
    };
    // On an error the daemon is dropped, which kills it and removes its directory.
    let outcome = scenario.run(&target)?;
    let stopped = daemon.stop()?;
    Ok(done(
        scenario,
        load,
        Some(&spawn.fsync),
        Some(&stopped),
        outcome,
    ))
}

fn done(
    scenario: &dyn Scenario,
    load: &Load,
    fsync: Option<&str>,
    stopped: Option<&Stopped>,
    outcome: Outcome,
) -> Done {
    let shape = Shape {
        scenario: scenario.name(),
        protocol: load.protocol,
        fsync,
        senders: load.senders,
        window: load.window,
        size: load.size,
        messages: load.messages,
    };
    let run = Run::new(&shape, &outcome, stopped);
    Done {
        run,
        violations: outcome.violations,
        failures: outcome.failures,
    }
}

/// Tells stderr what went wrong in a run, a few lines at most.
pub fn complain(done: &Done) {
    const SHOWN: usize = 10;
    for v in done.violations.iter().take(SHOWN) {
        eprintln!("chat-bench: ACCOUNTING: {v}");
    }
    for f in done.failures.iter().take(SHOWN) {
        eprintln!("chat-bench: connection failed: {f}");
    }
    let more =
        done.violations.len().saturating_sub(SHOWN) + done.failures.len().saturating_sub(SHOWN);
    if more > 0 {
        eprintln!("chat-bench: ... and {more} more");
    }
}
