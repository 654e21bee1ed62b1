//! `--store jetstream`: rooms kept on a NATS JetStream cluster that any number of chatd nodes
//! share, one stream per room, the stream's sequence being the room's seq.
//!
//! One engine thread owns the NATS client, on a single-threaded tokio runtime of its own; no
//! other thread of chatd runs tokio. Reactors reach it exactly as they reach the sequencer and
//! the archive thread with the local log (the same `Submit` and `Fetch` over the same kind of
//! channel, forwarded into the engine's queue) and the engine answers through their mailboxes.
//! Rooms reach it when a node first needs one (`Rooms::kept_elsewhere`). The engine must
//! never ACK a SEND that JetStream did not confirm, and never show a member a message that is
//! not in the stream.

mod engine;
pub mod epoch;
pub mod frames;
mod history;
pub mod names;
mod once;
mod presence;
mod publish;
mod rebuild;
mod room;
pub mod roster;

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use crate::config::NatsSettings;
use crate::mailbox::Mailbox;
use crate::metrics::Metrics;
use crate::room::{Follow, RingLimits, Room};
use crate::sequencer::Submit;
use crate::store::Retention;
use crate::store::archive::Fetch;

/// Why the engine could not do something, said for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How long start-up waits for NATS before giving up with an error.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

/// Work for the engine, from the reactors (through the forwarders) and from its own tasks.
#[derive(Debug)]
enum Work {
    Submit(Submit),
    Fetch(Fetch),
    Follow(Arc<Room>),
    /// A publish task's outcome: its ticket and the seq, or why not.
    Stored(publish::Outcome),
    /// A follower appended a message whose `Nats-Msg-Id` may be a SEND's key (see
    /// [`once::Keys::learn`]).
    Learned {
        msg_id: String,
        author: String,
        seq: u64,
        ts_ms: u64,
    },
    /// Every reactor is gone.
    Stop,
}

/// What the engine needs besides the NATS settings.
pub struct Setup {
    pub nats: NatsSettings,
    pub retention: Retention,
    pub ring: RingLimits,
    pub max_frame: u32,
    pub mailboxes: Arc<[Mailbox]>,
    pub metrics: Arc<Metrics>,
}

/// A started engine.
pub struct Engine {
    /// The epoch as the cluster keeps it; the engine changes it if a room's history starts over.
    pub epoch: Arc<AtomicU64>,
    /// Hand this to `Rooms::kept_elsewhere`.
    pub follow: Follow,
    pub thread: JoinHandle<()>,
}

/// Starts the engine thread and waits until it has reached NATS and read the epoch (at most
/// [`CONNECT_PATIENCE`]). `submits` and `fetches` are the receiving ends of what the reactors
/// send.
///
/// # Errors
/// NATS cannot be reached or JetStream refuses; the message says which.
pub fn start(
    setup: Setup,
    submits: Receiver<Submit>,
    fetches: Receiver<Fetch>,
) -> io::Result<Engine> {
    let (work, queue) = unbounded_channel();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let epoch = Arc::new(AtomicU64::new(0));
    let thread = {
        let (work, epoch) = (work.clone(), Arc::clone(&epoch));
        std::thread::Builder::new()
            .name("jetstream".into())
            .spawn(move || engine::run(setup, epoch, work, queue, &ready_tx))?
    };
    match ready.recv_timeout(CONNECT_PATIENCE + Duration::from_secs(5)) {
        Ok(Ok(())) => {}
        Ok(Err(Failure(why))) => return Err(io::Error::other(format!("jetstream: {why}"))),
        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
            return Err(io::Error::other("jetstream: the engine did not start"));
        }
    };
    forward("js-submit", submits, work.clone(), Work::Submit, true)?;
    forward("js-fetch", fetches, work.clone(), Work::Fetch, false)?;
    let follow: Follow = Box::new(move |room: &Arc<Room>| {
        // The engine outlives the reactors; if it is gone, the room simply stays Loading
        // until the server stops.
        let _ = work.send(Work::Follow(Arc::clone(room)));
    });
    Ok(Engine {
        epoch,
        follow,
        thread,
    })
}

/// A thread that moves what reactors send over a std channel into the engine's queue (a
/// reactor must not know tokio, and the engine must not block on a std channel). When the
/// reactors' senders are all gone it ends, and `stop` says whether that ends the engine too.
fn forward<T: Send + 'static>(
    name: &str,
    from: Receiver<T>,
    to: UnboundedSender<Work>,
    wrap: fn(T) -> Work,
    stop: bool,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while let Ok(item) = from.recv() {
                if to.send(wrap(item)).is_err() {
                    return;
                }
            }
            if stop {
                let _ = to.send(Work::Stop);
            }
        })?;
    Ok(())
}
