//! Segments made ahead by the preparer: the writer moves into them, recovery finds where their
//! data ends and keeps their zeros, and history is read across them.

use super::archive::{SegmentReader, read_history};
use super::format::encode_record;
use super::recovery::{RecoveryError, RecoveryMode, recover};
use super::tests::{EPOCH, RING, limits, msg, newest_segment, send_to, write_messages};
use super::writer::LogWriter;
use super::{list_segments, segment_path};
use crate::room::Rooms;

const SEGMENT: u64 = 4096;

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).expect("metadata").len()
}

/// A writer that has moved into a prepared segment: writes until its successor is asked
/// for, waits for it, and writes once more (the roll happens before that write).
fn writer_in_a_prepared_segment(dir: &std::path::Path, rooms: &Rooms) -> LogWriter {
    let mut log = write_messages(dir, rooms, "#a", 60, SEGMENT);
    log.wait_prepared();
    send_to(&mut log, rooms, "#a", 1);
    assert!(
        log.preallocated(),
        "the writer moved into the prepared segment"
    );
    log
}

#[test]
fn the_writer_moves_into_a_prepared_segment_and_writes_over_its_zeros() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rooms = Rooms::new(10, 1, RING);
    let log = writer_in_a_prepared_segment(tmp.path(), &rooms);
    let newest = newest_segment(tmp.path());
    assert_eq!(file_len(&newest), SEGMENT, "made at its full size");
    drop(log);
    let recovered = recover(tmp.path(), EPOCH, RecoveryMode::TolerateTornTail).expect("recover");
    assert!(recovered.torn.is_none(), "zeros are no torn tail");
    assert_eq!(
        recovered.rooms.get("#a").map(|h| (h.first, h.head)),
        Some((1, 61))
    );
    let data = recovered.segments.last().map(|s| s.len).expect("a segment");
    assert!(
        data < SEGMENT,
        "the data ends where the zeros begin: {data}"
    );
    assert_eq!(
        file_len(&newest),
        SEGMENT,
        "recovery leaves the zeros in place"
    );
}

#[test]
fn after_a_restart_the_writer_goes_on_over_the_same_zeros() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rooms = Rooms::new(10, 1, RING);
    drop(writer_in_a_prepared_segment(tmp.path(), &rooms));
    let newest = newest_segment(tmp.path());
    let rooms = Rooms::new(10, 1, RING);
    let log = write_messages(tmp.path(), &rooms, "#a", 3, SEGMENT);
    assert!(log.preallocated());
    assert_eq!(
        newest_segment(tmp.path()),
        newest,
        "no new segment for three messages"
    );
    assert_eq!(file_len(&newest), SEGMENT);
    drop(log);
    let recovered = recover(tmp.path(), EPOCH, RecoveryMode::ReadOnly).expect("recover");
    assert_eq!(recovered.rooms.get("#a").map(|h| h.head), Some(64));
    assert_eq!(recovered.records, 64);
}

#[test]
fn full_prepared_segments_roll_and_every_record_is_read_back_in_order() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rooms = Rooms::new(10, 1, RING);
    let mut log = write_messages(tmp.path(), &rooms, "#a", 1, SEGMENT);
    for _ in 0..400 {
        send_to(&mut log, &rooms, "#a", 1);
        // Let the preparer keep up, as it does between real batches.
        log.wait_prepared();
    }
    let prepared = log.stats.prepared_segments;
    drop(log);
    let segments = list_segments(tmp.path()).expect("list");
    assert!(segments.len() > 4, "{} segments", segments.len());
    assert_eq!(
        prepared,
        segments.len() as u64 - 1,
        "every segment after the first was made ahead"
    );
    let recovered = recover(tmp.path(), EPOCH, RecoveryMode::ReadOnly).expect("recover");
    assert!(recovered.torn.is_none());
    assert_eq!(
        recovered.rooms.get("#a").map(|h| (h.first, h.head)),
        Some((1, 401))
    );
    // History read back across every segment boundary, zeros and all.
    let room = rooms.open("#a").expect("room");
    let mut reader = SegmentReader::default();
    let mut next = 1;
    while next <= 401 {
        let frames =
            read_history(tmp.path(), &room, next, 1000, &mut reader).expect("history is there");
        for frame in &frames {
            assert_eq!(frame.as_ref(), msg("#a", next, &format!("message {next}")));
            next += 1;
        }
    }
}

#[test]
fn zeros_then_anything_but_zeros_in_the_newest_segment_are_a_torn_tail_or_damage() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rooms = Rooms::new(10, 1, RING);
    drop(writer_in_a_prepared_segment(tmp.path(), &rooms));
    let newest = newest_segment(tmp.path());
    let data = recover(tmp.path(), EPOCH, RecoveryMode::ReadOnly)
        .expect("recover")
        .segments
        .last()
        .map(|s| s.len)
        .expect("a segment");
    let whole = std::fs::read(&newest).expect("read");

    // Garbage past some zeros: nothing whole after the end of data, so a torn tail.
    let mut torn = whole.clone();
    let at = usize::try_from(data).expect("small") + 100;
    torn[at..at + 5].copy_from_slice(b"junk!");
    std::fs::write(&newest, &torn).expect("write");
    let repaired = recover(tmp.path(), EPOCH, RecoveryMode::TolerateTornTail).expect("repair");
    let cut = repaired.torn.expect("a torn tail");
    assert_eq!((cut.offset, cut.bytes), (data, SEGMENT - data));
    assert_eq!(cut.zeros, SEGMENT - data - 105, "the zeros after the junk");
    assert_eq!(repaired.rooms.get("#a").map(|h| h.head), Some(61));
    assert_eq!(file_len(&newest), data, "cut at the end of the data");

    // A whole record past zeros cannot come from a torn write: damage, refused.
    let mut damaged = whole;
    let mut record = Vec::new();
    encode_record(&msg("#a", 62, "late"), &mut record);
    let at = usize::try_from(data).expect("small") + 64;
    damaged[at..at + record.len()].copy_from_slice(&record);
    std::fs::write(&newest, &damaged).expect("write");
    match recover(tmp.path(), EPOCH, RecoveryMode::TolerateTornTail) {
        Err(RecoveryError::Corrupt { offset, .. }) => assert_eq!(offset, data),
        other => panic!("expected damage, got {other:?}"),
    }
}

#[test]
fn an_older_segment_ending_in_zeros_is_whole() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rooms = Rooms::new(10, 1, RING);
    drop(write_messages(tmp.path(), &rooms, "#a", 3, SEGMENT));
    // An older segment the way an early roll leaves one: data, then zeros to its full size.
    let first = segment_path(tmp.path(), 1);
    let mut bytes = std::fs::read(&first).expect("read");
    bytes.resize(usize::try_from(SEGMENT).expect("small"), 0);
    std::fs::write(&first, &bytes).expect("write");
    let rooms = Rooms::new(10, 1, RING);
    let recovered = recover(tmp.path(), EPOCH, RecoveryMode::TolerateTornTail).expect("recover");
    for (name, h) in &recovered.rooms {
        rooms.restore(name, h.first, h.head, h.index.clone());
    }
    let mut log =
        LogWriter::open(tmp.path(), EPOCH, limits(SEGMENT), &recovered, &rooms).expect("open");
    // Force a roll by filling the rest of the first segment.
    send_to(&mut log, &rooms, "#a", 100);
    drop(log);
    assert!(list_segments(tmp.path()).expect("list").len() >= 2);
    let recovered = recover(tmp.path(), EPOCH, RecoveryMode::ReadOnly).expect("recover");
    assert!(recovered.torn.is_none());
    assert_eq!(recovered.rooms.get("#a").map(|h| h.head), Some(103));
}

#[test]
fn a_new_log_leaves_appending_for_a_small_prepared_segment_first() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rooms = Rooms::new(10, 1, RING);
    let recovered = recover(tmp.path(), EPOCH, RecoveryMode::TolerateTornTail).expect("recover");
    let mut limits = limits(64 << 20);
    limits.fsync = super::writer::FsyncPolicy::Never;
    let mut log = LogWriter::open(tmp.path(), EPOCH, limits, &recovered, &rooms).expect("open");
    // Past the 256 KiB after which a successor is asked for.
    send_to(&mut log, &rooms, "#a", 6000);
    assert!(!log.preallocated(), "a new log starts by appending");
    log.wait_prepared();
    send_to(&mut log, &rooms, "#a", 1);
    assert!(log.preallocated());
    assert_eq!(
        file_len(&newest_segment(tmp.path())),
        8 << 20,
        "made small, to be quick"
    );
    assert_eq!(log.stats.prepared_segments, 1);
}
