//! How a connection's bytes travel between its socket and its session: in the clear, or
//! through TLS. The session never learns which; the reactor's connection code (`reactor::conn`)
//! moves bytes through the transport it was accepted with.
//!
//! Each transport keeps the partial frame carried over between reads, so a plain connection
//! pays nothing for the other transports: its variant is that buffer alone, and the enum is
//! no larger than it (the TLS variant is one pointer, tucked into the buffer's niche). A
//! transport must never do socket I/O itself: it turns bytes into bytes, so tests and fuzzers
//! can drive it.

pub mod tls;

pub use tls::TlsConn;

// The plain variant must cost a plain connection nothing beyond its input buffer.
const _: () = assert!(std::mem::size_of::<Transport>() == std::mem::size_of::<Vec<u8>>());

/// A connection's transport.
pub enum Transport {
    /// In the clear; the buffer holds a partial frame carried over between reads, empty (and
    /// unallocated) almost always.
    Plain(Vec<u8>),
    Tls(Box<TlsConn>),
}

impl Transport {
    /// The TLS state, if this is a TLS connection.
    pub fn tls(&mut self) -> Option<&mut TlsConn> {
        match self {
            Transport::Plain(_) => None,
            Transport::Tls(tls) => Some(tls),
        }
    }

    /// The plaintext carried over between reads: the start of a frame not yet whole, or
    /// frames the session did not take yet.
    pub fn inbuf(&mut self) -> &mut Vec<u8> {
        match self {
            Transport::Plain(inbuf) => inbuf,
            Transport::Tls(tls) => &mut tls.inbuf,
        }
    }

    /// Whether this connection is still in its TLS handshake (no session bytes yet).
    pub fn is_handshaking(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(tls) => tls.is_handshaking(),
        }
    }
}
