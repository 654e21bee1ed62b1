//! The sequencer: the one thread that gives every message its place.
//!
//! Reactors hand it SENDs already encoded as MSG frames (with seq and ts_ms left zero). It takes
//! them in batches, stamps each with the next seq of its room and the wall-clock time, appends
//! it to the room's ring, and then tells every reactor what happened: the sender's reactor gets
//! the ACK, every reactor with members in an advanced room gets a wake-up to fan out.
//!
//! Batching is the group commit of the durable log to come: one pass over the storage per
//! batch, then one round of ACKs. It must never run on a reactor thread, and never ACK a
//! message it has not appended.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvError, TryRecvError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::mailbox::{ConnRef, Mailbox, Stored};
use crate::protocol::ErrorCode;
use crate::protocol::codec::stamp_msg;
use crate::room::{RingLimits, Room, RoomId};

/// A SEND on its way to the sequencer.
#[derive(Debug)]
pub struct Submit {
    pub room: Arc<Room>,
    /// The MSG frame, complete but for seq and ts_ms.
    pub frame: Arc<[u8]>,
    pub reactor: usize,
    pub conn: ConnRef,
    pub id: u64,
}

/// Most SENDs taken into one batch: large enough to amortise a storage pass, small enough
/// that the first ACK of a batch is not held back long.
const BATCH_MAX: usize = 1024;

/// Runs until every sender of `inbox` is gone, then returns.
pub fn run(inbox: Receiver<Submit>, mailboxes: Arc<[Mailbox]>, limits: RingLimits) {
    let mut batch: Vec<Submit> = Vec::with_capacity(BATCH_MAX);
    let mut stored: Vec<Vec<Stored>> = mailboxes.iter().map(|_| Vec::new()).collect();
    let mut advanced: Vec<Vec<RoomId>> = mailboxes.iter().map(|_| Vec::new()).collect();
    let mut rooms: Vec<Arc<Room>> = Vec::new();
    loop {
        match inbox.recv() {
            Ok(first) => batch.push(first),
            Err(RecvError) => return,
        }
        while batch.len() < BATCH_MAX {
            match inbox.try_recv() {
                Ok(next) => batch.push(next),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let ts_ms = now_ms();
        for submit in batch.drain(..) {
            let result = store(submit.room.as_ref(), submit.frame, ts_ms, limits);
            if let Some(acks) = stored.get_mut(submit.reactor) {
                acks.push(Stored {
                    conn: submit.conn,
                    id: submit.id,
                    result,
                });
            }
            if result.is_ok() && !rooms.iter().any(|r| Arc::ptr_eq(r, &submit.room)) {
                rooms.push(submit.room);
            }
        }
        for room in rooms.drain(..) {
            for (reactor, list) in advanced.iter_mut().enumerate() {
                if room.has_members_on(reactor) {
                    list.push(room.id);
                }
            }
        }
        for ((mailbox, acks), rooms) in mailboxes.iter().zip(&mut stored).zip(&mut advanced) {
            mailbox.post(acks, rooms);
            acks.clear();
            rooms.clear();
        }
    }
}

/// Stamps and appends one message; returns its seq.
fn store(
    room: &Room,
    mut frame: Arc<[u8]>,
    ts_ms: u64,
    limits: RingLimits,
) -> Result<u64, ErrorCode> {
    room.write(|ring| {
        let seq = ring.head() + 1;
        // The reactor made this Arc and gave it away, so we hold the only reference.
        let bytes = Arc::get_mut(&mut frame).ok_or(ErrorCode::Internal)?;
        if !stamp_msg(bytes, room.name.len(), seq, ts_ms) {
            return Err(ErrorCode::Internal);
        }
        Ok(ring.append(frame, limits))
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
