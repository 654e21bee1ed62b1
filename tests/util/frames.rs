//! Frame bytes built by hand, for tests that pipeline frames or put on the wire what a
//! well-behaved client never would, and the PING/PONG round trip the tests use as a barrier.

#![allow(dead_code)]

use chatd::client::{Client, Reply};
use chatd::protocol::{ClientFrame, encode_client};

/// The wire bytes of `frames`, back to back, for one write.
pub fn encode(frames: &[ClientFrame<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        encode_client(frame, &mut out);
    }
    out
}

/// A frame with any kind byte and any body: the length header is computed, nothing checked.
pub fn raw(kind: u8, body: &[u8]) -> Vec<u8> {
    let length = u32::try_from(body.len() + 1).expect("test frames are small");
    let mut out = length.to_be_bytes().to_vec();
    out.push(kind);
    out.extend_from_slice(body);
    out
}

/// A `str` field: u16 byte length, then the bytes as given (valid UTF-8 or not).
pub fn str_field(bytes: &[u8]) -> Vec<u8> {
    let len = u16::try_from(bytes.len()).expect("test strings are short");
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// Sends PING `nonce` and reads up to its PONG; returns every frame that came before it.
/// Frames the server queued before it read the PING arrive ahead of the PONG.
#[track_caller]
pub fn ping(c: &mut Client, nonce: u64) -> Vec<Reply> {
    c.send(&ClientFrame::Ping { nonce }).expect("send PING");
    let mut before = Vec::new();
    loop {
        match c.recv() {
            Ok(Some(Reply::Pong { nonce: got })) if got == nonce => return before,
            Ok(Some(other)) => before.push(other),
            Ok(None) => panic!("closed before PONG {nonce}; got {before:?}"),
            Err(e) => panic!("no PONG {nonce}: {e}; got {before:?}"),
        }
    }
}

/// Asserts the connection still answers and nothing else was pending on it.
#[track_caller]
pub fn assert_alive(c: &mut Client) {
    let before = ping(c, 0x5eed);
    assert!(
        before.is_empty(),
        "unexpected frames before PONG: {before:?}"
    );
}
