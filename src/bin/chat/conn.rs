//! One connection to chatd: connect (and the TLS handshake, if asked), HELLO, WELCOME, then
//! a reader thread that turns the socket into [`Event`]s while the owner writes frames. A
//! connection never retries or reconnects by itself (that is `link`'s job), and every wait
//! in it has a deadline. It speaks the version the target asks for; a server too old for
//! version 2 (UNSUPPORTED_VERSION) is asked again, once, in version 1.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::Sender;
use std::time::Duration;

use chatd::client::{Client, Reply, Transport};
use chatd::protocol::{ClientFrame, ErrorCode, Version, encode_client};

use crate::events::Event;
use crate::failure::{Exit, Failure, describe};
use crate::link::Target;

/// How long one address may take to accept the TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the server may take to answer HELLO.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one write may block: a server that stops reading for this long is gone.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What WELCOME told us.
#[derive(Debug, Clone, Copy)]
pub struct Welcome {
    pub epoch: u64,
    pub idle_timeout: Duration,
    /// The version in force: what WELCOME echoed.
    pub version: Version,
    /// The server refused version 2, and this connection is version 1's second try.
    pub fell_back: bool,
}

/// The writing half of a connection, plain or TLS; its reading half lives in a thread.
#[derive(Debug)]
pub struct Conn {
    stream: Transport,
    /// Tags this connection's events, so that a late event of an old one can be told apart.
    pub id: u64,
}

impl Conn {
    /// Connects to the target's address (over TLS if it says so), logs in, and starts the
    /// reader thread that sends [`Event::Frame`]s and finally one [`Event::Closed`] tagged
    /// with `id`.
    ///
    /// # Errors
    /// The server cannot be reached, refuses the certificate check or the login, or breaks
    /// the handshake.
    pub fn open(
        target: &Target,
        id: u64,
        events: &Sender<Event>,
    ) -> Result<(Conn, Welcome), Failure> {
        match Conn::open_in(target, target.version, id, events) {
            Err(Login::Old) if target.version > Version::V1 => {
                let (conn, welcome) = Conn::open_in(target, Version::V1, id, events)
                    .map_err(|e| e.failure(&target.addr, &target.user))?;
                let welcome = Welcome {
                    fell_back: true,
                    ..welcome
                };
                Ok((conn, welcome))
            }
            Err(e) => Err(e.failure(&target.addr, &target.user)),
            Ok(opened) => Ok(opened),
        }
    }

    fn open_in(
        target: &Target,
        version: Version,
        id: u64,
        events: &Sender<Event>,
    ) -> Result<(Conn, Welcome), Login> {
        let (addr, user, token) = (&target.addr, &target.user, &target.token);
        let tcp = connect(addr)?;
        let lost = |e: io::Error| {
            Failure::new(
                Exit::Lost,
                format!("lost the connection to chatd at {addr}: {}", describe(&e)),
            )
        };
        // The write timeout holds for the TLS handshake too; its read timeout is set there.
        tcp.set_write_timeout(Some(WRITE_TIMEOUT)).map_err(lost)?;
        let stream = match &target.tls {
            Some(secure) => Transport::Tls(secure.handshake(tcp, addr)?),
            None => Transport::Plain(tcp),
        };
        let mut reader = Client::from_transport(stream.try_clone().map_err(lost)?);
        reader.set_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(lost)?;
        reader.speak(version);
        let mut conn = Conn { stream, id };
        let hello = ClientFrame::Hello {
            version: version.as_u8(),
            user,
            token,
            client: if version >= Version::V2 {
                target.client
            } else {
                0
            },
        };
        // A server that refuses us at accept (TOO_MANY) may have closed before HELLO is
        // written: its ERROR, if it can still be read, says more than the failed write.
        let sent = conn.send(&hello);
        let welcome = match reader.recv() {
            Ok(Some(Reply::Welcome {
                epoch,
                idle_timeout_ms,
                version: echoed,
                ..
            })) => {
                let version = Version::from_wire(echoed)
                    .unwrap_or(Version::V1)
                    .min(version);
                reader.speak(version);
                Welcome {
                    epoch,
                    idle_timeout: Duration::from_millis(u64::from(idle_timeout_ms)),
                    version,
                    fell_back: false,
                }
            }
            Ok(Some(Reply::Error { code, .. }))
                if code == ErrorCode::UnsupportedVersion.as_u16() =>
            {
                return Err(Login::Old);
            }
            Ok(Some(Reply::Error { code, message, .. })) => {
                return Err(refused(addr, user, code, &message).into());
            }
            Ok(Some(other)) => {
                return Err(Failure::new(
                    Exit::Other,
                    format!("chatd at {addr} answered HELLO with {other:?}"),
                )
                .into());
            }
            Ok(None) => {
                return Err(sent
                    .err()
                    .map_or_else(
                        || {
                            Failure::new(
                                Exit::Lost,
                                format!(
                                    "chatd at {addr} closed the connection during the login{}",
                                    if target.tls.is_none() {
                                        " (if that is a TLS port, use --tls)"
                                    } else {
                                        ""
                                    }
                                ),
                            )
                        },
                        lost,
                    )
                    .into());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Failure::new(
                    Exit::Unreachable,
                    format!(
                        "cannot reach chatd at {addr}: no answer to the login within {} s",
                        HANDSHAKE_TIMEOUT.as_secs()
                    ),
                )
                .into());
            }
            Err(e) => return Err(lost(e).into()),
        };
        reader.set_timeout(None).map_err(lost)?;
        let tx = events.clone();
        std::thread::Builder::new()
            .name("chat-net".into())
            .spawn(move || read_all(reader, id, &tx))
            .map_err(|e| Failure::new(Exit::Other, format!("cannot start a thread: {e}")))?;
        Ok((conn, welcome))
    }

    /// Writes one frame.
    ///
    /// # Errors
    /// The socket failed, or the server took nothing for [`WRITE_TIMEOUT`].
    pub fn send(&mut self, frame: &ClientFrame<'_>) -> io::Result<()> {
        let mut bytes = Vec::new();
        encode_client(frame, &mut bytes);
        self.stream.write_all(&bytes)
    }

    /// Closes both directions, which also ends the reader thread.
    pub fn close(&self) {
        self.stream.close();
    }
}

/// Why a login failed: a server too old for the version asked, or anything else.
enum Login {
    Old,
    Failed(Failure),
}

impl From<Failure> for Login {
    fn from(f: Failure) -> Login {
        Login::Failed(f)
    }
}

impl Login {
    fn failure(self, addr: &str, user: &str) -> Failure {
        match self {
            Login::Old => refused(addr, user, ErrorCode::UnsupportedVersion.as_u16(), ""),
            Login::Failed(f) => f,
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.close();
    }
}

fn read_all(mut reader: Client, id: u64, tx: &Sender<Event>) {
    let why = loop {
        match reader.recv() {
            Ok(Some(reply)) => {
                if tx.send(Event::Frame { conn: id, reply }).is_err() {
                    return;
                }
            }
            Ok(None) => break "the server closed the connection".to_string(),
            Err(e) => break describe(&e),
        }
    };
    let _ = tx.send(Event::Closed { conn: id, why });
}

fn connect(addr: &str) -> Result<TcpStream, Failure> {
    let unreachable = |why: String| {
        Failure::new(
            Exit::Unreachable,
            format!("cannot reach chatd at {addr}: {why}"),
        )
    };
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| unreachable(describe(&e)))?
        .collect();
    let mut last = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(unreachable(last.map_or_else(
        || "the name has no address".into(),
        |e| describe(&e),
    )))
}

/// The failure for an ERROR in answer to HELLO.
fn refused(addr: &str, user: &str, code: u16, message: &str) -> Failure {
    match ErrorCode::from_u16(code) {
        Some(ErrorCode::AuthFailed) => Failure::server(
            code,
            message,
            &format!("authentication failed for user {user} at {addr} (check the token)"),
        ),
        Some(ErrorCode::TooMany) => Failure {
            exit: Exit::Unreachable,
            ..Failure::server(
                code,
                message,
                &format!("chatd at {addr} refused the connection"),
            )
        },
        Some(ErrorCode::ShuttingDown) => Failure::new(
            Exit::ShuttingDown,
            format!("chatd at {addr} is shutting down (SHUTTING_DOWN)"),
        ),
        _ => Failure::server(code, message, &format!("chatd at {addr} refused the login")),
    }
}
