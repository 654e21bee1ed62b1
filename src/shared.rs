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

use crate::access::{Access, Grants};
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
    /// WELCOME's epoch. Fixed with the local log; with JetStream the cluster keeps it, and a
    /// room's history starting over there changes it while we run.
    epoch: Arc<AtomicU64>,
    pub users: Users,
    /// Who may use which room: private rooms and direct rooms.
    pub grants: Grants,
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

impl Connections {
    fn admit(&mut self, ip: IpAddr, limits: &Limits) -> Result<(), &'static str> {
        if self.total >= limits.max_connections {
            return Err("too many connections");
        }
        let from_ip = self.per_ip.entry(ip).or_insert(0);
        if *from_ip >= limits.max_connections_per_ip {
            return Err("too many connections from your address");
        }
        *from_ip += 1;
        self.total += 1;
        Ok(())
    }

    fn recount(&mut self, from: IpAddr, to: IpAddr, limits: &Limits) -> Result<(), &'static str> {
        let at_to = self.per_ip.get(&to).copied().unwrap_or(0);
        if at_to >= limits.max_connections_per_ip {
            return Err("too many connections from your address");
        }
        self.per_ip.insert(to, at_to + 1);
        self.forget(from);
        Ok(())
    }

    fn release(&mut self, ip: IpAddr) {
        self.total = self.total.saturating_sub(1);
        self.forget(ip);
    }

    fn forget(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
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
            epoch: Arc::new(AtomicU64::new(epoch)),
            users,
            grants: Grants::new(Access::default()),
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

    /// Checks rooms against `access` (the private-rooms file as loaded) instead of letting
    /// everyone use every room.
    #[must_use]
    pub fn with_access(mut self, access: Access) -> Shared {
        self.grants = Grants::new(access);
        self
    }

    /// Announces the epoch kept in `cell` (the JetStream engine's) instead of a fixed one.
    #[must_use]
    pub fn with_epoch_cell(mut self, cell: Arc<AtomicU64>) -> Shared {
        self.epoch = cell;
        self
    }

    /// The epoch to announce in WELCOME now.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Where the epoch is kept, for the store to change it.
    pub fn epoch_cell(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.epoch)
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
        c.admit(ip, limits)
    }

    /// Counts a connection already admitted under `from` under `to` instead (the client a
    /// trusted proxy named), if `to` has room under the per-address limit. The total does not
    /// change: it is the same connection.
    ///
    /// # Errors
    /// `to` is at its limit; the connection stays counted under `from`.
    pub fn recount(&self, from: IpAddr, to: IpAddr, limits: &Limits) -> Result<(), &'static str> {
        let mut c = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        c.recount(from, to, limits)
    }

    /// Counts a closed connection from `ip` out.
    pub fn release(&self, ip: IpAddr) {
        let mut c = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        c.release(ip);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_proxied_connection_moves_to_its_client_even_when_the_server_is_full() {
        let limits = Limits {
            max_connections: 2,
            max_connections_per_ip: 2,
            ..Limits::default()
        };
        let mut c = Connections::default();
        let proxy = ip(1);
        assert_eq!(c.admit(proxy, &limits), Ok(()));
        assert_eq!(c.admit(proxy, &limits), Ok(()));
        assert!(c.admit(ip(9), &limits).is_err(), "the server is full");
        // Full, yet moving a connection to the client it stands for adds nothing.
        assert_eq!(c.recount(proxy, ip(2), &limits), Ok(()));
        assert_eq!(c.total, 2);
        assert_eq!(c.per_ip.get(&proxy), Some(&1));
        assert_eq!(c.per_ip.get(&ip(2)), Some(&1));
        c.release(ip(2));
        c.release(proxy);
        assert_eq!(c.total, 0);
        assert!(c.per_ip.is_empty());
    }

    #[test]
    fn a_client_at_its_limit_stays_counted_under_the_proxy() {
        let limits = Limits {
            max_connections_per_ip: 1,
            ..Limits::default()
        };
        let mut c = Connections::default();
        assert_eq!(c.admit(ip(2), &limits), Ok(()));
        assert_eq!(c.admit(ip(1), &limits), Ok(()));
        assert!(c.recount(ip(1), ip(2), &limits).is_err());
        assert_eq!(c.per_ip.get(&ip(1)), Some(&1));
        assert_eq!(c.per_ip.get(&ip(2)), Some(&1));
        assert_eq!(c.total, 2);
    }
}
