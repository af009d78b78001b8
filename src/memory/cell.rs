//! What one key's entry holds: its counters, updated atomically as a whole.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::MAX_QUOTAS;
use crate::window::{Counter, Packing};

/// One key's counters, one per quota, read and replaced as a unit.
pub(crate) trait Cell: Default + Send + Sync + 'static {
    /// Hands the counters to `step`, which edits them and says whether to store the edit; the
    /// read, the step and the store are one atomic transaction. `step` may run more than once
    /// (on a lost race) and must depend only on its input.
    fn transact<R>(&self, packings: &[Packing], step: impl FnMut(&mut [Counter]) -> (bool, R))
    -> R;

    /// A snapshot of the counters.
    fn load(&self, packings: &[Packing], into: &mut [Counter]);
}

/// One quota: one packed word, updated with compare-and-swap. No lock is taken, and a decision
/// writes to shared memory only this key's word, and only when it admits or refunds.
impl Cell for AtomicU64 {
    // Inlined: the single-quota hot path runs its decision inside this loop.
    #[inline(always)]
    fn transact<R>(
        &self,
        packings: &[Packing],
        mut step: impl FnMut(&mut [Counter]) -> (bool, R),
    ) -> R {
        let packing = packings[0];
        let mut word = self.load(Ordering::Acquire);
        loop {
            let mut counters = [packing.unpack(word)];
            let (store, result) = step(&mut counters);
            if !store {
                return result;
            }
            match self.compare_exchange_weak(
                word,
                packing.pack(counters[0]),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return result,
                Err(current) => word = current,
            }
        }
    }

    fn load(&self, packings: &[Packing], into: &mut [Counter]) {
        into[0] = packings[0].unpack(self.load(Ordering::Acquire));
    }
}

/// Several quotas: all-or-nothing across words needs them to change together, so a tiny
/// per-key lock guards them. It is per key, so distinct keys never wait on each other.
pub(crate) type MultiCell = Mutex<[u64; MAX_QUOTAS]>;

impl Cell for MultiCell {
    fn transact<R>(
        &self,
        packings: &[Packing],
        mut step: impl FnMut(&mut [Counter]) -> (bool, R),
    ) -> R {
        let mut words = self.lock();
        let mut counters = [Counter::default(); MAX_QUOTAS];
        let counters = &mut counters[..packings.len()];
        for ((counter, word), packing) in counters.iter_mut().zip(words.iter()).zip(packings) {
            *counter = packing.unpack(*word);
        }
        let (store, result) = step(counters);
        if store {
            for ((counter, word), packing) in counters.iter().zip(words.iter_mut()).zip(packings) {
                *word = packing.pack(*counter);
            }
        }
        result
    }

    fn load(&self, packings: &[Packing], into: &mut [Counter]) {
        let words = self.lock();
        for ((counter, word), packing) in into.iter_mut().zip(words.iter()).zip(packings) {
            *counter = packing.unpack(*word);
        }
    }
}
