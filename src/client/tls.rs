//! TLS for the blocking client: one rustls session over one TCP socket, shareable between a
//! reading thread and a writing thread (the `chat` client reads in one and writes in the
//! other), with the handshake finished before the stream is handed out so that a bad
//! certificate is an error of `connect`, in one readable line.
//!
//! The session sits behind a mutex that is held only for work in memory, never across a
//! socket read or write: a reader waits for bytes on its own clone of the socket and then
//! takes the lock to decrypt them; a writer encrypts under the lock and sends after it. So a
//! reader blocked on a silent server never holds up a writer, and a writer blocked on a full
//! socket never stops the reader from draining the other direction. Sending has a lock of its
//! own that keeps TLS records in order on the wire. It never panics on what the peer sends,
//! and never shows a rustls debug dump to a person.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::refusal::HandshakeError;
use crate::tls::client::explain;

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
    /// Feeds unread ciphertext to rustls until some plaintext is ready or none is left.
    fn feed(&mut self) -> io::Result<()> {
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
        failed.map_or(Ok(()), Err)
    }

    /// Tells rustls the socket reached its end.
    fn end(&mut self) -> io::Result<()> {
        self.tls.read_tls(&mut io::empty())?;
        self.tls
            .process_new_packets()
            .map(|_| ())
            .map_err(|e| self.rustls_error(e))
    }

    /// Moves the TLS bytes the session has queued (records, alerts, key update answers) to
    /// `out`, in order.
    fn owed(&mut self, out: &mut Vec<u8>) {
        while self.tls.wants_write() {
            // Writing to a Vec cannot fail; should it, the bytes stay queued for next time.
            if self.tls.write_tls(out).is_err() {
                return;
            }
        }
    }

    fn rustls_error(&self, cause: rustls::Error) -> io::Error {
        let line = explain(&cause, &self.server);
        io::Error::new(io::ErrorKind::InvalidData, HandshakeError { line, cause })
    }
}

/// What the clones of one connection share.
struct Shared {
    session: Mutex<Session>,
    /// The turn to send, with the buffer the bytes are sent from: whoever holds it takes the
    /// session's queued bytes and writes them, so records reach the socket in order.
    sending: Mutex<Vec<u8>>,
}

/// A TLS connection to chatd. Clones share the session and each has its own handle on the
/// socket; only one of them should read.
pub struct TlsStream {
    tcp: TcpStream,
    shared: Arc<Shared>,
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
    /// A [`HandshakeError`] (see [`super::handshake_error`]) when the certificate or the
    /// protocol is refused; otherwise the socket's error (refused, reset, timed out), or
    /// `UnexpectedEof` when the server closed the connection during the handshake.
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
        let mut out = Vec::new();
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            out.clear();
            session.owed(&mut out);
            (&tcp).write_all(&out)?;
            if !session.tls.is_handshaking() {
                break;
            }
            if session.unread.is_empty() {
                let n = (&tcp).read(&mut chunk)?;
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
            if let Err(e) = session.feed() {
                // Tell the server why, if it still listens: rustls queued the alert.
                out.clear();
                session.owed(&mut out);
                let _ = (&tcp).write_all(&out);
                return Err(e);
            }
        }
        out.clear();
        Ok(TlsStream {
            tcp,
            shared: Arc::new(Shared {
                session: Mutex::new(session),
                sending: Mutex::new(out),
            }),
        })
    }

    /// Another handle on the same connection, for a second thread.
    ///
    /// # Errors
    /// The socket cannot be duplicated.
    pub fn try_clone(&self) -> io::Result<TlsStream> {
        Ok(TlsStream {
            tcp: self.tcp.try_clone()?,
            shared: Arc::clone(&self.shared),
        })
    }

    /// The socket beneath, for timeouts, addresses and shutdown (and for tests that need to
    /// misbehave below TLS).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The ALPN protocol the server chose, if any.
    ///
    /// # Errors
    /// The session was broken by a thread that panicked.
    pub fn alpn_protocol(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.session()?.tls.alpn_protocol().map(<[u8]>::to_vec))
    }

    fn session(&self) -> io::Result<MutexGuard<'_, Session>> {
        // A poisoned lock means another thread panicked mid-record: the session cannot be
        // trusted any more, so the connection is over.
        self.shared.session.lock().map_err(|_| broken())
    }

    /// Sends what the session owes the server after reading (an alert, a key update
    /// answer) unless a writer is sending right now: its next write takes the bytes along.
    /// A reader never waits for the sending turn.
    fn settle(&self, mut session: MutexGuard<'_, Session>) {
        let Ok(mut out) = self.shared.sending.try_lock() else {
            return;
        };
        out.clear();
        session.owed(&mut out);
        drop(session);
        // A failure here is the writer's to find: the reader reports what it reads.
        let _ = (&self.tcp).write_all(&out);
    }

    /// Encrypts `plain` (nothing, to just send what is queued) and sends it all.
    fn send(&self, plain: &[u8]) -> io::Result<usize> {
        let mut out = self.shared.sending.lock().map_err(|_| broken())?;
        out.clear();
        let n = {
            let mut s = self.session()?;
            let n = if plain.is_empty() {
                0
            } else {
                s.tls.writer().write(plain)?
            };
            s.owed(&mut out);
            n
        };
        (&self.tcp).write_all(&out)?;
        Ok(n)
    }
}

fn broken() -> io::Error {
    io::Error::other("TLS session broken by a failed thread")
}

impl Read for TlsStream {
    /// Plaintext from the server; `Ok(0)` at its end. An end without TLS's close_notify is
    /// taken as an end too: chatd's frames carry their length, so a cut is still seen (as a
    /// frame cut short) by the deframer above.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            let mut s = self.session()?;
            match s.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if !s.unread.is_empty() {
                let fed = s.feed();
                self.settle(s);
                fed?;
                continue;
            }
            drop(s);
            // Timeouts and interruptions surface here, with the session untouched.
            let n = (&self.tcp).read(&mut chunk)?;
            let mut s = self.session()?;
            if n == 0 {
                let ended = s.end();
                self.settle(s);
                ended?;
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
        if buf.is_empty() {
            return Ok(0);
        }
        self.send(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send(&[]).map(|_| ())
    }
}
