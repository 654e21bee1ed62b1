//! The wire protocol, versions 1 and 2: frame types, names, and the codec.
//!
//! Everything here is pure: bytes in, frames out, and frames in, bytes out. No I/O, no clocks,
//! no allocation that input can make unbounded. The daemon, the client, the benchmark and the
//! fuzzer all speak through this module, so it must never panic on any input.

pub mod codec;
pub mod frame;
pub mod name;

pub use codec::{Decoded, Deframer, Reader, encode_client, encode_server};
pub use frame::{ClientFrame, ErrorCode, ServerFrame, UserList, Version, kind};

/// The protocol version the benchmark and the tests' helpers speak, and all the fork model
/// speaks: version 1. The `chat` client asks for version 2 and falls back to this one; the
/// server speaks every [`Version`].
pub const VERSION: u8 = 1;

/// Default maximum frame length (kind byte plus body).
pub const DEFAULT_MAX_FRAME: u32 = 65_536;

/// The largest `max_frame` any configuration may set (16 MiB): what `--max-frame` accepts at
/// most, what a client accepts before it learns the server's limit, and what bounds a log
/// record. One constant, so the three can never disagree.
pub const MAX_FRAME_CEILING: u32 = 16 << 20;

/// The 4-byte big-endian length prefix.
pub const HEADER_LEN: usize = 4;

/// The first seq to send after a JOIN: replay `(max(after, head - limit), head]`, clamped to
/// what is retained, and an `after` beyond head counts as head so live delivery starts at
/// head + 1. When nothing is retained (`first == 0`), only live messages follow.
///
/// The server and every client that resumes compute it the same way, so it lives with the
/// protocol rather than with either side.
pub fn replay_start(after: u64, limit: u32, first: u64, head: u64) -> u64 {
    let from = if limit == u32::MAX {
        after
    } else {
        after.max(head.saturating_sub(u64::from(limit)))
    };
    // first == 0 with head > 0: retention deleted everything; only live messages remain.
    let retained_from = if first == 0 { head + 1 } else { first };
    (from.min(head) + 1).max(retained_from)
}

#[cfg(test)]
mod codec_tests;
