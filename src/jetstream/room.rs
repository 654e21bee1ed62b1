//! One room on this node: load where its history stands (making its stream on the cluster's
//! first JOIN of it) and the keys of its recent keyed SENDs ([`super::rebuild`]), then
//! follow the stream for as long as the node runs, appending every message to the room's
//! ring in seq order and waking the reactors with members there.
//!
//! The consumer is an ordered one: JetStream delivers in stream order, and the client makes
//! it anew from the last seq seen when it notices a gap or loses the server. A seq already in
//! the ring is skipped; one past the next means retention deleted messages before this node
//! saw them, and the ring restarts there. This module must never put a message in the ring
//! out of seq order or twice.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use futures_util::{FutureExt, StreamExt};

use super::engine::{BACKOFF, Link};
use super::frames::{USER_HEADER, msg_frame};
use super::{Failure, Work, epoch, names, once, rebuild};
use crate::batch_frames::Frame;
use crate::mailbox::Mailbox;
use crate::room::{Loaded, Ring, Room};

/// How often the first retained seq of each followed room is looked up again (retention on
/// the stream moves it without telling anyone).
const REFRESH_FIRST: Duration = Duration::from_secs(10);

/// How long a followed room may stay quiet before the stream is asked whether it really has
/// nothing new.
const QUIET_CHECK: Duration = Duration::from_secs(5);

/// How long a stream's duplicate window is: publishes of one `Nats-Msg-Id` within it are
/// stored once, whichever node sent them (for a keyed SEND, the id is its key: see
/// [`super::once`]). NATS keeps every id of the window in memory, per stream: two minutes of
/// a room's SENDs, each an id of some 30 bytes with its seq and time in a map (an estimated
/// 150 bytes; not measured). Chosen as NATS's own default, long enough for a client to
/// reconnect and resend, short enough that a busy room's ids stay cheap.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The header JetStream deduplicates on.
pub(super) const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// Loads `room`, then follows it until the engine stops. A room that cannot be loaded is
/// marked `Failed`, which answers its waiting JOINs with an error; the next JOIN tries again.
pub async fn follow(link: Link, room: Arc<Room>) {
    // A young cluster or one electing a leader refuses for a moment: ask again for as long
    // as a SEND would wait, before answering the waiting JOINs with an error.
    let deadline = tokio::time::Instant::now() + link.setup.nats.ack_timeout;
    let loaded = loop {
        match load(&link, &room).await {
            Err(failure) if tokio::time::Instant::now() < deadline => {
                log::debug!("jetstream: loading {}: {failure}; asking again", room.name);
                tokio::time::sleep(BACKOFF).await;
            }
            result => break result,
        }
    };
    let mut subscribed = match loaded {
        Ok((first, head)) => {
            room.write(|ring| ring.restore(first, head, Vec::new()));
            // The consumer is made before the JOINs are answered, so that it is already
            // reading at the head they are told: SENDs right after JOINED are not left in the
            // stream, within reach of its retention limits, while the consumer is being made.
            // If it cannot be made now, `consume` tries again.
            let subscribed = subscribe(&link, &room)
                .await
                .map_err(|f| log::debug!("jetstream: following {}: {f}", room.name))
                .ok();
            room.set_loaded(Loaded::Yes);
            wake(&link.setup.mailboxes, &room);
            subscribed
        }
        Err(failure) => {
            log::warn!("jetstream: cannot load {}: {failure}", room.name);
            room.set_loaded(Loaded::Failed);
            wake(&link.setup.mailboxes, &room);
            return;
        }
    };
    loop {
        if let Err(failure) = consume(&link, &room, subscribed.take()).await {
            log::warn!(
                "jetstream: following {}: {failure}; starting again",
                room.name
            );
        }
        tokio::time::sleep(BACKOFF * 4).await;
    }
}

/// The stream's config for `room`: the retention flags become its limits.
fn config(link: &Link, room: &str) -> stream::Config {
    let retention = link.setup.retention;
    stream::Config {
        name: names::stream(room),
        subjects: vec![names::subject(room)],
        description: Some(format!("chatd room {room}")),
        num_replicas: link.setup.nats.replicas,
        storage: StorageType::File,
        discard: DiscardPolicy::Old,
        max_bytes: retention
            .max_bytes
            .and_then(|b| i64::try_from(b).ok())
            .unwrap_or(-1),
        max_age: retention.max_age.unwrap_or_default(),
        // No limit of the stream's own: the reactor already bounds a message by max_frame,
        // and JetStream would count the headers too, refusing messages max_frame allows.
        max_message_size: -1,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

/// Makes sure the room has a stream, reads back the keys of its recent keyed SENDs (see
/// [`rebuild`]) and says where its history stands: `(first, head)` as JOINED reports them.
async fn load(link: &Link, room: &Room) -> Result<(u64, u64), Failure> {
    let mut stream = link
        .js
        .get_or_create_stream(config(link, &room.name))
        .await
        .map_err(|e| Failure(format!("cannot open or make its stream: {e}")))?;
    let info = stream
        .info()
        .await
        .map_err(|e| Failure(format!("cannot read its stream's state: {e}")))?;
    epoch::check_room(
        &link.bucket,
        &room.name,
        info.created.unix_timestamp_nanos(),
    )
    .await?;
    let (first, head) = bounds(&info.state);
    // Before the room is marked loaded, so that no SEND to it is triaged before the keys
    // are known. A read that stops short fails the load (tried again within its deadline,
    // then its JOINs answered STORAGE): a room marked loaded on a partial table could store
    // a retry twice.
    rebuild::keys(link, room, &stream, first, head).await?;
    Ok((first, head))
}

/// The stream's messages from seq `start` on, in order, through an ordered consumer.
pub(super) async fn ordered_from(
    stream: &async_nats::jetstream::stream::Stream,
    start: u64,
) -> Result<pull::Ordered, Failure> {
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| Failure(format!("cannot make a consumer: {e}")))?;
    consumer
        .messages()
        .await
        .map_err(|e| Failure(format!("cannot consume: {e}")))
}

/// `(first, head)` of a stream's state as JOINED reports them: first is 0 when the stream
/// retains nothing.
pub(super) fn bounds(state: &async_nats::jetstream::stream::State) -> (u64, u64) {
    let first = if state.messages == 0 {
        0
    } else {
        state.first_sequence
    };
    (first, state.last_sequence)
}

/// A delivered message as its seq and the MSG frame members receive.
pub(super) fn delivered(
    link: &Link,
    room: &Room,
    message: &async_nats::jetstream::Message,
) -> Result<(u64, Frame), Failure> {
    let info = message
        .info()
        .map_err(|e| Failure(format!("a delivery without its stream seq: {e}")))?;
    let seq = info.stream_sequence;
    let ts_ms = u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let user = message
        .headers
        .as_ref()
        .and_then(|h| h.get(USER_HEADER))
        .map(|v| v.as_str().to_string());
    let frame = msg_frame(
        &room.name,
        seq,
        ts_ms,
        user.as_deref(),
        &message.payload,
        link.setup.max_frame,
    );
    Ok((seq, frame))
}

/// The room's stream, and an ordered consumer of it from the seq after the ring's head.
async fn subscribe(link: &Link, room: &Room) -> Result<(stream::Stream, pull::Ordered), Failure> {
    let stream = link
        .js
        .get_stream(names::stream(&room.name))
        .await
        .map_err(|e| Failure(format!("cannot open its stream: {e}")))?;
    let start = room.read(|ring| ring.head()) + 1;
    let messages = ordered_from(&stream, start).await?;
    Ok((stream, messages))
}

/// Follows the room's stream from the seq after the ring's head until something fails, with
/// the consumer `subscribed` if one was made already.
async fn consume(
    link: &Link,
    room: &Arc<Room>,
    subscribed: Option<(stream::Stream, pull::Ordered)>,
) -> Result<(), Failure> {
    let (mut stream, mut messages) = match subscribed {
        Some(both) => both,
        None => subscribe(link, room).await?,
    };
    let mailboxes = &link.setup.mailboxes;
    let advanced = link.advanced.of(room.id);
    loop {
        let first = match tokio::time::timeout(QUIET_CHECK, messages.next()).await {
            Ok(Some(first)) => first,
            Ok(None) => return Err(Failure("the consumer ended".into())),
            Err(_) => {
                // Quiet for a while: make sure it is the room and not the consumer. A
                // consumer whose server died can stay silent without reporting an error.
                let info = stream
                    .info()
                    .await
                    .map_err(|e| Failure(format!("cannot read its stream's state: {e}")))?;
                let head = room.read(|ring| ring.head());
                if info.state.last_sequence < head {
                    // The stream was deleted and made anew: its seqs start over. The marker
                    // check changes the epoch; the ring starts again from the new stream.
                    log::error!(
                        "jetstream: the stream of {} holds fewer messages ({}) than this node \
                         has seen ({head}); its history started over",
                        room.name,
                        info.state.last_sequence
                    );
                    epoch::check_room(
                        &link.bucket,
                        &room.name,
                        info.created.unix_timestamp_nanos(),
                    )
                    .await?;
                    let (first, last) = bounds(&info.state);
                    room.write(|ring| ring.restore(first, last, Vec::new()));
                    wake(mailboxes, room);
                    return Err(Failure("following the new stream from its start".into()));
                }
                if info.state.last_sequence > head {
                    return Err(Failure(format!(
                        "the consumer fell silent at seq {head} while the stream is at {}",
                        info.state.last_sequence
                    )));
                }
                continue;
            }
        };
        let mut taken = take(link, room, first);
        // Everything already here, then one wake-up for the lot.
        while taken.is_ok()
            && let Some(next) = messages.next().now_or_never()
        {
            taken = match next {
                Some(next) => take(link, room, next),
                None => Err(Failure("the consumer ended".into())),
            };
        }
        wake(mailboxes, room);
        advanced.notify_waiters();
        taken?;
    }
}

/// One delivered message into the ring, in its place.
fn take(
    link: &Link,
    room: &Room,
    message: Result<async_nats::jetstream::Message, impl std::fmt::Display>,
) -> Result<(), Failure> {
    let message = message.map_err(|e| Failure(format!("consumer error: {e}")))?;
    let (seq, frame) = delivered(link, room, &message)?;
    let head = room.read(Ring::head);
    if seq <= head {
        // Only a consumer remade before its first delivery goes back: async-nats then starts
        // it at the stream's first seq, not at ours. Start again from the ring's head rather
        // than read the whole history through.
        return Err(Failure(format!(
            "the consumer started again from seq {seq}, before the ring's head {head}"
        )));
    }
    let limits = link.setup.ring;
    let appended = room.write(|ring| {
        let head = ring.head();
        if seq <= head {
            return false;
        }
        if seq > head + 1 {
            log::info!(
                "jetstream: {} seqs {}..{} were deleted before this node saw them",
                room.name,
                head + 1,
                seq - 1
            );
            ring.skip_to(seq);
        }
        ring.append_kept_elsewhere(frame, limits);
        true
    });
    if appended {
        learn(link, &message, seq);
    }
    Ok(())
}

/// Hands the engine the `Nats-Msg-Id` of a message just appended, if it may be a keyed SEND's:
/// whichever node stored it, a retry of it on this node is then answered with its seq even
/// after the stream's duplicate window. Returns whether it did.
pub(super) fn learn(link: &Link, message: &async_nats::jetstream::Message, seq: u64) -> bool {
    let Some(headers) = &message.headers else {
        return false;
    };
    let (Some(msg_id), Some(author)) = (headers.get(MSG_ID_HEADER), headers.get(USER_HEADER))
    else {
        return false;
    };
    if once::parse_msg_id(msg_id.as_str()).is_none() {
        return false;
    }
    let ts_ms = message.info().map_or(0, |info| {
        u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
    });
    link.work
        .send(Work::Learned {
            msg_id: msg_id.as_str().to_string(),
            author: author.as_str().to_string(),
            seq,
            ts_ms,
        })
        .is_ok()
}

/// Tells every reactor with members in `room` to look at it.
fn wake(mailboxes: &[Mailbox], room: &Room) {
    for (reactor, mailbox) in mailboxes.iter().enumerate() {
        if room.has_members_on(reactor) {
            mailbox.post(&[], &[room.id]);
        }
    }
}

/// Keeps each followed room's first retained seq current, for JOINED.
pub async fn refresh_firsts(link: Link, followed: Arc<Mutex<Vec<Arc<Room>>>>) {
    loop {
        tokio::time::sleep(REFRESH_FIRST).await;
        let rooms: Vec<Arc<Room>> = followed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|r| r.loaded() == Loaded::Yes)
            .cloned()
            .collect();
        for room in rooms {
            let Ok(mut stream) = link.js.get_stream(names::stream(&room.name)).await else {
                continue;
            };
            let Ok(info) = stream.info().await else {
                continue;
            };
            let (first, _) = bounds(&info.state);
            room.write(|ring| ring.set_first(first));
        }
    }
}
