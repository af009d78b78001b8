//! The key store on `dashmap`, built instead of `shards.rs` under `--cfg ratewindow_dashmap`, to
//! measure the two against each other (BENCHMARKS.md).
//!
//! The interface, the key cap per shard and the shard count are those of `shards.rs`, so a
//! comparison measures the map and its locks rather than a different policy. dashmap's
//! `raw-api` hands out its shards (`RwLock<hashbrown::raw::RawTable<(K, SharedValue<V>)>>`),
//! and every operation here takes one shard's lock itself and works on its table, routing by
//! dashmap's own hash and `determine_shard`, so the map stays a valid `DashMap`. A sweep thus
//! holds one shard's write lock throughout, as in `shards.rs`; it runs when the shard has
//! doubled since its last sweep (`shards.rs` sweeps whenever its own table must grow, which
//! hashbrown does not report), and when the shard is full.
//!
//! The one compromise: the crate has no unsafe code, and the table's in-place iteration and
//! erasure (`iter`, `erase`, `Bucket::as_ref`) are unsafe, while `DashMap::retain` locks every
//! shard in turn (which would deadlock with the shard already held, and sweep all shards for one
//! full one). So a sweep drains the shard, which keeps its allocation, and puts the live cells
//! back: a temporary vector of them and one rehash each. A shard sweeps only after doubling, so
//! that stays a constant cost per inserted key.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use dashmap::{DashMap, SharedValue};
use foldhash::fast::RandomState;

use super::cell::Cell;
use super::key_id::KeyId;
use super::sharding::{Padded, shard_count};

/// A shard sweeps once it has grown to twice its size after the last sweep, never below this.
const MIN_SWEEP_LEN: usize = 64;

/// One shard's sweep bookkeeping, beside dashmap's shard rather than in it. Written only under
/// that shard's write lock and read under its read or write lock, so the lock orders every
/// access and relaxed atomics suffice.
struct Book {
    /// Sweep when an insert finds the shard this long.
    sweep_at_len: AtomicUsize,
    /// When the shard is full, do not sweep again before this time: nothing can have ended.
    full_until_ms: AtomicU64,
    /// The latest time at which this shard dropped ended cells. An absent key is only known to
    /// be unused in windows that hold this time or later ones.
    swept_at_ms: AtomicU64,
}

/// Why a key's cell could not be used (as in `shards.rs`, which this build leaves out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missed {
    /// Its shard is at its share of the key cap and nothing in it has ended.
    Full,
    /// The key is absent, but the caller's time is before the shard's last sweep, which may have
    /// dropped the key's count for the caller's window (the clock stepped back, or the caller
    /// read it before another thread swept). Decide again as of this time.
    Stale { swept_at_ms: u64 },
}

/// foldhash seeded per limiter, so nobody can aim keys at one shard. dashmap picks the shard
/// from the hash bits just below hashbrown's 7-bit tag; `mask` clears them where the store
/// wants a single shard, which dashmap (at least two shards) cannot be asked for.
#[derive(Clone)]
struct Seeded {
    state: RandomState,
    mask: u64,
}

impl BuildHasher for Seeded {
    type Hasher = Masked;

    #[inline]
    fn build_hasher(&self) -> Masked {
        Masked {
            inner: self.state.build_hasher(),
            mask: self.mask,
        }
    }
}

/// A foldhash hasher whose result is masked (see [`Seeded`]).
struct Masked {
    inner: <RandomState as BuildHasher>::Hasher,
    mask: u64,
}

impl Hasher for Masked {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.inner.write(bytes);
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.inner.write_u64(n);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.inner.finish() & self.mask
    }
}

/// A table entry as dashmap stores it.
type Entry<V> = (KeyId, SharedValue<V>);

/// A sharded map from key ids to cells that bounds its own memory, on `dashmap`.
pub(crate) struct Shards<V> {
    map: DashMap<KeyId, V, Seeded>,
    /// Indexed like `map.shards()`.
    books: Box<[Padded<Book>]>,
    keys_per_shard: usize,
}

impl<V: Cell> Shards<V> {
    pub(crate) fn new(max_keys: usize) -> Shards<V> {
        let count = shard_count(max_keys);
        // With two dashmap shards, `determine_shard` reads hash bit `usize::BITS - 8`; clearing
        // it sends every key to shard 0, leaving shard 1 empty.
        let mask = if count == 1 {
            !(1 << (usize::BITS - 8))
        } else {
            !0
        };
        let hasher = Seeded {
            state: RandomState::default(),
            mask,
        };
        let map = DashMap::with_hasher_and_shard_amount(hasher, count.max(2));
        let books = (0..map.shards().len())
            .map(|_| {
                Padded(Book {
                    sweep_at_len: AtomicUsize::new(MIN_SWEEP_LEN),
                    full_until_ms: AtomicU64::new(0),
                    swept_at_ms: AtomicU64::new(0),
                })
            })
            .collect();
        Shards {
            map,
            books,
            // Rounded down, so the shards together never hold more than `max_keys`.
            keys_per_shard: max_keys / count,
        }
    }

    /// The key's hash as dashmap computes it, and the index of its shard.
    #[inline]
    fn locate(&self, id: KeyId) -> (u64, usize) {
        let hash = self.hash(&id);
        (hash, self.map.determine_shard(hash as usize))
    }

    #[inline]
    fn hash(&self, id: &KeyId) -> u64 {
        self.map.hasher().hash_one(id)
    }

    /// Runs `f` on the key's cell if the key exists; otherwise says when its shard last swept.
    /// The common path: only the shard's read lock is taken.
    #[inline]
    pub(crate) fn existing<R>(&self, id: KeyId, f: impl FnOnce(&V) -> R) -> Result<R, u64> {
        let (hash, index) = self.locate(id);
        let shard = self.map.shards()[index].read();
        match shard.get(hash, |(key, _)| *key == id) {
            Some((_, cell)) => Ok(f(cell.get())),
            // Read under the shard's lock, so it is the sweep that the absence reflects.
            None => Err(self.books[index].0.swept_at_ms.load(Relaxed)),
        }
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
        let (hash, index) = self.locate(id);
        let book = &self.books[index].0;
        let rehash = |(key, _): &Entry<V>| self.hash(key);
        let mut shard = self.map.shards()[index].write();
        if let Some((_, cell)) = shard.get(hash, |(key, _)| *key == id) {
            return Ok(f(cell.get()));
        }
        let swept_at_ms = book.swept_at_ms.load(Relaxed);
        if now_ms < swept_at_ms {
            return Err(Missed::Stale { swept_at_ms });
        }
        let len = shard.len();
        let full = len >= self.keys_per_shard;
        if len >= book.sweep_at_len.load(Relaxed)
            || (full && now_ms >= book.full_until_ms.load(Relaxed))
        {
            // No safe in-place retain (see the module docs): drain, keep the live, put back.
            let mut live: Vec<Entry<V>> = Vec::with_capacity(len);
            live.extend(shard.drain().filter(|(_, cell)| !ended(cell.get())));
            book.swept_at_ms.store(now_ms, Relaxed);
            let sweep_at_len = (live.len() * 2).max(MIN_SWEEP_LEN);
            book.sweep_at_len.store(sweep_at_len, Relaxed);
            // Give back what a burst of keys left behind; the drained table is empty, so this
            // costs no rehash.
            if shard.capacity() > 4 * sweep_at_len {
                shard.shrink_to(sweep_at_len, rehash);
            }
            let live_len = live.len();
            for entry in live {
                shard.insert(self.hash(&entry.0), entry, rehash);
            }
            if live_len >= self.keys_per_shard {
                book.full_until_ms.store(next_end_ms(), Relaxed);
                return Err(Missed::Full);
            }
        } else if full {
            return Err(Missed::Full);
        }
        let (_, cell) = shard.insert_entry(hash, (id, SharedValue::new(V::default())), rehash);
        Ok(f(cell.get()))
    }

    /// Forgets the key.
    pub(crate) fn remove(&self, id: KeyId) {
        let (hash, index) = self.locate(id);
        self.map.shards()[index]
            .write()
            .remove_entry(hash, |(key, _)| *key == id);
    }

    /// How many keys are stored, including ones whose windows ended but were not swept yet.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    use super::{Missed, Shards};
    use crate::memory::key_id::{KeyId, KeyIds};

    fn ids(n: usize) -> Vec<KeyId> {
        let key_ids = KeyIds::random();
        (0..n).map(|i| key_ids.of(&format!("key-{i}"))).collect()
    }

    /// Inserts `id` with value `value`, never sweeping anything.
    fn put(shards: &Shards<AtomicU64>, id: KeyId, value: u64) -> Result<(), Missed> {
        shards.insert(
            id,
            |_| false,
            || u64::MAX,
            0,
            |cell| cell.store(value, Relaxed),
        )
    }

    #[test]
    fn a_small_cap_is_one_shard_and_holds_for_all_keys() {
        let shards = Shards::<AtomicU64>::new(10);
        let ids = ids(11);
        for &id in &ids[..10] {
            assert_eq!(put(&shards, id, 1), Ok(()));
            assert_eq!(shards.map.determine_map(&id), 0);
        }
        assert_eq!(put(&shards, ids[10], 1), Err(Missed::Full));
        assert_eq!(shards.len(), 10);
    }

    #[test]
    fn a_sweep_keeps_live_cells_where_dashmap_finds_them() {
        let shards = Shards::<AtomicU64>::new(1 << 20);
        let ids = ids(4000);
        for (i, &id) in ids.iter().enumerate() {
            // Odd values are live; sweeps at time 0 drop the even ones inserted so far.
            let ended = |cell: &AtomicU64| cell.load(Relaxed) % 2 == 0;
            let value = i as u64;
            assert_eq!(
                shards.insert(id, ended, || u64::MAX, 0, |c| c.store(value, Relaxed)),
                Ok(())
            );
        }
        assert!(shards.len() < ids.len(), "some shard swept");
        for (i, &id) in ids.iter().enumerate() {
            let found = shards.existing(id, |cell| cell.load(Relaxed));
            if i % 2 == 1 {
                assert_eq!(found, Ok(i as u64));
                // The same routing and hash as dashmap's own lookups.
                assert_eq!(shards.map.get(&id).map(|v| v.load(Relaxed)), Some(i as u64));
            } else if let Ok(value) = found {
                assert_eq!(value, i as u64);
            }
        }
    }

    #[test]
    fn a_full_shard_sweeps_and_an_insert_before_that_sweep_is_stale() {
        let shards = Shards::<AtomicU64>::new(10);
        let ids = ids(12);
        for &id in &ids[..10] {
            assert_eq!(put(&shards, id, 1), Ok(()));
        }
        // Full, and past `full_until_ms` (0): it sweeps, everything has ended, the key goes in.
        let ended = |_: &AtomicU64| true;
        assert_eq!(shards.insert(ids[10], ended, || 0, 500, |_| ()), Ok(()));
        assert_eq!(shards.len(), 1);
        assert_eq!(shards.existing(ids[0], |_| ()), Err(500));
        assert_eq!(
            shards.insert(ids[11], ended, || 0, 400, |_| ()),
            Err(Missed::Stale { swept_at_ms: 500 })
        );
        shards.remove(ids[10]);
        assert_eq!(shards.len(), 0);
    }
}
