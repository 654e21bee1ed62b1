//! History older than a room's in-memory window, read back from its stream for one member:
//! the JetStream counterpart of the archive thread, answering through the same mailbox.
//!
//! Each answer is bounded like the archive's (`FETCH_BYTES`), so a long replay is served a
//! slice at a time as the member's socket drains. While NATS cannot be read the request is
//! tried again rather than answered `Gone`: `Gone` means retention deleted the history, and
//! would close the member as a slow consumer. This module must never answer with frames that
//! are not the stream's, in its order, from exactly the seq asked.

use std::time::Duration;

use futures_util::StreamExt;

use super::engine::{BACKOFF, Link};
use super::{Failure, names};
use crate::batch_frames::Frame;
use crate::mailbox::{Fetched, Gone};
use crate::store::archive::{FETCH_BYTES, Fetch};

/// Longest wait for the next message of a read before it is started again.
const READ_PATIENCE: Duration = Duration::from_secs(3);

/// Answers `fetch`, however many tries it takes.
pub async fn serve(link: Link, fetch: Fetch) {
    let frames = loop {
        match read(&link, &fetch).await {
            Ok(frames) => break frames,
            Err(failure) => {
                log::warn!(
                    "jetstream: reading the history of {} from {}: {failure}; trying again",
                    fetch.room.name,
                    fetch.from
                );
                tokio::time::sleep(BACKOFF * 4).await;
            }
        }
    };
    if let Some(mailbox) = link.setup.mailboxes.get(fetch.reactor) {
        mailbox.post_fetched(Fetched {
            conn: fetch.conn,
            room: fetch.room.id,
            from: fetch.from,
            frames,
        });
    }
}

async fn read(link: &Link, fetch: &Fetch) -> Result<Result<Vec<Frame>, Gone>, Failure> {
    let room = &fetch.room;
    let mut stream = link
        .js
        .get_stream(names::stream(&room.name))
        .await
        .map_err(|e| Failure(format!("cannot open the stream: {e}")))?;
    let info = stream
        .info()
        .await
        .map_err(|e| Failure(format!("cannot read the stream's state: {e}")))?;
    if info.state.messages == 0 || fetch.from < info.state.first_sequence {
        log::info!(
            "jetstream: {} from seq {}: the stream holds {} messages from seq {}: gone",
            room.name,
            fetch.from,
            info.state.messages,
            info.state.first_sequence
        );
        return Ok(Err(Gone));
    }
    // Up to what the ring holds or will: never past the head members know of.
    let head = room.read(|ring| ring.head());
    let last = fetch
        .from
        .saturating_add(fetch.max.saturating_sub(1))
        .min(head);
    if last < fetch.from {
        return Ok(Ok(Vec::new()));
    }
    let mut messages = super::room::ordered_from(&stream, fetch.from).await?;
    let mut frames = Vec::new();
    let mut bytes = 0;
    let mut want = fetch.from;
    while want <= last && bytes < FETCH_BYTES {
        let next = tokio::time::timeout(READ_PATIENCE, messages.next())
            .await
            .map_err(|_| Failure("no message came".into()))?
            .ok_or_else(|| Failure("the consumer ended".into()))?
            .map_err(|e| Failure(format!("consumer error: {e}")))?;
        let (seq, frame) = super::room::delivered(link, room, &next)?;
        if seq < want {
            // async-nats remakes an ordered consumer that lost its server before delivering
            // anything from the stream's start (`DeliverPolicy::All`), not from ours: a fresh
            // one is cheaper than reading up to `want`.
            return Err(Failure(format!(
                "the consumer started again from seq {seq}, not {want}"
            )));
        }
        if seq != want {
            // Deleted between our look at the state and the read.
            log::info!(
                "jetstream: {} from seq {}: the stream gave seq {seq} for {want}: gone",
                room.name,
                fetch.from
            );
            return Ok(Err(Gone));
        }
        bytes += frame.len();
        frames.push(frame);
        want += 1;
    }
    Ok(Ok(frames))
}
