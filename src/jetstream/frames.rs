//! A message as its stream keeps it, and the MSG frame a member receives made from it.
//!
//! The stream holds the text as the payload and the author in a header: readable with any
//! NATS tool, and free of chatd's wire format, whose seq and ts_ms only the stream can give.
//! Anyone with access to the subject can publish to it, so what comes back is checked like
//! input from a client; a message chatd would not have stored becomes a placeholder rather
//! than a hole, because members must see every seq.

use crate::batch_frames::Frame;
use crate::protocol::codec::{Deframer, msg_length, parse_server};
use crate::protocol::name::is_valid_user;
use crate::protocol::{Decoded, ServerFrame, encode_server};

/// The header naming the author of a message.
pub const USER_HEADER: &str = "Chatd-User";

/// Who a stored message is shown as when its stream holds something chatd did not write.
pub const UNREADABLE_USER: &str = "chatd";

/// The text shown instead.
pub const UNREADABLE_TEXT: &str = "[a message this server cannot show]";

/// The author and text of an unstamped MSG frame a reactor submitted.
pub fn user_and_text(frame: &[u8]) -> Option<(&str, &str)> {
    let Ok(Decoded::Frame(raw)) = Deframer::for_client(u32::MAX).next(frame) else {
        return None;
    };
    match parse_server(&raw) {
        Ok(ServerFrame::Msg { user, text, .. }) => Some((user, text)),
        _ => None,
    }
}

/// The MSG frame of message `seq` of `room`, or the placeholder if `user` and `payload` are
/// not a message chatd would have stored under a frame limit of `max_frame`.
pub fn msg_frame(
    room: &str,
    seq: u64,
    ts_ms: u64,
    user: Option<&str>,
    payload: &[u8],
    max_frame: u32,
) -> Frame {
    let fits = |user: &str, text: &str| {
        u32::try_from(msg_length(room, user, text)).is_ok_and(|len| len <= max_frame)
    };
    let (user, text) = match (user, std::str::from_utf8(payload)) {
        (Some(user), Ok(text)) if is_valid_user(user) && !text.is_empty() && fits(user, text) => {
            (user, text)
        }
        _ => (UNREADABLE_USER, UNREADABLE_TEXT),
    };
    let mut out = Vec::with_capacity(msg_length(room, user, text) + crate::protocol::HEADER_LEN);
    encode_server(
        &ServerFrame::Msg {
            room,
            seq,
            ts_ms,
            user,
            text,
        },
        &mut out,
    );
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(frame: &[u8]) -> (u64, u64, String, String) {
        let Ok(Decoded::Frame(raw)) = Deframer::for_client(u32::MAX).next(frame) else {
            panic!("not a frame: {frame:?}");
        };
        match parse_server(&raw) {
            Ok(ServerFrame::Msg {
                seq,
                ts_ms,
                user,
                text,
                ..
            }) => (seq, ts_ms, user.into(), text.into()),
            other => panic!("not a MSG: {other:?}"),
        }
    }

    #[test]
    fn a_submitted_frame_round_trips_through_the_stream() {
        let mut submitted = Vec::new();
        encode_server(
            &ServerFrame::Msg {
                room: "#r",
                seq: 0,
                ts_ms: 0,
                user: "alice",
                text: "héllo",
            },
            &mut submitted,
        );
        let (user, text) = user_and_text(&submitted).expect("a MSG");
        assert_eq!((user, text), ("alice", "héllo"));
        let frame = msg_frame("#r", 7, 1234, Some(user), text.as_bytes(), 65536);
        assert_eq!(parsed(&frame), (7, 1234, "alice".into(), "héllo".into()));
    }

    #[test]
    fn what_chatd_would_not_store_becomes_the_placeholder() {
        let placeholder = (3, 9, UNREADABLE_USER.into(), UNREADABLE_TEXT.into());
        for (user, payload) in [
            (None, &b"no author"[..]),
            (Some("bad user!"), b"text"),
            (Some("bob"), b""),
            (Some("bob"), b"\xff\xfe not utf-8"),
            (Some("bob"), &[b'x'; 5000][..]),
        ] {
            let frame = msg_frame("#r", 3, 9, user, payload, 4096);
            assert_eq!(parsed(&frame), placeholder, "{user:?}");
        }
        assert!(user_and_text(b"\x00\x00\x00\x01\x85").is_none());
        assert!(user_and_text(b"").is_none());
    }
}
