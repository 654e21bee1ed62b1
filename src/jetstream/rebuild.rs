//! The exactly-once keys of a room, read back from its stream when this node loads the room,
//! so that a node restarted since a SEND (or one that never followed the room) answers its
//! retry from its table as the node that stored it would, after the stream's 2-minute
//! duplicate window too.
//!
//! The read covers the stream's last [`CAP`] messages up to the head known at load, and of
//! those only the ones stored in the last [`KEEP_MS`] (the table forgets a pair after that
//! anyway). Only headers are asked for: a key is `Nats-Msg-Id` and `Chatd-User`, never the
//! text. Each keyed message goes to the engine as `Work::Learned`, the path the room's
//! follower takes. This module must never put a message in the ring (the follower alone
//! does, in seq order), never read past the head known at load, and never report a read as
//! done when it stopped short: the load then fails and its JOINs are told to try again.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::Stream;
use futures_util::StreamExt;

use super::Failure;
use super::engine::Link;
use crate::dedupe::{KEEP_MS, now_ms};
use crate::room::Room;

/// The most messages read back from a room's head when the room loads. The load, and so
/// every JOIN waiting for it, waits for this read, which grows with the messages it covers:
/// 65,536 keyed messages took 467 and 486 ms, 6.1 MB from nats-server (headers only, user
/// names of 5 bytes), for a release build and one local nats-server on a shared 2-core
/// machine. A room busier than that in a day (0.76 messages a second on average) keeps the
/// keys of its last 65,536 messages only: a client resending its outbox after a reconnect or
/// a node's restart comes back within minutes, in which even a busy room stores fewer; an
/// older retry is caught by the stream's 2-minute duplicate window or stored again.
pub const CAP: u64 = 65_536;

/// Longest wait for the next message of the read before it counts as failed: as long as a
/// history read waits for one (`history`'s patience).
const READ_PATIENCE: Duration = Duration::from_secs(3);

/// Reads the keyed messages of `room`'s `stream`, whose retained seqs are `first..=head`
/// (`first` 0: none), from `max(first, head + 1 - CAP)` through `head`, and hands those of
/// the last day to the engine. Returns how many keys it handed over.
///
/// The engine takes them before any SEND to the room: they are in its queue before the
/// room is marked loaded, and a SEND needs a JOIN, which waits for that mark. The reactor's
/// SEND then reaches the queue through the `js-submit` forwarder thread, after the reactor
/// saw the mark: every `Learned` sent here was in the queue (one FIFO for every sender)
/// before the mark was set, so before that SEND's `Submit`, and the engine handles its queue
/// in order, learning synchronously.
///
/// # Errors
/// The stream could not be read through `head` (a consumer that cannot be made, fails, goes
/// back, or delivers nothing for [`READ_PATIENCE`]). Keys already handed over stay: each is
/// a message the stream holds, and learning one twice changes nothing.
pub async fn keys(
    link: &Link,
    room: &Room,
    stream: &Stream,
    first: u64,
    head: u64,
) -> Result<u64, Failure> {
    let start = first.max(head.saturating_add(1).saturating_sub(CAP));
    if first == 0 || start > head {
        return Ok(0);
    }
    let began = Instant::now();
    let since_ms = now_ms().saturating_sub(KEEP_MS);
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            headers_only: true,
            ..Default::default()
        })
        .await
        .map_err(|e| Failure(format!("cannot make a consumer to read its keys: {e}")))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| Failure(format!("cannot read its keys: {e}")))?;
    let (mut want, mut read, mut learned) = (start, 0_u64, 0_u64);
    loop {
        let message = tokio::time::timeout(READ_PATIENCE, messages.next())
            .await
            .map_err(|_| Failure(format!("reading its keys: no message came for seq {want}")))?
            .ok_or_else(|| Failure("reading its keys: the consumer ended".into()))?
            .map_err(|e| Failure(format!("reading its keys: {e}")))?;
        let info = message
            .info()
            .map_err(|e| Failure(format!("a delivery without its stream seq: {e}")))?;
        let seq = info.stream_sequence;
        if seq < want {
            // An ordered consumer remade before its first delivery starts at the stream's
            // first seq, not ours (see `history`): read again rather than go that far back.
            return Err(Failure(format!(
                "reading its keys: the consumer went back to seq {seq} from {want}"
            )));
        }
        if seq > head {
            // The head's message was deleted since the load looked: the read is complete.
            break;
        }
        read += 1;
        let ts_ms = u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        if ts_ms >= since_ms && super::room::learn(link, &message, seq) {
            learned += 1;
        }
        if seq == head {
            break;
        }
        want = seq + 1;
    }
    link.setup
        .metrics
        .jetstream
        .keys_rebuilt
        .fetch_add(learned, std::sync::atomic::Ordering::Relaxed);
    log::info!(
        "jetstream: {}: {learned} keys from its last {read} messages (seqs {start}..={head}) \
         in {} ms",
        room.name,
        began.elapsed().as_millis()
    );
    Ok(learned)
}
