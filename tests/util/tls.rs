//! A small blocking TLS client for the server's TLS tests: rustls's buffered client over a
//! `TcpStream`, speaking protocol v1 frames through the crate's codec. Separate from
//! `chatd::client` so the server's tests do not depend on the client's TLS code.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chatd::client::Reply;
use chatd::protocol::codec::parse_server;
use chatd::protocol::{ClientFrame, Decoded, Deframer, encode_client};
use rustls::{ClientConnection, StreamOwned};

pub struct TlsClient {
    pub tls: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    /// Connects and completes the handshake, trusting `ca` and verifying `name`.
    ///
    /// # Errors
    /// The connection or the handshake failed.
    pub fn connect(addr: SocketAddr, ca: &Path, name: &str) -> io::Result<TlsClient> {
        let config = chatd::tls::client::client_config(Some(ca)).map_err(io::Error::other)?;
        TlsClient::connect_with(addr, config, name)
    }

    pub fn connect_with(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> io::Result<TlsClient> {
        TlsClient::over(TcpStream::connect(addr)?, config, name)
    }

    /// Like `connect`, with a receive buffer of `rcvbuf` bytes: a reader the server must
    /// pace, so that what it is owed stays behind in the room.
    pub fn connect_small_window(
        addr: SocketAddr,
        ca: &Path,
        name: &str,
        rcvbuf: usize,
    ) -> io::Result<TlsClient> {
        use nix::sys::socket::{
            AddressFamily, SockFlag, SockType, SockaddrStorage, connect, setsockopt, socket,
            sockopt,
        };
        use std::os::fd::AsRawFd;
        let family = if addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let fd = socket(family, SockType::Stream, SockFlag::empty(), None)?;
        setsockopt(&fd, sockopt::RcvBuf, &rcvbuf)?;
        connect(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
        let config = chatd::tls::client::client_config(Some(ca)).map_err(io::Error::other)?;
        TlsClient::over(TcpStream::from(fd), config, name)
    }

    fn over(
        tcp: TcpStream,
        config: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> io::Result<TlsClient> {
        let server = chatd::tls::client::server_name(name).map_err(io::Error::other)?;
        let conn = ClientConnection::new(config, server).map_err(io::Error::other)?;
        tcp.set_read_timeout(Some(crate::util::PATIENCE))?;
        tcp.set_nodelay(true)?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| explained(e, name))?;
        }
        Ok(TlsClient {
            tls,
            buf: Vec::new(),
        })
    }

    pub fn set_timeout(&self, t: Option<Duration>) {
        let _ = self.tls.sock.set_read_timeout(t);
    }

    pub fn send(&mut self, frame: &ClientFrame<'_>) -> io::Result<()> {
        let mut bytes = Vec::new();
        encode_client(frame, &mut bytes);
        self.send_raw(&bytes)
    }

    /// Writes `bytes` as application data (one TLS record per call, up to 16 KiB).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tls.write_all(bytes)?;
        self.tls.flush()
    }

    /// The next frame; `None` once the server closed the connection.
    pub fn recv(&mut self) -> io::Result<Option<Reply>> {
        let deframer = Deframer::for_client(chatd::client::CLIENT_MAX_FRAME);
        loop {
            if let Decoded::Frame(raw) = deframer
                .next(&self.buf)
                .map_err(|e| io::Error::other(e.reason))?
            {
                let reply =
                    Reply::from(parse_server(&raw).map_err(|e| io::Error::other(e.reason))?);
                let used = raw.wire_len;
                self.buf.drain(..used);
                return Ok(Some(reply));
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.tls.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next frame, which must come in time.
    #[track_caller]
    pub fn expect(&mut self) -> Reply {
        match self.recv() {
            Ok(Some(r)) => r,
            Ok(None) => panic!("the server closed the TLS connection"),
            Err(e) => panic!("no frame: {e}"),
        }
    }

    /// HELLO as `user`, expecting WELCOME.
    #[track_caller]
    pub fn login(&mut self, user: &str, token: &str) -> Reply {
        self.send(&ClientFrame::Hello {
            version: 1,
            user,
            token,
            client: 0,
        })
        .expect("HELLO");
        let w = self.expect();
        assert!(
            matches!(w, Reply::Welcome { .. }),
            "expected WELCOME, got {w:?}"
        );
        w
    }
}

/// A handshake's I/O error, with rustls's error (if that is what it is) in chatd's words.
fn explained(e: io::Error, server: &str) -> io::Error {
    let line = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map(|tls| chatd::tls::client::explain(tls, server));
    match line {
        Some(line) => io::Error::new(e.kind(), line),
        None => e,
    }
}
