//! What a room is called in JetStream: its stream, its subject and its key in the `chatd`
//! bucket, derived from the room's name by one reversible encoding.
//!
//! Room names may hold `.` and `#`, which NATS names cannot (`.` separates subject tokens),
//! and `_`, which the encoding uses as its escape. Letters, digits and `-` stay as they are,
//! so an operator can read `ROOM__23general` as `#general`; every other byte becomes `_` and
//! two hex digits. The encoding must stay injective: two rooms must never share a stream.

/// The prefix of every room's stream.
pub const STREAM_PREFIX: &str = "ROOM_";

/// The prefix of every room's subject.
pub const SUBJECT_PREFIX: &str = "chatd.room.";

/// The prefix of the plain NATS subjects nodes tell each other who is in a room on
/// (`super::presence`): not a stream's, as presence is not kept.
pub const PRESENCE_PREFIX: &str = "chatd.presence.";

/// The bucket chatd keeps its epoch and its room markers in.
pub const BUCKET: &str = "chatd";

/// The key of the epoch in [`BUCKET`].
pub const EPOCH_KEY: &str = "epoch";

/// `room` with every byte but letters, digits and `-` written as `_XX`.
pub fn encode(room: &str) -> String {
    let mut out = String::with_capacity(room.len() + 8);
    for b in room.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push('_');
            out.push_str(&format!("{b:02X}"));
        }
    }
    out
}

/// The room's stream.
pub fn stream(room: &str) -> String {
    format!("{STREAM_PREFIX}{}", encode(room))
}

/// The subject the room's messages are published to.
pub fn subject(room: &str) -> String {
    format!("{SUBJECT_PREFIX}{}", encode(room))
}

/// The subject nodes send the room's rosters on.
pub fn presence(room: &str) -> String {
    format!("{PRESENCE_PREFIX}{}", encode(room))
}

/// The key that says this room has had a stream, so that a stream found missing later is
/// known as history that started over.
pub fn marker(room: &str) -> String {
    format!("room.{}", encode(room))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::name::is_valid_room_v2;

    #[test]
    fn names_are_readable_and_safe_for_nats() {
        assert_eq!(stream("#general"), "ROOM__23general");
        assert_eq!(subject("#a.b_c-d"), "chatd.room._23a_2Eb_5Fc-d");
        assert_eq!(marker("x"), "room.x");
        assert_eq!(presence("#a.b"), "chatd.presence._23a_2Eb");
        for room in ["#general", "a.b.c", "...", "#_#", "Z-9", "@alice+bob"] {
            assert!(is_valid_room_v2(room));
            let s = stream(room);
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{s}"
            );
            let subject = subject(room);
            assert_eq!(
                subject.matches('.').count(),
                2,
                "{subject}: one token per room"
            );
        }
    }

    #[test]
    fn distinct_rooms_never_share_a_stream() {
        // The escape itself is escaped, so `_23` and `#` cannot collide.
        let rooms = ["#a", "_23a", "_a", "__23a", ".a", "_2Ea", "a", "A"];
        let mut seen = std::collections::HashSet::new();
        for room in rooms {
            assert!(seen.insert(stream(room)), "{room} collides");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_encoding_is_injective(a in "[A-Za-z0-9._#-]{1,64}", b in "[A-Za-z0-9._#-]{1,64}") {
            proptest::prop_assert_eq!(a == b, encode(&a) == encode(&b));
        }
    }
}
