use std::fs::OpenOptions;

use super::*;

fn room_file(dir: &tempfile::TempDir) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.path().join("room.log"))
}

/// Every record from the start, as (seq, user, text).
fn all(file: &File) -> io::Result<Vec<(u64, String, String)>> {
    let mut cursor = Cursor::START;
    let mut got = Vec::new();
    loop {
        let bytes = read(file, &mut cursor, u64::MAX, 64)?;
        if bytes.is_empty() {
            return Ok(got);
        }
        got.extend(records(&bytes).map(|r| (r.seq, r.user.to_string(), r.text.to_string())));
    }
}

#[test]
fn appends_read_back_in_seq_order_and_the_tail_knows_the_head() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = room_file(&dir)?;
    assert_eq!(tail(&file)?, Tail::EMPTY, "a new room has no history");
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        let seq = append(&file, 1000 + i as u64, "ann", text, false)?;
        assert_eq!(seq, i as u64 + 1);
    }
    assert_eq!(
        all(&file)?,
        [(1, "ann", "one"), (2, "ann", "two"), (3, "ann", "three")].map(|(s, u, t)| (
            s,
            u.to_string(),
            t.to_string()
        ))
    );
    let len = file.metadata()?.len();
    assert_eq!(tail(&file)?, Tail { end: len, head: 3 });
    Ok(())
}

#[test]
fn seq_continues_across_reopen() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    append(&room_file(&dir)?, 1, "ann", "before", false)?;
    append(&room_file(&dir)?, 2, "ann", "again", false)?;
    let reopened = room_file(&dir)?;
    assert_eq!(append(&reopened, 3, "bob", "after", false)?, 3);
    let seqs: Vec<u64> = all(&reopened)?.into_iter().map(|r| r.0).collect();
    assert_eq!(seqs, [1, 2, 3]);
    Ok(())
}

#[test]
fn a_torn_tail_cut_at_every_byte_is_never_read_and_is_written_over() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = room_file(&dir)?;
    append(&file, 1, "ann", "kept", false)?;
    let intact = file.metadata()?.len();
    append(&file, 2, "ann", "torn", false)?;
    let whole = std::fs::read(dir.path().join("room.log"))?;
    for cut in intact..whole.len() as u64 {
        // A writer killed `cut - intact` bytes into its append.
        file.set_len(0)?;
        file.write_all_at(whole.get(..cut as usize).unwrap_or_default(), 0)?;
        assert_eq!(
            tail(&file)?,
            Tail {
                end: intact,
                head: 1
            },
            "cut at {cut}"
        );
        let texts: Vec<String> = all(&file)?.into_iter().map(|r| r.2).collect();
        assert_eq!(
            texts,
            ["kept"],
            "cut at {cut}: the torn record is never shown"
        );
        // The next writer cuts it and takes its seq.
        assert_eq!(append(&file, 3, "bob", "next", false)?, 2, "cut at {cut}");
        let texts: Vec<String> = all(&file)?.into_iter().map(|r| r.2).collect();
        assert_eq!(texts, ["kept", "next"], "cut at {cut}");
    }
    Ok(())
}

#[test]
fn a_torn_magic_is_no_history_and_the_next_append_starts_over() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = room_file(&dir)?;
    file.write_all_at(MAGIC.get(..3).unwrap_or_default(), 0)?;
    assert_eq!(tail(&file)?, Tail::EMPTY);
    assert_eq!(append(&file, 1, "ann", "first", false)?, 1);
    assert_eq!(all(&file)?.len(), 1);
    Ok(())
}

#[test]
fn a_reader_stops_at_until_and_takes_a_record_longer_than_its_budget() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = room_file(&dir)?;
    let long = "x".repeat(10_000);
    append(&file, 1, "ann", "short", false)?;
    append(&file, 2, "ann", &long, false)?;
    append(&file, 3, "ann", "last", false)?;
    let mut cursor = Cursor::START;
    let first = read(&file, &mut cursor, 1, 1 << 20)?;
    assert_eq!(records(&first).map(|r| r.seq).collect::<Vec<_>>(), [1]);
    assert_eq!(cursor.next, 2);
    // A budget of 16 bytes is smaller than any record: each read still makes progress.
    let second = read(&file, &mut cursor, u64::MAX, 16)?;
    let got: Vec<(u64, usize)> = records(&second).map(|r| (r.seq, r.text.len())).collect();
    assert_eq!(got, [(2, 10_000)]);
    let third = read(&file, &mut cursor, u64::MAX, 16)?;
    assert_eq!(records(&third).map(|r| r.seq).collect::<Vec<_>>(), [3]);
    assert!(read(&file, &mut cursor, u64::MAX, 16)?.is_empty());
    assert_eq!(tail(&file)?.cursor(), cursor);
    Ok(())
}

#[test]
fn a_record_with_the_wrong_seq_is_an_error() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = room_file(&dir)?;
    append(&file, 1, "ann", "one", false)?;
    let mut bytes = Vec::new();
    let stray = Record {
        seq: 7,
        ts_ms: 2,
        user: "ann",
        text: "stray",
    };
    encode(&stray, &mut bytes);
    file.write_all_at(&bytes, file.metadata()?.len())?;
    let err = all(&file).expect_err("seq 7 after seq 1");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    Ok(())
}

#[test]
fn a_file_that_is_not_a_room_file_is_refused() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = room_file(&dir)?;
    file.write_all_at(b"something else entirely", 0)?;
    assert_eq!(
        tail(&file).map_err(|e| e.kind()),
        Err(io::ErrorKind::InvalidData)
    );
    assert!(append(&file, 1, "ann", "x", false).is_err());
    Ok(())
}

#[test]
fn locks_hand_the_file_back() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut log = LogFile::new(room_file(&dir)?);
    assert_eq!(log.exclusive(|f| append(f, 1, "ann", "hi", false))?, 1);
    assert_eq!(log.shared(tail)?.head, 1);
    assert!(log.size()? > MAGIC_LEN);
    Ok(())
}
