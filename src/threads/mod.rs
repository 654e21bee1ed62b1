//! The threads driver (`chatd serve --driver threads`): one OS thread per connection, for
//! study beside the reactor. It drives the very same `Session`, rooms, sequencer and archive,
//! through the reactor's `ConnEnv` and the reactor's connection code (`reactor::conn`); only
//! who waits for the socket differs.
//!
//! Its one dispatcher thread (this module) takes the place of the reactors: it owns the
//! listeners and the one mailbox the sequencer and the archive post to, accepts and spawns a
//! [`worker`] thread per connection, and routes each ACK, fetched history and advanced room
//! to the worker it concerns through that worker's own mailbox. To the rest of the server the
//! whole driver is reactor [`ID`]: its workers count as that reactor's members of each room.
//!
//! The dispatcher must never block on a worker: it only posts to their mailboxes, and it
//! joins a worker only after the worker said it has ended.

pub mod worker;

use std::io;
use std::net::{IpAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Poll, Waker};
use slab::Slab;

use crate::config::Limits;
use crate::mailbox::{ConnRef, Delivery, Mailbox};
use crate::metrics::Shard;
use crate::reactor::Speaks;
use crate::reactor::conn::{Conn, interrupted, would_block};
use crate::reactor::env::{LocalMembers, Members};
use crate::room::RoomId;
use crate::sequencer::Submit;
use crate::session::Session;
use crate::shared::Shared;
use crate::store::archive::Fetch;

use worker::Worker;

/// The reactor index the whole driver stands for: its mailbox, its metrics shard, and the
/// per-reactor member counts of every room.
pub const ID: usize = 0;

/// Connections accepted per turn, so that a connect flood cannot hold up the mail.
const ACCEPTS_PER_TURN: usize = 64;

/// How long the dispatcher waits past the shutdown deadline for workers to end (each ends by
/// that deadline on its own) before it leaves the stragglers to the process exit.
const STRAGGLER_GRACE: Duration = Duration::from_secs(1);

/// The driver's members of each room, shared by its workers (who join and leave) and its
/// dispatcher (who wakes them when a room advances). Locked only for a push or a lookup.
#[derive(Default)]
pub struct SharedMembers(Mutex<LocalMembers>);

impl Members for &SharedMembers {
    fn add(&mut self, room: RoomId, key: usize) {
        let mut members = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Members::add(&mut *members, room, key);
    }

    fn remove(&mut self, room: RoomId, key: usize) {
        let mut members = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Members::remove(&mut *members, room, key);
    }
}

/// What a worker thread shares with the dispatcher and the rest of the server.
pub struct Common {
    pub shared: Arc<Shared>,
    pub sequencer: Sender<Submit>,
    pub archive: Sender<Fetch>,
    pub members: SharedMembers,
    /// TLS connections still in their handshake, held under `shared.tls_handshakes`.
    pub handshaking: AtomicUsize,
    /// Workers say here that they ended, then wake the dispatcher.
    pub exited: Mutex<Sender<ConnRef>>,
}

impl Common {
    /// The dispatcher's mailbox, through which workers wake it too.
    pub fn wake_dispatcher(&self) {
        if let Some(mailbox) = self.shared.mailboxes.get(ID) {
            mailbox.wake();
        }
    }
}

/// A running worker, as the dispatcher knows it.
struct Running {
    serial: u64,
    mailbox: Arc<Mailbox>,
    thread: JoinHandle<()>,
}

pub struct Threads {
    poll: Poll,
    listeners: Vec<(TcpListener, Speaks)>,
    common: Arc<Common>,
    exited: Receiver<ConnRef>,
    workers: Slab<Running>,
    next_serial: u64,
    limits: Arc<Limits>,
    limits_generation: u64,
    /// Set once shutdown begins: the time by which every worker should have ended.
    stopping: Option<Instant>,
}

impl Threads {
    /// The driver over `poll` (whose waker the sequencer already holds) and its listeners.
    ///
    /// # Errors
    /// Registering a listener failed.
    pub fn new(
        poll: Poll,
        listeners: Vec<(StdListener, Speaks)>,
        shared: Arc<Shared>,
        sequencer: Sender<Submit>,
        archive: Sender<Fetch>,
    ) -> io::Result<Threads> {
        let registered = crate::reactor::register_listeners(&poll, listeners)?;
        let (limits_generation, limits) = shared.limits_snapshot();
        let (tx, exited) = mpsc::channel();
        Ok(Threads {
            poll,
            listeners: registered,
            common: Arc::new(Common {
                shared,
                sequencer,
                archive,
                members: SharedMembers::default(),
                handshaking: AtomicUsize::new(0),
                exited: Mutex::new(tx),
            }),
            exited,
            workers: Slab::new(),
            next_serial: 0,
            limits,
            limits_generation,
            stopping: None,
        })
    }

    /// Runs until shutdown has ended every worker (or its deadline passed).
    pub fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut delivery = Delivery::default();
        let mut woken_members = Vec::new();
        log::debug!("threads driver: serving, one thread per connection");
        loop {
            let tick = crate::reactor::tick_interval(&self.limits);
            if let Err(e) = self.poll.poll(&mut events, Some(tick)) {
                if interrupted(&e) {
                    continue;
                }
                log::error!("threads driver: poll failed, stopping: {e}");
                break;
            }
            let now = Instant::now();
            let shared = Arc::clone(&self.common.shared);
            if shared.limits_changed_since(self.limits_generation) {
                (self.limits_generation, self.limits) = shared.limits_snapshot();
            }
            self.reap();
            if let Some(mailbox) = shared.mailboxes.get(ID) {
                mailbox.take(&mut delivery);
                self.route(&mut delivery, &mut woken_members);
            }
            if self.stopping.is_none() && shared.is_stopping() {
                self.begin_shutdown(now);
            }
            // Every turn (an event, a wake-up or the tick): accepting from a drained listener
            // costs one refused syscall, and it also retries after a descriptor shortage and
            // after the TLS handshake cap paused accepting.
            self.accept(now);
            if let Some(deadline) = self.stopping {
                if self.workers.is_empty() {
                    break;
                }
                if now >= deadline + STRAGGLER_GRACE {
                    log::warn!(
                        "threads driver: {} connection threads still running past the \
                         shutdown deadline; leaving them to the exit",
                        self.workers.len()
                    );
                    break;
                }
            }
        }
    }

    /// Joins the workers that said they ended.
    fn reap(&mut self) {
        while let Ok(ConnRef { key, serial }) = self.exited.try_recv() {
            if self.workers.get(key).is_some_and(|w| w.serial == serial) {
                let running = self.workers.remove(key);
                if running.thread.join().is_err() {
                    log::error!("threads driver: connection thread #{serial} panicked");
                }
            }
        }
    }

    /// Hands each item of the driver's mail to the worker it concerns.
    fn route(&mut self, delivery: &mut Delivery, woken: &mut Vec<usize>) {
        let worker = |workers: &Slab<Running>, conn: ConnRef| {
            workers
                .get(conn.key)
                .filter(|w| w.serial == conn.serial)
                .map(|w| Arc::clone(&w.mailbox))
        };
        for stored in &delivery.stored {
            // The connection may have ended (and its key been reused) since it sent.
            if let Some(mailbox) = worker(&self.workers, stored.conn) {
                mailbox.post(std::slice::from_ref(stored), &[]);
            }
        }
        for fetched in delivery.fetched.drain(..) {
            if let Some(mailbox) = worker(&self.workers, fetched.conn) {
                mailbox.post_fetched(fetched);
            }
        }
        // A presence change wakes every member's thread, as an advance: only the thread knows
        // whether its session watches the room, and a thread woken for nothing just sleeps
        // again.
        for &room in delivery.advanced.iter().chain(&delivery.presence) {
            woken.clear();
            if let Some(keys) = self
                .common
                .members
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&room)
            {
                woken.extend_from_slice(keys);
            }
            for key in woken.iter() {
                if let Some(w) = self.workers.get(*key) {
                    w.mailbox.post(&[], &[room]);
                }
            }
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        self.stopping = Some(now + self.limits.shutdown_timeout);
        for (mut listener, _) in self.listeners.drain(..) {
            if let Err(e) = self.poll.registry().deregister(&mut listener) {
                log::debug!("deregistering a listener: {e}");
            }
        }
        for (_, w) in &self.workers {
            w.mailbox.wake();
        }
    }

    fn accept(&mut self, now: Instant) {
        let mut budget = ACCEPTS_PER_TURN;
        for i in 0..self.listeners.len() {
            while budget > 0 {
                let Some(&(ref listener, speaks)) = self.listeners.get(i) else {
                    break;
                };
                let common = &self.common;
                if speaks.is_tls()
                    && common.handshaking.load(Ordering::Acquire) >= common.shared.tls_handshakes
                {
                    // Enough handshakes in flight: the backlog holds the rest until a worker
                    // finishes one and wakes us.
                    break;
                }
                match listener.accept() {
                    Ok((stream, peer)) => {
                        budget -= 1;
                        self.admit(stream, peer.ip(), speaks, now);
                    }
                    // This listener is drained.
                    Err(e) if would_block(&e) => break,
                    // A signal interrupted accept: try again.
                    Err(e) if interrupted(&e) => {}
                    // Out of descriptors or memory: the next turn retries.
                    Err(e) => {
                        log::warn!("threads driver: accept failed: {e}");
                        break;
                    }
                }
            }
        }
    }

    fn admit(&mut self, mut stream: TcpStream, peer: IpAddr, speaks: Speaks, now: Instant) {
        let shared = &self.common.shared;
        let shard = shared.metrics.shard(ID);
        if let Err(why) = shared.admit(peer, &self.limits) {
            if let Some(shard) = shard {
                Shard::add(&shard.refused, 1);
            }
            log::debug!("refused {peer}: {why}");
            crate::reactor::refuse(&mut stream, speaks, why);
            return;
        }
        let transport = match crate::reactor::transport_for(speaks, shared.tls.as_ref()) {
            Ok(transport) => transport,
            Err(e) => {
                log::warn!("cannot serve {peer}: {e}");
                shared.release(peer);
                return;
            }
        };
        // Chat frames are small and latency matters more than packet count.
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("TCP_NODELAY on a connection from {peer}: {e}");
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        let entry = self.workers.vacant_entry();
        let conn = ConnRef {
            key: entry.key(),
            serial,
        };
        let handshaking = transport.is_handshaking();
        let (worker, mailbox) = match (|| {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), worker::WAKER)?;
            let mailbox = Arc::new(Mailbox::new(waker));
            let session = Session::new(now, &self.limits);
            let socket = Conn::new(stream, peer, serial, session, transport);
            let worker = Worker::new(
                poll,
                socket,
                conn.key,
                Arc::clone(&mailbox),
                Arc::clone(&self.common),
            )?;
            Ok::<_, io::Error>((worker, mailbox))
        })() {
            Ok(made) => made,
            Err(e) => {
                log::warn!("cannot serve a connection from {peer}: {e}");
                shared.release(peer);
                return;
            }
        };
        if handshaking {
            self.common.handshaking.fetch_add(1, Ordering::AcqRel);
        }
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{serial}"))
            .spawn(move || worker.run());
        match spawned {
            Ok(thread) => {
                if let Some(shard) = shard {
                    Shard::add(&shard.accepted, 1);
                }
                log::debug!("threads driver: open #{serial} from {peer} on its own thread");
                entry.insert(Running {
                    serial,
                    mailbox,
                    thread,
                });
            }
            // Out of threads (RLIMIT_NPROC, memory): the cost this driver is here to show.
            Err(e) => {
                log::warn!("cannot start a thread for a connection from {peer}: {e}");
                if handshaking {
                    self.common.handshaking.fetch_sub(1, Ordering::AcqRel);
                }
                shared.release(peer);
            }
        }
    }
}
