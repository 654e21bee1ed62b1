//! One sender connection's side of the cluster load, free of I/O: it keeps at most `window`
//! SENDs unanswered for as long as the run says to send, names each message by its sender and
//! id in the text (so the read-back can tell every message apart), and accounts for what
//! comes back: ACKs (with their latency and seq), ERRORs that name a SEND (unknown outcome:
//! the message may still be stored), and anything that breaks the contract.
//!
//! It never reads the clock: the driver passes instants in.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chatd::protocol::{ClientFrame, encode_client};

use crate::stats::{ErrorCounts, Latency};

/// One ACKed SEND: which room and seq the daemon gave it, and who sent it with which id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    pub room: u32,
    pub seq: u64,
    pub sender: u32,
    pub id: u64,
    /// When the ACK was read, in ms since the Unix epoch: to find a lost one in the servers'
    /// logs.
    pub at_ms: u64,
}

/// The wall clock in ms since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The text of message `id` of `sender`: `SENDER:ID ` and `x` up to `size` bytes.
pub fn text_of(sender: u32, id: u64, size: usize, out: &mut String) {
    out.clear();
    let _ = write!(out, "{sender}:{id} ");
    while out.len() < size {
        out.push('x');
    }
}

/// The sender and id a message's text names; `None` if it is not one of ours.
pub fn parse_text(text: &str) -> Option<(u32, u64)> {
    let head = text.split(' ').next()?;
    let (sender, id) = head.split_once(':')?;
    Some((sender.parse().ok()?, id.parse().ok()?))
}

/// What one sender saw, besides its ACKs (which go to the run's list as they come).
#[derive(Debug, Default)]
pub struct Tally {
    pub sent: u64,
    pub acked: u64,
    pub latency: Latency,
    pub errors: ErrorCounts,
    /// ERRORs naming a SEND: those messages have an unknown outcome.
    pub refused: u64,
    /// Answers for ids not in flight (never sent, or answered already).
    pub stray: u64,
    /// MSG frames of the room received.
    pub msgs: u64,
}

pub struct Sender {
    pub index: u32,
    pub room: u32,
    window: usize,
    size: usize,
    next_id: u64,
    in_flight: BTreeMap<u64, Instant>,
    pub tally: Tally,
    text: String,
}

impl Sender {
    pub fn new(index: u32, room: u32, window: usize, size: usize) -> Sender {
        Sender {
            index,
            room,
            window,
            size,
            next_id: 1,
            in_flight: BTreeMap::new(),
            tally: Tally::default(),
            text: String::with_capacity(size),
        }
    }

    /// Appends SENDs for `room` to `wire` until `window` are unanswered.
    pub fn fill(&mut self, room: &str, wire: &mut Vec<u8>, now: Instant) {
        while self.in_flight.len() < self.window {
            let id = self.next_id;
            text_of(self.index, id, self.size, &mut self.text);
            let frame = ClientFrame::Send {
                room,
                id,
                text: &self.text,
            };
            encode_client(&frame, wire);
            self.in_flight.insert(id, now);
            self.next_id += 1;
            self.tally.sent += 1;
        }
    }

    /// An ACK: its record when it answers a SEND in flight.
    pub fn ack(&mut self, id: u64, seq: u64, now: Instant) -> Option<Acked> {
        let Some(sent) = self.in_flight.remove(&id) else {
            self.tally.stray += 1;
            return None;
        };
        self.tally
            .latency
            .record(now.saturating_duration_since(sent));
        self.tally.acked += 1;
        Some(Acked {
            room: self.room,
            seq,
            sender: self.index,
            id,
            at_ms: unix_ms(),
        })
    }

    /// An ERROR; `reference` 0 is about the connection, anything else names a SEND.
    pub fn error(&mut self, code: u16, reference: u64) {
        self.tally.errors.add(code);
        if reference == 0 {
            return;
        }
        if self.in_flight.remove(&reference).is_some() {
            self.tally.refused += 1;
        } else {
            self.tally.stray += 1;
        }
    }

    /// SENDs out and not answered.
    pub fn unanswered(&self) -> usize {
        self.in_flight.len()
    }
}

/// The longest time with no ACK at all, across every sender: write stalls, such as a NATS
/// server's death and the election after it.
#[derive(Debug, Clone, Copy)]
pub struct Stall {
    last: Instant,
    pub longest: Duration,
    /// When the longest one ended, from the start.
    pub ended_at: Duration,
    start: Instant,
}

impl Stall {
    pub fn new(start: Instant) -> Stall {
        Stall {
            last: start,
            longest: Duration::ZERO,
            ended_at: Duration::ZERO,
            start,
        }
    }

    /// An ACK came at `now`.
    pub fn ack(&mut self, now: Instant) {
        let gap = now.saturating_duration_since(self.last);
        if gap > self.longest {
            self.longest = gap;
            self.ended_at = now.saturating_duration_since(self.start);
        }
        self.last = self.last.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sends_in(wire: &[u8]) -> Vec<(u64, String)> {
        let d = chatd::protocol::Deframer::for_server(1 << 20);
        let mut rest = wire;
        let mut out = Vec::new();
        while let Ok(chatd::protocol::Decoded::Frame(raw)) = d.next(rest) {
            if let Ok(ClientFrame::Send { id, text, .. }) =
                chatd::protocol::codec::parse_client(&raw)
            {
                out.push((id, text.to_string()));
            }
            rest = rest.get(raw.wire_len..).unwrap_or_default();
        }
        out
    }

    #[test]
    fn a_text_names_its_sender_and_id_and_has_the_size_asked_for() {
        let mut t = String::new();
        text_of(17, 4242, 40, &mut t);
        assert_eq!(t.len(), 40);
        assert_eq!(parse_text(&t), Some((17, 4242)));
        text_of(1, 2, 1, &mut t);
        assert_eq!(t, "1:2 ");
        assert_eq!(parse_text("hello"), None);
        assert_eq!(parse_text("1:x y"), None);
    }

    #[test]
    fn the_window_bounds_what_is_unanswered_and_an_answer_frees_a_slot() {
        let t0 = Instant::now();
        let mut s = Sender::new(3, 1, 2, 10);
        let mut wire = Vec::new();
        s.fill("r", &mut wire, t0);
        assert_eq!(
            sends_in(&wire).iter().map(|s| s.0).collect::<Vec<_>>(),
            [1, 2]
        );
        wire.clear();
        s.fill("r", &mut wire, t0);
        assert!(wire.is_empty(), "window full");
        let a = s.ack(2, 9, t0 + Duration::from_micros(50));
        assert_eq!(
            a.map(|a| (a.room, a.seq, a.sender, a.id)),
            Some((1, 9, 3, 2))
        );
        assert!(a.is_some_and(|a| a.at_ms > 0), "the ACK is stamped");
        s.fill("r", &mut wire, t0);
        let sent = sends_in(&wire);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent.first().and_then(|s| parse_text(&s.1)), Some((3, 3)));
        assert_eq!(s.tally.latency.percentiles().max_us, 50);
    }

    #[test]
    fn errors_naming_a_send_free_it_and_strays_are_counted() {
        let t0 = Instant::now();
        let mut s = Sender::new(0, 0, 2, 10);
        s.fill("r", &mut Vec::new(), t0);
        s.error(14, 1);
        s.error(14, 1);
        s.error(13, 0);
        assert_eq!(s.ack(7, 1, t0), None);
        assert_eq!((s.tally.refused, s.tally.stray, s.unanswered()), (1, 2, 1));
        assert_eq!(s.tally.errors.total(), 3);
    }

    #[test]
    fn the_longest_stall_is_the_largest_gap_between_acks() {
        let t0 = Instant::now();
        let mut st = Stall::new(t0);
        for ms in [5, 10, 400, 410, 420] {
            st.ack(t0 + Duration::from_millis(ms));
        }
        assert_eq!(st.longest, Duration::from_millis(390));
        assert_eq!(st.ended_at, Duration::from_millis(400));
    }
}
