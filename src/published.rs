//! A value many threads read and one occasionally replaces: the users table, the limits.
//!
//! Readers take a cheap snapshot (an `Arc` clone under a read lock held for nanoseconds) and
//! keep it for as long as they like; a reactor checks the generation, one atomic load, once
//! per turn and takes a new snapshot only when it moved. Replacing never blocks a reader for
//! longer than a pointer swap, and this module must never do I/O or hold its lock across
//! anything but that swap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// The current version of a `T`, and how many times it was replaced.
pub struct Published<T> {
    current: RwLock<Arc<T>>,
    generation: AtomicU64,
}

impl<T> Published<T> {
    pub fn new(value: T) -> Published<T> {
        Published {
            current: RwLock::new(Arc::new(value)),
            generation: AtomicU64::new(0),
        }
    }

    /// The current version.
    pub fn get(&self) -> Arc<T> {
        // Only ever replaced whole, so a panic elsewhere cannot leave it half-made.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// How many times the value was replaced: compare with an earlier answer to know whether
    /// a snapshot is stale.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current version and its generation, read together.
    pub fn snapshot(&self) -> (u64, Arc<T>) {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        // Bumped under the write lock, so under the read lock the two agree.
        (self.generation(), Arc::clone(&current))
    }

    /// Replaces the value; readers see it at their next snapshot.
    pub fn publish(&self, value: T) {
        let value = Arc::new(value);
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        *current = value;
        self.generation.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_moves_the_generation_and_old_snapshots_stay_valid() {
        let p = Published::new(1);
        let (g0, old) = p.snapshot();
        p.publish(2);
        let (g1, new) = p.snapshot();
        assert_eq!((*old, *new), (1, 2));
        assert_eq!(g1, g0 + 1);
        assert_eq!(p.generation(), g1);
        assert_eq!(*p.get(), 2);
    }
}
