//! One connection's thread in the threads driver: it waits for its own socket or its own
//! mailbox, then services its one connection with the reactor's connection code and the
//! reactor's `ConnEnv`, so the session cannot tell which driver it runs under.
//!
//! The thread blocks in `poll` on its own small `mio::Poll` (its socket and its waker), never
//! in `read` or `write`: a thread stuck in a blocking `write` to a client that reads nothing
//! could neither deliver its ACKs, nor see its timers (the write-stall timeout among them), nor
//! hear of shutdown. So the socket stays non-blocking, and the thread sleeps until the socket,
//! the dispatcher or the next timer tick needs it. It must never panic and never touch the disk.

use std::io;
use std::net::IpAddr;
use std::sync::atomic::Ordering::{AcqRel, Relaxed};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use super::{Common, ID};
use crate::access::Access;
use crate::auth::Table;
use crate::config::Limits;
use crate::mailbox::{ConnRef, Delivery, Mailbox};
use crate::metrics::Shard;
use crate::protocol::ErrorCode;
use crate::reactor::conn::{Conn, Scratch, Serviced, interrupted};
use crate::reactor::env::{ConnEnv, forget_member};
use crate::session::{Phase, Tick};
use crate::transport::tls::Failure;

/// The worker's waker token: its mailbox has something, or the dispatcher woke it.
pub const WAKER: Token = Token(0);
/// Its one socket.
const SOCKET: Token = Token(1);

/// Bytes read per `read` call. Smaller than a reactor's scratch: each thread owns its own,
/// and a thread per client multiplies it by the clients.
const READ_LEN: usize = 16 * 1024;

/// TLS handshake steps per turn: a thread has only its own handshake to work on.
const HANDSHAKES_PER_TURN: usize = 1;

pub struct Worker {
    poll: Poll,
    conn: Conn,
    key: usize,
    mailbox: Arc<Mailbox>,
    common: Arc<Common>,
    limits: Arc<Limits>,
    limits_generation: u64,
    users: Arc<Table>,
    users_generation: u64,
    access: Arc<Access>,
    access_generation: u64,
    /// Whether the dispatcher still counts this connection among TLS handshakes in flight.
    handshaking: bool,
    /// The phase, whether TLS and whether WebSocket this connection is counted under in the
    /// metrics gauges.
    counted: Option<(Phase, bool, bool)>,
}

impl Worker {
    /// A worker for `conn`, whose socket it registers with its own `poll`.
    ///
    /// # Errors
    /// Registering the socket failed.
    pub fn new(
        poll: Poll,
        mut conn: Conn,
        key: usize,
        mailbox: Arc<Mailbox>,
        common: Arc<Common>,
    ) -> io::Result<Worker> {
        poll.registry()
            .register(&mut conn.stream, SOCKET, Interest::READABLE)?;
        let (limits_generation, limits) = common.shared.limits_snapshot();
        let (users_generation, users) = common.shared.users.snapshot();
        let (access_generation, access) = common.shared.grants.snapshot();
        Ok(Worker {
            poll,
            handshaking: conn.transport.is_handshaking(),
            conn,
            key,
            mailbox,
            common,
            limits,
            limits_generation,
            users,
            users_generation,
            access,
            access_generation,
            counted: None,
        })
    }

    /// Serves the connection until it closes, then says so to the dispatcher.
    pub fn run(mut self) {
        let why = self.serve();
        self.close(why);
    }

    /// The connection's life; returns why it ended.
    fn serve(&mut self) -> &'static str {
        let mut events = Events::with_capacity(4);
        let mut scratch = Scratch::new(READ_LEN);
        let mut delivery = Delivery::default();
        let mut tick = crate::reactor::tick_interval(&self.limits);
        let mut next_tick = Instant::now() + tick;
        let mut stopping: Option<Instant> = None;
        // An edge may have passed before the socket was registered: look once.
        let mut again = true;
        loop {
            let timeout = if again {
                Duration::ZERO
            } else {
                next_tick.saturating_duration_since(Instant::now())
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if interrupted(&e) {
                    continue;
                }
                log::error!("connection #{}: poll failed: {e}", self.conn.serial);
                return "poll failed";
            }
            let now = Instant::now();
            self.take_published(now);
            tick = crate::reactor::tick_interval(&self.limits);
            for event in events.iter() {
                match event.token() {
                    WAKER => self.take_mail(&mut delivery, now),
                    _ => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.conn.readable = true;
                        }
                        if event.is_writable() || event.is_write_closed() {
                            self.conn.write_blocked = false;
                        }
                    }
                }
            }
            if stopping.is_none() && self.common.shared.is_stopping() {
                stopping = Some(now + self.limits.shutdown_timeout);
                self.conn.session.shut_down(now);
            }
            if now >= next_tick {
                next_tick = now + tick;
                if self.conn.session.tick(now, &self.limits) == Tick::Close {
                    return "deadline";
                }
            }
            self.count();
            scratch.handshakes = HANDSHAKES_PER_TURN;
            match self.service(&mut scratch, now) {
                Serviced::Wait => again = false,
                Serviced::Again => again = true,
                Serviced::Close => return "closed",
            }
            if let Some(interest) = self.conn.interest_change()
                && let Err(e) =
                    self.poll
                        .registry()
                        .reregister(&mut self.conn.stream, SOCKET, interest)
            {
                log::warn!("re-registering a connection: {e}");
                return "reregister failed";
            }
            if stopping.is_some_and(|deadline| now >= deadline) {
                log::warn!(
                    "connection #{}: cut at the shutdown deadline",
                    self.conn.serial
                );
                return "shutdown";
            }
        }
    }

    /// One pass of the reactor's connection code over this connection.
    fn service(&mut self, scratch: &mut Scratch, now: Instant) -> Serviced {
        let common = &*self.common;
        let mut members = &common.members;
        // New access rules are applied here, where the session's env is at hand.
        let recheck = common.shared.grants.generation() != self.access_generation;
        if recheck {
            (self.access_generation, self.access) = common.shared.grants.snapshot();
        }
        let mut env = ConnEnv {
            shared: &common.shared,
            limits: &self.limits,
            users: &self.users,
            access: &self.access,
            reactor: ID,
            conn: ConnRef {
                key: self.key,
                serial: self.conn.serial,
            },
            members: &mut members,
            sequencer: &common.sequencer,
            archive: &common.archive,
            now,
        };
        if recheck {
            self.conn.session.recheck_access(&mut env);
        }
        let serviced = self.conn.service(scratch, &common.shared, &mut env);
        if self.handshaking && !self.conn.transport.is_handshaking() {
            if let Some(shard) = common.shared.metrics.shard(ID) {
                Shard::add(&shard.tls_established, 1);
            }
            self.handshake_over();
        }
        serviced
    }

    /// Takes the newest limits and users table if either was replaced; a user removed or
    /// whose token changed is ended with AUTH_FAILED, as on a reactor.
    fn take_published(&mut self, now: Instant) {
        let shared = &self.common.shared;
        if shared.limits_changed_since(self.limits_generation) {
            (self.limits_generation, self.limits) = shared.limits_snapshot();
        }
        if shared.users.generation() == self.users_generation {
            return;
        }
        let (generation, newer) = shared.users.snapshot();
        let session = &mut self.conn.session;
        if session.phase() == Phase::Ready
            && let Some(why) = self.users.revoked(&newer, session.user())
            && session.revoke(ErrorCode::AuthFailed, why.message(), now)
        {
            log::info!(
                "ending #{} of user '{}': {}",
                self.conn.serial,
                session.user(),
                why.message()
            );
        }
        self.users = newer;
        self.users_generation = generation;
    }

    /// What the dispatcher routed here: ACKs and fetched history for this session (advanced
    /// rooms need nothing more: servicing fills from the rings).
    fn take_mail(&mut self, delivery: &mut Delivery, now: Instant) {
        self.mailbox.take(delivery);
        let shard = self.common.shared.metrics.shard(ID);
        let session = &mut self.conn.session;
        for stored in &delivery.stored {
            if let (Err(code), Some(shard)) = (stored.result, shard) {
                shard.error(code);
            }
            if stored.again {
                session.not_counted(&self.limits);
            }
            session.on_stored(stored.id, stored.result, now);
        }
        for fetched in delivery.fetched.drain(..) {
            if let (Ok(frames), Some(shard)) = (&fetched.frames, shard) {
                Shard::add(&shard.delivered, frames.len() as u64);
            }
            session.on_fetched(fetched.room, fetched.from, fetched.frames, now);
        }
    }

    /// Keeps the connection gauges (by phase, and TLS open) counting this connection where
    /// it is now. Many threads share the driver's shard, so each adds and takes away its own
    /// one rather than storing a total as a reactor does.
    fn count(&mut self) {
        let now = (
            self.conn.session.phase(),
            self.conn.transport.is_tls(),
            self.conn.transport.is_websocket(),
        );
        if self.counted != Some(now) {
            self.uncount();
            if let Some(shard) = self.common.shared.metrics.shard(ID) {
                gauge(shard, now.0).fetch_add(1, Relaxed);
                if now.1 {
                    shard.tls_open.fetch_add(1, Relaxed);
                }
                if now.2 {
                    shard.websocket_open.fetch_add(1, Relaxed);
                }
            }
            self.counted = Some(now);
        }
    }

    fn uncount(&mut self) {
        if let (Some((phase, tls, websocket)), Some(shard)) =
            (self.counted.take(), self.common.shared.metrics.shard(ID))
        {
            gauge(shard, phase).fetch_sub(1, Relaxed);
            if tls {
                shard.tls_open.fetch_sub(1, Relaxed);
            }
            if websocket {
                shard.websocket_open.fetch_sub(1, Relaxed);
            }
        }
    }

    /// A TLS handshake ended, either way: the dispatcher may accept another.
    fn handshake_over(&mut self) {
        if self.handshaking {
            self.handshaking = false;
            self.common.handshaking.fetch_sub(1, AcqRel);
            self.common.wake_dispatcher();
        }
    }

    fn close(mut self, why: &str) {
        let shared = Arc::clone(&self.common.shared);
        let shard = shared.metrics.shard(ID);
        let (serial, peer): (u64, IpAddr) = (self.conn.serial, self.conn.peer);
        if self.handshaking {
            let failure = self
                .conn
                .transport
                .tls()
                .and_then(|tls| tls.failure)
                .unwrap_or(match why {
                    "deadline" => Failure::Timeout,
                    _ => Failure::Other,
                });
            if let Some(shard) = shard {
                shard.tls_failed(failure);
            }
            log::debug!(
                "connection #{serial}: TLS handshake from {peer} failed ({})",
                failure.name()
            );
            self.handshake_over();
        }
        self.uncount();
        let mut members = &self.common.members;
        let user = self.conn.session.user();
        for (room, watching) in self.conn.session.memberships() {
            forget_member(&shared, &mut members, room, ID, self.key, user, watching);
        }
        if let Err(e) = self.poll.registry().deregister(&mut self.conn.stream) {
            log::debug!("deregistering a connection: {e}");
        }
        shared.release(peer);
        let session = &self.conn.session;
        if let (Some(code), Some(shard)) = (session.ended_by(), shard) {
            shard.error(code);
        }
        let user = session.user();
        match session.ended_by() {
            Some(ErrorCode::SlowConsumer) => {
                log::warn!("close #{serial} from {peer} user '{user}' (SLOW_CONSUMER)");
            }
            Some(code) => log::debug!("close #{serial} from {peer} ({code})"),
            None => log::debug!("close #{serial} from {peer} ({why})"),
        }
        let ended = ConnRef {
            key: self.key,
            serial,
        };
        // The dispatcher outlives its workers but for a straggler at shutdown: then nobody
        // is left to tell.
        let told = self
            .common
            .exited
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(ended)
            .is_ok();
        if told {
            self.common.wake_dispatcher();
        }
    }
}

fn gauge(shard: &Shard, phase: Phase) -> &std::sync::atomic::AtomicU64 {
    match phase {
        Phase::Handshake => &shard.handshake,
        Phase::Ready => &shard.ready,
        Phase::Closing => &shard.closing,
    }
}
