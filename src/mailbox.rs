//! What the sequencer hands back to a reactor: ACKs for the SENDs it stored, and the rooms
//! that advanced; what the archive thread read back from the log for its members; and the
//! rooms whose presence changed, for their watchers. One
//! mailbox per reactor, drained by that reactor when its `Waker` fires. The message types
//! live here, so the threads that post them depend on the mailbox and never the other way.
//!
//! The sequencer wakes a reactor only when its mailbox goes from empty to non-empty: a wake
//! already pending will find everything pushed after it.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use mio::Waker;

use crate::batch_frames::Frame;
use crate::protocol::ErrorCode;
use crate::room::RoomId;

/// Names one connection of one reactor across its lifetime: a slab key is reused after a
/// close, the serial never is, so an ACK for a closed connection is never misdelivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRef {
    pub key: usize,
    pub serial: u64,
}

/// The outcome of one SEND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub conn: ConnRef,
    pub id: u64,
    /// The seq the message was stored as, or why it was not stored.
    pub result: Result<u64, ErrorCode>,
    /// The SEND was a retry of a message already stored (exactly-once, protocol version 2):
    /// `result` is the original's seq, and the SEND does not count against the rate limit.
    pub again: bool,
}

/// The answer: the frames from `from` on, or `Gone` if retention deleted them meanwhile.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub conn: ConnRef,
    pub room: RoomId,
    pub from: u64,
    pub frames: Result<Vec<Frame>, Gone>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// What a reactor finds when it empties its mailbox.
#[derive(Debug, Default)]
pub struct Delivery {
    pub stored: Vec<Stored>,
    pub advanced: Vec<RoomId>,
    /// Rooms whose presence changed (protocol version 2's WATCH): only the watchers among
    /// their members have something new.
    pub presence: Vec<RoomId>,
    /// History the archive thread read back for members.
    pub fetched: Vec<Fetched>,
    /// When the first of these was posted (the post that woke the reactor), for the
    /// `mail_wait` histogram.
    pub since: Option<Instant>,
}

impl Delivery {
    fn is_empty(&self) -> bool {
        self.stored.is_empty()
            && self.advanced.is_empty()
            && self.presence.is_empty()
            && self.fetched.is_empty()
    }
}

#[derive(Debug)]
pub struct Mailbox {
    pending: Mutex<Delivery>,
    waker: Waker,
}

impl Mailbox {
    pub fn new(waker: Waker) -> Mailbox {
        Mailbox {
            pending: Mutex::new(Delivery::default()),
            waker,
        }
    }

    /// Adds to the mailbox and wakes its reactor if the mailbox was empty.
    pub fn post(&self, stored: &[Stored], advanced: &[RoomId]) {
        if stored.is_empty() && advanced.is_empty() {
            return;
        }
        self.add(|pending| {
            pending.stored.extend_from_slice(stored);
            pending.advanced.extend_from_slice(advanced);
        });
    }

    /// Tells the reactor that `room`'s presence changed, for its watchers there.
    pub fn post_presence(&self, room: RoomId) {
        self.add(|pending| pending.presence.push(room));
    }

    /// Hands a member the history it asked the archive for.
    pub fn post_fetched(&self, fetched: Fetched) {
        self.add(|pending| pending.fetched.push(fetched));
    }

    /// Adds to the mailbox with `add`, and wakes the reactor if the mailbox was empty.
    fn add(&self, add: impl FnOnce(&mut Delivery)) {
        let was_empty = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            let was_empty = pending.is_empty();
            if was_empty {
                pending.since = Some(Instant::now());
            }
            add(&mut pending);
            was_empty
        };
        if was_empty {
            self.wake();
        }
    }

    /// Wakes the reactor without posting anything (shutdown uses this).
    pub fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            log::error!("cannot wake a reactor: {e}");
        }
    }

    /// Takes everything posted so far, leaving `into`'s old contents cleared and its
    /// allocations swapped in, so that steady traffic allocates nothing here.
    pub fn take(&self, into: &mut Delivery) {
        into.stored.clear();
        into.advanced.clear();
        into.presence.clear();
        into.fetched.clear();
        into.since = None;
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *pending, into);
    }
}
