//! RFC 6455 framing on the server side, case by case. Where a test follows a case of the
//! Autobahn testsuite (framing, pings, reserved bits, opcodes, fragmentation, close, limits)
//! its name starts with that case's number; text and UTF-8 cases become "text is refused".

use proptest::prelude::*;

use super::close::code;
use super::conn::{Phase, Received};
use super::frame::{Header, Opcode, parse};
use super::message::{Boundary, Wrapper};
use super::{CloseReason, WsConn};
use crate::fuzzing::ws::{LengthForm, client_frame, masked, server_frames};
use crate::protocol::{ClientFrame, encode_client};

const LIMIT: usize = 65_540;
const MASK: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

/// A PING protocol frame: 13 bytes on the wire.
fn ping(nonce: u64) -> Vec<u8> {
    let mut out = Vec::new();
    encode_client(&ClientFrame::Ping { nonce }, &mut out);
    out
}

/// A client frame with `first` as its first byte, masked.
fn raw(first: u8, payload: &[u8]) -> Vec<u8> {
    client_frame(first, Some(MASK), payload, LengthForm::Shortest)
}

/// What a connection made of a stream fed in reads of `size` bytes.
#[derive(Debug, Default, PartialEq, Eq)]
struct Run {
    delivered: Vec<u8>,
    /// The server frames it queued: (FIN, opcode, payload).
    sent: Vec<(bool, u8, Vec<u8>)>,
    error: Option<CloseReason>,
    peer_closed: bool,
}

fn run_in_reads(conn: &mut WsConn, stream: &[u8], size: usize) -> Run {
    let mut run = Run::default();
    for read in stream.chunks(size.max(1)) {
        let mut buf = [conn.rx(), read].concat();
        let result = conn.receive(&mut buf, LIMIT, |b| run.delivered.extend_from_slice(b));
        match result {
            Ok(Received {
                consumed,
                peer_closed,
            }) => {
                conn.keep_rx(&buf[consumed..]);
                run.peer_closed |= peer_closed;
            }
            Err(reason) => {
                run.error = Some(reason);
                break;
            }
        }
    }
    run.sent = server_frames(conn.tx());
    conn.drain_tx(usize::MAX);
    run
}

fn run(stream: &[u8]) -> Run {
    run_in_reads(&mut WsConn::upgraded(), stream, stream.len())
}

#[track_caller]
fn fails_with(stream: &[u8], code: u16) {
    let outcome = run(stream);
    assert_eq!(outcome.error.map(|e| e.code), Some(code), "{outcome:?}");
}

#[test]
fn unmasked_client_frame_fails_1002() {
    let frame = client_frame(0x82, None, &ping(1), LengthForm::Shortest);
    fails_with(&frame, code::PROTOCOL_ERROR);
    // Decided from the two header bytes alone.
    assert_eq!(
        parse(&mut frame[..2].to_vec(), LIMIT).map_err(|e| e.code),
        Err(code::PROTOCOL_ERROR)
    );
}

#[test]
fn autobahn_3_1_to_3_7_reserved_bits_fail_1002() {
    let opcodes = [0x1, 0x2, 0x9, 0x2, 0x9, 0x8, 0x2];
    for (rsv, opcode) in (1u8..=7).zip(opcodes) {
        fails_with(&raw(0x80 | rsv << 4 | opcode, b""), code::PROTOCOL_ERROR);
    }
}

#[test]
fn autobahn_3_2_reserved_bits_after_a_valid_message_fail_after_delivering_it() {
    let stream = [masked(Opcode::Binary, &ping(1)), raw(0xA2, b"")].concat();
    let outcome = run(&stream);
    assert_eq!(outcome.delivered, ping(1));
    assert_eq!(outcome.error.map(|e| e.code), Some(code::PROTOCOL_ERROR));
}

#[test]
fn autobahn_4_1_reserved_data_opcodes_fail_1002() {
    for opcode in 3..=7 {
        fails_with(&raw(0x80 | opcode, b"abc"), code::PROTOCOL_ERROR);
    }
}

#[test]
fn autobahn_4_2_reserved_control_opcodes_fail_1002() {
    for opcode in 11..=15 {
        fails_with(&raw(0x80 | opcode, b"abc"), code::PROTOCOL_ERROR);
    }
}

#[test]
fn autobahn_2_5_control_frame_over_125_bytes_fails_1002() {
    fails_with(&masked(Opcode::Ping, &[7; 126]), code::PROTOCOL_ERROR);
    // Even spelled with a 16-bit length that says 125 or less.
    let long_form = client_frame(0x89, Some(MASK), &[7; 10], LengthForm::Bits16);
    fails_with(&long_form, code::PROTOCOL_ERROR);
}

#[test]
fn autobahn_5_1_and_5_2_fragmented_control_frames_fail_1002() {
    fails_with(&raw(0x09, b"ping"), code::PROTOCOL_ERROR);
    fails_with(&raw(0x0A, b"pong"), code::PROTOCOL_ERROR);
    fails_with(&raw(0x08, b""), code::PROTOCOL_ERROR);
}

#[test]
fn text_message_fails_1003() {
    fails_with(&masked(Opcode::Text, b"hello"), code::UNSUPPORTED_DATA);
    // A fragmented text message is refused at its first frame.
    fails_with(&raw(0x01, b"hel"), code::UNSUPPORTED_DATA);
}

#[test]
fn autobahn_9_oversized_declared_payload_fails_1009_from_header_alone() {
    let frame = client_frame(0x82, Some(MASK), &[0; 300], LengthForm::Shortest);
    // 4 header bytes: no mask, no payload yet.
    let err = parse(&mut frame[..4].to_vec(), 299).map_err(|e| e.code);
    assert_eq!(err, Err(code::TOO_BIG));
    // A 64-bit length of 2^40: refused from its 10 header bytes.
    let mut huge = vec![0x82, 0xFF];
    huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
    assert_eq!(
        parse(&mut huge, LIMIT).map_err(|e| e.code),
        Err(code::TOO_BIG)
    );
    // Exactly the limit is fine.
    let frame = client_frame(0x82, Some(MASK), &[0; 300], LengthForm::Shortest);
    assert!(parse(&mut frame.clone(), 300).unwrap().is_some());
}

#[test]
fn length_with_top_bit_set_fails_1002() {
    let mut frame = vec![0x82, 0xFF];
    frame.extend_from_slice(&(1u64 << 63).to_be_bytes());
    assert_eq!(
        parse(&mut frame, usize::MAX).map_err(|e| e.code),
        Err(code::PROTOCOL_ERROR)
    );
}

#[test]
fn autobahn_5_9_continuation_without_a_message_fails_1002() {
    fails_with(&raw(0x80, &ping(1)), code::PROTOCOL_ERROR);
}

#[test]
fn autobahn_5_12_unfinished_continuation_without_a_message_fails_1002() {
    fails_with(&raw(0x00, &ping(1)), code::PROTOCOL_ERROR);
}

#[test]
fn autobahn_5_18_new_data_frame_inside_a_fragmented_message_fails_1002() {
    let p = ping(1);
    let stream = [raw(0x02, &p[..5]), raw(0x82, &p[5..])].concat();
    fails_with(&stream, code::PROTOCOL_ERROR);
}

#[test]
fn message_ending_inside_a_protocol_frame_fails_1007() {
    let p = ping(1);
    fails_with(&masked(Opcode::Binary, &p[..7]), code::INVALID_PAYLOAD);
    // Inside the length prefix, too.
    fails_with(&masked(Opcode::Binary, &p[..2]), code::INVALID_PAYLOAD);
    // Two frames then half of a third.
    let stream = masked(
        Opcode::Binary,
        &[p.clone(), p.clone(), p[..9].to_vec()].concat(),
    );
    fails_with(&stream, code::INVALID_PAYLOAD);
}

#[test]
fn one_message_may_hold_several_protocol_frames_and_an_empty_one_none() {
    let frames = [ping(1), ping(2), ping(3)].concat();
    let stream = [masked(Opcode::Binary, &frames), masked(Opcode::Binary, b"")].concat();
    let outcome = run(&stream);
    assert_eq!((outcome.delivered, outcome.error), (frames, None));
}

/// A binary message of `len` bytes holding one protocol frame (a SEND-sized blob).
fn message_of(len: usize) -> Vec<u8> {
    assert!(len >= 5);
    let mut m = u32::try_from(len - 4).unwrap().to_be_bytes().to_vec();
    m.push(0x04);
    m.resize(len, 0xAB);
    m
}

#[test]
fn autobahn_1_2_1_to_1_2_7_binary_payload_lengths() {
    for len in [0, 125, 126, 127, 128, 65_535, 65_536] {
        let payload = if len == 0 {
            Vec::new()
        } else {
            message_of(len)
        };
        let frame = masked(Opcode::Binary, &payload);
        let header = match len {
            0..=125 => 6,
            126..=65_535 => 8,
            _ => 14,
        };
        assert_eq!(frame.len(), header + len, "length form for {len}");
        let outcome = run(&frame);
        assert_eq!((outcome.delivered, outcome.error), (payload, None), "{len}");
    }
}

#[test]
fn autobahn_1_2_8_binary_65536_in_chops_of_997() {
    let payload = message_of(65_536);
    let frame = masked(Opcode::Binary, &payload);
    let mut conn = WsConn::upgraded();
    let outcome = run_in_reads(&mut conn, &frame, 997);
    assert_eq!((outcome.delivered, outcome.error), (payload, None));
    assert!(conn.rx().is_empty());
}

#[test]
fn non_minimal_length_forms_are_read() {
    let p = ping(9);
    for form in [LengthForm::Bits16, LengthForm::Bits64] {
        let outcome = run(&client_frame(0x82, Some(MASK), &p, form));
        assert_eq!(outcome.delivered, p, "{form:?}");
    }
}

#[test]
fn autobahn_2_1_to_2_4_ping_answered_with_its_payload() {
    for payload in [
        &b""[..],
        b"Hello, world!",
        &[0x00, 0xff, 0xfe, 0xfd],
        &[0xfe; 125],
    ] {
        let outcome = run(&masked(Opcode::Ping, payload));
        assert_eq!(outcome.sent, vec![(true, 0xA, payload.to_vec())]);
    }
}

#[test]
fn autobahn_2_6_ping_in_chops_of_one_byte() {
    let mut conn = WsConn::upgraded();
    let outcome = run_in_reads(&mut conn, &masked(Opcode::Ping, &[0x5a; 125]), 1);
    assert_eq!(outcome.sent, vec![(true, 0xA, vec![0x5a; 125])]);
}

#[test]
fn autobahn_2_7_to_2_9_unsolicited_pongs_are_ignored() {
    let stream = [
        masked(Opcode::Pong, b""),
        masked(Opcode::Pong, b"unsolicited"),
        masked(Opcode::Ping, b"ping"),
    ]
    .concat();
    assert_eq!(run(&stream).sent, vec![(true, 0xA, b"ping".to_vec())]);
}

#[test]
fn autobahn_2_10_and_2_11_ten_pings_ten_pongs() {
    let stream: Vec<u8> = (0..10u8)
        .flat_map(|i| masked(Opcode::Ping, &[i; 3]))
        .collect();
    for size in [stream.len(), 1] {
        let outcome = run_in_reads(&mut WsConn::upgraded(), &stream, size);
        let pongs: Vec<_> = (0..10u8).map(|i| (true, 0xA, vec![i; 3])).collect();
        assert_eq!(outcome.sent, pongs);
    }
}

#[test]
fn autobahn_5_6_fragmented_message_with_a_ping_in_the_middle() {
    let p = ping(42);
    let stream = [
        raw(0x02, &p[..6]),
        masked(Opcode::Ping, b"mid"),
        raw(0x80, &p[6..]),
    ]
    .concat();
    for size in 1..=stream.len() {
        let outcome = run_in_reads(&mut WsConn::upgraded(), &stream, size);
        assert_eq!(outcome.delivered, p, "reads of {size}");
        assert_eq!(outcome.sent, vec![(true, 0xA, b"mid".to_vec())]);
        assert_eq!(outcome.error, None);
    }
}

#[test]
fn autobahn_5_19_five_fragments_with_pings_between() {
    let frames = [ping(1), ping(2)].concat();
    let parts: Vec<&[u8]> = frames.chunks(6).collect();
    assert_eq!(parts.len(), 5);
    let mut stream = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let first = match i {
            0 => 0x02,
            4 => 0x80,
            _ => 0x00,
        };
        stream.extend(raw(first, part));
        if i == 1 || i == 3 {
            stream.extend(masked(Opcode::Ping, &[i as u8]));
        }
    }
    let outcome = run(&stream);
    assert_eq!(outcome.delivered, frames);
    assert_eq!(outcome.sent.len(), 2);
}

#[test]
fn frames_split_at_every_byte_read_the_same() {
    let p = ping(7);
    let stream = [
        masked(Opcode::Binary, &[p.clone(), p.clone()].concat()),
        raw(0x02, &p[..3]),
        masked(Opcode::Ping, b"x"),
        raw(0x80, &p[3..]),
        masked(Opcode::Binary, &message_of(300)),
        masked(Opcode::Close, &1000u16.to_be_bytes()),
    ]
    .concat();
    let whole = run(&stream);
    assert!(whole.peer_closed);
    for cut in 1..stream.len() {
        let mut conn = WsConn::upgraded();
        let mut outcome = run_in_reads(&mut conn, &stream[..cut], cut);
        let rest = run_in_reads(&mut conn, &stream[cut..], stream.len());
        outcome.delivered.extend(rest.delivered);
        outcome.sent.extend(rest.sent);
        outcome.peer_closed |= rest.peer_closed;
        assert_eq!(outcome, whole, "split at {cut}");
    }
}

#[test]
fn autobahn_7_1_1_close_is_answered_with_close_and_nothing_after_it_is_read() {
    let stream = [
        masked(Opcode::Binary, &ping(1)),
        masked(Opcode::Close, &1000u16.to_be_bytes()),
        masked(Opcode::Ping, b"after"),
        masked(Opcode::Binary, &ping(2)),
    ]
    .concat();
    let mut conn = WsConn::upgraded();
    let outcome = run_in_reads(&mut conn, &stream, stream.len());
    assert!(outcome.peer_closed);
    assert_eq!(outcome.delivered, ping(1));
    assert!(outcome.sent.is_empty(), "no Pong after Close");
    assert_eq!(conn.phase(), Phase::Closing);
    assert!(!conn.wants_input());
    // Once the session is done, the reactor finishes: our Close echoes the code.
    conn.finish(code::NORMAL);
    let close = server_frames(conn.tx());
    assert_eq!(close.len(), 1);
    assert_eq!((close[0].0, close[0].1), (true, 0x8));
    assert_eq!(close[0].2[..2], 1000u16.to_be_bytes());
    // Only once, and nothing after it.
    conn.finish(code::NORMAL);
    assert_eq!(server_frames(conn.tx()).len(), 1);
    assert!(conn.header(&ping(3)).is_none(), "data after our Close");
    let mut out = Vec::new();
    conn.wrap(&mut out, &ping(3));
    assert!(out.is_empty());
}

#[test]
fn autobahn_7_3_1_empty_close_is_answered_normal() {
    let mut conn = WsConn::upgraded();
    assert!(run_in_reads(&mut conn, &masked(Opcode::Close, b""), 64).peer_closed);
    conn.finish(code::GOING_AWAY);
    assert_eq!(server_frames(conn.tx())[0].2[..2], 1000u16.to_be_bytes());
}

#[test]
fn autobahn_7_3_2_one_byte_close_fails_1002() {
    fails_with(&masked(Opcode::Close, &[0x03]), code::PROTOCOL_ERROR);
}

#[test]
fn autobahn_7_3_4_and_7_3_5_close_with_reason_echoes_the_code() {
    for reason in [&b"bye"[..], &[b'r'; 123]] {
        let mut conn = WsConn::upgraded();
        let payload = [&3000u16.to_be_bytes()[..], reason].concat();
        assert!(run_in_reads(&mut conn, &masked(Opcode::Close, &payload), 200).peer_closed);
        conn.finish(code::NORMAL);
        assert_eq!(server_frames(conn.tx())[0].2[..2], 3000u16.to_be_bytes());
    }
}

#[test]
fn autobahn_7_3_6_close_over_125_bytes_fails_1002() {
    let payload = [&1000u16.to_be_bytes()[..], &[b'r'; 124]].concat();
    fails_with(&masked(Opcode::Close, &payload), code::PROTOCOL_ERROR);
}

#[test]
fn autobahn_7_5_1_close_reason_not_utf8_fails_1007() {
    let payload = [
        &1000u16.to_be_bytes()[..],
        &[
            0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80,
        ],
    ]
    .concat();
    fails_with(&masked(Opcode::Close, &payload), code::INVALID_PAYLOAD);
}

#[test]
fn autobahn_7_7_valid_close_codes_are_echoed() {
    for close in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ] {
        let mut conn = WsConn::upgraded();
        let outcome = run_in_reads(
            &mut conn,
            &masked(Opcode::Close, &u16::to_be_bytes(close)),
            64,
        );
        assert!(outcome.peer_closed, "{close}");
        conn.finish(code::NORMAL);
        assert_eq!(server_frames(conn.tx())[0].2[..2], close.to_be_bytes());
    }
}

#[test]
fn autobahn_7_9_invalid_close_codes_fail_1002() {
    for close in [
        0, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        fails_with(
            &masked(Opcode::Close, &u16::to_be_bytes(close)),
            code::PROTOCOL_ERROR,
        );
    }
}

#[test]
fn a_failed_connection_closes_with_the_error_code_and_reads_no_more() {
    let mut conn = WsConn::upgraded();
    let outcome = run_in_reads(&mut conn, &masked(Opcode::Text, b"hi"), 64);
    assert_eq!(outcome.error.map(|e| e.code), Some(code::UNSUPPORTED_DATA));
    let later = run_in_reads(&mut conn, &masked(Opcode::Ping, b"x"), 64);
    assert_eq!(later, Run::default(), "read on after failing");
    conn.finish(code::POLICY);
    let close = server_frames(conn.tx());
    assert_eq!(close[0].2[..2], code::UNSUPPORTED_DATA.to_be_bytes());
    assert_eq!(&close[0].2[2..], b"binary messages only");
}

#[test]
fn input_waits_while_bytes_are_owed_to_the_socket() {
    let mut conn = WsConn::upgraded();
    let mut buf = masked(Opcode::Ping, b"p");
    conn.receive(&mut buf, LIMIT, |_| {}).unwrap();
    assert!(!conn.wants_input(), "reads on with a Pong unsent");
    conn.drain_tx(1);
    assert!(!conn.wants_input());
    conn.drain_tx(usize::MAX);
    assert!(conn.wants_input());
}

#[test]
fn an_idle_connection_holds_no_heap_buffer() {
    let mut conn = WsConn::upgraded();
    let p = ping(5);
    let frame = masked(Opcode::Binary, &p);
    let outcome = run_in_reads(
        &mut conn,
        &[frame.clone(), masked(Opcode::Ping, b"")].concat(),
        4,
    );
    assert_eq!(outcome.delivered, p);
    assert!(conn.rx().is_empty() && conn.tx().is_empty());
    assert_eq!(conn.queued_bytes(), 0);
    // A partial frame is kept, and freed again once whole.
    let _ = run_in_reads(&mut conn, &frame[..3], 3);
    assert!(conn.queued_bytes() > 0);
    let _ = run_in_reads(&mut conn, &frame[3..], 64);
    assert_eq!(conn.queued_bytes(), 0);
}

#[test]
fn server_headers_use_7_16_and_64_bit_lengths() {
    let cases = [
        (0, 2),
        (125, 2),
        (126, 4),
        (65_535, 4),
        (65_536, 10),
        (1 << 33, 10),
    ];
    for (len, header_len) in cases {
        let header = Header::new(true, Opcode::Binary, len);
        assert_eq!(header.as_bytes().len(), header_len, "{len}");
        assert_eq!(header.as_bytes()[0], 0x82);
    }
    let header = Header::new(false, Opcode::Continuation, 65_536);
    assert_eq!(header.as_bytes(), [0x00, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    let mut wire = header.as_bytes().to_vec();
    wire.resize(10 + 65_536, 0);
    assert_eq!(server_frames(&wire)[0].2.len(), 65_536);
}

#[test]
fn wrap_marks_fin_only_at_protocol_frame_boundaries() {
    let stream = [ping(1), message_of(100), ping(2)].concat();
    let mut wrapper = Wrapper::default();
    let mut wire = Vec::new();
    // Cut inside the second frame, then at the end of it, then the rest.
    for part in [&stream[..20], &stream[20..113], &stream[113..]] {
        wrapper.wrap(&mut wire, part);
    }
    let frames = server_frames(&wire);
    let shape: Vec<(bool, u8)> = frames.iter().map(|f| (f.0, f.1)).collect();
    assert_eq!(shape, [(false, 0x2), (true, 0x0), (true, 0x2)]);
    let payload: Vec<u8> = frames.into_iter().flat_map(|f| f.2).collect();
    assert_eq!(payload, stream);
    assert!(!wrapper.in_message());
}

#[test]
fn wrap_carries_a_frame_larger_than_one_chunk_in_one_message() {
    let big = message_of(100_000);
    let mut wrapper = Wrapper::default();
    let mut wire = Vec::new();
    for chunk in big.chunks(16 * 1024) {
        wrapper.wrap(&mut wire, chunk);
    }
    let frames = server_frames(&wire);
    assert!(
        frames.iter().rev().skip(1).all(|f| !f.0),
        "FIN inside the frame"
    );
    assert!(frames.last().unwrap().0);
    assert_eq!(frames.iter().filter(|f| f.1 == 0x2).count(), 1);
}

#[test]
fn boundary_follows_a_length_prefix_split_across_calls() {
    let stream = [ping(1), ping(2)].concat();
    for cut in 0..=stream.len() {
        for cut2 in cut..=stream.len() {
            let mut b = Boundary::default();
            b.advance(&stream[..cut]);
            b.advance(&stream[cut..cut2]);
            let at_end = cut2 == 0 || cut2 == 13 || cut2 == 26;
            assert_eq!(b.at_boundary(), at_end, "{cut} {cut2}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any payload, any mask, any length form, any read size: the bytes come back unmasked.
    #[test]
    fn masking_round_trips(
        payload in proptest::collection::vec(any::<u8>(), 0..70_000),
        mask in any::<[u8; 4]>(),
        form in prop_oneof![Just(LengthForm::Shortest), Just(LengthForm::Bits16), Just(LengthForm::Bits64)],
        read in 64usize..5000,
    ) {
        let form = if form == LengthForm::Bits16 && payload.len() > 65_535 { LengthForm::Bits64 } else { form };
        let frame = client_frame(0x82, Some(mask), &payload, form);
        let mut buf = frame.clone();
        let parsed = parse(&mut buf, usize::MAX).unwrap().unwrap();
        prop_assert_eq!(parsed.consumed, frame.len());
        prop_assert_eq!(&buf[parsed.payload], &payload[..]);
        // Masking the unmasked bytes again gives back the wire.
        let again = client_frame(0x82, Some(mask), &payload, form);
        prop_assert_eq!(again, frame.clone());
        // Through a connection in reads: a message of whole protocol frames comes out whole.
        let message = message_of(payload.len().clamp(5, LIMIT));
        let frame = client_frame(0x82, Some(mask), &message, form);
        let mut conn = WsConn::upgraded();
        let outcome = run_in_reads(&mut conn, &frame, read);
        prop_assert_eq!(outcome.error, None);
        prop_assert_eq!(outcome.delivered, message);
    }
}
