//! The durable log end to end against the real daemon: ACKed messages survive kill -9 exactly
//! once, history beyond the in-memory window is replayed from disk, retention moves `first`
//! and a room it emptied keeps its seqs across restarts, one daemon per data directory, torn
//! tails are cut, corruption stops start-up until a forced repair, the epoch follows the
//! history, and a full disk answers STORAGE until it has room again.
//!
//! Each test owns its data directory (a `TempDir` passed with `--data-dir`, which overrides the
//! harness's), so that it outlives the daemons started on it.

mod util;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use chatd::client::{Client, Reply};
use chatd::protocol::{ClientFrame, ErrorCode, encode_client};
use nix::sys::signal::Signal;
use util::{Daemon, PATIENCE, join, recv};

const ROOM: &str = "#log";
/// JOIN's `limit` for "all retained".
const ALL: u32 = u32::MAX;

/// A replayed message as the tests compare it: (seq, text).
type Msg = (u64, String);

/// Creates `<parent>/data` with user alice; returns the path and alice's token.
#[track_caller]
fn store(parent: &Path) -> (PathBuf, String) {
    let data = parent.join("data");
    let token = util::add_user(&data, "alice");
    (data, token)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// Starts `chatd serve` on `data` with `flags` (words split at spaces).
#[track_caller]
fn serve(data: &Path, flags: &str) -> Daemon {
    let mut args = vec!["--data-dir", path_str(data)];
    args.extend(flags.split_whitespace());
    Daemon::start(&args)
}

/// Starts `chatd serve` on `data`, which must fail; returns its stderr.
#[track_caller]
fn serve_fails(data: &Path) -> String {
    let out = chatd(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        path_str(data),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "chatd started: {stderr}");
    stderr
}

/// Appends a SEND to ROOM to `bytes`, for pipelining many in one write.
fn encode_send(id: u64, text: &str, bytes: &mut Vec<u8>) {
    encode_client(
        &ClientFrame::Send {
            room: ROOM,
            id,
            text,
        },
        bytes,
    );
}

/// Stops a daemon with SIGTERM and asserts it exits cleanly.
#[track_caller]
fn stop(mut d: Daemon) {
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit().expect("chatd did not stop after SIGTERM");
    assert!(status.success(), "graceful stop exited with {status}");
    assert!(d.wait_for_log(" batches, "), "no log summary at stop");
}

/// HELLO as alice; returns the connection and WELCOME's epoch.
#[track_caller]
fn hello(addr: SocketAddr, token: &str) -> (Client, u64) {
    let mut c = Client::connect(addr).expect("connect to chatd");
    c.set_timeout(Some(PATIENCE)).expect("set timeout");
    c.send(&ClientFrame::Hello {
        version: 1,
        user: "alice",
        token,
        client: 0,
    })
    .expect("send HELLO");
    match recv(&mut c) {
        Reply::Welcome { epoch, .. } => (c, epoch),
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

/// A logged-in connection that joined ROOM live only.
#[track_caller]
fn sender(d: &Daemon, token: &str) -> Client {
    let mut c = hello(d.addr, token).0;
    join(&mut c, ROOM, 0, 0);
    c
}

/// Pipelines SENDs of `texts` (ids 1..) in windows of `window`, waits for every ACK and
/// returns the seqs in id order. The sender's own MSGs are skipped.
#[track_caller]
fn send_all(c: &mut Client, texts: &[String], window: usize) -> Vec<u64> {
    let mut seqs = vec![0; texts.len()];
    for (n, chunk) in texts.chunks(window).enumerate() {
        let mut bytes = Vec::new();
        for (i, text) in chunk.iter().enumerate() {
            let id = (n * window + i + 1) as u64;
            encode_send(id, text, &mut bytes);
        }
        c.send_raw(&bytes).expect("send SENDs");
        let mut owed = chunk.len();
        while owed > 0 {
            match recv(c) {
                Reply::Ack { id, seq } => {
                    let slot = seqs.get_mut(id as usize - 1).expect("ACK of an id sent");
                    assert_eq!(*slot, 0, "ACK {id} came twice");
                    *slot = seq;
                    owed -= 1;
                }
                Reply::Msg { .. } => {}
                other => panic!("expected ACKs, got {other:?}"),
            }
        }
    }
    seqs
}

/// `send_all` into an empty room: the seqs must be 1, 2, ... in id order.
#[track_caller]
fn send_in_order(c: &mut Client, texts: &[String], window: usize) {
    let seqs = send_all(c, texts, window);
    assert_eq!(seqs, (1..=texts.len() as u64).collect::<Vec<_>>());
}

/// One SEND, waiting for its answer: Ok(seq) for ACK, Err(()) for ERROR STORAGE with its id.
/// Anything else (an ACK or ERROR about another id, another error) fails the test.
#[track_caller]
fn send_one(c: &mut Client, id: u64, text: &str) -> Result<u64, ()> {
    let mut bytes = Vec::new();
    encode_send(id, text, &mut bytes);
    c.send_raw(&bytes).expect("send SEND");
    loop {
        match recv(c) {
            Reply::Ack { id: got, seq } if got == id => return Ok(seq),
            Reply::Error {
                code, reference, ..
            } if code == ErrorCode::Storage.as_u16() && reference == id => return Err(()),
            Reply::Msg { .. } => {}
            other => panic!("expected ACK or STORAGE for {id}, got {other:?}"),
        }
    }
}

/// JOINs with `after` and `limit` and reads the replay up to JOINED's head.
#[track_caller]
fn replay(c: &mut Client, after: u64, limit: u32) -> (u64, u64, Vec<Msg>) {
    let (first, head) = join(c, ROOM, after, limit);
    let mut msgs = Vec::new();
    let mut last = after.max(first.saturating_sub(1));
    while last < head {
        match recv(c) {
            Reply::Msg {
                room, seq, text, ..
            } if room == ROOM => {
                last = seq;
                msgs.push((seq, text));
            }
            other => panic!("expected the replay up to {head}, got {other:?}"),
        }
    }
    (first, head, msgs)
}

/// Asserts `got` is exactly `want`, reporting the first difference rather than both lists.
#[track_caller]
fn assert_msgs(got: &[Msg], want: impl IntoIterator<Item = Msg>) {
    let want: Vec<Msg> = want.into_iter().collect();
    let at = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i));
    if let Some(i) = at {
        let (g, w, n) = (got.get(i), want.get(i), (got.len(), want.len()));
        panic!("messages differ at {i}: got {g:?}, want {w:?} (got, wanted in all: {n:?})");
    }
}

/// `seqs` in order with texts from `text`.
fn numbered(seqs: impl IntoIterator<Item = u64>, text: impl Fn(u64) -> String) -> Vec<Msg> {
    seqs.into_iter().map(|s| (s, text(s))).collect()
}

/// Text `n`, padded to `len` bytes so that every message differs.
fn padded(n: u64, len: usize) -> String {
    let mut text = format!("{n:06}-");
    text.extend(std::iter::repeat_n('x', len.saturating_sub(text.len())));
    text
}

/// Runs `chatd ARGS`, which must exit by itself within PATIENCE.
#[track_caller]
fn chatd(args: &[&str]) -> Output {
    let child = Command::new(util::BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chatd");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(PATIENCE) {
        Ok(out) => out.expect("wait for chatd"),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            panic!("chatd {args:?} did not exit within {PATIENCE:?}");
        }
    }
}

/// Runs `chatd log WORD DATA`, asserts its exit code and returns stdout + stderr.
#[track_caller]
fn log_cmd(word: &str, data: &Path, code: i32) -> String {
    log_args(&[word, path_str(data)], code)
}

/// Runs `chatd log ARGS...`, asserts its exit code and returns stdout + stderr.
#[track_caller]
fn log_args(args: &[&str], code: i32) -> String {
    let mut all = vec!["log"];
    all.extend_from_slice(args);
    let out = chatd(&all);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(code), "chatd {all:?}: {text}");
    text
}

/// The segment files of `data`, oldest first.
fn segments(data: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(data.join("log"))
        .expect("read the log folder")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs
}

#[track_caller]
fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open segment");
    f.write_all(bytes).expect("append to segment");
}

/// The records of a segment as (offset, length on disk), from its 32-byte header on.
fn records(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 32;
    while let Some(len) = bytes.get(at..at + 4) {
        let len = 8 + u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        out.push((at, len));
        at += len;
    }
    out
}

const SENDERS: usize = 4;
const CYCLES: usize = 3;
/// ACKs (over all senders) after which the daemon is killed.
const KILL_AFTER: usize = 500;
const KILL_WINDOW: u64 = 16;

/// One client of the kill test: pipelines SENDs until the connection dies; returns what was
/// ACKed (text → seq). `acks` counts ACKs of all clients; `enough` fires once at KILL_AFTER.
fn keep_sending(
    mut c: Client,
    prefix: String,
    acks: Arc<AtomicUsize>,
    enough: mpsc::Sender<()>,
) -> HashMap<String, u64> {
    let mut acked = HashMap::new();
    let mut pending: HashMap<u64, String> = HashMap::new();
    let mut n = 0;
    loop {
        let mut bytes = Vec::new();
        for _ in 0..KILL_WINDOW {
            n += 1;
            let text = format!("{prefix}-{n}");
            encode_send(n, &text, &mut bytes);
            pending.insert(n, text);
        }
        if c.send_raw(&bytes).is_err() {
            return acked;
        }
        while !pending.is_empty() {
            match c.recv() {
                Ok(Some(Reply::Ack { id, seq })) => {
                    let text = pending.remove(&id).expect("an ACK for a SEND made");
                    acked.insert(text, seq);
                    if acks.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
                        let _ = enough.send(());
                    }
                }
                Ok(Some(Reply::Msg { .. })) => {}
                Ok(Some(other)) => panic!("{prefix}: unexpected {other:?}"),
                // The daemon was killed.
                Ok(None) | Err(_) => return acked,
            }
        }
    }
}

#[test]
fn acked_messages_survive_kill_9_exactly_once() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (data, token) = store(tmp.path());
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut epoch = None;
    for cycle in 0..=CYCLES {
        let mut d = serve(&data, "--send-rate 0");
        let (mut reader, e) = hello(d.addr, &token);
        assert_eq!(*epoch.get_or_insert(e), e, "epoch changed across restarts");
        let (first, head, msgs) = replay(&mut reader, 0, ALL);
        let seqs: Vec<u64> = msgs.iter().map(|m| m.0).collect();
        assert_eq!(seqs, (1..=head).collect::<Vec<_>>(), "seqs not 1..=head");
        assert_eq!(first, u64::from(head > 0));
        let stored: HashMap<&str, u64> = msgs.iter().map(|(s, t)| (t.as_str(), *s)).collect();
        assert_eq!(stored.len(), msgs.len(), "a message was stored twice");
        for (text, seq) in &acked {
            assert_eq!(stored.get(text.as_str()), Some(seq), "ACKed {text:?}");
        }
        if cycle == CYCLES {
            break;
        }
        drop(reader);
        let acks = Arc::new(AtomicUsize::new(0));
        let (enough, reached) = mpsc::channel();
        let threads: Vec<_> = (0..SENDERS)
            .map(|t| {
                let c = sender(&d, &token);
                let (acks, enough) = (Arc::clone(&acks), enough.clone());
                let prefix = format!("c{cycle}-t{t}");
                std::thread::spawn(move || keep_sending(c, prefix, acks, enough))
            })
            .collect();
        reached
            .recv_timeout(PATIENCE)
            .expect("the senders got their ACKs");
        d.signal(Signal::SIGKILL);
        d.wait_exit().expect("chatd did not die on SIGKILL");
        for t in threads {
            acked.extend(t.join().expect("a sender panicked"));
        }
        assert!(acked.len() >= KILL_AFTER * (cycle + 1));
    }
}

#[test]
fn history_larger_than_the_ring_is_replayed_from_disk() {
    const N: u64 = 3000;
    let tmp = tempfile::tempdir().expect("temp dir");
    let (data, token) = store(tmp.path());
    let flags = "--ring-messages 50 --send-rate 0";
    let d = serve(&data, flags);
    let mut alice = sender(&d, &token);
    let texts: Vec<String> = (1..=N).map(|i| format!("m{i}")).collect();
    send_in_order(&mut alice, &texts, 100);
    let text = |s: u64| format!("m{s}");

    let mut bob = hello(d.addr, &token).0;
    let (first, head, msgs) = replay(&mut bob, 0, ALL);
    assert_eq!((first, head), (1, N));
    assert_msgs(&msgs, numbered(1..=N, text));
    let mut carol = hello(d.addr, &token).0;
    let (_, _, msgs) = replay(&mut carol, 100, ALL);
    assert_msgs(&msgs, numbered(101..=N, text));

    assert_eq!(send_all(&mut alice, &[text(N + 1)], 1), vec![N + 1]);
    match recv(&mut bob) {
        Reply::Msg { seq, text: t, .. } => assert_eq!((seq, t), (N + 1, text(N + 1))),
        other => panic!("expected the live MSG, got {other:?}"),
    }
    stop(d);

    let d = serve(&data, flags);
    let mut bob = hello(d.addr, &token).0;
    let (first, head, msgs) = replay(&mut bob, 0, ALL);
    assert_eq!((first, head), (1, N + 1));
    assert_msgs(&msgs, numbered(1..=N + 1, text));
    let mut carol = hello(d.addr, &token).0;
    let (_, _, msgs) = replay(&mut carol, 100, ALL);
    assert_msgs(&msgs, numbered(101..=N + 1, text));
}

#[test]
fn a_member_that_falls_behind_the_ring_is_caught_up_from_the_log() {
    const N: u64 = 5000;
    let tmp = tempfile::tempdir().expect("temp dir");
    let (data, token) = store(tmp.path());
    let flags = "--ring-messages 20 --send-rate 0 --write-stall-timeout 60s";
    let d = serve(&data, flags);
    let mut alice = sender(&d, &token);
    let mut bob = sender(&d, &token);
    let texts: Vec<String> = (1..=N).map(|i| padded(i, 2000)).collect();
    send_in_order(&mut alice, &texts, 100);
    // Only now does bob read. The kernel's send buffer alone can grow to 4 MiB (tcp_wmem), so
    // ~10 MB of messages make sure most of them left the ring of 20 before he read them.
    let mut got = Vec::new();
    while got.len() < N as usize {
        match recv(&mut bob) {
            Reply::Msg { seq, text, .. } => got.push((seq, text)),
            other => panic!("expected MSG {}, got {other:?}", got.len() + 1),
        }
    }
    assert_msgs(&got, numbered(1..=N, |s| padded(s, 2000)));
    bob.send(&ClientFrame::Ping { nonce: 7 }).expect("PING");
    assert_eq!(recv(&mut bob), Reply::Pong { nonce: 7 });
}

#[test]
fn retention_deletes_old_segments_and_first_follows() {
    const N: u64 = 2000;
    const SEGMENT: u64 = 8192;
    const RETAIN: u64 = 40_000;
    let tmp = tempfile::tempdir().expect("temp dir");
    let (data, token) = store(tmp.path());
    let flags = "--segment-bytes 8192 --retention-bytes 40000 --send-rate 0";
    let d = serve(&data, flags);
    let mut alice = sender(&d, &token);
    let texts: Vec<String> = (1..=N).map(|i| padded(i, 100)).collect();
    // Small windows keep each batch (which one segment takes whole) far below a segment.
    send_in_order(&mut alice, &texts, 16);

    let segs = segments(&data);
    let sizes: Vec<u64> = segs
        .iter()
        .map(|p| std::fs::metadata(p).expect("segment metadata").len())
        .collect();
    let total: u64 = sizes.iter().sum();
    assert!(
        segs.len() <= (RETAIN / SEGMENT + 3) as usize && total <= RETAIN + 2 * SEGMENT,
        "retention left {} segments of {sizes:?} ({total} bytes)",
        segs.len()
    );
    assert!(total >= RETAIN - 2 * SEGMENT, "deleted too much: {sizes:?}");

    let mut bob = hello(d.addr, &token).0;
    let (first, head, msgs) = replay(&mut bob, 0, ALL);
    assert!(first > 1, "retention deleted nothing: first = {first}");
    assert_eq!(head, N);
    assert_msgs(&msgs, numbered(first..=N, |s| padded(s, 100)));
}

/// Pipelines SENDs of `texts` to `room` (ids 1..) in windows of 16 and returns the seqs in
/// id order. The sender's own MSGs are skipped.
#[track_caller]
fn send_to(c: &mut Client, room: &str, texts: &[String]) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(texts.len());
    for (n, chunk) in texts.chunks(16).enumerate() {
        let mut bytes = Vec::new();
        for (i, text) in chunk.iter().enumerate() {
            let id = (n * 16 + i + 1) as u64;
            encode_client(&ClientFrame::Send { room, id, text }, &mut bytes);
        }
        c.send_raw(&bytes).expect("send SENDs");
        let mut acked = vec![0; chunk.len()];
        while acked.contains(&0) {
            match recv(c) {
                Reply::Ack { id, seq } => {
                    let slot = acked
                        .get_mut(id as usize - n * 16 - 1)
                        .expect("ACK of an id sent");
                    assert_eq!(*slot, 0, "ACK {id} came twice");
                    *slot = seq;
                }
                Reply::Msg { .. } => {}
                other => panic!("expected ACKs, got {other:?}"),
            }
        }
        seqs.extend(acked);
    }
    seqs
}

#[test]
fn a_room_whose_messages_retention_deleted_keeps_its_seqs_across_restarts() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (data, token) = store(tmp.path());
    let flags = "--segment-bytes 8192 --retention-bytes 40000 --send-rate 0";
    let d = serve(&data, flags);
    let (mut alice, epoch) = hello(d.addr, &token);
    join(&mut alice, "#a", 0, 0);
    join(&mut alice, "#b", 0, 0);
    let few: Vec<String> = (1..=5).map(|i| format!("a{i}")).collect();
    assert_eq!(send_to(&mut alice, "#a", &few), [1, 2, 3, 4, 5]);
    let many: Vec<String> = (1..=2000).map(|i| padded(i, 100)).collect();
    send_to(&mut alice, "#b", &many);
    let mut bob = hello(d.addr, &token).0;
    assert_eq!(
        join(&mut bob, "#a", 0, ALL),
        (0, 5),
        "retention deleted every message of #a"
    );
    // kill -9: the heads file must already be on disk when the segments went.
    let mut d = d;
    d.signal(Signal::SIGKILL);
    d.wait_exit().expect("chatd did not die on SIGKILL");

    let verify = log_cmd("verify", &data, 0);
    assert!(
        verify.contains("1 of those rooms have no message left"),
        "{verify}"
    );
    let d = serve(&data, flags);
    let (mut carol, again) = hello(d.addr, &token);
    assert_eq!(again, epoch, "the history goes on under its epoch");
    assert_eq!(join(&mut carol, "#a", 5000, ALL), (0, 5), "JOINED #a 0 5");
    assert_eq!(send_to(&mut carol, "#a", &["after".into()]), [6]);
    let mut dave = hello(d.addr, &token).0;
    assert_eq!(join(&mut dave, "#a", 5, ALL), (6, 6));
    match recv(&mut dave) {
        Reply::Msg {
            room, seq, text, ..
        } => {
            assert_eq!((room.as_str(), seq, text.as_str()), ("#a", 6, "after"));
        }
        other => panic!("expected MSG #a 6, got {other:?}"),
    }
    stop(d);
}

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (data, token) = store(tmp.path());
    let d = serve(&data, "");
    let stderr = serve_fails(&data);
    assert!(stderr.contains("in use"), "unclear refusal: {stderr}");

    let mut alice = sender(&d, &token);
    assert_eq!(send_all(&mut alice, &["still here".into()], 1), vec![1]);
}

#[test]
fn a_torn_tail_is_cut_at_start_and_nothing_acked_is_lost() {
    const N: u64 = 100;
    let tmp = tempfile::tempdir().expect("temp dir");
    let (data, token) = store(tmp.path());
    let d = serve(&data, "--send-rate 0");
    let mut alice = sender(&d, &token);
    let texts: Vec<String> = (1..=N).map(|i| format!("t{i}")).collect();
    send_in_order(&mut alice, &texts, 20);
    stop(d);

    let newest = segments(&data).pop().expect("a segment");
    // Fixed pseudo-random bytes, so that a failure reproduces.
    let garbage: Vec<u8> = (0..37u32)
        .map(|i| (i.wrapping_mul(0x9e37_79b9) >> 24) as u8)
        .collect();
    append(&newest, &garbage);
    let out = log_cmd("verify", &data, 1);
    assert!(out.contains(path_str(&newest)), "no file named: {out}");

    let d = serve(&data, "--send-rate 0");
    let warning = format!(
        "cut 37 bytes of an unfinished write off the end of {}",
        newest.display()
    );
    assert!(d.wait_for_log(&warning), "{:#?}", d.log_lines());
    let (_, _, msgs) = replay(&mut hello(d.addr, &token).0, 0, ALL);
    assert_msgs(&msgs, numbered(1..=N, |s| format!("t{s}")));
    stop(d);
    log_cmd("verify", &data, 0);

    // Half of a valid record, as a write cut short would leave it; repaired offline.
    let bytes = std::fs::read(&newest).expect("read segment");
    let (at, len) = records(&bytes)[0];
    append(&newest, &bytes[at..at + len / 2]);
    let out = log_cmd("verify", &data, 1);
    assert!(out.contains(path_str(&newest)), "no file named: {out}");
    let out = log_cmd("repair", &data, 0);
    assert!(out.contains(&format!("cut {} bytes", len / 2)), "{out}");
    let out = log_cmd("verify", &data, 0);
    assert!(out.contains(&format!("{N} messages")), "{out}");
}

#[test]
fn corruption_in_an_old_segment_stops_startup_naming_file_and_offset() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (data, token) = store(tmp.path());
    let d = serve(&data, "--send-rate 0 --segment-bytes 4096");
    let mut alice = sender(&d, &token);
    let texts: Vec<String> = (1..=300).map(|i| padded(i, 50)).collect();
    send_in_order(&mut alice, &texts, 20);
    stop(d);

    let segs = segments(&data);
    assert!(segs.len() >= 3, "expected several segments, got {segs:?}");
    let oldest = &segs[0];
    let mut bytes = std::fs::read(oldest).expect("read segment");
    let middle = bytes.len() / 2;
    let (offset, _) = *records(&bytes)
        .iter()
        .find(|&&(at, len)| (at..at + len).contains(&middle))
        .expect("a record holds the middle byte");
    bytes[middle] ^= 0x20;
    std::fs::write(oldest, &bytes).expect("write segment");

    let stderr = serve_fails(&data);
    let names =
        |text: &str| text.contains(path_str(oldest)) && text.contains(&format!("offset {offset}"));
    assert!(names(&stderr), "want {oldest:?} offset {offset}: {stderr}");
    let out = log_cmd("verify", &data, 1);
    assert!(names(&out), "want {oldest:?} offset {offset}: {out}");
}

#[test]
fn damage_mid_newest_segment_stops_startup_until_repair_force() {
    const N: u64 = 20;
    let tmp = tempfile::tempdir().expect("temp dir");
    let (data, token) = store(tmp.path());
    let d = serve(&data, "--send-rate 0");
    let mut alice = sender(&d, &token);
    let texts: Vec<String> = (1..=N).map(|i| format!("t{i}")).collect();
    send_in_order(&mut alice, &texts, 20);
    stop(d);

    // Bit rot in the middle of the newest segment: ten whole, ACKed records follow it.
    let newest = segments(&data).pop().expect("a segment");
    let mut bytes = std::fs::read(&newest).expect("read segment");
    let (offset, len) = records(&bytes)[9];
    bytes[offset + len - 1] ^= 0x20;
    std::fs::write(&newest, &bytes).expect("write segment");
    let names =
        |text: &str| text.contains(path_str(&newest)) && text.contains(&format!("offset {offset}"));

    let stderr = serve_fails(&data);
    assert!(names(&stderr), "want {newest:?} offset {offset}: {stderr}");
    assert!(stderr.contains("log repair --force"), "{stderr}");
    let out = log_cmd("verify", &data, 1);
    assert!(names(&out) && out.contains("10 whole records"), "{out}");
    let out = log_cmd("repair", &data, 1);
    assert!(names(&out), "{out}");
    assert_eq!(
        std::fs::read(&newest).expect("read"),
        bytes,
        "repair changed it"
    );

    let out = log_args(&["repair", "--force", path_str(&data)], 0);
    let dropped = format!("dropping {} bytes: 10 whole records", bytes.len() - offset);
    assert!(names(&out) && out.contains(&dropped), "{out}");
    let out = log_cmd("verify", &data, 0);
    assert!(out.contains("9 messages"), "{out}");
    let d = serve(&data, "--send-rate 0");
    let (_, _, msgs) = replay(&mut hello(d.addr, &token).0, 0, ALL);
    assert_msgs(&msgs, numbered(1..=9, |s| format!("t{s}")));
    stop(d);
}

#[test]
fn the_epoch_names_the_history_not_the_directory() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (data, token) = store(tmp.path());
    assert!(
        !data.join("epoch").exists() && !data.join("log").exists(),
        "`user add` made something that decides the epoch"
    );
    let d = serve(&data, "--send-rate 0");
    let epoch = hello(d.addr, &token).1;
    let mut alice = sender(&d, &token);
    assert_eq!(
        send_all(&mut alice, &["one".into(), "two".into()], 2),
        [1, 2]
    );
    stop(d);

    let mut d = serve(&data, "--send-rate 0");
    assert_eq!(
        hello(d.addr, &token).1,
        epoch,
        "a restart keeps the history"
    );
    d.signal(Signal::SIGKILL);
    d.wait_exit().expect("chatd did not die on SIGKILL");
    let d = serve(&data, "--send-rate 0");
    assert_eq!(hello(d.addr, &token).1, epoch, "kill -9 keeps the history");
    stop(d);
    log_cmd("repair", &data, 0);

    // The log deleted (to start over, or lost): seqs restart at 1, under a new epoch.
    std::fs::remove_dir_all(data.join("log")).expect("delete the log");
    let d = serve(&data, "--send-rate 0");
    let (mut c, again) = hello(d.addr, &token);
    assert_ne!(again, epoch, "a new history kept the old epoch");
    join(&mut c, ROOM, 0, 0);
    assert_eq!(send_one(&mut c, 1, "first again"), Ok(1));
    stop(d);
    let d = serve(&data, "--send-rate 0");
    assert_eq!(hello(d.addr, &token).1, again);
    stop(d);
}

/// A tmpfs mounted for one test, lazily unmounted however the test ends.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn disk_full_answers_storage_and_recovers() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(tmp.path())
        .output();
    let _mount = match mount {
        Ok(out) if out.status.success() => Tmpfs(tmp.path().to_path_buf()),
        other => {
            eprintln!("skipped: cannot mount a 2 MiB tmpfs (needs root): {other:?}");
            return;
        }
    };
    let (data, token) = store(tmp.path());
    let filler = tmp.path().join("filler");
    let fs = nix::sys::statvfs::statvfs(tmp.path()).expect("statvfs");
    let free = fs.blocks_available() * fs.fragment_size();
    std::fs::write(&filler, vec![0u8; (free - 300 * 1024) as usize]).expect("fill the disk");

    let flags = "--send-rate 0 --segment-bytes 65536";
    let d = serve(&data, flags);
    let mut alice = sender(&d, &token);
    let mut acked: Vec<Msg> = Vec::new();
    let mut refused = None;
    for id in 1..=1000 {
        let text = padded(id, 2048);
        match send_one(&mut alice, id, &text) {
            Ok(seq) => acked.push((seq, text)),
            Err(()) => {
                refused = Some(id);
                break;
            }
        }
    }
    let refused = refused.expect("the disk never filled up");
    assert_msgs(&acked, numbered(1..=refused - 1, |s| padded(s, 2048)));
    assert!(d.wait_for_log("log: cannot store messages"));
    // STORAGE is not fatal: the connection answers, and replay still reads the log.
    alice.send(&ClientFrame::Ping { nonce: 3 }).expect("PING");
    assert_eq!(recv(&mut alice), Reply::Pong { nonce: 3 });
    let (first, head, msgs) = replay(&mut hello(d.addr, &token).0, 0, ALL);
    assert_eq!((first, head), (1, acked.len() as u64));
    assert_msgs(&msgs, acked.clone());

    std::fs::remove_file(&filler).expect("free the disk");
    for id in 1001..=1005 {
        let text = padded(id, 2048);
        let seq = send_one(&mut alice, id, &text).expect("an ACK once the disk has room");
        assert_eq!(seq, acked.len() as u64 + 1, "a refused SEND used a seq");
        acked.push((seq, text));
    }
    assert!(d.wait_for_log("log: writing again"));
    stop(d);

    let d = serve(&data, flags);
    let (first, head, msgs) = replay(&mut hello(d.addr, &token).0, 0, ALL);
    assert_eq!((first, head), (1, acked.len() as u64));
    assert_msgs(&msgs, acked);
}
