//! How a connection's bytes travel between its socket and its session: in the clear, through
//! TLS, or inside WebSocket messages (`crate::web`) in the clear or through TLS. The session
//! never learns which; the reactor's connection code (`reactor::conn`)
//! moves bytes through the transport it was accepted with.
//!
//! Each transport keeps the partial frame carried over between reads, so a plain connection
//! pays nothing for the other transports: its variant is that buffer alone, and the enum is
//! no larger than it (the TLS variant is one pointer, tucked into the buffer's niche). A
//! transport must never do socket I/O itself: it turns bytes into bytes, so tests and fuzzers
//! can drive it.

pub mod tls;

pub use tls::TlsConn;

use crate::web::WsConn;
use crate::web::conn::Phase;

// The plain variant must cost a plain connection nothing beyond its input buffer.
const _: () = assert!(std::mem::size_of::<Transport>() == std::mem::size_of::<Vec<u8>>());

/// A connection's transport.
pub enum Transport {
    /// In the clear; the buffer holds a partial frame carried over between reads, empty (and
    /// unallocated) almost always.
    Plain(Vec<u8>),
    Tls(Box<TlsConn>),
    /// A web listener's connection: HTTP, then WebSocket.
    Web(Box<WsConn>),
    /// The same through TLS (HTTPS).
    WebTls(Box<WebTls>),
}

/// A web connection inside TLS: TLS below, the web state above it. The TLS state's own input
/// buffer stays empty; the session's partial frame is kept by the web state.
pub struct WebTls {
    pub tls: TlsConn,
    pub ws: WsConn,
}

impl Transport {
    /// The TLS state, if this is a TLS connection.
    pub fn tls(&mut self) -> Option<&mut TlsConn> {
        match self {
            Transport::Plain(_) | Transport::Web(_) => None,
            Transport::Tls(tls) => Some(tls),
            Transport::WebTls(web) => Some(&mut web.tls),
        }
    }

    /// The web state, if this came in on a web listener.
    pub fn ws(&mut self) -> Option<&mut WsConn> {
        match self {
            Transport::Plain(_) | Transport::Tls(_) => None,
            Transport::Web(ws) => Some(ws),
            Transport::WebTls(web) => Some(&mut web.ws),
        }
    }

    /// Whether the connection speaks TLS (for the metrics).
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_) | Transport::WebTls(_))
    }

    /// Whether the connection is a WebSocket (past its upgrade; for the metrics).
    pub fn is_websocket(&self) -> bool {
        let ws = match self {
            Transport::Plain(_) | Transport::Tls(_) => return false,
            Transport::Web(ws) => ws,
            Transport::WebTls(web) => &web.ws,
        };
        matches!(ws.phase(), Phase::Open | Phase::Closing)
    }

    /// Takes out the plaintext carried over between reads (the start of a frame not yet
    /// whole, or frames the session did not take yet), to be given back with
    /// [`put_inbuf`](Transport::put_inbuf).
    pub fn take_inbuf(&mut self) -> Vec<u8> {
        match self {
            Transport::Plain(inbuf) => std::mem::take(inbuf),
            Transport::Tls(tls) => std::mem::take(&mut tls.inbuf),
            Transport::Web(ws) => ws.take_inbuf(),
            Transport::WebTls(web) => web.ws.take_inbuf(),
        }
    }

    /// Gives the carried-over plaintext back; an empty buffer's memory is freed, so that an
    /// idle connection holds none.
    pub fn put_inbuf(&mut self, inbuf: Vec<u8>) {
        let inbuf = if inbuf.is_empty() { Vec::new() } else { inbuf };
        match self {
            Transport::Plain(kept) => *kept = inbuf,
            Transport::Tls(tls) => tls.inbuf = inbuf,
            Transport::Web(ws) => ws.put_inbuf(inbuf),
            Transport::WebTls(web) => web.ws.put_inbuf(inbuf),
        }
    }

    /// Whether plaintext is waiting for the session.
    pub fn has_inbuf(&self) -> bool {
        match self {
            Transport::Plain(inbuf) => !inbuf.is_empty(),
            Transport::Tls(tls) => !tls.inbuf.is_empty(),
            Transport::Web(ws) => ws.has_inbuf(),
            Transport::WebTls(web) => web.ws.has_inbuf(),
        }
    }

    /// Whether this connection is still in its TLS handshake (no session bytes yet).
    pub fn is_handshaking(&self) -> bool {
        match self {
            Transport::Plain(_) | Transport::Web(_) => false,
            Transport::Tls(tls) => tls.is_handshaking(),
            Transport::WebTls(web) => web.tls.is_handshaking(),
        }
    }
}
