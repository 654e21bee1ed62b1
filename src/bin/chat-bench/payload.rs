//! The text every pub/sub message carries, so that a subscriber can account for it on its own:
//! `PUBLISHER SEQ SENT_NS ` followed by filler up to the requested size. `SENT_NS` counts
//! nanoseconds on the bench's monotonic clock (`Clock`), which publishers and subscribers in
//! one process share, so end-to-end latency is receive time minus send time.

use std::fmt::Write as _;
use std::time::Instant;

/// The process-wide time base messages are stamped against.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            base: Instant::now(),
        }
    }

    /// Nanoseconds from the base to `at` (0 for instants before it).
    pub fn ns(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// What a message says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// Writes the message text for `stamp`, padded with `x` to at least `size` bytes.
pub fn encode(stamp: Stamp, size: usize, out: &mut String) {
    out.clear();
    let _ = write!(out, "{} {} {} ", stamp.publisher, stamp.seq, stamp.sent_ns);
    while out.len() < size {
        out.push('x');
    }
}

/// Reads the stamp back; `None` if the text is not one of ours.
pub fn decode(text: &[u8]) -> Option<Stamp> {
    let mut words = text.splitn(4, |b| *b == b' ');
    let mut num = || -> Option<u64> { std::str::from_utf8(words.next()?).ok()?.parse().ok() };
    let publisher = u32::try_from(num()?).ok()?;
    let seq = num()?;
    let sent_ns = num()?;
    Some(Stamp {
        publisher,
        seq,
        sent_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_the_round_trip_and_the_padding() {
        let s = Stamp {
            publisher: 7,
            seq: 123_456,
            sent_ns: 9_876_543_210,
        };
        let mut text = String::new();
        encode(s, 100, &mut text);
        assert_eq!(text.len(), 100);
        assert_eq!(decode(text.as_bytes()), Some(s));
        encode(s, 1, &mut text);
        assert_eq!(decode(text.as_bytes()), Some(s), "size below the header");
    }

    #[test]
    fn foreign_text_is_not_a_stamp() {
        assert_eq!(decode(b"hello world"), None);
        assert_eq!(decode(b"1 2"), None);
        assert_eq!(decode(b""), None);
    }
}
