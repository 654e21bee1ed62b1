//! TLS under a session, on rustls's unbuffered API: ciphertext in, plaintext out to the
//! session, and the session's frames sealed into records on the way back.
//!
//! Nothing here touches a socket, so tests and a fuzzer can drive it with bytes. The
//! connection's own memory is the rustls state plus two byte queues that are empty (and
//! unallocated) almost always: `rx`, a record that arrived in part, and `tx`, ciphertext the
//! socket refused. Decryption and encryption run in buffers the reactor lends for the call.
//! It must never hold more than one partial record of input, never buffer plaintext the
//! session did not ask for, and never let one connection's handshake run unbounded.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};

/// Largest TLS record: 16 KiB of plaintext plus header, content type, tag and padding slack.
pub const MAX_RECORD: usize = 16 * 1024 + 256;

/// Plaintext sealed per write: four full records, so a busy member's frames leave in few
/// records and one `write` call, while the ciphertext stays within the reactor's scratch.
pub const SEAL_CHUNK: usize = 4 * 16 * 1024;

/// Why a TLS connection failed, for the metrics and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The peer sent something that is not TLS (plaintext to a TLS port, say).
    NotTls,
    /// The peer refused us with an alert (our certificate, usually).
    Alert,
    /// No protocol version, cipher suite or ALPN protocol in common.
    Incompatible,
    /// The peer closed the connection mid-handshake.
    Eof,
    /// The handshake took longer than `--handshake-timeout`.
    Timeout,
    /// Anything else rustls refused.
    Other,
}

impl Failure {
    pub const ALL: [Failure; 6] = [
        Failure::NotTls,
        Failure::Alert,
        Failure::Incompatible,
        Failure::Eof,
        Failure::Timeout,
        Failure::Other,
    ];

    /// The label operators see in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Failure::NotTls => "not_tls",
            Failure::Alert => "alert",
            Failure::Incompatible => "incompatible",
            Failure::Eof => "eof",
            Failure::Timeout => "timeout",
            Failure::Other => "other",
        }
    }

    fn of(e: &rustls::Error) -> Failure {
        use rustls::Error;
        match e {
            Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => Failure::NotTls,
            Error::AlertReceived(_) => Failure::Alert,
            Error::PeerIncompatible(_) | Error::NoApplicationProtocol => Failure::Incompatible,
            _ => Failure::Other,
        }
    }
}

/// A TLS error: what to count it as, and rustls's words for the log.
#[derive(Debug, Clone)]
pub struct TlsError {
    pub failure: Failure,
    pub detail: String,
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> TlsError {
        TlsError {
            failure: Failure::of(&e),
            detail: e.to_string(),
        }
    }
}

/// What one pass over received ciphertext found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    /// Bytes at the front of the input that are done with; the rest is a partial record.
    pub consumed: usize,
    /// The peer sent close_notify: no more plaintext will come.
    pub peer_closed: bool,
}

/// One TLS connection's state.
pub struct TlsConn {
    conn: UnbufferedServerConnection,
    /// Ciphertext of a record that has arrived in part.
    pub rx: Vec<u8>,
    /// Ciphertext the socket has not taken yet; sent before anything newer.
    pub tx: Vec<u8>,
    /// Decrypted bytes the session has not taken yet (a partial frame, usually).
    pub inbuf: Vec<u8>,
    /// Why the connection failed, once it has: read when the reactor closes it.
    pub failure: Option<Failure>,
    close_notify_sent: bool,
}

impl TlsConn {
    /// A server-side connection that will present `config`'s certificate.
    ///
    /// # Errors
    /// rustls refused the configuration.
    pub fn new(config: Arc<ServerConfig>) -> Result<TlsConn, TlsError> {
        Ok(TlsConn {
            conn: UnbufferedServerConnection::new(config)?,
            rx: Vec::new(),
            tx: Vec::new(),
            inbuf: Vec::new(),
            failure: None,
            close_notify_sent: false,
        })
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Processes the ciphertext in `incoming`: handshake records answered into `out`,
    /// application data decrypted and handed to `deliver` record by record. Stops at the end
    /// of the whole records; the caller keeps `incoming[consumed..]` for the next call.
    ///
    /// # Errors
    /// The peer broke the protocol or the handshake failed; the connection is over.
    pub fn receive(
        &mut self,
        incoming: &mut [u8],
        out: &mut Vec<u8>,
        mut deliver: impl FnMut(&[u8]),
    ) -> Result<Received, TlsError> {
        let mut received = Received::default();
        loop {
            let rest = incoming.get_mut(received.consumed..).unwrap_or_default();
            let status = self.conn.process_tls_records(rest);
            let mut discard = status.discard;
            let done = match status.state? {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record?;
                        discard += record.discard;
                        deliver(record.payload);
                    }
                    false
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_into(out, |buf| encode.encode(buf))?;
                    false
                }
                // The records are in `out`; the caller writes them right after this call.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    false
                }
                ConnectionState::PeerClosed => {
                    received.peer_closed = true;
                    false
                }
                // Waiting for more ciphertext, or caught up: either way, all whole records are
                // processed.
                ConnectionState::BlockedHandshake
                | ConnectionState::WriteTraffic(_)
                | ConnectionState::Closed => true,
                // Early data is off (max_early_data_size is 0); anything else is new to us.
                _ => {
                    return Err(TlsError {
                        failure: Failure::Other,
                        detail: "unexpected TLS connection state".into(),
                    });
                }
            };
            received.consumed += discard;
            if done {
                return Ok(received);
            }
        }
    }

    /// Encrypts `plaintext` into records appended to `out`.
    ///
    /// # Errors
    /// The connection cannot send application data (not established, or closed).
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), TlsError> {
        // Each record adds a header, a content type and a tag: ask for room for all of them.
        let records = plaintext.len() / (16 * 1024) + 1;
        let room = plaintext.len() + records * 64;
        self.with_write(out, |traffic, out| {
            encrypt_into(out, room, |buf| traffic.encrypt(plaintext, buf))
        })
    }

    /// Appends a close_notify alert to `out`, once.
    ///
    /// # Errors
    /// As [`seal`](TlsConn::seal).
    pub fn close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), TlsError> {
        if self.close_notify_sent || self.is_handshaking() {
            return Ok(());
        }
        self.close_notify_sent = true;
        self.with_write(out, |traffic, out| {
            encrypt_into(out, 64, |buf| traffic.queue_close_notify(buf))
        })
    }

    /// Runs `f` once the connection is in its writing state, first encoding anything rustls
    /// has queued (a key update, say) into `out`.
    fn with_write(
        &mut self,
        out: &mut Vec<u8>,
        f: impl FnOnce(
            &mut rustls::unbuffered::WriteTraffic<'_, rustls::server::ServerConnectionData>,
            &mut Vec<u8>,
        ) -> Result<(), TlsError>,
    ) -> Result<(), TlsError> {
        // Each pass either encodes a queued record or reaches the writing state; rustls
        // queues few records, so the bound is only a guard.
        for _ in 0..16 {
            match self.conn.process_tls_records(&mut []).state? {
                ConnectionState::WriteTraffic(mut traffic) => return f(&mut traffic, out),
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_into(out, |buf| encode.encode(buf))?;
                }
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                _ => break,
            }
        }
        Err(TlsError {
            failure: Failure::Other,
            detail: "the TLS connection cannot send now".into(),
        })
    }

    /// Heap bytes this connection holds in its queues (for tests of the footprint).
    pub fn queued_bytes(&self) -> usize {
        self.rx.capacity() + self.tx.capacity() + self.inbuf.capacity()
    }
}

/// Calls `encode` on the spare end of `out`, growing it once if rustls says it needs more.
fn encode_into(
    out: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), TlsError> {
    grow_and_retry(out, MAX_RECORD, |buf| match encode(buf) {
        Ok(n) => Ok(Ok(n)),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            Ok(Err(required_size))
        }
        Err(e) => Err(TlsError {
            failure: Failure::Other,
            detail: e.to_string(),
        }),
    })
}

/// Like [`encode_into`], for encryption.
fn encrypt_into(
    out: &mut Vec<u8>,
    room: usize,
    mut encrypt: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> Result<(), TlsError> {
    grow_and_retry(out, room, |buf| match encrypt(buf) {
        Ok(n) => Ok(Ok(n)),
        Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
            Ok(Err(required_size))
        }
        Err(e) => Err(TlsError {
            failure: Failure::Other,
            detail: e.to_string(),
        }),
    })
}

/// Offers `write` the spare end of `out` (at least `first` bytes); if it answers that it
/// needs `n` bytes, offers that much once more. Keeps exactly what was written.
fn grow_and_retry(
    out: &mut Vec<u8>,
    first: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<Result<usize, usize>, TlsError>,
) -> Result<(), TlsError> {
    let start = out.len();
    let mut room = first;
    for _ in 0..2 {
        out.resize(start + room, 0);
        let spare = out.get_mut(start..).unwrap_or_default();
        match write(spare) {
            Ok(Ok(n)) => {
                out.truncate(start + n);
                return Ok(());
            }
            Ok(Err(needed)) => room = needed,
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        }
    }
    out.truncate(start);
    Err(TlsError {
        failure: Failure::Other,
        detail: "rustls asked for more room than it said it needed".into(),
    })
}
