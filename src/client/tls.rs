//! TLS for the blocking client: one rustls session over one TCP socket, shareable between a
//! reading thread and a writing thread (the `chat` client reads in one and writes in the
//! other), with the handshake finished before the stream is handed out so that a bad
//! certificate is an error of `connect`, in one readable line.
//!
//! The session sits behind a mutex that is never held across a blocking socket read: a reader
//! waits for bytes on its own clone of the socket, then takes the lock only to decrypt them.
//! Writes encrypt and send under the lock, bounded by the socket's write timeout. It never
//! panics on what the peer sends, and never shows a rustls debug dump to a person.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::refusal::{HandshakeError, readable};

/// How many bytes one read takes from the socket: one full TLS record and its header fit.
const READ_CHUNK: usize = 16 * 1024 + 512;

/// The rustls session and the bytes read from the socket that it has not taken yet.
struct Session {
    tls: ClientConnection,
    /// Ciphertext waiting to be fed: rustls refuses more once plaintext is waiting.
    unread: Vec<u8>,
    /// The name verified, for error lines.
    server: String,
}

impl Session {
    /// Feeds unread ciphertext to rustls until some plaintext is ready or none is left, then
    /// sends what the session owes the peer (an alert, a key update answer).
    fn feed(&mut self, tcp: &TcpStream) -> io::Result<()> {
        let mut rest = self.unread.as_slice();
        let mut failed = None;
        while !rest.is_empty() {
            if let Err(e) = self.tls.read_tls(&mut rest) {
                failed = Some(e);
                break;
            }
            match self.tls.process_new_packets() {
                Ok(state) if state.plaintext_bytes_to_read() > 0 => break,
                Ok(_) => {}
                Err(e) => {
                    failed = Some(self.rustls_error(e));
                    break;
                }
            }
        }
        let used = self.unread.len() - rest.len();
        self.unread.drain(..used);
        // Even after an error: rustls queues the alert that tells the server why.
        let flushed = self.flush(tcp);
        match failed {
            Some(e) => Err(e),
            None => flushed,
        }
    }

    /// Tells rustls the socket reached its end.
    fn end(&mut self) -> io::Result<()> {
        self.tls.read_tls(&mut io::empty())?;
        self.tls
            .process_new_packets()
            .map(|_| ())
            .map_err(|e| self.rustls_error(e))
    }

    /// Writes every TLS byte the session has queued.
    fn flush(&mut self, mut tcp: &TcpStream) -> io::Result<()> {
        while self.tls.wants_write() {
            self.tls.write_tls(&mut tcp)?;
        }
        Ok(())
    }

    fn rustls_error(&self, cause: rustls::Error) -> io::Error {
        let line = readable(&cause, &self.server);
        io::Error::new(io::ErrorKind::InvalidData, HandshakeError { line, cause })
    }
}

/// A TLS connection to chatd. Clones share the session and each has its own handle on the
/// socket; only one of them should read.
pub struct TlsStream {
    tcp: TcpStream,
    session: Arc<Mutex<Session>>,
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream").field("tcp", &self.tcp).finish()
    }
}

impl TlsStream {
    /// Runs the TLS handshake on `tcp`, verifying the certificate against `name`. Waits as
    /// long as `tcp`'s read timeout allows.
    ///
    /// # Errors
    /// A [`HandshakeError`] (see [`handshake_error`]) when the certificate or the protocol is
    /// refused; otherwise the socket's error (refused, reset, timed out), or `UnexpectedEof`
    /// when the server closed the connection during the handshake.
    pub fn connect(
        tcp: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<TlsStream> {
        let server = name.to_str().into_owned();
        let tls = ClientConnection::new(config, name)
            .map_err(|e| io::Error::other(format!("cannot start TLS with {server}: {e}")))?;
        let mut session = Session {
            tls,
            unread: Vec::new(),
            server,
        };
        let mut chunk = [0u8; READ_CHUNK];
        session.flush(&tcp)?;
        while session.tls.is_handshaking() {
            if session.unread.is_empty() {
                let n = read_some(&tcp, &mut chunk)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{} closed the connection during the TLS handshake",
                            session.server
                        ),
                    ));
                }
                session
                    .unread
                    .extend_from_slice(chunk.get(..n).unwrap_or_default());
            }
            session.feed(&tcp)?;
        }
        Ok(TlsStream {
            tcp,
            session: Arc::new(Mutex::new(session)),
        })
    }

    /// Another handle on the same connection, for a second thread.
    ///
    /// # Errors
    /// The socket cannot be duplicated.
    pub fn try_clone(&self) -> io::Result<TlsStream> {
        Ok(TlsStream {
            tcp: self.tcp.try_clone()?,
            session: Arc::clone(&self.session),
        })
    }

    /// The socket beneath, for timeouts, addresses and shutdown (and for tests that need to
    /// misbehave below TLS).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The ALPN protocol the server chose, if any.
    pub fn alpn_protocol(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.lock()?.tls.alpn_protocol().map(<[u8]>::to_vec))
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, Session>> {
        // A poisoned lock means another thread panicked mid-record: the session cannot be
        // trusted any more, so the connection is over.
        self.session
            .lock()
            .map_err(|_| io::Error::other("TLS session broken by a failed thread"))
    }
}

/// One read from the socket, without holding the session.
fn read_some(mut tcp: &TcpStream, chunk: &mut [u8]) -> io::Result<usize> {
    tcp.read(chunk)
}

impl Read for TlsStream {
    /// Plaintext from the server; `Ok(0)` at its end. An end without TLS's close_notify is
    /// taken as an end too: chatd's frames carry their length, so a cut is still seen (as a
    /// frame cut short) by the deframer above.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            {
                let mut s = self.lock()?;
                match s.tls.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if !s.unread.is_empty() {
                    s.feed(&self.tcp)?;
                    continue;
                }
            }
            // Timeouts and interruptions surface here, with the session untouched.
            let n = read_some(&self.tcp, &mut chunk)?;
            let mut s = self.lock()?;
            if n == 0 {
                s.end()?;
            } else {
                s.unread
                    .extend_from_slice(chunk.get(..n).unwrap_or_default());
            }
        }
    }
}

impl Write for TlsStream {
    /// Encrypts `buf` and sends it before returning.
    ///
    /// # Errors
    /// The socket failed or stayed full past its write timeout; the connection is then of no
    /// further use.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut s = self.lock()?;
        let n = s.tls.writer().write(buf)?;
        s.flush(&self.tcp)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.lock()?.flush(&self.tcp)
    }
}
