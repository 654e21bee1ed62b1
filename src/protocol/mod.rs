//! The wire protocol, version 1: frame types, names, and the codec.
//!
//! Everything here is pure: bytes in, frames out, and frames in, bytes out. No I/O, no clocks,
//! no allocation that input can make unbounded. The daemon, the client, the benchmark and the
//! fuzzer all speak through this module, so it must never panic on any input.

pub mod codec;
pub mod frame;
pub mod name;

pub use codec::{Decoded, Deframer, Reader, encode_client, encode_server};
pub use frame::{ClientFrame, ErrorCode, ServerFrame, kind};

/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;

/// Default and ceiling-free maximum frame length (kind byte plus body).
pub const DEFAULT_MAX_FRAME: u32 = 65_536;

/// The 4-byte big-endian length prefix.
pub const HEADER_LEN: usize = 4;

#[cfg(test)]
mod codec_tests;
