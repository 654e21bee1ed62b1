//! Real `nats-server` processes with JetStream for the tests of `chatd serve --store
//! jetstream`: one server, or a cluster of servers routed to each other, each on loopback
//! ports reserved for it and with a store directory of its own in a temporary directory.
//!
//! Readiness is an event, not a delay: a server is ready once its monitoring port answers
//! `GET /healthz` with 200, which nats-server 2.9 does only when JetStream is enabled and, in a
//! cluster, in contact with a meta leader and caught up. Every wait has a deadline and fails
//! with the server's own log. It must never listen beyond 127.0.0.1 nor outlive its owner:
//! dropping a `NatsServer` or `NatsCluster` kills its processes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian (and FreeBSD's package) install the server; the first that exists is used.
const CANDIDATES: [&str; 3] = [
    "/usr/sbin/nats-server",
    "/usr/bin/nats-server",
    "/usr/local/bin/nats-server",
];

/// How long a server may take to become ready. A first start is well under a second; a
/// restart into a cluster that holds streams has to catch up and can take several seconds of
/// raft election timeouts (4 s and more in 2.9).
pub const READY: Duration = Duration::from_secs(45);

/// How often readiness is polled: there is no event to block on but the answer itself.
const POLL: Duration = Duration::from_millis(25);

/// The server binary, or why there is none.
pub fn binary() -> Result<&'static str, String> {
    CANDIDATES
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .ok_or_else(|| {
            format!(
                "nats-server is not installed (looked in {}; apt-get install nats-server)",
                CANDIDATES.join(", ")
            )
        })
}

/// Says SKIPPED on stderr for `test` and returns true when nats-server is missing, so that a
/// test of the JetStream store never passes quietly without having run.
pub fn skip(test: &str) -> bool {
    match binary() {
        Ok(_) => false,
        Err(why) => {
            eprintln!("!!! SKIPPED {test}: {why}");
            true
        }
    }
}

/// `n` distinct free loopback ports: all are bound at once (so none is handed out twice), then
/// released for the server to take. Another process could take one in between; a server that
/// then fails to start is started again on fresh ports.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// The status code of `GET path` on 127.0.0.1:`port`, or None when nothing answers yet.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let (status, _) = http_get(port, path)?;
    Some(status)
}

/// `GET path` on 127.0.0.1:`port`: the status code and the body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    s.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Publishes `payload` on `subject` through the NATS server on 127.0.0.1:`port`, speaking the
/// client protocol by hand (CONNECT, PUB, then PING, whose PONG says the server has it), as
/// anyone allowed on the server could.
pub fn publish(port: u16, subject: &str, payload: &[u8]) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?; // INFO
    let mut w = s;
    write!(
        w,
        "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nPUB {subject} {}\r\n",
        payload.len()
    )?;
    w.write_all(payload)?;
    w.write_all(b"\r\nPING\r\n")?;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("NATS closed before PONG"));
        }
        if line.starts_with("PONG") {
            return Ok(());
        }
        if line.starts_with("-ERR") {
            return Err(std::io::Error::other(line.trim().to_string()));
        }
    }
}

/// One nats-server process and what it needs to be started again exactly as before.
struct Process {
    name: String,
    args: Vec<String>,
    client_port: u16,
    monitor_port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    fn spawn(&mut self) {
        let bin = binary().expect("nats-server installed (callers skip first)");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("nats-server log file");
        let err = log.try_clone().expect("clone log file");
        let child = Command::new(bin)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    /// True once the client port accepts and /healthz says JetStream is ready.
    fn ready(&self) -> bool {
        let client = SocketAddr::from(([127, 0, 0, 1], self.client_port));
        TcpStream::connect_timeout(&client, Duration::from_secs(1)).is_ok()
            && http_status(self.monitor_port, "/healthz") == Some(200)
    }

    /// Whether the process has exited (a port taken under it, a bad flag).
    fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The last lines of the server's log, for a failure message.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(30);
        lines.get(from..).unwrap_or_default().join("\n")
    }
}

/// Waits until each of `procs` is ready; Err with the reason (and logs) when one exits or the
/// deadline passes first.
fn wait_ready(procs: &mut [&mut Process], deadline: Instant) -> Result<(), String> {
    loop {
        let mut all = true;
        for p in procs.iter_mut() {
            if p.exited() {
                return Err(format!("{} exited:\n{}", p.name, p.log_tail()));
            }
            all &= p.ready();
        }
        if all {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let logs: Vec<String> = procs
                .iter()
                .map(|p| format!("--- {}:\n{}", p.name, p.log_tail()))
                .collect();
            return Err(format!(
                "JetStream not ready within {READY:?}\n{}",
                logs.join("\n")
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// How many times a start is tried on fresh ports when a server exits at once (a port taken
/// between reserving it and the server binding it).
const START_ATTEMPTS: usize = 3;

/// A single nats-server with JetStream, as `--jetstream-replicas 1` expects.
pub struct NatsServer {
    process: Process,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts one server (`-js -sd DIR -a 127.0.0.1 -p P -m M`) and waits until JetStream is
    /// ready. Callers skip first when [`binary`] fails.
    #[track_caller]
    pub fn single() -> NatsServer {
        NatsServer::single_with(&[])
    }

    /// Like [`NatsServer::single`], with `extra` flags (`--auth TOKEN`, `--tls ...`).
    #[track_caller]
    pub fn single_with(extra: &[&str]) -> NatsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let ports = free_ports(2);
            let (client_port, monitor_port) = (ports[0], ports[1]);
            let store = dir.path().join("store");
            let mut args = vec![
                "-js".to_string(),
                "-sd".to_string(),
                store.display().to_string(),
                "-a".to_string(),
                "127.0.0.1".to_string(),
                "-p".to_string(),
                client_port.to_string(),
                "-m".to_string(),
                monitor_port.to_string(),
            ];
            args.extend(extra.iter().map(|a| a.to_string()));
            let mut process = Process {
                name: "nats-server".to_string(),
                args,
                client_port,
                monitor_port,
                log: dir.path().join("nats.log"),
                child: None,
            };
            process.spawn();
            match wait_ready(&mut [&mut process], Instant::now() + READY) {
                Ok(()) => return NatsServer { process, dir },
                Err(why) => {
                    process.kill();
                    last = why;
                }
            }
        }
        panic!("nats-server did not start: {last}");
    }

    pub fn url(&self) -> String {
        self.process.url()
    }

    /// The client port, for a URL of another scheme (`tls://`).
    pub fn client_port(&self) -> u16 {
        self.process.client_port
    }

    pub fn monitor_port(&self) -> u16 {
        self.process.monitor_port
    }

    /// SIGKILLs the server.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same ports and store, and waits until JetStream is ready.
    #[track_caller]
    pub fn restart(&mut self) {
        self.process.spawn();
        if let Err(why) = wait_ready(&mut [&mut self.process], Instant::now() + READY) {
            panic!("nats-server did not come back: {why}");
        }
    }

    /// The directory that holds the store and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.process.kill();
    }
}

/// A JetStream cluster of nats-servers on loopback, routed to each other, one store
/// directory each.
pub struct NatsCluster {
    servers: Vec<Process>,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `n` servers (n ≥ 3 for a JetStream cluster) and waits until every one is ready.
    #[track_caller]
    pub fn start(n: usize) -> NatsCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut servers = configure(dir.path(), n);
            for s in &mut servers {
                s.spawn();
            }
            let mut all: Vec<&mut Process> = servers.iter_mut().collect();
            match wait_ready(&mut all, Instant::now() + READY) {
                Ok(()) => return NatsCluster { servers, dir },
                Err(why) => {
                    servers.iter_mut().for_each(Process::kill);
                    last = why;
                    // A failed attempt leaves stores that name peers on other ports.
                    for i in 0..n {
                        let _ = std::fs::remove_dir_all(dir.path().join(format!("n{i}")));
                    }
                }
            }
        }
        panic!("the nats cluster did not start: {last}");
    }

    /// The client URLs of every server, running or not (as a client's seed list).
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(Process::url).collect()
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// SIGKILLs server `i`: no shutdown, no flush, as a crashed machine.
    #[track_caller]
    pub fn kill(&mut self, i: usize) {
        self.server(i).kill();
    }

    /// Starts server `i` again on its ports and its store directory; returns once it is ready
    /// again (in contact with a meta leader and caught up).
    #[track_caller]
    pub fn restart(&mut self, i: usize) {
        let s = self.server(i);
        assert!(
            s.child.is_none(),
            "restart of {} that was not killed",
            s.name
        );
        s.spawn();
        if let Err(why) = wait_ready(&mut [s], Instant::now() + READY) {
            panic!("{why}");
        }
    }

    /// Starts several killed servers together (two of three cannot elect a leader one at a
    /// time: each waits for the other) and returns once all are ready.
    #[track_caller]
    pub fn restart_all(&mut self, which: &[usize]) {
        for &i in which {
            let s = self.server(i);
            assert!(
                s.child.is_none(),
                "restart of {} that was not killed",
                s.name
            );
            s.spawn();
        }
        let mut procs: Vec<&mut Process> = self
            .servers
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| which.contains(i))
            .map(|(_, p)| p)
            .collect();
        if let Err(why) = wait_ready(&mut procs, Instant::now() + READY) {
            panic!("{why}");
        }
    }

    /// Whether server `i` answers /healthz with 200 right now.
    pub fn healthy(&self, i: usize) -> bool {
        self.servers.get(i).is_some_and(Process::ready)
    }

    pub fn monitor_port(&self, i: usize) -> u16 {
        self.servers.get(i).expect("server index").monitor_port
    }

    /// The directory that holds each server's config, store and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    #[track_caller]
    fn server(&mut self, i: usize) -> &mut Process {
        let n = self.servers.len();
        self.servers
            .get_mut(i)
            .unwrap_or_else(|| panic!("server {i} of a cluster of {n}"))
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.servers.iter_mut().for_each(Process::kill);
    }
}

/// Writes a config file for each of `n` servers into `dir` on fresh ports: a server name
/// (JetStream clusters need one), the client and monitoring ports, its own store directory,
/// and routes to every other server.
fn configure(dir: &Path, n: usize) -> Vec<Process> {
    let ports = free_ports(3 * n);
    let client = &ports[..n];
    let route = &ports[n..2 * n];
    let monitor = &ports[2 * n..];
    (0..n)
        .map(|i| {
            let routes: Vec<String> = (0..n)
                .filter(|&j| j != i)
                .map(|j| format!("nats://127.0.0.1:{}", route[j]))
                .collect();
            let name = format!("n{i}");
            let store = dir.join(&name);
            let config = format!(
                "server_name: {name}\n\
                 listen: 127.0.0.1:{client}\n\
                 http: 127.0.0.1:{monitor}\n\
                 jetstream {{ store_dir: \"{store}\" }}\n\
                 cluster {{\n  name: chatd-test\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n",
                client = client[i],
                monitor = monitor[i],
                store = store.display(),
                route = route[i],
                routes = routes.join(", "),
            );
            let path = dir.join(format!("{name}.conf"));
            std::fs::write(&path, config).expect("write nats-server config");
            Process {
                name,
                args: vec!["-c".to_string(), path.display().to_string()],
                client_port: client[i],
                monitor_port: monitor[i],
                log: dir.join(format!("n{i}.log")),
                child: None,
            }
        })
        .collect()
}
