//! Who may use which room: direct rooms on version 2, private rooms on both versions, the
//! same FORBIDDEN for a room that exists and one that does not, and access lost while joined.

use super::*;
use crate::access::Access;
use crate::fuzzing::fake::PRIVATE_ROOM;

/// A session of `user` past a version 2 HELLO, the WELCOME read.
fn login_v2(env: &mut FakeEnv, user: &str, token: &str) -> Session {
    let mut s = Session::new(env.now, &env.limits);
    let hello = ClientFrame::Hello {
        version: 2,
        user,
        token,
        client: 0,
    };
    feed(&mut s, env, &[hello]);
    let out = read(&mut s, env);
    assert!(out.starts_with("WELCOME 2 "), "{out}");
    s
}

fn bob_v1(env: &mut FakeEnv) -> Session {
    let mut s = Session::new(env.now, &env.limits);
    feed(&mut s, env, &[hello("bob", "hunter2")]);
    assert!(read(&mut s, env).starts_with("WELCOME 1 "));
    s
}

#[test]
fn direct_rooms_are_version_2_names_for_their_users_only() {
    let mut env = FakeEnv::new();
    let mut alice = login_v2(&mut env, "alice", "s3cret");
    feed(
        &mut alice,
        &mut env,
        &[
            join("@alice+bob", 0, 0),
            join("@bob+carol", 0, 0),
            join("@bob+alice", 0, 0),
            send("@bob+carol", 9, "hi"),
        ],
    );
    assert_eq!(
        read(&mut alice, &mut env),
        "JOINED @alice+bob 0 0; ERROR FORBIDDEN 0; ERROR INVALID 0; ERROR FORBIDDEN 9"
    );
    // Version 1's grammar has no `@`: the same name is INVALID there.
    let mut bob = bob_v1(&mut env);
    feed(&mut bob, &mut env, &[join("@alice+bob", 0, 0)]);
    assert_eq!(read(&mut bob, &mut env), "ERROR INVALID 0");
}

#[test]
fn a_forbidden_room_answers_alike_whether_it_exists_or_not() {
    let mut env = FakeEnv::new();
    env.access = Access::default()
        .with_private("vault", &["alice"])
        .with_private("empty-vault", &["alice"]);
    env.post("vault", "alice", "the secret");
    let mut bob = bob_v1(&mut env);
    let rooms = env.rooms.len();
    let mut answers = Vec::new();
    for room in ["vault", "empty-vault"] {
        let input = wire(&[join(room, 0, 0), send(room, 3, "x")]);
        assert_eq!(bob.receive(&input, &mut env), input.len());
        answers.push(read_bytes(&mut bob, &mut env));
    }
    assert_eq!(answers[0], answers[1], "byte for byte the same answer");
    assert_eq!(
        decode(&answers[0], env.limits.max_frame).join("; "),
        "ERROR FORBIDDEN 0; ERROR FORBIDDEN 3"
    );
    assert_eq!(env.rooms.len(), rooms, "a refused JOIN opens no room");
    assert_eq!(env.members, 0);
}

#[test]
fn private_rooms_hold_on_both_versions() {
    let mut env = FakeEnv::new();
    let mut alice = login(&mut env);
    let mut bob = bob_v1(&mut env);
    feed(&mut alice, &mut env, &[join(PRIVATE_ROOM, 0, 0)]);
    assert_eq!(
        read(&mut alice, &mut env),
        format!("JOINED {PRIVATE_ROOM} 0 0")
    );
    feed(&mut bob, &mut env, &[join(PRIVATE_ROOM, 0, 0)]);
    assert_eq!(read(&mut bob, &mut env), "ERROR FORBIDDEN 0");
}

#[test]
fn access_lost_while_joined_is_forbidden_then_left_then_silence() {
    let mut env = FakeEnv::new();
    env.access = Access::default().with_private("staff", &["alice", "bob"]);
    let mut alice = login(&mut env);
    feed(
        &mut alice,
        &mut env,
        &[join("staff", 0, 0), join("general", 0, 0)],
    );
    assert_eq!(
        read(&mut alice, &mut env),
        "JOINED staff 0 0; JOINED general 0 0"
    );
    assert!(
        !alice.recheck_access(&mut env),
        "nothing changed, nothing taken"
    );
    env.access = Access::default().with_private("staff", &["bob"]);
    assert!(alice.recheck_access(&mut env));
    assert_eq!(read(&mut alice, &mut env), "ERROR FORBIDDEN 0; LEFT staff");
    assert_eq!(env.members, 1, "still a member of general only");
    env.post("staff", "bob", "not for alice");
    env.post("general", "bob", "for everyone");
    alice.fill(&mut env);
    assert_eq!(read(&mut alice, &mut env), "MSG general 1 bob for everyone");
    feed(
        &mut alice,
        &mut env,
        &[send("staff", 4, "hi"), join("staff", 0, 0)],
    );
    assert_eq!(
        read(&mut alice, &mut env),
        "ERROR FORBIDDEN 4; ERROR FORBIDDEN 0"
    );
}

#[test]
fn the_forbidden_message_names_the_room_lost() {
    let mut env = FakeEnv::new();
    let mut alice = login(&mut env);
    feed(&mut alice, &mut env, &[join(PRIVATE_ROOM, 0, 0)]);
    read(&mut alice, &mut env);
    env.access = Access::default().with_private(PRIVATE_ROOM, &[]);
    alice.recheck_access(&mut env);
    let mut message = String::new();
    each_frame(
        &read_bytes(&mut alice, &mut env),
        env.limits.max_frame,
        |f| {
            if let ServerFrame::Error { message: m, .. } = f {
                message = m.to_string();
            }
        },
    );
    assert_eq!(message, format!("you may no longer use {PRIVATE_ROOM}"));
}
