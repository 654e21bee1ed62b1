//! The order of start-up, seen from inside the process: `Server::start_with` runs its
//! `before_serving` hook (where chatd drops root) with every socket bound and no thread of the
//! server started yet. This file holds one test on purpose: the test harness then runs no
//! other thread, so counting this process's threads counts the server's.

use std::net::TcpStream;

use chatd::config::Config;
use chatd::server::Server;

/// How many threads this process has, from /proc; `None` where there is no /proc.
fn thread_count() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/task").ok()?.count())
}

#[test]
fn the_before_serving_hook_runs_bound_and_before_any_server_thread_and_can_stop_startup() {
    let Some(before) = thread_count() else {
        eprintln!("skipped: no /proc/self/task to count threads on this OS");
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let config = Config {
        listen: vec!["127.0.0.1:0".parse().expect("addr")],
        threads: 2,
        data_dir: dir.path().join("data"),
        metrics: Some("127.0.0.1:0".parse().expect("addr")),
        ..Config::default()
    };

    // A failing hook (a refused setuid) stops start-up, with its error.
    let failed = Server::start_with(&config, |_| {
        Err(std::io::Error::other("cannot switch to user 'x'"))
    });
    match failed {
        Ok(_) => panic!("started although the hook failed"),
        Err(e) => assert_eq!(e.to_string(), "cannot switch to user 'x'"),
    }
    assert_eq!(thread_count(), Some(before), "no thread left behind");

    let mut during = None;
    let server = Server::start_with(&config, |addrs| {
        // Bound already: a client can connect (the kernel queues it; nobody serves it yet).
        let connected = addrs.first().is_some_and(|a| TcpStream::connect(a).is_ok());
        during = Some((connected, thread_count()));
        Ok(())
    })
    .expect("start");
    let (connected, threads) = during.expect("the hook ran");
    assert!(connected, "listeners are bound before the hook");
    assert_eq!(threads, Some(before), "no server thread before the hook");
    // Two reactors, the sequencer, the archive, the users watcher and the metrics server.
    let after = thread_count().unwrap_or(0);
    assert!(
        after >= before + 6,
        "{before} threads before, {after} after"
    );
    server.stop_handle().stop();
    server.wait().expect("clean stop");
}
