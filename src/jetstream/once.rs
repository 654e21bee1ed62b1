//! Exactly-once SEND with `--store jetstream`: the keys of keyed SENDs (protocol version 2,
//! `client ≠ 0`) as the engine thread decides them, and as the stream carries them.
//!
//! Three things catch a retry, from the cheapest: this node's dedupe table (the same
//! [`Dedupe`] the sequencer keeps, filled from PubAcks, from every keyed message this node's
//! followers see, whichever node stored it, and from those read back from a room's stream
//! when the node loads the room); a retry of a SEND still in flight on this node,
//! which waits for its original's outcome instead of being published again; and the stream
//! itself, whose `Nats-Msg-Id` is the key alone ([`msg_id`]), so that within the stream's
//! duplicate window a retry on any node gets a PubAck marked duplicate with the original's
//! seq. This module must never answer `Stored` for a key no PubAck or stream message vouched
//! for, and never let a stream message that names a key it cannot have (another author, a
//! malformed id) into the table.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;

use crate::dedupe::{Dedupe, Seen, SendKey};
use crate::mailbox::ConnRef;
use crate::protocol::ErrorCode;
use crate::protocol::name::is_valid_user;

/// The `Nats-Msg-Id` of a keyed SEND: a function of `(user, client, id)` alone, so that a
/// retry on any node, on any connection, carries the same one. User names are
/// `[A-Za-z0-9._-]`, so the `/` separators make it unambiguous.
pub fn msg_id(key: &SendKey, id: u64) -> String {
    format!("{}/{:016x}/{id}", key.user, key.client)
}

/// The `(user, client, id)` a `Nats-Msg-Id` made by [`msg_id`] names; `None` for any other
/// (an unkeyed SEND's, or one chatd did not write).
pub fn parse_msg_id(value: &str) -> Option<(&str, NonZeroU64, u64)> {
    let mut parts = value.split('/');
    let (user, client, id) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_valid_user(user) || client.len() != 16 {
        return None;
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !client.bytes().all(|b| b.is_ascii_hexdigit()) || !digits(id) {
        return None;
    }
    let client = NonZeroU64::new(u64::from_str_radix(client, 16).ok()?)?;
    Some((user, client, id.parse().ok()?))
}

/// A SEND waiting for the outcome of the same key's SEND in flight on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    pub reactor: usize,
    pub conn: ConnRef,
    pub ticket: u64,
}

/// What to do with a keyed SEND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Triage {
    /// New here: publish it (the stream may still know it, from another node).
    Publish,
    /// Answer now: the seq it was stored as (a retry), or STALE_ID.
    Answer(Result<u64, ErrorCode>),
    /// The same key is in flight on this node: its outcome is this SEND's too.
    Wait,
}

/// The engine's keys: what was stored, and what is in flight.
#[derive(Debug, Default)]
pub struct Keys {
    stored: Dedupe,
    in_flight: HashMap<(SendKey, u64), Vec<Waiter>>,
}

impl Keys {
    /// Decides what becomes of SEND `id` from `key`, which `waiter` is waiting for.
    pub fn triage(&mut self, key: &SendKey, id: u64, waiter: Waiter, now_ms: u64) -> Triage {
        if let Some(waiting) = self.in_flight.get_mut(&(key.clone(), id)) {
            waiting.push(waiter);
            return Triage::Wait;
        }
        match self.stored.seen(key, id, now_ms) {
            Seen::Stored(seq) => Triage::Answer(Ok(seq)),
            Seen::Stale => Triage::Answer(Err(ErrorCode::StaleId)),
            Seen::New => {
                self.in_flight.insert((key.clone(), id), Vec::new());
                Triage::Publish
            }
        }
    }

    /// The published SEND of `key` and `id` came back with `result`: learns its seq if it
    /// was stored, and returns the SENDs that waited for it.
    pub fn settled(
        &mut self,
        key: &SendKey,
        id: u64,
        result: Result<u64, ErrorCode>,
        now_ms: u64,
    ) -> Vec<Waiter> {
        if let Ok(seq) = result {
            self.stored.insert(key, id, seq, now_ms);
        }
        self.in_flight
            .remove(&(key.clone(), id))
            .unwrap_or_default()
    }

    /// Learns a keyed message a follower saw in a room's stream at `seq`, stored at `ts_ms`.
    /// `author` is the message's `Chatd-User`: a key naming someone else is not learned.
    pub fn learn(&mut self, msg_id: &str, author: &str, seq: u64, ts_ms: u64) {
        let Some((user, client, id)) = parse_msg_id(msg_id) else {
            return;
        };
        if user != author {
            return;
        }
        let key = SendKey {
            user: Arc::from(user),
            client,
        };
        self.stored.insert(&key, id, seq, ts_ms);
    }

    /// Forgets pairs quiet for a day (at most one sweep a minute).
    pub fn sweep(&mut self, now_ms: u64) {
        self.stored.sweep(now_ms);
    }

    /// `(user, client)` pairs remembered.
    pub fn pairs(&self) -> usize {
        self.stored.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_700_000_000_000;

    fn key(user: &str, client: u64) -> SendKey {
        SendKey {
            user: Arc::from(user),
            client: NonZeroU64::new(client).expect("non-zero"),
        }
    }

    fn waiter(ticket: u64) -> Waiter {
        Waiter {
            reactor: 0,
            conn: ConnRef { key: 1, serial: 1 },
            ticket,
        }
    }

    #[test]
    fn a_msg_id_names_the_key_alone_and_parses_back() {
        let k = key("al.ice-_9", 0x5eed);
        let id = msg_id(&k, 42);
        assert_eq!(id, "al.ice-_9/0000000000005eed/42");
        assert_eq!(parse_msg_id(&id), Some(("al.ice-_9", k.client, 42)));
        let far = key("b", u64::MAX);
        assert_eq!(
            parse_msg_id(&msg_id(&far, u64::MAX)),
            Some(("b", far.client, u64::MAX))
        );
    }

    #[test]
    fn other_msg_ids_are_not_keys() {
        for id in [
            "",
            "0123456789abcdef-3-1-7",
            "alice/0000000000000000/1",
            "alice/5eed/1",
            "alice/000000000000005g/1",
            "alice/0000000000005eed/",
            "alice/0000000000005eed/-1",
            "alice/0000000000005eed/+1",
            "alice/0000000000005eed/1/2",
            "al ice/0000000000005eed/1",
            "/0000000000005eed/1",
            "alice/0000000000005eed/99999999999999999999",
        ] {
            assert_eq!(parse_msg_id(id), None, "{id:?}");
        }
    }

    #[test]
    fn a_retry_waits_for_its_original_in_flight_then_is_answered_from_the_table() {
        let mut keys = Keys::default();
        let k = key("alice", 7);
        assert_eq!(keys.triage(&k, 1, waiter(1), T), Triage::Publish);
        assert_eq!(keys.triage(&k, 1, waiter(2), T), Triage::Wait);
        assert_eq!(keys.triage(&k, 1, waiter(3), T), Triage::Wait);
        assert_eq!(keys.triage(&k, 2, waiter(4), T), Triage::Publish);
        assert_eq!(keys.settled(&k, 1, Ok(10), T), [waiter(2), waiter(3)]);
        assert_eq!(keys.triage(&k, 1, waiter(5), T), Triage::Answer(Ok(10)));
        // A key refused is handled as new.
        assert_eq!(keys.settled(&k, 2, Err(ErrorCode::Storage), T), []);
        assert_eq!(keys.triage(&k, 2, waiter(6), T), Triage::Publish);
    }

    #[test]
    fn followed_messages_teach_the_table_and_below_its_floor_is_stale() {
        let mut keys = Keys::default();
        let k = key("alice", 7);
        for id in 1..=100 {
            keys.learn(&msg_id(&k, id), "alice", 1000 + id, T);
        }
        assert_eq!(keys.pairs(), 1);
        assert_eq!(keys.triage(&k, 90, waiter(1), T), Triage::Answer(Ok(1090)));
        assert_eq!(
            keys.triage(&k, 1, waiter(2), T),
            Triage::Answer(Err(ErrorCode::StaleId))
        );
        // Another author's key, an unkeyed id: not learned.
        keys.learn(&msg_id(&key("bob", 7), 1), "mallory", 5, T);
        keys.learn("0123456789abcdef-3-1-7", "bob", 6, T);
        assert_eq!(keys.pairs(), 1);
        assert_eq!(
            keys.triage(&key("bob", 7), 1, waiter(3), T),
            Triage::Publish
        );
    }
}
