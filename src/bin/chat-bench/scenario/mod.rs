//! Scenarios: each one a way of loading a daemon, behind one trait so that the command line,
//! the spawned daemon and the reports are shared. A scenario opens its own connections to the
//! `Target` it is given and returns what it measured; it never starts or stops a daemon.

pub mod durable;
pub mod idle;
pub mod pubsub;

use std::collections::BTreeMap;

use crate::ledger::{Violation, repeated_seqs};
use crate::login::Target;
use crate::stats::{ErrorCounts, Latency};

/// One way of loading the daemon.
pub trait Scenario {
    /// The name reports carry (`durable`, ...).
    fn name(&self) -> &'static str;

    /// Runs the load against `target` and returns what it measured.
    ///
    /// # Errors
    /// The load could not be set up at all (no connection could log in, ...). Failures of
    /// single connections during the run are reported in the `Outcome` instead.
    fn run(&self, target: &Target) -> Result<Outcome, String>;
}

/// What a scenario measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// From the moment all connections were ready to the last answer.
    pub secs: f64,
    pub sent: u64,
    pub acked: u64,
    /// SEND to ACK, per message.
    pub latency: Latency,
    pub errors: ErrorCounts,
    /// Accounting that did not balance: any entry means the daemon broke its contract.
    pub violations: Vec<Violation>,
    /// Connections that failed on the client side (socket error, timeout).
    pub failures: Vec<String>,
    /// MSG frames the connections received (fanout of the room back to its senders).
    pub msgs_received: u64,
    /// Every ACKed seq, by room, for the repeated-seq check.
    pub seqs: BTreeMap<String, Vec<u64>>,
}

impl Outcome {
    /// ACKed messages per second over the whole run.
    pub fn msgs_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.acked as f64 / self.secs
        } else {
            0.0
        }
    }

    /// Adds the seq check across all connections to the violations.
    pub fn check_seqs(&mut self) {
        let repeated = repeated_seqs(&self.seqs);
        self.violations.extend(repeated);
    }
}
