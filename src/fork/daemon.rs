//! The fork driver's daemon: one single-threaded process that accepts and forks. For each
//! client it forks a sender, then a reader, connected by a pipe (reader to sender), puts both
//! in the client processes' group and closes its own copies of the socket and the pipe. It
//! never reads or writes a client's socket, and never touches a room file after start-up.
//!
//! Its signals (SIGINT, SIGTERM, SIGHUP, SIGCHLD, and the group's SIGUSR1) are blocked, so no
//! handler ever runs; it reads them from a descriptor (`signals`) in the same `poll` as its
//! listeners. The mask is inherited by every child, which is why a sender's SIGUSR1 is never
//! lost before its first `sigwait`.
//!
//! The group belongs to an *anchor*, a child that does nothing but exist, so that the group
//! outlives any one pair and the daemon itself never receives SIGUSR1. The anchor and every
//! reader hold the read end of the *lifeline*, a pipe whose only write end the daemon holds:
//! at shutdown the daemon closes it, each reader reads EOF, says SHUTTING_DOWN and ends its
//! pair, and the anchor ends. If the daemon dies outright, the kernel closes it the same
//! way, so no child outlives the daemon by more than its client takes to read the goodbye.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe2, setpgid};

use super::PairConfig;
use super::reader::Reader;
use super::sender::Sender;
use super::signals::Signals;
use crate::protocol::{ErrorCode, ServerFrame, encode_server};

/// Connections accepted per listener per turn, so that a connect flood cannot hold up
/// reaping and signals.
const ACCEPTS_PER_TURN: usize = 64;

/// The longest the daemon sleeps without looking for ended children. SIGCHLD wakes it as
/// soon as one ends; this only bounds how long a zombie could wait should the kernel not
/// report one (kqueue's signal filter does, as signalfd does; this is a net under both).
const REAP_EVERY: Duration = Duration::from_secs(1);

/// What only the daemon may hold: a child gives all of it up first thing.
struct Heritage {
    listeners: Vec<TcpListener>,
    signals: Option<Signals>,
    /// The lifeline's write end: closed to tell every pair to stop.
    lifeline: Option<OwnedFd>,
    /// The lifeline's read end, handed to the anchor and the readers.
    lifeline_read: Option<OwnedFd>,
}

impl Heritage {
    /// In a child, just forked: closes the daemon's descriptors and hands over the lifeline's
    /// read end.
    fn leave(&mut self) -> Option<OwnedFd> {
        self.listeners.clear();
        if let Some(signals) = self.signals.take() {
            signals.leave();
        }
        drop(self.lifeline.take());
        self.lifeline_read.take()
    }
}

/// One client's pair of processes, until both are reaped.
struct Pair {
    session: u64,
    ip: IpAddr,
    reader: Option<Pid>,
    sender: Option<Pid>,
    /// The daemon killed one of them because the other ended first.
    cut: bool,
}

/// The running daemon.
pub struct Daemon {
    heritage: Heritage,
    config: PairConfig,
    anchor: Option<Pid>,
    pairs: Vec<Pair>,
    per_ip: HashMap<IpAddr, u32>,
    sessions: u64,
}

impl Daemon {
    /// Blocks the daemon's signals, opens the lifeline and forks the anchor whose group every
    /// client process joins.
    ///
    /// # Errors
    /// The signals cannot be blocked or watched, or a pipe or the anchor cannot be made.
    pub fn start(listeners: Vec<TcpListener>, mut config: PairConfig) -> io::Result<Daemon> {
        let mut blocked = SigSet::empty();
        for signal in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGCHLD,
            Signal::SIGUSR1,
        ] {
            blocked.add(signal);
        }
        // The only thread's mask is the process's, and every child inherits it.
        blocked.thread_block()?;
        let signals = Signals::new(&blocked)?;
        let (lifeline_read, lifeline) = pipe2(OFlag::O_CLOEXEC)?;
        let mut heritage = Heritage {
            listeners,
            signals: Some(signals),
            lifeline: Some(lifeline),
            lifeline_read: Some(lifeline_read),
        };
        let anchor = spawn(&mut heritage, |lifeline| {
            if setpgid(Pid::from_raw(0), Pid::from_raw(0)).is_err() {
                return 1;
            }
            hold(lifeline)
        })?;
        // Also here, so that the group exists before the first pair is forked to join it.
        setpgid(anchor, anchor)?;
        config.group = anchor;
        Ok(Daemon {
            heritage,
            config,
            anchor: Some(anchor),
            pairs: Vec::new(),
            per_ip: HashMap::new(),
            sessions: 0,
        })
    }

    /// Accepts and reaps until SIGTERM or SIGINT, then stops.
    ///
    /// # Errors
    /// The anchor ended (the group is gone), `poll` failed, or a second signal cut the stop.
    pub fn run(mut self) -> Result<(), String> {
        loop {
            if let Err(e) = self.wait(REAP_EVERY) {
                return self.stop(Err(e));
            }
            let mut stop = None;
            for signal in self.take_signals() {
                match signal {
                    Signal::SIGTERM | Signal::SIGINT => stop = Some(signal),
                    Signal::SIGHUP => ::log::info!(
                        "SIGHUP: --driver fork reads the users file at every HELLO; its \
                         other settings need a restart"
                    ),
                    _ => {}
                }
            }
            self.reap();
            if self.anchor.is_none() {
                let why = "the anchor of the client processes' group ended; stopping";
                ::log::error!("{why}");
                return self.stop(Err(why.to_string()));
            }
            if let Some(signal) = stop {
                ::log::info!("{signal}: shutting down gracefully");
                return self.stop(Ok(()));
            }
            self.accept();
        }
    }

    /// Sleeps until a listener or a signal has something, or `timeout`.
    fn wait(&self, timeout: Duration) -> Result<(), String> {
        let listeners = self.heritage.listeners.iter().map(|l| l.as_fd());
        let signals = self.heritage.signals.iter().map(|s| s.as_fd());
        let mut fds: Vec<PollFd> = listeners
            .chain(signals)
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => Ok(()),
            Err(e) => Err(format!("poll: {e}")),
        }
    }

    fn take_signals(&mut self) -> Vec<Signal> {
        let Some(signals) = self.heritage.signals.as_mut() else {
            return Vec::new();
        };
        signals.take().unwrap_or_else(|e| {
            ::log::error!("reading signals: {e}");
            Vec::new()
        })
    }

    fn accept(&mut self) {
        for i in 0..self.heritage.listeners.len() {
            for _ in 0..ACCEPTS_PER_TURN {
                let Some(listener) = self.heritage.listeners.get(i) else {
                    break;
                };
                match listener.accept() {
                    Ok((stream, peer)) => self.admit(stream, peer),
                    // Drained: poll says when there is more.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // A signal came in: accept again.
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // Out of descriptors, or the client gave up first: the next turn retries.
                    Err(e) => {
                        ::log::warn!("accept: {e}");
                        break;
                    }
                }
            }
        }
    }

    /// Serves a new client with a pair, if the limits allow one more.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        let ip = peer.ip();
        let limits = &self.config.limits;
        let from_ip = self.per_ip.get(&ip).copied().unwrap_or(0);
        if self.pairs.len() >= limits.max_connections {
            return refuse(stream, peer, "too many connections");
        }
        if from_ip >= limits.max_connections_per_ip {
            return refuse(stream, peer, "too many connections from your address");
        }
        if let Err(e) = self.start_pair(stream, peer) {
            // The stream is closed: the client sees the connection end.
            ::log::warn!("cannot serve {peer}: {e}");
        }
    }

    fn start_pair(&mut self, stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        let (notes_in, notes_out) = pipe2(OFlag::O_CLOEXEC)?;
        self.sessions += 1;
        let session = self.sessions;
        let config = &self.config;
        let group = config.group;
        // Each child takes what it needs from these; the daemon closes its copies as soon as
        // the child that needs them exists.
        let mut socket = Some(stream);
        let mut notes_in = Some(notes_in);
        let mut notes_out = Some(notes_out);
        let sender = spawn(&mut self.heritage, |_| {
            drop(notes_out.take());
            let (Some(socket), Some(notes)) = (socket.take(), notes_in.take()) else {
                return 1;
            };
            if let Err(e) = setpgid(Pid::from_raw(0), group) {
                ::log::error!("session {session}: sender cannot join the group: {e}");
                return 1;
            }
            match Sender::new(socket, notes, config, session) {
                Ok(sender) => sender.run(),
                Err(e) => {
                    ::log::error!("session {session}: cannot start the sender: {e}");
                    1
                }
            }
        })?;
        // In the group before the reader exists to signal it (the child joins too: whichever
        // comes first).
        let _ = setpgid(sender, group);
        drop(notes_in.take());
        let reader = spawn(&mut self.heritage, |lifeline| {
            let (Some(socket), Some(notes), Some(lifeline)) =
                (socket.take(), notes_out.take(), lifeline)
            else {
                return 1;
            };
            if let Err(e) = setpgid(Pid::from_raw(0), group) {
                ::log::error!("session {session}: reader cannot join the group: {e}");
                return 1;
            }
            Reader::new(socket, notes, lifeline, sender, config, session).run()
        });
        let ip = peer.ip();
        *self.per_ip.entry(ip).or_insert(0) += 1;
        let mut pair = Pair {
            session,
            ip,
            reader: None,
            sender: Some(sender),
            cut: false,
        };
        match reader {
            Ok(reader) => {
                let _ = setpgid(reader, group);
                pair.reader = Some(reader);
                ::log::debug!(
                    "session {session}: {peer} served by reader {reader} and sender {sender}"
                );
                self.pairs.push(pair);
                Ok(())
            }
            Err(e) => {
                // Reaped like any other pair.
                pair.cut = true;
                let _ = kill(sender, Signal::SIGKILL);
                self.pairs.push(pair);
                Err(e)
            }
        }
    }

    /// Reaps every child that ended, without waiting.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        self.ended(pid, status);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    ::log::error!("waitpid: {e}");
                    return;
                }
            }
        }
    }

    /// A child ended: end its partner too unless it was a reader that ended cleanly (its
    /// sender still flushes what is owed), and free the pair's place once both are gone.
    fn ended(&mut self, pid: Pid, status: WaitStatus) {
        if self.anchor == Some(pid) {
            self.anchor = None;
            return;
        }
        let Some(at) = self
            .pairs
            .iter()
            .position(|p| p.reader == Some(pid) || p.sender == Some(pid))
        else {
            return;
        };
        let Some(pair) = self.pairs.get_mut(at) else {
            return;
        };
        let partner = if pair.reader == Some(pid) {
            pair.reader = None;
            let clean = matches!(status, WaitStatus::Exited(_, 0));
            if !clean && !pair.cut {
                ::log::warn!(
                    "session {}: its reader {pid} ended abnormally ({status:?}); ending its \
                     sender",
                    pair.session
                );
            }
            pair.sender.filter(|_| !clean)
        } else {
            pair.sender = None;
            pair.reader
        };
        if let Some(partner) = partner
            && !pair.cut
        {
            pair.cut = true;
            let _ = kill(partner, Signal::SIGKILL);
        }
        if pair.reader.is_none() && pair.sender.is_none() {
            let pair = self.pairs.swap_remove(at);
            if let Some(n) = self.per_ip.get_mut(&pair.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_ip.remove(&pair.ip);
                }
            }
            ::log::debug!("session {}: closed", pair.session);
        }
    }

    /// Stops accepting, lets every pair say SHUTTING_DOWN and end within
    /// `--shutdown-timeout`, kills what is left, and reaps everything.
    fn stop(mut self, outcome: Result<(), String>) -> Result<(), String> {
        let mut outcome = outcome;
        self.heritage.listeners.clear();
        drop(self.heritage.lifeline.take());
        let deadline = Instant::now() + self.config.limits.shutdown_timeout;
        while self.anchor.is_some() || !self.pairs.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                ::log::warn!(
                    "cutting {} connections at the shutdown deadline",
                    self.pairs.len()
                );
                break;
            }
            if let Err(e) = self.wait(left.min(REAP_EVERY)) {
                ::log::error!("{e}");
                break;
            }
            let again = self
                .take_signals()
                .into_iter()
                .find(|s| matches!(s, Signal::SIGTERM | Signal::SIGINT));
            if let Some(signal) = again {
                ::log::warn!("{signal} again: stopping now");
                outcome = Err(format!("{signal} again: stopped at once"));
                break;
            }
            self.reap();
        }
        self.kill_all();
        ::log::info!("stopped");
        outcome
    }

    /// Kills every child still there and waits for each.
    fn kill_all(&mut self) {
        let mut left: Vec<Pid> = self.anchor.into_iter().collect();
        for pair in &self.pairs {
            left.extend(pair.reader);
            left.extend(pair.sender);
        }
        if left.is_empty() {
            return;
        }
        let _ = killpg(self.config.group, Signal::SIGKILL);
        for &pid in &left {
            let _ = kill(pid, Signal::SIGKILL);
        }
        for pid in left {
            loop {
                match waitpid(pid, None) {
                    Err(Errno::EINTR) => {}
                    Ok(status) => {
                        self.ended(pid, status);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
    }
}

/// Forks a child that runs `body` with the lifeline's read end and exits with its code; the
/// daemon gets the child's pid. Whatever `body` borrows and does not take stays with the
/// daemon.
fn spawn(heritage: &mut Heritage, body: impl FnOnce(Option<OwnedFd>) -> i32) -> io::Result<Pid> {
    // SAFETY: fork() is unsafe because in a multi-threaded process the child holds a copy of
    // memory that other threads may have left mid-change (a malloc lock, a mutex) and only
    // async-signal-safe calls are then sound. This process has one thread when it gets
    // here: `fork::serve` is called from chatd's `main` before anything starts a thread
    // (`src/bin/chatd.rs` dispatches `--driver fork` before its signal thread and before
    // `Server::start`), the daemon and its children start none (this module, `reader`,
    // `sender`, `history`, `log` and `signals` spawn no thread, and neither does what they
    // call: the codec, the users file, env_logger), and the standard library starts none on
    // its own. So the child is a whole copy of a one-thread process, no lock is held by a
    // thread it lacks, and it may allocate, log and run ordinary code as it does.
    #[allow(unsafe_code)]
    let forked = unsafe { fork() }?;
    match forked {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            let lifeline = heritage.leave();
            // A panic must not unwind into the daemon's frames: their destructors (the data
            // directory's lock above all) belong to the daemon, not to this copy of it.
            let code = catch_unwind(AssertUnwindSafe(|| body(lifeline))).unwrap_or(101);
            std::process::exit(code)
        }
    }
}

/// The anchor's whole life: wait for the lifeline to close (the daemon stopping or gone).
fn hold(lifeline: Option<OwnedFd>) -> i32 {
    let Some(lifeline) = lifeline else {
        return 1;
    };
    let mut lifeline = std::fs::File::from(lifeline);
    let mut byte = [0; 1];
    loop {
        match lifeline.read(&mut byte) {
            Ok(0) => return 0,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return 1,
        }
    }
}

/// Tells a client over the limits why, in one best-effort write, and closes.
fn refuse(mut stream: TcpStream, peer: SocketAddr, why: &str) {
    ::log::debug!("refused {peer}: {why}");
    let mut frame = Vec::new();
    let error = ServerFrame::Error {
        code: ErrorCode::TooMany.as_u16(),
        reference: 0,
        message: why,
    };
    encode_server(&error, &mut frame);
    // A fresh socket's buffer takes a small frame whole; if not, the client sees a close.
    let _ = stream.write(&frame);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}
