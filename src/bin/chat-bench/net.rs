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
    /// yet; on a plain connection read by `read_through`, only the partial frame a read left.
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

    /// Reads what has arrived and hands it to `take` with `out` for replies; `take` returns
    /// how many bytes at the front it used, and only the rest (a partial frame) is kept for
    /// the next call. Plain connections are parsed in place in `scratch`, one read at a time,
    /// so that a delivered byte is copied once, by the kernel; under TLS or WebSocket `take`
    /// sees `inbuf` after everything was read. True when the server closed the connection.
    ///
    /// # Errors
    /// A socket error (as "receiving: ..."), or what `take` returned.
    pub fn read_through(&mut self, scratch: &mut [u8], take: Take<'_>) -> Result<bool, String> {
        if self.layer.is_none() {
            return read_in_place(
                &mut self.stream,
                scratch,
                &mut self.inbuf,
                &mut self.out,
                take,
            );
        }
        let eof = self.read(scratch).map_err(|e| format!("receiving: {e}"))?;
        let used = take(&self.inbuf, &mut self.out)?;
        self.inbuf.drain(..used.min(self.inbuf.len()));
        Ok(eof)
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

/// What `Link::read_through` hands the bytes to: the bytes, and the buffer for replies; it
/// returns how many bytes at the front it used.
pub type Take<'a> = &'a mut dyn FnMut(&[u8], &mut Vec<u8>) -> Result<usize, String>;

/// `Link::read_through` for a plain socket. Each read lands in `scratch` behind a copy of
/// `kept`, the partial frame the last one left (a few bytes, copied once per read, not per
/// frame), and `take` parses it there. A partial frame larger than half of `scratch` is
/// grown in `kept` instead, so that a read always has room.
///
/// A read shorter than its room ends the call: the socket had no more, and since mio's
/// readiness is edge-triggered (epoll, kqueue) new bytes raise a new event, so the read that
/// would only say `WouldBlock` is saved (tokio relies on the same).
fn read_in_place(
    socket: &mut impl Read,
    scratch: &mut [u8],
    kept: &mut Vec<u8>,
    out: &mut Vec<u8>,
    take: Take<'_>,
) -> Result<bool, String> {
    if scratch.is_empty() {
        return Err("receiving: no room to read into".into());
    }
    loop {
        let spill = kept.len() > scratch.len() / 2;
        let at = if spill { 0 } else { kept.len() };
        if let (false, Some(front)) = (spill, scratch.get_mut(..at)) {
            front.copy_from_slice(kept);
        }
        let room = scratch.get_mut(at..).unwrap_or_default();
        let room_len = room.len();
        let n = match socket.read(room) {
            // The server closed its side.
            Ok(0) => return Ok(true),
            Ok(n) => n,
            // Drained: the next readable event brings us back.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            // A signal came first: try again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("receiving: {e}")),
        };
        if spill {
            kept.extend_from_slice(scratch.get(..n).unwrap_or_default());
            let used = take(kept, out)?;
            kept.drain(..used.min(kept.len()));
        } else {
            let got = scratch.get(..at + n).unwrap_or_default();
            let used = take(got, out)?;
            kept.clear();
            kept.extend_from_slice(got.get(used..).unwrap_or_default());
        }
        if n < room_len {
            return Ok(false);
        }
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A socket that hands out the reads it was given, one per call (cut to the room), then
    /// says `WouldBlock`, or that the peer closed when `eof` is set.
    struct Reads {
        reads: VecDeque<Vec<u8>>,
        eof: bool,
    }

    impl Read for Reads {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(mut next) = self.reads.pop_front() else {
                return if self.eof {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            };
            let n = next.len().min(buf.len());
            let rest = next.split_off(n);
            if !rest.is_empty() {
                self.reads.push_front(rest);
            }
            buf.get_mut(..n).unwrap_or_default().copy_from_slice(&next);
            Ok(n)
        }
    }

    /// Takes the whole `;`-ended words at the front, as a wire takes frames; a `!` is an
    /// error, as a malformed frame is.
    fn words(got: &mut Vec<String>) -> impl FnMut(&[u8], &mut Vec<u8>) -> Result<usize, String> {
        move |buf, out| {
            let mut used = 0;
            while let Some(end) = buf
                .get(used..)
                .and_then(|r| r.iter().position(|&b| b == b';'))
            {
                let word = buf.get(used..used + end).unwrap_or_default();
                if word.contains(&b'!') {
                    return Err("bad word".into());
                }
                got.push(String::from_utf8_lossy(word).into_owned());
                out.push(b'.');
                used += end + 1;
            }
            Ok(used)
        }
    }

    /// Feeds `reads` through `read_in_place` with a scratch of `room` bytes, calling it again
    /// after each return as new readable events would; the words taken, the replies, what
    /// is kept, and whether the end was seen.
    fn run(
        reads: &[&[u8]],
        room: usize,
        eof: bool,
    ) -> Result<(Vec<String>, usize, Vec<u8>, bool), String> {
        let mut socket = Reads {
            reads: reads
                .iter()
                .filter(|r| !r.is_empty())
                .map(|r| r.to_vec())
                .collect(),
            eof,
        };
        let (mut scratch, mut kept, mut out, mut got) =
            (vec![0; room], Vec::new(), Vec::new(), Vec::new());
        let mut take = words(&mut got);
        let mut closed = false;
        for _ in 0..=reads.iter().map(|r| r.len()).sum::<usize>() + 1 {
            closed = read_in_place(&mut socket, &mut scratch, &mut kept, &mut out, &mut take)?;
            if closed || (socket.reads.is_empty() && !eof) {
                break;
            }
        }
        drop(take);
        Ok((got, out.len(), kept, closed))
    }

    const STREAM: &[u8] = b"one;two;three;a-much-longer-word;;x;";

    fn all_words() -> Vec<String> {
        ["one", "two", "three", "a-much-longer-word", "", "x"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn words_split_across_reads_at_every_byte_arrive_once_each() {
        for room in [1, 2, 7, 16, 64, 4096] {
            for cut in 0..=STREAM.len() {
                let (a, b) = STREAM.split_at(cut);
                let got = run(&[a, b], room, false);
                assert_eq!(
                    got,
                    Ok((all_words(), 6, vec![], false)),
                    "room {room}, cut {cut}"
                );
            }
            let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
            assert_eq!(
                run(&bytes, room, false),
                Ok((all_words(), 6, vec![], false)),
                "room {room}"
            );
        }
    }

    #[test]
    fn a_partial_word_is_kept_and_the_end_is_reported() {
        let got = run(&[b"one;tw"], 64, true);
        assert_eq!(got, Ok((vec!["one".into()], 1, b"tw".to_vec(), true)));
        let got = run(&[b"one;tw", b"o;"], 3, false);
        assert_eq!(
            got,
            Ok((vec!["one".into(), "two".into()], 2, vec![], false))
        );
    }

    #[test]
    fn what_take_refuses_is_an_error() {
        assert_eq!(run(&[b"one;", b"t!o;"], 64, false), Err("bad word".into()));
        assert!(run(&[b"one;"], 0, false).is_err(), "no room to read into");
    }
}
