//! What sets the drivers apart, seen from outside: the threads driver (`--driver threads`)
//! really spends an OS thread per connection where the reactor spends none, and it keeps the
//! limits a reactor keeps when a client stops reading. The protocol itself is checked against
//! both drivers by tests/protocol.rs and tests/errors.rs.

#[path = "util/pki.rs"]
mod pki;
#[path = "util/tls.rs"]
mod tls;
mod util;

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use chatd::client::{Client, Reply};
use chatd::protocol::ClientFrame;
use pki::Pki;
use tls::TlsClient;
use util::{Daemon, Driver, PATIENCE, join, recv, recv_until_close};

/// The daemon's threads, from /proc; None where there is no /proc (FreeBSD).
fn threads_of(d: &Daemon) -> Option<usize> {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", d.pid())).ok()?;
    Some(tasks.count())
}

/// Waits until the daemon runs `want` threads; the last count seen.
fn wait_for_threads(d: &Daemon, want: usize) -> Option<usize> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = threads_of(d)?;
        if now == want || Instant::now() >= deadline {
            return Some(now);
        }
        // The count changes when a thread starts or ends: no event to wait on but the count.
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_threads_driver_runs_a_thread_per_connection_and_the_reactor_does_not() {
    let d = Driver::Threads.start(&[]);
    // Counted once a first client is served: the daemon may still start a thread of its own
    // (its signal thread) just after it reports its address.
    let mut clients = vec![d.login("ann")];
    let Some(base) = threads_of(&d) else {
        eprintln!("SKIPPED: no /proc/PID/task on this OS to count the daemon's threads");
        return;
    };
    for (i, user) in ["ben", "cat"].iter().enumerate() {
        // WELCOME comes from the connection's own thread: it is running by now.
        clients.push(d.login(user));
        assert_eq!(
            threads_of(&d),
            Some(base + i + 1),
            "one more thread per client"
        );
    }
    // A connection's thread ends with it.
    let mut gone = clients.remove(0);
    gone.send(&ClientFrame::Bye).expect("BYE");
    assert_eq!(recv_until_close(&mut gone), vec![]);
    assert_eq!(wait_for_threads(&d, base + 1), Some(base + 1));
    let names = std::fs::read_dir(format!("/proc/{}/task", d.pid()))
        .expect("task dir")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("conn-"))
        .count();
    assert_eq!(names, 2, "the connection threads are named conn-SERIAL");

    // The same measurement on a reactor: its clients cost it no thread.
    let r = Driver::Reactor.start(&["--threads", "1"]);
    let mut clients = vec![r.login("ann")];
    let before = threads_of(&r);
    clients.extend(["ben", "cat"].iter().map(|u| r.login(u)));
    assert_eq!(
        threads_of(&r),
        before,
        "a reactor serves clients on the threads it had"
    );
}

/// A connected socket with a 4 KiB receive buffer, so the server's writes to it back up.
fn small_window_stream(addr: std::net::SocketAddr) -> std::net::TcpStream {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrStorage, connect, setsockopt, socket, sockopt,
    };
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .expect("socket");
    setsockopt(&fd, sockopt::RcvBuf, &4096).expect("SO_RCVBUF");
    connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)).expect("connect");
    std::net::TcpStream::from(fd)
}

#[test]
fn under_the_threads_driver_a_member_that_never_reads_is_dropped_as_a_slow_consumer() {
    let d = Driver::Threads.start(&[
        "--send-rate",
        "0",
        "--write-stall-timeout",
        "1s",
        "--fsync",
        "never",
    ]);
    let token = d.add_user("lurker");
    let mut lurker = Client::from_stream(small_window_stream(d.addr));
    lurker.set_timeout(Some(PATIENCE)).expect("timeout");
    lurker
        .send(&ClientFrame::Hello {
            version: 1,
            user: "lurker",
            token: &token,
            client: 0,
        })
        .expect("HELLO");
    assert!(matches!(recv(&mut lurker), Reply::Welcome { .. }));
    join(&mut lurker, "#busy", 0, 0);

    let mut sender = d.login("sender");
    join(&mut sender, "#busy", 0, 0);
    // The sender reads everything it is sent, in its own thread, so only the lurker stalls.
    let mut echo = sender.stream().try_clone().expect("clone");
    let draining = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while matches!(echo.read(&mut buf), Ok(n) if n > 0) {}
    });
    let text = "z".repeat(4000);
    let mut id = 0;
    while !d
        .log_lines()
        .iter()
        .any(|l| l.contains("user 'lurker' (SLOW_CONSUMER)"))
    {
        id += 1;
        util::send(&mut sender, "#busy", id, &text);
        assert!(id < 10_000, "the lurker was never dropped");
        if id % 1000 == 0 {
            // Leave the write-stall timer room to fire.
            d.wait_for_log("(SLOW_CONSUMER)");
        }
    }
    // Its connection ends (a close or a reset), however much it had not read; a timeout here
    // would mean it was left open.
    let end = loop {
        match lurker.recv() {
            Ok(Some(_)) => {}
            other => break other,
        }
    };
    assert!(
        !matches!(&end, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "the lurker's connection was not closed: {end:?}"
    );
    sender.send(&ClientFrame::Bye).expect("BYE");
    draining.join().expect("drain thread");
}

#[test]
fn under_the_threads_driver_tls_and_plain_clients_share_a_room() {
    let certs = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(certs.path());
    let leaf = pki.leaf("server", &["localhost", "127.0.0.1"]);
    let flags = leaf.serve_flags();
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let d = Driver::Threads.start(&args);
    let token = d.add_user("alice");
    let mut alice =
        TlsClient::connect(d.tls_addrs[0], &pki.ca_pem, "localhost").expect("TLS connect");
    alice.login("alice", &token);
    let mut bob = d.login("bob");
    alice
        .send(&ClientFrame::Join {
            room: "#r",
            after: 0,
            limit: 0,
        })
        .expect("JOIN");
    assert!(matches!(alice.expect(), Reply::Joined { .. }));
    join(&mut bob, "#r", 0, 0);
    util::send(&mut bob, "#r", 1, "in the clear");
    let text = loop {
        if let Reply::Msg { text, .. } = alice.expect() {
            break text;
        }
    };
    assert_eq!(text, "in the clear");
    alice.send(&ClientFrame::Bye).expect("BYE");
    assert_eq!(
        alice.recv().expect("clean close"),
        None,
        "close_notify, then EOF"
    );
}
