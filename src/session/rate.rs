//! A token bucket: the per-connection SEND rate limit.

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(burst),
            refilled_at: now,
        }
    }

    /// Takes one token if there is one. `rate` tokens flow in per second, up to `burst`;
    /// a rate of 0 means no limit.
    pub fn take(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst.max(1)));
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill_at_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(3, t0);
        assert!((0..3).all(|_| bucket.take(t0, 10, 3)));
        assert!(!bucket.take(t0, 10, 3));
        // 10 per second: one token every 100 ms.
        assert!(!bucket.take(t0 + Duration::from_millis(50), 10, 3));
        assert!(bucket.take(t0 + Duration::from_millis(160), 10, 3));
        assert!(!bucket.take(t0 + Duration::from_millis(170), 10, 3));
    }

    #[test]
    fn refill_never_exceeds_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(2, t0);
        let later = t0 + Duration::from_secs(3600);
        assert!(bucket.take(later, 10, 2));
        assert!(bucket.take(later, 10, 2));
        assert!(!bucket.take(later, 10, 2));
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(0, t0);
        assert!((0..1000).all(|_| bucket.take(t0, 0, 0)));
    }
}
