//! Fuzz body for what other nodes say about who is in a room (`src/jetstream/roster.rs`):
//! any payload, since anyone allowed on the NATS server can publish on a presence subject.
//!
//! The promises: decoding never panics; what it accepts lists valid user names, each once among
//! the users and once among the arrivals, at most `MAX_USERS` names in all; and writing the roster it gives and reading that back gives the
//! same roster, so that what one node sends another reads as it was meant.

use std::sync::Arc;

use crate::jetstream::roster::{MAX_USERS, decode, encode};
use crate::protocol::name::is_valid_user;

/// The input is the payload as it came off the subject.
///
/// # Panics
/// When a promise in the module documentation is broken.
pub fn roster(data: &[u8]) {
    let Some(roster) = decode(data) else {
        return;
    };
    assert!(roster.users.len() + roster.arrivals.len() <= MAX_USERS);
    assert!(
        roster
            .users
            .iter()
            .chain(&roster.arrivals)
            .all(|u| is_valid_user(u))
    );
    let users: Vec<Arc<str>> = roster.users.iter().cloned().collect();
    let arrivals: Vec<Arc<str>> = roster.arrivals.iter().cloned().collect();
    let (payload, cut) = encode(roster.node, roster.kind, &users, &arrivals);
    assert!(!cut, "a roster that was read must fit when written");
    assert_eq!(
        decode(&payload),
        Some(roster),
        "written and read back differs"
    );
}
