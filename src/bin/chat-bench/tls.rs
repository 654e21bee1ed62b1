//! The client side of `--tls`: a rustls configuration per run and a buffered
//! `ClientConnection` per bench connection, turning socket bytes into protocol bytes and back
//! for `net::Link`, so that the wires never learn whether they run over TLS.
//!
//! Every handshake is a full one: the configuration keeps no sessions, so `connect --tls`
//! measures what a server spends on a client it has never seen. NATS (before 2.10) sends its
//! INFO line in the clear before the handshake; that line is skipped here, never parsed as TLS.
//! Nothing here blocks: reads and writes stop at `WouldBlock`.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::wire::Kind;

/// The name every server certificate of the run is made out to (`pki::Pki`).
const SERVER_NAME: &str = "127.0.0.1";

/// The most a NATS INFO line may take before we call the server broken.
const MAX_INFO: usize = 64 * 1024;

/// How the connections of one run speak TLS to one server.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    /// The server says INFO in the clear first (NATS).
    info_first: bool,
}

impl TlsClient {
    /// Trusts `ca` and nothing else, keeps no sessions, asks for ALPN `chatd/1` from chatd
    /// only (the peers would ignore it).
    ///
    /// # Errors
    /// The CA file cannot be read.
    pub fn new(kind: Kind, ca: &Path) -> Result<TlsClient, String> {
        let base = chatd::tls::client::client_config(Some(ca))?;
        let mut config = (*base).clone();
        config.resumption = Resumption::disabled();
        if kind != Kind::Chatd {
            config.alpn_protocols.clear();
        }
        Ok(TlsClient {
            config: Arc::new(config),
            name: chatd::tls::client::server_name(SERVER_NAME)?,
            info_first: kind == Kind::Nats,
        })
    }

    /// A new session, before its handshake.
    ///
    /// # Errors
    /// rustls refused the configuration.
    pub fn connection(&self) -> io::Result<ClientConnection> {
        ClientConnection::new(Arc::clone(&self.config), self.name.clone()).map_err(io::Error::other)
    }

    /// The TLS state of one new connection.
    ///
    /// # Errors
    /// As `connection`.
    pub fn session(&self) -> io::Result<Session> {
        Ok(Session {
            conn: self.connection()?,
            info: self.info_first.then(Vec::new),
        })
    }
}

/// One connection's TLS: the rustls session and, until it is over, the clear INFO prelude.
pub struct Session {
    conn: ClientConnection,
    /// `Some`: still reading the clear INFO line (nothing is sent until it is in).
    info: Option<Vec<u8>>,
}

impl Session {
    /// Reads from `socket` to `WouldBlock`, appending the plaintext to `inbuf`; true when the
    /// server closed the connection.
    ///
    /// # Errors
    /// A socket error, or TLS the session cannot accept (a failed handshake, a bad record).
    pub fn read(
        &mut self,
        socket: &mut impl Read,
        scratch: &mut [u8],
        inbuf: &mut Vec<u8>,
    ) -> io::Result<bool> {
        if self.info.is_some() {
            // No TLS can come before our ClientHello, which waits for the INFO line.
            return self.read_info(socket, scratch);
        }
        loop {
            match self.conn.read_tls(socket) {
                // The server closed its side.
                Ok(0) => return Ok(true),
                // Records in: decrypt them before reading more, so rustls' buffer stays small.
                Ok(_) => {
                    let state = self
                        .conn
                        .process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    if state.plaintext_bytes_to_read() > 0 {
                        self.conn
                            .reader()
                            .read_to_end(inbuf)
                            .or_else(would_block_ok)?;
                    }
                    if state.peer_has_closed() {
                        return Ok(true);
                    }
                }
                // Drained: the next readable event brings us back.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                // A signal: try again.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Anything else ends this connection.
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes the clear INFO line off the socket; true on EOF.
    fn read_info(&mut self, socket: &mut impl Read, scratch: &mut [u8]) -> io::Result<bool> {
        let Some(line) = self.info.as_mut() else {
            return Ok(false);
        };
        loop {
            match socket.read(scratch) {
                Ok(0) => return Ok(true),
                Ok(n) => line.extend_from_slice(scratch.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Some(end) = line.windows(2).position(|w| w == b"\r\n") {
                if end + 2 != line.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "bytes after the clear INFO line, before any TLS",
                    ));
                }
                self.info = None;
                return Ok(false);
            }
            if line.len() > MAX_INFO {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "no end to the clear INFO line",
                ));
            }
        }
    }

    /// Hands as much of `out` to the session as it takes (the rest stays in `out`), then writes
    /// TLS to `socket` until it is all out or the socket would block.
    ///
    /// # Errors
    /// A socket error.
    pub fn flush(&mut self, socket: &mut impl Write, out: &mut Vec<u8>) -> io::Result<()> {
        if self.info.is_some() {
            return Ok(());
        }
        if !out.is_empty() {
            let taken = self.conn.writer().write(out)?;
            out.drain(..taken.min(out.len()));
        }
        while self.conn.wants_write() {
            match self.conn.write_tls(socket) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// rustls' reader says `WouldBlock` once the plaintext is drained and the peer still open.
fn would_block_ok(e: io::Error) -> io::Result<usize> {
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(0)
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clear_info_line_is_skipped_and_nothing_is_sent_before_it() {
        let Ok(ca) = crate::pki::Pki::new() else {
            eprintln!("SKIPPED: no openssl command on this machine (apt-get install openssl)");
            return;
        };
        let client = TlsClient::new(Kind::Nats, &ca.ca).expect("CA");
        let mut s = client.session().expect("session");
        let mut sent = Vec::new();
        let mut out = b"CONNECT {}\r\n".to_vec();
        s.flush(&mut sent, &mut out).expect("flush");
        assert!(sent.is_empty(), "no ClientHello before INFO");
        let mut scratch = [0u8; 8];
        let mut inbuf = Vec::new();
        let mut info: &[u8] = b"INFO {\"tls_required\":true}\r\n";
        assert!(!s.read(&mut info, &mut scratch, &mut inbuf).expect("INFO"));
        assert!(inbuf.is_empty(), "INFO is not handed to the wire");
        s.flush(&mut sent, &mut out).expect("flush");
        assert_eq!(sent.first(), Some(&0x16), "then a TLS handshake record");
        assert!(
            out.is_empty(),
            "CONNECT waits inside the session for the handshake"
        );
    }

    #[test]
    fn bytes_after_info_before_tls_are_refused() {
        let Ok(ca) = crate::pki::Pki::new() else {
            eprintln!("SKIPPED: no openssl command on this machine (apt-get install openssl)");
            return;
        };
        let client = TlsClient::new(Kind::Nats, &ca.ca).expect("CA");
        let mut s = client.session().expect("session");
        let mut wire: &[u8] = b"INFO {}\r\n-ERR 'Secure Connection - TLS Required'\r\n";
        let mut inbuf = Vec::new();
        assert!(s.read(&mut wire, &mut [0u8; 64], &mut inbuf).is_err());
    }
}
