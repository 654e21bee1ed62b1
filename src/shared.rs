//! What every reactor, the sequencer and the metrics thread share while a server runs: the
//! limits, the epoch, the users, the rooms, the mailboxes, and the connection counts that the
//! limits are enforced against.
//!
//! The limits and the users table are published values: SIGHUP and the users-file watcher
//! replace them whole, and each reactor takes a snapshot once per turn. It holds no thread and
//! does no I/O; it must never hold a lock across anything slower than a counter update.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::auth::Users;
use crate::config::Limits;
use crate::mailbox::Mailbox;
use crate::metrics::Metrics;
use crate::published::Published;
use crate::room::Rooms;
use crate::tls::server::ServerTls;
use crate::web::WebSettings;

/// What every reactor and the sequencer share.
pub struct Shared {
    /// The limits in force; read through [`Shared::limits_snapshot`], replaced by
    /// [`Shared::apply_limits`].
    limits: Published<Limits>,
    pub epoch: u64,
    pub users: Users,
    pub rooms: Rooms,
    pub mailboxes: Arc<[Mailbox]>,
    pub metrics: Arc<Metrics>,
    /// The TLS configuration for `--tls-listen`, if any, and the handshakes each reactor
    /// works on at once.
    pub tls: Option<ServerTls>,
    pub tls_handshakes: usize,
    /// What the web listeners let in (origins, trusted proxies).
    pub web: WebSettings,
    sessions: AtomicU64,
    stopping: AtomicBool,
    connections: Mutex<Connections>,
}

#[derive(Default)]
struct Connections {
    total: usize,
    per_ip: HashMap<IpAddr, u32>,
}

impl Shared {
    pub fn new(
        limits: Limits,
        epoch: u64,
        users: Users,
        rooms: Rooms,
        mailboxes: Arc<[Mailbox]>,
        metrics: Arc<Metrics>,
    ) -> Shared {
        Shared {
            limits: Published::new(limits),
            epoch,
            users,
            rooms,
            mailboxes,
            metrics,
            tls: None,
            tls_handshakes: crate::config::DEFAULT_TLS_HANDSHAKES,
            web: WebSettings::default(),
            sessions: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            connections: Mutex::new(Connections::default()),
        }
    }

    /// Serves TLS with `tls`, each reactor working on at most `handshakes` at once.
    pub fn with_tls(mut self, tls: Option<ServerTls>, handshakes: usize) -> Shared {
        self.tls = tls;
        self.tls_handshakes = handshakes.max(1);
        self
    }

    /// Serves the web listeners with `web`.
    pub fn with_web(mut self, web: WebSettings) -> Shared {
        self.web = web;
        self
    }

    /// The limits in force and their generation, which moves each time they are replaced.
    /// Cheap, but a reactor takes it once per turn (when the generation moved), not per frame.
    pub fn limits_snapshot(&self) -> (u64, Arc<Limits>) {
        self.limits.snapshot()
    }

    /// Whether limits newer than `generation` were applied.
    pub fn limits_changed_since(&self, generation: u64) -> bool {
        self.limits.generation() != generation
    }

    /// Puts new limits in force (SIGHUP). Connections already open stay, even past a lower
    /// cap; sessions and reactors see the new values at their next turn.
    pub fn apply_limits(&self, limits: Limits) {
        self.rooms.set_max_rooms(limits.max_rooms);
        self.limits.publish(limits);
    }

    /// Counts a new connection from `ip` in, if `limits` (the caller's snapshot) allow it.
    ///
    /// # Errors
    /// Why it is refused, in words for the client.
    pub fn admit(&self, ip: IpAddr, limits: &Limits) -> Result<(), &'static str> {
        let mut c = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if c.total >= limits.max_connections {
            return Err("too many connections");
        }
        let from_ip = c.per_ip.entry(ip).or_insert(0);
        if *from_ip >= limits.max_connections_per_ip {
            return Err("too many connections from your address");
        }
        *from_ip += 1;
        c.total += 1;
        Ok(())
    }

    /// Counts a closed connection from `ip` out.
    pub fn release(&self, ip: IpAddr) {
        let mut c = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&ip);
            }
        }
    }

    pub fn next_session_id(&self) -> u64 {
        self.sessions.fetch_add(1, Ordering::Relaxed)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Raises the stop flag and wakes every reactor to see it.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        for mailbox in self.mailboxes.iter() {
            mailbox.wake();
        }
    }
}
