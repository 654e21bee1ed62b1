//! `durable`: N sender connections each send M messages of B bytes and keep at most W of them
//! unanswered. With W = 1 (the default) every message waits for its ACK before the next goes
//! out, so the time to each ACK is the honest cost of storing a message under the daemon's
//! fsync policy. Senders start together once all of them have logged in and joined; the clock
//! runs from there to the last answer. Each sender also reads the room's MSGs (its own and the
//! other senders'), as any member must, and counts them.
//!
//! The sender logic is I/O-free (`sender`); two drivers run it: `poll` (one thread, one mio
//! loop for every connection) and `threads` (a thread and a blocking socket per connection).

mod poll;
mod sender;
mod threads;

use std::sync::Arc;
use std::time::Instant;

use super::{Outcome, Scenario};
use crate::args::{Driver, Load};
use crate::login::Target;
use sender::Report;

pub struct Durable {
    pub load: Load,
}

/// What a driver hands back: when the senders started, and each sender's report or the
/// reason it never got going.
pub struct Driven {
    pub start: Instant,
    pub senders: Vec<Result<Report, String>>,
}

impl Scenario for Durable {
    fn name(&self) -> &'static str {
        "durable"
    }

    fn run(&self, target: &Target) -> Result<Outcome, String> {
        let load = &self.load;
        let text: Arc<str> = "m".repeat(load.size).into();
        let rooms: Vec<String> = (0..load.senders).map(|i| room_of(load, i)).collect();
        let driven = match load.driver {
            Driver::Poll => poll::drive(target, load, &rooms, &text)?,
            Driver::Threads => threads::drive(target, load, &rooms, &text)?,
        };
        let mut outcome = Outcome::default();
        let mut end = driven.start;
        let mut ready = 0;
        for sender in driven.senders {
            match sender {
                Ok(r) => {
                    ready += 1;
                    end = end.max(r.finished);
                    merge(&mut outcome, r);
                }
                Err(e) => outcome.failures.push(e),
            }
        }
        if ready == 0 {
            let why = outcome.failures.first().cloned().unwrap_or_default();
            return Err(format!("no sender could start: {why}"));
        }
        outcome.secs = end.duration_since(driven.start).as_secs_f64();
        outcome.check_seqs();
        Ok(outcome)
    }
}

/// Room of sender `i`: all in `room`, or round-robin over `room-0 .. room-(K-1)`.
fn room_of(load: &Load, i: usize) -> String {
    if load.rooms <= 1 {
        load.room.clone()
    } else {
        format!("{}-{}", load.room, i % load.rooms)
    }
}

fn merge(o: &mut Outcome, r: Report) {
    o.sent += r.sent;
    o.acked += r.acked;
    o.latency.merge(&r.latency);
    o.errors.merge(&r.errors);
    o.violations.extend(r.violations);
    o.msgs_received += r.msgs;
    if let Some(f) = r.failure {
        o.failures.push(format!("{}: {f}", r.room));
    }
    o.seqs.entry(r.room).or_default().extend(r.seqs);
}
