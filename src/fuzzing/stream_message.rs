//! Fuzz body for what a room's JetStream stream hands back (`src/jetstream/frames.rs`): any
//! author header and payload, since anyone with access to the subject can publish there.
//!
//! The promises: the result is always one whole MSG frame of the room, with the seq and time
//! the stream gave, a valid author and a non-empty text within `max_frame`; a message chatd
//! would have stored comes out exactly as it went in, and anything else as the placeholder.
//! It must never panic for any other reason.

use crate::jetstream::frames::{UNREADABLE_TEXT, UNREADABLE_USER, msg_frame, user_and_text};
use crate::protocol::codec::{msg_length, parse_server};
use crate::protocol::name::is_valid_user;
use crate::protocol::{Decoded, Deframer, ServerFrame, encode_server};

/// The input: a control byte (bit 0: an author header is present; bit 1: a small
/// `max_frame` of 64), then the author up to the first zero byte, then the payload.
///
/// # Panics
/// When a promise in the module documentation is broken.
pub fn stream_message(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let max_frame = if control & 2 == 0 { 65536 } else { 64 };
    let (user, payload) = match rest.iter().position(|&b| b == 0) {
        Some(at) if control & 1 == 1 => (
            std::str::from_utf8(rest.get(..at).unwrap_or_default()).ok(),
            rest.get(at + 1..).unwrap_or_default(),
        ),
        _ => (None, rest),
    };
    let room = "#fuzz";
    let frame = msg_frame(room, 42, 7, user, payload, max_frame);
    let Ok(Decoded::Frame(raw)) = Deframer::for_client(u32::MAX).next(&frame) else {
        panic!("not one whole frame: {frame:?}");
    };
    assert_eq!(raw.wire_len, frame.len(), "one frame, nothing after it");
    let Ok(ServerFrame::Msg {
        room: got_room,
        seq,
        ts_ms,
        user: got_user,
        text,
    }) = parse_server(&raw)
    else {
        panic!("not a MSG: {frame:?}");
    };
    assert_eq!((got_room, seq, ts_ms), (room, 42, 7));
    assert!(is_valid_user(got_user) && !text.is_empty());
    let storable = user.is_some_and(is_valid_user)
        && std::str::from_utf8(payload).is_ok_and(|t| {
            !t.is_empty()
                && user.is_some_and(|u| {
                    u32::try_from(msg_length(room, u, t)).is_ok_and(|len| len <= max_frame)
                })
        });
    if storable {
        assert_eq!((Some(got_user), text.as_bytes()), (user, payload));
    } else {
        assert_eq!((got_user, text), (UNREADABLE_USER, UNREADABLE_TEXT));
    }
    // Reading a submitted frame back never panics, and what it finds is what a MSG with that
    // author and text carries.
    if let Some((u, t)) = user_and_text(rest) {
        let mut again = Vec::new();
        let msg = ServerFrame::Msg {
            room,
            seq: 0,
            ts_ms: 0,
            user: u,
            text: t,
        };
        encode_server(&msg, &mut again);
        assert_eq!(user_and_text(&again), Some((u, t)));
    }
}
