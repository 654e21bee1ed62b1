//! chatd: a low-footprint chat daemon on readiness-based I/O.
//!
//! The crate is laid out the way a message travels: `protocol` turns bytes into frames,
//! `session` is a connection's I/O-free state machine, `reactor` owns the sockets and the mio
//! event loop, `sequencer` gives each message its place in its room, and `room` holds the
//! in-memory ring every reactor fans out from. `transport` carries a connection's bytes in the
//! clear or through TLS, and `web` speaks HTTP and WebSocket to browsers. `auth` and `datadir`
//! keep what lives on disk.

// No unsafe code, but for `fork()` in `fork::daemon`, allowed at that call with its argument.
#![deny(unsafe_code)]

pub mod access;
pub mod auth;
pub mod batch_frames;
pub mod cli;
pub mod client;
pub mod config;
pub mod config_file;
pub mod datadir;
pub mod dedupe;
pub mod fork;
#[doc(hidden)]
pub mod fuzzing;
pub mod jetstream;
pub mod mailbox;
pub mod metrics;
pub mod presence;
pub mod privilege;
pub mod protocol;
pub mod published;
pub mod reactor;
pub mod room;
pub mod sequencer;
pub mod server;
pub mod session;
pub mod shared;
pub mod store;
pub mod threads;
pub mod tls;
pub mod transport;
pub mod watched;
pub mod web;
