//! The daemon's settings: where it listens, where its data lives, and every limit it enforces.
//!
//! Each limit has a named default here and a flag in `chatd serve --help`; the docs list the
//! same table. [`Reload`] says which changed settings a running server takes at SIGHUP and
//! which wait for a restart. Nothing in this module reads the environment or the disk.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::DEFAULT_MAX_FRAME;
use crate::room::RingLimits;
use crate::store::{FsyncPolicy, Retention, StoreLimits};
use crate::tls::server::CertFiles;

/// The default listening address: loopback, so that a first run exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7667";
/// The default data directory, relative to where the daemon starts.
pub const DEFAULT_DATA_DIR: &str = "chatd-data";
/// TLS handshakes in flight per reactor before it stops accepting on its TLS listeners: a
/// full handshake costs ~0.1-0.2 ms of CPU, so 64 is a few milliseconds of work queued.
pub const DEFAULT_TLS_HANDSHAKES: usize = 64;

/// Which driver serves connections (`--driver`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Driver {
    /// Reactor threads on mio: what to run.
    #[default]
    Reactor,
    /// One OS thread per connection, for study (docs/lab.md): it drives the same sessions,
    /// rooms and sequencer, and costs a thread and its stack per client.
    Threads,
    /// papayaChat's fork-per-client server, for study only and not for use (`crate::fork`):
    /// two processes per client woken by SIGUSR1, with a history of its own. It shares none
    /// of the server above and is started before any thread of it would be.
    Fork,
}

impl Driver {
    /// The flag's word for it.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Reactor => "reactor",
            Driver::Threads => "threads",
            Driver::Fork => "fork",
        }
    }
}

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
    /// Addresses that speak protocol v1 inside TLS.
    pub tls_listen: Vec<SocketAddr>,
    /// The PEM certificate chain and key for `tls_listen`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// TLS handshakes one reactor works on at once; past it, it stops accepting on its TLS
    /// listeners and the kernel's backlog holds the rest.
    pub tls_handshakes: usize,
    /// Addresses that serve the web client and its WebSocket in plain HTTP (for loopback or
    /// behind a proxy).
    pub web_listen: Vec<SocketAddr>,
    /// The same in HTTPS, with `tls_cert` and `tls_key`: the one to expose.
    pub web_tls_listen: Vec<SocketAddr>,
    /// Origins besides the page's own whose pages may open the WebSocket (`scheme://host[:port]`).
    pub web_allowed_origins: Vec<String>,
    /// Peers whose `X-Forwarded-Proto`/`-Host`/`-For` headers are believed.
    pub web_trusted_proxies: Vec<IpAddr>,
    /// Reactor threads; 0 means one per core.
    pub threads: usize,
    /// What serves the connections: reactors, or a thread each.
    pub driver: Driver,
    pub data_dir: PathBuf,
    pub limits: Limits,
    pub store: StoreLimits,
    /// The file the options came from, re-read on SIGHUP.
    pub config_file: Option<PathBuf>,
    /// The account to drop to after binding.
    pub run_as: RunAs,
    /// Where to serve `/metrics` and `/healthz`, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Where messages are stored: the local log, or NATS JetStream.
    pub backend: Backend,
}

/// `--store`: where the messages are kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Backend {
    /// The checksummed log in the data directory (the default).
    #[default]
    Local,
    /// One JetStream stream per room on a NATS cluster shared by any number of chatd nodes.
    JetStream(NatsSettings),
}

/// How to reach NATS and what to ask of JetStream (`--nats`, `--nats-creds`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// Seed servers of one NATS cluster (`nats://` or `tls://` URLs).
    pub servers: Vec<String>,
    /// A credentials file (JWT and NKey seed), if the cluster wants one.
    pub creds: Option<PathBuf>,
    /// A file holding a token, if the cluster wants one (a file, so that it is not in `ps`).
    pub token_file: Option<PathBuf>,
    /// A PEM CA certificate to trust for `tls://` servers, besides the system's roots.
    pub ca: Option<PathBuf>,
    /// Copies of every stream JetStream keeps (1 for a single NATS server).
    pub replicas: usize,
    /// How long a SEND may wait for JetStream's PubAck, retries included, before it is
    /// answered STORAGE.
    pub ack_timeout: Duration,
    /// `--retention-bytes` and `--retention-age` as given, for each room's stream. Only what
    /// was given: the local log's default of 4 GiB in all would be 4 GiB per room here, and
    /// JetStream reserves a stream's `max_bytes` on disk when it makes the stream.
    pub retention: Retention,
}

/// `--jetstream-replicas` unless given: three copies, a quorum of two.
pub const DEFAULT_REPLICAS: usize = 3;

/// `--nats-ack-timeout` unless given.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(3);

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
            tls_listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_handshakes: DEFAULT_TLS_HANDSHAKES,
            web_listen: Vec::new(),
            web_tls_listen: Vec::new(),
            web_allowed_origins: Vec::new(),
            web_trusted_proxies: Vec::new(),
            threads: 0,
            driver: Driver::Reactor,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            limits: Limits::default(),
            store: DEFAULT_STORE,
            config_file: None,
            run_as: RunAs::default(),
            metrics: None,
            backend: Backend::Local,
        }
    }
}

impl Config {
    /// The plain addresses to listen on: those given, or the default when no address at all
    /// is given (a server with only `--tls-listen` or a web listener has no plain listener).
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        if self.listen.is_empty()
            && self.tls_listen.is_empty()
            && self.web_listen.is_empty()
            && self.web_tls_listen.is_empty()
        {
            DEFAULT_LISTEN.parse().map(|a| vec![a]).unwrap_or_default()
        } else {
            self.listen.clone()
        }
    }

    /// Whether any listener speaks TLS, so a certificate is needed.
    pub fn wants_tls(&self) -> bool {
        !self.tls_listen.is_empty() || !self.web_tls_listen.is_empty()
    }

    /// The certificate and key files, when TLS is configured.
    pub fn tls_files(&self) -> Option<CertFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }

    /// The number of reactor threads to run; the threads driver counts as one reactor (its
    /// dispatcher holds the one mailbox, and its connections count as that reactor's members).
    pub fn reactor_count(&self) -> usize {
        if self.driver == Driver::Threads {
            1
        } else if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
        }
    }
}

/// A limit a running server can change (SIGHUP): its flag, whether it differs, and how to
/// copy it over.
struct LiveSetting {
    name: &'static str,
    differs: fn(&Limits, &Limits) -> bool,
    copy: fn(&mut Limits, &Limits),
}

/// The limits a running server applies at SIGHUP. Reactors read them once per turn and
/// sessions through their `Env`, so each takes effect at once: the rate on the next SEND, the
/// timeouts at the next timer tick (the handshake timeout for connections accepted from then
/// on), the caps at the next accept, JOIN or new room. A lower cap closes nobody.
const LIVE: &[LiveSetting] = &[
    LiveSetting {
        name: "max-connections",
        differs: |a, b| a.max_connections != b.max_connections,
        copy: |a, b| a.max_connections = b.max_connections,
    },
    LiveSetting {
        name: "max-connections-per-ip",
        differs: |a, b| a.max_connections_per_ip != b.max_connections_per_ip,
        copy: |a, b| a.max_connections_per_ip = b.max_connections_per_ip,
    },
    LiveSetting {
        name: "max-rooms-per-connection",
        differs: |a, b| a.max_rooms_per_connection != b.max_rooms_per_connection,
        copy: |a, b| a.max_rooms_per_connection = b.max_rooms_per_connection,
    },
    LiveSetting {
        name: "max-rooms",
        differs: |a, b| a.max_rooms != b.max_rooms,
        copy: |a, b| a.max_rooms = b.max_rooms,
    },
    LiveSetting {
        name: "send-rate",
        differs: |a, b| a.send_rate != b.send_rate,
        copy: |a, b| a.send_rate = b.send_rate,
    },
    LiveSetting {
        name: "send-burst",
        differs: |a, b| a.send_burst != b.send_burst,
        copy: |a, b| a.send_burst = b.send_burst,
    },
    LiveSetting {
        name: "handshake-timeout",
        differs: |a, b| a.handshake_timeout != b.handshake_timeout,
        copy: |a, b| a.handshake_timeout = b.handshake_timeout,
    },
    LiveSetting {
        name: "idle-timeout",
        differs: |a, b| a.idle_timeout != b.idle_timeout,
        copy: |a, b| a.idle_timeout = b.idle_timeout,
    },
    LiveSetting {
        name: "write-stall-timeout",
        differs: |a, b| a.write_stall_timeout != b.write_stall_timeout,
        copy: |a, b| a.write_stall_timeout = b.write_stall_timeout,
    },
    LiveSetting {
        name: "shutdown-timeout",
        differs: |a, b| a.shutdown_timeout != b.shutdown_timeout,
        copy: |a, b| a.shutdown_timeout = b.shutdown_timeout,
    },
];

/// What rereading the configuration at SIGHUP changes, by flag name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reload {
    /// Changed, and put in force now.
    pub applied: Vec<&'static str>,
    /// Changed, but the running server keeps the old value until it is restarted.
    pub needs_restart: Vec<&'static str>,
}

impl Reload {
    /// How `new` differs from the `running` configuration.
    pub fn between(running: &Config, new: &Config) -> Reload {
        let (a, b) = (&running.limits, &new.limits);
        let applied = LIVE
            .iter()
            .filter(|s| (s.differs)(a, b))
            .map(|s| s.name)
            .collect();
        let (sa, sb) = (&running.store, &new.store);
        let fixed: [(&'static str, bool); 23] = [
            ("store", running.backend != new.backend),
            ("listen", running.listen_addrs() != new.listen_addrs()),
            ("tls-listen", running.tls_listen != new.tls_listen),
            ("tls-cert", running.tls_cert != new.tls_cert),
            ("tls-key", running.tls_key != new.tls_key),
            ("web-listen", running.web_listen != new.web_listen),
            (
                "web-tls-listen",
                running.web_tls_listen != new.web_tls_listen,
            ),
            (
                "web-allowed-origin",
                running.web_allowed_origins != new.web_allowed_origins,
            ),
            (
                "web-trusted-proxy",
                running.web_trusted_proxies != new.web_trusted_proxies,
            ),
            (
                "tls-handshakes",
                running.tls_handshakes != new.tls_handshakes,
            ),
            ("data-dir", running.data_dir != new.data_dir),
            (
                "threads",
                running.driver == new.driver && running.reactor_count() != new.reactor_count(),
            ),
            ("driver", running.driver != new.driver),
            ("metrics", running.metrics != new.metrics),
            ("user", running.run_as.user != new.run_as.user),
            ("group", running.run_as.group != new.run_as.group),
            ("max-frame", a.max_frame != b.max_frame),
            ("ring-messages", a.ring.messages != b.ring.messages),
            ("ring-bytes", a.ring.bytes != b.ring.bytes),
            ("fsync", sa.fsync != sb.fsync),
            ("segment-bytes", sa.segment_bytes != sb.segment_bytes),
            (
                "retention-bytes",
                sa.retention.max_bytes != sb.retention.max_bytes,
            ),
            (
                "retention-age",
                sa.retention.max_age != sb.retention.max_age,
            ),
        ];
        let needs_restart = fixed
            .into_iter()
            .filter(|&(_, changed)| changed)
            .map(|(name, _)| name)
            .collect();
        Reload {
            applied,
            needs_restart,
        }
    }

    /// `running` with the settings that can change live taken from `new`: what the server
    /// runs with once this reload is applied.
    pub fn apply(running: &Config, new: &Config) -> Config {
        let mut next = running.clone();
        for setting in LIVE {
            (setting.copy)(&mut next.limits, &new.limits);
        }
        next
    }

    /// One log line naming both lists.
    pub fn summary(&self) -> String {
        match (self.applied.is_empty(), self.needs_restart.is_empty()) {
            (true, true) => "config reloaded: no changes".to_string(),
            (false, true) => format!("config reloaded: applied {}", self.applied.join(", ")),
            (true, false) => format!(
                "config reloaded: applied nothing; needs a restart: {}",
                self.needs_restart.join(", ")
            ),
            (false, false) => format!(
                "config reloaded: applied {}; needs a restart: {}",
                self.applied.join(", "),
                self.needs_restart.join(", ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changing_the_driver_needs_a_restart() {
        let running = Config::default();
        let mut new = running.clone();
        new.driver = Driver::Threads;
        let reload = Reload::between(&running, &new);
        assert!(reload.applied.is_empty());
        assert_eq!(reload.needs_restart, ["driver"]);
        assert_eq!(Reload::apply(&running, &new).driver, Driver::Reactor);
    }

    #[test]
    fn reload_applies_limits_and_names_what_needs_a_restart() {
        let running = Config::default();
        let mut new = running.clone();
        new.limits.send_rate = 5;
        new.limits.idle_timeout = Duration::from_secs(9);
        new.limits.max_connections = 3;
        new.limits.max_rooms = 7;
        new.limits.max_frame = 4096;
        new.listen = vec!["127.0.0.1:1".parse().expect("addr")];
        new.store.segment_bytes = 8192;
        new.run_as.user = Some("nobody".into());
        let reload = Reload::between(&running, &new);
        assert_eq!(
            reload.applied,
            ["max-connections", "max-rooms", "send-rate", "idle-timeout"]
        );
        assert_eq!(
            reload.needs_restart,
            ["listen", "user", "max-frame", "segment-bytes"]
        );
        assert_eq!(
            reload.summary(),
            "config reloaded: applied max-connections, max-rooms, send-rate, idle-timeout; \
             needs a restart: listen, user, max-frame, segment-bytes"
        );

        // Applied: the live values change, the rest stays as it runs; the next reload of the
        // same file applies nothing more and still names what waits for a restart.
        let next = Reload::apply(&running, &new);
        assert_eq!(next.limits.send_rate, 5);
        assert_eq!(next.limits.max_rooms, 7);
        assert_eq!(next.limits.max_frame, running.limits.max_frame);
        assert_eq!(next.listen, running.listen);
        assert_eq!(next.store, running.store);
        let again = Reload::between(&next, &new);
        assert!(again.applied.is_empty());
        assert_eq!(again.needs_restart.len(), 4);
        assert!(
            again
                .summary()
                .starts_with("config reloaded: applied nothing; needs a restart: listen")
        );
    }

    #[test]
    fn every_live_setting_is_copied_by_apply() {
        let running = Config::default();
        let mut new = running.clone();
        let l = &mut new.limits;
        l.max_connections += 1;
        l.max_connections_per_ip += 1;
        l.max_rooms_per_connection += 1;
        l.max_rooms += 1;
        l.send_rate += 1;
        l.send_burst += 1;
        l.handshake_timeout += Duration::from_secs(1);
        l.idle_timeout += Duration::from_secs(1);
        l.write_stall_timeout += Duration::from_secs(1);
        l.shutdown_timeout += Duration::from_secs(1);
        assert_eq!(Reload::between(&running, &new).applied.len(), LIVE.len());
        assert!(Reload::between(&running, &new).needs_restart.is_empty());
        assert_eq!(Reload::apply(&running, &new), new);
        assert_eq!(
            Reload::between(&running, &running).summary(),
            "config reloaded: no changes"
        );
    }
}
