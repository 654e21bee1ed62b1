//! Record format 2 in the log: keys written with their messages come back to the dedupe
//! table, and a log written in format 1 is read as it is and never appended to.

use std::num::NonZeroU64;
use std::sync::Arc;

use super::format::{RecordKey, SegmentHeader, VERSION, VERSION_1, encode_keyed_record};
use super::tests::{limits, msg};
use super::{LogWriter, RecoveryMode, list_segments, recover, segment_path};
use crate::dedupe::{Seen, SendKey};
use crate::room::{RingLimits, Rooms};

const EPOCH: u64 = 1;
const RING: RingLimits = RingLimits {
    messages: 100,
    bytes: 1 << 20,
};
/// The records' time in [`msg`].
const TS: u64 = 1_700_000_000_000;

fn key(client: u64, id: u64) -> Option<RecordKey> {
    Some(RecordKey {
        client: NonZeroU64::new(client).expect("non-zero"),
        id,
    })
}

fn alice(client: u64) -> SendKey {
    SendKey {
        // `msg` writes user "u".
        user: Arc::from("u"),
        client: NonZeroU64::new(client).expect("non-zero"),
    }
}

/// A format 1 segment holding `count` messages of `#a`, as an older chatd left it.
fn format_1_log(dir: &std::path::Path, count: u64) {
    std::fs::create_dir_all(dir).expect("log dir");
    let mut file = SegmentHeader {
        epoch: EPOCH,
        id: 1,
    }
    .encode_format(VERSION_1)
    .to_vec();
    for seq in 1..=count {
        super::format::encode_record(&msg("#a", seq, "old"), &mut file);
    }
    std::fs::write(segment_path(dir, 1), file).expect("write segment");
}

fn format_of(path: &std::path::Path) -> u32 {
    let bytes = std::fs::read(path).expect("read segment");
    SegmentHeader::decode_with_format(&bytes)
        .expect("a header")
        .1
}

#[test]
fn a_format_1_log_is_read_and_the_writer_goes_on_in_a_fresh_format_2_segment() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    format_1_log(dir, 3);
    let before = std::fs::read(segment_path(dir, 1)).expect("read");
    let recovered = recover(dir, EPOCH, RecoveryMode::TolerateTornTail).expect("recover");
    assert_eq!(recovered.records, 3);
    assert_eq!(
        recovered.segments.first().map(|s| s.format),
        Some(VERSION_1)
    );
    let rooms = Rooms::new(10, 1, RING);
    for (name, h) in &recovered.rooms {
        rooms.restore(name, h.first, h.head, h.index.clone());
    }
    let mut log = LogWriter::open(dir, EPOCH, limits(1 << 20), &recovered, &rooms).expect("open");
    let mut batch = Vec::new();
    encode_keyed_record(&msg("#a", 4, "new"), key(9, 1), &mut batch);
    log.next_pos().expect("pos");
    log.write(&batch, std::time::Instant::now()).expect("write");
    drop(log);
    assert_eq!(
        std::fs::read(segment_path(dir, 1)).expect("read"),
        before,
        "the format 1 segment was left as it was"
    );
    let segments = list_segments(dir).expect("list");
    assert_eq!(segments.len(), 2);
    assert_eq!(format_of(&segments[1].1), VERSION);
    let again = recover(dir, EPOCH, RecoveryMode::TolerateTornTail).expect("recover again");
    assert_eq!(again.records, 4);
    assert_eq!(again.dedupe.seen(&alice(9), 1, TS), Seen::Stored(4));
}

#[test]
fn a_keyed_record_in_a_format_1_segment_is_damage() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    format_1_log(dir, 2);
    let mut bytes = std::fs::read(segment_path(dir, 1)).expect("read");
    encode_keyed_record(&msg("#a", 3, "odd"), key(9, 1), &mut bytes);
    std::fs::write(segment_path(dir, 1), bytes).expect("write");
    let err = recover(dir, EPOCH, RecoveryMode::ReadOnly).expect_err("refused");
    assert!(err.to_string().contains("format 1"), "{err}");
}

#[test]
fn recovery_remembers_the_last_64_ids_of_each_client_with_their_seqs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir_all(dir).expect("log dir");
    let mut file = SegmentHeader {
        epoch: EPOCH,
        id: 1,
    }
    .encode()
    .to_vec();
    for seq in 1..=200 {
        // Client 1 sends the even seqs, client 2 the odd ones, each with id = seq; every
        // fifth message has no key (a version 1 sender).
        let key = if seq % 5 == 0 {
            None
        } else {
            key(1 + seq % 2, seq)
        };
        encode_keyed_record(&msg("#a", seq, "m"), key, &mut file);
    }
    std::fs::write(segment_path(dir, 1), file).expect("write segment");
    let r = recover(dir, EPOCH, RecoveryMode::ReadOnly).expect("recover");
    assert_eq!(r.dedupe.len(), 2);
    assert_eq!(r.dedupe.seen(&alice(1), 198, TS), Seen::Stored(198));
    assert_eq!(r.dedupe.seen(&alice(2), 199, TS), Seen::Stored(199));
    // 80 ids each; the 64 newest of client 1 start at 42.
    assert_eq!(r.dedupe.floor(&alice(1)), Some(42));
    assert_eq!(r.dedupe.seen(&alice(1), 38, TS), Seen::Stale);
    assert_eq!(
        r.dedupe.seen(&alice(1), 190, TS),
        Seen::New,
        "sent without a key"
    );
    assert_eq!(r.dedupe.seen(&alice(1), 202, TS), Seen::New);
    // A day after its last record, a pair is unknown.
    assert_eq!(
        r.dedupe.seen(&alice(1), 198, TS + crate::dedupe::KEEP_MS),
        Seen::New
    );
}

#[test]
fn recovery_drops_the_pairs_a_later_record_shows_a_day_old() {
    use crate::protocol::{ServerFrame, encode_server};
    let at = |seq: u64, ts_ms: u64| {
        let mut out = Vec::new();
        let frame = ServerFrame::Msg {
            room: "#a",
            seq,
            ts_ms,
            user: "u",
            text: "m",
        };
        encode_server(&frame, &mut out);
        out
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::create_dir_all(dir).expect("log dir");
    let mut file = SegmentHeader {
        epoch: EPOCH,
        id: 1,
    }
    .encode()
    .to_vec();
    encode_keyed_record(&at(1, TS), key(1, 1), &mut file);
    encode_keyed_record(&at(2, TS + 1000), key(2, 1), &mut file);
    // Client 2 stores again within the day; client 1 does not.
    encode_keyed_record(&at(3, TS + crate::dedupe::KEEP_MS), key(2, 2), &mut file);
    encode_keyed_record(&at(4, TS + crate::dedupe::KEEP_MS + 1), None, &mut file);
    std::fs::write(segment_path(dir, 1), file).expect("write segment");
    let r = recover(dir, EPOCH, RecoveryMode::ReadOnly).expect("recover");
    assert_eq!(
        r.dedupe.len(),
        1,
        "client 1 went quiet a day before the last record"
    );
    let now = TS + crate::dedupe::KEEP_MS + 1;
    assert_eq!(r.dedupe.seen(&alice(2), 1, now), Seen::Stored(2));
    assert_eq!(r.dedupe.seen(&alice(2), 2, now), Seen::Stored(3));
}
