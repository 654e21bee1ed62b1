//! What an idle connection's session owns on the heap: nothing. An idle, logged-in member of
//! one room costs the server its `Conn` in the reactor's slab (its size is asserted at
//! compile time in `src/reactor/conn.rs` and `src/session/mod.rs`) and its key in the
//! reactor's members of the room; the session itself keeps its first room inline, shares its
//! user's name with the users table, and gives its outbox back once idle. See "Memory per
//! idle connection" in docs/architecture.md. Protocol version 2 changes none of that, not
//! even for a connection whose HELLO named a client id: the id sits beside the users table's
//! thin handle to the name, in the 16 bytes the name alone took.
//!
//! The allocator of this test binary counts every allocation, so this file holds one test:
//! another running beside it would be counted too.

use std::alloc::System;
use std::io;

use chatd::fuzzing::fake::FakeEnv;
use chatd::protocol::{ClientFrame, encode_client};
use chatd::session::{Session, Tick};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// HELLO of `version` (with `client`) as alice, then JOIN `room`, as one read.
fn hello_and_join(room: &str, version: u8, client: u64) -> Vec<u8> {
    let mut wire = Vec::new();
    let hello = ClientFrame::Hello {
        version,
        user: "alice",
        token: "s3cret",
        client,
    };
    let join = ClientFrame::Join {
        room,
        after: 0,
        limit: 0,
    };
    encode_client(&hello, &mut wire);
    encode_client(&join, &mut wire);
    wire
}

/// Logs in and joins as one read, writes every answer, and runs the timers once, as the
/// reactor would: what is left is an idle member.
fn idle_member(env: &mut FakeEnv, wire: &[u8]) -> Session {
    let mut s = Session::new(env.now, &env.limits);
    assert_eq!(s.receive(wire, env), wire.len());
    loop {
        s.fill(env);
        if s.out.is_empty() {
            break;
        }
        let n = s.out.write_to(&mut io::sink()).expect("a sink takes all");
        s.on_written(n, false, env.now);
    }
    assert_eq!(s.tick(env.now, &env.limits), Tick::Idle);
    s
}

#[test]
fn an_idle_member_of_one_room_owns_no_heap_memory() {
    let mut env = FakeEnv::new();
    // The first member opens the room: that memory is the room's, shared by all its members.
    let first = idle_member(&mut env, &hello_and_join("lobby", 1, 0));
    // (version, client id, heap an idle member of that HELLO holds): none for any of them.
    for (version, client, expected) in [(1, 0, 0), (2, 0, 0), (2, 42, 0)] {
        let wire = hello_and_join("lobby", version, client);
        let region = Region::new(GLOBAL);
        let second = idle_member(&mut env, &wire);
        let change = region.change();

        // A growing reallocation counts into `bytes_allocated`, a shrinking one into
        // `bytes_deallocated`.
        let held = change.bytes_allocated as isize - change.bytes_deallocated as isize;
        assert_eq!(
            held, expected,
            "an idle member of version {version}, client {client}, holds {held} bytes of heap \
             of its own ({change:?})"
        );
        assert!(
            change.allocations > 0,
            "the answers were queued on the heap and given back: the count works"
        );
        assert_eq!(second.user(), first.user());
        assert_eq!(
            second.client().map(|c| c.get()),
            (client != 0).then_some(client)
        );
    }
}
