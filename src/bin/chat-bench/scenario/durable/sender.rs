//! One sender connection's side of the `durable` load, free of I/O: which SENDs to write next
//! (at most `window` unanswered), what each answer means for the accounting, and the report it
//! all comes to. Both drivers (a thread per connection, or one poll loop for all) run it.

use std::sync::Arc;
use std::time::Instant;

use chatd::client::Reply;
use chatd::protocol::{ClientFrame, ServerFrame, encode_client};

use crate::ledger::{Ledger, Violation};
use crate::stats::{ErrorCounts, Latency};

/// What a frame from the server means to a sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Ack {
        id: u64,
        seq: u64,
    },
    /// `reference` 0: about the connection (a fatal one is followed by the close).
    Error {
        code: u16,
        reference: u64,
    },
    Msg,
    Other,
}

impl Event {
    pub fn of_frame(f: &ServerFrame<'_>) -> Event {
        match *f {
            ServerFrame::Ack { id, seq } => Event::Ack { id, seq },
            ServerFrame::Error {
                code, reference, ..
            } => Event::Error { code, reference },
            ServerFrame::Msg { .. } => Event::Msg,
            _ => Event::Other,
        }
    }

    pub fn of_reply(r: &Reply) -> Event {
        match *r {
            Reply::Ack { id, seq } => Event::Ack { id, seq },
            Reply::Error {
                code, reference, ..
            } => Event::Error { code, reference },
            Reply::Msg { .. } => Event::Msg,
            _ => Event::Other,
        }
    }
}

/// What one sender saw.
#[derive(Debug)]
pub struct Report {
    /// When its last SEND was answered (or it gave up).
    pub finished: Instant,
    pub room: String,
    pub sent: u64,
    pub acked: u64,
    pub latency: Latency,
    pub errors: ErrorCounts,
    pub seqs: Vec<u64>,
    pub violations: Vec<Violation>,
    pub failure: Option<String>,
    pub msgs: u64,
}

pub struct Sender {
    room: String,
    text: Arc<str>,
    messages: u64,
    window: usize,
    next_id: u64,
    ledger: Ledger,
    server_error: bool,
    finished: Option<Instant>,
    report: Report,
}

impl Sender {
    pub fn new(room: String, text: Arc<str>, messages: u64, window: usize) -> Sender {
        Sender {
            report: Report {
                finished: Instant::now(),
                room: room.clone(),
                sent: 0,
                acked: 0,
                latency: Latency::new(),
                errors: ErrorCounts::default(),
                seqs: Vec::with_capacity(usize::try_from(messages).unwrap_or(0)),
                violations: Vec::new(),
                failure: None,
                msgs: 0,
            },
            room,
            text,
            messages,
            window,
            next_id: 1,
            ledger: Ledger::new(messages),
            server_error: false,
            finished: None,
        }
    }

    /// Appends SENDs to `wire` until `window` are unanswered or all are out.
    pub fn fill(&mut self, wire: &mut Vec<u8>, now: Instant) {
        while self.ledger.in_flight() < self.window && self.next_id <= self.messages {
            let frame = ClientFrame::Send {
                room: &self.room,
                id: self.next_id,
                text: &self.text,
            };
            encode_client(&frame, wire);
            self.ledger.sent(self.next_id, now);
            self.next_id += 1;
            self.report.sent += 1;
        }
    }

    pub fn on_event(&mut self, ev: Event, now: Instant) {
        match ev {
            Event::Ack { id, seq } => {
                if let Some(d) = self.ledger.ack(id, now) {
                    self.report.latency.record(d);
                    self.report.seqs.push(seq);
                    self.report.acked += 1;
                }
            }
            Event::Error { code, reference } => {
                self.report.errors.add(code);
                if reference == 0 {
                    self.server_error = true;
                } else {
                    self.ledger.refuse(reference);
                }
            }
            Event::Msg => self.report.msgs += 1,
            Event::Other => {}
        }
        if self.finished.is_none() && self.ledger.done() {
            self.finished = Some(now);
        }
    }

    /// Every SEND has its answer.
    pub fn done(&self) -> bool {
        self.ledger.done()
    }

    /// Closes the books. `closed`: the server closed the connection (before or after the
    /// last answer); `failure`: the client side failed (socket error, timeout).
    pub fn finish(self, closed: bool, failure: Option<String>, now: Instant) -> Report {
        let mut r = self.report;
        r.finished = self.finished.unwrap_or(now);
        let answered = self.ledger.answered();
        let done = self.ledger.done();
        // A socket error or timeout on our side explains ids left unanswered; a close by the
        // server without a fatal ERROR does not: each such id is a lost ACK.
        let excused = self.server_error || failure.is_some();
        r.failure = failure.or_else(|| {
            (closed && !done && !self.server_error).then(|| {
                format!(
                    "the server closed the connection after answering {answered} of {} SENDs",
                    self.messages
                )
            })
        });
        r.violations = self.ledger.close(excused);
        r
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sends_in(wire: &[u8]) -> usize {
        let d = chatd::protocol::Deframer::for_server(1 << 20);
        let mut rest = wire;
        let mut n = 0;
        while let Ok(chatd::protocol::Decoded::Frame(raw)) = d.next(rest) {
            n += 1;
            rest = rest.get(raw.wire_len..).unwrap_or_default();
        }
        n
    }

    #[test]
    fn never_more_than_window_unanswered() {
        let t0 = Instant::now();
        let mut s = Sender::new("r".into(), "hi".into(), 10, 3);
        let mut wire = Vec::new();
        s.fill(&mut wire, t0);
        assert_eq!(sends_in(&wire), 3);
        wire.clear();
        s.fill(&mut wire, t0);
        assert!(wire.is_empty(), "window full");
        s.on_event(Event::Ack { id: 2, seq: 1 }, t0 + Duration::from_micros(40));
        s.fill(&mut wire, t0);
        assert_eq!(sends_in(&wire), 1, "one answer frees one slot");
    }

    #[test]
    fn a_clean_run_reports_latency_and_seqs() {
        let t0 = Instant::now();
        let mut s = Sender::new("r".into(), "hi".into(), 2, 1);
        let mut wire = Vec::new();
        s.fill(&mut wire, t0);
        s.on_event(
            Event::Ack { id: 1, seq: 7 },
            t0 + Duration::from_micros(100),
        );
        s.on_event(Event::Msg, t0);
        s.fill(&mut wire, t0);
        s.on_event(
            Event::Error {
                code: 14,
                reference: 2,
            },
            t0,
        );
        assert!(s.done());
        let r = s.finish(false, None, t0);
        assert_eq!(
            (r.sent, r.acked, r.msgs, r.seqs.as_slice()),
            (2, 1, 1, &[7][..])
        );
        assert_eq!(r.latency.percentiles().max_us, 100);
        assert_eq!(r.errors.total(), 1);
        assert!(r.violations.is_empty() && r.failure.is_none());
    }

    #[test]
    fn a_close_without_an_error_leaves_unanswered_ids_as_violations() {
        let t0 = Instant::now();
        let mut s = Sender::new("r".into(), "hi".into(), 3, 3);
        s.fill(&mut Vec::new(), t0);
        s.on_event(Event::Ack { id: 1, seq: 1 }, t0);
        let r = s.finish(true, None, t0);
        assert!(r.failure.is_some_and(|f| f.contains("1 of 3")));
        assert_eq!(
            r.violations,
            [Violation::Unanswered(2), Violation::Unanswered(3)]
        );
    }

    #[test]
    fn a_fatal_error_or_a_client_failure_excuses_unanswered_ids() {
        let t0 = Instant::now();
        let mut s = Sender::new("r".into(), "hi".into(), 2, 2);
        s.fill(&mut Vec::new(), t0);
        s.on_event(
            Event::Error {
                code: 13,
                reference: 0,
            },
            t0,
        );
        let r = s.finish(true, None, t0);
        assert!(r.violations.is_empty() && r.failure.is_none());
        let mut s = Sender::new("r".into(), "hi".into(), 2, 2);
        s.fill(&mut Vec::new(), t0);
        let r = s.finish(false, Some("timed out".into()), t0);
        assert!(r.violations.is_empty());
        assert_eq!(r.failure.as_deref(), Some("timed out"));
    }

    #[test]
    fn an_ack_after_the_last_answer_is_still_checked() {
        let t0 = Instant::now();
        let mut s = Sender::new("r".into(), "hi".into(), 1, 1);
        s.fill(&mut Vec::new(), t0);
        s.on_event(Event::Ack { id: 1, seq: 1 }, t0);
        s.on_event(Event::Ack { id: 1, seq: 2 }, t0);
        let r = s.finish(true, None, t0);
        assert_eq!(r.violations, [Violation::DuplicateAnswer(1)]);
    }
}
