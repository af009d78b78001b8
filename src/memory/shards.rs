//! A sharded map from key ids to cells that bounds its own memory.
//!
//! Contention between distinct keys is kept low three ways: there are many shards (16 per core,
//! at least 16), each on its own cache line pair; an existing key's decision takes only its
//! shard's *read* lock, so the one shared write is the lock's reader count; and the counter
//! itself is the key's own word. Write locks are taken only to insert a new key, to sweep, and to
//! remove.
//!
//! Each shard is an open-addressing table with linear probing: a slot holds the key's id next to
//! its cell, so finding an existing key usually touches one cache line (a table with a separate
//! control array, as std's `HashMap`, touches two), and a miss continues into the next slots,
//! which the prefetcher has already fetched. One hash picks the shard (its high bits) and the
//! slot (its low bits).

use std::hash::BuildHasher;

use foldhash::fast::RandomState;

use parking_lot::RwLock;

use super::cell::Cell;
use super::key_id::KeyId;
use super::sharding::{Padded, shard_count};

/// The fewest slots a table that holds any key has.
const MIN_SLOTS: usize = 64;

/// One key's place in a table. A slot whose id is [`KeyId::VACANT`] is free.
#[derive(Default)]
struct Slot<V> {
    id: KeyId,
    cell: V,
}

/// Linear probing over a power-of-two number of slots, at most three quarters full so that a
/// probe always ends at a free slot, and short.
struct Table<V> {
    slots: Box<[Slot<V>]>,
    len: usize,
}

impl<V: Cell> Table<V> {
    /// A table with room for nothing, which allocates nothing: its one slot stays free.
    fn empty() -> Table<V> {
        Table::with_slots(1)
    }

    fn with_slots(count: usize) -> Table<V> {
        debug_assert!(count.is_power_of_two());
        Table {
            slots: (0..count).map(|_| Slot::default()).collect(),
            len: 0,
        }
    }

    #[inline(always)]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The slot holding `id`, or the free slot where its probe ends.
    #[inline(always)]
    fn probe(&self, id: KeyId, hash: u64) -> usize {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            let slot_id = self.slots[i].id;
            if slot_id == id || slot_id == KeyId::VACANT {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    #[inline(always)]
    fn get(&self, id: KeyId, hash: u64) -> Option<&V> {
        let slot = &self.slots[self.probe(id, hash)];
        (slot.id == id).then_some(&slot.cell)
    }

    /// Whether one more key fits without passing three quarters full.
    fn has_room(&self) -> bool {
        (self.len + 1) * 4 <= self.slots.len() * 3
    }

    /// Puts an absent key into its free slot with a fresh cell; the caller made room.
    fn insert(&mut self, id: KeyId, hash: u64) -> &V {
        // A full table would make every later probe for an absent key spin: never let it fill.
        assert!(self.has_room(), "the caller makes room before inserting");
        let i = self.probe(id, hash);
        debug_assert_eq!(self.slots[i].id, KeyId::VACANT);
        self.slots[i] = Slot {
            id,
            cell: V::default(),
        };
        self.len += 1;
        &self.slots[i].cell
    }

    /// Removes `id`, then moves back the slots after it whose probe passed through its slot, so
    /// every remaining key is still found before the first free slot.
    fn remove(&mut self, id: KeyId, hash: u64, hash_of: impl Fn(KeyId) -> u64) {
        let mask = self.mask();
        let mut hole = self.probe(id, hash);
        if self.slots[hole].id != id {
            return;
        }
        let mut next = (hole + 1) & mask;
        while self.slots[next].id != KeyId::VACANT {
            let home = hash_of(self.slots[next].id) as usize & mask;
            // The slot at `next` may fill the hole when its home is not in (hole, next],
            // cyclically: its probe started at or before the hole.
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.slots.swap(hole, next);
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.slots[hole] = Slot::default();
        self.len -= 1;
    }

    /// Rebuilds the table with only the cells that `keep` accepts, in the fewest slots that
    /// leave it at most half full (so it takes another quarter of its slots in new keys before
    /// it must be rebuilt again). Returns how many cells it dropped.
    fn rebuild(&mut self, keep: impl Fn(&V) -> bool, hash_of: impl Fn(KeyId) -> u64) -> usize {
        let before = self.len;
        let live = self
            .slots
            .iter()
            .filter(|slot| slot.id != KeyId::VACANT && keep(&slot.cell))
            .count();
        // Nothing to drop and room to spare (a full shard that found nothing ended): the table
        // stays as it is, rather than being copied, or doubled, for nothing.
        if live == before && self.has_room() {
            return 0;
        }
        let count = (live * 2).next_power_of_two().max(MIN_SLOTS);
        let old = std::mem::replace(self, Table::with_slots(count));
        for slot in old.slots.into_vec() {
            if slot.id != KeyId::VACANT && keep(&slot.cell) {
                // `keep` answers as it did when counting (nothing changes cells under the write
                // lock), so the new table has room for every slot it keeps.
                assert!(self.has_room(), "kept more cells than counted");
                let i = self.probe(slot.id, hash_of(slot.id));
                self.slots[i] = slot;
                self.len += 1;
            }
        }
        before - self.len
    }
}

struct Shard<V> {
    table: Table<V>,
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
    /// Seeded per limiter, so nobody can aim keys at one shard or one run of slots.
    hasher: RandomState,
    /// `64 - log2(shard count)`: the hash's high bits pick the shard.
    shard_shift: u32,
    keys_per_shard: usize,
}

impl<V: Cell> Shards<V> {
    pub(crate) fn new(max_keys: usize) -> Shards<V> {
        let count = shard_count(max_keys);
        let shards = (0..count)
            .map(|_| {
                Padded(RwLock::new(Shard {
                    table: Table::empty(),
                    full_until_ms: 0,
                    swept_at_ms: 0,
                }))
            })
            .collect();
        Shards {
            shards,
            hasher: RandomState::default(),
            // 64 for one shard, which `shard` reads as "no bits" through `checked_shr`.
            shard_shift: u64::BITS - count.trailing_zeros(),
            // Rounded down, so the shards together never hold more than `max_keys`.
            keys_per_shard: max_keys / count,
        }
    }

    #[inline(always)]
    fn hash(&self, id: KeyId) -> u64 {
        self.hasher.hash_one(id)
    }

    #[inline(always)]
    fn shard(&self, hash: u64) -> &RwLock<Shard<V>> {
        let index = hash.checked_shr(self.shard_shift).unwrap_or(0);
        &self.shards[index as usize].0
    }

    /// Runs `f` on the key's cell if the key exists; otherwise says when its shard last swept.
    /// The common path: only the shard's read lock is taken.
    #[inline(always)]
    pub(crate) fn existing<R>(&self, id: KeyId, f: impl FnOnce(&V) -> R) -> Result<R, u64> {
        let hash = self.hash(id);
        let shard = self.shard(hash).read();
        shard.table.get(id, hash).map(f).ok_or(shard.swept_at_ms)
    }

    /// Runs `f` on the key's cell, creating it if needed, under the shard's write lock.
    /// Creating a key may first sweep its shard of cells for which `ended` holds (they are
    /// indistinguishable from absent ones): whenever the table must grow, and when the shard is
    /// full. `next_end_ms` says when the next cell can end, after which a full shard sweeps again.
    pub(crate) fn insert<R>(
        &self,
        id: KeyId,
        ended: impl Fn(&V) -> bool,
        next_end_ms: impl FnOnce() -> u64,
        now_ms: u64,
        f: impl FnOnce(&V) -> R,
    ) -> Result<R, Missed> {
        let hash = self.hash(id);
        let mut shard = self.shard(hash).write();
        if let Some(cell) = shard.table.get(id, hash) {
            return Ok(f(cell));
        }
        if now_ms < shard.swept_at_ms {
            return Err(Missed::Stale {
                swept_at_ms: shard.swept_at_ms,
            });
        }
        let full = shard.table.len >= self.keys_per_shard;
        if !shard.table.has_room() || (full && now_ms >= shard.full_until_ms) {
            let dropped = shard.table.rebuild(|cell| !ended(cell), |id| self.hash(id));
            // A rebuild that only grew the table forgot nothing.
            if dropped > 0 {
                shard.swept_at_ms = now_ms;
            }
            if shard.table.len >= self.keys_per_shard {
                shard.full_until_ms = next_end_ms();
                return Err(Missed::Full);
            }
        } else if full {
            return Err(Missed::Full);
        }
        Ok(f(shard.table.insert(id, hash)))
    }

    /// Forgets the key.
    pub(crate) fn remove(&self, id: KeyId) {
        let hash = self.hash(id);
        self.shard(hash)
            .write()
            .table
            .remove(id, hash, |id| self.hash(id));
    }

    /// How many keys are stored, including ones whose windows ended but were not swept yet.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.read().table.len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn id(n: u64) -> KeyId {
        KeyId::from_words(n, 1 << 56)
    }

    /// Removing keys in any order leaves every other key findable: the backward shift keeps
    /// each probe unbroken, including probes that wrap around the table's end.
    #[test]
    fn removals_keep_every_other_key_reachable() {
        // A hash with many collisions and runs across the end of the table.
        let hash_of = |id: KeyId| id.words()[0] % 7 + 60;
        let mut table: Table<AtomicU64> = Table::with_slots(64);
        let ids: Vec<KeyId> = (1..=40).map(id).collect();
        for (n, &id) in ids.iter().enumerate() {
            table
                .insert(id, hash_of(id))
                .store(n as u64, Ordering::Relaxed);
        }
        for (removed, &gone) in ids.iter().enumerate().rev().step_by(3) {
            table.remove(gone, hash_of(gone), hash_of);
            assert!(table.get(gone, hash_of(gone)).is_none());
            for (n, &id) in ids.iter().enumerate() {
                let present = table.get(id, hash_of(id));
                if n >= removed && (ids.len() - 1 - n) % 3 == 0 {
                    assert!(present.is_none(), "key {n} is back");
                } else {
                    let cell = present.unwrap_or_else(|| panic!("key {n} lost"));
                    assert_eq!(cell.load(Ordering::Relaxed), n as u64, "key {n} moved");
                }
            }
        }
    }

    /// A rebuild that only grew the table forgot no count, so it must not make an earlier
    /// clock reading stale; one that dropped a cell must.
    #[test]
    fn only_a_rebuild_that_drops_cells_counts_as_a_sweep() {
        let shards: Shards<AtomicU64> = Shards::new(300);
        let put = |n: u64, now_ms: u64, ended: bool| {
            shards.insert(id(n), |_| ended, || u64::MAX, now_ms, |_| ())
        };
        // 49 keys at t = 100 pass three quarters of 64 slots: the table grows.
        for n in 1..=49 {
            assert_eq!(put(n, 100, false), Ok(()));
        }
        assert_eq!(put(50, 50, false), Ok(()), "growing is not sweeping");
        // Up to the next growth, where every cell has ended and is dropped.
        for n in 51..=96 {
            assert_eq!(put(n, 100, false), Ok(()));
        }
        assert_eq!(put(97, 200, true), Ok(()));
        assert_eq!(shards.len(), 1);
        assert_eq!(put(98, 150, false), Err(Missed::Stale { swept_at_ms: 200 }));
    }

    proptest::proptest! {
        /// The table agrees with a set under any mix of inserts, removals and rebuilds.
        #[test]
        fn the_table_behaves_as_a_set(ops in proptest::collection::vec((0u64..48, 0u8..8), 1..300)) {
            let hash_of = |id: KeyId| id.words()[0].wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20;
            let mut table: Table<AtomicU64> = Table::empty();
            let mut model = std::collections::BTreeSet::new();
            for (n, op) in ops {
                let key = id(n + 1);
                match op {
                    0 | 1 => {
                        table.remove(key, hash_of(key), hash_of);
                        model.remove(&n);
                    }
                    // A rebuild that drops the keys divisible by 5.
                    2 => {
                        let _ = table.rebuild(|cell| cell.load(Ordering::Relaxed) % 5 != 0, hash_of);
                        model.retain(|&k| (k + 1) % 5 != 0);
                    }
                    _ => {
                        if table.get(key, hash_of(key)).is_none() {
                            if !table.has_room() {
                                let _ = table.rebuild(|_| true, hash_of);
                            }
                            table.insert(key, hash_of(key)).store(n + 1, Ordering::Relaxed);
                            model.insert(n);
                        }
                    }
                }
                proptest::prop_assert_eq!(table.len, model.len());
                proptest::prop_assert!(table.len * 4 <= table.slots.len() * 3);
                for k in 0..48u64 {
                    let found = table.get(id(k + 1), hash_of(id(k + 1)));
                    proptest::prop_assert_eq!(found.is_some(), model.contains(&k));
                    if let Some(cell) = found {
                        proptest::prop_assert_eq!(cell.load(Ordering::Relaxed), k + 1);
                    }
                }
            }
        }
    }
}
