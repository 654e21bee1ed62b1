//! Accounting of what one subscriber received from one publisher: each message carries the
//! publisher's sequence (1, 2, 3, ...), and a `Stream` sorts every arrival into in order,
//! late (it fills a gap left earlier: reordering), or duplicate (seen before). At the end,
//! with the number the publisher sent, what never arrived is the loss. Memory is bounded by
//! the number of gaps open at once, not by the number of messages.

use std::collections::BTreeMap;

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    InOrder,
    /// Arrived after a later seq had: reordered.
    Late,
    Duplicate,
}

/// One (subscriber, publisher) stream.
#[derive(Debug, Default, Clone)]
pub struct Stream {
    /// The seq after the highest seen so far.
    next: u64,
    /// Gaps below `next`: start -> end (exclusive), seqs not seen yet.
    gaps: BTreeMap<u64, u64>,
    pub received: u64,
    pub late: u64,
    pub duplicates: u64,
}

/// The books of a stream once closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    pub received: u64,
    pub lost: u64,
    pub reordered: u64,
    pub duplicates: u64,
}

impl Tally {
    pub fn add(&mut self, o: Tally) {
        self.received += o.received;
        self.lost += o.lost;
        self.reordered += o.reordered;
        self.duplicates += o.duplicates;
    }
}

impl Stream {
    pub fn new() -> Stream {
        Stream {
            next: 1,
            ..Stream::default()
        }
    }

    /// Sorts the arrival of `seq` (seqs start at 1; 0 is never valid and counts as a duplicate).
    pub fn arrive(&mut self, seq: u64) -> Arrival {
        let what = if seq == 0 {
            Arrival::Duplicate
        } else if seq >= self.next {
            if seq > self.next {
                self.gaps.insert(self.next, seq);
            }
            self.next = seq + 1;
            Arrival::InOrder
        } else if self.fill(seq) {
            Arrival::Late
        } else {
            Arrival::Duplicate
        };
        match what {
            Arrival::InOrder => self.received += 1,
            Arrival::Late => {
                self.received += 1;
                self.late += 1;
            }
            Arrival::Duplicate => self.duplicates += 1,
        }
        what
    }

    /// Takes `seq` out of the gap holding it; false if no gap holds it (seen before).
    fn fill(&mut self, seq: u64) -> bool {
        let Some((&start, &end)) = self.gaps.range(..=seq).next_back() else {
            return false;
        };
        if seq >= end {
            return false;
        }
        self.gaps.remove(&start);
        if start < seq {
            self.gaps.insert(start, seq);
        }
        if seq + 1 < end {
            self.gaps.insert(seq + 1, end);
        }
        true
    }

    /// Closes the books given that the publisher sent seqs `1..=sent`. Seqs above `sent` that
    /// arrived anyway are counted as duplicates (they cannot be genuine).
    pub fn close(&self, sent: u64) -> Tally {
        let mut lost: u64 = self
            .gaps
            .iter()
            .map(|(&s, &e)| e.min(sent + 1).saturating_sub(s))
            .sum();
        lost += (sent + 1).saturating_sub(self.next);
        let beyond = self.next.saturating_sub(sent + 1);
        let phantom_gaps: u64 = self
            .gaps
            .iter()
            .map(|(&s, &e)| e.saturating_sub(s.max(sent + 1)))
            .sum();
        let phantom = beyond.saturating_sub(phantom_gaps);
        Tally {
            received: self.received - phantom,
            lost,
            reordered: self.late,
            duplicates: self.duplicates + phantom,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(seqs: &[u64]) -> Stream {
        let mut s = Stream::new();
        for &q in seqs {
            s.arrive(q);
        }
        s
    }

    #[test]
    fn an_in_order_stream_balances() {
        let t = feed(&[1, 2, 3, 4]).close(4);
        assert_eq!(
            t,
            Tally {
                received: 4,
                ..Tally::default()
            }
        );
    }

    #[test]
    fn missing_seqs_in_the_middle_and_at_the_tail_are_lost() {
        let t = feed(&[1, 2, 5, 6]).close(8);
        assert_eq!((t.received, t.lost), (4, 4), "3, 4, 7, 8");
        assert_eq!((t.reordered, t.duplicates), (0, 0));
        assert_eq!(feed(&[]).close(3).lost, 3, "nothing arrived");
    }

    #[test]
    fn a_late_arrival_fills_its_gap_and_counts_as_reordered() {
        let mut s = Stream::new();
        assert_eq!(s.arrive(1), Arrival::InOrder);
        assert_eq!(s.arrive(4), Arrival::InOrder);
        assert_eq!(s.arrive(3), Arrival::Late);
        assert_eq!(s.arrive(2), Arrival::Late);
        assert_eq!(s.arrive(3), Arrival::Duplicate, "the gap is filled now");
        let t = s.close(4);
        assert_eq!(
            t,
            Tally {
                received: 4,
                lost: 0,
                reordered: 2,
                duplicates: 1
            }
        );
    }

    #[test]
    fn a_seq_in_the_middle_of_a_gap_splits_it() {
        let t = feed(&[10, 5, 5, 1]).close(10);
        assert_eq!(
            t,
            Tally {
                received: 3,
                lost: 7,
                reordered: 2,
                duplicates: 1
            }
        );
    }

    #[test]
    fn repeats_and_seq_zero_are_duplicates() {
        let t = feed(&[1, 1, 2, 2, 2, 0]).close(2);
        assert_eq!((t.received, t.duplicates, t.lost), (2, 4, 0));
    }

    #[test]
    fn seqs_beyond_what_was_sent_are_not_counted_as_received() {
        let t = feed(&[1, 2, 3, 5]).close(3);
        assert_eq!((t.received, t.duplicates, t.lost), (3, 1, 0));
    }

    #[test]
    fn tallies_add_up() {
        let mut all = Tally::default();
        all.add(feed(&[1, 3]).close(3));
        all.add(feed(&[2, 1]).close(2));
        assert_eq!(
            all,
            Tally {
                received: 4,
                lost: 1,
                reordered: 1,
                duplicates: 0
            }
        );
    }
}
