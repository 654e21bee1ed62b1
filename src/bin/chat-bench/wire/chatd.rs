//! chatd's side of the `Wire`: HELLO/WELCOME, JOIN/JOINED, SEND/ACK, MSG, in the binary frames
//! of protocol v1. Requests are encoded by the daemon's own codec, and so is every frame but
//! one parsed; MSG, the frame that arrives once per delivery, is cut here by its header and
//! length fields alone, so that a delivery costs the bench a few header reads rather than a
//! full validating parse (the bench must not be what limits a fanout run). The header is judged as strictly as the daemon's `Deframer` does
//! (zero or oversized length, a kind a server does not send) and a MSG whose length fields run
//! past its body is an error: a bad frame is reported, never skipped. What is not checked is
//! whether the names and the text are UTF-8: the bench reads only the stamp at the front of
//! the text, as ASCII digits.

use chatd::client::CLIENT_MAX_FRAME;
use chatd::protocol::codec::{RawFrame, parse_server};
use chatd::protocol::{ClientFrame, ErrorCode, HEADER_LEN, ServerFrame, encode_client, kind};

use std::ops::RangeInclusive;

use super::{Creds, In, Wire};

pub struct Chatd {
    creds: Creds,
    next_id: u64,
}

impl Chatd {
    pub fn new(creds: Creds) -> Chatd {
        Chatd { creds, next_id: 1 }
    }
}

impl Wire for Chatd {
    fn hello(&mut self, out: &mut Vec<u8>) {
        let hello = ClientFrame::Hello {
            version: chatd::protocol::VERSION,
            user: &self.creds.user,
            token: &self.creds.token,
            client: 0,
        };
        encode_client(&hello, out);
    }

    fn subscribe(&mut self, room: &str, out: &mut Vec<u8>) {
        let join = ClientFrame::Join {
            room,
            after: 0,
            limit: 0,
        };
        encode_client(&join, out);
    }

    fn publish(&mut self, room: &str, text: &str, out: &mut Vec<u8>) {
        let id = self.next_id;
        self.next_id += 1;
        encode_client(&ClientFrame::Send { room, id, text }, out);
    }

    fn publisher_subscribes(&self) -> bool {
        true
    }

    fn parse(
        &mut self,
        buf: &[u8],
        _out: &mut Vec<u8>,
        on: &mut dyn FnMut(In<'_>),
    ) -> Result<usize, String> {
        let mut used = 0;
        loop {
            let rest = buf.get(used..).unwrap_or_default();
            let (kind_byte, body) = match frame(rest) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(used),
                Err(why) => return Err(format!("bad frame from chatd: {why}")),
            };
            used += HEADER_LEN + 1 + body.len();
            if kind_byte == kind::MSG {
                on(In::Message(msg_text(body)?));
                continue;
            }
            let raw = RawFrame {
                kind: kind_byte,
                body,
                wire_len: HEADER_LEN + 1 + body.len(),
            };
            let frame = parse_server(&raw).map_err(|e| format!("bad frame: {}", e.reason))?;
            on(match frame {
                ServerFrame::Welcome { .. } => In::Ready,
                ServerFrame::Joined { .. } => In::Subscribed,
                ServerFrame::Msg { text, .. } => In::Message(text.as_bytes()),
                ServerFrame::Ack { .. } => In::Ack,
                ServerFrame::Error { code, message, .. } => {
                    let name = ErrorCode::from_u16(code).map_or("?", |c| c.name());
                    In::Error(format!("{name}: {message}"))
                }
                _ => In::Other,
            });
        }
    }
}

/// The kinds a server sends (`kind::is_server`, kept here so that the check stays inline).
const SERVER_KINDS: RangeInclusive<u8> = kind::WELCOME..=kind::ERROR;

/// The kind and body of the frame at the front of `buf`, `None` until all of it is there. Its
/// header is judged as soon as the bytes show it: a zero length or one over
/// `CLIENT_MAX_FRAME` after 4 bytes, a kind a server does not send after 5.
///
/// # Errors
/// What is wrong with a header no chatd sends.
fn frame(buf: &[u8]) -> Result<Option<(u8, &[u8])>, &'static str> {
    let Some((header, rest)) = buf.split_first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let length = u32::from_be_bytes(*header);
    if length == 0 {
        return Err("length 0");
    }
    if length > CLIENT_MAX_FRAME {
        return Err("length over the client's max_frame");
    }
    let Some((&kind_byte, rest)) = rest.split_first() else {
        return Ok(None);
    };
    if !SERVER_KINDS.contains(&kind_byte) {
        return Err("not a server kind");
    }
    // The length counts the kind byte; it is at most CLIENT_MAX_FRAME, so it fits a usize.
    let body_len = usize::try_from(length - 1).map_err(|_| "length over usize")?;
    Ok(rest.get(..body_len).map(|body| (kind_byte, body)))
}

/// The text of a MSG body: room (u16 length + bytes), seq, ts_ms, user (u16 length + bytes),
/// then the text to the end of the body.
///
/// # Errors
/// A length field that runs past the body.
fn msg_text(body: &[u8]) -> Result<&[u8], String> {
    let bad = || "bad MSG from chatd: a field runs past the body".to_string();
    let after_room = skip_str(body).ok_or_else(bad)?;
    let after_stamps = after_room.get(16..).ok_or_else(bad)?;
    skip_str(after_stamps).ok_or_else(bad)
}

/// What follows the `str` field (u16 length, then the bytes) at the front of `body`.
fn skip_str(body: &[u8]) -> Option<&[u8]> {
    let (len, rest) = body.split_first_chunk::<2>()?;
    rest.get(usize::from(u16::from_be_bytes(*len))..)
}

#[cfg(test)]
mod tests {
    use chatd::protocol::{Decoded, Deframer, encode_server};
    use proptest::prelude::*;

    use super::*;

    fn msg<'a>(room: &'a str, user: &'a str, text: &'a str) -> ServerFrame<'a> {
        ServerFrame::Msg {
            room,
            seq: 7,
            ts_ms: 9,
            user,
            text,
        }
    }

    /// What `parse` made of `reads`, fed one after the other into a buffer that keeps what a
    /// parse left, as the driver does.
    fn events(reads: &[&[u8]]) -> Result<(Vec<String>, usize), String> {
        let mut wire = Chatd::new(Creds::default());
        let (mut buf, mut got) = (Vec::new(), Vec::new());
        for r in reads {
            buf.extend_from_slice(r);
            let used = wire.parse(&buf, &mut Vec::new(), &mut |e| got.push(format!("{e:?}")))?;
            buf.drain(..used);
        }
        Ok((got, buf.len()))
    }

    /// A session's worth of server frames, with a MSG whose text is not UTF-8 and one whose
    /// text is empty.
    fn session() -> (Vec<u8>, Vec<String>) {
        let mut all = Vec::new();
        let welcome = ServerFrame::Welcome {
            version: 1,
            epoch: 1,
            session: 2,
            max_frame: 1 << 20,
            idle_timeout_ms: 0,
            server: "chatd",
        };
        encode_server(&welcome, &mut all);
        let joined = ServerFrame::Joined {
            room: "r",
            first: 1,
            head: 0,
        };
        encode_server(&joined, &mut all);
        encode_server(&msg("r", "bo", "1 1 5 xx"), &mut all);
        encode_server(&msg("a-room", "", ""), &mut all);
        encode_server(&msg("", "u", "ab"), &mut all);
        let tail = all.len();
        if let Some(t) = all.get_mut(tail - 2..) {
            t.copy_from_slice(&[0xff, 0xfe]);
        }
        encode_server(&ServerFrame::Ack { id: 1, seq: 1 }, &mut all);
        let refusal = ServerFrame::Error {
            code: ErrorCode::NotJoined.as_u16(),
            reference: 0,
            message: "no",
        };
        encode_server(&refusal, &mut all);
        let want = [
            "Ready".to_string(),
            "Subscribed".into(),
            format!("Message({:?})", b"1 1 5 xx"),
            "Message([])".into(),
            "Message([255, 254])".into(),
            "Ack".into(),
            "Error(\"NOT_JOINED: no\")".into(),
        ];
        (all, want.to_vec())
    }

    #[test]
    fn a_session_parses_whole_and_split_across_reads_at_every_byte() {
        let (all, want) = session();
        assert_eq!(events(&[&all]), Ok((want.clone(), 0)));
        for cut in 0..=all.len() {
            let (a, b) = all.split_at(cut);
            assert_eq!(events(&[a, b]), Ok((want.clone(), 0)), "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(events(&bytes), Ok((want, 0)), "a byte per read");
    }

    #[test]
    fn a_partial_frame_waits_and_is_not_consumed() {
        let mut all = Vec::new();
        encode_server(&msg("r", "u", "1 2 3 "), &mut all);
        for cut in 0..all.len() {
            assert_eq!(
                events(&[all.get(..cut).unwrap_or_default()]),
                Ok((vec![], cut))
            );
        }
    }

    #[test]
    fn a_bad_header_is_an_error_as_soon_as_its_bytes_are_in() {
        for (bytes, what) in [
            (&[0, 0, 0, 0][..], "zero length"),
            (&[0x01, 0, 0, 1], "over CLIENT_MAX_FRAME"),
            (&[0, 0, 0, 9, kind::SEND], "a client kind"),
            (&[0, 0, 0, 9, 0x88], "an unknown kind"),
            (&[0, 0, 0, 9, 0x80], "below the server kinds"),
        ] {
            assert!(events(&[bytes]).is_err(), "{what}");
        }
    }

    #[test]
    fn a_msg_whose_fields_run_past_its_body_is_an_error() {
        let mut good = Vec::new();
        encode_server(&msg("room", "user", ""), &mut good);
        assert_eq!(events(&[&good]), Ok((vec!["Message([])".into()], 0)));
        // Room length 5, user length 5, or the body cut into the stamps: each runs past.
        for (at, byte) in [(HEADER_LEN + 2, 5), (HEADER_LEN + 1 + 2 + 4 + 16 + 1, 5)] {
            let mut bad = good.clone();
            if let Some(b) = bad.get_mut(at) {
                *b = byte;
            }
            assert!(events(&[&bad]).is_err(), "length byte at {at}");
        }
        for body in [
            &[][..],
            &[0],
            &[0, 0, 1, 2, 3],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            let mut bad = u32::try_from(body.len() + 1)
                .unwrap_or(0)
                .to_be_bytes()
                .to_vec();
            bad.push(kind::MSG);
            bad.extend_from_slice(body);
            assert!(events(&[&bad]).is_err(), "body {body:?}");
        }
    }

    proptest! {
        /// The daemon's own codec is the oracle: whatever header comes, where its deframer
        /// refuses it so does the bench, where it waits so does the bench, and where it finds
        /// a frame the bench finds the same one.
        #[test]
        fn frames_agree_with_the_daemons_deframer(
            length in prop_oneof![0u32..80, Just(CLIENT_MAX_FRAME), Just(CLIENT_MAX_FRAME + 1), any::<u32>()],
            kind_byte in prop_oneof![0x7fu8..0x89, any::<u8>()],
            body in proptest::collection::vec(any::<u8>(), 0..80),
            cut in 0usize..100,
        ) {
            let mut buf = length.to_be_bytes().to_vec();
            buf.push(kind_byte);
            buf.extend_from_slice(&body);
            buf.truncate(cut);
            let ours = frame(&buf);
            match Deframer::for_client(CLIENT_MAX_FRAME).next(&buf) {
                Err(_) => prop_assert!(ours.is_err()),
                Ok(Decoded::NeedMore) => prop_assert_eq!(ours, Ok(None)),
                Ok(Decoded::Frame(raw)) => {
                    prop_assert_eq!(ours, Ok(Some((raw.kind, raw.body))));
                    prop_assert_eq!(raw.wire_len, HEADER_LEN + 1 + raw.body.len());
                }
            }
        }

        /// A MSG body the daemon's codec parses gives the bench the same text; one whose
        /// fields it finds running past the body, the bench refuses too. (The daemon also
        /// refuses names and text that are not UTF-8, which the bench does not look at.)
        #[test]
        fn msg_bodies_agree_with_the_daemons_codec(
            room_len in 0u16..6,
            user_len in 0u16..6,
            middle in proptest::collection::vec(any::<u8>(), 18..30),
            tail in proptest::collection::vec(any::<u8>(), 0..10),
            cut in 0usize..60,
        ) {
            let mut body = room_len.to_be_bytes().to_vec();
            body.extend_from_slice(&middle);
            if let Some(at) = body.get_mut(2 + usize::from(room_len) + 16..) {
                let len = user_len.to_be_bytes();
                for (b, l) in at.iter_mut().zip(len) {
                    *b = l;
                }
            }
            body.extend_from_slice(&tail);
            body.truncate(cut);
            let raw = RawFrame { kind: kind::MSG, body: &body, wire_len: 0 };
            match parse_server(&raw) {
                Ok(ServerFrame::Msg { text, .. }) => prop_assert_eq!(msg_text(&body), Ok(text.as_bytes())),
                Ok(other) => prop_assert!(false, "a MSG body parsed as {:?}", other),
                Err(e) if e.reason.contains("UTF-8") => {}
                Err(_) => prop_assert!(msg_text(&body).is_err()),
            }
        }

        #[test]
        fn every_msg_gives_back_its_text(room in ".{0,8}", user in ".{0,8}", text in ".{0,40}") {
            let mut wire = Vec::new();
            encode_server(&msg(&room, &user, &text), &mut wire);
            let raw = frame(&wire).ok().flatten();
            prop_assert_eq!(raw.map(|(_, body)| HEADER_LEN + 1 + body.len()), Some(wire.len()));
            prop_assert_eq!(raw.map(|(_, body)| msg_text(body)), Some(Ok(text.as_bytes())));
        }
    }
}
