//! What every reactor, the sequencer and the metrics thread share while a server runs: the
//! limits, the epoch, the users, the rooms, the mailboxes, and the connection counts that the
//! limits are enforced against.
//!
//! It holds no thread and does no I/O; it must never hold a lock across anything slower than
//! a counter update.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::auth::Users;
use crate::config::Limits;
use crate::mailbox::Mailbox;
use crate::metrics::Metrics;
use crate::room::Rooms;

/// What every reactor and the sequencer share.
pub struct Shared {
    pub limits: Limits,
    pub epoch: u64,
    pub users: Users,
    pub rooms: Rooms,
    pub mailboxes: Arc<[Mailbox]>,
    pub metrics: Arc<Metrics>,
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
            limits,
            epoch,
            users,
            rooms,
            mailboxes,
            metrics,
            sessions: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            connections: Mutex::new(Connections::default()),
        }
    }

    /// Counts a new connection from `ip` in, if the limits allow it.
    ///
    /// # Errors
    /// Why it is refused, in words for the client.
    pub fn admit(&self, ip: IpAddr) -> Result<(), &'static str> {
        let mut c = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if c.total >= self.limits.max_connections {
            return Err("too many connections");
        }
        let from_ip = c.per_ip.entry(ip).or_insert(0);
        if *from_ip >= self.limits.max_connections_per_ip {
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
