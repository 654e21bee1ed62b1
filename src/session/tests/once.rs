//! The session's side of exactly-once SEND (protocol version 2): the key it submits with, the
//! STALE_ID it passes on, and the rate token a retry gives back. The decision itself is the
//! sequencer's (`crate::sequencer`, `crate::dedupe`).

use std::num::NonZeroU64;

use super::*;

fn hello(version: u8, client: u64) -> ClientFrame<'static> {
    ClientFrame::Hello {
        version,
        user: "alice",
        token: "s3cret",
        client,
    }
}

/// Alice past HELLO of `version` with `client`, joined to `r` live.
fn joined(env: &mut FakeEnv, version: u8, client: u64) -> Session {
    let mut s = Session::new(env.now, &env.limits);
    feed(&mut s, env, &[hello(version, client), join("r", 0, 0)]);
    let out = read(&mut s, env);
    assert!(out.ends_with("JOINED r 0 0"), "{out}");
    s
}

#[test]
fn only_a_version_2_connection_with_a_client_submits_with_a_key() {
    let mut env = FakeEnv::new();
    for (version, client) in [(1, 0), (2, 0), (2, 77)] {
        let mut s = joined(&mut env, version, client);
        feed(&mut s, &mut env, &[send("r", 1, "hi")]);
        let key = env.keys.pop().expect("submitted");
        assert_eq!(
            key.map(|k| (k.user.to_string(), k.client.get())),
            NonZeroU64::new(client).map(|c| ("alice".to_string(), c.get())),
            "version {version}, client {client}"
        );
    }
}

#[test]
fn stale_id_is_passed_on_and_the_connection_goes_on() {
    let mut env = FakeEnv::new();
    let mut s = joined(&mut env, 2, 77);
    feed(&mut s, &mut env, &[send("r", 3, "old")]);
    env.submitted.clear();
    s.on_stored(3, Err(ErrorCode::StaleId), env.now);
    assert_eq!(read(&mut s, &mut env), "ERROR STALE_ID 3");
    assert!(!s.is_closing());
    feed(&mut s, &mut env, &[send("r", 4, "new")]);
    env.store(&mut s);
    assert_eq!(read(&mut s, &mut env), "ACK 4 1; MSG r 1 alice new");
}

#[test]
fn a_retry_answered_from_the_table_gives_its_rate_token_back() {
    // One token, and the next a second away.
    let mut env = FakeEnv::with(|l| {
        l.send_rate = 1;
        l.send_burst = 1;
    });
    let mut s = joined(&mut env, 2, 77);
    feed(&mut s, &mut env, &[send("r", 1, "hi")]);
    env.store(&mut s);
    assert_eq!(read(&mut s, &mut env), "ACK 1 1; MSG r 1 alice hi");
    // Without the token back, the retry is refused by the rate limit, before any duplicate
    // check.
    feed(&mut s, &mut env, &[send("r", 1, "hi")]);
    assert_eq!(read(&mut s, &mut env), "ERROR RATE_LIMITED 1");
    env.advance(1);
    for _ in 0..3 {
        feed(&mut s, &mut env, &[send("r", 1, "hi")]);
        env.submitted.clear();
        // The sequencer found it stored: ACK with the old seq, marked again.
        s.not_counted(&env.limits);
        s.on_stored(1, Ok(1), env.now);
        assert_eq!(read(&mut s, &mut env), "ACK 1 1");
    }
    feed(&mut s, &mut env, &[send("r", 2, "more")]);
    assert_eq!(env.submitted.len(), 1, "the token came back every time");
}
