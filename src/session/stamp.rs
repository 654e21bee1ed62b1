//! Instants in 8 bytes, for the timers every connection carries.
//!
//! A `std::time::Instant` takes 16 bytes; a session holds several, so at tens of thousands of
//! idle connections they are a good part of the server's memory. A [`Stamp`] is the same
//! instant as whole nanoseconds on one process-wide scale, in a `NonZeroU64`: exact (no
//! rounding, so a deadline fires at the very instant it would have with `Instant`), ordered,
//! and with a niche, so that an `Option<Stamp>` is 8 bytes too. It must never be used to talk
//! to the outside world: it means nothing outside this process.

use std::num::NonZeroU64;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The first instant ever converted; the scale is anchored there.
static ANCHOR: OnceLock<Instant> = OnceLock::new();

/// Where the anchor sits on the scale: 2^62 ns (about 146 years) from zero, so that every
/// instant a server run meets, however long it runs and including those taken a little before
/// the anchor, is a positive number of nanoseconds that never reaches zero or overflows.
const ANCHOR_NANOS: u64 = 1 << 62;

/// An instant, as nanoseconds on this process's own scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(NonZeroU64);

impl Stamp {
    /// `t` on the scale; exact for any instant within ~146 years of the first one converted.
    pub fn of(t: Instant) -> Stamp {
        let anchor = *ANCHOR.get_or_init(|| t);
        let nanos = match t.checked_duration_since(anchor) {
            Some(after) => ANCHOR_NANOS.saturating_add(nanos(after)),
            None => ANCHOR_NANOS.saturating_sub(nanos(anchor.duration_since(t))),
        };
        Stamp(NonZeroU64::new(nanos).unwrap_or(NonZeroU64::MIN))
    }

    /// `d` later, saturating at the end of the scale.
    #[must_use]
    pub fn plus(self, d: Duration) -> Stamp {
        Stamp(self.0.saturating_add(nanos(d)))
    }

    /// `nanos` nanoseconds later, saturating at the end of the scale.
    #[must_use]
    pub fn plus_nanos(self, nanos: u64) -> Stamp {
        Stamp(self.0.saturating_add(nanos))
    }

    /// `nanos` nanoseconds earlier, saturating at the start of the scale.
    #[must_use]
    pub fn minus_nanos(self, nanos: u64) -> Stamp {
        Stamp(NonZeroU64::new(self.0.get().saturating_sub(nanos)).unwrap_or(NonZeroU64::MIN))
    }

    /// How long after `earlier` this is; zero if it is not later (as
    /// `Instant::saturating_duration_since`).
    pub fn since(self, earlier: Stamp) -> Duration {
        Duration::from_nanos(self.nanos_since(earlier))
    }

    /// Like [`since`](Stamp::since), in nanoseconds.
    pub fn nanos_since(self, earlier: Stamp) -> u64 {
        self.0.get().saturating_sub(earlier.0.get())
    }
}

/// Whole nanoseconds in `d`, saturating (u64 nanoseconds cover 584 years).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

// An optional instant costs a connection no more than an instant.
const _: () = assert!(std::mem::size_of::<Option<Stamp>>() == 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_matches_instant_exactly() {
        let t0 = Instant::now();
        let d = Duration::from_nanos(5_000_000_001);
        assert_eq!(Stamp::of(t0 + d), Stamp::of(t0).plus(d));
        assert_eq!(Stamp::of(t0 + d).since(Stamp::of(t0)), d);
        assert!(Stamp::of(t0 + d) > Stamp::of(t0 + d - Duration::from_nanos(1)));
    }

    #[test]
    fn instants_before_the_anchor_keep_their_order_and_distance() {
        let now = Instant::now();
        let earlier = now.checked_sub(Duration::from_secs(3600));
        let Some(earlier) = earlier else {
            eprintln!("SKIPPED: this clock cannot go an hour back");
            return;
        };
        // This test process is younger than an hour: `earlier` precedes the anchor.
        assert!(Stamp::of(earlier) < Stamp::of(now));
        assert_eq!(
            Stamp::of(now).since(Stamp::of(earlier)),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn since_a_later_stamp_is_zero() {
        let t0 = Instant::now();
        let later = Stamp::of(t0 + Duration::from_secs(1));
        assert_eq!(Stamp::of(t0).since(later), Duration::ZERO);
    }
}
