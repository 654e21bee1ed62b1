//! SEND → ACK through JetStream: publish with a `Nats-Msg-Id`, ACK only on the PubAck, and
//! answer each connection in the order it sent.
//!
//! A keyed SEND (protocol version 2, `client ≠ 0`) goes through [`super::once`] first: a
//! retry of a key this node knows is answered from there, and one whose original is still in
//! flight here waits for its outcome. Its id is its key alone, so that the stream catches a
//! retry from any node within its duplicate window; the PubAck then says `duplicate` and names
//! the original's seq, which the retry is ACKed with. Any other SEND's id is this node's random
//! id, the connection and the SEND id, and a ticket unique to this SEND on this node: the
//! publish's own retries carry the same id, so the stream stores it once (within its duplicate
//! window), while two SENDs that happen to share an id stay two messages. A SEND whose PubAck does not come within `--nats-ack-timeout`, retries
//! included, is answered STORAGE; it may still have been stored (the outcome is unknown), and
//! docs/cluster.md says so. This module must never turn anything but a PubAck into an ACK.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use tokio::sync::mpsc::UnboundedSender;

use super::Work;
use super::engine::{ATTEMPT, BACKOFF, Link};
use super::frames::{USER_HEADER, user_and_text};
use super::names;
use super::once::{self, Keys, Triage, Waiter};
use super::room::MSG_ID_HEADER;
use crate::dedupe::{SendKey, now_ms};
use crate::mailbox::{ConnRef, Mailbox, Stored};
use crate::metrics::histogram::micros;
use crate::protocol::ErrorCode;
use crate::room::Room;
use crate::sequencer::Submit;

/// What a publish task reports back to the engine's loop.
#[derive(Debug)]
pub struct Outcome {
    reactor: usize,
    conn: ConnRef,
    ticket: u64,
    result: Result<u64, ErrorCode>,
    /// Stored before this SEND (a retry): the rate token goes back.
    again: bool,
    /// The key and id of a keyed SEND that was published.
    key: Option<(SendKey, u64)>,
}

/// Starts publish tasks, and keeps the keys of keyed SENDs.
pub struct Publish {
    link: Link,
    work: UnboundedSender<Work>,
    next_ticket: u64,
    keys: Keys,
}

impl Publish {
    pub fn new(link: Link, work: UnboundedSender<Work>) -> Publish {
        Publish {
            link,
            work,
            next_ticket: 0,
            keys: Keys::default(),
        }
    }

    /// Publishes `submit` in a task of its own, after taking its place in `order`; a keyed
    /// SEND this node can answer already is answered without publishing.
    pub fn start(&mut self, submit: Submit, order: &mut Order) {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let (reactor, conn) = (submit.reactor, submit.conn);
        order.expect(reactor, conn, ticket, submit.id);
        let key = submit.key.map(|key| (key, submit.id));
        if let Some((key, id)) = &key {
            let now = now_ms();
            self.keys.sweep(now);
            let waiter = Waiter {
                reactor,
                conn,
                ticket,
            };
            match self.keys.triage(key, *id, waiter, now) {
                Triage::Publish => {}
                Triage::Wait => return,
                Triage::Answer(result) => {
                    let again = result.is_ok();
                    self.settle(answer(waiter, result, again), order);
                    return;
                }
            }
        }
        let Some((user, text)) = user_and_text(&submit.frame) else {
            // A reactor only submits frames it encoded; this cannot be stored as a message.
            let outcome = Outcome {
                reactor,
                conn,
                ticket,
                result: Err(ErrorCode::Storage),
                again: false,
                key,
            };
            self.settle(outcome, order);
            return;
        };
        let message = Message {
            subject: names::subject(&submit.room.name),
            id: match &key {
                Some((key, id)) => once::msg_id(key, *id),
                None => format!(
                    "{:016x}-{}-{}-{}",
                    self.link.node, conn.serial, submit.id, ticket
                ),
            },
            user: user.to_string(),
            text: text.as_bytes().to_vec(),
        };
        let (link, work) = (self.link.clone(), self.work.clone());
        let room = submit.room;
        tokio::spawn(async move {
            let (result, again) = match store(&link, &message).await {
                Ok(acked) => {
                    let result = confirm(&link, &room, &acked, &message).await;
                    (result, acked.duplicate && result.is_ok())
                }
                Err(code) => (Err(code), false),
            };
            let _ = work.send(Work::Stored(Outcome {
                reactor,
                conn,
                ticket,
                result,
                again,
                key,
            }));
        });
    }

    /// Takes a SEND's outcome: a keyed one teaches the keys, and answers the SENDs that
    /// waited for it with the same result.
    pub fn settle(&mut self, mut outcome: Outcome, order: &mut Order) {
        if let Some((key, id)) = outcome.key.take() {
            let result = outcome.result;
            for waiter in self.keys.settled(&key, id, result, now_ms()) {
                self.count(result.is_ok());
                order.settle(answer(waiter, result, result.is_ok()));
            }
            self.report_pairs();
        }
        self.count(outcome.again);
        order.settle(outcome);
    }

    /// Learns a keyed message a follower saw (see [`Keys::learn`]).
    pub fn learn(&mut self, msg_id: &str, author: &str, seq: u64, ts_ms: u64) {
        self.keys.learn(msg_id, author, seq, ts_ms);
        self.report_pairs();
    }

    /// Counts a SEND answered as a retry (`send_retries_total`, as with the local log).
    fn count(&self, again: bool) {
        if again {
            self.link.setup.metrics.store.retries.fetch_add(1, Relaxed);
        }
    }

    fn report_pairs(&self) {
        let pairs = self.keys.pairs() as u64;
        self.link
            .setup
            .metrics
            .store
            .dedupe_pairs
            .store(pairs, Relaxed);
    }
}

/// The outcome of a SEND that was not published itself.
fn answer(waiter: Waiter, result: Result<u64, ErrorCode>, again: bool) -> Outcome {
    Outcome {
        reactor: waiter.reactor,
        conn: waiter.conn,
        ticket: waiter.ticket,
        result,
        again,
        key: None,
    }
}

/// What a PubAck said.
struct Acked {
    seq: u64,
    /// The stream had the id already, from a publish before this SEND's first try (another
    /// node's, or this node's before it knew the outcome): `seq` is that message's.
    duplicate: bool,
}

struct Message {
    subject: String,
    id: String,
    user: String,
    text: Vec<u8>,
}

/// Publishes until JetStream confirms or the SEND's deadline passes.
async fn store(link: &Link, message: &Message) -> Result<Acked, ErrorCode> {
    let started = Instant::now();
    let gauges = &link.setup.metrics.jetstream;
    let deadline = started + link.setup.nats.ack_timeout;
    let mut tries = 0u32;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            gauges.failed();
            log::warn!(
                "jetstream: no PubAck for {} within {:?} ({tries} tries): answered STORAGE",
                message.id,
                link.setup.nats.ack_timeout
            );
            return Err(ErrorCode::Storage);
        }
        tries += 1;
        if tries > 1 {
            gauges.retried();
        }
        let mut headers = HeaderMap::new();
        headers.insert(MSG_ID_HEADER, message.id.as_str());
        headers.insert(USER_HEADER, message.user.as_str());
        let attempt = async {
            link.js
                .publish_with_headers(
                    message.subject.clone(),
                    headers,
                    message.text.clone().into(),
                )
                .await?
                .await
        };
        match tokio::time::timeout(left.min(ATTEMPT), attempt).await {
            Ok(Ok(ack)) => {
                gauges.published(micros(started.elapsed()));
                // A duplicate after a try of our own that got no answer may be that try
                // itself: counted as new, it keeps its rate token rather than give back one
                // it may owe.
                return Ok(Acked {
                    seq: ack.sequence,
                    duplicate: ack.duplicate && tries == 1,
                });
            }
            Ok(Err(e)) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                // Larger than the NATS servers' max_payload: no retry can store it.
                gauges.failed();
                log::warn!("jetstream: {} is larger than NATS takes: {e}", message.id);
                return Err(ErrorCode::Storage);
            }
            Ok(Err(e)) => {
                log::debug!("jetstream: publish {} failed: {e}", message.id);
                tokio::time::sleep(BACKOFF.min(left)).await;
            }
            Err(_) => log::debug!("jetstream: publish {} timed out", message.id),
        }
    }
}

/// What holds the seq a PubAck named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// The message that PubAck was for.
    Ours,
    /// Another message: the PubAck was wrong.
    Other,
    /// Nothing to compare any more: the follower passed the seq but the ring no longer holds
    /// it, or the stream's first seq is past it (retention removed it after it was stored).
    /// The ACK stands on the PubAck alone.
    Retired,
}

/// Whether the stream holds `message` at `seq`, as its PubAck said; the seq to ACK if so.
///
/// A PubAck is not taken on trust: under repeated server kills, nats-server 2.9.10 was seen
/// (`chat-bench cluster --mode kills`, docs/cluster.md) to PubAck a SEND at a seq where the
/// stream then kept another message, one whose own publish had timed out and been sent again.
/// An ACK there would be a message lost. This node's ring, which the follower fills from the
/// stream, answers at no cost; the stream is asked only when the follower has not reached
/// `seq` within [`VISIBLE_PATIENCE`]. Another message there, or no answer from the stream, is
/// STORAGE: the outcome is unknown, which the client is told.
///
/// A duplicate's seq is its original's, which the ring may show with another text if the
/// client broke its promise never to reuse an id: the stream's `Nats-Msg-Id` has the last word.
async fn confirm(
    link: &Link,
    room: &Room,
    acked: &Acked,
    message: &Message,
) -> Result<u64, ErrorCode> {
    let gauges = &link.setup.metrics.jetstream;
    let seq = acked.seq;
    let held = match in_ring(link, room, seq, message).await {
        Some(Held::Other) if acked.duplicate => in_stream(link, room, seq, message).await,
        Some(held) => Ok(held),
        None => in_stream(link, room, seq, message).await,
    };
    match held {
        Ok(Held::Ours | Held::Retired) => Ok(seq),
        Ok(Held::Other) => {
            gauges.conflicted();
            log::error!(
                "jetstream: NATS confirmed {} at seq {seq} of {}, but the stream holds another \
                 message there: answered STORAGE, not ACK",
                message.id,
                room.name
            );
            Err(ErrorCode::Storage)
        }
        Err(why) => {
            gauges.failed();
            log::warn!(
                "jetstream: cannot confirm {} at seq {seq} of {}: {why}; answered STORAGE",
                message.id,
                room.name
            );
            Err(ErrorCode::Storage)
        }
    }
}

/// Waits until message `seq` of `room` is in the ring on this node, for at most
/// [`VISIBLE_PATIENCE`], and says whose it is there; `None` if it did not come. Waiting also
/// means the sender's own MSG comes before its ACK. A seq the follower passed but the ring no
/// longer holds (evicted by the ring's limits, or deleted by retention before this node saw
/// it) is `Retired`: asking the stream for each of those would load the engine exactly when
/// the follower must keep up with a burst.
async fn in_ring(link: &Link, room: &Room, seq: u64, message: &Message) -> Option<Held> {
    let advanced = link.advanced.of(room.id);
    let deadline = tokio::time::Instant::now() + VISIBLE_PATIENCE;
    loop {
        let notified = advanced.notified();
        tokio::pin!(notified);
        // Registered before the look, so an advance between the two is not missed.
        notified.as_mut().enable();
        if room.read(|ring| ring.head()) >= seq {
            return Some(room.read(|ring| {
                ring.frame_at(seq)
                    .map_or(Held::Retired, |frame| whose(frame.bytes(), message))
            }));
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return None;
        }
    }
}

/// Whose message a MSG frame from the ring is: ours if it has our author and text. (Two
/// messages of one author with the same text cannot be told apart here; they read the same.)
fn whose(frame: &[u8], message: &Message) -> Held {
    match user_and_text(frame) {
        Some((user, text)) if user == message.user && text.as_bytes() == message.text => Held::Ours,
        _ => Held::Other,
    }
}

/// Asks the stream what it holds at `seq`: ours if it carries our `Nats-Msg-Id`; retired if
/// there is no such message and the stream's first seq is past it (a seq past the stream's
/// last is another matter: a stream that forgot what it confirmed).
async fn in_stream(link: &Link, room: &Room, seq: u64, message: &Message) -> Result<Held, String> {
    let ask = async {
        let mut stream = link
            .js
            .get_stream(names::stream(&room.name))
            .await
            .map_err(|e| e.to_string())?;
        match stream.get_raw_message(seq).await {
            Ok(stored) => {
                let id = stored.headers.get(MSG_ID_HEADER).map(|v| v.as_str());
                Ok(if id == Some(message.id.as_str()) {
                    Held::Ours
                } else {
                    Held::Other
                })
            }
            Err(e) => {
                let info = stream.info().await.map_err(|i| format!("{e}; {i}"))?;
                let (first, last) = (info.state.first_sequence, info.state.last_sequence);
                if seq < first {
                    Ok(Held::Retired)
                } else if seq > last {
                    Ok(Held::Other)
                } else {
                    Err(e.to_string())
                }
            }
        }
    };
    tokio::time::timeout(ATTEMPT, ask)
        .await
        .map_err(|_| "the stream did not answer in time".to_string())?
}

/// Longest an ACK waits for its message to reach the ring here.
const VISIBLE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// One SEND awaiting its answer.
struct Slot {
    ticket: u64,
    id: u64,
    result: Option<Result<u64, ErrorCode>>,
    again: bool,
}

/// Keeps each connection's answers in the order of its SENDs, whatever order the PubAcks
/// come back in (rooms on different stream leaders answer at different speeds).
pub struct Order {
    waiting: HashMap<(usize, usize, u64), VecDeque<Slot>>,
    /// Answers ready to post, per reactor.
    ready: Vec<Vec<Stored>>,
}

impl Order {
    pub fn new(reactors: usize) -> Order {
        Order {
            waiting: HashMap::new(),
            ready: (0..reactors).map(|_| Vec::new()).collect(),
        }
    }

    fn expect(&mut self, reactor: usize, conn: ConnRef, ticket: u64, id: u64) {
        self.waiting
            .entry((reactor, conn.key, conn.serial))
            .or_default()
            .push_back(Slot {
                ticket,
                id,
                result: None,
                again: false,
            });
    }

    pub fn settle(&mut self, outcome: Outcome) {
        let key = (outcome.reactor, outcome.conn.key, outcome.conn.serial);
        let Some(queue) = self.waiting.get_mut(&key) else {
            return;
        };
        if let Some(slot) = queue.iter_mut().find(|s| s.ticket == outcome.ticket) {
            slot.result = Some(outcome.result);
            slot.again = outcome.again;
        }
        while let Some(slot) = queue.front() {
            let Some(result) = slot.result else { break };
            let (id, again) = (slot.id, slot.again);
            queue.pop_front();
            if let Some(list) = self.ready.get_mut(outcome.reactor) {
                list.push(Stored {
                    conn: outcome.conn,
                    id,
                    result,
                    again,
                });
            }
        }
        if queue.is_empty() {
            self.waiting.remove(&key);
        }
    }

    /// Posts every answer ready, one post per reactor.
    pub fn post(&mut self, mailboxes: &Arc<[Mailbox]>) {
        for (mailbox, list) in mailboxes.iter().zip(&mut self.ready) {
            if !list.is_empty() {
                mailbox.post(list, &[]);
                list.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ServerFrame, encode_server};

    fn msg(user: &str, text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let frame = ServerFrame::Msg {
            room: "#r",
            seq: 7,
            ts_ms: 1,
            user,
            text,
        };
        encode_server(&frame, &mut out);
        out
    }

    #[test]
    fn a_ring_frame_is_ours_only_with_our_author_and_text() {
        let ours = Message {
            subject: "s".into(),
            id: "n-1-2-3".into(),
            user: "alice".into(),
            text: b"hello".to_vec(),
        };
        assert_eq!(whose(&msg("alice", "hello"), &ours), Held::Ours);
        assert_eq!(whose(&msg("alice", "hello again"), &ours), Held::Other);
        assert_eq!(whose(&msg("bob", "hello"), &ours), Held::Other);
        assert_eq!(whose(b"not a frame", &ours), Held::Other);
    }

    fn outcome(key: usize, ticket: u64, result: Result<u64, ErrorCode>) -> Outcome {
        Outcome {
            reactor: 0,
            conn: ConnRef { key, serial: 1 },
            ticket,
            result,
            again: false,
            key: None,
        }
    }

    #[test]
    fn answers_leave_in_the_order_of_the_sends() {
        let mut order = Order::new(1);
        let a = ConnRef { key: 1, serial: 1 };
        let b = ConnRef { key: 2, serial: 1 };
        order.expect(0, a, 1, 10);
        order.expect(0, a, 2, 11);
        order.expect(0, b, 3, 10);
        order.expect(0, a, 4, 12);
        order.settle(outcome(1, 2, Ok(7)));
        order.settle(outcome(2, 3, Ok(1)));
        order.settle(outcome(1, 4, Err(ErrorCode::Storage)));
        let ids: Vec<(usize, u64)> = order.ready[0].iter().map(|s| (s.conn.key, s.id)).collect();
        assert_eq!(ids, [(2, 10)], "a's answers wait for its first SEND");
        order.settle(outcome(1, 1, Ok(6)));
        let got: Vec<(usize, u64, Result<u64, ErrorCode>)> = order.ready[0]
            .iter()
            .map(|s| (s.conn.key, s.id, s.result))
            .collect();
        assert_eq!(
            got,
            [
                (2, 10, Ok(1)),
                (1, 10, Ok(6)),
                (1, 11, Ok(7)),
                (1, 12, Err(ErrorCode::Storage))
            ]
        );
        assert!(order.waiting.is_empty());
    }
}
