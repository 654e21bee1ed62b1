//! The dedupe table: for every `(user, client)` that stored a message in the last 24 hours,
//! the last [`WINDOW`] message ids it stored and the seq each was stored as, so that a SEND
//! retried across a reconnect (protocol version 2, `client ≠ 0`) is answered with its old seq
//! instead of being stored twice.
//!
//! It is owned by the sequencer thread alone, which consults it when it takes a batch and
//! fills it only after the batch is in the log; recovery rebuilds it from the keys the log's
//! records carry. It must never answer `Stored` for a key the log does not hold, never grow
//! past a fixed size per pair (at most [`PAIR_BYTES`] with the map's own overhead), and never
//! do more than a sweep a minute of work that is not asked for by a SEND.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Ids remembered per `(user, client)`: the protocol promises at least 64.
pub const WINDOW: usize = 64;

/// How long a pair that stores nothing is remembered.
pub const KEEP_MS: u64 = 24 * 60 * 60 * 1000;

/// Sweeps for expired pairs run at most this often: a sweep walks the whole table.
pub const SWEEP_EVERY_MS: u64 = 60 * 1000;

/// The most one active pair may cost, its share of the map included (issue 16).
pub const PAIR_BYTES: usize = 1024;

/// Wall-clock ms since the Unix epoch, the clock of records' `ts_ms` and of expiry.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Who sent a message, on a connection that named its client: with the SEND's id, the key
/// that names the message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SendKey {
    /// The user's name (the users table's `Arc`, so a key costs no copy of it).
    pub user: Arc<str>,
    pub client: NonZeroU64,
}

/// What the table knows of a SEND's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Already stored, as this seq: answer ACK with it and store nothing.
    Stored(u64),
    /// Not stored as far as the table can tell: store it.
    New,
    /// Below the smallest id still remembered and not remembered: the table cannot tell
    /// whether it was stored (STALE_ID).
    Stale,
}

/// The last ids one pair stored, kept sorted, as offsets from `base` so that 64 of them take
/// 256 bytes rather than 512. Ids that a client spreads over more than `u32::MAX` are kept
/// only as far as they fit above the newest: a client numbering `previous + 1` never comes
/// near that.
#[derive(Debug, Clone)]
struct Window {
    base: u64,
    /// Wall-clock ms of the pair's last store: it expires [`KEEP_MS`] after.
    last_ms: u64,
    len: u8,
    offsets: [u32; WINDOW],
    seqs: [u64; WINDOW],
}

// The compact layout the size budget is counted on; it must not grow by accident.
const _: () = assert!(std::mem::size_of::<Window>() == 792);

impl Window {
    fn new() -> Window {
        Window {
            base: 0,
            last_ms: 0,
            len: 0,
            offsets: [0; WINDOW],
            seqs: [0; WINDOW],
        }
    }

    fn offsets(&self) -> &[u32] {
        self.offsets
            .get(..usize::from(self.len))
            .unwrap_or_default()
    }

    /// The smallest id remembered.
    fn floor(&self) -> Option<u64> {
        self.offsets().first().map(|&o| self.base + u64::from(o))
    }

    fn newest(&self) -> Option<u64> {
        self.offsets().last().map(|&o| self.base + u64::from(o))
    }

    /// Where `id` is (Ok) or would go (Err) among the kept ids.
    fn find(&self, id: u64) -> Result<usize, usize> {
        if id < self.base {
            return Err(0);
        }
        match u32::try_from(id - self.base) {
            Ok(offset) => self.offsets().binary_search(&offset),
            Err(_) => Err(usize::from(self.len)),
        }
    }

    fn seen(&self, id: u64) -> Seen {
        match self.find(id) {
            Ok(i) => self.seqs.get(i).map_or(Seen::New, |&seq| Seen::Stored(seq)),
            Err(_) if self.floor().is_some_and(|floor| id < floor) => Seen::Stale,
            Err(_) => Seen::New,
        }
    }

    fn insert(&mut self, id: u64, seq: u64, at_ms: u64) {
        self.last_ms = self.last_ms.max(at_ms);
        let fits = id >= self.base && id - self.base <= u64::from(u32::MAX);
        let after_newest = self.newest().is_none_or(|newest| id > newest);
        if fits && after_newest {
            // The usual case: the next id of a client counting up.
            let len = usize::from(self.len);
            if self.len == 0 {
                self.base = id;
            }
            let offset = u32::try_from(id - self.base).unwrap_or(u32::MAX);
            if len == WINDOW {
                self.offsets.copy_within(1.., 0);
                self.seqs.copy_within(1.., 0);
                self.offsets[WINDOW - 1] = offset;
                self.seqs[WINDOW - 1] = seq;
            } else {
                self.offsets[len] = offset;
                self.seqs[len] = seq;
                self.len += 1;
            }
            return;
        }
        self.insert_slowly(id, seq);
    }

    /// Any other id: out of order, or too far from the others for an offset. Rebuilds the
    /// window from a sorted list, keeping the newest ids that fit.
    fn insert_slowly(&mut self, id: u64, seq: u64) {
        let mut all: Vec<(u64, u64)> = self
            .offsets()
            .iter()
            .zip(&self.seqs)
            .map(|(&o, &s)| (self.base + u64::from(o), s))
            .collect();
        match all.binary_search_by_key(&id, |&(i, _)| i) {
            Ok(i) => {
                if let Some(entry) = all.get_mut(i) {
                    entry.1 = seq;
                }
            }
            Err(i) => all.insert(i, (id, seq)),
        }
        let newest = all.last().map_or(id, |&(i, _)| i);
        let keep_from = all
            .len()
            .saturating_sub(WINDOW)
            .max(all.partition_point(|&(i, _)| newest - i > u64::from(u32::MAX)));
        let kept = all.get(keep_from..).unwrap_or_default();
        self.base = kept.first().map_or(id, |&(i, _)| i);
        self.len = 0;
        for (slot, &(i, s)) in kept.iter().enumerate() {
            if let (Some(o), Some(q)) = (self.offsets.get_mut(slot), self.seqs.get_mut(slot)) {
                *o = u32::try_from(i - self.base).unwrap_or(u32::MAX);
                *q = s;
                self.len += 1;
            }
        }
    }

    fn expired(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_ms) >= KEEP_MS
    }
}

/// Every active pair's window. Boxed, so that the map's slots (twice as many as entries at
/// worst) cost a pointer each rather than a whole window.
#[derive(Debug, Default)]
pub struct Dedupe {
    pairs: HashMap<SendKey, Box<Window>>,
    last_sweep_ms: u64,
}

impl Dedupe {
    /// What the table knows of `id` from `key` at `now_ms`. A pair that expired counts as
    /// unknown even before a sweep took it away.
    pub fn seen(&self, key: &SendKey, id: u64, now_ms: u64) -> Seen {
        match self.pairs.get(key) {
            Some(window) if !window.expired(now_ms) => window.seen(id),
            _ => Seen::New,
        }
    }

    /// Notes that `id` from `key` was stored as `seq` at `at_ms` (once it is in the log).
    pub fn insert(&mut self, key: &SendKey, id: u64, seq: u64, at_ms: u64) {
        let window = self
            .pairs
            .entry(key.clone())
            .or_insert_with(|| Box::new(Window::new()));
        if window.expired(at_ms) {
            **window = Window::new();
        }
        window.insert(id, seq, at_ms);
    }

    /// Forgets the pairs that stored nothing for [`KEEP_MS`], at most once a
    /// [`SWEEP_EVERY_MS`] (the call is cheap otherwise).
    pub fn sweep(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.last_sweep_ms) < SWEEP_EVERY_MS {
            return;
        }
        self.last_sweep_ms = now_ms;
        self.forget_expired(now_ms);
    }

    /// Forgets the pairs that stored nothing for [`KEEP_MS`] before `now_ms`, now.
    pub fn forget_expired(&mut self, now_ms: u64) {
        self.pairs.retain(|_, window| !window.expired(now_ms));
        // A busy day's map is given back once most of its pairs went quiet.
        if self.pairs.capacity() > 4 * self.pairs.len().max(64) {
            self.pairs.shrink_to_fit();
        }
    }

    /// Pairs remembered.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The smallest id remembered for `key` (for tests and `log verify`).
    pub fn floor(&self, key: &SendKey) -> Option<u64> {
        self.pairs.get(key).and_then(|w| w.floor())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str, client: u64) -> SendKey {
        SendKey {
            user: Arc::from(user),
            client: NonZeroU64::new(client).expect("non-zero"),
        }
    }

    const T: u64 = 1_700_000_000_000;

    #[test]
    fn a_stored_id_is_seen_with_its_seq_and_others_are_new() {
        let mut d = Dedupe::default();
        let k = key("alice", 7);
        assert_eq!(d.seen(&k, 1, T), Seen::New);
        d.insert(&k, 1, 40, T);
        d.insert(&k, 2, 41, T);
        assert_eq!(d.seen(&k, 1, T), Seen::Stored(40));
        assert_eq!(d.seen(&k, 2, T), Seen::Stored(41));
        assert_eq!(d.seen(&k, 3, T), Seen::New);
        assert_eq!(d.seen(&key("alice", 8), 1, T), Seen::New);
        assert_eq!(d.seen(&key("bob", 7), 1, T), Seen::New);
    }

    #[test]
    fn the_window_slides_and_below_its_floor_is_stale() {
        let mut d = Dedupe::default();
        let k = key("alice", 7);
        for id in 1..=100 {
            d.insert(&k, id, 1000 + id, T);
        }
        assert_eq!(d.floor(&k), Some(37));
        assert_eq!(d.seen(&k, 36, T), Seen::Stale);
        assert_eq!(d.seen(&k, 1, T), Seen::Stale);
        assert_eq!(d.seen(&k, 37, T), Seen::Stored(1037));
        assert_eq!(d.seen(&k, 90, T), Seen::Stored(1090));
        assert_eq!(d.seen(&k, 100, T), Seen::Stored(1100));
        assert_eq!(d.seen(&k, 101, T), Seen::New);
    }

    #[test]
    fn out_of_order_ids_are_kept_sorted_and_gaps_are_new() {
        let mut d = Dedupe::default();
        let k = key("alice", 7);
        for id in [10, 12, 11, 20, 15] {
            d.insert(&k, id, id * 2, T);
        }
        for id in [10, 11, 12, 15, 20] {
            assert_eq!(d.seen(&k, id, T), Seen::Stored(id * 2), "id {id}");
        }
        assert_eq!(d.floor(&k), Some(10));
        assert_eq!(d.seen(&k, 13, T), Seen::New);
        assert_eq!(d.seen(&k, 9, T), Seen::Stale);
        // A full window that takes an id in a gap lets its smallest go.
        for id in 100..159 {
            d.insert(&k, id, id, T);
        }
        assert_eq!(d.floor(&k), Some(10));
        d.insert(&k, 13, 26, T);
        assert_eq!(d.floor(&k), Some(11));
        assert_eq!(d.seen(&k, 13, T), Seen::Stored(26));
        assert_eq!(d.seen(&k, 10, T), Seen::Stale);
    }

    #[test]
    fn ids_too_far_apart_for_an_offset_keep_the_newest() {
        let mut d = Dedupe::default();
        let k = key("alice", 7);
        d.insert(&k, 5, 1, T);
        d.insert(&k, 6, 2, T);
        let far = 6 + u64::from(u32::MAX) + 1;
        d.insert(&k, far, 3, T);
        assert_eq!(d.seen(&k, far, T), Seen::Stored(3));
        assert_eq!(d.seen(&k, 6, T), Seen::Stale);
        assert_eq!(d.floor(&k), Some(far));
        d.insert(&k, u64::MAX, 4, T);
        assert_eq!(d.seen(&k, u64::MAX, T), Seen::Stored(4));
    }

    #[test]
    fn a_pair_quiet_for_a_day_expires_and_is_swept() {
        let mut d = Dedupe::default();
        let (a, b) = (key("alice", 7), key("bob", 9));
        d.insert(&a, 50, 1, T);
        d.insert(&b, 50, 2, T + KEEP_MS / 2);
        assert_eq!(d.seen(&a, 50, T + KEEP_MS - 1), Seen::Stored(1));
        assert_eq!(d.seen(&a, 50, T + KEEP_MS), Seen::New);
        assert_eq!(
            d.seen(&a, 1, T + KEEP_MS),
            Seen::New,
            "no floor once expired"
        );
        d.sweep(T + KEEP_MS);
        assert_eq!(d.len(), 1);
        assert_eq!(d.seen(&b, 50, T + KEEP_MS), Seen::Stored(2));
        // An expired pair that stores again starts afresh.
        d.insert(&b, 3, 9, T + 2 * KEEP_MS);
        assert_eq!(d.floor(&b), Some(3));
    }

    #[test]
    fn sweeps_run_at_most_once_a_minute() {
        let mut d = Dedupe::default();
        let a = key("alice", 7);
        d.sweep(T);
        d.insert(&a, 1, 1, T - KEEP_MS);
        d.sweep(T + SWEEP_EVERY_MS - 1);
        assert_eq!(d.len(), 1);
        d.sweep(T + SWEEP_EVERY_MS);
        assert!(d.is_empty());
    }

    /// The window against the plainest model of what it promises: the 64 highest ids stored,
    /// less those more than `u32::MAX` below the highest.
    #[test]
    fn the_window_matches_a_sorted_map_of_the_highest_ids() {
        use std::collections::BTreeMap;
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..200 {
            let mut window = Window::new();
            let mut model: BTreeMap<u64, u64> = BTreeMap::new();
            let mut newest = 1_000u64;
            for step in 0..300u64 {
                let r = next();
                let id = match r % 8 {
                    // Mostly counting up, sometimes back a little, rarely a long jump.
                    0..=4 => newest + 1,
                    5 | 6 => newest.saturating_sub(r % 100),
                    _ => newest + (r >> 8) % (1 << 33),
                };
                let want = match model.get(&id) {
                    Some(&seq) => Seen::Stored(seq),
                    None if model.keys().next().is_some_and(|&f| id < f) => Seen::Stale,
                    None => Seen::New,
                };
                assert_eq!(window.seen(id), want, "round {round} step {step} id {id}");
                if want != Seen::New {
                    continue;
                }
                window.insert(id, step, T);
                model.insert(id, step);
                newest = newest.max(id);
                let top = model.keys().next_back().copied().unwrap_or(id);
                model.retain(|&i, _| top - i <= u64::from(u32::MAX));
                while model.len() > WINDOW {
                    model.pop_first();
                }
                assert_eq!(window.floor(), model.keys().next().copied());
            }
        }
    }

    #[test]
    fn an_active_pair_costs_at_most_a_kibibyte() {
        use std::mem::size_of;
        // A hashbrown table is at least 7/16 full after it grows: at most 16/7 slots (and as
        // many control bytes) per entry; the allocator rounds a window up by at most 16.
        let slot = size_of::<(SendKey, Box<Window>)>() + 1;
        let cost = size_of::<Window>() + 16 + slot * 16 / 7 + 1;
        assert!(cost <= PAIR_BYTES, "{cost} bytes per pair");
    }
}
