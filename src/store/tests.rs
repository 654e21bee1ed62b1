//! Storage tests: the writer and recovery together, with torn tails cut at every byte and
//! damage placed where it hurts.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use super::format::{SEGMENT_HEADER_LEN, encode_record};
use super::recovery::{RecoveryError, RecoveryMode, recover};
use super::writer::{FsyncPolicy, LogWriter, Retention, StoreLimits};
use super::{list_segments, segment_path};
use crate::protocol::{ServerFrame, encode_server};
use crate::room::{RingLimits, Rooms};

pub(super) const EPOCH: u64 = 0xfeed;
pub(super) const RING: RingLimits = RingLimits {
    messages: 1000,
    bytes: 1 << 20,
};

pub(super) fn limits(segment_bytes: u64) -> StoreLimits {
    StoreLimits {
        segment_bytes,
        fsync: FsyncPolicy::Always,
        retention: Retention {
            max_bytes: None,
            max_age: None,
        },
    }
}

pub(super) fn msg(room: &str, seq: u64, text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let frame = ServerFrame::Msg {
        room,
        seq,
        ts_ms: 1_700_000_000_000,
        user: "u",
        text,
    };
    encode_server(&frame, &mut out);
    out
}

/// Writes `count` messages to `room` through a real writer, one batch each, the way the
/// sequencer does, and returns the writer.
pub(super) fn write_messages(
    dir: &Path,
    rooms: &Rooms,
    room: &str,
    count: u64,
    segment_bytes: u64,
) -> LogWriter {
    let recovered = recover(dir, EPOCH, RecoveryMode::TolerateTornTail).expect("recover");
    for (name, h) in &recovered.rooms {
        if rooms.get(name).is_none() {
            rooms.restore(name, h.first, h.head, h.index.clone());
        }
    }
    let mut log =
        LogWriter::open(dir, EPOCH, limits(segment_bytes), &recovered, rooms).expect("open");
    send_to(&mut log, rooms, room, count);
    log
}

pub(super) fn newest_segment(dir: &Path) -> std::path::PathBuf {
    list_segments(dir)
        .expect("list")
        .pop()
        .expect("a segment")
        .1
}

#[test]
fn reopen_recovers_heads_and_appends_after_them() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rooms = Rooms::new(10, 1, RING);
    drop(write_messages(tmp.path(), &rooms, "#a", 5, 1 << 20));
    let rooms = Rooms::new(10, 1, RING);
    drop(write_messages(tmp.path(), &rooms, "#a", 3, 1 << 20));
    let recovered = recover(tmp.path(), EPOCH, RecoveryMode::ReadOnly).expect("recover");
    let h = recovered.rooms.get("#a").expect("room a");
    assert_eq!((h.first, h.head), (1, 8));
    assert_eq!(recovered.records, 8);
    assert!(recovered.torn.is_none());
}

#[test]
fn a_torn_last_record_is_cut_at_every_byte_and_nothing_before_it_is_lost() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rooms = Rooms::new(10, 1, RING);
    drop(write_messages(tmp.path(), &rooms, "#a", 4, 1 << 20));
    let path = newest_segment(tmp.path());
    let whole = std::fs::read(&path).expect("read");
    let mut last = Vec::new();
    encode_record(&msg("#a", 5, "message 5"), &mut last);
    for cut in 0..last.len() {
        let mut torn = whole.clone();
        torn.extend_from_slice(&last[..cut]);
        std::fs::write(&path, &torn).expect("write torn");
        let verify = recover(tmp.path(), EPOCH, RecoveryMode::ReadOnly)
            .expect("torn tail is not corruption");
        // A tail of zeros alone (the high bytes of the length) is indistinguishable from the
        // zeros a prepared segment ends in, and as harmless: the data ends before it and the
        // writer writes over it.
        let only_zeros = last[..cut].iter().all(|&b| b == 0);
        assert_eq!(
            verify.torn.as_ref().map(|t| t.bytes),
            (!only_zeros).then_some(cut as u64),
            "cut {cut}"
        );
        if only_zeros {
            let recovered = recover(tmp.path(), EPOCH, RecoveryMode::TolerateTornTail)
                .expect("zeros are no damage");
            assert_eq!(recovered.rooms.get("#a").map(|h| h.head), Some(4));
            assert_eq!(
                recovered.segments.last().map(|s| s.len),
                Some(whole.len() as u64)
            );
            continue;
        }
        assert_eq!(
            std::fs::read(&path).expect("read").len(),
            torn.len(),
            "verify changes nothing"
        );
        let repaired = recover(tmp.path(), EPOCH, RecoveryMode::TolerateTornTail).expect("repair");
        assert_eq!(
            repaired.rooms.get("#a").map(|h| h.head),
            Some(4),
            "cut {cut}"
        );
        assert_eq!(
            std::fs::read(&path).expect("read"),
            whole,
            "cut {cut}: exactly the tail is cut"
        );
    }
}

#[test]
fn a_bad_byte_in_an_old_segment_is_an_error_naming_file_and_offset() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rooms = Rooms::new(10, 1, RING);
    drop(write_messages(tmp.path(), &rooms, "#a", 200, 4096));
    let segments = list_segments(tmp.path()).expect("list");
    assert!(
        segments.len() >= 3,
        "small segments roll: {}",
        segments.len()
    );
    let (_, oldest) = &segments[0];
    let mut bytes = std::fs::read(oldest).expect("read");
    let at = SEGMENT_HEADER_LEN + 100;
    bytes[at] ^= 0x20;
    std::fs::write(oldest, &bytes).expect("write");
    for mode in [RecoveryMode::ReadOnly, RecoveryMode::TolerateTornTail] {
        match recover(tmp.path(), EPOCH, mode) {
            Err(RecoveryError::Corrupt { path, offset, .. }) => {
                assert_eq!(&path, oldest);
                assert!(
                    offset as usize <= at && offset >= SEGMENT_HEADER_LEN as u64,
                    "offset {offset}"
                );
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }
    assert_eq!(
        std::fs::read(oldest).expect("read"),
        bytes,
        "nothing is repaired behind the tail"
    );
}

#[test]
fn a_missing_middle_segment_is_corruption() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rooms = Rooms::new(10, 1, RING);
    drop(write_messages(tmp.path(), &rooms, "#a", 200, 4096));
    std::fs::remove_file(segment_path(tmp.path(), 2)).expect("remove");
    assert!(matches!(
        recover(tmp.path(), EPOCH, RecoveryMode::ReadOnly),
        Err(RecoveryError::Corrupt { .. })
    ));
}

#[test]
fn a_segment_of_another_epoch_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rooms = Rooms::new(10, 1, RING);
    drop(write_messages(tmp.path(), &rooms, "#a", 3, 1 << 20));
    assert!(matches!(
        recover(tmp.path(), EPOCH + 1, RecoveryMode::ReadOnly),
        Err(RecoveryError::Corrupt { .. })
    ));
}

#[test]
fn retention_deletes_whole_old_segments_and_moves_first() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rooms = Rooms::new(10, 1, RING);
    let recovered = recover(tmp.path(), EPOCH, RecoveryMode::TolerateTornTail).expect("recover");
    let mut limits = limits(4096);
    limits.retention.max_bytes = Some(12_000);
    let mut log = LogWriter::open(tmp.path(), EPOCH, limits, &recovered, &rooms).expect("open");
    send_to(&mut log, &rooms, "#a", 300);
    // Retention runs at each roll and each tick; where the rolls fall depends on when the
    // preparer had the next segment ready, so make sure it has run after the last write.
    log.tick(Instant::now());
    let r = rooms.open("#a").expect("room");
    let on_disk: u64 = list_segments(tmp.path())
        .expect("list")
        .iter()
        .map(|(_, p)| std::fs::metadata(p).expect("meta").len())
        .sum();
    assert!(
        on_disk <= 12_000 + 4096 + 200,
        "retention keeps the log near its limit: {on_disk}"
    );
    // On disk beyond the data: only the zeros ahead in the active segment, if it was prepared.
    let data: u64 = recover(tmp.path(), EPOCH, RecoveryMode::ReadOnly)
        .expect("recover")
        .segments
        .iter()
        .map(|s| s.len)
        .sum();
    assert_eq!(data, log.total_bytes());
    assert!(
        on_disk >= data && on_disk <= data + 4096,
        "{on_disk} vs {data}"
    );
    let (first, head) = r.read(|ring| ring.bounds());
    assert_eq!(head, 300);
    assert!(first > 1, "first follows retention");
    let recovered = recover(tmp.path(), EPOCH, RecoveryMode::ReadOnly).expect("recover");
    assert_eq!(
        recovered.rooms.get("#a").map(|h| (h.first, h.head)),
        Some((first, 300))
    );
}

#[test]
fn a_failed_write_leaves_no_trace() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rooms = Rooms::new(10, 1, RING);
    let mut log = write_messages(tmp.path(), &rooms, "#a", 2, 1 << 20);
    let path = newest_segment(tmp.path());
    let before = std::fs::read(&path).expect("read");
    // Append a partial batch behind the writer's back, as a failed write would leave it, and
    // tell the writer it must cut back: the next position must be where the good data ends.
    OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open")
        .write_all(b"garbage")
        .expect("append");
    let pos = log.next_pos().expect("pos");
    assert_eq!(pos.offset, before.len() as u64);
    let _ = Duration::ZERO;
}

#[test]
fn an_empty_newest_segment_is_not_torn_and_a_partial_header_is_cut_to_empty() {
    // Found by the recovery fuzzer: repair cut a partial header to 0 bytes, after which every
    // recovery still reported a torn tail.
    let tmp = tempfile::tempdir().expect("tmp");
    let rooms = Rooms::new(10, 1, RING);
    drop(write_messages(tmp.path(), &rooms, "#a", 3, 4096));
    let next = segment_path(tmp.path(), 2);
    std::fs::write(&next, b"CHATDLOG\0").expect("partial header");
    let torn = recover(tmp.path(), EPOCH, RecoveryMode::TolerateTornTail).expect("repair");
    let torn = torn.torn.expect("a torn tail");
    assert_eq!((torn.bytes, torn.zeros), (9, 1));
    let again = recover(tmp.path(), EPOCH, RecoveryMode::ReadOnly).expect("verify");
    assert!(again.torn.is_none(), "an empty newest segment is clean");
    assert_eq!(again.rooms.get("#a").map(|h| h.head), Some(3));
    // The writer gives the empty segment its header and carries on.
    let rooms = Rooms::new(10, 1, RING);
    drop(write_messages(tmp.path(), &rooms, "#a", 2, 4096));
    let last = recover(tmp.path(), EPOCH, RecoveryMode::ReadOnly).expect("recover");
    assert_eq!(last.rooms.get("#a").map(|h| h.head), Some(5));
    assert!(last.torn.is_none());
}

#[test]
fn an_empty_older_segment_is_corruption() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rooms = Rooms::new(10, 1, RING);
    drop(write_messages(tmp.path(), &rooms, "#a", 200, 4096));
    std::fs::write(segment_path(tmp.path(), 1), b"").expect("empty the oldest");
    assert!(matches!(
        recover(tmp.path(), EPOCH, RecoveryMode::ReadOnly),
        Err(RecoveryError::Corrupt { .. })
    ));
}

#[test]
fn the_archive_serves_nothing_past_the_rings_head() {
    // A batch the sequencer has written but not yet published (its fsync still running, and
    // it may fail and be cut off): the log holds it, the ring's head does not.
    let tmp = tempfile::tempdir().expect("tmp");
    let rooms = Rooms::new(10, 1, RING);
    let mut log = write_messages(tmp.path(), &rooms, "#a", 5, 1 << 20);
    let mut batch = Vec::new();
    for seq in 6..=7 {
        encode_record(&msg("#a", seq, "not yet durable"), &mut batch);
    }
    log.next_pos().expect("pos");
    log.write(&batch, Instant::now()).expect("write");
    let room = rooms.get("#a").expect("room");
    assert_eq!(room.read(|ring| ring.head()), 5);
    let mut reader = super::archive::SegmentReader::default();
    let frames =
        super::archive::read_history(tmp.path(), &room, 1, 100, &mut reader).expect("history");
    let served: Vec<Vec<u8>> = frames.iter().map(|f| f.to_vec()).collect();
    let durable: Vec<Vec<u8>> = (1..=5)
        .map(|seq| msg("#a", seq, &format!("message {seq}")))
        .collect();
    assert_eq!(served, durable, "only seqs 1..=5 are durable");
    assert!(
        super::archive::read_history(tmp.path(), &room, 6, 100, &mut reader).is_err(),
        "seq 6 is not durable yet"
    );
}

#[test]
fn a_roll_syncs_the_old_segment_even_under_fsync_never() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rooms = Rooms::new(10, 1, RING);
    let recovered = recover(tmp.path(), EPOCH, RecoveryMode::TolerateTornTail).expect("recover");
    let mut limits = limits(4096);
    limits.fsync = FsyncPolicy::Never;
    let mut log = LogWriter::open(tmp.path(), EPOCH, limits, &recovered, &rooms).expect("open");
    send_to(&mut log, &rooms, "#a", 200);
    let rolls = list_segments(tmp.path()).expect("list").len() as u64 - 1;
    assert!(rolls >= 2, "small segments roll: {rolls}");
    assert_eq!(log.stats.fsyncs, rolls, "one sync per roll, none per batch");
}

/// The offset of each record in a segment written by `write_messages`.
fn record_offsets(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).expect("read");
    let mut at = SEGMENT_HEADER_LEN;
    let mut offsets = Vec::new();
    while let Ok((_, used)) = super::format::decode_record(&bytes[at..]) {
        offsets.push(at as u64);
        at += used;
    }
    offsets
}

#[test]
fn a_bad_byte_mid_newest_segment_refuses_to_start_and_only_force_cuts_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rooms = Rooms::new(10, 1, RING);
    drop(write_messages(tmp.path(), &rooms, "#a", 10, 1 << 20));
    let path = newest_segment(tmp.path());
    let offsets = record_offsets(&path);
    let at = offsets[4];
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[at as usize + 20] ^= 0x04;
    std::fs::write(&path, &bytes).expect("write");
    for mode in [RecoveryMode::ReadOnly, RecoveryMode::TolerateTornTail] {
        match recover(tmp.path(), EPOCH, mode) {
            Err(RecoveryError::Corrupt {
                path: p,
                offset,
                reason,
            }) => {
                assert_eq!((&p, offset), (&path, at), "{mode:?}");
                assert!(reason.contains("5 whole records"), "{reason}");
            }
            other => panic!("{mode:?}: expected corruption, got {other:?}"),
        }
        assert_eq!(std::fs::read(&path).expect("read"), bytes, "{mode:?}");
    }
    let forced = recover(tmp.path(), EPOCH, RecoveryMode::ForceTruncate).expect("force");
    let cut = forced.torn.expect("a cut");
    assert_eq!(
        (cut.offset, cut.bytes, cut.records, cut.segments),
        (at, bytes.len() as u64 - at, 5, 0)
    );
    assert_eq!(forced.rooms.get("#a").map(|h| h.head), Some(4));
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), at);
    let again = recover(tmp.path(), EPOCH, RecoveryMode::ReadOnly).expect("clean now");
    assert!(again.torn.is_none());
}

#[test]
fn force_cuts_at_damage_in_an_old_segment_and_drops_every_later_segment() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rooms = Rooms::new(10, 1, RING);
    drop(write_messages(tmp.path(), &rooms, "#a", 200, 4096));
    let segments = list_segments(tmp.path()).expect("list");
    let (_, oldest) = &segments[0];
    let at = record_offsets(oldest)[3];
    let mut bytes = std::fs::read(oldest).expect("read");
    bytes[at as usize + 12] ^= 0x01;
    std::fs::write(oldest, &bytes).expect("write");
    let forced = recover(tmp.path(), EPOCH, RecoveryMode::ForceTruncate).expect("force");
    let cut = forced.torn.expect("a cut");
    assert_eq!((&cut.path, cut.offset), (oldest, at));
    assert_eq!(cut.segments, segments.len() as u64 - 1);
    assert_eq!(cut.records, 200 - 4);
    assert_eq!(list_segments(tmp.path()).expect("list").len(), 1);
    let again = recover(tmp.path(), EPOCH, RecoveryMode::ReadOnly).expect("clean now");
    assert_eq!(
        again.rooms.get("#a").map(|h| (h.first, h.head)),
        Some((1, 3))
    );
    assert!(again.torn.is_none());
}

/// Appends crafted records (valid checksums) to the newest segment.
fn append_records(dir: &Path, frames: &[Vec<u8>]) -> u64 {
    let path = newest_segment(dir);
    let at = std::fs::metadata(&path).expect("meta").len();
    let mut batch = Vec::new();
    frames.iter().for_each(|f| encode_record(f, &mut batch));
    OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open")
        .write_all(&batch)
        .expect("append");
    at
}

#[test]
fn a_checksummed_record_with_an_impossible_seq_is_corruption_even_at_the_tail() {
    let cases: [(&str, Vec<Vec<u8>>); 4] = [
        ("max", vec![msg("#b", u64::MAX, "x"), msg("#b", 1, "y")]),
        ("max alone", vec![msg("#b", u64::MAX, "x")]),
        ("backwards", vec![msg("#a", 2, "again")]),
        ("skips", vec![msg("#a", 9, "ahead")]),
    ];
    for (name, frames) in cases {
        let tmp = tempfile::tempdir().expect("tmp");
        let rooms = Rooms::new(10, 1, RING);
        drop(write_messages(tmp.path(), &rooms, "#a", 3, 1 << 20));
        let at = append_records(tmp.path(), &frames);
        for mode in [RecoveryMode::ReadOnly, RecoveryMode::TolerateTornTail] {
            match recover(tmp.path(), EPOCH, mode) {
                Err(RecoveryError::Corrupt { offset, .. }) => assert_eq!(offset, at, "{name}"),
                other => panic!("{name} {mode:?}: expected corruption, got {other:?}"),
            }
        }
    }
    // Seq 0 cannot even be encoded as a MSG; stamp it over a whole record and fix its CRC.
    let tmp = tempfile::tempdir().expect("tmp");
    let rooms = Rooms::new(10, 1, RING);
    drop(write_messages(tmp.path(), &rooms, "#a", 3, 1 << 20));
    let mut zero = msg("#a", 4, "zero");
    assert!(crate::protocol::codec::stamp_msg(&mut zero, 2, 0, 1));
    let at = append_records(tmp.path(), &[zero]);
    assert!(matches!(
        recover(tmp.path(), EPOCH, RecoveryMode::TolerateTornTail),
        Err(RecoveryError::Corrupt { offset, .. }) if offset == at
    ));
}

/// Opens the store in `<data>/log` as start-up does and writes `count` messages to `#a` under
/// its epoch; returns the ids. Dropping the writer without a sync is what kill -9 leaves.
fn start_and_write(data: &Path, legacy: Option<u64>, count: u64) -> super::Ids {
    let dir = super::log_dir(data);
    let opened = super::open(&dir, legacy, RecoveryMode::TolerateTornTail).expect("open");
    let ids = opened.ids.expect("ids");
    let rooms = Rooms::new(10, 1, RING);
    for (name, h) in &opened.recovered.rooms {
        rooms.restore(name, h.first, h.head, h.index.clone());
    }
    let mut log = LogWriter::open(&dir, ids.segments, limits(4096), &opened.recovered, &rooms)
        .expect("writer");
    send_to(&mut log, &rooms, "#a", count);
    ids
}

fn epoch_now(data: &Path) -> u64 {
    start_and_write(data, None, 0).epoch
}

#[test]
fn the_epoch_is_minted_with_the_store_and_kept_while_it_holds_history() {
    let tmp = tempfile::tempdir().expect("tmp");
    let first = start_and_write(tmp.path(), None, 5);
    assert_ne!(first.epoch, 0);
    assert_eq!(first.segments, first.epoch);
    let text = std::fs::read_to_string(tmp.path().join("log/epoch")).expect("epoch file");
    assert!(
        text.contains(&format!("epoch {:016x}\n", first.epoch)),
        "{text}"
    );
    // A restart (the writer above was dropped unsynced, as kill -9 leaves it) keeps it.
    assert_eq!(start_and_write(tmp.path(), None, 3), first);
    assert_eq!(epoch_now(tmp.path()), first.epoch);
}

#[test]
fn the_epoch_changes_when_the_log_is_deleted() {
    let tmp = tempfile::tempdir().expect("tmp");
    let first = start_and_write(tmp.path(), None, 5);
    std::fs::remove_dir_all(tmp.path().join("log")).expect("delete the log");
    let second = start_and_write(tmp.path(), None, 1);
    assert_ne!(second.epoch, first.epoch);
    assert_eq!(epoch_now(tmp.path()), second.epoch);
}

#[test]
fn the_epoch_changes_when_the_log_holds_no_record() {
    // Started, never given a message: the next start is a new history.
    let tmp = tempfile::tempdir().expect("tmp");
    let empty = start_and_write(tmp.path(), None, 0);
    let next = start_and_write(tmp.path(), None, 2);
    assert_ne!(next.epoch, empty.epoch);
    assert_eq!(
        list_segments(&tmp.path().join("log")).expect("list").len(),
        1,
        "the old empty segment is gone"
    );
    // Retention deleted every record: only an empty newest segment is left.
    let tmp = tempfile::tempdir().expect("tmp");
    let full = start_and_write(tmp.path(), None, 200);
    let dir = tmp.path().join("log");
    let mut segments = list_segments(&dir).expect("list");
    let (_, newest) = segments.pop().expect("a segment");
    for (_, old) in segments {
        std::fs::remove_file(old).expect("retention");
    }
    let file = OpenOptions::new().write(true).open(&newest).expect("open");
    file.set_len(SEGMENT_HEADER_LEN as u64).expect("empty it");
    let after = start_and_write(tmp.path(), None, 1);
    assert_ne!(after.epoch, full.epoch, "seqs restart at 1: a new history");
    assert_eq!(epoch_now(tmp.path()), after.epoch);
}

#[test]
fn copies_of_a_template_each_mint_their_own_epoch() {
    let tmp = tempfile::tempdir().expect("tmp");
    let template = tmp.path().join("template");
    let made = start_and_write(&template, None, 0);
    let mut epochs = vec![made.epoch];
    for copy in ["a", "b"] {
        let data = tmp.path().join(copy);
        std::fs::create_dir_all(data.join("log")).expect("mkdir");
        for entry in std::fs::read_dir(template.join("log")).expect("read") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), data.join("log").join(entry.file_name())).expect("copy");
        }
        epochs.push(start_and_write(&data, None, 1).epoch);
    }
    epochs.sort_unstable();
    epochs.dedup();
    assert_eq!(epochs.len(), 3, "every copy has its own epoch");
}

#[test]
fn an_old_store_keeps_its_epoch_on_upgrade() {
    // An older chatd: the epoch in `<data>/epoch` and in every segment header, no log/epoch.
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = super::log_dir(tmp.path());
    std::fs::create_dir_all(&dir).expect("mkdir");
    let rooms = Rooms::new(10, 1, RING);
    drop(write_messages(&dir, &rooms, "#a", 4, 4096));
    let upgraded = start_and_write(tmp.path(), Some(EPOCH), 1);
    assert_eq!((upgraded.segments, upgraded.epoch), (EPOCH, EPOCH));
    assert!(
        dir.join("epoch").exists(),
        "the log has its own epoch file now"
    );
    assert_eq!(
        epoch_now(tmp.path()),
        EPOCH,
        "and keeps it without the old file"
    );
    // The old file lost too: the segment headers still name the epoch.
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = super::log_dir(tmp.path());
    std::fs::create_dir_all(&dir).expect("mkdir");
    drop(write_messages(
        &dir,
        &Rooms::new(10, 1, RING),
        "#a",
        4,
        4096,
    ));
    assert_eq!(epoch_now(tmp.path()), EPOCH);
}

#[test]
fn repair_keeps_the_epoch_and_a_forced_cut_of_records_changes_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let first = start_and_write(tmp.path(), None, 10);
    let dir = super::log_dir(tmp.path());
    let newest = newest_segment(&dir);
    append(&newest, &[0xde, 0xad]);
    assert_eq!(
        epoch_now(tmp.path()),
        first.epoch,
        "a torn tail is cut, same history"
    );
    let at = record_offsets(&newest)[4] as usize;
    let mut bytes = std::fs::read(&newest).expect("read");
    bytes[at + 20] ^= 1;
    std::fs::write(&newest, &bytes).expect("write");
    let forced = super::open(&dir, None, RecoveryMode::ForceTruncate).expect("force");
    let ids = forced.ids.expect("ids");
    assert!(forced.minted);
    assert_eq!(
        ids.segments, first.segments,
        "segments still belong to the store"
    );
    assert_ne!(
        ids.epoch, first.epoch,
        "seqs 5.. will be reused: a new history"
    );
    assert_eq!(start_and_write(tmp.path(), None, 1), ids);
}

#[test]
fn a_corrupt_epoch_file_is_refused_naming_it_and_kept() {
    let tmp = tempfile::tempdir().expect("tmp");
    start_and_write(tmp.path(), None, 1);
    let path = tmp.path().join("log/epoch");
    let mut text = std::fs::read_to_string(&path).expect("read");
    text = text
        .replacen("epoch ", "epoch f", 1)
        .replacen("\ncrc", "crc", 1);
    std::fs::write(&path, &text).expect("write");
    let dir = super::log_dir(tmp.path());
    match super::open(&dir, None, RecoveryMode::TolerateTornTail) {
        Err(RecoveryError::Corrupt { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected a corrupt epoch file, got {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&path).expect("read"), text);
}

fn append(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open")
        .write_all(bytes)
        .expect("append");
}

/// Appends `count` messages to `room` through `log`, one batch each, as the sequencer does.
pub(super) fn send_to(log: &mut LogWriter, rooms: &Rooms, room: &str, count: u64) {
    let r = rooms.open(room).expect("room");
    for _ in 0..count {
        let seq = r.read(|ring| ring.head()) + 1;
        let frame = msg(room, seq, &format!("message {seq}"));
        let pos = log.next_pos().expect("pos");
        let mut batch = Vec::new();
        encode_record(&frame, &mut batch);
        log.write(&batch, Instant::now()).expect("write");
        r.write(|ring| ring.append(frame.into(), RING, Some(pos)));
        log.note(&r, seq, 0);
    }
}

/// Recovers `dir` into fresh rooms, as start-up does, and opens a writer with small segments
/// and a retention limit that keeps a few of them.
fn restart_with_retention(dir: &Path) -> (Rooms, LogWriter) {
    let recovered = recover(dir, EPOCH, RecoveryMode::TolerateTornTail).expect("recover");
    let rooms = Rooms::new(10, 1, RING);
    for (name, h) in &recovered.rooms {
        rooms.restore(name, h.first, h.head, h.index.clone());
    }
    let mut limits = limits(4096);
    limits.retention.max_bytes = Some(12_000);
    let log = LogWriter::open(dir, EPOCH, limits, &recovered, &rooms).expect("open");
    (rooms, log)
}

fn bounds(rooms: &Rooms, room: &str) -> (u64, u64) {
    rooms
        .get(room)
        .map(|r| r.read(|ring| ring.bounds()))
        .expect("room")
}

#[test]
fn a_room_whose_every_record_retention_deleted_keeps_its_head_across_restarts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (rooms, mut log) = restart_with_retention(tmp.path());
    send_to(&mut log, &rooms, "#a", 5);
    send_to(&mut log, &rooms, "#b", 600);
    assert_eq!(bounds(&rooms, "#a"), (0, 5), "retention deleted all of #a");
    assert!(
        list_segments(tmp.path()).expect("list")[0].0 > 1,
        "segment 1 is gone"
    );
    drop(log);

    let recovered = recover(tmp.path(), EPOCH, RecoveryMode::ReadOnly).expect("recover");
    let a = recovered
        .rooms
        .get("#a")
        .expect("#a survives without records");
    assert_eq!((a.first, a.head, a.index.len()), (0, 5, 0));
    assert_eq!(recovered.emptied_rooms(), 1);
    let b = recovered.rooms.get("#b").expect("#b");
    assert!(b.first > 1 && b.head == 600, "{b:?}");

    // The next message of #a is 6, and once retention deletes it too, 6 is the kept head.
    let (rooms, mut log) = restart_with_retention(tmp.path());
    assert_eq!(bounds(&rooms, "#a"), (0, 5));
    send_to(&mut log, &rooms, "#a", 1);
    assert_eq!(bounds(&rooms, "#a"), (6, 6));
    drop(log);
    let recovered = recover(tmp.path(), EPOCH, RecoveryMode::ReadOnly).expect("recover");
    assert_eq!(
        recovered.rooms.get("#a").map(|h| (h.first, h.head)),
        Some((6, 6))
    );
    let (rooms, mut log) = restart_with_retention(tmp.path());
    send_to(&mut log, &rooms, "#b", 600);
    assert_eq!(bounds(&rooms, "#a"), (0, 6));
    drop(log);
    let (rooms, mut log) = restart_with_retention(tmp.path());
    assert_eq!(bounds(&rooms, "#a"), (0, 6));
    assert_eq!(bounds(&rooms, "#b").1, 1200);
    send_to(&mut log, &rooms, "#a", 1);
    assert_eq!(bounds(&rooms, "#a"), (7, 7));
}

#[test]
fn the_heads_file_keeps_rooms_retention_emptied_and_only_raises_their_heads() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (rooms, mut log) = restart_with_retention(tmp.path());
    send_to(&mut log, &rooms, "#a", 5);
    send_to(&mut log, &rooms, "#b", 600);
    let only_a = |head| {
        [("#a".into(), head)]
            .into_iter()
            .collect::<super::heads::Heads>()
    };
    // #b has records in every segment: it is never kept while they are there.
    assert_eq!(
        super::heads::read(tmp.path(), EPOCH).expect("read"),
        only_a(5)
    );
    // #a has records again: they give its head, the stale line is harmless and stays.
    send_to(&mut log, &rooms, "#a", 1);
    send_to(&mut log, &rooms, "#b", 100);
    assert!(log_holds(tmp.path(), "#a"), "#a's seq 6 is in a segment");
    assert_eq!(
        super::heads::read(tmp.path(), EPOCH).expect("read"),
        only_a(5)
    );
    let recovered = recover(tmp.path(), EPOCH, RecoveryMode::ReadOnly).expect("recover");
    assert_eq!(
        recovered.rooms.get("#a").map(|h| (h.first, h.head)),
        Some((6, 6))
    );
    send_to(&mut log, &rooms, "#b", 600);
    assert!(!log_holds(tmp.path(), "#a"));
    assert_eq!(
        super::heads::read(tmp.path(), EPOCH).expect("read"),
        only_a(6)
    );
}

#[test]
fn records_only_in_the_unsynced_active_segment_do_not_stand_for_a_head() {
    // Under `--fsync never` the active segment may lose its tail in a power cut: a room whose
    // other records retention deletes must be kept even though the active segment has more.
    let tmp = tempfile::tempdir().expect("tmp");
    let recovered = recover(tmp.path(), EPOCH, RecoveryMode::TolerateTornTail).expect("recover");
    let rooms = Rooms::new(10, 1, RING);
    let mut limits = limits(4096);
    limits.fsync = FsyncPolicy::Never;
    limits.retention.max_bytes = Some(6000);
    let mut log = LogWriter::open(tmp.path(), EPOCH, limits, &recovered, &rooms).expect("open");
    send_to(&mut log, &rooms, "#a", 5);
    while list_segments(tmp.path()).expect("list").len() < 2 {
        send_to(&mut log, &rooms, "#b", 1);
    }
    send_to(&mut log, &rooms, "#a", 1);
    while log.total_bytes() <= 6000 {
        send_to(&mut log, &rooms, "#b", 1);
    }
    assert_eq!(list_segments(tmp.path()).expect("list").len(), 2, "no roll");
    log.tick(Instant::now());
    assert!(!segment_path(tmp.path(), 1).exists(), "retention ran");
    let kept = super::heads::read(tmp.path(), EPOCH).expect("read");
    assert_eq!(kept.get("#a"), Some(&5), "{kept:?}");
    drop(log);
    // The power cut: nothing of the active segment reached the disk.
    let active = OpenOptions::new()
        .write(true)
        .open(segment_path(tmp.path(), 2))
        .expect("open");
    active.set_len(SEGMENT_HEADER_LEN as u64).expect("lose it");
    let recovered = recover(tmp.path(), EPOCH, RecoveryMode::ReadOnly).expect("recover");
    assert_eq!(
        recovered.rooms.get("#a").map(|h| (h.first, h.head)),
        Some((0, 5))
    );
}

/// Whether a record of `room` is still in some segment.
fn log_holds(dir: &Path, room: &str) -> bool {
    recover(dir, EPOCH, RecoveryMode::ReadOnly)
        .expect("recover")
        .segments
        .iter()
        .any(|s| s.last_seq.contains_key(room))
}

#[test]
fn retention_deletes_no_segment_before_the_heads_it_takes_are_durable() {
    let tmp = tempfile::tempdir().expect("tmp");
    let heads = tmp.path().join(super::heads::HEADS_FILE);
    let (rooms, mut log) = restart_with_retention(tmp.path());
    // A folder where the heads file goes: every write of it fails (rename onto a folder).
    std::fs::create_dir(&heads).expect("block the heads file");
    send_to(&mut log, &rooms, "#a", 5);
    send_to(&mut log, &rooms, "#b", 600);
    assert!(
        segment_path(tmp.path(), 1).exists(),
        "segment 1 holds #a's last records and was deleted without its head saved"
    );
    assert_eq!(bounds(&rooms, "#a"), (1, 5));
    assert!(log.total_bytes() > 12_000 + 4096, "nothing was deleted");
    std::fs::remove_dir(&heads).expect("unblock");
    log.tick(Instant::now());
    assert!(!segment_path(tmp.path(), 1).exists(), "retention goes on");
    assert_eq!(bounds(&rooms, "#a"), (0, 5));
    drop(log);
    let recovered = recover(tmp.path(), EPOCH, RecoveryMode::ReadOnly).expect("recover");
    assert_eq!(
        recovered.rooms.get("#a").map(|h| (h.first, h.head)),
        Some((0, 5))
    );
}

#[test]
fn a_new_epoch_removes_the_kept_heads() {
    let tmp = tempfile::tempdir().expect("tmp");
    let full = start_and_write(tmp.path(), None, 200);
    let dir = tmp.path().join("log");
    let kept = [("#gone".into(), 40)].into_iter().collect();
    super::heads::write(&dir, full.segments, &kept).expect("write heads");
    // Retention deleted every record: only an empty newest segment is left.
    let mut segments = list_segments(&dir).expect("list");
    let (_, newest) = segments.pop().expect("a segment");
    for (_, old) in segments {
        std::fs::remove_file(old).expect("retention");
    }
    let file = OpenOptions::new().write(true).open(&newest).expect("open");
    file.set_len(SEGMENT_HEADER_LEN as u64).expect("empty it");
    let verify = super::open(&dir, None, RecoveryMode::ReadOnly).expect("verify");
    assert!(verify.recovered.rooms.is_empty(), "the next start is empty");
    let opened = super::open(&dir, None, RecoveryMode::TolerateTornTail).expect("open");
    assert!(opened.minted);
    assert!(opened.recovered.rooms.is_empty(), "every room starts at 1");
    assert!(opened.recovered.kept.is_empty());
    assert!(!dir.join(super::heads::HEADS_FILE).exists());
}

#[test]
fn a_corrupt_heads_file_is_refused_naming_it_and_kept() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ids = start_and_write(tmp.path(), None, 1);
    let dir = tmp.path().join("log");
    let kept = [("#gone".into(), 40)].into_iter().collect();
    super::heads::write(&dir, ids.segments, &kept).expect("write heads");
    let path = dir.join(super::heads::HEADS_FILE);
    let text = std::fs::read_to_string(&path)
        .expect("read")
        .replace(" 40\n", " 4\n");
    std::fs::write(&path, &text).expect("write");
    for mode in [RecoveryMode::ReadOnly, RecoveryMode::TolerateTornTail] {
        match super::open(&dir, None, mode) {
            Err(e @ RecoveryError::BadFile { .. }) => {
                assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
            }
            other => panic!("expected a refused heads file, got {other:?}"),
        }
    }
    assert_eq!(std::fs::read_to_string(&path).expect("read"), text);
}

#[test]
fn records_ending_below_a_kept_head_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ids = start_and_write(tmp.path(), None, 3);
    let dir = tmp.path().join("log");
    let kept = [("#a".into(), 10)].into_iter().collect();
    super::heads::write(&dir, ids.segments, &kept).expect("write heads");
    assert!(matches!(
        super::open(&dir, None, RecoveryMode::TolerateTornTail),
        Err(RecoveryError::BadFile { .. })
    ));
    // Records past the kept head are the normal case: they win.
    let kept = [("#a".into(), 2)].into_iter().collect();
    super::heads::write(&dir, ids.segments, &kept).expect("write heads");
    let opened = super::open(&dir, None, RecoveryMode::ReadOnly).expect("open");
    assert_eq!(
        opened.recovered.rooms.get("#a").map(|h| (h.first, h.head)),
        Some((1, 3))
    );
}
