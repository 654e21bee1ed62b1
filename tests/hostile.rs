//! Hostile clients over real sockets. Each test attacks a fresh daemon and asserts that it
//! stays up, that well-behaved clients keep being served during the attack (a PING answered,
//! a message delivered), and that its memory stays bounded.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use chatd::client::{Client, Reply};
use chatd::protocol::{ClientFrame, ErrorCode, encode_client};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket, sockopt,
};
use util::{Daemon, PATIENCE, expect_fatal, join, recv, recv_until_close};

/// RSS growth allowed across an attack. Generous: allocators keep what they freed.
const RSS_SLACK_KIB: u64 = 64 * 1024;

/// Two members of #probe who check that the daemon still serves.
struct Probe {
    alice: Client,
    bob: Client,
    rounds: u64,
}

impl Probe {
    fn new(d: &Daemon) -> Probe {
        let mut alice = d.login("alice");
        let mut bob = d.login("bob");
        join(&mut alice, "#probe", 0, 0);
        join(&mut bob, "#probe", 0, 0);
        let mut probe = Probe {
            alice,
            bob,
            rounds: 0,
        };
        probe.check();
        probe
    }

    /// A PING is answered and a message reaches the other member, each within `PATIENCE`.
    #[track_caller]
    fn check(&mut self) {
        self.rounds += 1;
        let n = self.rounds;
        self.alice
            .send(&ClientFrame::Ping { nonce: n })
            .expect("ping");
        let text = format!("still here {n}");
        util::send(&mut self.alice, "#probe", n, &text);
        let (mut pong, mut ack, mut own) = (false, false, false);
        while !(pong && ack && own) {
            match recv(&mut self.alice) {
                Reply::Pong { nonce } if nonce == n => pong = true,
                Reply::Ack { id, seq } if id == n => ack = seq == n,
                Reply::Msg { seq, .. } if seq == n => own = true,
                other => panic!("probe alice got {other:?}"),
            }
        }
        self.bob
            .send(&ClientFrame::Ping { nonce: n })
            .expect("ping");
        let (mut pong, mut msg) = (false, false);
        while !(pong && msg) {
            match recv(&mut self.bob) {
                Reply::Pong { nonce } if nonce == n => pong = true,
                Reply::Msg { seq, text: got, .. } if seq == n => msg = got == text,
                other => panic!("probe bob got {other:?}"),
            }
        }
    }
}

/// Asserts the daemon runs and its RSS grew by less than `slack_kib` since `before` (that
/// half skips loudly where RSS cannot be read).
#[track_caller]
fn assert_bounded(d: &mut Daemon, before: Option<u64>, slack_kib: u64) {
    assert!(d.is_running(), "the daemon died");
    d.assert_rss_bounded(before, slack_kib);
}

#[test]
fn rss_reads_none_not_zero_for_a_process_that_is_gone() {
    let mut gone = std::process::Command::new("true")
        .spawn()
        .expect("run true");
    gone.wait().expect("wait");
    let pid = i32::try_from(gone.id()).expect("pid");
    assert_eq!(util::rss_kib_of(pid), None);
    if cfg!(any(target_os = "linux", target_os = "freebsd")) {
        let me = i32::try_from(std::process::id()).expect("pid");
        assert!(util::rss_kib_of(me).is_some_and(|kib| kib > 0));
    }
}

/// A connection to the daemon from `source` (any 127.x.y.z is loopback on Linux), with a
/// receive buffer of `rcvbuf` bytes if given.
fn connect_from(d: &Daemon, source: Ipv4Addr, rcvbuf: Option<usize>) -> TcpStream {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .expect("socket");
    if let Some(bytes) = rcvbuf {
        setsockopt(&fd, sockopt::RcvBuf, &bytes).expect("SO_RCVBUF");
    }
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(source, 0)),
    )
    .expect("bind");
    let SocketAddr::V4(to) = d.addr else {
        panic!("the daemon listens on IPv4")
    };
    connect(fd.as_raw_fd(), &SockaddrIn::from(to)).expect("connect");
    let stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
}

fn hello_bytes(user: &str, token: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let hello = ClientFrame::Hello {
        version: 1,
        user,
        token,
        client: 0,
    };
    encode_client(&hello, &mut out);
    out
}

/// Writes `bytes` one at a time, `pace` apart, until the server says something; returns how
/// many were written. The pacing is the attack, not synchronisation: each pause is a read
/// that ends early if the server answers. `meanwhile` runs after every byte.
fn trickle(
    stream: &mut TcpStream,
    bytes: &[u8],
    pace: Duration,
    meanwhile: &mut dyn FnMut(),
) -> usize {
    stream.set_read_timeout(Some(pace)).expect("timeout");
    let mut peek = [0u8; 1];
    for (i, b) in bytes.iter().enumerate() {
        if stream.write_all(std::slice::from_ref(b)).is_err() {
            return i;
        }
        meanwhile();
        match stream.peek(&mut peek) {
            Ok(_) => return i + 1,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("slow client: {e}"),
        }
    }
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    bytes.len()
}

#[test]
fn slowloris_clients_are_closed_with_timeout_while_others_chat() {
    let mut d = Daemon::start(&["--handshake-timeout", "1s", "--idle-timeout", "2s"]);
    let token = d.add_user("carol");
    let mut probe = Probe::new(&d);
    let before = d.rss_kib();
    // Before HELLO: a HELLO a byte every 200 ms never completes within the 1 s handshake.
    let mut early = TcpStream::connect(d.addr).expect("connect");
    let hello = hello_bytes("carol", &token);
    let pace = Duration::from_millis(200);
    let sent = trickle(&mut early, &hello, pace, &mut || probe.check());
    assert!(sent < hello.len(), "the whole HELLO went through");
    let mut early = Client::from_stream(early);
    early.set_timeout(Some(PATIENCE)).expect("timeout");
    expect_fatal(&mut early, ErrorCode::Timeout);
    probe.check();
    // After HELLO: only whole frames count as activity; a PING a byte at a time idles out.
    let mut late = d.login_with("carol", &token);
    let mut ping = Vec::new();
    encode_client(&ClientFrame::Ping { nonce: 1 }, &mut ping);
    let ping = ping.repeat(4);
    let mut stream = late.stream().try_clone().expect("clone");
    let pace = Duration::from_millis(400);
    let sent = trickle(&mut stream, &ping, pace, &mut || probe.check());
    assert!(sent < 13, "a trickled PING was answered: {sent} bytes sent");
    expect_fatal(&mut late, ErrorCode::Timeout);
    probe.check();
    assert_bounded(&mut d, before, RSS_SLACK_KIB);
}

#[test]
fn a_declared_length_of_4_gib_is_refused_from_the_header() {
    let mut d = Daemon::start(&[]);
    let mut probe = Probe::new(&d);
    let before = d.rss_kib();
    for logged_in in [false, true] {
        let mut c = if logged_in {
            d.login("mallory")
        } else {
            d.connect()
        };
        // 4 GiB - 1 of SEND announced; nothing more is sent, nothing is buffered for it.
        c.send_raw(&[0xff, 0xff, 0xff, 0xff, 0x04, b'#'])
            .expect("header");
        expect_fatal(&mut c, ErrorCode::TooLarge);
        probe.check();
    }
    assert_bounded(&mut d, before, 8 * 1024);
}

#[test]
fn garbage_after_a_valid_hello_ends_only_that_connection() {
    let mut d = Daemon::start(&[]);
    let mut probe = Probe::new(&d);
    let before = d.rss_kib();
    let token = d.add_user("mallory");
    let mut noise = Vec::new();
    let mut x: u32 = 0x2545_f491;
    for _ in 0..700 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(x.to_be_bytes()[0]);
    }
    let garbage: [&[u8]; 5] = [
        &noise,
        b"GET / HTTP/1.1\r\nHost: chatd\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        &[0u8; 64],
        b"\x00\x00\x00\x05\x04\x00\x09#general",
    ];
    let fatal = [
        ErrorCode::Malformed,
        ErrorCode::TooLarge,
        ErrorCode::UnknownKind,
    ];
    for junk in garbage {
        let mut c = d.login_with("mallory", &token);
        c.send_raw(junk).expect("garbage");
        match recv(&mut c) {
            Reply::Error {
                code, reference, ..
            } => {
                assert!(fatal.iter().any(|f| f.as_u16() == code), "code {code}");
                assert_eq!(reference, 0);
            }
            other => panic!("expected a fatal ERROR for {junk:02x?}, got {other:?}"),
        }
        assert_eq!(recv_until_close(&mut c), vec![]);
        probe.check();
    }
    assert_bounded(&mut d, before, 8 * 1024);
}

#[test]
fn two_thousand_half_open_connections_cost_little_and_block_no_one() {
    let mut d = Daemon::start(&[
        "--handshake-timeout",
        "60s",
        "--max-connections-per-ip",
        "2100",
    ]);
    let mut probe = Probe::new(&d);
    let before = d.rss_kib();
    let silent: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(d.addr).expect("connect"))
        .collect();
    // A login after them is accepted after them: all 2000 are in the daemon now.
    let mut late = d.login("latecomer");
    join(&mut late, "#probe", 0, 0);
    probe.check();
    assert!(matches!(recv(&mut late), Reply::Msg { .. }));
    assert_bounded(&mut d, before, RSS_SLACK_KIB);
    drop(silent);
    probe.check();
    assert!(d.is_running());
}

#[test]
fn a_flood_over_the_per_address_limit_gets_too_many_and_others_get_in() {
    // Linux answers on all of 127.0.0.0/8; FreeBSD's loopback has only 127.0.0.1 unless an
    // operator adds aliases, and this test needs two more source addresses.
    let sources = [Ipv4Addr::new(127, 0, 0, 3), Ipv4Addr::new(127, 0, 0, 4)];
    if let Some(missing) = sources
        .iter()
        .find(|ip| std::net::TcpListener::bind((**ip, 0)).is_err())
    {
        eprintln!("SKIPPED per-address flood test: cannot bind source address {missing}");
        return;
    }
    // The held connections never send HELLO: a long handshake deadline keeps them holding
    // their slots however slowly this test runs.
    let mut d = Daemon::start(&[
        "--max-connections-per-ip",
        "20",
        "--handshake-timeout",
        "60s",
    ]);
    let mut probe = Probe::new(&d);
    let before = d.rss_kib();
    let flooder = Ipv4Addr::new(127, 0, 0, 3);
    // The flooder's 20 connections log in, which proves every one holds a slot before the flood
    // starts (two reactors accept in no fixed order).
    let holder_token = d.add_user("holder");
    let held: Vec<Client> = (0..20)
        .map(|_| {
            let mut c = Client::from_stream(connect_from(&d, flooder, None));
            c.set_timeout(Some(PATIENCE)).expect("timeout");
            let hello = ClientFrame::Hello {
                version: 1,
                user: "holder",
                token: &holder_token,
                client: 0,
            };
            c.send(&hello).expect("hello");
            assert!(matches!(recv(&mut c), Reply::Welcome { .. }));
            c
        })
        .collect();
    for _ in 0..300 {
        let mut c = Client::from_stream(connect_from(&d, flooder, None));
        expect_fatal(&mut c, ErrorCode::TooMany);
    }
    probe.check();
    // Another address is not counted against the flooder's.
    let mut other = Client::from_stream(connect_from(&d, Ipv4Addr::new(127, 0, 0, 4), None));
    let token = d.add_user("dave");
    other
        .send(&ClientFrame::Hello {
            version: 1,
            user: "dave",
            token: &token,
            client: 0,
        })
        .expect("hello");
    assert!(matches!(recv(&mut other), Reply::Welcome { .. }));
    // Once the flooder lets go, its address may connect again.
    drop(held);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut c = Client::from_stream(connect_from(&d, flooder, None));
        c.send(&ClientFrame::Ping { nonce: 1 }).expect("ping");
        match recv(&mut c) {
            // Admitted: a PING before HELLO is refused as unauthenticated, not TOO_MANY.
            Reply::Error { code, .. } if code == ErrorCode::NotAuthenticated.as_u16() => break,
            Reply::Error { code, .. } if code == ErrorCode::TooMany.as_u16() => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(Instant::now() < deadline, "the flooder's slots never freed");
    }
    assert_bounded(&mut d, before, RSS_SLACK_KIB);
}

#[test]
fn members_that_never_read_a_busy_room_are_dropped_and_memory_stays_flat() {
    let mut d = Daemon::start(&[
        "--send-rate",
        "0",
        "--write-stall-timeout",
        "1s",
        "--fsync",
        "never",
    ]);
    let mut probe = Probe::new(&d);
    let hello = hello_bytes("lurker", &d.add_user("lurker"));
    let mut lurkers = Vec::new();
    for _ in 0..5 {
        let stream = connect_from(&d, Ipv4Addr::LOCALHOST, Some(4096));
        let mut c = Client::from_stream(stream);
        c.send_raw(&hello).expect("hello");
        assert!(matches!(recv(&mut c), Reply::Welcome { .. }));
        join(&mut c, "#busy", 0, 0);
        lurkers.push(c);
    }
    let mut reader = d.login("reader");
    join(&mut reader, "#busy", 0, 0);
    let before = d.rss_kib();
    let mut sender = d.login("sender");
    join(&mut sender, "#busy", 0, 0);
    let total: u64 = 3000;
    // The reader and the sender read all the time, each in its own thread.
    let reading = std::thread::spawn(move || {
        let mut others = Vec::new();
        util::recv_msgs(&mut reader, total as usize, &mut others)
    });
    let mut echo = sender.stream().try_clone().expect("clone");
    let echoing = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while matches!(echo.read(&mut buf), Ok(n) if n > 0) {}
    });
    let text = "z".repeat(4000);
    for id in 1..=total {
        util::send(&mut sender, "#busy", id, &text);
        if id % 500 == 0 {
            probe.check();
        }
    }
    // The reader in the same room gets every message, in order.
    let got = reading.join().expect("reader thread");
    assert!(got.iter().zip(1..).all(|(m, seq)| m.1 == seq));
    // Every lurker is dropped for taking nothing from its socket.
    let deadline = Instant::now() + PATIENCE;
    let dropped = || {
        d.log_lines()
            .iter()
            .filter(|l| l.contains("user 'lurker' (SLOW_CONSUMER)"))
            .count()
    };
    while dropped() < 5 && Instant::now() < deadline {
        d.wait_for_log("(SLOW_CONSUMER)");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(dropped(), 5, "lurkers dropped");
    // Their connections end: the ERROR cannot reach a client that reads nothing, so the
    // daemon cuts it after the grace period, possibly mid-frame; the point is that it ends.
    for mut c in lurkers {
        loop {
            match c.recv() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
                    ) =>
                {
                    break;
                }
                Err(e) => panic!("a lurker's connection did not end: {e}"),
            }
        }
    }
    probe.check();
    sender.send(&ClientFrame::Bye).expect("bye");
    echoing.join().expect("sender's reader");
    assert_bounded(&mut d, before, RSS_SLACK_KIB);
}

#[test]
fn a_client_sending_max_size_frames_flat_out_does_not_starve_others() {
    let mut d = Daemon::start(&["--send-rate", "0", "--fsync", "never"]);
    let mut probe = Probe::new(&d);
    let before = d.rss_kib();
    let mut hog = d.login("hog");
    join(&mut hog, "#flood", 0, 0);
    // The longest SEND whose MSG still fits in 65536: the MSG adds seq, ts and the user.
    let text = "h".repeat(65536 - (1 + 2 + 6 + 8 + 8 + 2 + 3));
    let mut frame = Vec::new();
    encode_client(
        &ClientFrame::Send {
            room: "#flood",
            id: 1,
            text: &text,
        },
        &mut frame,
    );
    let mut writer = hog.stream().try_clone().expect("clone");
    let mut reader = hog.stream().try_clone().expect("clone");
    let count = 300;
    let flood = std::thread::spawn(move || {
        for _ in 0..count {
            writer.write_all(&frame).expect("flood");
        }
    });
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        while let Ok(n) = reader.read(&mut buf) {
            total += n;
            // count ACKs of 21 bytes and as many MSGs of 65540 bytes: then it is all back.
            if n == 0 || total >= count * (21 + 65540) {
                break;
            }
        }
        total
    });
    let started = Instant::now();
    let mut checks = 0;
    while !flood.is_finished() || checks < 3 {
        let t = Instant::now();
        probe.check();
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a probe took {:?}",
            t.elapsed()
        );
        checks += 1;
        assert!(started.elapsed() < PATIENCE, "the flood never finished");
    }
    flood.join().expect("flood thread");
    assert_eq!(drain.join().expect("drain thread"), count * (21 + 65540));
    assert_bounded(&mut d, before, RSS_SLACK_KIB);
}

#[test]
fn resets_mid_frame_leave_the_daemon_serving() {
    // A low per-address limit: if a reset connection's slot were not freed, later ones (all
    // from 127.0.0.1) would be refused with TOO_MANY instead of welcomed.
    let mut d = Daemon::start(&["--max-connections-per-ip", "24"]);
    let mut probe = Probe::new(&d);
    let token = d.add_user("resetter");
    let before = d.rss_kib();
    let mut send = Vec::new();
    encode_client(
        &ClientFrame::Send {
            room: "#probe",
            id: 9,
            text: &"r".repeat(2000),
        },
        &mut send,
    );
    let hello = hello_bytes("resetter", &token);
    for i in 0..200 {
        let stream = connect_from(&d, Ipv4Addr::LOCALHOST, None);
        let mut c = Client::from_stream(stream);
        if i % 2 == 0 {
            c.send_raw(&hello[..hello.len() / 2]).expect("half a HELLO");
        } else {
            c.send_raw(&hello).expect("hello");
            assert!(matches!(recv(&mut c), Reply::Welcome { .. }));
            join(&mut c, "#probe", 0, 0);
            c.send_raw(&send[..send.len() / 2]).expect("half a SEND");
        }
        // SO_LINGER 0: close sends RST instead of FIN.
        setsockopt(
            c.stream(),
            sockopt::Linger,
            &nix::libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        )
        .expect("SO_LINGER");
        drop(c);
        if i % 50 == 0 {
            probe.check();
        }
    }
    probe.check();
    assert_bounded(&mut d, before, RSS_SLACK_KIB);
}
