//! The `threads` driver: a thread and a blocking `Client` per sender connection. Simple and
//! close to what a naive client does, but with hundreds of connections on a small machine the
//! bench's own thread switching, not the daemon, can set the pace.

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Instant;

use chatd::client::Client;
use chatd::protocol::ClientFrame;

use super::Driven;
use super::sender::{Event, Report, Sender};
use crate::args::Load;
use crate::login::{Target, client_id, join_live, login_speaking};

/// Stack of a sender thread: it holds a few small buffers, and 256 of them must be cheap.
const SENDER_STACK: usize = 256 * 1024;

/// After its last answer a sender sends BYE and reads until the close, at most this many
/// frames (the MSGs of other senders still arriving), so a daemon that never closes cannot
/// hold the run.
const DRAIN_FRAMES: u64 = 10_000_000;

pub fn drive(
    target: &Target,
    load: &Load,
    rooms: &[String],
    text: &Arc<str>,
) -> Result<Driven, String> {
    let gate = Arc::new(Gate::default());
    let protocol = load.protocol;
    let mut handles = Vec::with_capacity(rooms.len());
    for (i, room) in rooms.iter().enumerate() {
        let sender = Sender::new(room.clone(), Arc::clone(text), load.messages, load.window);
        let (target, at_gate, room) = (target.clone(), Arc::clone(&gate), room.clone());
        let spawned = thread::Builder::new()
            .name(format!("sender-{i}"))
            .stack_size(SENDER_STACK)
            .spawn(move || {
                let client = if protocol == 2 { client_id(i) } else { 0 };
                let ready = login_speaking(&target, protocol, client)
                    .and_then(|mut c| join_live(&mut c, &room).map(|()| c));
                // Everyone arrives at the gate, ready or not, so that the count completes.
                if !at_gate.arrive_and_wait() {
                    return Err(format!("sender {i}: the run was called off"));
                }
                let mut c = ready.map_err(|e| format!("sender {i}: {e}"))?;
                Ok(run(&mut c, sender))
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                // The senders already started wait at the gate: call them off first.
                gate.open(false);
                for h in handles {
                    let _ = h.join();
                }
                return Err(format!("spawning sender {i}: {e}"));
            }
        }
    }
    gate.wait_for(rooms.len());
    gate.open(true);
    let start = Instant::now();
    let senders = handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err("a sender thread panicked".into()))
        })
        .collect();
    Ok(Driven { start, senders })
}

/// One connection: send and read until every SEND is answered, then BYE.
fn run(c: &mut Client, mut s: Sender) -> Report {
    let mut wire = Vec::new();
    let (mut closed, mut failure) = (false, None);
    while !s.done() {
        wire.clear();
        s.fill(&mut wire, Instant::now());
        if !wire.is_empty()
            && let Err(e) = c.send_raw(&wire)
        {
            failure = Some(format!("sending: {e}"));
            break;
        }
        match c.recv() {
            Ok(Some(reply)) => s.on_event(Event::of_reply(&reply), Instant::now()),
            Ok(None) => {
                closed = true;
                break;
            }
            Err(e) => {
                failure = Some(format!("receiving: {e}"));
                break;
            }
        }
    }
    if failure.is_none() && !closed {
        closed = say_bye(c, &mut s);
    }
    s.finish(closed, failure, Instant::now())
}

/// BYE, then read until the server closes (true if it did), still checking what arrives.
fn say_bye(c: &mut Client, s: &mut Sender) -> bool {
    if c.send(&ClientFrame::Bye).is_err() {
        return false;
    }
    for _ in 0..DRAIN_FRAMES {
        match c.recv() {
            Ok(Some(reply)) => s.on_event(Event::of_reply(&reply), Instant::now()),
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
    false
}

/// Where senders wait until all have logged in, so that they start together.
#[derive(Default)]
struct Gate {
    /// Senders arrived, and whether the run goes ahead once decided.
    state: Mutex<(usize, Option<bool>)>,
    changed: Condvar,
}

impl Gate {
    /// Counts this sender in and waits for the decision; true to go ahead.
    fn arrive_and_wait(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 += 1;
        self.changed.notify_all();
        loop {
            if let Some(go) = s.1 {
                return go;
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits until `n` senders arrived (each arrives once, ready or failed).
    fn wait_for(&self, n: usize) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.0 < n {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn open(&self, go: bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.1 = Some(go);
        self.changed.notify_all();
    }
}
