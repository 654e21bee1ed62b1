//! What version 2 added to the codec (`protocol-v2.md`): HELLO read by its version, WHO,
//! WATCH, MEMBERS, PRESENCE, FORBIDDEN and STALE_ID, each to the byte, with their
//! truncations and leftovers; the version 1 deframers' refusal of the new kinds; and the
//! MEMBERS encoder that fits a list into `max_frame`.

use proptest::prelude::*;

use super::super::codec::encode_members;
use super::*;

/// One example per frame version 2 added or changed, with its hand-computed encoding.
#[rustfmt::skip] // a table: one frame and its bytes per line
fn client_examples_v2() -> Vec<(ClientFrame<'static>, Vec<u8>)> {
    vec![
        (ClientFrame::Hello { version: 2, user: "al", token: "pw", client: 0x0102_0304_0506_0708 },
            hex("00000012 01 02 0002 616c 0002 7077 0102030405060708")),
        (ClientFrame::Who { room: "#a" },
            hex("00000005 07 0002 2361")),
        (ClientFrame::Watch { room: "#a", on: 1 },
            hex("00000006 08 0002 2361 01")),
    ]
}

/// One `UserList` of the names given, leaked for the examples' `'static` frames.
fn users(names: &[&str]) -> UserList<'static> {
    let mut wire = Vec::new();
    let count = UserList::write(names.iter().copied(), &mut wire);
    UserList::from_wire(count, wire.leak()).expect("a written list reads back")
}

#[rustfmt::skip] // a table: one frame and its bytes per line
fn server_examples_v2() -> Vec<(ServerFrame<'static>, Vec<u8>)> {
    vec![
        (ServerFrame::Members { room: "#a", total: 3, users: users(&["al", "bo"]) },
            hex("00000013 88 0002 2361 00000003 0002 0002 616c 0002 626f")),
        (ServerFrame::Presence { room: "#a", user: "bo", here: true },
            hex("0000000a 89 0002 2361 0002 626f 01")),
        (ServerFrame::Presence { room: "#a", user: "bo", here: false },
            hex("0000000a 89 0002 2361 0002 626f 00")),
        (ServerFrame::Error { code: ErrorCode::Forbidden.as_u16(), reference: 7, message: "no" },
            hex("0000000f 87 0010 0000000000000007 0002 6e6f")),
        (ServerFrame::Error { code: ErrorCode::StaleId.as_u16(), reference: 3, message: "no" },
            hex("0000000f 87 0011 0000000000000003 0002 6e6f")),
    ]
}

#[test]
fn every_v2_frame_encodes_to_contract_bytes_and_back() {
    for (frame, wire) in &client_examples_v2() {
        let mut out = Vec::new();
        encode_client(frame, &mut out);
        assert_eq!(&out, wire, "{frame:?}");
        assert_eq!(decode_client(wire).as_ref(), Ok(frame));
    }
    for (frame, wire) in &server_examples_v2() {
        let mut out = Vec::new();
        encode_server(frame, &mut out);
        assert_eq!(&out, wire, "{frame:?}");
        assert_eq!(decode_server(wire).as_ref(), Ok(frame));
    }
    let kinds: Vec<u8> = client_examples_v2().iter().map(|(f, _)| f.kind()).collect();
    assert_eq!(kinds, [kind::HELLO, kind::WHO, kind::WATCH]);
}

/// The examples of the "Version 2" section of docs/protocol.md, byte for byte.
#[test]
fn the_examples_in_docs_protocol_md_are_what_the_codec_writes() {
    let mut out = Vec::new();
    let hello = ClientFrame::Hello {
        version: 2,
        user: "alice",
        token: "s3cret",
        client: 0x8f3a_1c5e_9b7d_2046,
    };
    encode_client(&hello, &mut out);
    assert_eq!(
        out,
        hex("00000019 01 02 0005 616c696365 0006 733363726574 8f3a1c5e9b7d2046")
    );
    out.clear();
    encode_client(&ClientFrame::Who { room: "#general" }, &mut out);
    assert_eq!(out, hex("0000000b 07 0008 2367656e6572616c"));
    out.clear();
    encode_client(
        &ClientFrame::Watch {
            room: "#general",
            on: 1,
        },
        &mut out,
    );
    assert_eq!(out, hex("0000000c 08 0008 2367656e6572616c 01"));
    out.clear();
    encode_members("#general", 2, ["alice", "bob"], DEFAULT_MAX_FRAME, &mut out);
    let members = "0000001d 88 0008 2367656e6572616c 00000002 0002 0005 616c696365 0003 626f62";
    assert_eq!(out, hex(members));
    out.clear();
    let presence = ServerFrame::Presence {
        room: "#general",
        user: "carol",
        here: true,
    };
    encode_server(&presence, &mut out);
    assert_eq!(
        out,
        hex("00000013 89 0008 2367656e6572616c 0005 6361726f6c 01")
    );
    for (code, reference, message, wire) in [
        (
            ErrorCode::Forbidden,
            7,
            "forbidden",
            "00000016 87 0010 0000000000000007 0009 666f7262696464656e",
        ),
        (
            ErrorCode::StaleId,
            3,
            "stale id",
            "00000015 87 0011 0000000000000003 0008 7374616c65206964",
        ),
        (
            ErrorCode::Invalid,
            0,
            "WHO/WATCH not implemented yet",
            "0000002a 87 0007 0000000000000000 001d 57484f2f5741544348206e6f7420696d706c656d656e74656420796574",
        ),
    ] {
        out.clear();
        encode_server(
            &ServerFrame::Error {
                code: code.as_u16(),
                reference,
                message,
            },
            &mut out,
        );
        assert_eq!(out, hex(wire), "{code}");
    }
}

#[test]
fn a_members_list_reads_back_in_order() {
    let wire = hex("00000013 88 0002 2361 00000003 0002 0002 616c 0002 626f");
    let Ok(ServerFrame::Members { room, total, users }) = decode_server(&wire) else {
        panic!("not a MEMBERS");
    };
    assert_eq!((room, total, users.len()), ("#a", 3, 2));
    assert_eq!(users.iter().collect::<Vec<_>>(), ["al", "bo"]);
    assert_eq!(format!("{users:?}"), r#"["al", "bo"]"#);
    let none = hex("0000000b 88 0002 2361 00000000 0000");
    let Ok(ServerFrame::Members { users, .. }) = decode_server(&none) else {
        panic!("not a MEMBERS");
    };
    assert!(users.is_empty() && users.iter().next().is_none());
}

#[test]
fn hello_is_read_by_its_version() {
    // Version 1 with a client id behind its token: the id is bytes left over.
    assert_client_malformed(
        "00000012 01 01 0002 616c 0002 7077 0102030405060708",
        LEFTOVER,
    );
    // Version 2 without its client id, or with a short one, or with a byte more.
    assert_client_malformed("0000000a 01 02 0002 616c 0002 7077", TOO_SHORT);
    assert_client_malformed(
        "00000011 01 02 0002 616c 0002 7077 01020304050607",
        TOO_SHORT,
    );
    assert_client_malformed(
        "00000013 01 02 0002 616c 0002 7077 0102030405060708 00",
        LEFTOVER,
    );
    // No version byte at all.
    assert_client_malformed("00000001 01", TOO_SHORT);
    assert_eq!(
        decode_client(&hex("0000000a 01 01 0002 616c 0002 7077")),
        Ok(ClientFrame::Hello {
            version: 1,
            user: "al",
            token: "pw",
            client: 0
        })
    );
}

#[test]
fn hello_of_another_version_is_kept_unread() {
    // Whatever follows the version byte, even what no version could parse, is kept as it
    // came, so that the session answers UNSUPPORTED_VERSION and never MALFORMED.
    for (wire, version, rest) in [
        (
            "0000000a 01 03 0002 616c 0002 7077",
            3,
            &hex("0002 616c 0002 7077")[..],
        ),
        ("00000002 01 00", 0, &[][..]),
        ("00000005 01 ff ffff 00", 0xff, &[0xff, 0xff, 0][..]),
        ("00000004 01 09 0005", 9, &[0, 5][..]),
    ] {
        let wire = hex(wire);
        assert_eq!(
            decode_client(&wire),
            Ok(ClientFrame::HelloUnsupported { version, rest }),
            "{wire:02x?}"
        );
        let mut again = Vec::new();
        encode_client(&ClientFrame::HelloUnsupported { version, rest }, &mut again);
        assert_eq!(again, wire);
    }
    // The encoder writes a HELLO of another version in version 1's layout, client left out.
    let mut out = Vec::new();
    let hello = ClientFrame::Hello {
        version: 3,
        user: "al",
        token: "pw",
        client: 9,
    };
    encode_client(&hello, &mut out);
    assert_eq!(out, hex("0000000a 01 03 0002 616c 0002 7077"));
}

#[test]
fn every_cut_into_a_v2_frame_is_malformed() {
    let client = client_examples_v2().into_iter().map(|(_, wire)| wire);
    let server = server_examples_v2().into_iter().map(|(_, wire)| wire);
    for wire in client.chain(server) {
        let (kind, body) = (wire[HEADER_LEN], &wire[HEADER_LEN + 1..]);
        for cut in 0..body.len() {
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
fn every_strict_prefix_of_a_v2_frame_needs_more() {
    let to_server = Deframer::for_server_in(Version::V2, DEFAULT_MAX_FRAME);
    let to_client = Deframer::for_client_in(Version::V2, DEFAULT_MAX_FRAME);
    let client = client_examples_v2()
        .into_iter()
        .map(|(_, w)| (to_server, w));
    let server = server_examples_v2()
        .into_iter()
        .map(|(_, w)| (to_client, w));
    for (deframer, wire) in client.chain(server) {
        for cut in 0..wire.len() {
            assert_eq!(
                deframer.next(&wire[..cut]),
                Ok(Decoded::NeedMore),
                "{wire:02x?} at {cut}"
            );
        }
    }
}

#[test]
fn bytes_after_the_last_v2_field_are_malformed() {
    assert_client_malformed("00000006 07 0002 2361 00", LEFTOVER);
    assert_client_malformed("00000007 08 0002 2361 01 00", LEFTOVER);
    assert_server_malformed("0000000b 89 0002 2361 0002 626f 01 00", LEFTOVER);
    // One user announced, two on the wire.
    assert_server_malformed(
        "00000013 88 0002 2361 00000003 0001 0002 616c 0002 626f",
        LEFTOVER,
    );
}

#[test]
fn malformed_v2_bodies() {
    assert_client_malformed("00000005 08 0002 2361", TOO_SHORT);
    assert_client_malformed("00000004 07 0005 61", STR_PAST_BODY);
    // Three users announced, two on the wire.
    assert_server_malformed(
        "00000013 88 0002 2361 00000003 0003 0002 616c 0002 626f",
        TOO_SHORT,
    );
    assert_server_malformed(
        "0000000f 88 0002 2361 00000001 0001 0002 c328",
        STR_NOT_UTF8,
    );
    assert_server_malformed("00000009 88 0002 2361 00000001", TOO_SHORT);
    let here = "0000000a 89 0002 2361 0002 626f 02";
    assert_server_malformed(here, "PRESENCE here is neither 0 nor 1");
}

#[test]
fn watch_carries_any_on_byte_for_the_session_to_judge() {
    // `on` outside {0, 1} is a bad field value (INVALID, not fatal), not a bad body.
    assert_eq!(
        decode_client(&hex("00000006 08 0002 2361 07")),
        Ok(ClientFrame::Watch { room: "#a", on: 7 })
    );
}

#[test]
fn version_1_deframers_refuse_v2_kinds_from_the_kind_byte() {
    let v1 = [
        Deframer::for_server(DEFAULT_MAX_FRAME),
        Deframer::for_client(DEFAULT_MAX_FRAME),
    ];
    let v2 = [
        Deframer::for_server_in(Version::V2, DEFAULT_MAX_FRAME),
        Deframer::for_client_in(Version::V2, DEFAULT_MAX_FRAME),
    ];
    for (i, kinds) in [[kind::WHO, kind::WATCH], [kind::MEMBERS, kind::PRESENCE]]
        .iter()
        .enumerate()
    {
        for &k in kinds {
            // The kind byte alone, the 9 body bytes it announces never sent.
            let header = [0, 0, 0, 10, k];
            assert_eq!(
                refusal(v1[i], &header),
                Some(ErrorCode::UnknownKind),
                "{k:#x}"
            );
            assert_eq!(v2[i].next(&header), Ok(Decoded::NeedMore), "{k:#x}");
            // Never the other direction's.
            assert_eq!(
                refusal(v2[1 - i], &header),
                Some(ErrorCode::UnknownKind),
                "{k:#x}"
            );
        }
    }
    for unknown in [0x00, 0x09, 0x3f, 0x80, 0x8a, 0xff] {
        let header = [0, 0, 0, 9, unknown];
        for deframer in v2 {
            assert_eq!(
                refusal(deframer, &header),
                Some(ErrorCode::UnknownKind),
                "{unknown:#x}"
            );
        }
    }
    assert_eq!(v1[0].version(), Version::V1);
    assert_eq!(v2[0].version(), Version::V2);
}

#[test]
fn kinds_know_their_version() {
    for k in kind::HELLO..=kind::BYE {
        assert_eq!(kind::introduced_in(k), Some(Version::V1));
        assert!(kind::is_client_in(Version::V1, k) && kind::is_client_in(Version::V2, k));
    }
    for k in [kind::WHO, kind::WATCH] {
        assert_eq!(kind::introduced_in(k), Some(Version::V2));
        assert!(kind::is_client(k) && !kind::is_server(k));
        assert!(!kind::is_client_in(Version::V1, k) && kind::is_client_in(Version::V2, k));
    }
    for k in [kind::MEMBERS, kind::PRESENCE] {
        assert_eq!(kind::introduced_in(k), Some(Version::V2));
        assert!(kind::is_server(k) && !kind::is_client(k));
        assert!(!kind::is_server_in(Version::V1, k) && kind::is_server_in(Version::V2, k));
    }
    assert_eq!(kind::introduced_in(0x09), None);
    assert_eq!(kind::introduced_in(0x8a), None);
    assert_eq!(Version::from_wire(2), Some(Version::V2));
    assert_eq!(Version::from_wire(3), None);
    assert!(Version::V1 < Version::V2 && Version::V2.as_u8() == 2);
}

#[test]
fn forbidden_and_stale_id_are_codes_16_and_17() {
    assert_eq!(
        (ErrorCode::Forbidden.as_u16(), ErrorCode::Forbidden.name()),
        (16, "FORBIDDEN")
    );
    assert_eq!(
        (ErrorCode::StaleId.as_u16(), ErrorCode::StaleId.name()),
        (17, "STALE_ID")
    );
    assert_eq!(ErrorCode::from_u16(16), Some(ErrorCode::Forbidden));
    assert_eq!(ErrorCode::from_u16(17), Some(ErrorCode::StaleId));
    assert_eq!(ErrorCode::from_u16(18), None);
    assert_eq!(ErrorCode::StaleId.to_string(), "STALE_ID");
    let codes: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.as_u16()).collect();
    assert_eq!(codes, (1..=17).collect::<Vec<_>>());
}

/// The `length` of a MEMBERS of `room` listing `users`.
fn members_length(room: &str, users: &[&str]) -> usize {
    1 + 2 + room.len() + 4 + 2 + users.iter().map(|u| 2 + u.len()).sum::<usize>()
}

/// Encodes a MEMBERS with [`encode_members`] and reads it back: (count returned, total, users).
fn fit(room: &str, total: u32, all: &[&str], max_frame: u32) -> (u16, u32, Vec<String>) {
    let mut wire = Vec::new();
    let count = encode_members(room, total, all.iter().copied(), max_frame, &mut wire);
    let raw = raw_frame(Deframer::for_client_in(Version::V2, u32::MAX), &wire);
    assert_eq!(raw.wire_len, wire.len());
    let Ok(ServerFrame::Members {
        room: r,
        total,
        users,
    }) = parse_server(&raw)
    else {
        panic!("not a MEMBERS: {wire:02x?}");
    };
    assert_eq!((r, users.len()), (room, usize::from(count)));
    (count, total, users.iter().map(String::from).collect())
}

#[test]
fn members_lists_the_sorted_prefix_that_fits_max_frame() {
    let all = ["al", "bo", "cy"];
    // 11 bytes with no user, 4 more per two-letter user.
    assert_eq!(members_length("#a", &[]), 11);
    assert_eq!(
        fit("#a", 3, &all, DEFAULT_MAX_FRAME),
        (3, 3, vec!["al".into(), "bo".into(), "cy".into()])
    );
    assert_eq!(fit("#a", 3, &all, 23).0, 3);
    assert_eq!(
        fit("#a", 3, &all, 22),
        (2, 3, vec!["al".into(), "bo".into()])
    );
    assert_eq!(fit("#a", 3, &all, 19).0, 2);
    assert_eq!(fit("#a", 3, &all, 18).0, 1);
    // `total` is what the caller says there are, listed or not.
    assert_eq!(fit("#a", 1000, &all, 15), (1, 1000, vec!["al".into()]));
    assert_eq!(fit("#a", 3, &all, 11).0, 0);
    // Below even the frame with no user: still a MEMBERS, with none.
    assert_eq!(fit("#a", 3, &all, 4), (0, 3, vec![]));
}

#[test]
fn members_of_the_longest_names_fit_the_least_max_frame() {
    // 64-byte room, 32-byte users, the CLI's least --max-frame (256): 73 + 34 per user.
    let room = "r".repeat(64);
    let names: Vec<String> = (0..10).map(|i| format!("{i}{}", "u".repeat(31))).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (count, total, _) = fit(&room, 10, &names, 256);
    assert_eq!((count, total), (5, 10));
    assert!(members_length(&room, &names[..5]) <= 256 && members_length(&room, &names[..6]) > 256);
}

proptest! {
    #[test]
    fn members_never_exceeds_max_frame_and_stops_only_when_full(
        names in prop::collection::btree_set("[a-z]{1,32}", 0..40),
        room in "[a-z#]{1,64}",
        max_frame in 73u32..1024,
    ) {
        let all: Vec<&str> = names.iter().map(String::as_str).collect();
        let total = u32::try_from(all.len()).unwrap_or(u32::MAX);
        let (count, got_total, listed) = fit(&room, total, &all, max_frame);
        let n = usize::from(count);
        prop_assert_eq!(got_total, total);
        prop_assert_eq!(&listed, &all[..n]);
        prop_assert!(members_length(&room, &all[..n]) <= max_frame as usize);
        if n < all.len() {
            prop_assert!(members_length(&room, &all[..=n]) > max_frame as usize);
        }
    }
}
