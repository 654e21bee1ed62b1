//! Tests of the codec against the wire contract (protocol v1): the exact bytes of every frame
//! kind, every error the decoder can report, and properties over arbitrary frames (of both
//! versions), arbitrary splits of a stream into reads, and arbitrary bytes. What version 2
//! added has its examples and errors in `codec_tests/v2.rs`.

mod v2;

use proptest::prelude::*;
use proptest::sample::Index;

use super::codec::{
    FrameError, RawFrame, clamp_str, msg_length, parse_client, parse_server, stamp_msg,
};
use super::{
    ClientFrame, DEFAULT_MAX_FRAME, Decoded, Deframer, ErrorCode, HEADER_LEN, ServerFrame,
    UserList, Version, encode_client, encode_server, kind,
};

/// Bytes from hex words; a word may hold several bytes ("0000000a" is four), so expected
/// encodings read field by field like a packet dump.
#[track_caller]
fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .flat_map(|word| word.as_bytes().chunks(2))
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("hex is ASCII");
            assert_eq!(pair.len(), 2, "hex words have an even number of digits");
            u8::from_str_radix(pair, 16).expect("hex digit")
        })
        .collect()
}

/// One example per client kind, with its hand-computed encoding.
#[rustfmt::skip] // a table: one frame and its bytes per line
fn client_examples() -> Vec<(ClientFrame<'static>, Vec<u8>)> {
    vec![
        (ClientFrame::Hello { version: 1, user: "al", token: "pw", client: 0 },
            hex("0000000a 01 01 0002 616c 0002 7077")),
        (ClientFrame::Join { room: "#a", after: 5, limit: u32::MAX },
            hex("00000011 02 0002 2361 0000000000000005 ffffffff")),
        (ClientFrame::Leave { room: "#a" },
            hex("00000005 03 0002 2361")),
        (ClientFrame::Send { room: "#a", id: 7, text: "hi" },
            hex("0000000f 04 0002 2361 0000000000000007 6869")),
        (ClientFrame::Ping { nonce: 0x0102_0304_0506_0708 },
            hex("00000009 05 0102030405060708")),
        (ClientFrame::Bye,
            hex("00000001 06")),
    ]
}

/// One example per server kind, with its hand-computed encoding.
#[rustfmt::skip] // a table: one frame and its bytes per line
fn server_examples() -> Vec<(ServerFrame<'static>, Vec<u8>)> {
    vec![
        (ServerFrame::Welcome {
            version: 1, epoch: 2, session: 3, max_frame: 65_536, idle_timeout_ms: 30_000, server: "cd",
        },
            hex("0000001e 81 01 0000000000000002 0000000000000003 00010000 00007530 0002 6364")),
        (ServerFrame::Joined { room: "#a", first: 1, head: 9 },
            hex("00000015 82 0002 2361 0000000000000001 0000000000000009")),
        (ServerFrame::Left { room: "#a" },
            hex("00000005 83 0002 2361")),
        (ServerFrame::Msg { room: "#a", seq: 1, ts_ms: 0x0102, user: "bo", text: "hi" },
            hex("0000001b 84 0002 2361 0000000000000001 0000000000000102 0002 626f 6869")),
        (ServerFrame::Ack { id: 7, seq: 1 },
            hex("00000011 85 0000000000000007 0000000000000001")),
        (ServerFrame::Pong { nonce: 0x0102_0304_0506_0708 },
            hex("00000009 86 0102030405060708")),
        (ServerFrame::Error { code: 8, reference: 7, message: "no" },
            hex("0000000f 87 0008 0000000000000007 0002 6e6f")),
    ]
}

/// What `deframer` says about `wire`, requiring a complete frame that starts it.
#[track_caller]
fn raw_frame(deframer: Deframer, wire: &[u8]) -> RawFrame<'_> {
    match deframer.next(wire) {
        Ok(Decoded::Frame(raw)) => raw,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// Deframes and parses a buffer holding exactly one client frame, of either version.
#[track_caller]
fn decode_client(wire: &[u8]) -> Result<ClientFrame<'_>, FrameError> {
    let raw = raw_frame(
        Deframer::for_server_in(Version::V2, DEFAULT_MAX_FRAME),
        wire,
    );
    assert_eq!(raw.wire_len, wire.len());
    parse_client(&raw)
}

/// Deframes and parses a buffer holding exactly one server frame, of either version.
#[track_caller]
fn decode_server(wire: &[u8]) -> Result<ServerFrame<'_>, FrameError> {
    let raw = raw_frame(
        Deframer::for_client_in(Version::V2, DEFAULT_MAX_FRAME),
        wire,
    );
    assert_eq!(raw.wire_len, wire.len());
    parse_server(&raw)
}

/// A frame of `kind` with `body`, its length prefix computed.
fn frame_bytes(kind: u8, body: &[u8]) -> Vec<u8> {
    let length = u32::try_from(body.len() + 1).expect("test bodies are small");
    let mut wire = length.to_be_bytes().to_vec();
    wire.push(kind);
    wire.extend_from_slice(body);
    wire
}

/// The error code `deframer` gives for `bytes`, if any.
fn refusal(deframer: Deframer, bytes: &[u8]) -> Option<ErrorCode> {
    deframer.next(bytes).err().map(|e| e.code)
}

/// Checks that the client frame in `wire` (hex) deframes but is MALFORMED for `reason`.
#[track_caller]
fn assert_client_malformed(wire: &str, reason: &str) {
    let wire = hex(wire);
    let err = decode_client(&wire).expect_err("malformed");
    assert_eq!((err.code, err.reason), (ErrorCode::Malformed, reason));
}

/// Checks that the server frame in `wire` (hex) deframes but is MALFORMED for `reason`.
#[track_caller]
fn assert_server_malformed(wire: &str, reason: &str) {
    let wire = hex(wire);
    let err = decode_server(&wire).expect_err("malformed");
    assert_eq!((err.code, err.reason), (ErrorCode::Malformed, reason));
}

const TOO_SHORT: &str = "body too short";
const LEFTOVER: &str = "bytes left over after the last field";
const STR_NOT_UTF8: &str = "string is not UTF-8";
const TEXT_NOT_UTF8: &str = "text is not UTF-8";
const STR_PAST_BODY: &str = "string runs past the body";

#[test]
fn every_client_kind_encodes_to_contract_bytes_and_back() {
    let examples = client_examples();
    let kinds: Vec<u8> = examples.iter().map(|(frame, _)| frame.kind()).collect();
    assert_eq!(kinds, (kind::HELLO..=kind::BYE).collect::<Vec<_>>());
    for (frame, wire) in &examples {
        let mut out = Vec::new();
        encode_client(frame, &mut out);
        assert_eq!(&out, wire, "{frame:?}");
        assert_eq!(decode_client(wire).as_ref(), Ok(frame));
    }
}

#[test]
fn every_server_kind_encodes_to_contract_bytes_and_back() {
    let examples = server_examples();
    let kinds: Vec<u8> = examples.iter().map(|(frame, _)| frame.kind()).collect();
    assert_eq!(kinds, (kind::WELCOME..=kind::ERROR).collect::<Vec<_>>());
    for (frame, wire) in &examples {
        let mut out = Vec::new();
        encode_server(frame, &mut out);
        assert_eq!(&out, wire, "{frame:?}");
        assert_eq!(decode_server(wire).as_ref(), Ok(frame));
    }
}

#[test]
fn encoding_appends_after_bytes_already_buffered() {
    let mut out = vec![0xaa, 0xbb];
    encode_client(&ClientFrame::Bye, &mut out);
    encode_server(&ServerFrame::Pong { nonce: 1 }, &mut out);
    assert_eq!(out, hex("aabb 00000001 06 00000009 86 0000000000000001"));
}

#[test]
fn zero_length_is_malformed() {
    for deframer in [
        Deframer::for_server(DEFAULT_MAX_FRAME),
        Deframer::for_client(64),
    ] {
        assert_eq!(refusal(deframer, &[0, 0, 0, 0]), Some(ErrorCode::Malformed));
    }
}

#[test]
fn oversize_header_rejected_before_body() {
    // Only the 4 length bytes are present: no kind, no body.
    assert_eq!(
        refusal(Deframer::for_server(64), &hex("00000041")),
        Some(ErrorCode::TooLarge)
    );
    let default = Deframer::for_client(DEFAULT_MAX_FRAME);
    for header in ["00010001", "80000000", "ffffffff"] {
        assert_eq!(
            refusal(default, &hex(header)),
            Some(ErrorCode::TooLarge),
            "{header}"
        );
    }
}

#[test]
fn length_equal_to_max_frame_is_accepted() {
    let deframer = Deframer::for_server(64);
    assert_eq!(deframer.next(&hex("00000040 04")), Ok(Decoded::NeedMore));
    let wire = frame_bytes(kind::PING, &[0; 63]);
    assert_eq!(raw_frame(deframer, &wire).wire_len, 68);
}

#[test]
fn wrong_direction_kind_rejected_after_five_bytes() {
    let to_server = Deframer::for_server(DEFAULT_MAX_FRAME);
    let to_client = Deframer::for_client(DEFAULT_MAX_FRAME);
    for server_kind in kind::WELCOME..=kind::ERROR {
        let header = [0, 0, 0, 9, server_kind];
        assert_eq!(to_server.next(&header[..4]), Ok(Decoded::NeedMore));
        assert_eq!(refusal(to_server, &header), Some(ErrorCode::UnknownKind));
    }
    for client_kind in kind::HELLO..=kind::BYE {
        let header = [0, 0, 0, 9, client_kind];
        assert_eq!(to_client.next(&header[..4]), Ok(Decoded::NeedMore));
        assert_eq!(refusal(to_client, &header), Some(ErrorCode::UnknownKind));
    }
}

#[test]
fn unknown_kind_rejected_after_five_bytes() {
    for unknown in [0x00, 0x07, 0x3f, 0x40, 0x80, 0x88, 0xbf, 0xc0, 0xff] {
        let header = [0, 0, 0, 9, unknown];
        for deframer in [Deframer::for_server(64), Deframer::for_client(64)] {
            assert_eq!(refusal(deframer, &header), Some(ErrorCode::UnknownKind));
        }
    }
}

#[test]
fn parsers_refuse_the_other_directions_kinds() {
    let body = &[0; 8];
    let ping = RawFrame {
        kind: kind::PING,
        body,
        wire_len: 13,
    };
    let pong = RawFrame {
        kind: kind::PONG,
        body,
        wire_len: 13,
    };
    assert_eq!(
        parse_server(&ping).err().map(|e| e.code),
        Some(ErrorCode::UnknownKind)
    );
    assert_eq!(
        parse_client(&pong).err().map(|e| e.code),
        Some(ErrorCode::UnknownKind)
    );
}

#[test]
fn body_too_short_is_malformed() {
    assert_client_malformed("00000008 05 00000000000000", TOO_SHORT);
    assert_client_malformed("0000000d 02 0002 2361 0000000000000005", TOO_SHORT);
    assert_server_malformed("00000009 85 0000000000000007", TOO_SHORT);
}

#[test]
fn every_cut_into_the_fixed_fields_is_malformed() {
    let client = client_examples().into_iter().map(|(_, wire)| wire);
    let server = server_examples().into_iter().map(|(_, wire)| wire);
    for wire in client.chain(server) {
        let (kind, body) = (wire[HEADER_LEN], &wire[HEADER_LEN + 1..]);
        // A text may be cut anywhere and still parse (each example's text is "hi"); no field
        // before it may be.
        let text = if matches!(kind, kind::SEND | kind::MSG) {
            2
        } else {
            0
        };
        for cut in 0..body.len() - text {
            let short = frame_bytes(kind, &body[..cut]);
            let err = if kind::is_client(kind) {
                decode_client(&short).err()
            } else {
                decode_server(&short).err()
            };
            let code = err.map(|e| e.code);
            assert_eq!(code, Some(ErrorCode::Malformed), "{kind:#x} cut at {cut}");
        }
    }
}

#[test]
fn bytes_after_last_field_are_malformed() {
    assert_client_malformed("0000000a 05 0000000000000001 00", LEFTOVER);
    assert_client_malformed("00000006 03 0002 2361 20", LEFTOVER);
    assert_server_malformed("00000006 83 0002 2361 20", LEFTOVER);
    assert_server_malformed("00000010 87 0008 0000000000000007 0002 6e6f 21", LEFTOVER);
}

#[test]
fn bye_with_body_is_malformed() {
    assert_client_malformed("00000002 06 00", LEFTOVER);
}

#[test]
fn invalid_utf8_in_str_is_malformed() {
    assert_client_malformed("00000005 03 0002 fffe", STR_NOT_UTF8);
    // "é" is c3 a9: a str that ends between the two bytes is not UTF-8 either.
    assert_client_malformed("00000005 03 0002 61c3", STR_NOT_UTF8);
    let msg = "0000001b 84 0002 2361 0000000000000001 0000000000000002 0002 80ff 6869";
    assert_server_malformed(msg, STR_NOT_UTF8);
}

#[test]
fn invalid_utf8_in_text_is_malformed() {
    assert_client_malformed("0000000f 04 0002 2361 0000000000000007 68ff", TEXT_NOT_UTF8);
    let msg = "0000001a 84 0002 2361 0000000000000001 0000000000000002 0002 626f c3";
    assert_server_malformed(msg, TEXT_NOT_UTF8);
}

#[test]
fn str_length_past_body_is_malformed() {
    assert_client_malformed("00000004 03 0005 61", STR_PAST_BODY);
    assert_client_malformed("00000009 01 01 0002 616c 00ff 70", STR_PAST_BODY);
    assert_server_malformed("00000004 83 ffff 61", STR_PAST_BODY);
}

#[test]
fn every_strict_prefix_needs_more() {
    let to_server = Deframer::for_server(DEFAULT_MAX_FRAME);
    let to_client = Deframer::for_client(DEFAULT_MAX_FRAME);
    let client = client_examples()
        .into_iter()
        .map(|(_, wire)| (to_server, wire));
    let server = server_examples()
        .into_iter()
        .map(|(_, wire)| (to_client, wire));
    for (deframer, wire) in client.chain(server) {
        for cut in 0..wire.len() {
            let prefix = &wire[..cut];
            assert_eq!(
                deframer.next(prefix),
                Ok(Decoded::NeedMore),
                "{prefix:02x?}"
            );
        }
    }
}

#[test]
fn deframer_takes_only_the_first_of_pipelined_frames() {
    let wire = hex("00000001 06 00000009 05 0000000000000001 000000");
    let raw = raw_frame(Deframer::for_server(DEFAULT_MAX_FRAME), &wire);
    assert_eq!((raw.kind, raw.body, raw.wire_len), (kind::BYE, &[][..], 5));
}

#[test]
fn oversize_str_is_clamped_on_a_char_boundary() {
    // 80 000 bytes of two-byte characters: the longest whole-character prefix a u16 can
    // announce is 65 534 bytes.
    let long = "é".repeat(40_000);
    let mut wire = Vec::new();
    encode_client(&ClientFrame::Leave { room: &long }, &mut wire);
    assert_eq!(
        wire[HEADER_LEN + 1..HEADER_LEN + 3],
        65_534u16.to_be_bytes()
    );
    let raw = raw_frame(Deframer::for_server(u32::MAX), &wire);
    let room = "é".repeat(32_767);
    assert_eq!(parse_client(&raw), Ok(ClientFrame::Leave { room: &room }));
}

#[test]
fn stamp_msg_refuses_a_frame_too_short() {
    let mut short = hex("0000000e 84 0002 2361 0000000000000001");
    let before = short.clone();
    assert!(!stamp_msg(&mut short, 2, 9, 9));
    assert_eq!(short, before);
}

/// Any string, multi-byte characters included, and short enough for a u16 length. It is
/// leaked so that generated frames can borrow it for `'static` and be shrunk like any value;
/// a test process can afford the few kilobytes.
fn field() -> impl Strategy<Value = &'static str> {
    any::<String>().prop_map(|s| &*s.leak())
}

/// Any short run of bytes, leaked as [`field`] is.
fn bytes() -> impl Strategy<Value = &'static [u8]> {
    prop::collection::vec(any::<u8>(), 0..24).prop_map(|v| &*v.leak())
}

/// A MEMBERS user list of up to 6 arbitrary strings, its wire leaked as [`field`] is.
fn user_list() -> impl Strategy<Value = UserList<'static>> {
    prop::collection::vec(field(), 0..6).prop_map(|users| {
        let mut wire = Vec::new();
        let count = UserList::write(users, &mut wire);
        UserList::from_wire(count, wire.leak()).expect("a written list reads back")
    })
}

/// Client frames of both versions, each as the codec decodes it: a version 1 HELLO has no
/// client id, and a HELLO of another version is kept as its raw rest.
fn client_frame() -> impl Strategy<Value = ClientFrame<'static>> {
    prop_oneof![
        (field(), field()).prop_map(|(user, token)| ClientFrame::Hello {
            version: 1,
            user,
            token,
            client: 0,
        }),
        (field(), field(), any::<u64>()).prop_map(|(user, token, client)| ClientFrame::Hello {
            version: 2,
            user,
            token,
            client,
        }),
        (
            any::<u8>().prop_filter("a version spoken", |v| Version::from_wire(*v).is_none()),
            bytes()
        )
            .prop_map(|(version, rest)| ClientFrame::HelloUnsupported { version, rest }),
        field().prop_map(|room| ClientFrame::Who { room }),
        (field(), any::<u8>()).prop_map(|(room, on)| ClientFrame::Watch { room, on }),
        (field(), any::<u64>(), any::<u32>()).prop_map(|(room, after, limit)| ClientFrame::Join {
            room,
            after,
            limit
        }),
        field().prop_map(|room| ClientFrame::Leave { room }),
        (field(), any::<u64>(), field()).prop_map(|(room, id, text)| ClientFrame::Send {
            room,
            id,
            text
        }),
        any::<u64>().prop_map(|nonce| ClientFrame::Ping { nonce }),
        Just(ClientFrame::Bye),
    ]
}

fn server_frame() -> impl Strategy<Value = ServerFrame<'static>> {
    prop_oneof![
        (any::<(u8, u64, u64, u32, u32)>(), field()).prop_map(
            |((version, epoch, session, max_frame, idle_timeout_ms), server)| {
                ServerFrame::Welcome {
                    version,
                    epoch,
                    session,
                    max_frame,
                    idle_timeout_ms,
                    server,
                }
            }
        ),
        (field(), any::<u64>(), any::<u64>()).prop_map(|(room, first, head)| ServerFrame::Joined {
            room,
            first,
            head
        }),
        field().prop_map(|room| ServerFrame::Left { room }),
        (field(), any::<(u64, u64)>(), field(), field()).prop_map(
            |(room, (seq, ts_ms), user, text)| ServerFrame::Msg {
                room,
                seq,
                ts_ms,
                user,
                text
            }
        ),
        any::<(u64, u64)>().prop_map(|(id, seq)| ServerFrame::Ack { id, seq }),
        any::<u64>().prop_map(|nonce| ServerFrame::Pong { nonce }),
        (any::<u16>(), any::<u64>(), field()).prop_map(|(code, reference, message)| {
            ServerFrame::Error {
                code,
                reference,
                message,
            }
        }),
        (field(), any::<u32>(), user_list())
            .prop_map(|(room, total, users)| ServerFrame::Members { room, total, users }),
        (field(), field(), any::<bool>()).prop_map(|(room, user, here)| ServerFrame::Presence {
            room,
            user,
            here
        }),
    ]
}

/// Bytes that are sometimes plausible frames: either anything, or a small length and a kind
/// of either direction (or any kind) followed by anything.
fn wire_bytes() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop_oneof![
        kind::HELLO..=kind::WATCH,
        kind::WELCOME..=kind::PRESENCE,
        any::<u8>()
    ];
    let plausible = (1u32..48, kind, prop::collection::vec(any::<u8>(), 0..64))
        .prop_map(|(length, kind, rest)| [&length.to_be_bytes()[..], &[kind], &rest].concat());
    prop_oneof![prop::collection::vec(any::<u8>(), 0..64), plausible]
}

/// Cuts `wire` at the given points into the reads a socket might deliver.
fn reads<'a>(wire: &'a [u8], points: &[Index]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = points.iter().map(|p| p.index(wire.len() + 1)).collect();
    cuts.push(wire.len());
    cuts.sort_unstable();
    let mut start = 0;
    let mut out = Vec::new();
    for cut in cuts {
        out.push(&wire[start..cut]);
        start = cut;
    }
    out
}

/// Feeds `reads` to `deframer` as a reactor does: append each read, drain every whole frame,
/// keep the partial tail. Returns the wire bytes of each frame and how many bytes stay buffered.
fn drain_reads(deframer: Deframer, reads: &[&[u8]]) -> (Vec<Vec<u8>>, usize) {
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        let mut at = 0;
        while let Decoded::Frame(raw) = deframer.next(&buf[at..]).expect("a valid stream") {
            frames.push(buf[at..at + raw.wire_len].to_vec());
            at += raw.wire_len;
        }
        buf.drain(..at);
    }
    (frames, buf.len())
}

proptest! {
    #[test]
    fn client_frame_round_trips(frame in client_frame(), tail in prop::collection::vec(any::<u8>(), 0..8)) {
        let mut wire = Vec::new();
        encode_client(&frame, &mut wire);
        let encoded = wire.len();
        wire.extend(tail);
        let raw = raw_frame(Deframer::for_server_in(Version::V2, DEFAULT_MAX_FRAME), &wire);
        prop_assert_eq!(raw.wire_len, encoded);
        prop_assert_eq!(parse_client(&raw), Ok(frame));
    }

    #[test]
    fn server_frame_round_trips(frame in server_frame(), tail in prop::collection::vec(any::<u8>(), 0..8)) {
        let mut wire = Vec::new();
        encode_server(&frame, &mut wire);
        let encoded = wire.len();
        wire.extend(tail);
        let raw = raw_frame(Deframer::for_client_in(Version::V2, DEFAULT_MAX_FRAME), &wire);
        prop_assert_eq!(raw.wire_len, encoded);
        prop_assert_eq!(parse_server(&raw), Ok(frame));
    }

    #[test]
    fn client_stream_split_anywhere_decodes_the_same(
        frames in prop::collection::vec(client_frame(), 1..8),
        points in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let mut wire = Vec::new();
        frames.iter().for_each(|frame| encode_client(frame, &mut wire));
        let deframer = Deframer::for_server_in(Version::V2, DEFAULT_MAX_FRAME);
        let (whole, left) = drain_reads(deframer, &[&wire]);
        prop_assert_eq!((whole.concat(), left), (wire.clone(), 0));
        prop_assert_eq!(drain_reads(deframer, &reads(&wire, &points)), (whole.clone(), 0));
        let parsed: Vec<_> = whole.iter().map(|one| decode_client(one)).collect();
        prop_assert_eq!(parsed, frames.into_iter().map(Ok).collect::<Vec<_>>());
    }

    #[test]
    fn server_stream_split_anywhere_decodes_the_same(
        frames in prop::collection::vec(server_frame(), 1..8),
        points in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let mut wire = Vec::new();
        frames.iter().for_each(|frame| encode_server(frame, &mut wire));
        let deframer = Deframer::for_client_in(Version::V2, DEFAULT_MAX_FRAME);
        let (whole, left) = drain_reads(deframer, &[&wire]);
        prop_assert_eq!((whole.concat(), left), (wire.clone(), 0));
        prop_assert_eq!(drain_reads(deframer, &reads(&wire, &points)), (whole.clone(), 0));
        let parsed: Vec<_> = whole.iter().map(|one| decode_server(one)).collect();
        prop_assert_eq!(parsed, frames.into_iter().map(Ok).collect::<Vec<_>>());
    }

    #[test]
    fn deframer_stays_inside_arbitrary_bytes(
        wire in wire_bytes(),
        max_frame in prop_oneof![Just(1u32), 1u32..128, Just(DEFAULT_MAX_FRAME), Just(u32::MAX)],
    ) {
        let deframers = [
            Deframer::for_server(max_frame),
            Deframer::for_client(max_frame),
            Deframer::for_server_in(Version::V2, max_frame),
            Deframer::for_client_in(Version::V2, max_frame),
        ];
        for deframer in deframers {
            let mut at = 0;
            while let Ok(Decoded::Frame(raw)) = deframer.next(&wire[at..]) {
                prop_assert!(raw.wire_len <= wire.len() - at);
                prop_assert_eq!(raw.body.len() + HEADER_LEN + 1, raw.wire_len);
                prop_assert!(raw.wire_len - HEADER_LEN <= max_frame as usize);
                // Only that nothing panics: most arbitrary bodies are rightly refused.
                let _ = parse_client(&raw);
                let _ = parse_server(&raw);
                at += raw.wire_len;
            }
        }
    }

    #[test]
    fn clamp_str_never_splits_a_character(s in any::<String>(), max in 0usize..48) {
        let cut = clamp_str(&s, max);
        prop_assert!(s.starts_with(cut));
        prop_assert!(s.is_char_boundary(cut.len()));
        if s.len() <= max {
            prop_assert_eq!(cut, s.as_str());
        } else {
            // The longest such prefix: the next character would not have fitted.
            let next = s[cut.len()..].chars().next().map_or(0, char::len_utf8);
            prop_assert!(cut.len() <= max && cut.len() + next > max);
        }
    }

    #[test]
    fn stamp_msg_writes_where_parse_server_reads(
        (room, user, text) in (field(), field(), field()),
        (seq, ts_ms) in any::<(u64, u64)>(),
    ) {
        let mut wire = Vec::new();
        encode_server(&ServerFrame::Msg { room, seq: 0, ts_ms: 0, user, text }, &mut wire);
        prop_assert_eq!(wire.len(), HEADER_LEN + msg_length(room, user, text));
        prop_assert!(stamp_msg(&mut wire, room.len(), seq, ts_ms));
        prop_assert_eq!(decode_server(&wire), Ok(ServerFrame::Msg { room, seq, ts_ms, user, text }));
    }
}

#[test]
fn replay_start_follows_the_window_formula() {
    // (after, limit, first, head) -> the first seq sent
    #[rustfmt::skip]
    let table = [
        ((0, 0, 1, 10), 11),      // limit 0: live only
        ((5, 0, 1, 10), 11),
        ((0, u32::MAX, 1, 10), 1),     // all retained
        ((3, u32::MAX, 1, 10), 4),
        ((0, u32::MAX - 1, 1, 10), 1), // head - limit saturates at 0
        ((0, 3, 1, 100), 98),
        ((90, 5, 1, 100), 96),
        ((97, 5, 1, 100), 98),
        ((20, u32::MAX, 1, 10), 11),   // an after beyond head counts as head
        ((20, 3, 1, 10), 11),
        ((0, u32::MAX, 6, 10), 6),     // nothing below first
        ((2, 8, 6, 10), 6),
        ((2, 3, 6, 10), 8),
        ((0, u32::MAX, 0, 0), 1),      // an empty room
        ((7, u32::MAX, 0, 0), 1),
        ((0, u32::MAX, 0, 10), 11),    // retention deleted everything: live only
        ((3, 5, 0, 10), 11),
    ];
    for ((after, limit, first, head), start) in table {
        let got = crate::protocol::replay_start(after, limit, first, head);
        assert_eq!(got, start, "({after}, {limit}, {first}, {head})");
    }
}
