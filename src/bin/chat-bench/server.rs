//! The server a pub/sub scenario runs against, whichever system it is: a chatd the bench
//! spawned (`daemon`), a `redis-server` or `nats-server` it spawned on a free loopback port,
//! or one already running at `--addr` (with `--server-pid` to read its CPU and memory). A
//! spawned server may be pinned to a core (`taskset -c`, FreeBSD `cpuset -l`); it is stopped with SIGTERM and,
//! failing that, killed. Only the bench's own children are ever signalled.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::daemon::Daemon;
use crate::os::{Usage, usage_of};
use crate::runner::SPAWN_USER;
use crate::wire::{Creds, Kind};

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
}

enum Guard {
    Chatd(Daemon),
    Peer(PeerChild),
    Running,
}

/// A spawned peer server, killed if still running when dropped.
struct PeerChild(Child);

pub struct Server {
    pub addr: SocketAddr,
    pub creds: Creds,
    pid: Option<u32>,
    guard: Guard,
}

const PATIENCE: Duration = Duration::from_secs(10);

impl Server {
    /// Spawns or finds the server; `connections` sizes chatd's connection limits.
    ///
    /// # Errors
    /// A missing binary (with a hint how to get it), or a server that did not come up.
    pub fn get(spec: &ServerSpec, connections: usize) -> Result<Server, String> {
        if let Some(addr) = &spec.addr {
            return running(spec, addr);
        }
        match spec.kind {
            Kind::Chatd => {
                let (d, token) = Daemon::start_pinned(
                    &spec.chatd,
                    "never",
                    SPAWN_USER,
                    connections,
                    spec.server_cpu,
                )?;
                Ok(Server {
                    addr: d.addr,
                    creds: Creds {
                        user: SPAWN_USER.into(),
                        token,
                    },
                    pid: Some(d.pid()),
                    guard: Guard::Chatd(d),
                })
            }
            Kind::Redis | Kind::Nats => peer(spec),
        }
    }

    /// CPU, peak and current RSS of the server; `None` when its pid is unknown.
    pub fn usage(&self) -> Option<Usage> {
        self.pid.map(usage_of)
    }

    /// Stops a spawned server (a running one is left alone).
    ///
    /// # Errors
    /// chatd did not stop cleanly.
    pub fn stop(self) -> Result<(), String> {
        match self.guard {
            Guard::Chatd(d) => d.stop().map(|_| ()),
            Guard::Peer(mut peer) => {
                let child = &mut peer.0;
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

impl Drop for PeerChild {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
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
        pid: spec.server_pid,
        guard: Guard::Running,
    })
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

fn peer(spec: &ServerSpec) -> Result<Server, String> {
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
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("finding a free port: {e}"))?
        .port();
    let port_s = port.to_string();
    let mut cmd = crate::os::command_on_cpu(&path, spec.server_cpu)?;
    if spec.kind == Kind::Redis {
        cmd.args(["--port", &port_s, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--maxclients", "19000"])
            .args(["--protected-mode", "no", "--daemonize", "no"]);
    } else {
        cmd.args(["-a", "127.0.0.1", "-p", &port_s]);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let server = Server {
        addr,
        creds: Creds::default(),
        pid: Some(child.id()),
        guard: Guard::Peer(PeerChild(child)),
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
