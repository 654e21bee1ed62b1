//! The daemon's settings: where it listens, where its data lives, and every limit it enforces.
//!
//! Each limit has a named default here and a flag in `chatd serve --help`; the docs list the
//! same table. Nothing in this module reads the environment or the disk.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::DEFAULT_MAX_FRAME;
use crate::room::RingLimits;
use crate::store::{FsyncPolicy, Retention, StoreLimits};

/// The default listening address: loopback, so that a first run exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7667";
/// The default data directory, relative to where the daemon starts.
pub const DEFAULT_DATA_DIR: &str = "chatd-data";

/// Every per-client and per-server limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Longest frame (kind byte plus body), in both directions.
    pub max_frame: u32,
    /// Connections open at once, across all reactors.
    pub max_connections: usize,
    /// Connections open at once from one source address.
    pub max_connections_per_ip: u32,
    /// Rooms one connection may have joined at once.
    pub max_rooms_per_connection: usize,
    /// Rooms the server will create.
    pub max_rooms: usize,
    /// SENDs per second one connection may sustain (0: no limit).
    pub send_rate: u32,
    /// SENDs one connection may make in a burst above the rate.
    pub send_burst: u32,
    /// Time from accept to HELLO.
    pub handshake_timeout: Duration,
    /// Time without a complete frame from the client before it is closed.
    pub idle_timeout: Duration,
    /// Time a client may take nothing from its socket while we have bytes for it.
    pub write_stall_timeout: Duration,
    /// Time a graceful shutdown may take before remaining connections are cut.
    pub shutdown_timeout: Duration,
    /// History kept in memory per room.
    pub ring: RingLimits,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            max_rooms_per_connection: 64,
            max_rooms: 100_000,
            send_rate: 20,
            send_burst: 50,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            write_stall_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(5),
            ring: RingLimits {
                messages: 4096,
                bytes: 8 << 20,
            },
        }
    }
}

/// Everything `chatd serve` needs to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    /// Reactor threads; 0 means one per core.
    pub threads: usize,
    pub data_dir: PathBuf,
    pub limits: Limits,
    pub store: StoreLimits,
    /// The file the options came from, re-read on SIGHUP.
    pub config_file: Option<PathBuf>,
    /// The account to drop to after binding.
    pub run_as: RunAs,
    /// Where to serve `/metrics` and `/healthz`, if anywhere.
    pub metrics: Option<SocketAddr>,
}

/// `--user` and `--group`: who the daemon becomes once it holds its sockets and files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunAs {
    pub user: Option<String>,
    pub group: Option<String>,
}

/// The log's defaults: sync before every ACK (group commit makes that cheap), 64 MiB
/// segments, and keep at most 4 GiB of history.
pub const DEFAULT_STORE: StoreLimits = StoreLimits {
    segment_bytes: 64 << 20,
    fsync: FsyncPolicy::Always,
    retention: Retention {
        max_bytes: Some(4 << 30),
        max_age: None,
    },
};

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: Vec::new(),
            threads: 0,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            limits: Limits::default(),
            store: DEFAULT_STORE,
            config_file: None,
            run_as: RunAs::default(),
            metrics: None,
        }
    }
}

impl Config {
    /// The addresses to listen on: those given, or the default.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        if self.listen.is_empty() {
            DEFAULT_LISTEN.parse().map(|a| vec![a]).unwrap_or_default()
        } else {
            self.listen.clone()
        }
    }

    /// The number of reactor threads to run.
    pub fn reactor_count(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
        }
    }
}
