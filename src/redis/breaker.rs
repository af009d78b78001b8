//! The failure breaker: after a failure, calls skip Redis for a while.

use std::sync::atomic::{AtomicU64, Ordering};

/// Remembers a recent failure so that calls do not each wait for a dead server: after a
/// failure, calls go straight to the failure policy until `retry_after_ms` have passed; then the
/// next call tries Redis again, and a success closes the breaker.
///
/// A single server has one breaker; a Cluster has one per hash slot, since its masters fail
/// one at a time and each serves only its own slots. A failure trips every slot of the failed
/// master (by the router's map), so the master costs one timeout per interval whatever the
/// number of its slots the keys use.
#[derive(Debug)]
pub(crate) struct Breaker {
    /// Per slot, the unix ms before which Redis is not tried; 0 when closed.
    open_until_ms: Box<[AtomicU64]>,
    /// The Cluster map's generation at the latest trip: once the map has changed, a failed
    /// master may have been replaced, so open slots are tried again at once.
    tripped_at_map: AtomicU64,
}

impl Breaker {
    /// A closed breaker for `slots` slots (at least one).
    pub(crate) fn new(slots: usize) -> Breaker {
        Breaker {
            open_until_ms: (0..slots.max(1)).map(|_| AtomicU64::new(0)).collect(),
            tripped_at_map: AtomicU64::new(0),
        }
    }

    fn at(&self, slot: usize) -> &AtomicU64 {
        &self.open_until_ms[slot % self.open_until_ms.len()]
    }

    /// Whether calls for `slot` at `now_ms` should skip Redis.
    pub(crate) fn is_open(&self, slot: usize, now_ms: u64) -> bool {
        now_ms < self.at(slot).load(Ordering::Relaxed)
    }

    pub(crate) fn trip(&self, slot: usize, now_ms: u64, retry_after_ms: u64) {
        self.at(slot)
            .store(now_ms.saturating_add(retry_after_ms), Ordering::Relaxed);
    }

    /// Records the Cluster map's generation at a trip (0 for a single server, whose map never
    /// changes).
    pub(crate) fn tripped_at_map(&self, generation: u64) {
        self.tripped_at_map.fetch_max(generation, Ordering::Relaxed);
    }

    /// Whether the map has changed since the latest trip.
    pub(crate) fn map_changed(&self, generation: u64) -> bool {
        generation > self.tripped_at_map.load(Ordering::Relaxed)
    }

    pub(crate) fn close(&self, slot: usize) {
        let at = self.at(slot);
        if at.load(Ordering::Relaxed) != 0 {
            at.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_trip_and_close_on_their_own() {
        let breaker = Breaker::new(16_384);
        breaker.trip(7, 1_000, 250);
        assert!(breaker.is_open(7, 1_249));
        assert!(!breaker.is_open(7, 1_250));
        assert!(!breaker.is_open(8, 1_000));
        breaker.close(7);
        assert!(!breaker.is_open(7, 1_000));
        // A single server's one breaker answers for every slot.
        let single = Breaker::new(1);
        single.trip(0, 1_000, 250);
        assert!(single.is_open(0, 1_000));
    }
}
