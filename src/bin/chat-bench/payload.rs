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

/// Reads the stamp back; `None` if the text is not one of ours. Only the three numbers at the
/// front are read, as ASCII digits: the filler after them is never looked at, so a delivery
/// costs the same whatever its size (this runs for every message every subscriber gets).
pub fn decode(text: &[u8]) -> Option<Stamp> {
    let (publisher, rest) = number(text)?;
    let (seq, rest) = number(rest)?;
    let (sent_ns, _) = number(rest)?;
    Some(Stamp {
        publisher: u32::try_from(publisher).ok()?,
        seq,
        sent_ns,
    })
}

/// The number at the front of `text`, which a space or the end of the text must end, and what
/// follows that space.
fn number(text: &[u8]) -> Option<(u64, &[u8])> {
    let (n, len) = leading_digits(text)?;
    match text.get(len..)?.split_first() {
        None => Some((n, &[])),
        Some((b' ', rest)) => Some((n, rest)),
        Some(_) => None,
    }
}

/// The number `v` spells in ASCII decimal digits, nothing else (no sign, no space); `None` if
/// it is empty, holds anything but digits, or does not fit a u64. With `decode`, the number
/// parser of the receive path: stamps, RESP lengths and NATS sizes.
pub fn digits(v: &[u8]) -> Option<u64> {
    leading_digits(v)
        .filter(|&(_, len)| len == v.len())
        .map(|(n, _)| n)
}

/// The value of the ASCII digits at the front of `v` and how many there are; `None` if there
/// are none or they do not fit a u64.
pub fn leading_digits(v: &[u8]) -> Option<(u64, usize)> {
    let mut n: u64 = 0;
    let mut len = 0;
    // Eight at a time while n * 10^8 cannot overflow (n has at most 11 digits): a stamp's
    // SENT_NS alone has 10 or more.
    while len <= 11 {
        let Some(eight) = v.get(len..).and_then(|r| r.first_chunk::<8>()) else {
            break;
        };
        let Some(x) = eight_digits(*eight) else {
            break;
        };
        n = n * 100_000_000 + x;
        len += 8;
    }
    for &b in v.get(len..).unwrap_or_default() {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        // No 19-digit number reaches u64::MAX (about 1.8e19), so only the digits after the
        // 19th need the checked (slower, a chain of overflow tests) steps.
        n = if len < 19 {
            n * 10 + u64::from(d)
        } else {
            n.checked_mul(10)?.checked_add(u64::from(d))?
        };
        len += 1;
    }
    (len > 0).then_some((n, len))
}

/// The value of 8 ASCII digits, the first the most significant; `None` if any byte is not a
/// digit. All eight are checked and combined at once, as one u64 (SWAR).
fn eight_digits(chunk: [u8; 8]) -> Option<u64> {
    const HIGH: u64 = 0xf0f0_f0f0_f0f0_f0f0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    let v = u64::from_le_bytes(chunk);
    // A digit's high nibble is 3, and stays 3 when 6 is added (0x3a..=0x3f become 0x4_).
    // Adding 6 to a byte 0x30..=0x3f never carries into the next byte.
    if v & HIGH != ZEROS || v.wrapping_add(0x0606_0606_0606_0606) & HIGH != ZEROS {
        return None;
    }
    // Each byte now holds its digit, the first digit in the lowest byte.
    let d = v - ZEROS;
    // Byte 2i becomes 10 * digit 2i + digit 2i+1 (at most 99: nothing carries).
    let pairs = d * 10 + (d >> 8);
    // Bytes 0 and 4 (pairs 0 and 2) and bytes 2 and 6 (pairs 1 and 3), weighted so that bits
    // 32..64 of the sum hold pair0 * 10^6 + pair1 * 10^4 + pair2 * 100 + pair3 (< 10^8).
    const PAIRS: u64 = 0x0000_00ff_0000_00ff;
    let high = (pairs & PAIRS).wrapping_mul(100 + (1_000_000 << 32));
    let low = ((pairs >> 16) & PAIRS).wrapping_mul(1 + (10_000 << 32));
    Some(high.wrapping_add(low) >> 32)
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
        assert_eq!(decode(b"1 2 3x "), None, "a letter in a number");
        assert_eq!(decode(b"1  2 3 "), None, "an empty word");
        assert_eq!(decode(b"+1 2 3 "), None, "a sign");
        assert_eq!(decode(b"4294967296 2 3 "), None, "publisher past u32");
        assert_eq!(decode(b"1 18446744073709551616 3 "), None, "seq past u64");
    }

    #[test]
    fn only_the_three_numbers_at_the_front_are_read() {
        let s = Stamp {
            publisher: 4_294_967_295,
            seq: 18_446_744_073_709_551_615,
            sent_ns: 0,
        };
        assert_eq!(
            decode(b"4294967295 18446744073709551615 0 \xff\xfe not UTF-8 at all"),
            Some(s),
            "the filler is never validated"
        );
        assert_eq!(
            decode(b"4294967295 18446744073709551615 0"),
            Some(s),
            "no filler"
        );
    }

    proptest::proptest! {
        /// `str::parse` is the oracle, over every length up to past u64, leading zeros, and
        /// whatever byte ends the digits.
        #[test]
        fn leading_digits_agree_with_str_parse(
            digit_bytes in proptest::collection::vec(b'0'..=b'9', 0..24),
            zeros in 0usize..4,
            end in proptest::prelude::any::<u8>(),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..9),
        ) {
            let mut v = vec![b'0'; zeros];
            v.extend_from_slice(&digit_bytes);
            let len = v.len();
            let want = std::str::from_utf8(&v).ok().and_then(|s| s.parse::<u64>().ok());
            let mut text = v.clone();
            text.push(end);
            text.extend_from_slice(&tail);
            proptest::prop_assert_eq!(digits(&v), want);
            if !end.is_ascii_digit() {
                proptest::prop_assert_eq!(leading_digits(&text), want.map(|n| (n, len)));
            }
        }

        #[test]
        fn eight_digits_agree_with_str_parse(chunk in proptest::prelude::any::<[u8; 8]>(), digit_chunk in proptest::prelude::any::<[u8; 8]>()) {
            let as_digits = digit_chunk.map(|b| b'0' + b % 10);
            for c in [chunk, as_digits] {
                let want = std::str::from_utf8(&c)
                    .ok()
                    .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok());
                proptest::prop_assert_eq!(eight_digits(c), want, "{:?}", c);
            }
        }
    }

    #[test]
    fn eight_digits_refuse_each_near_miss_in_each_place() {
        assert_eq!(eight_digits(*b"12345678"), Some(12_345_678));
        assert_eq!(eight_digits(*b"00000000"), Some(0));
        assert_eq!(eight_digits(*b"99999999"), Some(99_999_999));
        for at in 0..8 {
            for bad in [b'/', b':', b'?', b' ', 0x00, 0x3f, 0xb5, 0xff, b'a'] {
                let mut c = *b"99999999";
                if let Some(b) = c.get_mut(at) {
                    *b = bad;
                }
                assert_eq!(eight_digits(c), None, "{bad:#x} at {at}");
            }
        }
    }

    #[test]
    fn digits_are_decimal_ascii_that_fits() {
        assert_eq!(digits(b"0"), Some(0));
        assert_eq!(digits(b"0042"), Some(42));
        assert_eq!(digits(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(
            digits(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        assert_eq!(
            digits(b"00000000000000000000000001"),
            Some(1),
            "zeros do not overflow"
        );
        assert_eq!(
            digits(b"1234567890123456789"),
            Some(1_234_567_890_123_456_789)
        );
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"99999999999999999999",
            b"-1",
            b" 1",
            b"1 ",
            b"1a",
            b"/",
            b":",
        ] {
            assert_eq!(digits(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
