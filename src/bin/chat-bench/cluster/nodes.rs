//! The chatd nodes of a `cluster` run: `chatd serve --store jetstream` against the bench's
//! NATS cluster, each with a data directory of its own holding the same users file (one user
//! added on the first node, its file copied to the others), on `127.0.0.1:0`.
//!
//! It only ever signals its own children and removes only the directory it made; `Drop` kills
//! whatever is still running.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::os::usage_of;
use crate::runner::SPAWN_USER;

/// How long a node may take to report its address: it waits up to 10 s for NATS itself.
const PATIENCE: Duration = Duration::from_secs(30);

pub struct Node {
    child: Option<Child>,
    pub addr: SocketAddr,
}

pub struct Nodes {
    dir: PathBuf,
    pub nodes: Vec<Node>,
    pub token: String,
    /// Leave `dir` (each node's log `node<i>.log` and data) behind when dropped.
    pub keep: bool,
}

impl Nodes {
    /// Starts `count` nodes against the NATS servers at `urls`, their streams kept in
    /// `replicas` copies, and returns them with the token of the bench's user.
    ///
    /// # Errors
    /// chatd could not run, or a node did not report its address in time.
    pub fn start(
        chatd: &Path,
        urls: &[String],
        count: usize,
        conns: usize,
        replicas: usize,
    ) -> Result<Nodes, String> {
        let dir = crate::daemon::fresh_dir()?;
        let mut nodes = Nodes {
            dir,
            nodes: Vec::new(),
            token: String::new(),
            keep: false,
        };
        let first = nodes.dir.join("node0");
        nodes.token = crate::daemon::add_user(chatd, &first, SPAWN_USER)?;
        for i in 0..count {
            let data = nodes.dir.join(format!("node{i}"));
            if i > 0 {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&data)
                    .map_err(|e| format!("{}: {e}", data.display()))?;
                std::fs::copy(first.join("users"), data.join("users"))
                    .map_err(|e| format!("copying the users file: {e}"))?;
            }
            let node = start_node(
                chatd,
                &data,
                &nodes.dir.join(format!("node{i}.log")),
                urls,
                conns,
                replicas,
            )?;
            nodes.nodes.push(node);
        }
        Ok(nodes)
    }

    /// Node `i`'s data directory (its users file).
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{i}"))
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    /// CPU seconds of every node so far; `None` when one cannot be read.
    pub fn cpu_secs(&self) -> Option<f64> {
        let mut sum = 0.0;
        for pid in self.pids() {
            sum += usage_of(pid).cpu_secs?;
        }
        Some(sum)
    }

    /// SIGTERM to every node, then waits for each to exit (killing one that does not).
    ///
    /// # Errors
    /// A node did not exit cleanly in time.
    pub fn stop(mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            let Some(mut child) = n.child.take() else {
                continue;
            };
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let deadline = Instant::now() + PATIENCE;
            loop {
                match child.try_wait() {
                    Ok(Some(s)) if s.success() => break,
                    Ok(Some(s)) => {
                        problems.push(format!("chatd node {i} exited with {s}"));
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        problems.push(format!("chatd node {i} did not exit after SIGTERM"));
                        break;
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if self.keep {
            eprintln!(
                "chat-bench: the chatd nodes' logs are kept in {}",
                self.dir.display()
            );
        } else {
            // Only the directory made for these nodes.
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn start_node(
    chatd: &Path,
    data: &Path,
    log: &Path,
    urls: &[String],
    conns: usize,
    replicas: usize,
) -> Result<Node, String> {
    let per_ip = conns.saturating_add(16).max(256).to_string();
    let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut cmd = Command::new(chatd);
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--send-rate", "0"])
        .args(["--max-connections-per-ip", &per_ip])
        .args(["--store", "jetstream", "--jetstream-replicas"])
        .arg(replicas.to_string());
    for u in urls {
        cmd.args(["--nats", u]);
    }
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", chatd.display()))?;
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(addr) = crate::daemon::listener(&line, "") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
    }
    match rx.recv_timeout(PATIENCE).map(|a| a.parse::<SocketAddr>()) {
        Ok(Ok(addr)) => Ok(Node {
            child: Some(child),
            addr,
        }),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines
                .get(lines.len().saturating_sub(10)..)
                .unwrap_or_default();
            Err(format!(
                "chatd --store jetstream did not report its address; its log ends:\n{}",
                tail.join("\n")
            ))
        }
    }
}
