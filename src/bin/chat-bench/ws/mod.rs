//! The client side of `--transport ws`: an HTTP upgrade per bench connection, then protocol
//! bytes inside WebSocket frames, for `net::Link`, so that the wires never learn whether they
//! run over WebSocket.
//!
//! chatd gets what a browser sends: one protocol v1 frame per binary message, masked. NATS's
//! text protocol is a stream that may be cut anywhere, so each flush goes out as one message.
//! Nothing but the upgrade request is sent before the server's 101 is in and checked
//! (`handshake`); from then on, frames are read and written by `frame`. Nothing here blocks:
//! reads and writes stop at `WouldBlock`.

mod frame;
mod handshake;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use chatd::protocol::HEADER_LEN;
use chatd::web::frame::Opcode;

use crate::wire::Kind;
use frame::{Masks, Reader, encode};

/// How a connection's protocol bytes are cut into WebSocket messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One whole protocol v1 frame per message, as the browser client sends (chatd).
    PerFrame,
    /// What one flush has, in one message (NATS: its protocol is a stream).
    PerFlush,
}

/// How the connections of one run speak WebSocket to one server.
#[derive(Debug, Clone)]
pub struct WsClient {
    /// The `Host` header: the address connected to.
    host: String,
    path: &'static str,
    framing: Framing,
}

impl WsClient {
    /// For `kind` listening for WebSocket at `addr`: chatd upgrades `GET /ws`, nats-server
    /// any path.
    pub fn new(kind: Kind, addr: SocketAddr) -> WsClient {
        let (path, framing) = match kind {
            Kind::Chatd => ("/ws", Framing::PerFrame),
            Kind::Redis | Kind::Nats => ("/", Framing::PerFlush),
        };
        WsClient {
            host: addr.to_string(),
            path,
            framing,
        }
    }

    /// A new connection's WebSocket state, its upgrade request ready to send.
    pub fn session(&self) -> Session {
        let mut masks = Masks::new(seed());
        let key = handshake::key(masks.nonce());
        Session {
            tx: handshake::request(&self.host, self.path, &key),
            key: Some(key),
            head: Vec::new(),
            reader: Reader::default(),
            masks,
            framing: self.framing,
            closed: false,
        }
    }
}

/// A different seed for every connection of every bench process.
fn seed() -> u64 {
    static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
    let n = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // splitmix64's finaliser spreads neighbouring counters over the whole range.
    let mut z = (u64::from(std::process::id()) << 32 ^ u64::from(nanos))
        .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One connection's WebSocket: the handshake until it is over, then the frame reader, the
/// masks and the bytes waiting to be written.
pub struct Session {
    /// Our key, until the server's 101 has been checked against it.
    key: Option<String>,
    /// The server's answer so far, until its head is whole.
    head: Vec<u8>,
    reader: Reader,
    masks: Masks,
    framing: Framing,
    /// Bytes for the socket: the upgrade request, then frames.
    tx: Vec<u8>,
    /// The server sent Close: what comes after is not read.
    closed: bool,
}

impl Session {
    /// Reads from `socket` to `WouldBlock`, appending protocol bytes to `inbuf`; true when
    /// the server closed the connection (TCP, or a WebSocket Close).
    ///
    /// # Errors
    /// A socket error, a refused upgrade, or a frame a server must not send.
    pub fn read(
        &mut self,
        socket: &mut impl Read,
        scratch: &mut [u8],
        inbuf: &mut Vec<u8>,
    ) -> io::Result<bool> {
        loop {
            if self.closed {
                return Ok(true);
            }
            match socket.read(scratch) {
                // The server closed its side.
                Ok(0) => return Ok(true),
                Ok(n) => self.take(scratch.get(..n).unwrap_or_default(), inbuf)?,
                // Drained: the next readable event brings us back.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                // A signal: try again.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Anything else ends this connection.
                Err(e) => return Err(e),
            }
        }
    }

    /// Bytes read from the socket: the upgrade answer first, then frames.
    fn take(&mut self, bytes: &[u8], inbuf: &mut Vec<u8>) -> io::Result<()> {
        let bad = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
        let Some(key) = &self.key else {
            return self.feed(bytes, inbuf).map_err(bad);
        };
        self.head.extend_from_slice(bytes);
        let Some(used) = handshake::response(&self.head, key).map_err(bad)? else {
            return Ok(());
        };
        self.key = None;
        let head = std::mem::take(&mut self.head);
        self.feed(head.get(used..).unwrap_or_default(), inbuf)
            .map_err(bad)
    }

    /// Frames in: data to `inbuf`, a Ping answered, a Close answered and noted.
    fn feed(&mut self, bytes: &[u8], inbuf: &mut Vec<u8>) -> Result<(), String> {
        let Session {
            reader,
            masks,
            tx,
            closed,
            ..
        } = self;
        if *closed {
            return Ok(());
        }
        reader.feed(bytes, inbuf, &mut |opcode, payload| match opcode {
            Opcode::Ping => encode(tx, Opcode::Pong, payload, masks.next_mask()),
            Opcode::Close if !*closed => {
                // Echo the status code (RFC 6455 §5.5.1), then the caller closes TCP.
                let code = payload.get(..2).unwrap_or_default();
                encode(tx, Opcode::Close, code, masks.next_mask());
                *closed = true;
            }
            _ => {}
        })
    }

    /// Wraps the whole protocol frames at the front of `out` into frames (the rest stays in
    /// `out`; the wires only ever write whole frames), then writes until everything is out or
    /// the socket would block. Before the 101 only the request goes.
    ///
    /// # Errors
    /// A socket error.
    pub fn flush(&mut self, socket: &mut impl Write, out: &mut Vec<u8>) -> io::Result<()> {
        if self.key.is_none() && !self.closed {
            self.wrap(out);
        }
        let written = crate::net::write_until_blocked(socket, &self.tx)?;
        self.tx.drain(..written.min(self.tx.len()));
        Ok(())
    }

    fn wrap(&mut self, out: &mut Vec<u8>) {
        match self.framing {
            Framing::PerFlush => {
                if !out.is_empty() {
                    encode(&mut self.tx, Opcode::Binary, out, self.masks.next_mask());
                    out.clear();
                }
            }
            Framing::PerFrame => {
                let mut at = 0;
                while let Some(&prefix) = out
                    .get(at..)
                    .and_then(|rest| rest.first_chunk::<HEADER_LEN>())
                {
                    let len = u32::from_be_bytes(prefix) as usize;
                    let end = at.saturating_add(HEADER_LEN).saturating_add(len);
                    let Some(frame) = out.get(at..end) else {
                        break;
                    };
                    encode(&mut self.tx, Opcode::Binary, frame, self.masks.next_mask());
                    at = end;
                }
                out.drain(..at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatd::protocol::{ClientFrame, ServerFrame, encode_client, encode_server};
    use chatd::web::WsConn;

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }

    /// The daemon's answer to the request a session wrote.
    fn daemon_answer(request: &[u8]) -> Vec<u8> {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(request).expect("HTTP");
        let key = chatd::web::upgrade::check(req.headers).expect("an upgrade");
        chatd::web::upgrade::switching_protocols(key)
    }

    #[test]
    fn nothing_but_the_request_goes_before_the_101_then_one_message_per_protocol_frame() {
        let mut s = WsClient::new(Kind::Chatd, addr()).session();
        let mut out = Vec::new();
        encode_client(&ClientFrame::Ping { nonce: 1 }, &mut out);
        encode_client(&ClientFrame::Ping { nonce: 2 }, &mut out);
        let mut sent = Vec::new();
        s.flush(&mut sent, &mut out).expect("flush");
        assert!(sent.starts_with(b"GET /ws HTTP/1.1\r\n"), "the request");
        assert!(!out.is_empty(), "HELLO waits for the 101");

        // The 101 and, in the same read, a frame the daemon wraps.
        let mut wire = daemon_answer(&sent);
        let mut pong = Vec::new();
        encode_server(&ServerFrame::Pong { nonce: 9 }, &mut pong);
        chatd::web::message::Wrapper::default().wrap(&mut wire, &pong);
        let mut inbuf = Vec::new();
        let eof = s
            .read(&mut wire.as_slice(), &mut [0u8; 7], &mut inbuf)
            .expect("101");
        assert!(eof, "a slice ends in EOF");
        assert_eq!(inbuf, pong, "the frame after the 101 is read too");

        let mut frames = Vec::new();
        s.flush(&mut frames, &mut out).expect("flush");
        assert!(out.is_empty());
        let mut conn = WsConn::upgraded();
        let mut messages = 0;
        let mut got = Vec::new();
        let received = conn
            .receive(&mut frames, 1 << 16, |bytes| {
                messages += 1;
                got.extend_from_slice(bytes);
            })
            .expect("the daemon takes our frames");
        assert_eq!(received.consumed, frames.len());
        let mut want = Vec::new();
        encode_client(&ClientFrame::Ping { nonce: 1 }, &mut want);
        encode_client(&ClientFrame::Ping { nonce: 2 }, &mut want);
        assert_eq!((messages, got), (2, want), "one message per protocol frame");
    }

    #[test]
    fn a_refused_upgrade_is_an_error_and_a_close_ends_the_connection() {
        let mut s = WsClient::new(Kind::Chatd, addr()).session();
        let mut wire: &[u8] = b"HTTP/1.1 403 Forbidden\r\n\r\n";
        let e = s
            .read(&mut wire, &mut [0u8; 64], &mut Vec::new())
            .expect_err("refused");
        assert!(e.to_string().contains("403"), "{e}");

        let mut s = WsClient::new(Kind::Nats, addr()).session();
        let mut sent = Vec::new();
        s.flush(&mut sent, &mut Vec::new()).expect("request");
        let mut wire = daemon_answer(&sent);
        chatd::web::frame::encode(&mut wire, true, Opcode::Ping, b"p");
        chatd::web::frame::encode_close(&mut wire, 1001, "going away");
        chatd::web::frame::encode(&mut wire, true, Opcode::Binary, b"after close");
        let mut inbuf = Vec::new();
        let mut socket = wire.as_slice();
        assert!(
            s.read(&mut socket, &mut [0u8; 4096], &mut inbuf)
                .expect("ok")
        );
        assert!(inbuf.is_empty(), "nothing after the Close is read");
        let mut out = b"PUB r 1\r\nx\r\n".to_vec();
        let mut replies = Vec::new();
        s.flush(&mut replies, &mut out).expect("flush");
        let mut conn = WsConn::upgraded();
        let received = conn
            .receive(&mut replies, 1 << 16, |_| panic!("no data after a Close"))
            .expect("Pong then Close");
        assert!(received.peer_closed, "our Close echo");
    }
}
