//! Starting and stopping a server: the threads, and the order they start and stop in.
//!
//! `Server::start` opens the data directory, binds every listener (so that a bad address fails
//! before anything runs), then starts the sequencer, the users-file watcher and one reactor
//! per core (or, with `--driver threads`, the threads driver in their place). Between the two phases it runs the caller's `before_serving` hook (the daemon
//! drops root there): no thread of the server exists yet, so no byte is served with more
//! privilege than the hook leaves. Stopping is a flag plus a wake-up to every reactor; each
//! drains its connections and returns, and the sequencer ends once the last reactor has
//! dropped its sender.

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use mio::{Poll, Waker};

use crate::access;
use crate::auth;
use crate::config::{Backend, Config, Driver, Limits};
use crate::datadir::DataDir;
use crate::datadir::DirLock;
use crate::jetstream;
use crate::mailbox::Mailbox;
use crate::metrics::http::MetricsServer;
use crate::metrics::{EngineState, Metrics};
use crate::published::Published;
use crate::reactor::{self, Reactor, Speaks};
use crate::room::Rooms;
use crate::sequencer::Sequencer;
use crate::shared::Shared;
use crate::store::{self, LogWriter, RecoveryMode};
use crate::threads::Threads;
use crate::tls::server::ServerTls;
use crate::web::WebSettings;

/// Asks a running server to stop or to take new settings; cheap to clone, usable from a
/// signal thread (never from a reactor: reloading the users file reads the disk).
#[derive(Clone)]
pub struct StopHandle {
    shared: Arc<Shared>,
    watch: Arc<Mutex<Watches>>,
}

impl StopHandle {
    /// Rereads the users file and the private-rooms file now if they changed (SIGHUP; the
    /// watcher would within [`auth::POLL_EVERY`]); returns how many users and private rooms
    /// are loaded.
    pub fn reload_users(&self) -> (usize, usize) {
        self.watch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .poll(&self.shared);
        (
            self.shared.users.get().len(),
            self.shared.grants.get().len(),
        )
    }

    /// Rereads the TLS certificate and key (SIGHUP). `None` if TLS is not configured; an
    /// error keeps the certificate in force and says why, naming the file.
    pub fn reload_tls(&self) -> Option<Result<(), String>> {
        self.shared.tls.as_ref().map(ServerTls::reload)
    }

    /// Puts new limits in force; reactors take them at their next turn.
    pub fn apply_limits(&self, limits: Limits) {
        self.shared.apply_limits(limits);
    }

    pub fn stop(&self) {
        self.shared.stop();
    }
}

/// The threads that keep the messages: the sequencer and the archive with the local log, or
/// the JetStream engine.
enum StoreThreads {
    Local {
        sequencer: JoinHandle<LogWriter>,
        archive: JoinHandle<()>,
    },
    JetStream(JoinHandle<()>),
}

/// The local log as opened at start-up, before its threads run.
struct LocalStore {
    epoch: u64,
    log: LogWriter,
    dir: std::path::PathBuf,
}

/// A running server.
pub struct Server {
    addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    web_addrs: Vec<SocketAddr>,
    web_tls_addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    reactors: Vec<JoinHandle<()>>,
    store: StoreThreads,
    watcher: JoinHandle<()>,
    watch: Arc<Mutex<Watches>>,
    metrics: Option<(SocketAddr, JoinHandle<()>)>,
    /// Held while the server runs: no second daemon on the same data directory.
    _lock: DirLock,
}

impl Server {
    /// Opens the data directory, binds, and starts every thread.
    ///
    /// # Errors
    /// The data directory or users file cannot be opened, or an address cannot be bound.
    pub fn start(config: &Config) -> io::Result<Server> {
        Server::start_with(config, |_| Ok(()))
    }

    /// Like [`Server::start`], running `before_serving` once every socket is bound and every
    /// file is open, and before any thread of the server is started; it is given the bound
    /// addresses. The daemon drops its privileges there.
    ///
    /// # Errors
    /// As [`Server::start`], or what `before_serving` returned (nothing is started then).
    pub fn start_with(
        config: &Config,
        before_serving: impl FnOnce(&[SocketAddr]) -> io::Result<()>,
    ) -> io::Result<Server> {
        if config.driver == Driver::Fork {
            return Err(io::Error::other(
                "--driver fork is not a driver of this server: `chatd::fork::serve` runs it, \
                 before any thread starts",
            ));
        }
        let data = DataDir::open(&config.data_dir)?;
        let lock = data.lock()?;
        let (users_watch, users) = auth::Watch::open(data.users_path())?;
        let (access_watch, access) = access::Watch::open(data.access_path())?;
        let watch = Watches {
            users: users_watch,
            access: access_watch,
        };
        // Certificate problems fail the start, before anything is bound.
        let tls = match config.tls_files() {
            Some(files) if config.wants_tls() => {
                Some(ServerTls::load(&files).map_err(io::Error::other)?)
            }
            _ => None,
        };
        let count = config.reactor_count();
        let mut groups = Vec::new();
        for addr in config.listen_addrs() {
            groups.push((reactor::listener::bind_group(addr, count)?, Speaks::Plain));
        }
        for &addr in &config.tls_listen {
            groups.push((reactor::listener::bind_group(addr, count)?, Speaks::Tls));
        }
        for &addr in &config.web_listen {
            groups.push((reactor::listener::bind_group(addr, count)?, Speaks::Web));
        }
        for &addr in &config.web_tls_listen {
            groups.push((reactor::listener::bind_group(addr, count)?, Speaks::WebTls));
        }
        let bound = |kind: Speaks| {
            groups
                .iter()
                .filter(|(_, speaks)| *speaks == kind)
                .filter_map(|(g, _)| g.first().and_then(|l| l.local_addr().ok()))
                .collect::<Vec<_>>()
        };
        let (addrs, tls_addrs) = (bound(Speaks::Plain), bound(Speaks::Tls));
        let (web_addrs, web_tls_addrs) = (bound(Speaks::Web), bound(Speaks::WebTls));

        let mut polls = Vec::with_capacity(count);
        let mut mailboxes = Vec::with_capacity(count);
        for _ in 0..count {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), reactor::WAKER)?;
            mailboxes.push(Mailbox::new(waker));
            polls.push(poll);
        }
        let limits = config.limits.clone();
        let mailboxes: Arc<[Mailbox]> = mailboxes.into();
        let metrics = Arc::new(Metrics::new(count));
        let (submit, inbox) = mpsc::channel();
        let (fetch, requests) = mpsc::channel();
        // Taken by whichever store runs.
        let (mut inbox, mut requests) = (Some(inbox), Some(requests));
        let mut rooms = Rooms::new(limits.max_rooms, count, limits.ring);
        let (local, engine) = match &config.backend {
            Backend::Local => (Some(open_local(&data, config, &rooms)?), None),
            Backend::JetStream(nats) => {
                let setup = jetstream::Setup {
                    nats: nats.clone(),
                    retention: nats.retention,
                    ring: limits.ring,
                    max_frame: limits.max_frame,
                    mailboxes: Arc::clone(&mailboxes),
                    metrics: Arc::clone(&metrics),
                };
                let (Some(inbox), Some(requests)) = (inbox.take(), requests.take()) else {
                    return Err(io::Error::other("the store's channels were taken twice"));
                };
                let engine = jetstream::start(setup, inbox, requests)?;
                log::info!(
                    "jetstream: rooms on {}, {} replicas; epoch {:016x}",
                    nats.servers.join(", "),
                    nats.replicas,
                    engine.epoch.load(std::sync::atomic::Ordering::Relaxed)
                );
                rooms = rooms.kept_elsewhere(engine.follow);
                (None, Some((engine.epoch, engine.thread)))
            }
        };
        let epoch = match (&local, &engine) {
            (Some(local), _) => local.epoch,
            (None, Some((cell, _))) => cell.load(std::sync::atomic::Ordering::Relaxed),
            (None, None) => return Err(io::Error::other("no store was opened")),
        };
        let mut shared = Shared::new(
            limits,
            epoch,
            Published::new(users),
            rooms,
            Arc::clone(&mailboxes),
            metrics,
        );
        if let Some((cell, _)) = &engine {
            shared = shared.with_epoch_cell(Arc::clone(cell));
        }
        let shared = Arc::new(
            shared
                .with_access(access)
                .with_tls(tls, config.tls_handshakes)
                .with_web(WebSettings {
                    allowed_origins: config.web_allowed_origins.clone(),
                    trusted_proxies: config.web_trusted_proxies.clone(),
                }),
        );

        let metrics = match config.metrics {
            Some(addr) => {
                let view = Arc::clone(&shared);
                let render = Box::new(move || view.metrics.render(view.rooms.len()));
                let stop = Arc::clone(&shared);
                let stopping = Box::new(move || stop.is_stopping());
                let view = Arc::clone(&shared);
                let health = Box::new(move || health(&view));
                let (server, bound) = MetricsServer::bind(addr, render, stopping)?;
                Some((server.with_health(health), bound))
            }
            None => None,
        };

        // Everything is bound and open; from here on threads start and serve.
        before_serving(&addrs)?;

        let watch = Arc::new(Mutex::new(watch));
        let watcher = {
            let (watch, shared) = (Arc::clone(&watch), Arc::clone(&shared));
            std::thread::Builder::new()
                .name("users".into())
                .spawn(move || watch_users(&watch, &shared))?
        };
        let store = match (local, engine, inbox, requests) {
            (Some(local), _, Some(inbox), Some(requests)) => {
                let sequencer = Sequencer {
                    inbox,
                    mailboxes: Arc::clone(&shared.mailboxes),
                    ring: config.limits.ring,
                    log: local.log,
                    metrics: Arc::clone(&shared.metrics),
                };
                let sequencer = std::thread::Builder::new()
                    .name("sequencer".into())
                    .spawn(move || sequencer.run())?;
                let mailboxes = Arc::clone(&shared.mailboxes);
                let stop = Arc::clone(&shared);
                let dir = local.dir;
                let archive =
                    std::thread::Builder::new()
                        .name("archive".into())
                        .spawn(move || {
                            store::archive::run(requests, mailboxes, dir, || stop.is_stopping())
                        })?;
                StoreThreads::Local { sequencer, archive }
            }
            (None, Some((_, thread)), _, _) => StoreThreads::JetStream(thread),
            _ => return Err(io::Error::other("no store was opened")),
        };

        let mut reactors = Vec::with_capacity(count);
        if config.driver == Driver::Threads {
            // One listener per address (`reactor_count` is 1) and the one mailbox.
            let listeners = groups
                .iter_mut()
                .filter_map(|(g, speaks)| Some((g.pop()?, *speaks)))
                .collect();
            let poll = polls
                .pop()
                .ok_or_else(|| io::Error::other("the threads driver has no mailbox"))?;
            let driver = Threads::new(
                poll,
                listeners,
                Arc::clone(&shared),
                submit.clone(),
                fetch.clone(),
            )?;
            let handle = std::thread::Builder::new()
                .name("threads-driver".into())
                .spawn(move || driver.run())?;
            reactors.push(handle);
        }
        for (id, poll) in polls.into_iter().enumerate() {
            let listeners = groups
                .iter_mut()
                .filter_map(|(g, speaks)| Some((g.pop()?, *speaks)))
                .collect();
            let reactor = Reactor::new(
                id,
                poll,
                listeners,
                Arc::clone(&shared),
                submit.clone(),
                fetch.clone(),
            )?;
            let handle = std::thread::Builder::new()
                .name(format!("reactor-{id}"))
                .spawn(move || reactor.run())?;
            reactors.push(handle);
        }
        let metrics = match metrics {
            Some((server, bound)) => {
                let handle = std::thread::Builder::new()
                    .name("metrics".into())
                    .spawn(move || server.run())?;
                log::info!("metrics: serving /metrics and /healthz on http://{bound}");
                Some((bound, handle))
            }
            None => None,
        };
        Ok(Server {
            addrs,
            tls_addrs,
            web_addrs,
            web_tls_addrs,
            shared,
            reactors,
            store,
            watcher,
            watch,
            metrics,
            _lock: lock,
        })
    }

    /// The addresses actually bound, one per `--listen` (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The TLS addresses actually bound, one per `--tls-listen`.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// The addresses serving the web client over plain HTTP, as bound.
    pub fn web_addrs(&self) -> &[SocketAddr] {
        &self.web_addrs
    }

    /// The addresses serving the web client over HTTPS, as bound.
    pub fn web_tls_addrs(&self) -> &[SocketAddr] {
        &self.web_tls_addrs
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(addr, _)| *addr)
    }

    pub fn epoch(&self) -> u64 {
        self.shared.epoch()
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            shared: Arc::clone(&self.shared),
            watch: Arc::clone(&self.watch),
        }
    }

    /// Waits for every thread to finish.
    ///
    /// # Errors
    /// A thread panicked: a bug, reported rather than hidden.
    pub fn wait(self) -> io::Result<()> {
        let mut panicked = 0;
        for handle in self.reactors {
            if handle.join().is_err() {
                panicked += 1;
            }
        }
        match self.store {
            StoreThreads::Local { sequencer, archive } => {
                match sequencer.join() {
                    Ok(log) => {
                        let s = log.stats;
                        log::info!(
                            "log: {} records in {} batches, {} fsyncs, {} failed batches",
                            s.records,
                            s.batches,
                            s.fsyncs,
                            s.failed_batches
                        );
                    }
                    Err(_) => panicked += 1,
                }
                if archive.join().is_err() {
                    panicked += 1;
                }
            }
            StoreThreads::JetStream(engine) => {
                if engine.join().is_err() {
                    panicked += 1;
                }
            }
        }
        if self.watcher.join().is_err() {
            panicked += 1;
        }
        if let Some((_, handle)) = self.metrics
            && handle.join().is_err()
        {
            panicked += 1;
        }
        if panicked > 0 {
            return Err(io::Error::other(format!(
                "{panicked} server threads panicked"
            )));
        }
        Ok(())
    }
}

/// `/healthz`: with JetStream, whether the engine has NATS (503 while it has not); with the
/// local log, always healthy while serving.
fn health(shared: &Shared) -> Result<String, String> {
    match shared.metrics.jetstream.state() {
        EngineState::Off => Ok("ok\n".into()),
        EngineState::Up => Ok("ok\njetstream: connected\n".into()),
        EngineState::Down => Err("jetstream: NATS unreachable, reconnecting\n".into()),
    }
}

/// Opens the local log: recovers it, restores its rooms into `rooms`, and opens its writer.
fn open_local(data: &DataDir, config: &Config, rooms: &Rooms) -> io::Result<LocalStore> {
    let dir = store::log_dir(data.path());
    let opened = store::open(&dir, data.legacy_epoch()?, RecoveryMode::TolerateTornTail)?;
    let (ids, recovered) = match opened.ids {
        Some(ids) => (ids, opened.recovered),
        None => return Err(io::Error::other("the store opened without an epoch")),
    };
    if opened.minted {
        log::info!("log: no history yet; its epoch is {:016x}", ids.epoch);
    }
    if let Some(torn) = &recovered.torn {
        log::warn!(
            "log: cut {} bytes{} of an unfinished write off the end of {} (at offset {}: {})",
            torn.bytes,
            torn.zeros_note(),
            torn.path.display(),
            torn.offset,
            torn.reason
        );
    }
    for (name, history) in &recovered.rooms {
        rooms.restore(name, history.first, history.head, history.index.clone());
    }
    let log = LogWriter::open(&dir, ids.segments, config.store, &recovered, rooms)?;
    log::info!(
        "log: {} messages in {} rooms, {} segments, {} bytes",
        recovered.records,
        recovered.rooms.len(),
        recovered.segments.len(),
        log.total_bytes()
    );
    Ok(LocalStore {
        epoch: ids.epoch,
        log,
        dir,
    })
}

/// The files an operator changes under a running server: users and private rooms.
struct Watches {
    users: auth::Watch,
    access: access::Watch,
}

impl Watches {
    /// Rereads whichever changed and publishes it for the reactors.
    fn poll(&mut self, shared: &Shared) {
        self.users.poll(&shared.users);
        self.access.poll(&shared.grants);
    }
}

/// The watcher's thread: looks at the users and private-rooms files every
/// [`auth::POLL_EVERY`] until the server stops, and publishes each new version.
fn watch_users(watch: &Mutex<Watches>, shared: &Shared) {
    while !shared.is_stopping() {
        std::thread::sleep(auth::POLL_EVERY);
        watch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .poll(shared);
    }
}
