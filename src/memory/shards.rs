//! A sharded map from key ids to cells that bounds its own memory.
//!
//! Contention between distinct keys is kept low three ways: there are many shards (16 per core,
//! at least 16), each on its own cache line pair; an existing key's decision takes only its
//! shard's *read* lock, so the one shared write is the lock's reader count; and the counter
//! itself is the key's own word. Write locks are taken only to insert a new key, to sweep, and to
//! remove.

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;

use parking_lot::RwLock;

use super::cell::Cell;
use super::key_id::KeyId;

/// A shard sweeps once it has grown to twice its size after the last sweep, never below this.
const MIN_SWEEP_LEN: usize = 64;
/// Shards hold at least this many keys before the cap splits into more shards.
const MIN_KEYS_PER_SHARD: usize = 256;

/// Keeps each shard's lock on its own cache lines (two, for adjacent-line prefetch).
#[repr(align(128))]
struct Padded<T>(T);

struct Shard<V> {
    map: HashMap<KeyId, V, RandomState>,
    /// Sweep when an insert finds the map this long.
    sweep_at_len: usize,
    /// When the shard is full, do not sweep again before this time: nothing can have ended.
    full_until_ms: u64,
    /// The latest time at which this shard dropped ended cells. An absent key is only known to
    /// be unused in windows that hold this time or later ones.
    swept_at_ms: u64,
}

/// Why a key's cell could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missed {
    /// Its shard is at its share of the key cap and nothing in it has ended.
    Full,
    /// The key is absent, but the caller's time is before the shard's last sweep, which may have
    /// dropped the key's count for the caller's window (the clock stepped back, or the caller
    /// read it before another thread swept). Decide again as of this time.
    Stale { swept_at_ms: u64 },
}

pub(crate) struct Shards<V> {
    shards: Box<[Padded<RwLock<Shard<V>>>]>,
    /// Picks the shard; seeded per limiter so nobody can aim keys at one shard.
    selector: RandomState,
    mask: u64,
    keys_per_shard: usize,
}

impl<V: Cell> Shards<V> {
    pub(crate) fn new(max_keys: usize) -> Shards<V> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let wanted = (cores * 16).next_power_of_two().max(16);
        // A small cap gets few shards, so that it holds for the keys as a whole rather than
        // depending on how they spread.
        let affordable = prev_power_of_two(max_keys / MIN_KEYS_PER_SHARD).max(1);
        let count = wanted.min(affordable);
        let shards = (0..count)
            .map(|_| {
                Padded(RwLock::new(Shard {
                    map: HashMap::default(),
                    sweep_at_len: MIN_SWEEP_LEN,
                    full_until_ms: 0,
                    swept_at_ms: 0,
                }))
            })
            .collect();
        Shards {
            shards,
            selector: RandomState::default(),
            mask: count as u64 - 1,
            // Rounded down, so the shards together never hold more than `max_keys`.
            keys_per_shard: max_keys / count,
        }
    }

    #[inline]
    fn shard(&self, id: KeyId) -> &RwLock<Shard<V>> {
        // The high bits: the map's own hash, seeded differently, uses the low ones.
        let hash = self.selector.hash_one(id);
        &self.shards[((hash >> 40) & self.mask) as usize].0
    }

    /// Runs `f` on the key's cell if the key exists; otherwise says when its shard last swept.
    /// The common path: only the shard's read lock is taken.
    #[inline]
    pub(crate) fn existing<R>(&self, id: KeyId, f: impl FnOnce(&V) -> R) -> Result<R, u64> {
        let shard = self.shard(id).read();
        shard.map.get(&id).map(f).ok_or(shard.swept_at_ms)
    }

    /// Runs `f` on the key's cell, creating it if needed, under the shard's write lock.
    /// Creating a key may first sweep its shard of cells for which `ended` holds (they are
    /// indistinguishable from absent ones). `next_end_ms` says when the next cell can end, after
    /// which a full shard sweeps again.
    pub(crate) fn insert<R>(
        &self,
        id: KeyId,
        ended: impl Fn(&V) -> bool,
        next_end_ms: impl FnOnce() -> u64,
        now_ms: u64,
        f: impl FnOnce(&V) -> R,
    ) -> Result<R, Missed> {
        let mut shard = self.shard(id).write();
        if let Some(cell) = shard.map.get(&id) {
            return Ok(f(cell));
        }
        if now_ms < shard.swept_at_ms {
            return Err(Missed::Stale {
                swept_at_ms: shard.swept_at_ms,
            });
        }
        let len = shard.map.len();
        let full = len >= self.keys_per_shard;
        if len >= shard.sweep_at_len || (full && now_ms >= shard.full_until_ms) {
            shard.map.retain(|_, cell| !ended(cell));
            shard.swept_at_ms = now_ms;
            let live = shard.map.len();
            let sweep_at_len = (live * 2).max(MIN_SWEEP_LEN);
            shard.sweep_at_len = sweep_at_len;
            // Give back what a burst of keys left behind.
            if shard.map.capacity() > 4 * sweep_at_len {
                shard.map.shrink_to(sweep_at_len);
            }
            if live >= self.keys_per_shard {
                shard.full_until_ms = next_end_ms();
                return Err(Missed::Full);
            }
        } else if full {
            return Err(Missed::Full);
        }
        Ok(f(shard.map.entry(id).or_default()))
    }

    /// Forgets the key.
    pub(crate) fn remove(&self, id: KeyId) {
        self.shard(id).write().map.remove(&id);
    }

    /// How many keys are stored, including ones whose windows ended but were not swept yet.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.read().map.len()).sum()
    }
}

fn prev_power_of_two(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - n.leading_zeros())
    }
}
