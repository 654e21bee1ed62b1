//! `chatd serve --driver fork`, papayaChat's process pair per client, seen from outside: the
//! protocol it speaks (HELLO, JOIN live and replay, SEND/ACK, MSG, PING, BYE and the errors
//! around them), that a client killed mid-frame disturbs no other and leaves no process
//! behind, and that a stopped daemon leaves no child. Its processes are read from /proc; where
//! there is none, those checks say SKIPPED and return.

mod util;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chatd::client::{Client, Reply};
use chatd::protocol::{ClientFrame, ErrorCode, encode_client};
use nix::sys::signal::Signal;
use nix::sys::socket::{setsockopt, sockopt};
use util::{BIN, Daemon, PATIENCE, expect_error, expect_fatal, join, recv, recv_until_close, send};

fn start(extra: &[&str]) -> Daemon {
    let mut flags = vec!["--driver", "fork"];
    flags.extend(extra);
    Daemon::start(&flags)
}

/// Adds `user` (the fork driver reads the users file at each HELLO: no reload to wait for).
fn add(d: &Daemon, user: &str) -> String {
    util::add_user(&d.data_dir(), user)
}

/// HELLO as `user`; the connection and WELCOME's epoch.
#[track_caller]
fn hello(d: &Daemon, user: &str, token: &str) -> (Client, u64) {
    let mut c = d.connect();
    c.send(&ClientFrame::Hello {
        version: 1,
        user,
        token,
        client: 0,
    })
    .expect("HELLO");
    match recv(&mut c) {
        Reply::Welcome {
            epoch, max_frame, ..
        } => {
            assert_eq!(max_frame, 65_536);
            (c, epoch)
        }
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

#[track_caller]
fn login(d: &Daemon, user: &str) -> Client {
    let token = add(d, user);
    hello(d, user, &token).0
}

/// Reads until `n` MSGs and the ACK of `id` came; returns the MSGs as (seq, user, text) and
/// the ACK's seq.
#[track_caller]
fn msgs_and_ack(c: &mut Client, n: usize, id: u64) -> (Vec<(u64, String, String)>, u64) {
    let mut msgs = Vec::new();
    let mut acked = None;
    while msgs.len() < n || acked.is_none() {
        match recv(c) {
            Reply::Msg {
                seq, user, text, ..
            } => msgs.push((seq, user, text)),
            Reply::Ack { id: got, seq } if got == id => acked = Some(seq),
            other => panic!("expected MSG or ACK {id}, got {other:?}"),
        }
    }
    (msgs, acked.unwrap_or_default())
}

/// Reads `n` MSGs, then PINGs and expects the PONG next: nothing else was owed.
#[track_caller]
fn exactly_msgs(c: &mut Client, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    for _ in 0..n {
        match recv(c) {
            Reply::Msg { seq, .. } => seqs.push(seq),
            other => panic!("expected MSG, got {other:?}"),
        }
    }
    c.send(&ClientFrame::Ping { nonce: 77 }).expect("PING");
    assert_eq!(
        recv(c),
        Reply::Pong { nonce: 77 },
        "nothing more than {seqs:?}"
    );
    seqs
}

#[test]
fn two_clients_in_one_room_get_their_acks_and_both_messages_in_seq_order() {
    let d = start(&[]);
    let mut ann = login(&d, "ann");
    let mut bob = login(&d, "bob");
    assert_eq!(join(&mut ann, "#lab", 0, u32::MAX), (0, 0));
    assert_eq!(join(&mut bob, "#lab", 0, u32::MAX), (0, 0));
    // Both at once: which is stored first is up to the two readers and the room's lock.
    send(&mut ann, "#lab", 1, "from ann");
    send(&mut bob, "#lab", 2, "from bob");
    let (ann_msgs, ann_seq) = msgs_and_ack(&mut ann, 2, 1);
    let (bob_msgs, bob_seq) = msgs_and_ack(&mut bob, 2, 2);
    assert_eq!(
        ann_msgs, bob_msgs,
        "both see the same messages in the same order"
    );
    let seqs: Vec<u64> = ann_msgs.iter().map(|m| m.0).collect();
    assert_eq!(seqs, [1, 2]);
    let mut acked = [ann_seq, bob_seq];
    acked.sort_unstable();
    assert_eq!(acked, [1, 2], "each SEND has its own seq");
    for (seq, user, text) in &ann_msgs {
        let (want_seq, want_user) = if text == "from ann" {
            (ann_seq, "ann")
        } else {
            (bob_seq, "bob")
        };
        assert_eq!((*seq, user.as_str()), (want_seq, want_user), "{text}");
    }
}

#[test]
fn a_client_that_reconnects_replays_what_it_asks_for() {
    let d = start(&[]);
    let token = add(&d, "ann");
    let (mut ann, epoch) = hello(&d, "ann", &token);
    join(&mut ann, "#log", 0, 0);
    for id in 1..=3 {
        send(&mut ann, "#log", id, &format!("m{id}"));
        let (msgs, seq) = msgs_and_ack(&mut ann, 1, id);
        assert_eq!((msgs.len(), seq), (1, id));
    }
    ann.send(&ClientFrame::Bye).expect("BYE");
    assert_eq!(recv_until_close(&mut ann), vec![]);

    let (mut again, same) = hello(&d, "ann", &token);
    assert_eq!(same, epoch, "one history, one epoch");
    assert_eq!(join(&mut again, "#log", 0, u32::MAX), (1, 3));
    assert_eq!(exactly_msgs(&mut again, 3), [1, 2, 3]);
    // JOIN again: JOINED again, then only what comes after `after`.
    assert_eq!(join(&mut again, "#log", 2, u32::MAX), (1, 3));
    assert_eq!(exactly_msgs(&mut again, 1), [3]);
    // The last `limit` only.
    assert_eq!(join(&mut again, "#log", 0, 2), (1, 3));
    assert_eq!(exactly_msgs(&mut again, 2), [2, 3]);
    // A cursor from the future replays nothing, and live delivery starts after the head.
    assert_eq!(join(&mut again, "#log", 99, u32::MAX), (1, 3));
    assert_eq!(exactly_msgs(&mut again, 0), Vec::<u64>::new());
    send(&mut again, "#log", 4, "m4");
    let (msgs, seq) = msgs_and_ack(&mut again, 1, 4);
    assert_eq!((msgs.first().map(|m| m.0), seq), (Some(4), 4));
}

#[test]
fn the_history_and_its_epoch_survive_a_restart() {
    let data = tempfile::tempdir().expect("temp dir");
    let dir = data.path().display().to_string();
    let mut first = start(&["--data-dir", &dir]);
    let token = util::add_user(data.path(), "ann");
    let (mut ann, epoch) = hello(&first, "ann", &token);
    join(&mut ann, "#kept", 0, 0);
    send(&mut ann, "#kept", 1, "before the restart");
    msgs_and_ack(&mut ann, 1, 1);
    first.signal(Signal::SIGTERM);
    expect_fatal(&mut ann, ErrorCode::ShuttingDown);
    let status = first.wait_exit().expect("the daemon exits");
    assert!(status.success(), "{status}");

    let second = start(&["--data-dir", &dir]);
    let (mut ann, same) = hello(&second, "ann", &token);
    assert_eq!(same, epoch);
    assert_eq!(join(&mut ann, "#kept", 0, u32::MAX), (1, 1));
    assert_eq!(exactly_msgs(&mut ann, 1), [1]);
    send(&mut ann, "#kept", 2, "after");
    assert_eq!(
        msgs_and_ack(&mut ann, 1, 2).1,
        2,
        "seqs go on where they were"
    );
}

/// One process as /proc tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proc {
    pid: i32,
    ppid: i32,
    pgrp: i32,
}

/// Every process; `None` where there is no /proc.
fn processes() -> Option<Vec<Proc>> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let mut all = Vec::new();
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // Gone between the listing and the read: not ours to count.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 1..)) else {
            continue;
        };
        let mut fields = rest.split_whitespace().skip(1);
        let (Some(ppid), Some(pgrp)) = (fields.next(), fields.next()) else {
            continue;
        };
        if let (Ok(ppid), Ok(pgrp)) = (ppid.parse(), pgrp.parse()) {
            all.push(Proc { pid, ppid, pgrp });
        }
    }
    Some(all)
}

/// The daemon's children (zombies too: a child not yet reaped is still there).
fn children(d: &Daemon) -> Option<Vec<Proc>> {
    let pid = d.pid();
    Some(processes()?.into_iter().filter(|p| p.ppid == pid).collect())
}

/// Waits until the daemon has `want` children; the last count seen.
fn wait_for_children(d: &Daemon, want: usize) -> Option<usize> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = children(d)?.len();
        if now == want || Instant::now() >= deadline {
            return Some(now);
        }
        // A child ends, and is reaped, on its own time: no event to wait on but the count.
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_client_killed_mid_frame_disturbs_no_other_and_its_processes_are_reaped() {
    let d = start(&[]);
    let mut ann = login(&d, "ann");
    let mut bob = login(&d, "bob");
    join(&mut ann, "#k", 0, 0);
    join(&mut bob, "#k", 0, 0);
    let Some(base) = children(&d).map(|c| c.len()) else {
        eprintln!("SKIPPED process counts: no /proc here to read the daemon's children");
        return;
    };
    assert_eq!(base, 5, "the anchor and two processes per client");

    let mut half = Vec::new();
    encode_client(
        &ClientFrame::Send {
            room: "#k",
            id: 9,
            text: "never finished",
        },
        &mut half,
    );
    half.truncate(half.len() / 2);
    for (i, user) in ["cat", "dan"].iter().enumerate() {
        let mut victim = login(&d, user);
        join(&mut victim, "#k", 0, 0);
        assert_eq!(wait_for_children(&d, base + 2), Some(base + 2));
        victim.send_raw(&half).expect("half a SEND");
        if i == 1 {
            // Killed rather than closed: SO_LINGER 0 turns the close into a reset.
            let linger = nix::libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            setsockopt(victim.stream(), sockopt::Linger, &linger).expect("SO_LINGER");
        }
        drop(victim);
        assert_eq!(
            wait_for_children(&d, base),
            Some(base),
            "{user}'s pair is reaped, zombies included"
        );
        let id = 10 + i as u64;
        let seq = i as u64 + 1;
        send(&mut ann, "#k", id, "still here");
        let (msgs, acked) = msgs_and_ack(&mut ann, 1, id);
        assert_eq!((msgs.first().map(|m| m.0), acked), (Some(seq), seq));
        match recv(&mut bob) {
            Reply::Msg { seq: got, text, .. } => {
                assert_eq!((got, text.as_str()), (seq, "still here"))
            }
            other => panic!("expected ann's MSG, got {other:?}"),
        }
    }
    // And the other way round.
    send(&mut bob, "#k", 1, "me too");
    assert_eq!(msgs_and_ack(&mut bob, 1, 1).1, 3);
    match recv(&mut ann) {
        Reply::Msg { seq, user, .. } => assert_eq!((seq, user.as_str()), (3, "bob")),
        other => panic!("expected bob's MSG, got {other:?}"),
    }
}

#[test]
fn ping_follows_earlier_answers_and_bye_closes_after_them() {
    let d = start(&[]);
    let mut ann = login(&d, "ann");
    let mut pipelined = Vec::new();
    for frame in [
        // Live only: what this client sends after its JOIN is live to it, however late its
        // sender gets to the JOIN.
        ClientFrame::Join {
            room: "#p",
            after: 0,
            limit: 0,
        },
        ClientFrame::Send {
            room: "#p",
            id: 1,
            text: "hi",
        },
        ClientFrame::Ping { nonce: 5 },
        ClientFrame::Send {
            room: "#p",
            id: 2,
            text: "bye now",
        },
        ClientFrame::Bye,
    ] {
        encode_client(&frame, &mut pipelined);
    }
    ann.send_raw(&pipelined).expect("pipelined frames");
    let got = recv_until_close(&mut ann);
    let at = |want: &Reply| got.iter().position(|r| r == want);
    let joined = at(&Reply::Joined {
        room: "#p".into(),
        first: 0,
        head: 0,
    });
    let ack1 = at(&Reply::Ack { id: 1, seq: 1 });
    let pong = at(&Reply::Pong { nonce: 5 });
    let ack2 = at(&Reply::Ack { id: 2, seq: 2 });
    assert!(
        joined < ack1 && ack1 < pong && pong < ack2 && joined.is_some(),
        "answers in request order: {got:?}"
    );
    let seqs: Vec<u64> = got
        .iter()
        .filter_map(|r| match r {
            Reply::Msg { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(
        seqs,
        [1, 2],
        "BYE sends the room's messages before it closes"
    );
}

#[test]
fn frames_before_hello_and_wrong_tokens_are_refused() {
    let d = start(&[]);
    let mut early = d.connect();
    early.send(&ClientFrame::Ping { nonce: 1 }).expect("PING");
    expect_fatal(&mut early, ErrorCode::NotAuthenticated);

    add(&d, "ann");
    for (user, token) in [
        ("ann", "not the token"),
        ("nobody", "x"),
        ("bad name!", "x"),
    ] {
        let mut c = d.connect();
        c.send(&ClientFrame::Hello {
            version: 1,
            user,
            token,
            client: 0,
        })
        .expect("HELLO");
        expect_fatal(&mut c, ErrorCode::AuthFailed);
    }

    let mut zero = d.connect();
    zero.send_raw(&[0, 0, 0, 0]).expect("length 0");
    expect_fatal(&mut zero, ErrorCode::Malformed);
}

/// The fork model speaks version 1 only: a version 2 HELLO, well formed, is refused as a
/// version it does not speak, and a version 1 connection's WHO is an unknown kind.
#[test]
fn it_speaks_version_1_only() {
    let d = start(&[]);
    let token = add(&d, "ann");
    let mut c = d.connect();
    c.send(&ClientFrame::Hello {
        version: 2,
        user: "ann",
        token: &token,
        client: 5,
    })
    .expect("HELLO");
    expect_fatal(&mut c, ErrorCode::UnsupportedVersion);
    let mut ann = hello(&d, "ann", &token).0;
    ann.send_raw(&[0, 0, 0, 11, 0x07]).expect("WHO header");
    expect_fatal(&mut ann, ErrorCode::UnknownKind);
}

#[test]
fn rooms_are_checked_before_anything_is_stored() {
    let d = start(&[]);
    let mut ann = login(&d, "ann");
    send(&mut ann, "#unjoined", 3, "x");
    expect_error(&mut ann, ErrorCode::NotJoined, 3);
    send(&mut ann, "no spaces allowed", 4, "x");
    expect_error(&mut ann, ErrorCode::Invalid, 4);
    join(&mut ann, "#r", 0, 0);
    send(&mut ann, "#r", 5, "");
    expect_error(&mut ann, ErrorCode::Invalid, 5);
    ann.send(&ClientFrame::Leave { room: "#r" }).expect("LEAVE");
    assert_eq!(recv(&mut ann), Reply::Left { room: "#r".into() });
    ann.send(&ClientFrame::Leave { room: "#r" }).expect("LEAVE");
    expect_error(&mut ann, ErrorCode::NotJoined, 0);
}

#[test]
fn a_client_that_says_nothing_times_out() {
    let d = start(&["--handshake-timeout", "300ms"]);
    let mut silent = d.connect();
    expect_fatal(&mut silent, ErrorCode::Timeout);
}

#[test]
fn past_max_connections_a_client_gets_too_many_until_a_place_is_free() {
    let d = start(&["--max-connections", "1"]);
    let mut ann = login(&d, "ann");
    let mut second = d.connect();
    expect_fatal(&mut second, ErrorCode::TooMany);
    ann.send(&ClientFrame::Bye).expect("BYE");
    assert_eq!(recv_until_close(&mut ann), vec![]);
    // The place is free once the daemon reaped ann's pair.
    let token = add(&d, "bob");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut c = d.connect();
        c.send(&ClientFrame::Hello {
            version: 1,
            user: "bob",
            token: &token,
            client: 0,
        })
        .expect("HELLO");
        match recv(&mut c) {
            Reply::Welcome { .. } => break,
            Reply::Error { code, .. } if code == ErrorCode::TooMany.as_u16() => {
                assert!(Instant::now() < deadline, "the place was never freed");
            }
            other => panic!("expected WELCOME or TOO_MANY, got {other:?}"),
        }
    }
}

#[test]
fn sigterm_says_shutting_down_and_leaves_no_process_behind() {
    let mut d = start(&[]);
    let mut ann = login(&d, "ann");
    join(&mut ann, "#s", 0, 0);
    let Some(kids) = children(&d) else {
        eprintln!("SKIPPED process checks: no /proc here to read the daemon's children");
        return;
    };
    let groups: HashSet<i32> = kids.iter().map(|p| p.pgrp).collect();
    assert_eq!(groups.len(), 1, "every child in one group: {kids:?}");
    assert!(
        !groups.contains(&d.pid()),
        "the daemon is not in its children's group"
    );
    d.signal(Signal::SIGTERM);
    expect_fatal(&mut ann, ErrorCode::ShuttingDown);
    let status = d.wait_exit().expect("the daemon exits");
    assert!(status.success(), "{status}");
    let left: Vec<Proc> = processes()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| groups.contains(&p.pgrp) || kids.iter().any(|k| k.pid == p.pid))
        .collect();
    assert!(left.is_empty(), "children outlived the daemon: {left:?}");
}

#[test]
fn flags_it_does_not_implement_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(BIN)
        .args(["serve", "--driver", "fork", "--listen", "127.0.0.1:0"])
        .args(["--metrics", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run chatd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--metrics") && stderr.contains("fork"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "refused before listening"
    );
}

#[test]
fn web_listeners_are_refused_at_start_by_name() {
    // A fork pair speaks protocol v1 on a bare socket: neither HTTP nor WebSocket.
    // For --web-tls-listen, the refusal comes before the certificate files are read.
    let tls_files = ["--tls-cert", "absent.pem", "--tls-key", "absent.key"];
    for (flag, extra) in [
        ("--web-listen", &[][..]),
        ("--web-tls-listen", &tls_files[..]),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(BIN)
            .args(["serve", "--driver", "fork", "--listen", "127.0.0.1:0"])
            .args([flag, "127.0.0.1:0"])
            .args(extra)
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run chatd");
        // A daemon that took the flag would serve on: stop it rather than wait forever.
        let deadline = Instant::now() + PATIENCE;
        while child.try_wait().expect("try_wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{flag} was not refused: the daemon is serving");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().expect("chatd's output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains("--driver fork does not support"),
            "{flag}: {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening"),
            "{flag}: refused before listening"
        );
    }
}
