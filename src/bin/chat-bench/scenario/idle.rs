//! `idle` and `connect`. `idle`: C connections each say hello and subscribe to one room, then
//! sit still; the server's RSS before any and with all C held gives its bytes per idle
//! connection, (RSS at C - RSS at 0) / C. The connections live in `--procs` child processes
//! of the bench (`chat-bench idle-hold`), so that no process needs more than the 20,000 open
//! files the limit allows. `connect`: connections set up per second, each one connect, hello
//! and its answer (chatd WELCOME, Redis +PONG, NATS PONG), then a reset, with `concurrency`
//! of them under way at once. Under `--tls` each setup starts with a full TLS handshake (no
//! session is ever resumed), so `connect --tls` counts handshakes per second; under
//! `--transport ws` with the HTTP upgrade, and an idle WebSocket connection is one that has
//! upgraded, said hello and subscribed.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use crate::net::{Endpoint, Link, Transport};
use crate::stats::Latency;
use crate::wire::{Creds, In, Kind, Wire};

/// Connections being set up at once; more only overflows the server's listen backlog.
const SETUP_AT_ONCE: usize = 256;
const PATIENCE: Duration = Duration::from_secs(60);

/// One connection being set up; `done` once its last answer came.
struct Setup {
    link: Link,
    wire: Box<dyn Wire>,
    subscribe: Option<String>,
    started: Instant,
    done: bool,
}

/// Sets up `count` connections (hello, then subscribe to `room` if given), at most
/// `at_once` under way. `keep`: hold them afterwards (returned) or reset each when ready.
/// Returns the held links, the failures, and each setup's latency.
pub fn set_up(
    kind: Kind,
    to: &Endpoint,
    creds: &Creds,
    count: usize,
    room: Option<&str>,
    at_once: usize,
    keep: bool,
) -> (Vec<Link>, Vec<String>, Latency) {
    let mut held = Vec::new();
    let mut failures = Vec::new();
    let mut latency = Latency::new();
    let Ok(mut poll) = Poll::new() else {
        return (held, vec!["poll".into()], latency);
    };
    let mut events = Events::with_capacity(1024);
    let mut slots: Vec<Option<Setup>> = Vec::new();
    let mut opened = 0;
    let mut finished = 0;
    let mut scratch = vec![0u8; 16 * 1024];
    let mut last = Instant::now();
    while finished < count {
        // Top up to `at_once` under way, reusing free slots as tokens.
        while opened < count && slots.iter().filter(|s| s.is_some()).count() < at_once {
            let i = slots
                .iter()
                .position(Option::is_none)
                .unwrap_or(slots.len());
            if i == slots.len() {
                slots.push(None);
            }
            opened += 1;
            let started = Instant::now();
            match Link::open(&poll, to, i) {
                Ok(mut link) => {
                    let mut wire = crate::wire::new(kind, false, creds);
                    wire.hello(&mut link.out);
                    let _ = link.flush();
                    if let Some(s) = slots.get_mut(i) {
                        *s = Some(Setup {
                            link,
                            wire,
                            subscribe: room.map(str::to_string),
                            started,
                            done: false,
                        });
                    }
                }
                Err(e) => {
                    failures.push(format!("connecting: {e}"));
                    finished += 1;
                }
            }
        }
        if last.elapsed() > PATIENCE {
            failures.push(format!("no answer for {} s", PATIENCE.as_secs()));
            break;
        }
        if poll
            .poll(&mut events, Some(Duration::from_millis(100)))
            .is_err()
        {
            continue;
        }
        for ev in &events {
            let i = ev.token().0;
            let Some(slot) = slots.get_mut(i) else {
                continue;
            };
            let Some(s) = slot.as_mut() else {
                continue;
            };
            last = Instant::now();
            let outcome = advance(s, &mut scratch);
            match outcome {
                Ok(false) => {}
                Ok(true) => {
                    latency.record(s.started.elapsed());
                    finished += 1;
                    if let Some(mut done) = slot.take() {
                        let _ = poll.registry().deregister(&mut done.link.stream);
                        if keep {
                            held.push(done.link);
                        } else {
                            done.link.reset_on_close();
                        }
                    }
                }
                Err(e) => {
                    failures.push(e);
                    finished += 1;
                    *slot = None;
                }
            }
        }
    }
    (held, failures, latency)
}

/// Moves one setup on; true once it is complete.
fn advance(s: &mut Setup, scratch: &mut [u8]) -> Result<bool, String> {
    let eof = s
        .link
        .read(scratch)
        .map_err(|e| format!("receiving: {e}"))?;
    let (mut ready, mut subscribed, mut error) = (false, false, None);
    let Link { inbuf, out, .. } = &mut s.link;
    let used = s.wire.parse(inbuf, out, &mut |ev| match ev {
        In::Ready => ready = true,
        In::Subscribed => subscribed = true,
        In::Error(e) => error = Some(e),
        _ => {}
    })?;
    inbuf.drain(..used.min(inbuf.len()));
    if let Some(e) = error {
        return Err(format!("server error: {e}"));
    }
    if ready {
        match s.subscribe.take() {
            Some(room) => s.wire.subscribe(&room, out),
            None => s.done = true,
        }
    }
    if subscribed {
        s.done = true;
    }
    s.link.flush().map_err(|e| format!("sending: {e}"))?;
    if s.done {
        return Ok(true);
    }
    if eof {
        return Err("the server closed the connection during setup".into());
    }
    Ok(false)
}

/// The `idle-hold` child: sets up `count` connections, prints `ready OK FAILED`, and holds
/// them until its stdin closes.
pub fn hold_child(kind: Kind, to: &Endpoint, count: usize, room: &str) -> i32 {
    let creds = Creds {
        user: std::env::var("CHAT_BENCH_USER").unwrap_or_else(|_| "bench".into()),
        token: std::env::var("CHAT_BENCH_TOKEN").unwrap_or_default(),
    };
    let (held, failures, _) = set_up(kind, to, &creds, count, Some(room), SETUP_AT_ONCE, true);
    if let Some(f) = failures.first() {
        eprintln!(
            "chat-bench idle-hold: {} failed, first: {f}",
            failures.len()
        );
    }
    println!("ready {} {}", held.len(), failures.len());
    let _ = std::io::stdout().flush();
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
    // A reset, not a FIN: 18,000 connections in TIME_WAIT would hold the loopback's ephemeral
    // ports for a minute, and the next run would find none free.
    for link in &held {
        link.reset_on_close();
    }
    drop(held);
    0
}

/// Children holding connections; dropping it closes their stdin, which ends them.
pub struct Holders {
    children: Vec<std::process::Child>,
    pub held: usize,
    pub failed: usize,
}

/// The server the holders connect to, and how.
pub struct Dial<'a> {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub transport: Transport,
    /// The CA to trust under TLS.
    pub tls_ca: Option<&'a Path>,
}

impl Holders {
    /// Spreads `count` connections to `to` over `procs` children and waits until all are set
    /// up.
    ///
    /// # Errors
    /// A child could not be started or did not report.
    pub fn start(
        to: &Dial<'_>,
        creds: &Creds,
        count: usize,
        procs: usize,
        room: &str,
    ) -> Result<Holders, String> {
        let exe = std::env::current_exe().map_err(|e| format!("finding myself: {e}"))?;
        let mut h = Holders {
            children: Vec::new(),
            held: 0,
            failed: 0,
        };
        let mut readers = Vec::new();
        for i in 0..procs {
            let n = count / procs + usize::from(i < count % procs);
            let mut cmd = Command::new(&exe);
            cmd.args([
                "idle-hold",
                "--target",
                to.kind.name(),
                "--addr",
                &to.addr.to_string(),
            ])
            .args(["--connections", &n.to_string(), "--room", room])
            .args(["--transport", to.transport.name()]);
            if let Some(ca) = to.tls_ca.filter(|_| to.transport == Transport::Tls) {
                cmd.arg("--tls-ca").arg(ca);
            }
            let mut child = cmd
                .env("CHAT_BENCH_USER", &creds.user)
                .env("CHAT_BENCH_TOKEN", &creds.token)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("starting idle-hold: {e}"))?;
            readers.push(child.stdout.take());
            h.children.push(child);
        }
        for out in readers.into_iter().flatten() {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let w: Vec<usize> = line
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            match w.as_slice() {
                [ok, failed] => {
                    h.held += ok;
                    h.failed += failed;
                }
                _ => return Err(format!("idle-hold said {line:?}")),
            }
        }
        Ok(h)
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        for c in &mut self.children {
            drop(c.stdin.take());
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

/// The server's RSS once it has stopped moving (two readings 200 ms apart within 1%), at
/// most 3 s after the first.
pub fn settled_rss(server: &crate::server::Server) -> Option<u64> {
    let mut prev = server.usage()?.rss_kib?;
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(200));
        let now = server.usage()?.rss_kib?;
        if now.abs_diff(prev) * 100 <= prev {
            return Some(now);
        }
        prev = now;
    }
    Some(prev)
}
