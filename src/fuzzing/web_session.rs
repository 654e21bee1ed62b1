//! The `web_session` fuzz body: a web connection from its first byte to its Close, driven the
//! way the reactor drives one but without a socket. The client's bytes, cut into reads, go
//! through the reactor's own web input (`reactor::conn::web::input`: the HTTP request, then
//! WebSocket frames unmasked and fed to a real [`Session`] on the shared fake server), and
//! what the session says comes back framed by the reactor's `gather_framed` (as plain and TLS
//! web connections do) or, in small pieces, by [`WsConn::wrap`], through a socket that may
//! take only a few bytes per write.
//!
//! The first input byte: bits 0–2 count the read-size bytes that follow (`byte + 1` each,
//! cycled; none means one byte per read); bit 3 starts with an HTTP request (else the
//! connection is upgraded already); bit 4 frames output with `wrap` in pieces of 5, 64 or 700
//! bytes (bits 0–1 of the second byte; 0 also means 5) instead of `gather_framed`, and makes
//! the listener a TLS one; bits 5–6 say how the input ends: the client's FIN, the server
//! shutting down, the clock running past every deadline, or nothing; bit 7 makes the socket
//! take 7 bytes per write. The second byte is skipped when bit 4 is clear. The rest is what
//! the client sends.
//!
//! Checked: nothing panics; the partial request or frame kept between reads never exceeds
//! what one head or frame may be; an idle connection holds no buffer; before the upgrade only
//! HTTP goes out, and the last response before WebSocket frames is the 101; after it, the
//! output is valid server frames (unmasked, shortest lengths, no RSV bits, no Ping or Text)
//! whose data frames carry exactly the bytes the session wrote, in messages that each end on
//! a protocol frame boundary and hold valid server frames; nothing at all follows our Close,
//! a Close is sent exactly when the session ends on an open WebSocket, and its code is the
//! session's (1000, 1001 on shutdown, 1008 after a fatal ERROR) unless the client closed or
//! broke the protocol first.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use super::fake::FakeEnv;
use super::ws::{ends_on_frame, server_frames};
use crate::auth::Table;
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::protocol::codec::parse_server;
use crate::protocol::{Decoded, Deframer};
use crate::published::Published;
use crate::reactor::conn::Gather;
use crate::reactor::conn::web::{Peer, close_code, gather_framed, input};
use crate::room::{RingLimits, Rooms};
use crate::session::{CLOSE_GRACE, Session, Tick};
use crate::shared::Shared;
use crate::web::WsConn;
use crate::web::close::{MAX_CONTROL_PAYLOAD, is_valid_code};
use crate::web::conn::Phase;
use crate::web::frame::{MAX_CLIENT_HEADER, MAX_SERVER_HEADER, Opcode};
use crate::web::http::MAX_HEAD;

/// A small max_frame, so that TOO_LARGE and 1009 are a few bytes away.
const MAX_FRAME: u32 = 512;
/// The client's address; no proxy is trusted, so the connection is counted under it.
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
/// Reads per turn, as a reactor's.
const READS_PER_TURN: usize = 4;
/// Turns at most, to bound a run's time.
const MAX_TURNS: usize = 2048;
/// The pieces `wrap` frames output in.
const WRAP_PIECES: [usize; 4] = [5, 5, 64, 700];
/// What a small socket takes per write.
const SMALL_SOCKET: usize = 7;

/// How the client's input ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Fin,
    Shutdown,
    Deadlines,
    Nothing,
}

/// The limits the fuzzed session runs under: small, so that every limit is reachable.
fn limits(l: &mut Limits) {
    *l = Limits {
        max_frame: MAX_FRAME,
        max_rooms_per_connection: 3,
        max_rooms: 3,
        ring: RingLimits {
            messages: 8,
            bytes: 2048,
        },
        ..Limits::default()
    };
}

/// The client's bytes, cut into reads of the planned sizes.
struct Reads<'a> {
    rest: &'a [u8],
    sizes: Vec<usize>,
    next: usize,
}

impl<'a> Reads<'a> {
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let size = self.sizes.get(self.next % self.sizes.len()).copied();
        self.next += 1;
        let (read, rest) = self.rest.split_at(size.unwrap_or(1).min(self.rest.len()));
        self.rest = rest;
        Some(read)
    }
}

/// One web connection and everything that has left it.
struct Run {
    ws: WsConn,
    session: Session,
    env: FakeEnv,
    shared: Shared,
    tls: bool,
    /// `wrap` in pieces of this size, or `gather_framed` when `None`.
    wrap: Option<usize>,
    /// Bytes the socket takes per write.
    socket: usize,
    /// The reactor's scratch buffers.
    unmask: Vec<u8>,
    plain: Vec<u8>,
    /// Everything the client received.
    wire: Vec<u8>,
    /// Where the WebSocket starts in `wire`, once it has.
    ws_start: Option<usize>,
    /// The protocol bytes the session wrote that went out in data frames.
    framed: Vec<u8>,
    /// Our Close: whether one is owed (the session ended on an open WebSocket), and the code
    /// the session asks for, or `None` if the client closed or failed first.
    close: Option<Option<u16>>,
    /// The connection was cut without a Close (a deadline).
    cut: bool,
    eof_seen: bool,
}

/// Runs one connection through the bytes `data` describes; see the module documentation.
///
/// # Panics
/// When the web layer or the reactor's web code breaks one of the promises listed there.
pub fn web_session(data: &[u8]) {
    run(data);
}

/// What a run came to, for the tests of the seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    /// The client received a 101, or started upgraded.
    upgraded: bool,
    /// Protocol bytes the session sent in data frames.
    framed: usize,
    /// The code of our Close, if one was sent.
    close: Option<u16>,
}

/// Runs `data` and checks what the client received.
fn run(data: &[u8]) -> Outcome {
    let (&control, rest) = data.split_first().unwrap_or((&0, &[]));
    let (wrap, rest) = if control & 0x10 != 0 {
        let (&piece, rest) = rest.split_first().unwrap_or((&0, &[]));
        (WRAP_PIECES.get(usize::from(piece & 3)).copied(), rest)
    } else {
        (None, rest)
    };
    let count = usize::from(control & 7).min(rest.len());
    let (sizes, stream) = rest.split_at(count);
    let mut sizes: Vec<usize> = sizes.iter().map(|&b| usize::from(b) + 1).collect();
    if sizes.is_empty() {
        sizes.push(1);
    }
    let ending = match (control >> 5) & 3 {
        0 => Ending::Fin,
        1 => Ending::Shutdown,
        2 => Ending::Deadlines,
        _ => Ending::Nothing,
    };
    let mut reads = Reads {
        rest: stream,
        sizes,
        next: 0,
    };
    let mut run = Run::new(control & 8 != 0, wrap, control & 0x80 != 0);
    run.drive(&mut reads, ending);
    run.check()
}

impl Run {
    fn new(http: bool, wrap: Option<usize>, small_socket: bool) -> Run {
        let env = FakeEnv::with(limits);
        let session = Session::new(env.now, &env.limits);
        let shared = Shared::new(
            env.limits.clone(),
            super::fake::EPOCH,
            Published::new(Table::default()),
            Rooms::new(1, 1, env.limits.ring),
            Arc::from([]),
            Arc::new(Metrics::new(1)),
        );
        Run {
            ws: if http {
                WsConn::new()
            } else {
                WsConn::upgraded()
            },
            session,
            env,
            shared,
            tls: wrap.is_some(),
            wrap,
            socket: if small_socket {
                SMALL_SOCKET
            } else {
                usize::MAX
            },
            unmask: Vec::new(),
            plain: Vec::new(),
            wire: Vec::new(),
            ws_start: (!http).then_some(0),
            framed: Vec::new(),
            close: None,
            cut: false,
            eof_seen: false,
        }
    }

    /// Turns until the connection ends or nothing moves any more; then the ending, and turns
    /// until the connection ends or every deadline has passed.
    fn drive(&mut self, reads: &mut Reads<'_>, ending: Ending) {
        for _ in 0..MAX_TURNS {
            let before = (
                reads.rest.len(),
                self.wire.len(),
                self.session.out.is_empty(),
            );
            if self.turn(reads, ending) {
                return;
            }
            self.env.store(&mut self.session);
            if before
                == (
                    reads.rest.len(),
                    self.wire.len(),
                    self.session.out.is_empty(),
                )
            {
                break;
            }
        }
        match ending {
            Ending::Shutdown => self.session.shut_down(self.env.now),
            Ending::Deadlines => {
                self.env.now += Duration::from_secs(24 * 3600);
                if self.tick() {
                    return;
                }
            }
            Ending::Fin | Ending::Nothing => {}
        }
        for _ in 0..MAX_TURNS {
            self.env.store(&mut self.session);
            let before = (self.wire.len(), self.session.out.is_empty());
            if self.turn(reads, ending) {
                return;
            }
            if before == (self.wire.len(), self.session.out.is_empty()) {
                // Stuck: let the closing grace run out, as the reactor's timer would.
                self.env.now += CLOSE_GRACE;
                if self.tick() {
                    return;
                }
                if ending == Ending::Nothing && !self.session.is_closing() {
                    return;
                }
            }
        }
    }

    /// The session's timers; true if they closed the connection (without a Close).
    fn tick(&mut self) -> bool {
        if self.session.tick(self.env.now, &self.env.limits) == Tick::Close {
            self.cut = true;
            return true;
        }
        false
    }

    /// One pass of the reactor's `Conn::service` over this connection; true once it is done.
    fn turn(&mut self, reads: &mut Reads<'_>, ending: Ending) -> bool {
        if self.ws.has_inbuf() && self.session.wants_input() {
            let mut inbuf = self.ws.take_inbuf();
            let used = self.session.receive(&inbuf, &mut self.env);
            inbuf.drain(..used.min(inbuf.len()));
            self.ws.put_inbuf(inbuf);
        }
        for _ in 0..READS_PER_TURN {
            let may_read = self.session.wants_input() || self.session.is_closing();
            if !self.ws.tx().is_empty() || !may_read {
                break;
            }
            match reads.next() {
                Some(read) => self.read(read),
                None => {
                    if ending == Ending::Fin && !self.eof_seen {
                        self.eof_seen = true;
                        self.session.on_eof(self.env.now);
                    }
                    break;
                }
            }
        }
        if !self.ws.has_inbuf() {
            let inbuf = self.ws.take_inbuf();
            self.ws.put_inbuf(inbuf);
        }
        self.flush();
        if self.ws.rx().is_empty() && self.ws.tx().is_empty() && !self.ws.has_inbuf() {
            assert_eq!(
                self.ws.queued_bytes(),
                0,
                "an idle connection holds a buffer"
            );
        }
        if self.session.is_done() {
            self.finish();
            return true;
        }
        false
    }

    /// One read's bytes through the reactor's web input.
    fn read(&mut self, read: &[u8]) {
        let before = self.ws.phase();
        let peer = Peer {
            shared: &self.shared,
            addr: PEER,
            tls: self.tls,
        };
        let env = &mut self.env;
        let client = input(
            &mut self.ws,
            &mut self.session,
            read,
            &mut self.unmask,
            &peer,
            env,
        );
        let open = matches!(self.ws.phase(), Phase::Open | Phase::Closing);
        if before == Phase::Http && open {
            // The reactor read nothing while it owed bytes: the 101 is the last response in
            // what it owes now, and anything behind it already speaks WebSocket.
            let tx = self.ws.tx();
            let start = find(tx, b"HTTP/1.1 101 ").expect("no 101 for the upgrade");
            let head = find(tx.get(start..).unwrap_or_default(), b"\r\n\r\n");
            let end = start + head.expect("a whole 101") + 4;
            self.ws_start = Some(self.wire.len() + end);
            assert_eq!(client, Some(PEER), "counted under another address");
        } else {
            assert_eq!(client, None, "an upgrade reported twice");
        }
        let kept = self.ws.rx().len();
        match self.ws.phase() {
            Phase::Http => assert!(kept < MAX_HEAD, "kept {kept} bytes of a request head"),
            Phase::Open => {
                let most = MAX_CLIENT_HEADER + MAX_FRAME as usize + 4;
                assert!(kept < most, "kept {kept} bytes of one frame");
            }
            Phase::Served | Phase::Closing => {}
        }
    }

    /// What the connection owes, then the session's frames, as `flush_web` writes them.
    fn flush(&mut self) {
        loop {
            if !self.ws.tx().is_empty() {
                let n = self.ws.tx().len().min(self.socket);
                self.wire
                    .extend_from_slice(self.ws.tx().get(..n).unwrap_or_default());
                self.ws.drain_tx(n);
                let blocked = !self.ws.tx().is_empty();
                self.session.on_written(n, blocked, self.env.now);
                if blocked {
                    return;
                }
                continue;
            }
            self.session.fill(&mut self.env);
            if self.session.out.is_empty() {
                return;
            }
            let Some(framed) = self.gather() else {
                continue;
            };
            let n = framed.len().min(self.socket);
            self.wire
                .extend_from_slice(framed.get(..n).unwrap_or_default());
            self.session.on_written(n, n < framed.len(), self.env.now);
            self.ws.keep_tx(framed.get(n..).unwrap_or_default());
        }
    }

    /// Takes a chunk of the session's frames and frames it; `None` when it was dropped.
    fn gather(&mut self) -> Option<Vec<u8>> {
        let open = matches!(self.ws.phase(), Phase::Open | Phase::Closing);
        let Some(piece) = self.wrap else {
            let start = gather_framed(
                &mut self.ws,
                &mut self.session,
                &mut self.plain,
                &mut self.env,
            );
            let start = start.expect("gathering into memory never fails");
            let payload = self.plain.get(MAX_SERVER_HEADER..).unwrap_or_default();
            let Some(start) = start else {
                assert!(
                    !open,
                    "{} bytes dropped on an open WebSocket",
                    payload.len()
                );
                return None;
            };
            self.framed.extend_from_slice(payload);
            return Some(self.plain.get(start..).unwrap_or_default().to_vec());
        };
        let mut chunk = Vec::new();
        let mut capped = Gather {
            into: &mut chunk,
            cap: piece,
        };
        let _ = self.session.out.write_counted(&mut capped, |_, _| {});
        if !open {
            return None;
        }
        let mut framed = Vec::new();
        self.ws.wrap(&mut framed, &chunk);
        assert!(
            !framed.is_empty(),
            "{} bytes dropped on an open WebSocket",
            chunk.len()
        );
        self.framed.extend_from_slice(&chunk);
        Some(framed)
    }

    /// The session is done: our Close, as `Conn::finish` sends it, then the rest of `tx`.
    fn finish(&mut self) {
        let code = close_code(&self.session);
        self.close = match self.ws.phase() {
            Phase::Open => Some(Some(code)),
            // The client closed or broke the protocol: its code, or its error's, wins.
            Phase::Closing => Some(None),
            Phase::Http | Phase::Served => None,
        };
        self.ws.finish(code);
        self.socket = usize::MAX;
        self.flush();
        if self.close.is_some() {
            // Nothing may be framed after our Close.
            let bye = [0, 0, 0, 1, 0x06];
            assert!(self.ws.header(&bye).is_none(), "a header after our Close");
        }
    }

    /// Checks everything the client received.
    fn check(mut self) -> Outcome {
        // Whatever the connection still owes reaches the client before the checks.
        self.socket = usize::MAX;
        if !self.ws.tx().is_empty() {
            let tx = self.ws.tx().to_vec();
            self.wire.extend_from_slice(&tx);
            self.ws.drain_tx(tx.len());
        }
        let start = self.ws_start.unwrap_or(self.wire.len());
        let (http, frames) = self.wire.split_at(start.min(self.wire.len()));
        if !http.is_empty() {
            assert!(
                http.starts_with(b"HTTP/1.1 "),
                "not HTTP before the upgrade"
            );
        }
        if self.ws_start.is_none() {
            assert!(self.framed.is_empty(), "session bytes went out over HTTP");
            assert!(self.close.is_none(), "a Close owed without a WebSocket");
        }
        let mut data = Vec::new();
        let mut in_message = false;
        let mut close = None;
        for (fin, opcode, payload) in server_frames(frames) {
            assert!(close.is_none(), "a frame after our Close");
            match Opcode::from_bits(opcode) {
                Some(Opcode::Binary) => assert!(!in_message, "Binary inside a message"),
                Some(Opcode::Continuation) => assert!(in_message, "Continuation outside one"),
                Some(Opcode::Pong) => {
                    assert!(fin && payload.len() <= MAX_CONTROL_PAYLOAD);
                    continue;
                }
                Some(Opcode::Close) => {
                    let code = payload.first_chunk::<2>().map(|c| u16::from_be_bytes(*c));
                    close = Some(code.expect("our Close carries a code"));
                    continue;
                }
                other => panic!("the server sent {other:?}"),
            }
            data.extend_from_slice(&payload);
            in_message = !fin;
            if fin {
                assert!(
                    ends_on_frame(&data),
                    "a message ends inside a protocol frame"
                );
            }
        }
        assert_eq!(
            data, self.framed,
            "data frames do not carry the session's bytes"
        );
        let deframer = Deframer::for_client(MAX_FRAME.max(1 << 16));
        let mut rest = &data[..];
        while let Ok(Decoded::Frame(raw)) = deframer.next(rest) {
            parse_server(&raw).expect("the session wrote a bad frame");
            rest = rest.get(raw.wire_len..).unwrap_or_default();
        }
        if !in_message {
            assert!(rest.is_empty(), "the messages end inside a protocol frame");
        }
        match (self.close, close) {
            (None, None) => {}
            (Some(Some(owed)), Some(sent)) => assert_eq!(sent, owed, "our Close's code"),
            (Some(None), Some(sent)) => assert!(is_valid_code(sent), "Close code {sent}"),
            (owed, sent) => panic!("Close owed {owed:?}, sent {sent:?} (cut: {})", self.cut),
        }
        Outcome {
            upgraded: self.ws_start.is_some(),
            framed: self.framed.len(),
            close,
        }
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds/web_session")
            .join(name);
        std::fs::read(path).expect("seed")
    }

    /// The seeds reach what they are named for, so the fuzzer starts from every path.
    #[test]
    fn seeds_reach_their_outcomes() {
        // (seed, upgraded, the session wrote something, our Close's code)
        let cases = [
            ("upgrade_chat_fin", true, true, Some(1000)),
            (
                "upgrade_chat_wrapped_small_socket_in_reads",
                true,
                true,
                Some(1000),
            ),
            ("chat_wrapped_in_64_byte_pieces", true, true, Some(1000)),
            ("chat_then_shutdown", true, true, Some(1001)),
            ("hello_then_idle_timeout", true, true, Some(1008)),
            ("join_before_hello", true, true, Some(1008)),
            ("chat_then_client_close", true, true, Some(1000)),
            ("chat_then_bye", true, true, Some(1000)),
            ("fragmented_hello_with_ping_inside", true, true, Some(1000)),
            ("two_frames_in_one_message", true, true, Some(1000)),
            ("unmasked_after_hello", true, true, Some(1002)),
            ("declared_too_big", true, true, Some(1009)),
            ("message_ends_inside_a_frame", true, true, Some(1007)),
            ("text_message", true, false, Some(1003)),
            ("send_over_max_frame_in_fragments", true, true, Some(1008)),
            ("file_then_upgrade_pipelined", true, true, Some(1000)),
            ("version_8", false, false, None),
        ];
        for (name, upgraded, wrote, close) in cases {
            let got = run(&seed(name));
            assert_eq!(
                (got.upgraded, got.framed > 0, got.close),
                (upgraded, wrote, close),
                "{name}"
            );
        }
    }

    #[test]
    fn a_plain_file_request_sends_no_websocket_bytes() {
        let request = b"\x08GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let got = run(request);
        assert_eq!((got.upgraded, got.framed, got.close), (false, 0, None));
    }
}
