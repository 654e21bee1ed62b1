//! Three `nats-server` processes the bench starts as one JetStream cluster on 127.0.0.1, each
//! with its own store directory and fixed ports, so that one killed with SIGKILL can be
//! started again exactly as it was (same name, same store, same ports) and rejoin.
//!
//! It only ever signals its own children and removes only the directory it made; `Drop` kills
//! whatever is still running, so an error anywhere in a run leaves nothing behind.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::os::usage_of;

/// The servers of one cluster.
pub const SERVERS: usize = 3;

/// How long a server may take to answer `/healthz` with JetStream ready, at start and after
/// a restart (a restarted one catches up on every stream first).
pub const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

/// How long one `/healthz` request may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Between two `/healthz` probes: a probe is a connection, cheap for the server.
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// The ports of one server: clients, routes between servers, and monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub client: u16,
    pub cluster: u16,
    pub monitor: u16,
}

struct Server {
    ports: Ports,
    store: PathBuf,
    child: Option<Child>,
    /// CPU seconds of the processes of this server that were killed already.
    dead_cpu: f64,
}

pub struct Nats {
    bin: PathBuf,
    dir: PathBuf,
    servers: Vec<Server>,
    /// Leave `dir` (each server's log `n<i>.log` and store) behind when dropped.
    pub keep: bool,
}

impl Nats {
    /// Starts the three servers and waits until each says JetStream is ready.
    ///
    /// # Errors
    /// No free ports, a server that would not start, or one not healthy in time.
    pub fn start(bin: &Path) -> Result<Nats, String> {
        Nats::start_servers(bin, SERVERS)
    }

    /// Starts `count` servers routed to each other (one alone is a plain server with
    /// JetStream, no cluster) and waits until each says JetStream is ready.
    ///
    /// # Errors
    /// As `start`.
    pub fn start_servers(bin: &Path, count: usize) -> Result<Nats, String> {
        if !bin.is_file() {
            return Err(format!(
                "{} not found: install it (apt-get install nats-server) or pass --nats-server PATH",
                bin.display()
            ));
        }
        let dir = crate::daemon::fresh_dir()?;
        let mut nats = Nats {
            bin: bin.to_path_buf(),
            dir,
            servers: Vec::new(),
            keep: false,
        };
        // Bound all at once, then released: nine distinct ports, which the servers take a
        // moment later (another process could take one in between; the start then fails).
        let held: Vec<TcpListener> = (0..count * 3)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("finding free ports: {e}"))?;
        let ports: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("finding free ports: {e}"))?;
        drop(held);
        for chunk in ports.chunks(3) {
            if let [client, cluster, monitor] = *chunk {
                let i = nats.servers.len();
                nats.servers.push(Server {
                    ports: Ports {
                        client,
                        cluster,
                        monitor,
                    },
                    store: nats.dir.join(format!("n{i}")),
                    child: None,
                    dead_cpu: 0.0,
                });
            }
        }
        for i in 0..count {
            nats.launch(i)?;
        }
        for i in 0..count {
            nats.wait_healthy(i, Probe::Enabled)?;
        }
        Ok(nats)
    }

    /// The client URLs, for chatd's `--nats`.
    pub fn urls(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.ports.client))
            .collect()
    }

    /// CPU seconds of every server process so far, the killed ones included (up to their last
    /// reading before the kill); `None` where a running one cannot be read.
    pub fn cpu_secs(&self) -> Option<f64> {
        let mut sum = 0.0;
        for s in &self.servers {
            sum += s.dead_cpu;
            if let Some(c) = &s.child {
                sum += usage_of(c.id()).cpu_secs?;
            }
        }
        Some(sum)
    }

    /// SIGKILLs server `i` and waits until it is gone.
    ///
    /// # Errors
    /// It was not running, or waiting for it failed.
    pub fn kill(&mut self, i: usize) -> Result<(), String> {
        let s = self.servers.get_mut(i).ok_or("no such server")?;
        let mut child = s.child.take().ok_or("the server is not running")?;
        s.dead_cpu += usage_of(child.id()).cpu_secs.unwrap_or(0.0);
        // Child::kill is SIGKILL on Unix: the server gets no chance to flush or say goodbye.
        child.kill().map_err(|e| format!("killing nats {i}: {e}"))?;
        child
            .wait()
            .map_err(|e| format!("waiting for nats {i}: {e}"))?;
        Ok(())
    }

    /// Starts server `i` again as it was, and waits until it is healthy with every stream it
    /// holds current, so that the next kill takes down one server of a whole cluster, never a
    /// second copy of a stream that is still catching up; returns how long that took.
    ///
    /// # Errors
    /// It would not start or was not healthy in time.
    pub fn restart(&mut self, i: usize) -> Result<Duration, String> {
        let t0 = Instant::now();
        self.launch(i)?;
        self.wait_healthy(i, Probe::Current)?;
        Ok(t0.elapsed())
    }

    fn launch(&mut self, i: usize) -> Result<(), String> {
        let routes: Vec<String> = self
            .servers
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| format!("nats://127.0.0.1:{}", s.ports.cluster))
            .collect();
        let s = self.servers.get_mut(i).ok_or("no such server")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("n{i}.log")))
            .map_err(|e| format!("nats {i} log: {e}"))?;
        let child = Command::new(&self.bin)
            .args(args(i, s.ports, &s.store, &routes))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        s.child = Some(child);
        Ok(())
    }

    fn wait_healthy(&mut self, i: usize, probe: Probe) -> Result<(), String> {
        let within = HEALTHY_WITHIN;
        let deadline = Instant::now() + within;
        let port = self.servers.get(i).ok_or("no such server")?.ports.monitor;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if healthy(addr, probe) {
                return Ok(());
            }
            let s = self.servers.get_mut(i).ok_or("no such server")?;
            if let Some(Ok(Some(status))) = s.child.as_mut().map(Child::try_wait) {
                s.child = None;
                return Err(format!("nats {i} exited with {status}{}", self.log_tail(i)));
            }
            if Instant::now() > deadline {
                let secs = within.as_secs();
                return Err(format!(
                    "nats {i}: JetStream not ready within {secs} s{}",
                    self.log_tail(i)
                ));
            }
            std::thread::sleep(PROBE_EVERY);
        }
    }

    /// The last lines of server `i`'s log, for an error message.
    fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("n{i}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines
            .get(lines.len().saturating_sub(5)..)
            .unwrap_or_default();
        format!("; its log ends:\n{}", tail.join("\n"))
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for s in &mut self.servers {
            if let Some(mut c) = s.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if self.keep {
            eprintln!(
                "chat-bench: the NATS logs and stores are kept in {}",
                self.dir.display()
            );
        } else {
            // Only the directory made for this cluster.
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The command line of server `i`: JetStream on, its store, loopback only, and routes to the
/// others' cluster ports (none when it is alone: a one-server cluster would wait for peers).
pub fn args(i: usize, ports: Ports, store: &Path, routes: &[String]) -> Vec<String> {
    let mut args = vec![
        "-n".into(),
        format!("n{i}"),
        "-js".into(),
        "-sd".into(),
        store.display().to_string(),
        "-a".into(),
        "127.0.0.1".into(),
        "-p".into(),
        ports.client.to_string(),
        "-m".into(),
        ports.monitor.to_string(),
    ];
    if !routes.is_empty() {
        args.extend([
            "--cluster_name".into(),
            "chatbench".into(),
            "--cluster".into(),
            format!("nats://127.0.0.1:{}", ports.cluster),
            "--routes".into(),
            routes.join(","),
        ]);
    }
    args
}

/// What a `/healthz` probe asks of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// `?js-enabled-only=true`: up, with JetStream enabled (a fresh cluster at start).
    Enabled,
    /// The plain `/healthz`: also every stream and consumer it holds is current (2.9
    /// answers 503 until then), as after a restart once it has caught up.
    Current,
}

impl Probe {
    fn path(self) -> &'static str {
        match self {
            Probe::Enabled => "/healthz?js-enabled-only=true",
            Probe::Current => "/healthz",
        }
    }
}

/// Whether `probe` answers 200 at `addr`.
fn healthy(addr: SocketAddr, probe: Probe) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
    let _ = s.set_write_timeout(Some(PROBE_TIMEOUT));
    let req = format!("GET {} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", probe.path());
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < head.len() {
        match s.read(head.get_mut(got..).unwrap_or_default()) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    status_ok(head.get(..got).unwrap_or_default())
}

/// Whether an HTTP response starts with a 200 status line.
fn status_ok(head: &[u8]) -> bool {
    head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_routes_to_the_others_and_keeps_its_own_ports() {
        let ports = Ports {
            client: 4001,
            cluster: 6001,
            monitor: 8001,
        };
        let routes = [
            "nats://127.0.0.1:6002".into(),
            "nats://127.0.0.1:6003".into(),
        ];
        let a = args(1, ports, Path::new("/tmp/x/n1"), &routes).join(" ");
        assert_eq!(
            a,
            "-n n1 -js -sd /tmp/x/n1 -a 127.0.0.1 -p 4001 -m 8001 --cluster_name chatbench \
             --cluster nats://127.0.0.1:6001 --routes nats://127.0.0.1:6002,nats://127.0.0.1:6003"
        );
        let alone = args(0, ports, Path::new("/tmp/x/n0"), &[]).join(" ");
        assert_eq!(
            alone,
            "-n n0 -js -sd /tmp/x/n0 -a 127.0.0.1 -p 4001 -m 8001"
        );
    }

    #[test]
    fn only_a_200_is_healthy() {
        assert!(status_ok(b"HTTP/1.1 200 OK\r\n"));
        assert!(!status_ok(b"HTTP/1.1 503 Service"));
        assert!(!status_ok(b""));
    }
}
