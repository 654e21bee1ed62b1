//! A small blocking client: one socket, the codec, owned frames out. The `chat` command line
//! client, the integration tests and the examples in the docs all talk to the daemon through
//! it. It is deliberately simple (no reactor); a client has one connection, plain or TLS.

pub mod refusal;
pub mod tls;
pub mod transport;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;

pub use refusal::{HandshakeError, handshake_error};
pub use tls::TlsStream;
pub use transport::Transport;

use crate::protocol::codec::{FrameError, parse_server};
use crate::protocol::{ClientFrame, Decoded, Deframer, ServerFrame, Version, encode_client};

/// The largest frame a client accepts before it knows the server's `max_frame`: the largest
/// any chatd can be configured to send.
pub const CLIENT_MAX_FRAME: u32 = crate::protocol::MAX_FRAME_CEILING;

/// A frame from the server, owning its strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Welcome {
        version: u8,
        epoch: u64,
        session: u64,
        max_frame: u32,
        idle_timeout_ms: u32,
        server: String,
    },
    Joined {
        room: String,
        first: u64,
        head: u64,
    },
    Left {
        room: String,
    },
    Msg {
        room: String,
        seq: u64,
        ts_ms: u64,
        user: String,
        text: String,
    },
    Ack {
        id: u64,
        seq: u64,
    },
    Pong {
        nonce: u64,
    },
    Error {
        code: u16,
        reference: u64,
        message: String,
    },
    /// Version 2: received only on a connection whose deframer speaks it (see
    /// [`Client::speak`]).
    Members {
        room: String,
        total: u32,
        users: Vec<String>,
    },
    /// Version 2, like [`Reply::Members`].
    Presence {
        room: String,
        user: String,
        here: bool,
    },
}

impl From<ServerFrame<'_>> for Reply {
    fn from(f: ServerFrame<'_>) -> Reply {
        match f {
            ServerFrame::Welcome {
                version,
                epoch,
                session,
                max_frame,
                idle_timeout_ms,
                server,
            } => Reply::Welcome {
                version,
                epoch,
                session,
                max_frame,
                idle_timeout_ms,
                server: server.into(),
            },
            ServerFrame::Joined { room, first, head } => Reply::Joined {
                room: room.into(),
                first,
                head,
            },
            ServerFrame::Left { room } => Reply::Left { room: room.into() },
            ServerFrame::Msg {
                room,
                seq,
                ts_ms,
                user,
                text,
            } => Reply::Msg {
                room: room.into(),
                seq,
                ts_ms,
                user: user.into(),
                text: text.into(),
            },
            ServerFrame::Ack { id, seq } => Reply::Ack { id, seq },
            ServerFrame::Pong { nonce } => Reply::Pong { nonce },
            ServerFrame::Error {
                code,
                reference,
                message,
            } => Reply::Error {
                code,
                reference,
                message: message.into(),
            },
            ServerFrame::Members { room, total, users } => Reply::Members {
                room: room.into(),
                total,
                users: users.iter().map(String::from).collect(),
            },
            ServerFrame::Presence { room, user, here } => Reply::Presence {
                room: room.into(),
                user: user.into(),
                here,
            },
        }
    }
}

pub struct Client {
    stream: Transport,
    buf: Vec<u8>,
    deframer: Deframer,
}

impl Client {
    /// Connects to the first address of `addr` that answers.
    ///
    /// # Errors
    /// No address answered.
    pub fn connect(addr: impl ToSocketAddrs) -> io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Client::from_stream(stream))
    }

    /// Connects to the first address of `addr` that answers and completes the TLS handshake
    /// there, verifying the server's certificate against `name`.
    ///
    /// # Errors
    /// No address answered, or the handshake failed: a certificate or protocol refusal is an
    /// `InvalidData` error carrying a [`HandshakeError`] whose message is one readable line.
    pub fn connect_tls(
        addr: impl ToSocketAddrs,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let tls = TlsStream::connect(stream, config, name)?;
        Ok(Client::from_transport(Transport::Tls(tls)))
    }

    /// A plain client on a connected socket.
    pub fn from_stream(stream: TcpStream) -> Client {
        Client::from_transport(Transport::Plain(stream))
    }

    /// A client on a connection that is plain or has finished its TLS handshake.
    pub fn from_transport(stream: Transport) -> Client {
        Client {
            stream,
            buf: Vec::new(),
            deframer: Deframer::for_client(CLIENT_MAX_FRAME),
        }
    }

    /// Reads what a server sends on a connection speaking `version` from now on: version 2
    /// adds MEMBERS and PRESENCE, which a version 1 connection refuses as UNKNOWN_KIND. Set it
    /// before writing a HELLO of that version (a server sends nothing of a later version than
    /// the HELLO's), and back to version 1 if WELCOME says so.
    pub fn speak(&mut self, version: Version) {
        self.deframer = Deframer::for_client_in(version, self.deframer.max_frame());
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.tcp().peer_addr()
    }

    /// The TCP socket (beneath TLS, for a TLS client), for tests that need to misbehave on
    /// it and for socket options.
    pub fn stream(&self) -> &TcpStream {
        self.stream.tcp()
    }

    /// The connection, plain or TLS.
    pub fn transport(&self) -> &Transport {
        &self.stream
    }

    /// How long `recv` waits before failing with `WouldBlock`/`TimedOut`; `None` waits forever.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.tcp().set_read_timeout(timeout)
    }

    pub fn send(&mut self, frame: &ClientFrame<'_>) -> io::Result<()> {
        let mut bytes = Vec::new();
        encode_client(frame, &mut bytes);
        self.stream.write_all(&bytes)
    }

    /// Writes bytes as they are: for pipelining several frames in one write, or for tests.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next frame, or `None` once the server closed the connection.
    ///
    /// # Errors
    /// The socket failed or timed out, or the server sent something that is not a frame.
    pub fn recv(&mut self) -> io::Result<Option<Reply>> {
        loop {
            match self.deframer.next(&self.buf).map_err(invalid)? {
                Decoded::Frame(raw) => {
                    let reply = Reply::from(parse_server(&raw).map_err(invalid)?);
                    let used = raw.wire_len;
                    self.buf.drain(..used);
                    return Ok(Some(reply));
                }
                Decoded::NeedMore => {}
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed mid-frame",
                    ));
                }
                Ok(n) => self
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn invalid(e: FrameError) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {}", e.code, e.reason),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::encode_members;
    use crate::protocol::encode_server;
    use std::net::TcpListener;

    /// A client whose server has already written `bytes`.
    fn client_after(bytes: &[u8]) -> Client {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = Client::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        server.write_all(bytes).expect("write");
        client
    }

    #[test]
    fn members_and_presence_are_read_on_a_version_2_connection_only() {
        let mut members = Vec::new();
        encode_members("#r", 2, ["alice", "bob"], 1024, &mut members);
        let mut v1 = client_after(&members);
        assert!(v1.recv().is_err(), "version 1 refuses MEMBERS");
        let mut v2 = client_after(&members);
        v2.speak(Version::V2);
        assert_eq!(
            v2.recv().expect("members"),
            Some(Reply::Members {
                room: "#r".into(),
                total: 2,
                users: vec!["alice".into(), "bob".into()]
            })
        );
        let mut presence = Vec::new();
        let frame = ServerFrame::Presence {
            room: "#r",
            user: "bob",
            here: false,
        };
        encode_server(&frame, &mut presence);
        let mut v2 = client_after(&presence);
        v2.speak(Version::V2);
        assert_eq!(
            v2.recv().expect("presence"),
            Some(Reply::Presence {
                room: "#r".into(),
                user: "bob".into(),
                here: false
            })
        );
    }
}
