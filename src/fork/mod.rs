//! The fork driver (`chatd serve --driver fork`): papayaChat's fork-per-client server, rebuilt
//! for study beside the reactor and the threads driver, so that the lab (docs/lab.md) can
//! measure what a process pair per client costs. It is not for use: it has no TLS, no
//! metrics, no retention, and every sender wakes for every message of every room.
//!
//! - **The daemon** ([`daemon`]) accepts, and for each client forks two processes, then
//!   closes its own copies of the socket and their pipe. It reaps them, refuses clients past
//!   `--max-connections` (or per address) with ERROR TOO_MANY, and on SIGTERM or SIGINT
//!   stops accepting, tells every pair to stop, waits up to `--shutdown-timeout`, kills what
//!   is left, and exits 0. It stays single-threaded: it is dispatched before chatd starts any
//!   thread, since only the forking thread survives a fork.
//! - **The reader** ([`reader`]) reads the client's frames, logs it in against the users file
//!   (read at each HELLO: there is no watcher), appends each SEND to its room's file under an
//!   exclusive `flock`, then sends SIGUSR1 to the process group of every client process. It
//!   never writes to the socket: its answers go to its sender through a pipe, in order.
//! - **The sender** ([`sender`]) waits in `sigwait` for SIGUSR1, writes its reader's answers,
//!   and reads each joined room's file past its cursor (under a shared `flock`) to send MSGs.
//!   It is the only writer of its socket.
//! - **The history** ([`history`], [`log`]) is its own, in `DATA_DIR/fork`: one checksummed
//!   file per room and an epoch, apart from the real message log, which this driver never
//!   reads or writes.
//!
//! The client processes share one process group that the daemon is not in: an idle anchor
//! process ([`daemon`]) holds it, so that the group signal reaches the senders alone and the
//! daemon stays in its caller's group (Ctrl-C, `cargo run`). Every child must end with the
//! daemon, never outlive it; no code here may start a thread.

pub mod daemon;
pub mod history;
pub mod log;
pub mod note;
pub mod reader;
pub mod sender;
pub mod signals;

use std::io::Write;
use std::path::PathBuf;

use nix::unistd::Pid;

use crate::auth::Watch;
use crate::config::{Config, DEFAULT_STORE, DEFAULT_TLS_HANDSHAKES, Limits};
use crate::datadir::DataDir;
use crate::reactor::listener::bind_single;
use crate::store::FsyncPolicy;
use history::History;

/// What every client process needs from the daemon; each gets its own copy with the fork.
#[derive(Debug, Clone)]
pub struct PairConfig {
    pub limits: Limits,
    /// Sent in WELCOME: names the fork driver's history.
    pub epoch: u64,
    pub history: History,
    /// The users file, read at each HELLO.
    pub users: PathBuf,
    /// The private-rooms file, read at each JOIN and SEND.
    pub access: PathBuf,
    /// `--fsync always`: each message is on disk before its ACK.
    pub sync: bool,
    /// The process group of every client process: the readers signal it.
    pub group: Pid,
}

/// Runs `chatd serve --driver fork` until SIGTERM or SIGINT.
///
/// It forks, so it must run while the process has a single thread: chatd calls it from
/// `main` before anything else starts one. It prints `listening on ADDR` per listener, as
/// the other drivers do.
///
/// # Errors
/// A flag this driver does not support, a data directory, users file or history that cannot
/// be opened, an address that cannot be bound; or the daemon lost its process group, or was
/// stopped at once by a second signal.
pub fn serve(config: &Config) -> Result<(), String> {
    refuse_unsupported(config)?;
    let data = DataDir::open(&config.data_dir).map_err(|e| e.to_string())?;
    // Held for the daemon's life; children inherit it, so that no second daemon starts on
    // this directory while a pair of this one still writes to it.
    let _lock = data.lock().map_err(|e| e.to_string())?;
    let (_, users) = Watch::open(data.users_path()).map_err(|e| e.to_string())?;
    // A broken private-rooms file fails the start here, as it does for the other drivers.
    crate::access::Watch::open(data.access_path()).map_err(|e| e.to_string())?;
    let sync = match config.store.fsync {
        FsyncPolicy::Always => true,
        FsyncPolicy::Interval(_) => {
            ::log::info!("fork: --fsync interval is taken as never (the kernel decides)");
            false
        }
        FsyncPolicy::Never => false,
    };
    let (history, epoch) = History::open(data.path(), sync).map_err(|e| e.to_string())?;
    let mut listeners = Vec::new();
    for addr in config.listen_addrs() {
        listeners.push(bind_single(addr).map_err(|e| e.to_string())?);
    }
    let addrs: Vec<_> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let pairs = PairConfig {
        limits: config.limits.clone(),
        epoch,
        history,
        users: data.users_path(),
        access: data.access_path(),
        sync,
        group: Pid::from_raw(0),
    };
    let daemon = daemon::Daemon::start(listeners, pairs).map_err(|e| e.to_string())?;
    for addr in addrs {
        // On stdout, as the other drivers: scripts and tests read the bound address here.
        println!("listening on {addr}");
    }
    let _ = std::io::stdout().flush();
    let ring = &config.limits.ring;
    if *ring != Limits::default().ring {
        ::log::info!("fork: --ring-messages and --ring-bytes do not apply (no history in memory)");
    }
    ::log::info!(
        "chatd {} serving with a process pair per client (--driver fork, for study only), {} \
         users, history in {}",
        env!("CARGO_PKG_VERSION"),
        users.len(),
        data.path().join(history::DIR).display()
    );
    daemon.run()
}

/// Refuses, naming them, the flags this driver does not implement: none is ignored quietly.
fn refuse_unsupported(config: &Config) -> Result<(), String> {
    let mut flags = Vec::new();
    if !config.tls_listen.is_empty() {
        flags.push("--tls-listen");
    }
    if !config.web_listen.is_empty() || !config.web_tls_listen.is_empty() {
        flags.push("--web-listen/--web-tls-listen");
    }
    if !config.web_allowed_origins.is_empty() || !config.web_trusted_proxies.is_empty() {
        flags.push("--web-allowed-origin/--web-trusted-proxy");
    }
    if config.tls_handshakes != DEFAULT_TLS_HANDSHAKES {
        flags.push("--tls-handshakes");
    }
    if config.metrics.is_some() {
        flags.push("--metrics");
    }
    if config.threads != 0 {
        flags.push("--threads");
    }
    if config.run_as.user.is_some() || config.run_as.group.is_some() {
        flags.push("--user/--group");
    }
    if config.store.segment_bytes != DEFAULT_STORE.segment_bytes {
        flags.push("--segment-bytes");
    }
    if config.store.retention != DEFAULT_STORE.retention {
        flags.push("--retention-bytes/--retention-age");
    }
    if flags.is_empty() {
        return Ok(());
    }
    Err(format!(
        "--driver fork does not support {}: it is papayaChat's fork-per-client server, kept \
         for study (a process pair per client, its own history in DATA_DIR/{}); see \
         \"Drivers\" in docs/architecture.md",
        flags.join(", "),
        history::DIR
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_the_driver_does_not_implement_are_refused_by_name() {
        assert_eq!(refuse_unsupported(&Config::default()), Ok(()));
        let mut config = Config {
            metrics: Some("127.0.0.1:0".parse().expect("addr")),
            threads: 2,
            web_listen: vec!["127.0.0.1:0".parse().expect("addr")],
            ..Config::default()
        };
        config.store.retention.max_bytes = None;
        let err = refuse_unsupported(&config).expect_err("unsupported");
        for flag in [
            "--metrics",
            "--threads",
            "--retention-bytes",
            "--web-listen",
        ] {
            assert!(err.contains(flag), "{flag} not named: {err}");
        }
    }
}
