//! A non-blocking connection on a mio `Poll` with its two buffers of protocol bytes, plain,
//! through a TLS session (`tls::Session`) or inside WebSocket frames (`ws::Session`), shared
//! by the pub/sub, idle and connect drivers; plus the bench's own CPU time and pinning.
//! Connecting is blocking (a loopback connect completes at once); everything after it, the
//! TLS handshake and the WebSocket upgrade included, is not.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::{Interest, Poll, Token};

use crate::tls::TlsClient;
use crate::ws::WsClient;

/// How the bench's connections reach the server (`--transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Plain,
    Tls,
    Ws,
}

impl Transport {
    /// # Errors
    /// A word that is not a transport.
    pub fn parse(v: &str) -> Result<Transport, String> {
        match v {
            "plain" => Ok(Transport::Plain),
            "tls" => Ok(Transport::Tls),
            "ws" => Ok(Transport::Ws),
            _ => Err(format!("--transport: '{v}' is not plain, tls or ws")),
        }
    }

    /// The flag's word.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Plain => "plain",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
        }
    }

    /// The `transport` field of a run's record: plain runs have always said `tcp`.
    pub fn record_name(self) -> &'static str {
        match self {
            Transport::Plain => "tcp",
            other => other.name(),
        }
    }
}

/// Where the bench's connections go: the server's address, and how to speak TLS or WebSocket
/// to it when the run asks for one (at most one is set).
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub tls: Option<TlsClient>,
    pub ws: Option<WsClient>,
}

/// What lies between the socket and the protocol bytes of a connection that is not plain.
enum Layer {
    Tls(Box<crate::tls::Session>),
    Ws(Box<crate::ws::Session>),
}

pub struct Link {
    pub stream: TcpStream,
    /// Protocol bytes received (decrypted, or out of their WebSocket frames) and not parsed
    /// yet.
    pub inbuf: Vec<u8>,
    /// Protocol bytes to send.
    pub out: Vec<u8>,
    layer: Option<Layer>,
}

impl Link {
    /// Connects to `to` and registers the stream under `token`; under TLS the handshake, under
    /// WebSocket the upgrade request, starts with the first `flush`.
    ///
    /// # Errors
    /// The connect or the registration failed.
    pub fn open(poll: &Poll, to: &Endpoint, token: usize) -> io::Result<Link> {
        let layer = match (&to.tls, &to.ws) {
            (Some(client), _) => Some(Layer::Tls(Box::new(client.session()?))),
            (None, Some(client)) => Some(Layer::Ws(Box::new(client.session()))),
            (None, None) => None,
        };
        let s = connect(to.addr)?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(s);
        let interest = Interest::READABLE | Interest::WRITABLE;
        poll.registry()
            .register(&mut stream, Token(token), interest)?;
        Ok(Link {
            stream,
            inbuf: Vec::new(),
            out: Vec::new(),
            layer,
        })
    }

    /// Reads to `WouldBlock`; true when the server closed the connection.
    ///
    /// # Errors
    /// A socket error.
    pub fn read(&mut self, scratch: &mut [u8]) -> io::Result<bool> {
        match self.layer.as_mut() {
            Some(Layer::Tls(tls)) => return tls.read(&mut self.stream, scratch, &mut self.inbuf),
            Some(Layer::Ws(ws)) => return ws.read(&mut self.stream, scratch, &mut self.inbuf),
            None => {}
        }
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return Ok(true),
                Ok(n) => self
                    .inbuf
                    .extend_from_slice(scratch.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes `out` to `WouldBlock` (the writable event brings us back for the rest).
    ///
    /// # Errors
    /// A socket error.
    pub fn flush(&mut self) -> io::Result<()> {
        match self.layer.as_mut() {
            Some(Layer::Tls(tls)) => return tls.flush(&mut self.stream, &mut self.out),
            Some(Layer::Ws(ws)) => return ws.flush(&mut self.stream, &mut self.out),
            None => {}
        }
        let written = write_until_blocked(&mut self.stream, &self.out)?;
        self.out.drain(..written);
        Ok(())
    }

    /// Makes the close a reset, so that no TIME_WAIT is left on our side (connect storms).
    pub fn reset_on_close(&self) {
        use nix::sys::socket::{setsockopt, sockopt::Linger};
        let l = nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        let _ = setsockopt(&self.stream, Linger, &l);
    }
}

/// Tries a loopback connect this many times when the kernel finds no free local port: other
/// processes on the machine take and release ephemeral ports all the time, and each try draws
/// a new one. A connection that still fails counts as failed in the run.
const CONNECT_TRIES: usize = 8;

fn connect(addr: SocketAddr) -> io::Result<std::net::TcpStream> {
    let mut tries = 1;
    loop {
        match std::net::TcpStream::connect(addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable && tries < CONNECT_TRIES => {
                tries += 1;
            }
            other => return other,
        }
    }
}

/// This process's user + system CPU time so far, in seconds.
pub fn own_cpu_secs() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

/// Pins this process (every thread it starts later) to `cpu`.
///
/// # Errors
/// The kernel refused (no such CPU).
pub fn pin(cpu: usize) -> Result<(), String> {
    use nix::sched::{CpuSet, sched_setaffinity};
    let mut set = CpuSet::new();
    set.set(cpu).map_err(|e| format!("--cpu {cpu}: {e}"))?;
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(|e| format!("--cpu {cpu}: {e}"))
}

/// Writes `out` until it is all written or the socket would block; returns how much went.
///
/// # Errors
/// A socket error other than `WouldBlock`.
pub fn write_until_blocked(stream: &mut impl Write, out: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < out.len() {
        match stream.write(out.get(written..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => written += n,
            // The writable event brings the caller back for the rest.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}
