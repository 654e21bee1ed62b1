//! Shared helpers for the integration tests: start a real `chatd` on `127.0.0.1:0` with a
//! temporary data directory, add users, connect clients, and wait on events (frames, log
//! lines, process exit) with generous deadlines instead of sleeping.

#![allow(dead_code)]

pub mod nats;
pub mod nodes;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chatd::client::{Client, Reply};
use chatd::protocol::{ClientFrame, ErrorCode};

/// How long any single expected event may take before the test fails. Generous: CI machines
/// are slow and shared; a passing test never waits this long.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub const BIN: &str = env!("CARGO_BIN_EXE_chatd");

/// Put among `Daemon::start`'s flags (with `--tls-listen`) to start without a plain listener;
/// it is not passed to chatd.
pub const TLS_ONLY: &str = "<tls only>";

type Log = Arc<(Mutex<Vec<String>>, Condvar)>;

pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    pub addrs: Vec<SocketAddr>,
    /// One per `--tls-listen`.
    pub tls_addrs: Vec<SocketAddr>,
    /// One per `--web-listen`.
    pub web_addrs: Vec<SocketAddr>,
    /// One per `--web-tls-listen`.
    pub web_tls_addrs: Vec<SocketAddr>,
    pub dir: tempfile::TempDir,
    /// The NATS server a `--store jetstream` daemon of [`Driver::JetStream`] stores in; it
    /// lives as long as the daemon (dropped after it) and can be shared with a daemon started
    /// again on the same store ([`Driver::start_again`]).
    pub nats: Option<Arc<nats::NatsServer>>,
    log: Log,
}

impl Daemon {
    /// Starts `chatd serve` with `extra` flags on a free loopback port and a fresh data dir.
    #[track_caller]
    pub fn start(extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        Daemon::start_in(dir, extra)
    }

    /// Like `start`, in a data directory the test prepared (users added before start).
    #[track_caller]
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Daemon {
        let data = dir.path().join("data");
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--data-dir".into(),
            data.display().to_string(),
        ];
        // A plain listener unless the test names its own, or asks for TLS only.
        let tls_only = extra.contains(&"--tls-listen") && extra.contains(&TLS_ONLY);
        if !extra.contains(&"--listen") && !tls_only {
            args.extend(["--listen".into(), "127.0.0.1:0".into()]);
        }
        let extra: Vec<&str> = extra.iter().copied().filter(|a| *a != TLS_ONLY).collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = Command::new(BIN)
            .args(&args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chatd");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Some(rest) = line.strip_prefix("listening on ") else {
                    continue;
                };
                let (addr, kind) = [" (TLS)", " (web)", " (web, TLS)"]
                    .iter()
                    .find_map(|k| rest.strip_suffix(k).map(|a| (a, *k)))
                    .unwrap_or((rest, ""));
                if let Ok(addr) = addr.parse::<SocketAddr>() {
                    let _ = tx.send((addr, kind));
                }
            }
        });
        let log: Log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = Arc::clone(&log);
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let (lines, cv) = &*sink;
                lines.lock().expect("log lock").push(line);
                cv.notify_all();
            }
        });
        let listens = args
            .iter()
            .filter(|a| {
                [
                    "--listen",
                    "--tls-listen",
                    "--web-listen",
                    "--web-tls-listen",
                ]
                .contains(&a.as_str())
            })
            .count();
        let (mut addrs, mut tls_addrs) = (Vec::new(), Vec::new());
        let (mut web_addrs, mut web_tls_addrs) = (Vec::new(), Vec::new());
        for _ in 0..listens {
            match rx.recv_timeout(PATIENCE) {
                Ok((addr, " (TLS)")) => tls_addrs.push(addr),
                Ok((addr, " (web)")) => web_addrs.push(addr),
                Ok((addr, " (web, TLS)")) => web_tls_addrs.push(addr),
                Ok((addr, _)) => addrs.push(addr),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // The pipe is closed now: wait for the last lines (a bad flag's error).
                    let _ = stderr_reader.join();
                    let lines = log.0.lock().expect("log lock").join("\n");
                    panic!("chatd did not report its address; stderr:\n{lines}");
                }
            }
        }
        Daemon {
            child,
            addr: addrs
                .first()
                .or(tls_addrs.first())
                .copied()
                .expect("an address"),
            addrs,
            tls_addrs,
            web_addrs,
            web_tls_addrs,
            dir,
            nats: None,
            log,
        }
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Adds a user through `chatd user add` and returns its token, once the daemon has loaded
    /// the users file with it (its watcher looks every 250 ms).
    #[track_caller]
    pub fn add_user(&self, name: &str) -> String {
        let token = add_user(&self.data_dir(), name);
        let users = std::fs::read_to_string(self.data_dir().join("users")).expect("users file");
        let count = users
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count();
        self.wait_for_users(count);
        token
    }

    /// Waits until the daemon's users-file watcher has loaded a file of `count` users.
    #[track_caller]
    pub fn wait_for_users(&self, count: usize) {
        let loaded = format!(": {count} users");
        assert!(
            self.wait_for_log_line(|l| l.contains("reloaded users file") && l.ends_with(&loaded)),
            "the daemon did not load {count} users: {:#?}",
            self.log_lines()
        );
    }

    /// A raw connection, before HELLO.
    #[track_caller]
    pub fn connect(&self) -> Client {
        let client = Client::connect(self.addr).expect("connect to chatd");
        client.set_timeout(Some(PATIENCE)).expect("set timeout");
        client
    }

    /// Adds `name` and returns a connection that completed HELLO/WELCOME as that user.
    #[track_caller]
    pub fn login(&self, name: &str) -> Client {
        let token = self.add_user(name);
        self.login_with(name, &token)
    }

    #[track_caller]
    pub fn login_with(&self, name: &str, token: &str) -> Client {
        let mut c = self.connect();
        c.send(&ClientFrame::Hello {
            version: 1,
            user: name,
            token,
            client: 0,
        })
        .expect("send HELLO");
        match recv(&mut c) {
            Reply::Welcome { .. } => c,
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    /// Waits until a stderr line contains `needle`; true if one did.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        self.wait_for_log_line(|l| l.contains(needle))
    }

    /// Waits until a stderr line satisfies `matches`; true if one did.
    pub fn wait_for_log_line(&self, matches: impl Fn(&str) -> bool) -> bool {
        let (lines, cv) = &*self.log;
        let deadline = Instant::now() + PATIENCE;
        let mut guard = lines.lock().expect("log lock");
        loop {
            if guard.iter().any(|l| matches(l)) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = cv.wait_timeout(guard, left).expect("log lock").0;
        }
    }

    /// Waits until at least `n` stderr lines contain `needle`; true if they did.
    pub fn wait_for_log_count(&self, needle: &str, n: usize) -> bool {
        let (lines, cv) = &*self.log;
        let deadline = Instant::now() + PATIENCE;
        let mut guard = lines.lock().expect("log lock");
        loop {
            if guard.iter().filter(|l| l.contains(needle)).count() >= n {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = cv.wait_timeout(guard, left).expect("log lock").0;
        }
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.0.lock().expect("log lock").clone()
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits")
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("kill");
    }

    /// Waits for the daemon to exit; None if it did not within PATIENCE.
    pub fn wait_exit(&mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Resident set size of the daemon, in KiB: from /proc on Linux, from `ps` on FreeBSD.
    /// `None` where neither can be read, so that a memory check skips instead of comparing
    /// zeros.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib_of(self.pid())
    }

    /// Asserts the daemon's RSS grew by less than `slack_kib` since `before` (a `rss_kib`
    /// reading). Where RSS cannot be read it says SKIPPED on stderr and returns: a memory check
    /// that compares nothing must not pass quietly.
    #[track_caller]
    pub fn assert_rss_bounded(&self, before: Option<u64>, slack_kib: u64) {
        let (Some(before), Some(after)) = (before, self.rss_kib()) else {
            let test = std::thread::current().name().unwrap_or("?").to_string();
            eprintln!("SKIPPED memory check in {test}: the daemon's RSS is not readable here");
            return;
        };
        assert!(
            after < before + slack_kib,
            "RSS grew from {before} KiB to {after} KiB"
        );
    }
}

#[cfg(target_os = "linux")]
pub fn rss_kib_of(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let v = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    v.trim().trim_end_matches("kB").trim().parse().ok()
}

#[cfg(target_os = "freebsd")]
pub fn rss_kib_of(pid: i32) -> Option<u64> {
    let out = Command::new("ps")
        .args(["-o", "rss=", "-p", &pid.to_string()])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
pub fn rss_kib_of(_pid: i32) -> Option<u64> {
    None
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `chatd user add NAME --data-dir DIR` and returns the token (its last output line).
#[track_caller]
pub fn add_user(data_dir: &std::path::Path, name: &str) -> String {
    let out = Command::new(BIN)
        .args(["user", "add", name, "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("run chatd user add");
    assert!(
        out.status.success(),
        "user add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8 output")
        .lines()
        .last()
        .expect("a token line")
        .trim()
        .to_string()
}

/// The next frame; fails the test on timeout or close.
#[track_caller]
pub fn recv(c: &mut Client) -> Reply {
    match c.recv() {
        Ok(Some(reply)) => reply,
        Ok(None) => panic!("connection closed while a frame was expected"),
        Err(e) => panic!("no frame: {e}"),
    }
}

/// Reads until the server closes; returns what came before. Fails on timeout.
#[track_caller]
pub fn recv_until_close(c: &mut Client) -> Vec<Reply> {
    let mut got = Vec::new();
    loop {
        match c.recv() {
            Ok(Some(reply)) => got.push(reply),
            Ok(None) => return got,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("expected the server to close; got {e} after {got:?}"),
        }
    }
}

/// Asserts the next frame is ERROR with `code` (and `reference`), returns its message.
#[track_caller]
pub fn expect_error(c: &mut Client, code: ErrorCode, reference: u64) -> String {
    match recv(c) {
        Reply::Error {
            code: got,
            reference: r,
            message,
        } => {
            assert_eq!(
                got,
                code.as_u16(),
                "expected {code}, got code {got} ({message})"
            );
            assert_eq!(r, reference, "ref of {code}");
            message
        }
        other => panic!("expected ERROR {code}, got {other:?}"),
    }
}

/// Asserts a fatal error: ERROR `code`, then the connection closes with nothing else.
#[track_caller]
pub fn expect_fatal(c: &mut Client, code: ErrorCode) {
    expect_error(c, code, 0);
    let rest = recv_until_close(c);
    assert!(
        rest.is_empty(),
        "nothing may follow a fatal {code}, got {rest:?}"
    );
}

/// JOINs and returns (first, head) from JOINED.
#[track_caller]
pub fn join(c: &mut Client, room: &str, after: u64, limit: u32) -> (u64, u64) {
    c.send(&ClientFrame::Join { room, after, limit })
        .expect("send JOIN");
    match recv(c) {
        Reply::Joined {
            room: r,
            first,
            head,
        } => {
            assert_eq!(r, room);
            (first, head)
        }
        other => panic!("expected JOINED {room}, got {other:?}"),
    }
}

#[track_caller]
pub fn send(c: &mut Client, room: &str, id: u64, text: &str) {
    c.send(&ClientFrame::Send { room, id, text })
        .expect("send SEND");
}

/// Reads frames until `n` MSGs arrived; returns them as (room, seq, user, text). Other frames
/// (ACKs) are collected into `others`.
#[track_caller]
pub fn recv_msgs(
    c: &mut Client,
    n: usize,
    others: &mut Vec<Reply>,
) -> Vec<(String, u64, String, String)> {
    let mut msgs = Vec::new();
    while msgs.len() < n {
        match recv(c) {
            Reply::Msg {
                room,
                seq,
                user,
                text,
                ..
            } => msgs.push((room, seq, user, text)),
            other => others.push(other),
        }
    }
    msgs
}

/// What serves the connections of the daemon a test starts (`chatd serve --driver`), and
/// where it stores messages (`--store`): tests of the protocol run against each, through
/// [`per_driver!`], so that a second driver or store can never drift from the contract
/// unnoticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Reactor,
    Threads,
    /// The reactor over `--store jetstream`, on a single nats-server of its own started for
    /// the daemon (`--jetstream-replicas 1`).
    JetStream,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Reactor => "reactor",
            Driver::Threads => "threads",
            Driver::JetStream => "jetstream",
        }
    }

    /// `Daemon::start` with this driver (and for `JetStream`, a fresh nats-server).
    #[track_caller]
    pub fn start(self, extra: &[&str]) -> Daemon {
        match self {
            Driver::Reactor | Driver::Threads => {
                let mut flags = extra.to_vec();
                flags.extend(["--driver", self.name()]);
                Daemon::start(&flags)
            }
            Driver::JetStream => {
                let nats = Arc::new(nats::NatsServer::single());
                Driver::start_jetstream(tempfile::tempdir().expect("temp dir"), nats, extra)
            }
        }
    }

    /// Starts a daemon on the store of `previous` (stopped or not): its data directory and,
    /// for `JetStream`, its NATS server, so that what it stored is there again.
    #[track_caller]
    pub fn start_again(self, previous: &Daemon, extra: &[&str]) -> Daemon {
        let data = previous.data_dir().display().to_string();
        let mut flags = vec!["--data-dir", data.as_str()];
        flags.extend_from_slice(extra);
        match (self, &previous.nats) {
            (Driver::JetStream, Some(nats)) => Driver::start_jetstream(
                tempfile::tempdir().expect("temp dir"),
                Arc::clone(nats),
                &flags,
            ),
            (Driver::JetStream, None) => panic!("the previous daemon had no NATS server"),
            _ => self.start(&flags),
        }
    }

    /// A second `JetStream` node beside `other` (running): a data directory of its own with a
    /// copy of `other`'s users, over the same NATS server.
    #[track_caller]
    pub fn start_beside(other: &Daemon, extra: &[&str]) -> Daemon {
        let nats = other.nats.as_ref().expect("a --store jetstream daemon");
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        std::fs::copy(other.data_dir().join("users"), data.join("users")).expect("copy users");
        Driver::start_jetstream(dir, Arc::clone(nats), extra)
    }

    #[track_caller]
    fn start_jetstream(
        dir: tempfile::TempDir,
        nats: Arc<nats::NatsServer>,
        extra: &[&str],
    ) -> Daemon {
        let url = nats.url();
        let mut flags = vec![
            "--store",
            "jetstream",
            "--nats",
            url.as_str(),
            "--jetstream-replicas",
            "1",
        ];
        flags.extend_from_slice(extra);
        let mut d = Daemon::start_in(dir, &flags);
        d.nats = Some(nats);
        d
    }
}

/// Defines a test once and runs it against every driver: `fn name(driver: Driver) { .. }`
/// becomes the tests `name::reactor`, `name::threads` and `name::jetstream`, each calling the
/// body with its driver (which starts daemons with `driver.start(..)`). The `jetstream` test
/// says SKIPPED and passes where nats-server is not installed.
#[allow(unused_macros)]
macro_rules! per_driver {
    ($($(#[$meta:meta])* fn $name:ident($driver:ident: Driver) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[test]
                fn reactor() {
                    body(util::Driver::Reactor);
                }

                #[test]
                fn threads() {
                    body(util::Driver::Threads);
                }

                #[test]
                fn jetstream() {
                    if util::nats::skip(module_path!()) {
                        return;
                    }
                    body(util::Driver::JetStream);
                }

                $(#[$meta])*
                fn body($driver: util::Driver) $body
            }
        )*
    };
}

/// `chatd_<name>` as `d`'s metrics endpoint (`--metrics 127.0.0.1:0`) reports it now.
#[track_caller]
pub fn metric(d: &Daemon, name: &str) -> f64 {
    assert!(d.wait_for_log("metrics: serving"), "{:#?}", d.log_lines());
    let port: u16 = d
        .log_lines()
        .iter()
        .find_map(|l| l.split("http://").nth(1)?.rsplit(':').next()?.parse().ok())
        .expect("metrics port in the log");
    let (status, body) = nats::http_get(port, "/metrics").expect("an answer from /metrics");
    assert_eq!(status, 200, "{body}");
    let series = format!("chatd_{name} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series}in:\n{body}"))
}
