//! How a store splits its keys into shards, whichever table each shard holds.

/// Shards hold at least this many keys before the cap splits into more shards.
const MIN_KEYS_PER_SHARD: usize = 256;

/// Keeps each shard's lock on its own cache lines (two, for adjacent-line prefetch).
#[repr(align(128))]
pub(super) struct Padded<T>(pub(super) T);

/// The number of shards for a key cap: 16 per core (at least 16), so that distinct keys rarely
/// share a lock, but no more than leave each shard `MIN_KEYS_PER_SHARD` keys of the cap, so that a
/// small cap holds for the keys as a whole rather than depending on how they spread. A power of
/// two.
pub(super) fn shard_count(max_keys: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let wanted = (cores * 16).next_power_of_two().max(16);
    let affordable = prev_power_of_two(max_keys / MIN_KEYS_PER_SHARD).max(1);
    wanted.min(affordable)
}

fn prev_power_of_two(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - n.leading_zeros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_caps_get_few_shards() {
        assert_eq!(shard_count(1), 1);
        assert_eq!(shard_count(511), 1);
        assert_eq!(shard_count(512), 2);
        let most = shard_count(usize::MAX);
        assert!(most.is_power_of_two() && most >= 16);
        assert_eq!(shard_count(most * MIN_KEYS_PER_SHARD), most);
    }
}
