//! How a connection's bytes travel between its socket and its session: in the clear, or
//! through TLS. The session never learns which; the reactor's connection code (`reactor::conn`)
//! moves bytes through the transport it was accepted with.
//!
//! A plain connection pays nothing for the other transports: the enum is one pointer wide and
//! its plain variant holds nothing. A transport must never do socket I/O itself: it turns
//! bytes into bytes, so tests and fuzzers can drive it.

pub mod tls;

pub use tls::TlsConn;

/// A connection's transport.
pub enum Transport {
    Plain,
    Tls(Box<TlsConn>),
}

impl Transport {
    /// The TLS state, if this is a TLS connection.
    pub fn tls(&mut self) -> Option<&mut TlsConn> {
        match self {
            Transport::Plain => None,
            Transport::Tls(tls) => Some(tls),
        }
    }

    /// Whether this connection is still in its TLS handshake (no session bytes yet).
    pub fn is_handshaking(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(tls) => tls.is_handshaking(),
        }
    }
}
