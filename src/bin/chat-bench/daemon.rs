//! A chatd that the bench starts for one run (`--spawn`): a fresh data dir under the system
//! temp dir, a user added before start, `127.0.0.1:0`, no rate limit. Before stopping it with
//! SIGTERM the bench reads its CPU time and peak RSS (`os::usage_of`); after, the log writer's
//! counters from its last stderr lines. It never touches any other process or directory: Drop
//! kills only its own child and removes only the directory it created.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::os::{Usage, usage_of};
use crate::pki::Pki;

/// How long the daemon may take to report its address, or to exit after SIGTERM.
const PATIENCE: Duration = Duration::from_secs(30);

/// The log writer's counters from `log: R records in B batches, F fsyncs, X failed batches`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    pub records: u64,
    pub batches: u64,
    pub fsyncs: u64,
    pub failed_batches: u64,
}

/// What a stopped daemon left to report.
#[derive(Debug, Clone)]
pub struct Stopped {
    pub usage: Usage,
    pub log: Option<LogStats>,
}

/// Which of its listeners the bench connects to; the plain one is always open beside it.
#[derive(Clone, Copy)]
pub enum Listen<'a> {
    Plain,
    /// `--tls-listen`, presenting this certificate.
    Tls(&'a Pki),
    /// `--web-listen`: the WebSocket at `GET /ws`.
    Web,
}

impl Listen<'_> {
    /// The suffix of chatd's `listening on ADDR` line for this listener.
    fn suffix(self) -> &'static str {
        match self {
            Listen::Plain => "",
            Listen::Tls(_) => " (TLS)",
            Listen::Web => " (web)",
        }
    }
}

pub struct Daemon {
    child: Child,
    dir: PathBuf,
    pub addr: SocketAddr,
    stderr: Option<JoinHandle<Vec<String>>>,
}

impl Daemon {
    /// Starts `chatd serve` with `--fsync policy` in a new temp dir, with `user` added first.
    /// Returns the daemon and the user's token.
    ///
    /// # Errors
    /// The binary could not run, `user add` failed, or the daemon never reported its address.
    pub fn start(
        chatd: &Path,
        policy: &str,
        user: &str,
        connections: usize,
    ) -> Result<(Daemon, String), String> {
        Daemon::start_pinned(chatd, policy, user, connections, None, Listen::Plain)
    }

    /// `start`, with the daemon pinned to `cpu` when given (`os::command_on_cpu`), and
    /// `--max-connections` raised as well when `connections` needs it. With `Listen::Tls`, a
    /// TLS listener presenting that certificate is opened beside the plain one, with
    /// `Listen::Web` a web listener, and `addr` is that listener's.
    ///
    /// # Errors
    /// As `start`.
    pub fn start_pinned(
        chatd: &Path,
        policy: &str,
        user: &str,
        connections: usize,
        cpu: Option<usize>,
        listen: Listen<'_>,
    ) -> Result<(Daemon, String), String> {
        Daemon::start_with(chatd, policy, user, connections, cpu, listen, &[])
    }

    /// `start_pinned`, with `extra` flags for `chatd serve` (the lab's `--driver M`). A daemon
    /// that refuses one exits at once, and the error carries its stderr.
    ///
    /// # Errors
    /// As `start`.
    pub fn start_with(
        chatd: &Path,
        policy: &str,
        user: &str,
        connections: usize,
        cpu: Option<usize>,
        listen: Listen<'_>,
        extra: &[String],
    ) -> Result<(Daemon, String), String> {
        let dir = fresh_dir()?;
        let data = dir.join("data");
        let token = add_user(chatd, &data, user).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })?;
        let per_ip = connections.saturating_add(16).max(256).to_string();
        let mut cmd = crate::os::command_on_cpu(chatd, cpu).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })?;
        cmd.arg("serve");
        if connections > 1000 {
            cmd.args(["--max-connections", &per_ip]);
        }
        match listen {
            Listen::Plain => {}
            Listen::Tls(pki) => {
                cmd.args(["--tls-listen", "127.0.0.1:0", "--tls-cert"])
                    .arg(&pki.cert)
                    .arg("--tls-key")
                    .arg(&pki.key);
            }
            Listen::Web => {
                cmd.args(["--web-listen", "127.0.0.1:0"]);
            }
        }
        let spawned = cmd
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--send-rate", "0"])
            .args(["--fsync", policy, "--max-connections-per-ip", &per_ip])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                let program = cmd.get_program().to_string_lossy().into_owned();
                return Err(format!(
                    "cannot run {program} (for {}): {e}",
                    chatd.display()
                ));
            }
        };
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            let suffix = listen.suffix();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Some(addr) = listener(&line, suffix) {
                        let _ = tx.send(addr.to_string());
                    }
                }
            });
        }
        let stderr = child.stderr.take().map(|err| {
            std::thread::spawn(move || BufReader::new(err).lines().map_while(Result::ok).collect())
        });
        let mut daemon = Daemon {
            child,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr,
        };
        match rx.recv_timeout(PATIENCE).map(|a| a.parse::<SocketAddr>()) {
            Ok(Ok(addr)) => daemon.addr = addr,
            _ => {
                let _ = daemon.child.kill();
                let _ = daemon.child.wait();
                let lines = daemon.stderr.take().and_then(|h| h.join().ok());
                let tail = lines.unwrap_or_default().join("\n");
                return Err(format!("chatd did not report its address; stderr:\n{tail}"));
            }
        }
        Ok((daemon, token))
    }

    /// The daemon's data directory (its users file, its log).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time and peak RSS so far, each `None` where this OS does not tell.
    pub fn usage(&self) -> Usage {
        usage_of(self.child.id())
    }

    /// Reads usage, sends SIGTERM, waits for a clean exit and collects the log counters.
    ///
    /// # Errors
    /// The daemon did not exit in time, or exited with a failure.
    pub fn stop(mut self) -> Result<Stopped, String> {
        let usage = self.usage();
        let pid = i32::try_from(self.child.id()).map_err(|e| e.to_string())?;
        kill(Pid::from_raw(pid), Signal::SIGTERM).map_err(|e| format!("SIGTERM: {e}"))?;
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => return Err("chatd did not exit within 30 s of SIGTERM".into()),
                Err(e) => return Err(format!("waiting for chatd: {e}")),
            }
        };
        let lines = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if !status.success() {
            let tail = lines.iter().rev().take(10).rev().cloned();
            let tail: Vec<String> = tail.collect();
            return Err(format!("chatd exited with {status}:\n{}", tail.join("\n")));
        }
        let log = lines.iter().rev().find_map(|l| log_stats(l));
        Ok(Stopped { usage, log })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Only our own child: after a clean stop this finds it already reaped.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The address in chatd's `listening on ADDR` line if its suffix (none for plain, ` (TLS)`,
/// ` (web)`, ` (web, TLS)`) is `suffix`.
pub(crate) fn listener<'l>(line: &'l str, suffix: &str) -> Option<&'l str> {
    let addr = line.trim().strip_prefix("listening on ")?;
    let addr = match addr.find(" (") {
        Some(at) if addr.get(at..) == Some(suffix) => addr.get(..at)?,
        None if suffix.is_empty() => addr,
        _ => return None,
    };
    Some(addr.trim())
}

/// A directory no other run uses: pid, a counter and the clock in its name.
pub fn fresh_dir() -> Result<PathBuf, String> {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!("chat-bench-{}-{n}-{nanos}", std::process::id());
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// `chatd user add USER --data-dir DATA`; the token is the last line it prints.
pub(crate) fn add_user(chatd: &Path, data: &Path, user: &str) -> Result<String, String> {
    let out = Command::new(chatd)
        .args(["user", "add", user, "--data-dir"])
        .arg(data)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", chatd.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("chatd user add failed: {err}"));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(str::to_string)
        .ok_or_else(|| "chatd user add printed no token".into())
}

/// Parses the daemon's `log: R records in B batches, F fsyncs, X failed batches` line (with
/// whatever prefix the logger puts before it).
pub fn log_stats(line: &str) -> Option<LogStats> {
    let rest = line.get(line.find("log: ")? + 5..)?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    match words.as_slice() {
        [
            r,
            "records",
            "in",
            b,
            "batches,",
            f,
            "fsyncs,",
            x,
            "failed",
            "batches",
            ..,
        ] => Some(LogStats {
            records: r.parse().ok()?,
            batches: b.parse().ok()?,
            fsyncs: f.parse().ok()?,
            failed_batches: x.parse().ok()?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_comes_from_the_listener_of_the_kind_asked_for() {
        let plain = "listening on 127.0.0.1:4000";
        let tls = "listening on 127.0.0.1:4001 (TLS)";
        let web = "listening on 127.0.0.1:4002 (web)";
        let web_tls = "listening on 127.0.0.1:4003 (web, TLS)";
        let (p, t, w) = (Listen::Plain.suffix(), " (TLS)", Listen::Web.suffix());
        assert_eq!(listener(plain, p), Some("127.0.0.1:4000"));
        assert_eq!(listener(tls, p), None);
        assert_eq!(listener(tls, t), Some("127.0.0.1:4001"));
        assert_eq!(listener(plain, t), None);
        assert_eq!(listener(web, w), Some("127.0.0.1:4002"));
        for other in [plain, tls, web_tls] {
            assert_eq!(listener(other, w), None, "{other}");
        }
        assert_eq!(
            listener(web, p),
            None,
            "the plain listener is not the web one"
        );
        assert_eq!(listener("ready", t), None);
    }

    #[test]
    fn the_log_line_is_read_whatever_its_prefix() {
        let line = "[2026-01-01T00:00:00Z INFO  chatd::server] \
                    log: 10240 records in 77 batches, 75 fsyncs, 0 failed batches";
        assert_eq!(
            log_stats(line),
            Some(LogStats {
                records: 10240,
                batches: 77,
                fsyncs: 75,
                failed_batches: 0
            })
        );
        assert_eq!(log_stats("log: 3 messages in 1 rooms, 1 segments"), None);
    }
}
