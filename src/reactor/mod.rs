//! The reactor: one thread, one mio `Poll`, its own listeners and a slab of connections.
//!
//! Each turn it waits for readiness, takes the newest limits and users table if either was
//! replaced (ending the sessions of users removed or whose token changed), accepts, empties
//! its mailbox (ACKs and rooms that advanced), runs the timers, then services every
//! connection that has something to do:
//! read what the session will take, write what it owes. Budgets bound every loop so that no
//! connection, however busy, holds the others up. Only the reactor registers, deregisters and
//! closes sockets; sessions just say what they want.
//!
//! A reactor must never block (on disk, on a lock held for long, on another thread) and must
//! never panic: a dead reactor is a bug that takes its connections with it.

pub mod conn;
pub mod env;
pub mod listener;

use crate::metrics::histogram::micros;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::access::Access;
use crate::auth::Table;
use crate::config::Limits;
use crate::mailbox::{ConnRef, Delivery};
use crate::metrics::Shard;
use crate::protocol::{ErrorCode, ServerFrame, encode_server};
use crate::sequencer::Submit;
use crate::session::{Phase, Session, Tick};
use crate::shared::Shared;
use crate::store::archive::Fetch;
use crate::tls::server::ServerTls;
use crate::transport::tls::Failure;
use crate::transport::{TlsConn, Transport, WebTls};
use crate::web::WsConn;
use conn::{Conn, Scratch, Serviced, interrupted, would_block};
use env::{ConnEnv, forget_member};

/// The waker's token: the sequencer (or shutdown) has something for us.
pub const WAKER: Token = Token(0);
/// Listener tokens are `LISTENER_BASE + index`.
const LISTENER_BASE: usize = 1;
/// Connection tokens are `CONN_BASE + slab key`; below it, the reserved tokens.
const CONN_BASE: usize = 1024;

/// Connections accepted per turn: a connect flood must not starve established clients.
const ACCEPTS_PER_TURN: usize = 256;

/// How often a persistent accept failure is logged.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// Events taken per poll.
const EVENTS_CAPACITY: usize = 1024;

/// Bytes read per `read` call, into the reactor's one scratch buffer: sessions parse straight
/// from it, so an idle connection owns no read buffer at all.
const SCRATCH_LEN: usize = 64 * 1024;

/// Connections that may work on their TLS handshake in one turn, however many are ready: a
/// full handshake costs ~0.1-0.2 ms, so this bounds a turn's handshake work to a few ms.
const HANDSHAKES_PER_TURN: usize = 16;

/// What a listener's connections speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaks {
    /// Protocol v1 in the clear.
    Plain,
    /// Protocol v1 inside TLS.
    Tls,
    /// HTTP: the web client's files, and protocol v1 inside WebSocket messages.
    Web,
    /// The same inside TLS (HTTPS).
    WebTls,
}

impl Speaks {
    /// Whether a connection on this listener starts with a TLS handshake.
    pub fn is_tls(self) -> bool {
        matches!(self, Speaks::Tls | Speaks::WebTls)
    }
}

pub struct Reactor {
    id: usize,
    poll: Poll,
    listeners: Vec<(TcpListener, Speaks)>,
    /// TLS connections still in their handshake, and whether accepting on the TLS listeners
    /// is paused because there are `--tls-handshakes` of them.
    handshaking: usize,
    tls_paused: bool,
    conns: Slab<Conn>,
    shared: Arc<Shared>,
    sequencer: Sender<Submit>,
    archive: Sender<Fetch>,
    /// This reactor's members of each room.
    members: env::LocalMembers,
    /// Connections to service this turn.
    ready: Vec<usize>,
    /// A listener may still hold connections we did not accept.
    accept_pending: bool,
    next_serial: u64,
    /// Set once shutdown begins: the time by which every connection is gone.
    stopping: Option<Instant>,
    tick: Duration,
    /// The limits this turn runs under, and their generation in `shared`.
    limits: Arc<Limits>,
    limits_generation: u64,
    /// The users table logins are checked against, and its generation in `shared`. Every
    /// session in `Ready` logged in against it (or an older table with the same digest).
    users: Arc<Table>,
    users_generation: u64,
    /// Who may use which room, and its generation in `shared`.
    access: Arc<Access>,
    access_generation: u64,
    /// When an accept failure was last logged: at fd exhaustion it fails every tick.
    accept_warned: Option<Instant>,
}

/// The environment of connection `key` (of `serial`) on reactor `$reactor`, built from the
/// reactor's fields one by one, so that it can be borrowed while the connection itself is
/// borrowed from `conns` (a method would borrow the whole reactor).
macro_rules! conn_env {
    ($reactor:ident, $key:expr, $serial:expr, $now:expr) => {
        ConnEnv {
            shared: &$reactor.shared,
            limits: &$reactor.limits,
            users: &$reactor.users,
            access: &$reactor.access,
            reactor: $reactor.id,
            conn: ConnRef {
                key: $key,
                serial: $serial,
            },
            members: &mut $reactor.members,
            sequencer: &$reactor.sequencer,
            archive: &$reactor.archive,
            now: $now,
        }
    };
}

impl Reactor {
    /// A reactor over `poll` (whose waker the sequencer already holds) and its listeners.
    ///
    /// # Errors
    /// Registering a listener failed.
    pub fn new(
        id: usize,
        poll: Poll,
        listeners: Vec<(StdListener, Speaks)>,
        shared: Arc<Shared>,
        sequencer: Sender<Submit>,
        archive: Sender<Fetch>,
    ) -> io::Result<Reactor> {
        let registered = register_listeners(&poll, listeners)?;
        let (limits_generation, limits) = shared.limits_snapshot();
        let (users_generation, users) = shared.users.snapshot();
        let (access_generation, access) = shared.grants.snapshot();
        let tick = tick_interval(&limits);
        Ok(Reactor {
            id,
            poll,
            listeners: registered,
            handshaking: 0,
            tls_paused: false,
            conns: Slab::new(),
            shared,
            sequencer,
            archive,
            members: HashMap::new(),
            ready: Vec::new(),
            accept_pending: true,
            next_serial: 0,
            stopping: None,
            tick,
            limits,
            limits_generation,
            users,
            users_generation,
            access,
            access_generation,
            accept_warned: None,
        })
    }

    /// Runs until shutdown has closed every connection (or its deadline passed).
    pub fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let mut scratch = Scratch::new(SCRATCH_LEN);
        let mut delivery = Delivery::default();
        let mut next_tick = Instant::now() + self.tick;
        log::debug!("reactor {}: serving", self.id);
        loop {
            let busy = !self.ready.is_empty() || self.accept_pending;
            let timeout = if busy {
                Duration::ZERO
            } else {
                next_tick.saturating_duration_since(Instant::now())
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if interrupted(&e) {
                    continue;
                }
                log::error!("reactor {}: poll failed, stopping: {e}", self.id);
                break;
            }
            let now = Instant::now();
            if self.shared.limits_changed_since(self.limits_generation) {
                self.take_limits();
                next_tick = next_tick.min(now + self.tick);
            }
            if self.shared.users.generation() != self.users_generation {
                self.take_users(now);
            }
            if self.shared.grants.generation() != self.access_generation {
                self.take_access(now);
            }
            let mut woken = false;
            for event in events.iter() {
                match event.token() {
                    WAKER => woken = true,
                    Token(t) if t < CONN_BASE => self.accept_pending = true,
                    Token(t) => {
                        let key = t - CONN_BASE;
                        // An event for a connection closed earlier this turn is normal: skip it.
                        let Some(conn) = self.conns.get_mut(key) else {
                            continue;
                        };
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            conn.readable = true;
                        }
                        if event.is_writable() || event.is_write_closed() {
                            conn.write_blocked = false;
                        }
                        schedule(&mut self.conns, &mut self.ready, key);
                    }
                }
            }
            if woken {
                self.take_mail(&mut delivery, now);
            }
            if self.stopping.is_none() && self.shared.is_stopping() {
                self.begin_shutdown(now);
            }
            if self.accept_pending {
                self.accept(now);
            }
            if now >= next_tick {
                self.on_tick(now);
                next_tick = now + self.tick;
            }
            scratch.handshakes = HANDSHAKES_PER_TURN;
            self.service_ready(&mut scratch, now);
            if let Some(deadline) = self.stopping
                && (self.conns.is_empty() || now >= deadline)
            {
                break;
            }
        }
        let left = self.conns.len();
        if left > 0 {
            log::warn!(
                "reactor {}: cutting {left} connections at the shutdown deadline",
                self.id
            );
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(key, "shutdown");
        }
    }

    fn accept(&mut self, now: Instant) {
        self.accept_pending = false;
        let mut budget = ACCEPTS_PER_TURN;
        for i in 0..self.listeners.len() {
            loop {
                if budget == 0 {
                    self.accept_pending = true;
                    return;
                }
                let Some((listener, speaks)) = self.listeners.get(i) else {
                    break;
                };
                let speaks = *speaks;
                if speaks.is_tls() && self.handshaking >= self.shared.tls_handshakes {
                    // Enough handshakes in flight: the kernel's backlog holds the rest until
                    // one finishes (`handshake_over` resumes accepting).
                    self.tls_paused = true;
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
                    // Out of descriptors or memory: leave the rest queued; the next tick retries.
                    Err(e) => {
                        let quiet = self
                            .accept_warned
                            .is_some_and(|t| now < t + ACCEPT_WARN_EVERY);
                        if !quiet {
                            log::warn!(
                                "reactor {}: accept failed (retrying every tick): {e}",
                                self.id
                            );
                            self.accept_warned = Some(now);
                        }
                        break;
                    }
                }
            }
        }
    }

    fn admit(&mut self, mut stream: TcpStream, peer: IpAddr, speaks: Speaks, now: Instant) {
        let shard = self.shared.metrics.shard(self.id);
        if let Err(why) = self.shared.admit(peer, &self.limits) {
            if let Some(shard) = shard {
                Shard::add(&shard.refused, 1);
            }
            log::debug!("refused {peer}: {why}");
            refuse(&mut stream, speaks, why);
            return;
        }
        let transport = match transport_for(speaks, self.shared.tls.as_ref()) {
            Ok(transport) => transport,
            Err(e) => {
                log::warn!("cannot serve {peer}: {e}");
                self.shared.release(peer);
                return;
            }
        };
        // Chat frames are small and latency matters more than packet count.
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("TCP_NODELAY on a connection from {peer}: {e}");
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut stream, Token(CONN_BASE + key), Interest::READABLE)
        {
            log::warn!("cannot register a connection from {peer}: {e}");
            self.shared.release(peer);
            return;
        }
        if let Some(shard) = shard {
            Shard::add(&shard.accepted, 1);
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        let session = Session::new(now, &self.limits);
        if transport.is_handshaking() {
            self.handshaking += 1;
        }
        entry.insert(Conn::new(stream, peer, serial, session, transport));
        log::debug!("reactor {}: open #{serial} from {peer}", self.id);
        schedule(&mut self.conns, &mut self.ready, key);
    }

    /// Applies what the sequencer sent: ACKs to their senders, a wake-up for every local
    /// member of each room that advanced, and for every local watcher of each room whose
    /// presence changed.
    fn take_mail(&mut self, delivery: &mut Delivery, now: Instant) {
        let Some(mailbox) = self.shared.mailboxes.get(self.id) else {
            return;
        };
        mailbox.take(delivery);
        if let Some(since) = delivery.since {
            let waited = Instant::now().saturating_duration_since(since);
            self.shared.metrics.store.mail_wait.observe(micros(waited));
        }
        for stored in &delivery.stored {
            let ConnRef { key, serial } = stored.conn;
            // The connection may have closed (and its key been reused) since it sent.
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.serial != serial {
                continue;
            }
            if let (Err(code), Some(shard)) = (stored.result, self.shared.metrics.shard(self.id)) {
                shard.error(code);
            }
            if stored.again {
                conn.session.not_counted(&self.limits);
            }
            conn.session.on_stored(stored.id, stored.result, now);
            schedule(&mut self.conns, &mut self.ready, key);
        }
        for fetched in delivery.fetched.drain(..) {
            let ConnRef { key, serial } = fetched.conn;
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.serial != serial {
                continue;
            }
            if let (Ok(frames), Some(shard)) = (&fetched.frames, self.shared.metrics.shard(self.id))
            {
                Shard::add(&shard.delivered, frames.len() as u64);
            }
            conn.session
                .on_fetched(fetched.room, fetched.from, fetched.frames, now);
            schedule(&mut self.conns, &mut self.ready, key);
        }
        for room in &delivery.advanced {
            let Some(keys) = self.members.get(room) else {
                continue;
            };
            for &key in keys {
                // A member waiting for WRITABLE will be served when the socket drains.
                if self.conns.get(key).is_some_and(|c| !c.write_blocked) {
                    schedule(&mut self.conns, &mut self.ready, key);
                }
            }
        }
        // A presence change concerns only the watchers: the other members of the room are
        // not serviced for it.
        for &room in &delivery.presence {
            let Some(keys) = self.members.get(&room) else {
                continue;
            };
            for &key in keys {
                if self
                    .conns
                    .get(key)
                    .is_some_and(|c| !c.write_blocked && c.session.watches(room))
                {
                    schedule(&mut self.conns, &mut self.ready, key);
                }
            }
        }
    }

    fn on_tick(&mut self, now: Instant) {
        let mut closing = Vec::new();
        let mut phases = [0u64; 3];
        let mut tls_open = 0;
        let mut ws_open = 0;
        for (key, conn) in self.conns.iter_mut() {
            tls_open += u64::from(conn.transport.is_tls());
            ws_open += u64::from(conn.transport.is_websocket());
            match conn.session.phase() {
                Phase::Handshake => phases[0] += 1,
                Phase::Ready => phases[1] += 1,
                Phase::Closing => phases[2] += 1,
            }
            match conn.session.tick(now, &self.limits) {
                Tick::Idle => {}
                Tick::Flush => {
                    if !conn.scheduled {
                        conn.scheduled = true;
                        self.ready.push(key);
                    }
                }
                Tick::Close => closing.push(key),
            }
        }
        for key in closing {
            self.close(key, "deadline");
        }
        if let Some(shard) = self.shared.metrics.shard(self.id) {
            let [handshake, ready, closing] = phases;
            shard
                .handshake
                .store(handshake, std::sync::atomic::Ordering::Relaxed);
            shard
                .ready
                .store(ready, std::sync::atomic::Ordering::Relaxed);
            shard
                .closing
                .store(closing, std::sync::atomic::Ordering::Relaxed);
            shard
                .tls_open
                .store(tls_open, std::sync::atomic::Ordering::Relaxed);
            shard
                .websocket_open
                .store(ws_open, std::sync::atomic::Ordering::Relaxed);
        }
        // Retry accepts that failed for want of descriptors.
        self.accept_pending = !self.listeners.is_empty();
    }

    /// Takes the limits SIGHUP put in force. Sessions read them from here from now on; a
    /// lower connection cap refuses new connections and closes none.
    fn take_limits(&mut self) {
        let (generation, limits) = self.shared.limits_snapshot();
        self.tick = tick_interval(&limits);
        self.limits = limits;
        self.limits_generation = generation;
    }

    /// Takes the users table the watcher published, and ends every logged-in session whose
    /// user it removed or whose token it changed: ERROR AUTH_FAILED saying which, then close.
    fn take_users(&mut self, now: Instant) {
        let (generation, newer) = self.shared.users.snapshot();
        for (key, conn) in self.conns.iter_mut() {
            if conn.session.phase() != Phase::Ready {
                continue;
            }
            let Some(why) = self.users.revoked(&newer, conn.session.user()) else {
                continue;
            };
            if conn
                .session
                .revoke(ErrorCode::AuthFailed, why.message(), now)
            {
                log::info!(
                    "reactor {}: ending #{} of user '{}': {}",
                    self.id,
                    conn.serial,
                    conn.session.user(),
                    why.message()
                );
                if !conn.scheduled {
                    conn.scheduled = true;
                    self.ready.push(key);
                }
            }
        }
        self.users = newer;
        self.users_generation = generation;
    }

    /// Takes the access rules the watcher published, and takes away from every session the
    /// rooms its user may no longer use (ERROR FORBIDDEN, then LEFT: see
    /// [`crate::session::Session::recheck_access`]).
    fn take_access(&mut self, now: Instant) {
        let (generation, newer) = self.shared.grants.snapshot();
        self.access = newer;
        self.access_generation = generation;
        for (key, conn) in self.conns.iter_mut() {
            if conn.session.phase() != Phase::Ready {
                continue;
            }
            let mut env = conn_env!(self, key, conn.serial, now);
            if conn.session.recheck_access(&mut env) && !conn.scheduled {
                conn.scheduled = true;
                self.ready.push(key);
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
        self.accept_pending = false;
        for (key, conn) in self.conns.iter_mut() {
            conn.session.shut_down(now);
            if !conn.scheduled {
                conn.scheduled = true;
                self.ready.push(key);
            }
        }
    }

    fn service_ready(&mut self, scratch: &mut Scratch, now: Instant) {
        let ready = std::mem::take(&mut self.ready);
        for &key in &ready {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.scheduled = false;
            let mut env = conn_env!(self, key, conn.serial, now);
            let was_handshaking = conn.transport.is_handshaking();
            let serviced = conn.service(scratch, &self.shared, &mut env);
            let established = was_handshaking && !conn.transport.is_handshaking();
            let interest = conn.interest_change();
            if serviced == Serviced::Again {
                conn.scheduled = true;
            }
            if established {
                if let Some(shard) = self.shared.metrics.shard(self.id) {
                    Shard::add(&shard.tls_established, 1);
                }
                self.handshake_over();
            }
            match serviced {
                Serviced::Wait => {}
                Serviced::Again => self.ready.push(key),
                Serviced::Close => {
                    self.close(key, "closed");
                    continue;
                }
            }
            if let Some(interest) = interest {
                let token = Token(CONN_BASE + key);
                let failed = self.conns.get_mut(key).map(|c| {
                    self.poll
                        .registry()
                        .reregister(&mut c.stream, token, interest)
                });
                if let Some(Err(e)) = failed {
                    log::warn!("re-registering a connection: {e}");
                    self.close(key, "reregister failed");
                }
            }
        }
        // Keep the list's allocation for the next turn.
        if self.ready.is_empty() {
            self.ready = ready;
            self.ready.clear();
        }
    }

    fn close(&mut self, key: usize, why: &str) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        if let Err(e) = self.poll.registry().deregister(&mut conn.stream) {
            log::debug!("deregistering a connection: {e}");
        }
        if let Some(tls) = conn.transport.tls()
            && tls.is_handshaking()
        {
            let failure = tls.failure.unwrap_or(match why {
                "deadline" => Failure::Timeout,
                _ => Failure::Other,
            });
            if let Some(shard) = self.shared.metrics.shard(self.id) {
                shard.tls_failed(failure);
            }
            log::debug!(
                "reactor {}: TLS handshake from {} failed ({})",
                self.id,
                conn.peer,
                failure.name()
            );
            self.handshake_over();
        }
        let user = conn.session.user();
        for (room, watching) in conn.session.memberships() {
            forget_member(
                &self.shared,
                &mut self.members,
                room,
                self.id,
                key,
                user,
                watching,
            );
        }
        self.shared.release(conn.peer);
        let (id, serial, peer, user) = (self.id, conn.serial, conn.peer, conn.session.user());
        if let (Some(code), Some(shard)) = (conn.session.ended_by(), self.shared.metrics.shard(id))
        {
            shard.error(code);
        }
        match conn.session.ended_by() {
            Some(ErrorCode::SlowConsumer) => {
                log::warn!(
                    "reactor {id}: close #{serial} from {peer} user '{user}' (SLOW_CONSUMER)"
                );
            }
            Some(code) => log::debug!("reactor {id}: close #{serial} from {peer} ({code})"),
            None => log::debug!("reactor {id}: close #{serial} from {peer} ({why})"),
        }
    }
}

impl Reactor {
    /// A TLS handshake ended, either way: one more may start, so resume accepting TLS if the
    /// limit had paused it.
    fn handshake_over(&mut self) {
        self.handshaking = self.handshaking.saturating_sub(1);
        if self.tls_paused && self.handshaking < self.shared.tls_handshakes {
            self.tls_paused = false;
            self.accept_pending = true;
        }
    }
}

/// Registers a driver's listeners with its `Poll`, listener `i` under `LISTENER_BASE + i`.
///
/// # Errors
/// Registering a listener failed.
pub(crate) fn register_listeners(
    poll: &Poll,
    listeners: Vec<(StdListener, Speaks)>,
) -> io::Result<Vec<(TcpListener, Speaks)>> {
    let mut registered = Vec::with_capacity(listeners.len());
    for (i, (listener, speaks)) in listeners.into_iter().enumerate() {
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, Token(LISTENER_BASE + i), Interest::READABLE)?;
        registered.push((listener, speaks));
    }
    Ok(registered)
}

fn schedule(conns: &mut Slab<Conn>, ready: &mut Vec<usize>, key: usize) {
    if let Some(conn) = conns.get_mut(key)
        && !conn.scheduled
    {
        conn.scheduled = true;
        ready.push(key);
    }
}

/// Tells a connection we will not take why, in one best-effort write, before dropping it.
pub(crate) fn refuse(stream: &mut TcpStream, speaks: Speaks, why: &str) {
    let mut answer = Vec::new();
    match speaks {
        Speaks::Plain => {
            let error = ServerFrame::Error {
                code: ErrorCode::TooMany.as_u16(),
                reference: 0,
                message: why,
            };
            encode_server(&error, &mut answer);
        }
        Speaks::Web => answer.extend_from_slice(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ),
        // A TLS client cannot read a frame before its handshake: it just sees the close.
        Speaks::Tls | Speaks::WebTls => {}
    }
    // A fresh socket's buffer takes a small answer whole; if not, the client just sees a close.
    let _ = stream.write(&answer);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// The transport a new connection on a `speaks` listener starts with.
///
/// # Errors
/// TLS could not be started, or the listener speaks TLS and the server has no certificate.
pub(crate) fn transport_for(speaks: Speaks, tls: Option<&ServerTls>) -> Result<Transport, String> {
    let start = |config: &Arc<rustls::ServerConfig>| {
        TlsConn::new(Arc::clone(config)).map_err(|e| format!("cannot start TLS: {}", e.detail))
    };
    Ok(match (speaks, tls) {
        (Speaks::Plain, _) => Transport::Plain(Vec::new()),
        (Speaks::Web, _) => Transport::Web(Box::default()),
        (Speaks::Tls, Some(tls)) => Transport::Tls(Box::new(start(&tls.config)?)),
        (Speaks::WebTls, Some(tls)) => Transport::WebTls(Box::new(WebTls {
            tls: start(&tls.web)?,
            ws: WsConn::new(),
        })),
        (Speaks::Tls | Speaks::WebTls, None) => {
            return Err("a TLS listener without a TLS configuration".into());
        }
    })
}

/// How often the timers run: often enough that a deadline fires within a fraction of its
/// length, rarely enough that an idle server sleeps.
pub(crate) fn tick_interval(limits: &Limits) -> Duration {
    let shortest = limits
        .handshake_timeout
        .min(limits.idle_timeout)
        .min(limits.write_stall_timeout)
        .min(crate::session::CLOSE_GRACE);
    (shortest / 8).clamp(Duration::from_millis(10), Duration::from_millis(250))
}
