//! `Conn::service` on a web connection, over a real loopback socket and the fake server of
//! `fuzzing::fake`: what an idle WebSocket connection keeps once its traffic is over. The
//! budget is a plain TCP connection's cost plus 64 bytes: the transport enum is the same size
//! for both, a plain connection's input buffer is unallocated when idle, and a web
//! connection's one allocation is its `WsConn` (counted as the allocator's chunk for it),
//! whose own buffers must all be freed again.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};

use super::{Conn, Scratch, Serviced};
use crate::auth::Table;
use crate::fuzzing::fake::{FakeEnv, USERS};
use crate::fuzzing::ws::masked;
use crate::metrics::Metrics;
use crate::protocol::{ClientFrame, encode_client};
use crate::published::Published;
use crate::room::Rooms;
use crate::session::Session;
use crate::shared::Shared;
use crate::transport::Transport;
use crate::web::{Opcode, WsConn};

/// The extra bytes an idle WebSocket connection may cost over a plain one.
const BUDGET: usize = 64;

const PATIENCE: Duration = Duration::from_secs(5);
const SOCKET: Token = Token(0);

/// One server-side `Conn` on a loopback socket, the client's end, and what servicing needs.
struct Rig {
    poll: Poll,
    events: Events,
    conn: Conn,
    client: std::net::TcpStream,
    scratch: Scratch,
    shared: Shared,
    env: FakeEnv,
}

impl Rig {
    fn new(transport: Transport) -> Rig {
        let env = FakeEnv::new();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let client = std::net::TcpStream::connect(addr).expect("connect");
        client.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("nonblocking");
        let mut stream = mio::net::TcpStream::from_std(server);
        let poll = Poll::new().expect("poll");
        poll.registry()
            .register(&mut stream, SOCKET, Interest::READABLE)
            .expect("register");
        let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let session = Session::new(env.now, &env.limits);
        let shared = Shared::new(
            env.limits.clone(),
            1,
            Published::new(Table::default()),
            Rooms::new(1, 1, env.limits.ring),
            Arc::from([]),
            Arc::new(Metrics::new(1)),
        );
        Rig {
            poll,
            events: Events::with_capacity(4),
            conn: Conn::new(stream, peer, 1, session, transport),
            client,
            scratch: Scratch::new(16 * 1024),
            shared,
            env,
        }
    }

    /// Sends `bytes` from the client, waits until the server's socket has them, and services
    /// the connection once.
    fn turn(&mut self, bytes: &[u8]) -> Serviced {
        self.client.write_all(bytes).expect("client write");
        self.poll
            .poll(&mut self.events, Some(PATIENCE))
            .expect("poll");
        assert!(!self.events.is_empty(), "the server never saw the bytes");
        self.conn.readable = true;
        self.conn
            .service(&mut self.scratch, &self.shared, &mut self.env)
    }

    /// Reads an HTTP response head from the client's end.
    fn response_head(&mut self) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            self.client.read_exact(&mut byte).expect("response byte");
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    /// Reads one server frame's opcode bits and payload from the client's end.
    fn server_frame(&mut self) -> (u8, Vec<u8>) {
        let mut head = [0u8; 2];
        self.client.read_exact(&mut head).expect("frame header");
        let len = match head[1] {
            126 => {
                let mut len = [0u8; 2];
                self.client.read_exact(&mut len).expect("16-bit length");
                usize::from(u16::from_be_bytes(len))
            }
            n => usize::from(n),
        };
        let mut payload = vec![0; len];
        self.client.read_exact(&mut payload).expect("payload");
        (head[0] & 0x0F, payload)
    }

    fn ws(&mut self) -> &mut WsConn {
        self.conn.transport.ws().expect("a web connection")
    }

    /// Heap bytes the transport holds beside the `Conn` (the session's are the same for
    /// every transport).
    fn transport_heap(&mut self) -> usize {
        match &mut self.conn.transport {
            Transport::Plain(inbuf) => inbuf.capacity(),
            Transport::Web(ws) => allocation(std::mem::size_of::<WsConn>()) + ws.queued_bytes(),
            Transport::Tls(_) | Transport::WebTls(_) => usize::MAX,
        }
    }
}

/// The memory a small allocation of `n` bytes takes: glibc's chunk, the request and an 8-byte
/// header rounded up to 16, at least 32 (jemalloc's size classes are no larger at these sizes).
fn allocation(n: usize) -> usize {
    (n + 8).next_multiple_of(16).max(32)
}

fn frame(frame: &ClientFrame<'_>) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_client(frame, &mut bytes);
    bytes
}

fn hello() -> Vec<u8> {
    let (user, token) = USERS[0];
    frame(&ClientFrame::Hello {
        version: 1,
        user,
        token,
        client: 0,
    })
}

fn join(room: &str) -> Vec<u8> {
    frame(&ClientFrame::Join {
        room,
        after: 0,
        limit: 0,
    })
}

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// The protocol kind byte of the one frame in a server message.
fn kind(payload: &[u8]) -> Option<u8> {
    payload.get(4).copied()
}

#[test]
fn an_idle_websocket_costs_at_most_64_bytes_more_than_a_plain_connection() {
    let mut plain = Rig::new(Transport::Plain(Vec::new()));
    assert_eq!(plain.turn(&hello()), Serviced::Wait);
    let mut welcome = [0u8; 5];
    plain.client.read_exact(&mut welcome).expect("WELCOME");
    assert_eq!(
        plain.transport_heap(),
        0,
        "a plain idle connection's input buffer"
    );

    let mut web = Rig::new(Transport::Web(Box::default()));
    let request = [UPGRADE.as_bytes(), &masked(Opcode::Binary, &hello())].concat();
    web.turn(&request);
    let head = web.response_head();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let (opcode, welcome) = web.server_frame();
    assert_eq!(
        (opcode, kind(&welcome)),
        (Opcode::Binary.bits(), Some(0x81))
    );
    assert_eq!(web.ws().queued_bytes(), 0, "buffers kept after the upgrade");
    let idle = web.transport_heap() - plain.transport_heap();
    assert!(idle <= BUDGET, "an idle WebSocket costs {idle} bytes more");
}

#[test]
fn partial_frames_are_freed_once_whole() {
    let mut web = Rig::new(Transport::Web(Box::default()));
    web.turn(&[UPGRADE.as_bytes(), &masked(Opcode::Binary, &hello())].concat());
    web.response_head();
    web.server_frame();

    // Half a WebSocket frame: kept in the spill until the rest comes.
    let whole = masked(Opcode::Binary, &join("#a"));
    let (front, back) = whole.split_at(whole.len() / 2);
    web.turn(front);
    assert_eq!(web.ws().rx(), front);
    web.turn(back);
    let (_, joined) = web.server_frame();
    assert_eq!(kind(&joined), Some(0x82));
    assert_eq!(web.ws().queued_bytes(), 0, "the partial frame was kept");

    // A protocol frame split across the two frames of a fragmented message: half of it waits
    // in the session's input buffer, which is freed once the frame is whole.
    let join = join("#b");
    let (front, back) = join.split_at(join.len() / 2);
    let first = crate::fuzzing::ws::client_frame(
        Opcode::Binary.bits(),
        Some([1, 2, 3, 4]),
        front,
        crate::fuzzing::ws::LengthForm::Shortest,
    );
    web.turn(&first);
    let waiting = web.ws().take_inbuf();
    assert_eq!(waiting, front);
    web.ws().put_inbuf(waiting);
    web.turn(&masked(Opcode::Continuation, back));
    let (_, joined) = web.server_frame();
    assert_eq!(kind(&joined), Some(0x82));
    assert_eq!(web.ws().queued_bytes(), 0, "the input buffer was kept");
    assert!(web.transport_heap() <= BUDGET);
}
