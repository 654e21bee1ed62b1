//! The per-connection SEND rate limit: a token bucket, kept as one instant.
//!
//! A bucket of `burst` tokens refilled at `rate` per second is the same thing as the
//! "generic cell rate algorithm": remember only when the bucket will be full again (`full_at`);
//! a SEND may go if that is at most `burst - 1` token intervals away, and each SEND pushes it
//! one interval later. So the limit costs a connection 8 bytes and no floating point, and
//! decides exactly as the bucket would. It must never sleep or look at a clock itself: the
//! caller says what time it is.

use std::time::Instant;

use super::stamp::Stamp;

const NANOS_PER_SEC: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    /// When the bucket will hold all its tokens again; in the past while it is full.
    full_at: Stamp,
}

impl TokenBucket {
    /// A full bucket (of whatever burst the limits say when it is used).
    pub fn new(now: Instant) -> TokenBucket {
        TokenBucket {
            full_at: Stamp::of(now),
        }
    }

    /// Takes one token if there is one. `rate` tokens flow in per second, up to `burst`;
    /// a rate of 0 means no limit.
    pub fn take(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let now = Stamp::of(now);
        // One token's worth of time; at most 2^24 per second (the CLI's bound), so never 0.
        let interval = (NANOS_PER_SEC / u64::from(rate)).max(1);
        let slack = interval.saturating_mul(u64::from(burst.max(1) - 1));
        let full_at = self.full_at.max(now);
        if full_at.nanos_since(now) > slack {
            return false;
        }
        self.full_at = full_at.plus_nanos(interval);
        true
    }

    /// Gives back the token a SEND took that turned out not to count (a retry of a message
    /// already stored). A bucket given back to past full is simply full.
    pub fn give_back(&mut self, rate: u32) {
        if rate == 0 {
            return;
        }
        let interval = (NANOS_PER_SEC / u64::from(rate)).max(1);
        self.full_at = self.full_at.minus_nanos(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill_at_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(t0);
        assert!((0..3).all(|_| bucket.take(t0, 10, 3)));
        assert!(!bucket.take(t0, 10, 3));
        // 10 per second: one token every 100 ms.
        assert!(!bucket.take(t0 + Duration::from_millis(50), 10, 3));
        assert!(bucket.take(t0 + Duration::from_millis(160), 10, 3));
        assert!(!bucket.take(t0 + Duration::from_millis(170), 10, 3));
    }

    #[test]
    fn a_token_comes_back_exactly_one_interval_later() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(t0);
        assert!(bucket.take(t0, 4, 1));
        assert!(!bucket.take(t0 + Duration::from_nanos(249_999_999), 4, 1));
        assert!(bucket.take(t0 + Duration::from_millis(250), 4, 1));
    }

    #[test]
    fn a_token_given_back_can_be_taken_again_and_never_overfills() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(t0);
        assert!(bucket.take(t0, 10, 2));
        assert!(bucket.take(t0, 10, 2));
        assert!(!bucket.take(t0, 10, 2));
        bucket.give_back(10);
        assert!(bucket.take(t0, 10, 2));
        assert!(!bucket.take(t0, 10, 2));
        // Given back more than was taken: full, and no fuller.
        for _ in 0..5 {
            bucket.give_back(10);
        }
        assert!(bucket.take(t0, 10, 2));
        assert!(bucket.take(t0, 10, 2));
        assert!(!bucket.take(t0, 10, 2));
    }

    #[test]
    fn refill_never_exceeds_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(t0);
        let later = t0 + Duration::from_secs(3600);
        assert!(bucket.take(later, 10, 2));
        assert!(bucket.take(later, 10, 2));
        assert!(!bucket.take(later, 10, 2));
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(t0);
        assert!((0..1000).all(|_| bucket.take(t0, 0, 0)));
    }

    #[test]
    fn a_steady_sender_gets_the_rate_and_no_more() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(t0);
        // 1000 attempts per second for 10 s at a rate of 20 and a burst of 5: the burst,
        // then 20 per second.
        let taken = (0..10_000)
            .filter(|ms| bucket.take(t0 + Duration::from_millis(*ms), 20, 5))
            .count();
        assert_eq!(taken, 5 + 200 - 1);
    }
}
