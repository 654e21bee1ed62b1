//! Fan-out under load: members of two rooms spread over several reactors, a burst of
//! pipelined SENDs, a replay longer than any one write, and members that read slowly or not
//! at all beside members that read everything.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chatd::client::{Client, Reply};
use chatd::protocol::{ClientFrame, ErrorCode, encode_client};
use nix::sys::socket::{setsockopt, sockopt};
use util::{Daemon, PATIENCE, join, recv, recv_msgs, recv_until_close, send};

/// A MSG as the tests compare it: (room, seq, user, text).
type Msg = (String, u64, String, String);

const ROOMS: [&str; 2] = ["#alpha", "#beta"];
/// Members 0..10 are in `#alpha`, 6..16 in `#beta`: 4 of them in both.
const MEMBERS: usize = 16;
/// Members 6..10 (in both rooms) also send.
const SENDERS: usize = 4;
const FIRST_SENDER: usize = 6;
const PER_SENDER: u64 = 50;
const PER_ROOM: u64 = SENDERS as u64 * PER_SENDER;
/// Connections opened at most while looking for a second reactor.
const MAX_CONNECTIONS: usize = 64;

fn sender_text(sender: usize, j: u64) -> String {
    format!("sender-{sender} msg-{j}")
}

/// SEND ids are unique per connection: the room's index in the thousands.
fn send_id(room: usize, j: u64) -> u64 {
    room as u64 * 1000 + j
}

/// `len` bytes of text starting with `n`, so that every message differs.
fn padded(n: u64, len: usize) -> String {
    let mut text = format!("{n:06} ");
    text.extend(std::iter::repeat_n('x', len.saturating_sub(text.len())));
    text
}

/// Starts a daemon for bulk traffic: no send rate limit, and no fsync (durability is not
/// what these tests are about, and syncing thousands of messages is slow), plus `extra`.
fn start(extra: &[&str]) -> Daemon {
    let mut flags = vec!["--send-rate", "0", "--fsync", "never"];
    flags.extend_from_slice(extra);
    Daemon::start(&flags)
}

/// Appends a SEND frame to `bytes`, for writing many in one go.
fn encode_send(room: &str, id: u64, text: &str, bytes: &mut Vec<u8>) {
    encode_client(&ClientFrame::Send { room, id, text }, bytes);
}

/// Waits until `done` holds (checked every few ms); false if PATIENCE passed first.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// The distinct reactors of the "reactor N: open #S" lines, once `opened` of them are logged.
#[track_caller]
fn reactors_holding(d: &Daemon, opened: usize) -> BTreeSet<usize> {
    let opened_on = || -> Vec<usize> {
        let lines = d.log_lines();
        let reactor = |line: &String| {
            let (head, _) = line.split_once(": open #")?;
            head.rsplit_once("reactor ")?.1.parse().ok()
        };
        lines.iter().filter_map(reactor).collect()
    };
    let logged = eventually(|| opened_on().len() >= opened);
    assert!(logged, "the daemon logged fewer than {opened} opens");
    opened_on().into_iter().collect()
}

/// The receive buffer of a member that will stop reading. Fixing it turns off autotuning, so
/// what the kernel holds for it is bounded; it stays above loopback's 64 KiB segment size,
/// since a window smaller than one segment makes TCP crawl once the member reads again.
const STALLING_RCVBUF: usize = 256 * 1024;

/// Logs in with a fixed receive buffer of `STALLING_RCVBUF`.
#[track_caller]
fn login_stalling(d: &Daemon, name: &str) -> Client {
    let c = d.login(name);
    setsockopt(c.stream(), sockopt::RcvBuf, &STALLING_RCVBUF).expect("SO_RCVBUF");
    c
}

/// Sends `count` SENDs to `room` (ids and seqs 1..=count: `c` is the room's only sender) in
/// batches of `batch` per write, and reads each batch's ACKs and own MSGs before the next, so
/// that the publisher never falls behind itself.
#[track_caller]
fn publish(c: &mut Client, room: &str, count: u64, batch: u64, text: impl Fn(u64) -> String) {
    let mut next = 1;
    while next <= count {
        let end = (next + batch).min(count + 1);
        let mut bytes = Vec::new();
        for id in next..end {
            encode_send(room, id, &text(id), &mut bytes);
        }
        c.send_raw(&bytes).expect("write a batch of SENDs");
        let mut acks = Vec::new();
        let msgs = recv_msgs(c, usize::try_from(end - next).expect("small"), &mut acks);
        while acks.len() < msgs.len() {
            acks.push(recv(c));
        }
        for (id, (msg, ack)) in (next..end).zip(msgs.iter().zip(&acks)) {
            assert_eq!(*ack, Reply::Ack { id, seq: id }, "ACK of SEND {id}");
            assert_eq!(
                (msg.1, msg.3.as_str()),
                (id, text(id).as_str()),
                "own MSG {id}"
            );
        }
        next = end;
    }
}

/// Reads a room's MSGs until `n` arrived, checking they are seqs 1..=n with `text(seq)`.
#[track_caller]
fn expect_history(c: &mut Client, n: u64, text: impl Fn(u64) -> String) {
    let mut others = Vec::new();
    let msgs = recv_msgs(c, usize::try_from(n).expect("small"), &mut others);
    assert!(others.is_empty(), "only MSGs expected, got {others:?}");
    for (want, msg) in (1..=n).zip(&msgs) {
        assert_eq!(msg.1, want, "MSGs in seq order, without gaps");
        assert_eq!(msg.3, text(want), "text of seq {want}");
    }
}

/// Reads until the server closes, tolerating a frame cut short by the close: a client that
/// did not read during the close grace may lose the tail the server never got to write.
fn recv_to_end(c: &mut Client) -> Vec<Reply> {
    use std::io::ErrorKind::{ConnectionReset, UnexpectedEof};
    let mut got = Vec::new();
    loop {
        match c.recv() {
            Ok(Some(reply)) => got.push(reply),
            Ok(None) => return got,
            Err(e) if matches!(e.kind(), UnexpectedEof | ConnectionReset) => return got,
            Err(e) => panic!("expected a close; got {e} after {} frames", got.len()),
        }
    }
}

/// Splits what a dropped member read into the seqs of its MSGs and whether the stream ended
/// with ERROR SLOW_CONSUMER; anything else fails the test.
#[track_caller]
fn seqs_then_slow_consumer(frames: &[Reply]) -> (Vec<u64>, bool) {
    let (last, body) = match frames.split_last() {
        Some((
            Reply::Error {
                code, reference, ..
            },
            body,
        )) => {
            assert_eq!(*code, ErrorCode::SlowConsumer.as_u16(), "the closing ERROR");
            assert_eq!(*reference, 0);
            (true, body)
        }
        _ => (false, frames),
    };
    let seqs = body
        .iter()
        .map(|f| match f {
            Reply::Msg { seq, .. } => *seq,
            other => panic!("only MSGs may come before SLOW_CONSUMER, got {other:?}"),
        })
        .collect();
    (seqs, last)
}

struct Member {
    client: Client,
    user: String,
    rooms: Vec<&'static str>,
    sender: Option<usize>,
}

/// Sends this member's share (if it is a sender), then reads every MSG of its rooms and every
/// ACK it is owed; a PING afterwards proves nothing more was queued for it.
fn run_member(m: &mut Member) -> (Vec<Msg>, Vec<(u64, u64)>) {
    if let Some(s) = m.sender {
        for j in 0..PER_SENDER {
            for (r, room) in ROOMS.iter().enumerate() {
                send(&mut m.client, room, send_id(r, j), &sender_text(s, j));
            }
        }
    }
    let want_msgs = m.rooms.len() * PER_ROOM as usize;
    let want_acks = if m.sender.is_some() {
        2 * PER_SENDER as usize
    } else {
        0
    };
    let (mut msgs, mut acks) = (Vec::new(), Vec::new());
    while msgs.len() < want_msgs || acks.len() < want_acks {
        match recv(&mut m.client) {
            Reply::Msg {
                room,
                seq,
                user,
                text,
                ..
            } => msgs.push((room, seq, user, text)),
            Reply::Ack { id, seq } => acks.push((id, seq)),
            other => panic!("{}: unexpected {other:?}", m.user),
        }
    }
    m.client
        .send(&ClientFrame::Ping { nonce: 7 })
        .expect("ping");
    let next = recv(&mut m.client);
    assert_eq!(next, Reply::Pong { nonce: 7 }, "{}: more than owed", m.user);
    (msgs, acks)
}

#[test]
fn members_on_several_reactors_get_each_message_of_their_rooms_once_in_order() {
    let d = start(&["--threads", "4"]);
    let mut members: Vec<Member> = (0..MEMBERS)
        .map(|i| {
            let user = format!("member{i}");
            Member {
                client: d.login(&user),
                user,
                rooms: [(i < 10, ROOMS[0]), (i >= 6, ROOMS[1])]
                    .into_iter()
                    .filter_map(|(member, room)| member.then_some(room))
                    .collect(),
                sender: (FIRST_SENDER..FIRST_SENDER + SENDERS)
                    .contains(&i)
                    .then(|| i - FIRST_SENDER),
            }
        })
        .collect();
    // The kernel spreads SO_REUSEPORT connections by hash: open more until two reactors share
    // the members' load (with 16 already open that is all but certain).
    let extra_token = d.add_user("extra");
    let mut extras = Vec::new();
    while reactors_holding(&d, MEMBERS + extras.len()).len() < 2 {
        assert!(
            MEMBERS + extras.len() < MAX_CONNECTIONS,
            "{MAX_CONNECTIONS} connections all landed on one reactor"
        );
        extras.push(d.login_with("extra", &extra_token));
    }
    for m in &mut members {
        for room in m.rooms.clone() {
            assert_eq!(join(&mut m.client, room, 0, 0), (0, 0));
        }
    }

    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = members
            .iter_mut()
            .map(|m| s.spawn(move || run_member(m)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("member thread"))
            .collect()
    });

    // Each room's history, (user, text) by seq, as its first member saw it; every other
    // member must have seen exactly the same.
    let mut history: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
    for (m, (msgs, _)) in members.iter().zip(&results) {
        for room in ROOMS {
            let got: Vec<&Msg> = msgs.iter().filter(|msg| msg.0 == room).collect();
            if !m.rooms.contains(&room) {
                assert!(got.is_empty(), "{} got MSGs of {room}", m.user);
                continue;
            }
            let seqs: Vec<u64> = got.iter().map(|msg| msg.1).collect();
            let want: Vec<u64> = (1..=PER_ROOM).collect();
            assert_eq!(seqs, want, "{} in {room}: each seq once, in order", m.user);
            let seen: Vec<(String, String)> = got
                .iter()
                .map(|msg| (msg.2.clone(), msg.3.clone()))
                .collect();
            let first = history.entry(room).or_insert_with(|| seen.clone());
            assert_eq!(*first, seen, "{} saw {room} differently", m.user);
        }
    }
    let sender_user = |s: usize| format!("member{}", FIRST_SENDER + s);
    for room in ROOMS {
        let mut stored = history[room].clone();
        stored.sort();
        let mut sent: Vec<(String, String)> = (0..SENDERS)
            .flat_map(|s| (0..PER_SENDER).map(move |j| (sender_user(s), sender_text(s, j))))
            .collect();
        sent.sort();
        assert_eq!(stored, sent, "{room} holds exactly the messages sent to it");
    }
    for (m, (_, acks)) in members.iter().zip(&results) {
        let Some(s) = m.sender else {
            assert!(acks.is_empty(), "{} sent nothing but got ACKs", m.user);
            continue;
        };
        let by_id: BTreeMap<u64, u64> = acks.iter().copied().collect();
        assert_eq!(by_id.len(), acks.len(), "{}: one ACK per SEND", m.user);
        for (r, room) in ROOMS.iter().enumerate() {
            let mut last = 0;
            for j in 0..PER_SENDER {
                let id = send_id(r, j);
                let seq = *by_id
                    .get(&id)
                    .unwrap_or_else(|| panic!("{}: no ACK for SEND {id}", m.user));
                assert!(seq > last, "{}: a sender's seqs increase", m.user);
                last = seq;
                let at = usize::try_from(seq - 1).expect("small");
                let msg = (sender_user(s), sender_text(s, j));
                assert_eq!(history[room][at], msg, "ACK seq {seq} in {room}");
            }
        }
    }
}

#[test]
fn two_hundred_sends_in_one_write_get_their_acks_and_msgs_in_order() {
    let d = start(&[]);
    let mut alice = d.login("alice");
    join(&mut alice, "#pipe", 0, 0);
    let mut burst = Vec::new();
    for id in 1..=200 {
        encode_send("#pipe", id, &format!("pipelined {id}"), &mut burst);
    }
    alice.send_raw(&burst).expect("one write of 200 SENDs");
    let mut acks = Vec::new();
    let msgs = recv_msgs(&mut alice, 200, &mut acks);
    while acks.len() < 200 {
        acks.push(recv(&mut alice));
    }
    let want_acks: Vec<Reply> = (1..=200).map(|i| Reply::Ack { id: i, seq: i }).collect();
    assert_eq!(acks, want_acks);
    let want_msgs: Vec<Msg> = (1..=200)
        .map(|i| ("#pipe".into(), i, "alice".into(), format!("pipelined {i}")))
        .collect();
    assert_eq!(msgs, want_msgs);
}

#[test]
fn a_late_member_gets_a_long_history_in_order_then_live_messages() {
    let d = start(&[]);
    let mut alice = d.login("alice");
    join(&mut alice, "#archive", 0, 0);
    let text = |n| padded(n, 100);
    publish(&mut alice, "#archive", 3000, 100, text);

    let mut bob = d.login("bob");
    assert_eq!(join(&mut bob, "#archive", 0, u32::MAX), (1, 3000));
    expect_history(&mut bob, 3000, text);

    send(&mut alice, "#archive", 3001, "live");
    let mut others = Vec::new();
    let live = recv_msgs(&mut bob, 1, &mut others);
    assert_eq!(
        live,
        vec![("#archive".into(), 3001, "alice".into(), "live".into())]
    );
    assert!(others.is_empty(), "bob is owed nothing else: {others:?}");
}

/// Bytes of messages that a member which reads nothing cannot all hold in kernel buffers:
/// twice the most the server's send buffer may grow to (the third field of `tcp_wmem`) and
/// more, so that the server's writes to it are certain to stall.
fn stalling_burst() -> usize {
    let max_send_buffer = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20);
    2 * max_send_buffer + 4 * STALLING_RCVBUF + (4 << 20)
}

#[test]
fn a_stalled_member_is_dropped_while_healthy_members_get_everything() {
    let d = start(&[
        "--write-stall-timeout",
        "1s",
        "--ring-messages",
        "100000",
        "--ring-bytes",
        "1000000000",
    ]);
    const ROOM: &str = "#busy";
    const SIZE: usize = 4096;
    let count = (stalling_burst() / SIZE) as u64;
    let text = |n| padded(n, SIZE);
    let mut slow = login_stalling(&d, "slow");
    join(&mut slow, ROOM, 0, 0);
    let mut healthy: Vec<Client> = ["h1", "h2"]
        .iter()
        .map(|name| {
            let mut c = d.login(name);
            join(&mut c, ROOM, 0, 0);
            c
        })
        .collect();
    let mut publisher = d.login("publisher");
    join(&mut publisher, ROOM, 0, 0);
    let rss_before = d.rss_kib();

    std::thread::scope(|s| {
        let readers: Vec<_> = healthy
            .iter_mut()
            .map(|c| s.spawn(move || expect_history(c, count, text)))
            .collect();
        publish(&mut publisher, ROOM, count, 32, text);
        for r in readers {
            r.join()
                .expect("a healthy member got every message in order");
        }
    });

    assert!(
        eventually(|| d
            .log_lines()
            .iter()
            .any(|l| l.contains("close #") && l.contains("SLOW_CONSUMER"))),
        "the daemon never logged closing the slow consumer"
    );
    d.assert_rss_bounded(rss_before, 64 * 1024);
    // What the slow member still gets is what the kernel held: a prefix, and the ERROR only
    // if the server could write it before the close grace ran out.
    let (seqs, _) = seqs_then_slow_consumer(&recv_to_end(&mut slow));
    let prefix: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(
        seqs, prefix,
        "the slow member's MSGs are a prefix, in order"
    );
    assert!(
        (seqs.len() as u64) < count,
        "the slow member was dropped before it got everything"
    );
}

/// Size of the messages a lagging member misses.
const LAG_SIZE: usize = 1024;

fn lag_text(n: u64) -> String {
    padded(n, LAG_SIZE)
}

/// Starts a daemon keeping 50 messages in memory (plus `extra` flags), and lets a stalling
/// burst pass `#ring` while one member reads nothing. Returns the daemon, that member, the
/// publisher and the burst's length.
fn lag_behind(extra: &[&str]) -> (Daemon, Client, Client, u64) {
    let mut flags = vec!["--ring-messages", "50", "--write-stall-timeout", "30s"];
    flags.extend_from_slice(extra);
    let d = start(&flags);
    let count = (stalling_burst() / LAG_SIZE) as u64;
    let mut lagging = login_stalling(&d, "lagging");
    join(&mut lagging, "#ring", 0, 0);
    let mut publisher = d.login("publisher");
    join(&mut publisher, "#ring", 0, 0);
    publish(&mut publisher, "#ring", count, 50, lag_text);
    (d, lagging, publisher, count)
}

#[test]
fn a_member_behind_the_memory_window_is_caught_up_from_the_log() {
    let (_d, mut lagging, mut publisher, count) = lag_behind(&[]);
    // Only 50 messages are in memory; the rest reaches the lagging member from the log.
    expect_history(&mut lagging, count, lag_text);
    send(&mut publisher, "#ring", count + 1, "live");
    let mut others = Vec::new();
    let live = recv_msgs(&mut lagging, 1, &mut others);
    assert_eq!(live[0].1, count + 1, "live delivery resumes right after");
    assert!(others.is_empty(), "{others:?}");
}

#[test]
fn a_member_behind_retention_gets_slow_consumer_not_a_gap() {
    // Small segments and a small retention: the log deletes what the member has not read.
    let retention = ["--segment-bytes", "65536", "--retention-bytes", "262144"];
    let (_d, mut lagging, _publisher, count) = lag_behind(&retention);
    let (seqs, ended_with_error) = seqs_then_slow_consumer(&recv_until_close(&mut lagging));
    assert!(ended_with_error, "the stream must end with SLOW_CONSUMER");
    let prefix: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, prefix, "MSGs contiguous from seq 1, no silent gap");
    assert!(
        (seqs.len() as u64) < count,
        "the lagging member cannot have read past what retention deleted"
    );
}
