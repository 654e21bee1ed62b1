//! Clients for the web listener's tests: [`http`] for one raw HTTP request, [`WsClient`] for
//! protocol v1 in WebSocket messages through tungstenite (over TCP or any stream, such as
//! rustls's), and [`RawWs`], a hand-rolled upgrade and frames for putting on the wire what
//! tungstenite never would and for watching the server's frames and its TCP close one by one.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

use chatd::client::Reply;
use chatd::fuzzing::ws::{ServerFrame, masked};
use chatd::protocol::codec::{Decoded, parse_server};
use chatd::protocol::{ClientFrame, Deframer, encode_client};
use chatd::web::Opcode;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

use crate::util::PATIENCE;

/// A valid upgrade request for `GET /ws` on `addr`, without an Origin (not a browser).
pub fn upgrade_request(addr: SocketAddr) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// One raw HTTP/1.1 request; returns the whole response (the server closes after it).
pub fn http(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s.write_all(request.as_bytes()).expect("send request");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of the first header `name` in a response.
pub fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// Whole protocol frames out of one binary message; fails the test on anything else.
#[track_caller]
fn replies_in(message: &[u8], into: &mut VecDeque<Reply>) {
    let deframer = Deframer::for_client(1 << 24);
    let mut rest = message;
    while !rest.is_empty() {
        let Ok(Decoded::Frame(raw)) = deframer.next(rest) else {
            panic!("a message that does not hold whole frames: {rest:?}");
        };
        let frame = parse_server(&raw).expect("a server frame");
        into.push_back(Reply::from(frame));
        rest = rest.get(raw.wire_len..).unwrap_or_default();
    }
}

/// A protocol v1 client over WebSocket, as the page is: one frame per binary message sent,
/// any number of whole frames per message received.
pub struct WsClient<S: Read + Write = TcpStream> {
    pub ws: WebSocket<S>,
    pending: VecDeque<Reply>,
}

impl WsClient<TcpStream> {
    pub fn connect(addr: SocketAddr, origin: Option<&str>) -> Result<Self, tungstenite::Error> {
        let stream = TcpStream::connect(addr).expect("connect to the web listener");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        WsClient::over(stream, &format!("ws://{addr}/ws"), origin)
    }

    #[track_caller]
    pub fn login(addr: SocketAddr, user: &str, token: &str) -> Self {
        let mut c = WsClient::connect(addr, None).expect("upgrade");
        c.hello(user, token);
        c
    }
}

impl<S: Read + Write> WsClient<S> {
    /// Upgrades `stream` (already connected, and through TLS if need be) to a WebSocket at
    /// `url`.
    pub fn over(stream: S, url: &str, origin: Option<&str>) -> Result<Self, tungstenite::Error> {
        let mut request = url.into_client_request()?;
        if let Some(origin) = origin {
            let value = HeaderValue::from_str(origin).expect("an origin header");
            request.headers_mut().insert("Origin", value);
        }
        let (ws, _response) = tungstenite::client(request, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => {
                tungstenite::Error::Io(io::ErrorKind::WouldBlock.into())
            }
        })?;
        Ok(WsClient {
            ws,
            pending: VecDeque::new(),
        })
    }

    pub fn send(&mut self, frame: &ClientFrame<'_>) {
        let mut bytes = Vec::new();
        encode_client(frame, &mut bytes);
        self.ws
            .send(Message::binary(bytes))
            .expect("send a WebSocket message");
    }

    /// The next protocol frame; `None` once the server closed.
    #[track_caller]
    pub fn recv(&mut self) -> Option<Reply> {
        loop {
            if let Some(reply) = self.pending.pop_front() {
                return Some(reply);
            }
            match self.ws.read() {
                Ok(Message::Binary(bytes)) => replies_in(&bytes, &mut self.pending),
                Ok(Message::Text(t)) => panic!("the server sent a text message: {t}"),
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return None;
                }
                Err(e) => panic!("reading the WebSocket: {e}"),
            }
        }
    }

    #[track_caller]
    pub fn expect(&mut self) -> Reply {
        self.recv().expect("a frame before the close")
    }

    /// HELLO as `user`, expecting WELCOME.
    #[track_caller]
    pub fn hello(&mut self, user: &str, token: &str) {
        self.send(&ClientFrame::Hello {
            version: 1,
            user,
            token,
            client: 0,
        });
        match self.expect() {
            Reply::Welcome { .. } => {}
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    /// JOINs `room` from its head, expecting JOINED.
    #[track_caller]
    pub fn join(&mut self, room: &str) {
        self.send(&ClientFrame::Join {
            room,
            after: u64::MAX,
            limit: 0,
        });
        match self.expect() {
            Reply::Joined { .. } => {}
            other => panic!("expected JOINED {room}, got {other:?}"),
        }
    }

    /// Reads until the server's Close; returns its code.
    #[track_caller]
    pub fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.ws.read() {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(e) => panic!("expected a Close, got {e}"),
            }
        }
    }
}

/// What a [`RawWs`] read from the server.
#[derive(Debug, PartialEq)]
pub enum Got {
    Reply(Reply),
    Pong(Vec<u8>),
    /// A Close frame and its code.
    Close(Option<u16>),
    /// TCP end of stream.
    Eof,
}

/// A WebSocket client written by hand over a `TcpStream`: it sends any bytes, and reads the
/// server's frames one by one, checking each is a frame a server may send.
pub struct RawWs {
    pub stream: TcpStream,
    /// Bytes read and not yet a whole frame.
    buf: Vec<u8>,
    /// Protocol frames of messages read and not yet returned.
    replies: VecDeque<Reply>,
    /// The protocol bytes of a message still open (its last frame not yet in).
    message: Vec<u8>,
    in_message: bool,
}

impl RawWs {
    /// Connects and upgrades, asserting a 101; frames that come right behind it are kept.
    #[track_caller]
    pub fn upgrade(addr: SocketAddr) -> RawWs {
        let mut ws = RawWs::connect(addr);
        ws.write(upgrade_request(addr).as_bytes());
        let head = ws.response_head();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        ws
    }

    /// A connection to the web listener that has sent nothing yet.
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> RawWs {
        let stream = TcpStream::connect(addr).expect("connect to the web listener");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        RawWs {
            stream,
            buf: Vec::new(),
            replies: VecDeque::new(),
            message: Vec::new(),
            in_message: false,
        }
    }

    /// Upgrades, then HELLO as `user`, expecting WELCOME.
    #[track_caller]
    pub fn login(addr: SocketAddr, user: &str, token: &str) -> RawWs {
        let mut ws = RawWs::upgrade(addr);
        ws.send(&ClientFrame::Hello {
            version: 1,
            user,
            token,
            client: 0,
        });
        match ws.recv() {
            Got::Reply(Reply::Welcome { .. }) => ws,
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    #[track_caller]
    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    /// `frame` in one masked binary message.
    #[track_caller]
    pub fn send(&mut self, frame: &ClientFrame<'_>) {
        let mut bytes = Vec::new();
        encode_client(frame, &mut bytes);
        self.write(&masked(Opcode::Binary, &bytes));
    }

    /// Reads an HTTP response head (up to its blank line); what follows stays buffered.
    #[track_caller]
    pub fn response_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return String::from_utf8_lossy(&head).into_owned();
            }
            assert!(self.fill(), "the server closed before a response head");
        }
    }

    /// Reads more bytes into the buffer; false at end of stream.
    #[track_caller]
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return false,
                Err(e) => panic!("reading from the server: {e}"),
            }
        }
    }

    /// The next whole server frame: (FIN, opcode bits, payload); `None` at end of stream.
    #[track_caller]
    fn next_frame(&mut self) -> Option<ServerFrame> {
        loop {
            if let Some((frame, used)) = server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if !self.fill() {
                assert!(self.buf.is_empty(), "the stream ends inside a frame");
                return None;
            }
        }
    }

    /// The next thing the server said.
    #[track_caller]
    pub fn recv(&mut self) -> Got {
        loop {
            if let Some(reply) = self.replies.pop_front() {
                return Got::Reply(reply);
            }
            let Some((fin, opcode, payload)) = self.next_frame() else {
                assert!(!self.in_message, "the stream ends inside a message");
                return Got::Eof;
            };
            match Opcode::from_bits(opcode) {
                Some(Opcode::Binary) if !self.in_message => {}
                Some(Opcode::Continuation) if self.in_message => {}
                Some(Opcode::Pong) => return Got::Pong(payload),
                Some(Opcode::Close) => {
                    let code = payload.first_chunk::<2>().map(|c| u16::from_be_bytes(*c));
                    return Got::Close(code);
                }
                other => panic!(
                    "the server sent {other:?} (in a message: {})",
                    self.in_message
                ),
            }
            self.message.extend_from_slice(&payload);
            self.in_message = !fin;
            if fin {
                let message = std::mem::take(&mut self.message);
                replies_in(&message, &mut self.replies);
            }
        }
    }

    /// Reads protocol frames until the server's Close, then its TCP close; returns the frames
    /// that came before and the Close's code. Nothing may follow the Close.
    #[track_caller]
    pub fn until_close(&mut self) -> (Vec<Reply>, Option<u16>) {
        let mut replies = Vec::new();
        loop {
            match self.recv() {
                Got::Reply(reply) => replies.push(reply),
                Got::Pong(_) => {}
                Got::Close(code) => {
                    let after = self.recv();
                    assert_eq!(after, Got::Eof, "after the Close, before the TCP close");
                    return (replies, code);
                }
                Got::Eof => panic!("TCP closed without a Close after {replies:?}"),
            }
        }
    }
}

/// The server frame at the front of `buf` and the bytes it takes, if it is whole. Fails the
/// test on what a server must never send: RSV bits, a mask, a length in a longer form than
/// it needs.
#[track_caller]
fn server_frame(buf: &[u8]) -> Option<(ServerFrame, usize)> {
    let (&[first, second], rest) = buf.split_first_chunk::<2>()?;
    assert_eq!(first & 0x70, 0, "server frame with RSV bits");
    assert_eq!(second & 0x80, 0, "server frame masked");
    let (len, header) = match second & 0x7F {
        126 => {
            let len = usize::from(u16::from_be_bytes(*rest.first_chunk::<2>()?));
            assert!(len > 125, "16-bit length for a short payload");
            (len, 4)
        }
        127 => {
            let len = u64::from_be_bytes(*rest.first_chunk::<8>()?);
            assert!(len > 0xFFFF, "64-bit length for a medium payload");
            (usize::try_from(len).expect("a length that fits"), 10)
        }
        n => (usize::from(n), 2),
    };
    let payload = buf.get(header..header + len)?;
    Some((
        (first & 0x80 != 0, first & 0x0F, payload.to_vec()),
        header + len,
    ))
}
