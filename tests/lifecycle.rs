//! The daemon's life around the conversations: graceful stops on SIGTERM and SIGINT, the
//! user admin commands, the command line, the data directory on first run, and hostile
//! clients that must not cost anyone else their service.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chatd::client::{Client, Reply};
use chatd::protocol::{ClientFrame, ErrorCode, encode_client, kind};
use nix::sys::signal::Signal;
use util::{BIN, Daemon, PATIENCE, expect_fatal, join, recv, recv_msgs, recv_until_close, send};

/// Runs `chatd ARGS` to completion; fails the test if it does not exit within PATIENCE.
#[track_caller]
fn chatd(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chatd");
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chatd {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("collect output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `count` SENDs to `room` with ids 1..=count, then a PING with `nonce`, in one buffer.
fn sends_then_ping(room: &str, count: u64, nonce: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    for id in 1..=count {
        let text = format!("in flight {id}");
        encode_client(
            &ClientFrame::Send {
                room,
                id,
                text: &text,
            },
            &mut bytes,
        );
    }
    encode_client(&ClientFrame::Ping { nonce }, &mut bytes);
    bytes
}

/// Checks what a member read up to the close at shutdown: ACKs (seqs increasing), MSGs (seqs
/// increasing) and PONGs, then ERROR SHUTTING_DOWN as the very last frame. Returns the ACKed ids.
#[track_caller]
fn acks_before_shutting_down(who: &str, frames: &[Reply]) -> Vec<u64> {
    let Some((
        Reply::Error {
            code, reference, ..
        },
        before,
    )) = frames.split_last()
    else {
        panic!("{who}: the last frame must be ERROR SHUTTING_DOWN, got {frames:?}");
    };
    assert_eq!(*code, ErrorCode::ShuttingDown.as_u16(), "{who}: {frames:?}");
    assert_eq!(*reference, 0);
    let (mut ids, mut last_ack, mut last_msg) = (Vec::new(), 0, 0);
    for frame in before {
        match frame {
            Reply::Ack { id, seq } => {
                assert!(*seq > last_ack, "{who}: ACK seqs increase: {frames:?}");
                last_ack = *seq;
                ids.push(*id);
            }
            Reply::Msg { seq, .. } => {
                assert!(*seq > last_msg, "{who}: MSG seqs increase: {frames:?}");
                last_msg = *seq;
            }
            Reply::Pong { .. } => {}
            other => panic!("{who}: unexpected {other:?} before SHUTTING_DOWN"),
        }
    }
    ids
}

/// A connection attempted after shutdown began is refused, or closed without being served
/// (at most told SHUTTING_DOWN).
#[track_caller]
fn assert_not_served(d: &Daemon, user: &str, token: &str) {
    let Ok(mut c) = Client::connect(d.addr) else {
        return;
    };
    c.set_timeout(Some(PATIENCE)).expect("set timeout");
    let hello = ClientFrame::Hello {
        version: 1,
        user,
        token,
        client: 0,
    };
    // The write itself may fail on a connection the kernel already reset.
    let _ = c.send(&hello);
    loop {
        match c.recv() {
            Ok(None) => return,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                return;
            }
            Ok(Some(Reply::Error { code, .. })) if code == ErrorCode::ShuttingDown.as_u16() => {}
            other => panic!("a connection made during shutdown was served: {other:?}"),
        }
    }
}

/// The whole graceful stop, started by `signal`: every SEND read is ACKed before ERROR
/// SHUTTING_DOWN, nothing follows it, new connections are not served, and the exit is 0.
fn stops_gracefully_on(signal: Signal) {
    const ROOM: &str = "#ops";
    let mut d = Daemon::start(&[]);
    let mut dave = d.login("dave");
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    let carol_token = d.add_user("carol");
    let mut carol = d.login_with("carol", &carol_token);
    for c in [&mut dave, &mut alice, &mut bob] {
        join(c, ROOM, 0, 0);
    }
    // dave's PONG proves the server read all 20 of his SENDs before the signal.
    dave.send_raw(&sends_then_ping(ROOM, 20, 1))
        .expect("pipeline");
    let mut dave_frames = Vec::new();
    loop {
        match recv(&mut dave) {
            Reply::Pong { nonce: 1 } => break,
            other => dave_frames.push(other),
        }
    }
    // alice's SENDs are still on their way when the signal lands.
    alice
        .send_raw(&sends_then_ping(ROOM, 20, 2))
        .expect("pipeline");
    d.signal(signal);

    dave_frames.extend(recv_until_close(&mut dave));
    let acked = acks_before_shutting_down("dave", &dave_frames);
    assert_eq!(
        acked,
        (1..=20).collect::<Vec<u64>>(),
        "dave: every SEND ACKed"
    );

    let alice_frames = recv_until_close(&mut alice);
    let acked = acks_before_shutting_down("alice", &alice_frames);
    let prefix: Vec<u64> = (1..=acked.len() as u64).collect();
    assert_eq!(acked, prefix, "alice: the SENDs read are ACKed, in order");
    if alice_frames.contains(&Reply::Pong { nonce: 2 }) {
        assert_eq!(
            acked.len(),
            20,
            "alice's PING was read, so all her SENDs were"
        );
    }

    let bob_frames = recv_until_close(&mut bob);
    assert!(acks_before_shutting_down("bob", &bob_frames).is_empty());
    expect_fatal(&mut carol, ErrorCode::ShuttingDown);

    // carol has not closed her end, so the daemon is still finishing its stop (for up to
    // the 2 s close grace): a new connection now must not be served.
    assert!(
        d.is_running(),
        "the daemon waits for carol's end of the connection"
    );
    assert_not_served(&d, "carol", &carol_token);
    drop((dave, alice, bob, carol));
    let status = d
        .wait_exit()
        .expect("the daemon exits after a graceful stop");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn sigterm_acks_what_was_read_then_says_shutting_down_and_exits_zero() {
    stops_gracefully_on(Signal::SIGTERM);
}

#[test]
fn sigint_stops_the_same_way() {
    stops_gracefully_on(Signal::SIGINT);
}

#[test]
fn user_commands_add_list_remove_and_refuse_mistakes() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let data_arg = data.to_str().expect("utf-8 path");
    let mut tokens = Vec::new();
    for name in ["carol", "alice", "bob"] {
        let out = chatd(&["user", "add", name, "--data-dir", data_arg]);
        assert!(out.status.success(), "add {name}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let token = stdout
            .lines()
            .last()
            .expect("a token line")
            .trim()
            .to_string();
        assert_eq!(token.len(), 64, "token of {name}: {stdout}");
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");
        tokens.push(token);
    }
    assert_ne!(tokens[0], tokens[1], "every user gets a fresh token");

    let list = chatd(&["user", "list", "--data-dir", data_arg]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert_eq!(
        text(&list.stdout).lines().collect::<Vec<_>>(),
        ["alice", "bob", "carol"]
    );

    let again = chatd(&["user", "add", "alice", "--data-dir", data_arg]);
    assert!(!again.status.success(), "adding an existing user must fail");
    let message = text(&again.stderr);
    assert!(
        message.contains("alice") && message.contains("already exists"),
        "{message}"
    );

    let unknown = chatd(&["user", "remove", "zed", "--data-dir", data_arg]);
    assert!(
        !unknown.status.success(),
        "removing an unknown user must fail"
    );
    assert!(
        text(&unknown.stderr).contains("zed"),
        "{}",
        text(&unknown.stderr)
    );

    let removed = chatd(&["user", "remove", "bob", "--data-dir", data_arg]);
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    let list = chatd(&["user", "list", "--data-dir", data_arg]);
    assert_eq!(
        text(&list.stdout).lines().collect::<Vec<_>>(),
        ["alice", "carol"]
    );

    let users = data.join("users");
    let mode = std::fs::metadata(&users)
        .expect("users file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "users file mode");
    let contents = std::fs::read_to_string(&users).expect("read users file");
    for token in &tokens {
        assert!(
            !contents.contains(token.as_str()),
            "the users file holds a token"
        );
    }

    // The tokens printed are the ones the daemon accepts; a removed user's no longer is.
    let d = Daemon::start_in(tmp, &[]);
    let mut alice = d.login_with("alice", &tokens[1]);
    alice.send(&ClientFrame::Ping { nonce: 5 }).expect("ping");
    assert_eq!(recv(&mut alice), Reply::Pong { nonce: 5 });
    let mut bob = d.connect();
    bob.send(&ClientFrame::Hello {
        version: 1,
        user: "bob",
        token: &tokens[2],
        client: 0,
    })
    .expect("send HELLO");
    expect_fatal(&mut bob, ErrorCode::AuthFailed);
}

#[test]
fn serve_help_lists_every_limit_flag() {
    let out = chatd(&["serve", "--help"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let help = text(&out.stdout);
    for flag in [
        "--max-frame",
        "--max-connections",
        "--max-connections-per-ip",
        "--max-rooms-per-connection",
        "--max-rooms",
        "--send-rate",
        "--send-burst",
        "--handshake-timeout",
        "--idle-timeout",
        "--write-stall-timeout",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn an_unknown_serve_flag_exits_2_naming_it() {
    let out = chatd(&["serve", "--bogus"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--bogus"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn listening_on_an_address_in_use_fails_naming_it() {
    // std binds without SO_REUSEPORT, so the daemon's listeners cannot join this port.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = holder.local_addr().expect("bound address").to_string();
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let out = chatd(&[
        "serve",
        "--listen",
        &addr,
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ]);
    assert!(!out.status.success(), "serving on a taken port must fail");
    assert!(text(&out.stderr).contains(&addr), "{}", text(&out.stderr));
}

#[test]
fn the_data_directory_and_its_epoch_are_created_on_first_run() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("not").join("yet").join("data");
    let data_arg = data.to_str().expect("utf-8 path");
    assert!(!tmp.path().join("not").exists());
    let welcome_epoch = |d: &Daemon, token: &str| {
        let mut c = d.connect();
        c.send(&ClientFrame::Hello {
            version: 1,
            user: "alice",
            token,
            client: 0,
        })
        .expect("send HELLO");
        let epoch = match recv(&mut c) {
            Reply::Welcome { epoch, .. } => epoch,
            other => panic!("expected WELCOME, got {other:?}"),
        };
        // The epoch names a history: store a message, or the next start begins a new one.
        join(&mut c, "#r", 0, 0);
        send(&mut c, "#r", 1, "kept");
        while !matches!(recv(&mut c), Reply::Ack { .. }) {}
        epoch
    };

    let d = Daemon::start(&["--data-dir", data_arg]);
    assert!(data.is_dir(), "the nested data directory exists");
    let mode = std::fs::metadata(&data)
        .expect("data dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "data directory mode");
    let file = std::fs::read_to_string(data.join("log").join("epoch")).expect("an epoch file");
    let digits = file
        .lines()
        .find_map(|l| l.strip_prefix("epoch "))
        .expect("an epoch line");
    let epoch = u64::from_str_radix(digits, 16).expect("epoch in hex");
    assert_ne!(epoch, 0);
    let token = util::add_user(&data, "alice");
    d.wait_for_users(1);
    assert_eq!(
        welcome_epoch(&d, &token),
        epoch,
        "WELCOME carries the stored epoch"
    );

    drop(d);
    let d = Daemon::start(&["--data-dir", data_arg]);
    assert_eq!(
        welcome_epoch(&d, &token),
        epoch,
        "the epoch survives a restart"
    );
}

/// A deterministic stream of noise (xorshift64*), so that a failure can be replayed.
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_be_bytes()[0]
        })
        .collect()
}

/// Reads a hostile connection to its end: at most one frame, a fatal ERROR, then the close.
#[track_caller]
fn expect_fatal_end(c: &mut Client, who: &str) {
    let mut frames = Vec::new();
    loop {
        match c.recv() {
            Ok(Some(reply)) => frames.push(reply),
            Ok(None) => break,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("{who}: expected a close, got {e} after {frames:?}"),
        }
    }
    let fatal = [
        ErrorCode::Malformed,
        ErrorCode::TooLarge,
        ErrorCode::UnknownKind,
        ErrorCode::UnsupportedVersion,
        ErrorCode::AuthFailed,
        ErrorCode::NotAuthenticated,
    ];
    match frames.as_slice() {
        [Reply::Error { code, .. }] => assert!(
            fatal.iter().any(|f| f.as_u16() == *code),
            "{who}: code {code} is not a fatal error for bad input"
        ),
        other => panic!("{who}: expected one fatal ERROR, got {other:?}"),
    }
}

#[test]
fn garbage_and_a_four_gib_length_leave_other_clients_served() {
    const ROOM: &str = "#calm";
    let mut d = Daemon::start(&[]);
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    join(&mut alice, ROOM, 0, 0);
    join(&mut bob, ROOM, 0, 0);

    // Noise before HELLO, and noise framed as small frames from a logged-in client, ending
    // with a kind no server knows so that it is certain to be fatal.
    let mut garbage = d.connect();
    let _ = garbage.send_raw(&noise(64 * 1024, 0x9e37_79b9_7f4a_7c15));
    let mut framed = d.login("mallory");
    let mut frames = Vec::new();
    for (i, chunk) in noise(8 * 1024, 42).chunks(97).enumerate() {
        let len = u32::try_from(chunk.len()).expect("small");
        frames.extend_from_slice(&len.to_be_bytes());
        frames.extend_from_slice(chunk);
        if i % 3 == 0 {
            frames.extend_from_slice(&[0, 0, 0, 1, 0x7f]);
        }
    }
    let _ = framed.send_raw(&frames);
    let mut huge = d.login("trudy");
    huge.send_raw(&[0xff, 0xff, 0xff, 0xff, kind::SEND, 0, 5])
        .expect("write a 4 GiB header");

    for round in 0..2 {
        alice
            .send(&ClientFrame::Ping { nonce: round })
            .expect("ping");
        assert_eq!(recv(&mut alice), Reply::Pong { nonce: round });
        send(&mut alice, ROOM, round, "still here");
        let mut others = Vec::new();
        let got = recv_msgs(&mut alice, 1, &mut others);
        let seq = round + 1;
        assert_eq!(got[0].1, seq);
        if others.is_empty() {
            others.push(recv(&mut alice));
        }
        assert_eq!(others, vec![Reply::Ack { id: round, seq }]);
        let mut none = Vec::new();
        let msg = recv_msgs(&mut bob, 1, &mut none);
        assert_eq!(
            msg,
            vec![(ROOM.into(), seq, "alice".into(), "still here".into())]
        );
        assert!(none.is_empty(), "{none:?}");
        if round == 0 {
            expect_fatal(&mut huge, ErrorCode::TooLarge);
            expect_fatal_end(&mut garbage, "garbage");
            expect_fatal_end(&mut framed, "framed garbage");
        }
    }
    assert!(d.is_running(), "the daemon survived hostile input");
}
