//! The engine thread's runtime: connecting to NATS, reading the epoch, then taking work off
//! its queue until the reactors are gone.
//!
//! The queue is drained a burst at a time and ACKs are posted once per burst, so a busy
//! moment costs each reactor one wake-up rather than one per message. Everything slow (a
//! publish waiting for its PubAck, a room's consumer, a history read) runs as its own task,
//! so the loop itself never waits on NATS.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::ConnectOptions;
use async_nats::jetstream::{self, kv};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::{Notify, oneshot};

use super::publish::{Order, Publish};
use super::{CONNECT_PATIENCE, Failure, Setup, Work, epoch, history, presence, room};
use crate::metrics::EngineState;
use crate::room::{Room, RoomId};

/// How long one attempt at a JetStream request may take before it is tried again (a publish
/// within its SEND's deadline) or counted as failed.
pub const ATTEMPT: Duration = Duration::from_secs(1);

/// How long to wait before trying again something NATS refused.
pub const BACKOFF: Duration = Duration::from_millis(250);

/// What every task of the engine may need, cheap to clone.
#[derive(Clone)]
pub struct Link {
    pub js: jetstream::Context,
    pub bucket: kv::Store,
    pub setup: Arc<Setup>,
    /// This node, for `Nats-Msg-Id`: random per run.
    pub node: u64,
    /// Signalled by a room's follower each time its ring advanced.
    pub advanced: Arc<Advanced>,
    /// The engine's own queue, for followers to report the keys they see.
    pub work: UnboundedSender<Work>,
}

/// One `Notify` per followed room, so that a SEND's ACK can wait until its message is in the
/// ring here: then the sender sees its own MSG before its ACK, and a JOIN after the ACK sees a
/// head at least that seq, as with the local log.
#[derive(Default)]
pub struct Advanced {
    rooms: Mutex<std::collections::HashMap<RoomId, Arc<Notify>>>,
}

impl Advanced {
    pub fn of(&self, room: RoomId) -> Arc<Notify> {
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(rooms.entry(room).or_default())
    }
}

/// The engine thread's body. `ready` hears once: connected (with the epoch in `epoch`), or why
/// not.
pub(super) fn run(
    setup: Setup,
    epoch: Arc<AtomicU64>,
    work: UnboundedSender<Work>,
    queue: UnboundedReceiver<Work>,
    ready: &std::sync::mpsc::Sender<Result<(), Failure>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(Failure(format!(
                "cannot make the engine's runtime: {e}"
            ))));
            return;
        }
    };
    runtime.block_on(async move {
        let servers = setup.nats.servers.join(", ");
        let connecting = connect(setup, work.clone());
        let link = match tokio::time::timeout(CONNECT_PATIENCE, connecting).await {
            Ok(Ok((link, value))) => {
                epoch.store(value, std::sync::atomic::Ordering::Relaxed);
                link
            }
            Ok(Err(failure)) => {
                let _ = ready.send(Err(failure));
                return;
            }
            Err(_) => {
                let why = format!(
                    "no NATS server of {servers} gave a JetStream answer within {}s",
                    CONNECT_PATIENCE.as_secs()
                );
                let _ = ready.send(Err(Failure(why)));
                return;
            }
        };
        tokio::spawn(watch_epoch(link.bucket.clone(), epoch));
        let followed: Arc<Mutex<Vec<Arc<Room>>>> = Arc::default();
        tokio::spawn(room::refresh_firsts(link.clone(), Arc::clone(&followed)));
        let (stopping, stop_presence) = unbounded_channel();
        tokio::spawn(presence::share(
            link.clone(),
            Arc::clone(&followed),
            stop_presence,
        ));
        let _ = ready.send(Ok(()));
        serve(link, work, queue, followed, stopping).await;
    });
}

/// Connects with the credentials given, opens the bucket and reads the epoch.
async fn connect(setup: Setup, work: UnboundedSender<Work>) -> Result<(Link, u64), Failure> {
    let nats = &setup.nats;
    let options = match (&nats.creds, &nats.token_file) {
        (Some(path), _) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| Failure(format!("cannot read {}: {e}", path.display())))?,
        (None, Some(path)) => {
            let token = std::fs::read_to_string(path)
                .map_err(|e| Failure(format!("cannot read {}: {e}", path.display())))?;
            ConnectOptions::with_token(token.trim().to_string())
        }
        (None, None) => ConnectOptions::new(),
    };
    let options = match &nats.ca {
        Some(ca) => options.add_root_certificates(ca.clone()),
        None => options,
    };
    let metrics = Arc::clone(&setup.metrics);
    let options = options
        .name(concat!("chatd/", env!("CARGO_PKG_VERSION")))
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event| {
            let metrics = Arc::clone(&metrics);
            async move {
                match event {
                    async_nats::Event::Connected => {
                        log::info!("jetstream: connected to NATS");
                        metrics.jetstream.set_state(EngineState::Up);
                    }
                    async_nats::Event::Disconnected => {
                        log::warn!("jetstream: lost NATS; reconnecting");
                        metrics.jetstream.set_state(EngineState::Down);
                    }
                    async_nats::Event::Closed => metrics.jetstream.set_state(EngineState::Down),
                    other => log::info!("jetstream: {other}"),
                }
            }
        });
    let client = options.connect(nats.servers.clone()).await.map_err(|e| {
        Failure(format!(
            "cannot connect to {}: {e}",
            nats.servers.join(", ")
        ))
    })?;
    setup.metrics.jetstream.set_state(EngineState::Up);
    let version = client.server_info().version;
    if before_2_10(&version) {
        log::warn!(
            "jetstream: nats-server {version} can lose messages it confirmed when a server is \
             killed and restarted (measured with 2.9.10, docs/cluster.md); use 2.10 or newer"
        );
    }
    let mut js = jetstream::new(client);
    js.set_timeout(ATTEMPT);
    // A cluster that has just started has no JetStream leader yet: ask until it has (the
    // caller's timeout bounds the wait), and say what the last answer was.
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE - ATTEMPT;
    let (bucket, epoch) = loop {
        let read = async {
            let bucket = epoch::bucket(&js, nats.replicas).await?;
            let epoch = epoch::read_or_mint(&bucket).await?;
            Ok::<_, Failure>((bucket, epoch))
        };
        match read.await {
            Ok(both) => break both,
            Err(failure) if tokio::time::Instant::now() >= deadline => return Err(failure),
            Err(failure) => {
                log::info!("jetstream: not ready yet ({failure}); asking again");
                tokio::time::sleep(BACKOFF).await;
            }
        }
    };
    let node =
        crate::store::epoch::mint().map_err(|e| Failure(format!("cannot draw a node id: {e}")))?;
    let link = Link {
        js,
        bucket,
        setup: Arc::new(setup),
        node,
        advanced: Arc::default(),
        work,
    };
    Ok((link, epoch))
}

/// Whether a nats-server version (`2.9.10`, maybe with a suffix) is older than 2.10, the
/// first we have not seen lose confirmed writes under repeated kills; `false` if unreadable.
fn before_2_10(version: &str) -> bool {
    let mut parts = version.trim_start_matches('v').split('.');
    let number = |p: Option<&str>| {
        p.map(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|d| d.parse::<u32>().ok())
    };
    match (number(parts.next()), number(parts.next())) {
        (Some(major), Some(minor)) => (major, minor) < (2, 10),
        _ => false,
    }
}

/// Follows the epoch for the life of the engine, watching again after any failure.
async fn watch_epoch(bucket: kv::Store, cell: Arc<AtomicU64>) {
    loop {
        if let Err(failure) = epoch::follow(bucket.clone(), Arc::clone(&cell)).await {
            log::warn!("jetstream: {failure}");
        }
        tokio::time::sleep(BACKOFF * 4).await;
    }
}

/// Takes work until every reactor is gone; then has the presence task say goodbye to the
/// other nodes (through `stopping`) before the runtime ends.
async fn serve(
    link: Link,
    work: UnboundedSender<Work>,
    mut queue: UnboundedReceiver<Work>,
    followed: Arc<Mutex<Vec<Arc<Room>>>>,
    stopping: UnboundedSender<oneshot::Sender<()>>,
) {
    let reactors = link.setup.mailboxes.len();
    let mut order = Order::new(reactors);
    let mut publish = Publish::new(link.clone(), work.clone());
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        while let Some(item) = next {
            match item {
                Work::Submit(submit) => publish.start(submit, &mut order),
                Work::Stored(outcome) => publish.settle(outcome, &mut order),
                Work::Learned {
                    msg_id,
                    author,
                    seq,
                    ts_ms,
                } => publish.learn(&msg_id, &author, seq, ts_ms),
                Work::Fetch(fetch) => {
                    tokio::spawn(history::serve(link.clone(), fetch));
                }
                Work::Follow(room) => {
                    {
                        let mut list = followed.lock().unwrap_or_else(PoisonError::into_inner);
                        // A room whose load failed comes again on its next JOIN.
                        if !list.iter().any(|r| Arc::ptr_eq(r, &room)) {
                            list.push(Arc::clone(&room));
                        }
                    }
                    tokio::spawn(room::follow(link.clone(), room));
                }
                Work::Stop => {
                    order.post(&link.setup.mailboxes);
                    // Every connection is closed by now, so each room's set here is empty.
                    let (done, said) = oneshot::channel();
                    if stopping.send(done).is_ok() {
                        let _ = tokio::time::timeout(Duration::from_secs(2), said).await;
                    }
                    return;
                }
            }
            next = queue.try_recv().ok();
        }
        order.post(&link.setup.mailboxes);
    }
}

#[cfg(test)]
mod tests {
    use super::before_2_10;

    #[test]
    fn servers_before_2_10_are_told_apart() {
        assert!(before_2_10("2.9.10"));
        assert!(before_2_10("v2.9.25"));
        assert!(before_2_10("1.4.1"));
        assert!(!before_2_10("2.10.0"));
        assert!(!before_2_10("2.15.1-beta"));
        assert!(!before_2_10("3.0.0"));
        assert!(!before_2_10("unknown"));
    }
}
