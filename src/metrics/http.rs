//! A tiny HTTP/1.1 server for `/metrics` and `/healthz`, on the same machinery as the chat
//! reactors: one mio `Poll`, a slab of connections, non-blocking reads and writes. It answers
//! one GET per connection and closes (`Connection: close`), which is all a scraper needs.
//!
//! It must never let a scraper (or anyone who finds the port) hold memory or a thread: requests
//! are capped at `MAX_REQUEST` bytes and connections at `MAX_CONNS`, and each has a deadline.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::reactor::conn::{interrupted, would_block};

const LISTENER: Token = Token(0);
const CONN_BASE: usize = 1;
/// A request line and headers larger than this are refused.
const MAX_REQUEST: usize = 8 * 1024;
/// Scrapers open one connection at a time; a handful is plenty.
const MAX_CONNS: usize = 64;
/// A scrape takes milliseconds; a connection idle longer is dropped.
const DEADLINE: Duration = Duration::from_secs(5);

struct HttpConn {
    stream: TcpStream,
    request: Vec<u8>,
    response: Vec<u8>,
    written: usize,
    deadline: Instant,
}

/// Produces the body of `/metrics`.
pub type Render = Box<dyn Fn() -> String + Send>;

/// Says whether the server is healthy for `/healthz`: `Ok(body)` answers 200, `Err(body)`
/// 503. The body names what it looked at (the JetStream engine, with `--store jetstream`).
pub type Health = Box<dyn Fn() -> Result<String, String> + Send>;

pub struct MetricsServer {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<HttpConn>,
    render: Render,
    health: Health,
    stopping: Stopping,
}

/// Tells the server to return; checked at least every `POLL_EVERY`.
pub type Stopping = Box<dyn Fn() -> bool + Send>;

/// How often the loop looks at the stop flag and the deadlines.
const POLL_EVERY: Duration = Duration::from_millis(250);

impl MetricsServer {
    /// Answers `/healthz` with `health` rather than a plain "ok".
    #[must_use]
    pub fn with_health(mut self, health: Health) -> MetricsServer {
        self.health = health;
        self
    }

    /// Binds `addr`; returns the server and the address bound (port 0 resolved).
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn bind(
        addr: SocketAddr,
        render: Render,
        stopping: Stopping,
    ) -> io::Result<(MetricsServer, SocketAddr)> {
        let poll = Poll::new()?;
        // The chat listeners' rules (IPv6 only on [::], the same backlog), so that metrics on
        // [::] behave alike on Linux and FreeBSD and leave 0.0.0.0 free.
        let listener = crate::reactor::listener::bind_single(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("metrics: {e}")))?;
        let mut listener = TcpListener::from_std(listener);
        let bound = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok((
            MetricsServer {
                poll,
                listener,
                conns: Slab::new(),
                health: Box::new(|| Ok("ok\n".into())),
                render,
                stopping,
            },
            bound,
        ))
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(64);
        loop {
            if let Err(e) = self.poll.poll(&mut events, Some(POLL_EVERY)) {
                if interrupted(&e) {
                    continue;
                }
                log::error!("metrics: poll failed, stopping: {e}");
                return;
            }
            if (self.stopping)() {
                return;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    Token(t) => self.service(t - CONN_BASE),
                }
            }
            let now = Instant::now();
            let late: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| now >= c.deadline)
                .map(|(k, _)| k)
                .collect();
            for key in late {
                self.close(key);
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if self.conns.len() >= MAX_CONNS {
                        continue;
                    }
                    let entry = self.conns.vacant_entry();
                    let token = Token(CONN_BASE + entry.key());
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, interest)
                        .is_err()
                    {
                        continue;
                    }
                    let deadline = Instant::now() + DEADLINE;
                    let key = entry.key();
                    entry.insert(HttpConn {
                        stream,
                        request: Vec::new(),
                        response: Vec::new(),
                        written: 0,
                        deadline,
                    });
                    self.service(key);
                }
                // No more waiting connections.
                Err(e) if would_block(&e) => return,
                // A signal interrupted accept: try again.
                Err(e) if interrupted(&e) => {}
                // Out of descriptors or the like: the next event retries.
                Err(e) => {
                    log::debug!("metrics: accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn service(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        // A failed read or write ends the exchange like a finished one.
        let done = step(conn, &self.render, &self.health).unwrap_or(true);
        if done {
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }
}

/// Reads the request until its blank line, then writes the answer. True when finished.
fn step(conn: &mut HttpConn, render: &Render, health: &Health) -> io::Result<bool> {
    if conn.response.is_empty() {
        let mut buf = [0u8; 1024];
        loop {
            match conn.stream.read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(n) => conn
                    .request
                    .extend_from_slice(buf.get(..n).unwrap_or_default()),
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => {}
                Err(e) => return Err(e),
            }
            if conn.request.len() > MAX_REQUEST {
                break;
            }
        }
        let complete = conn.request.windows(4).any(|w| w == b"\r\n\r\n");
        if !complete && conn.request.len() <= MAX_REQUEST {
            return Ok(false);
        }
        conn.response = respond(&conn.request, render, health);
    }
    while conn.written < conn.response.len() {
        match conn
            .stream
            .write(conn.response.get(conn.written..).unwrap_or_default())
        {
            Ok(0) => return Ok(true),
            Ok(n) => conn.written += n,
            Err(e) if would_block(&e) => return Ok(false),
            Err(e) if interrupted(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The whole HTTP response to a request.
fn respond(request: &[u8], render: &Render, health: &Health) -> Vec<u8> {
    let line = request
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let (status, content_type, body) = match (method, path) {
        _ if request.len() > MAX_REQUEST => (
            "431 Request Header Fields Too Large",
            "text/plain",
            "too large\n".into(),
        ),
        (b"GET", b"/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(),
        ),
        (b"GET", b"/healthz") => match health() {
            Ok(body) => ("200 OK", "text/plain", body),
            Err(body) => ("503 Service Unavailable", "text/plain", body),
        },
        (b"GET", _) => (
            "404 Not Found",
            "text/plain",
            "try /metrics or /healthz\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let render: Render = Box::new(|| "chatd_rooms 1\n".into());
        let health: Health = Box::new(|| Ok("ok\n".into()));
        let ok = String::from_utf8(respond(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            &render,
            &health,
        ))
        .expect("utf8");
        assert!(
            ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("chatd_rooms 1\n"),
            "{ok}"
        );
        assert!(ok.contains("Content-Length: 14\r\n"));
        let healthy =
            String::from_utf8(respond(b"GET /healthz HTTP/1.1\r\n\r\n", &render, &health))
                .expect("utf8");
        assert!(healthy.ends_with("\r\n\r\nok\n"));
        let down: Health = Box::new(|| Err("jetstream: down\n".into()));
        let sick = String::from_utf8(respond(b"GET /healthz HTTP/1.1\r\n\r\n", &render, &down))
            .expect("utf8");
        assert!(
            sick.starts_with("HTTP/1.1 503 ") && sick.ends_with("jetstream: down\n"),
            "{sick}"
        );
        assert!(respond(b"GET /x HTTP/1.1\r\n\r\n", &render, &health).starts_with(b"HTTP/1.1 404"));
        assert!(
            respond(b"POST /metrics HTTP/1.1\r\n\r\n", &render, &health)
                .starts_with(b"HTTP/1.1 405")
        );
        assert!(respond(&[b'A'; MAX_REQUEST + 1], &render, &health).starts_with(b"HTTP/1.1 431"));
    }

    #[test]
    fn metrics_on_ipv6_any_leave_the_ipv4_port_free() {
        let any6: SocketAddr = "[::]:0".parse().expect("literal");
        let bound = MetricsServer::bind(any6, Box::new(String::new), Box::new(|| true));
        let (server, bound) = match bound {
            Ok(ok) => ok,
            Err(e) => {
                eprintln!("SKIPPED metrics_on_ipv6_any: no IPv6 here ({e})");
                return;
            }
        };
        let v6only =
            nix::sys::socket::getsockopt(&server.listener, nix::sys::socket::sockopt::Ipv6V6Only);
        // A dual-stack [::] (Linux's default) would hold 0.0.0.0 on this port as well. That
        // the IPv4 port is then free is shown by the listener's own test, which can retry
        // ports that other tests hold.
        assert!(v6only.expect("getsockopt"), "[::] must not take IPv4 too");
        assert_ne!(bound.port(), 0);
    }
}
