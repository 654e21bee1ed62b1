//! The server a pub/sub scenario runs against, whichever system it is: a chatd the bench
//! spawned (`daemon`), a `redis-server` or `nats-server` it spawned on a free loopback port,
//! or one already running at `--addr` (with `--server-pid` to read its CPU and memory). With
//! `--transport tls`, a spawned server listens with TLS only, presenting a throwaway
//! certificate (`pki`) that the bench's clients trust alone (a running one needs `--tls-ca`).
//! With `--transport ws`, a spawned chatd opens a web listener and nats-server its
//! `websocket` one, and the clients connect there (Redis has none). A
//! spawned server may be pinned to a core (`taskset -c`, FreeBSD `cpuset -l`); it is stopped with SIGTERM and,
//! failing that, killed. Only the bench's own children are ever signalled.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::daemon::{Daemon, Listen};
use crate::net::{Endpoint, Transport};
use crate::os::{Usage, usage_of};
use crate::peer_args;
use crate::pki::Pki;
use crate::runner::SPAWN_USER;
use crate::tls::TlsClient;
use crate::wire::{Creds, Kind};
use crate::ws::WsClient;

/// How to get a server for a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    pub kind: Kind,
    /// `None`: spawn one.
    pub addr: Option<String>,
    pub user: String,
    pub token_file: Option<PathBuf>,
    pub server_pid: Option<u32>,
    pub chatd: PathBuf,
    pub redis_bin: PathBuf,
    pub nats_bin: PathBuf,
    /// Pin a spawned server to this core.
    pub server_cpu: Option<usize>,
    /// Plain, TLS or WebSocket.
    pub transport: Transport,
    /// The CA to trust for a running server (a spawned one's is made for the run).
    pub tls_ca: Option<PathBuf>,
    /// A spawned chatd's `--fsync` (always, interval or never).
    pub fsync: String,
}

enum Guard {
    Chatd(Daemon),
    Peer(PeerChild),
    Running,
}

/// A spawned peer server, killed if still running when dropped, and the directory of its
/// configuration file when the run needed one of its own.
struct PeerChild {
    child: Child,
    dir: Option<PathBuf>,
}

pub struct Server {
    pub addr: SocketAddr,
    pub creds: Creds,
    /// How clients speak TLS to it, in a `--tls` run.
    pub tls: Option<TlsClient>,
    /// The CA file clients trust, in a `--tls` run.
    pub tls_ca: Option<PathBuf>,
    /// How clients speak WebSocket to it, in a `--transport ws` run.
    pub ws: Option<WsClient>,
    pid: Option<u32>,
    kind: Kind,
    guard: Guard,
    /// The spawned server's certificate and key, removed once it is stopped.
    pki: Option<Pki>,
}

const PATIENCE: Duration = Duration::from_secs(10);

impl Server {
    /// Spawns or finds the server; `connections` sizes chatd's connection limits.
    ///
    /// # Errors
    /// A missing binary (with a hint how to get it), or a server that did not come up.
    pub fn get(spec: &ServerSpec, connections: usize) -> Result<Server, String> {
        let mut server = match &spec.addr {
            Some(addr) => running(spec, addr)?,
            None => spawned(spec, connections)?,
        };
        if spec.transport == Transport::Ws {
            server.ws = Some(WsClient::new(spec.kind, server.addr));
        }
        if spec.transport == Transport::Tls {
            let ca = server.pki.as_ref().map(|p| p.ca.clone());
            let ca = ca
                .or_else(|| spec.tls_ca.clone())
                .ok_or("--tls against a running server needs --tls-ca FILE")?;
            server.tls = Some(TlsClient::new(spec.kind, &ca)?);
            server.tls_ca = Some(ca);
        }
        Ok(server)
    }

    /// Where the clients connect, and how.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            addr: self.addr,
            tls: self.tls.clone(),
            ws: self.ws.clone(),
        }
    }

    /// CPU, peak and current RSS of the server; `None` when its pid is unknown.
    pub fn usage(&self) -> Option<Usage> {
        self.pid.map(usage_of)
    }

    /// How many reactor threads a chatd runs right now (its threads named `reactor-N`);
    /// `None` for the peers, an unknown pid, or an OS where thread names are not read.
    pub fn reactors(&self) -> Option<usize> {
        let pid = self.pid.filter(|_| self.kind == Kind::Chatd)?;
        crate::os::threads_named(pid, "reactor")
    }

    /// Stops a spawned server (a running one is left alone).
    ///
    /// # Errors
    /// chatd did not stop cleanly.
    pub fn stop(self) -> Result<(), String> {
        match self.guard {
            Guard::Chatd(d) => d.stop().map(|_| ()),
            Guard::Peer(mut peer) => {
                let child = &mut peer.child;
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                }
                let deadline = Instant::now() + PATIENCE;
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = child.kill();
                let _ = child.wait();
                Ok(())
            }
            Guard::Running => Ok(()),
        }
    }
}

fn spawned(spec: &ServerSpec, connections: usize) -> Result<Server, String> {
    let pki = if spec.transport == Transport::Tls {
        Some(Pki::new()?)
    } else {
        None
    };
    match spec.kind {
        Kind::Chatd => {
            let listen = match (&pki, spec.transport) {
                (Some(pki), _) => Listen::Tls(pki),
                (None, Transport::Ws) => Listen::Web,
                (None, _) => Listen::Plain,
            };
            let (d, token) = Daemon::start_pinned(
                &spec.chatd,
                &spec.fsync,
                SPAWN_USER,
                connections,
                spec.server_cpu,
                listen,
            )?;
            Ok(Server {
                addr: d.addr,
                creds: Creds {
                    user: SPAWN_USER.into(),
                    token,
                },
                tls: None,
                tls_ca: None,
                ws: None,
                pid: Some(d.pid()),
                kind: spec.kind,
                guard: Guard::Chatd(d),
                pki,
            })
        }
        Kind::Redis | Kind::Nats => peer(spec, pki),
    }
}

impl Drop for PeerChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(dir) = &self.dir {
            // Only the directory made for this server's configuration.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn running(spec: &ServerSpec, addr: &str) -> Result<Server, String> {
    use std::net::ToSocketAddrs;
    let addr = addr
        .to_socket_addrs()
        .map_err(|e| format!("--addr {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("--addr {addr}: no address"))?;
    let token = match (&spec.token_file, spec.kind) {
        (Some(f), _) => crate::login::read_token(f).map_err(|e| format!("--token-file: {e}"))?,
        (None, Kind::Chatd) => return Err("chatd needs --token-file (or --spawn)".into()),
        (None, _) => String::new(),
    };
    Ok(Server {
        addr,
        creds: Creds {
            user: spec.user.clone(),
            token,
        },
        tls: None,
        tls_ca: None,
        ws: None,
        pid: spec.server_pid,
        kind: spec.kind,
        guard: Guard::Running,
        pki: None,
    })
}

/// A loopback port nothing listens on right now (the server binds it a moment later).
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// Finds `bin` as given or on PATH.
fn find(bin: &std::path::Path) -> Option<PathBuf> {
    if bin.components().count() > 1 {
        return bin.is_file().then(|| bin.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

fn peer(spec: &ServerSpec, pki: Option<Pki>) -> Result<Server, String> {
    let (bin, package) = match spec.kind {
        Kind::Redis => (&spec.redis_bin, "redis-server"),
        _ => (&spec.nats_bin, "nats-server"),
    };
    let Some(path) = find(bin) else {
        return Err(format!(
            "{} not found: install it (apt-get install {package}) or pass --{package} PATH",
            bin.display()
        ));
    };
    let port = free_port()?;
    let mut cmd = crate::os::command_on_cpu(&path, spec.server_cpu)?;
    // The port the bench connects to: the client port, or the WebSocket one.
    let mut connect_port = port;
    let mut conf_dir = None;
    match (spec.kind, &pki, spec.transport) {
        (Kind::Redis, _, Transport::Ws) => {
            return Err(
                "redis-server has no WebSocket listener: --transport ws is for \
                        --target chatd or nats"
                    .into(),
            );
        }
        (Kind::Redis, tls, _) => {
            cmd.args(peer_args::redis(port, tls.as_ref()));
        }
        (_, None, Transport::Ws) => {
            connect_port = free_port()?;
            let dir = crate::daemon::fresh_dir()?;
            let conf = dir.join("nats.conf");
            if let Err(e) = std::fs::write(&conf, peer_args::nats_ws_config(port, connect_port)) {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("{}: {e}", conf.display()));
            }
            conf_dir = Some(dir);
            cmd.arg("-c").arg(conf);
        }
        (_, None, _) => {
            cmd.args(peer_args::nats_plain(port));
        }
        (_, Some(pki), _) => {
            let conf = pki.dir().join("nats.conf");
            std::fs::write(&conf, peer_args::nats_tls_config(port, pki))
                .map_err(|e| format!("{}: {e}", conf.display()))?;
            cmd.arg("-c").arg(conf);
        }
    };
    let spawned = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            if let Some(dir) = &conf_dir {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(format!("cannot run {}: {e}", path.display()));
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], connect_port));
    let server = Server {
        addr,
        creds: Creds::default(),
        tls: None,
        tls_ca: None,
        ws: None,
        pid: Some(child.id()),
        kind: spec.kind,
        guard: Guard::Peer(PeerChild {
            child,
            dir: conf_dir,
        }),
        pki,
    };
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{package} did not listen on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}
