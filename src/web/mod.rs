//! The web listener's protocols, I/O-free: HTTP/1.1 request heads (the embedded web client's
//! files and the WebSocket upgrade) and RFC 6455 WebSocket framing that carries protocol v1
//! frames between a browser and the very same session a TCP client gets.
//!
//! `http` decides what a request gets (`upgrade` for the handshake, `origin` for whose page
//! may connect, `response` and `assets` for what is sent back). `frame` reads client frames
//! and writes server frames, `close` knows the status codes, `message` follows messages
//! across frames in both directions, and `conn` puts them together into the per-connection
//! state the reactor keeps. Nothing here touches a socket, a clock or the disk, so tests and
//! fuzzers drive it with bytes; it must never allocate per idle connection, never block, and
//! never trust a length from the wire before checking it.

pub mod assets;
pub mod client;
pub mod close;
pub mod conn;
pub mod frame;
pub mod http;
pub mod message;
pub mod origin;
pub mod response;
pub mod upgrade;

pub use assets::Asset;
pub use client::WebSettings;
pub use close::CloseReason;
pub use conn::WsConn;
pub use frame::{Frame, Header, Opcode};
pub use http::{Decision, Site, decide};
pub use message::{Assembler, Boundary, Event, Wrapper};

#[cfg(test)]
mod frame_tests;
#[cfg(test)]
mod http_tests;
