//! The accounting a load run must balance: every SEND id gets exactly one answer (an ACK or
//! an ERROR naming it), and no seq of a room is handed out twice. A `Ledger` keeps one
//! connection's ids; `repeated_seqs` checks the seqs that all connections saw ACKed. Pure
//! bookkeeping: the caller reads the clock and passes instants in.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// Where one SEND id stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Unsent,
    InFlight(Instant),
    Acked,
    Refused,
}

/// Something that must never happen in a correct run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// An answer for an id this connection never sent.
    UnknownId(u64),
    /// A second answer (ACK or ERROR) for an id.
    DuplicateAnswer(u64),
    /// A sent id that got no answer although the connection did not end in an error.
    Unanswered(u64),
    /// Two ACKs carried the same seq in one room.
    RepeatedSeq { room: String, seq: u64 },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::UnknownId(id) => write!(f, "answer for id {id}, which was never sent"),
            Violation::DuplicateAnswer(id) => write!(f, "a second answer for id {id}"),
            Violation::Unanswered(id) => write!(f, "id {id} was sent and never answered"),
            Violation::RepeatedSeq { room, seq } => {
                write!(f, "seq {seq} of room {room} was ACKed twice")
            }
        }
    }
}

/// One connection's SEND ids, `1..=count`.
#[derive(Debug)]
pub struct Ledger {
    slots: Vec<Slot>,
    in_flight: usize,
    answered: u64,
    violations: Vec<Violation>,
}

impl Ledger {
    pub fn new(count: u64) -> Ledger {
        let n = usize::try_from(count).expect("id count fits in memory");
        Ledger {
            slots: vec![Slot::Unsent; n],
            in_flight: 0,
            answered: 0,
            violations: Vec::new(),
        }
    }

    /// SENDs out and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Ids answered once (ACK or ERROR).
    pub fn answered(&self) -> u64 {
        self.answered
    }

    /// Whether every id has been answered.
    pub fn done(&self) -> bool {
        self.answered == self.slots.len() as u64
    }

    pub fn sent(&mut self, id: u64, at: Instant) {
        if let Some(slot) = self.slot(id)
            && *slot == Slot::Unsent
        {
            *slot = Slot::InFlight(at);
            self.in_flight += 1;
        }
    }

    /// An ACK for `id` arrived at `at`: the latency since it was sent, or `None` for an ACK
    /// that breaks the accounting (recorded as a violation).
    pub fn ack(&mut self, id: u64, at: Instant) -> Option<Duration> {
        self.answer(id, Slot::Acked)
            .map(|sent| at.saturating_duration_since(sent))
    }

    /// An ERROR whose ref is `id` arrived; false if it breaks the accounting.
    pub fn refuse(&mut self, id: u64) -> bool {
        self.answer(id, Slot::Refused).is_some()
    }

    fn answer(&mut self, id: u64, to: Slot) -> Option<Instant> {
        let outcome = match self.slot(id) {
            Some(slot) => match *slot {
                Slot::InFlight(sent) => {
                    *slot = to;
                    Ok(sent)
                }
                Slot::Unsent => Err(Violation::UnknownId(id)),
                Slot::Acked | Slot::Refused => Err(Violation::DuplicateAnswer(id)),
            },
            None => Err(Violation::UnknownId(id)),
        };
        match outcome {
            Ok(sent) => {
                self.in_flight -= 1;
                self.answered += 1;
                Some(sent)
            }
            Err(v) => {
                self.violations.push(v);
                None
            }
        }
    }

    /// Closes the books. `ended_in_error`: the server closed the connection with a fatal
    /// ERROR, which explains ids still in flight; otherwise each of them is a violation.
    pub fn close(mut self, ended_in_error: bool) -> Vec<Violation> {
        if !ended_in_error {
            for (i, slot) in self.slots.iter().enumerate() {
                if matches!(slot, Slot::InFlight(_)) {
                    self.violations.push(Violation::Unanswered(i as u64 + 1));
                }
            }
        }
        self.violations
    }

    fn slot(&mut self, id: u64) -> Option<&mut Slot> {
        let i = usize::try_from(id.checked_sub(1)?).ok()?;
        self.slots.get_mut(i)
    }
}

/// Seqs that appear more than once for a room, given every ACKed `(room, seq)` of a run.
pub fn repeated_seqs(acked: &BTreeMap<String, Vec<u64>>) -> Vec<Violation> {
    let mut out = Vec::new();
    for (room, seqs) in acked {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        for pair in sorted.windows(2) {
            if let [a, b] = pair
                && a == b
            {
                out.push(Violation::RepeatedSeq {
                    room: room.clone(),
                    seq: *a,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_answered_once_balances() {
        let t0 = Instant::now();
        let mut l = Ledger::new(3);
        for id in 1..=3 {
            l.sent(id, t0);
        }
        assert_eq!(l.in_flight(), 3);
        let later = t0 + Duration::from_micros(250);
        assert_eq!(l.ack(1, later), Some(Duration::from_micros(250)));
        assert!(l.refuse(2));
        assert!(l.ack(3, later).is_some());
        assert!(l.done());
        assert_eq!((l.in_flight(), l.answered()), (0, 3));
        assert_eq!(l.close(false), []);
    }

    #[test]
    fn a_second_ack_for_an_id_is_a_duplicate() {
        let t0 = Instant::now();
        let mut l = Ledger::new(2);
        l.sent(1, t0);
        assert!(l.ack(1, t0).is_some());
        assert_eq!(l.ack(1, t0), None);
        assert_eq!(l.answered(), 1, "a duplicate does not count as an answer");
        assert_eq!(l.close(false), [Violation::DuplicateAnswer(1)]);
    }

    #[test]
    fn an_error_after_an_ack_is_a_duplicate() {
        let t0 = Instant::now();
        let mut l = Ledger::new(1);
        l.sent(1, t0);
        l.ack(1, t0);
        assert!(!l.refuse(1));
        assert_eq!(l.close(false), [Violation::DuplicateAnswer(1)]);
    }

    #[test]
    fn answers_for_ids_never_sent_are_unknown() {
        let t0 = Instant::now();
        let mut l = Ledger::new(2);
        assert_eq!(l.ack(2, t0), None, "in range but not sent yet");
        assert_eq!(l.ack(0, t0), None);
        assert!(!l.refuse(7));
        assert_eq!(
            l.close(false),
            [
                Violation::UnknownId(2),
                Violation::UnknownId(0),
                Violation::UnknownId(7)
            ]
        );
    }

    #[test]
    fn missing_acks_are_reported_unless_the_server_ended_the_connection() {
        let t0 = Instant::now();
        let mut books = [Ledger::new(3), Ledger::new(3)];
        for l in &mut books {
            for id in 1..=3 {
                l.sent(id, t0);
            }
            l.ack(2, t0);
        }
        let [a, b] = books;
        assert_eq!(
            a.close(false),
            [Violation::Unanswered(1), Violation::Unanswered(3)]
        );
        assert_eq!(b.close(true), []);
    }

    #[test]
    fn sending_an_id_twice_keeps_one_in_flight() {
        let t0 = Instant::now();
        let mut l = Ledger::new(1);
        l.sent(1, t0);
        l.sent(1, t0);
        assert_eq!(l.in_flight(), 1);
    }

    #[test]
    fn repeated_seqs_are_found_per_room() {
        let mut acked = BTreeMap::new();
        acked.insert("a".to_string(), vec![3, 1, 2, 3]);
        acked.insert("b".to_string(), vec![1, 2, 3]);
        assert_eq!(
            repeated_seqs(&acked),
            [Violation::RepeatedSeq {
                room: "a".into(),
                seq: 3
            }]
        );
        acked.insert("a".to_string(), vec![1, 2, 3]);
        assert_eq!(repeated_seqs(&acked), []);
    }
}
