//! Pure fixed-window arithmetic. Every backend decides with these functions, so they agree on
//! when a window starts and ends, on rounding, and on how a count rolls over.
//!
//! A window is named by its *index*. For a window of `w` ms and a phase offset `o` (0 for
//! epoch-aligned windows, `0 ≤ o < w` for staggered ones) the window holding `now` is
//! `index = (now + w - o) / w` and ends at `index * w + o`, exclusive. Shifting by one whole
//! window keeps every quantity unsigned even for a clock at the epoch.

use std::time::Duration;

use crate::Error;

/// The latest clock reading the crate decides for: 2^46 ms after the epoch, in the year 4199.
/// Bounding time lets the in-memory backend keep a full window index next to the count in one
/// atomic word, so no index ever wraps.
pub(crate) const MAX_TIME_MS: u64 = 1 << 46;

/// The window of a given length and phase that holds a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// Counts whole windows; strictly increasing with time.
    pub(crate) index: u64,
    /// Unix milliseconds at which the window ends (exclusive).
    pub(crate) end_ms: u64,
}

/// The window of `window_ms` with phase `offset_ms` that holds `now_ms`.
///
/// # Errors
///
/// [`Error::ClockOutOfRange`] past [`MAX_TIME_MS`].
pub(crate) fn locate(now_ms: u64, window_ms: u64, offset_ms: u64) -> Result<Window, Error> {
    debug_assert!(offset_ms < window_ms);
    if now_ms > MAX_TIME_MS {
        return Err(Error::ClockOutOfRange { now_ms });
    }
    // Cannot overflow: now ≤ 2^46 and window ≤ 2^40.
    let index = (now_ms + window_ms - offset_ms) / window_ms;
    Ok(Window {
        index,
        end_ms: end_of(index, window_ms, offset_ms),
    })
}

/// The epoch-aligned window `cached_index`, if it still holds `now_ms`: the cheap check that
/// lets callers skip [`locate`]'s division on most calls.
#[inline]
pub(crate) fn cached(cached_index: u64, now_ms: u64, window_ms: u64) -> Option<Window> {
    let end_ms = cached_index.saturating_mul(window_ms);
    (now_ms < end_ms && now_ms >= end_ms - window_ms && now_ms <= MAX_TIME_MS).then_some(Window {
        index: cached_index,
        end_ms,
    })
}

/// The first epoch-aligned boundary of `window_ms` after `now_ms`.
pub(crate) fn next_boundary(now_ms: u64, window_ms: u64) -> u64 {
    (now_ms / window_ms + 1) * window_ms
}

/// When window `index` ends, in unix milliseconds.
pub(crate) fn end_of(index: u64, window_ms: u64, offset_ms: u64) -> u64 {
    index * window_ms + offset_ms
}

/// Whether a window with this index has certainly ended at `now_ms` when only an upper bound of
/// its phase is known (`max_offset_ms`: 0 for epoch-aligned windows, `w - 1` for staggered).
/// Used to drop state without knowing the key it belonged to; exact for epoch alignment.
pub(crate) fn certainly_ended(index: u64, window_ms: u64, max_offset_ms: u64, now_ms: u64) -> bool {
    index
        .saturating_mul(window_ms)
        .saturating_add(max_offset_ms)
        <= now_ms
}

/// `X-RateLimit-Reset`: the window end in unix seconds, rounded up so it is never early.
pub(crate) fn reset_epoch_secs(end_ms: u64) -> u64 {
    end_ms.div_ceil(1000)
}

/// The exact time left until the window ends (zero if the clock is already past it).
pub(crate) fn time_to_reset(end_ms: u64, now_ms: u64) -> Duration {
    Duration::from_millis(end_ms.saturating_sub(now_ms))
}

/// `Retry-After`: seconds until the window ends, rounded up and at least 1, so a client that
/// honours it never comes back early.
pub(crate) fn retry_after_secs(end_ms: u64, now_ms: u64) -> u64 {
    end_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
}

/// The hash a key's staggered phases come from: FNV-1a (64-bit) of its bytes. FNV-1a is fixed by
/// its specification, so every process and every backend derives the same phase for the same
/// key. The phase for a window of `w` ms is this hash modulo `w`.
pub(crate) fn stagger_hash(key: &str) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    key.bytes()
        .fold(OFFSET_BASIS, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// The units counted in one window of one quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Counter {
    /// The index of the window the count belongs to (a fresh counter has index 0 and count 0,
    /// which rolls to any window as an empty count).
    pub(crate) index: u64,
    pub(crate) count: u64,
}

impl Counter {
    /// The counter as it stands in window `current`: a count from an earlier window is gone.
    ///
    /// A count from a *later* window than `current` (the clock stepped backwards) is kept as it
    /// is: time never moves a counter back, so a clock step can neither admit extra requests nor
    /// lose counted ones.
    pub(crate) fn rolled_to(self, current: u64) -> Counter {
        if self.index >= current {
            self
        } else {
            Counter {
                index: current,
                count: 0,
            }
        }
    }
}

/// How a [`Counter`] of a given window length fits in one `u64`: the window index in the high
/// bits, the count in the low ones. The index needs fewer bits the longer the window is, so the
/// count gets the rest: 17 bits (131 071) for 1 ms windows, 27 for seconds, 33 for minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Packing {
    count_bits: u32,
}

impl Packing {
    pub(crate) fn for_window(window_ms: u64) -> Packing {
        let max_index = (MAX_TIME_MS + window_ms) / window_ms;
        let index_bits = u64::BITS - max_index.leading_zeros();
        Packing {
            count_bits: u64::BITS - index_bits,
        }
    }

    /// The largest count this packing holds.
    pub(crate) fn max_count(self) -> u64 {
        (1 << self.count_bits) - 1
    }

    pub(crate) fn pack(self, counter: Counter) -> u64 {
        debug_assert!(counter.count <= self.max_count());
        (counter.index << self.count_bits) | counter.count
    }

    pub(crate) fn unpack(self, word: u64) -> Counter {
        Counter {
            index: word >> self.count_bits,
            count: word & self.max_count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_aligned_windows() {
        let w = locate(0, 60_000, 0).unwrap();
        assert_eq!(w.end_ms, 60_000);
        let w = locate(59_999, 60_000, 0).unwrap();
        assert_eq!(w.end_ms, 60_000);
        let w2 = locate(60_000, 60_000, 0).unwrap();
        assert_eq!(w2.end_ms, 120_000);
        assert_eq!(w2.index, w.index + 1);
        // 2026-11-26T05:00:30Z lies in the minute ending 05:01:00Z.
        let w = locate(1_795_237_230_000, 60_000, 0).unwrap();
        assert_eq!(w.end_ms, 1_795_237_260_000);
    }

    #[test]
    fn staggered_windows_keep_their_phase() {
        // Offset 500 ms: windows are [-500, 500), [500, 1500), ...
        assert_eq!(locate(0, 1000, 500).unwrap().end_ms, 500);
        assert_eq!(locate(499, 1000, 500).unwrap().end_ms, 500);
        assert_eq!(locate(500, 1000, 500).unwrap().end_ms, 1500);
        for now in [0, 1, 999, 1000, 123_456_789] {
            for offset in [0, 1, 250, 999] {
                let w = locate(now, 1000, offset).unwrap();
                assert!(w.end_ms > now && w.end_ms - now <= 1000, "{now} {offset}");
                assert_eq!(w.end_ms % 1000, offset);
            }
        }
    }

    #[test]
    fn clock_range_is_checked() {
        assert!(locate(MAX_TIME_MS, crate::quota::MAX_WINDOW_MS, 0).is_ok());
        assert_eq!(
            locate(MAX_TIME_MS + 1, 1, 0),
            Err(Error::ClockOutOfRange {
                now_ms: MAX_TIME_MS + 1
            })
        );
        assert!(locate(u64::MAX, 1, 0).is_err());
    }

    #[test]
    fn rounding_is_never_early() {
        assert_eq!(reset_epoch_secs(60_000), 60);
        assert_eq!(reset_epoch_secs(60_001), 61);
        assert_eq!(reset_epoch_secs(0), 0);
        assert_eq!(retry_after_secs(60_000, 59_999), 1);
        assert_eq!(retry_after_secs(60_000, 59_000), 1);
        assert_eq!(retry_after_secs(60_000, 58_999), 2);
        assert_eq!(retry_after_secs(60_000, 0), 60);
        // At or past the end (a stale read) a client is still told to wait a second.
        assert_eq!(retry_after_secs(60_000, 60_000), 1);
        assert_eq!(retry_after_secs(60_000, 70_000), 1);
        assert_eq!(time_to_reset(60_000, 59_250), Duration::from_millis(750));
        assert_eq!(time_to_reset(60_000, 61_000), Duration::ZERO);
    }

    #[test]
    fn certainly_ended_is_exact_for_epoch_and_safe_for_staggered() {
        let w = locate(59_999, 60_000, 0).unwrap();
        assert!(!certainly_ended(w.index, 60_000, 0, 59_999));
        assert!(certainly_ended(w.index, 60_000, 0, 60_000));
        for offset in [0, 1, 30_000, 59_999] {
            let w = locate(100_000, 60_000, offset).unwrap();
            for now in [100_000, w.end_ms - 1] {
                assert!(!certainly_ended(w.index, 60_000, 59_999, now));
            }
            assert!(certainly_ended(w.index, 60_000, 59_999, w.end_ms + 60_000));
        }
    }

    #[test]
    fn stagger_hash_is_fnv1a_64() {
        // The published FNV-1a-64 test vectors.
        assert_eq!(stagger_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stagger_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stagger_hash("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn cached_window_is_used_only_while_it_holds_now() {
        let w = locate(125_000, 60_000, 0).unwrap();
        assert_eq!(cached(w.index, 125_000, 60_000), Some(w));
        assert_eq!(cached(w.index, 120_000, 60_000), Some(w));
        assert_eq!(cached(w.index, 179_999, 60_000), Some(w));
        assert_eq!(cached(w.index, 180_000, 60_000), None);
        assert_eq!(cached(w.index, 119_999, 60_000), None);
        assert_eq!(cached(0, 0, 60_000), None, "the empty cache never matches");
        assert_eq!(cached(u64::MAX, 5, 60_000), None);
        assert_eq!(next_boundary(125_000, 60_000), 180_000);
        assert_eq!(next_boundary(120_000, 60_000), 180_000);
    }

    #[test]
    fn counters_roll_forward_only() {
        let c = Counter {
            index: 10,
            count: 7,
        };
        assert_eq!(c.rolled_to(10), c);
        assert_eq!(
            c.rolled_to(11),
            Counter {
                index: 11,
                count: 0
            }
        );
        assert_eq!(c.rolled_to(9), c, "a clock stepping back keeps the count");
    }

    #[test]
    fn packing_holds_every_index_until_max_time() {
        for window_ms in [1, 7, 1000, 60_000, 3_600_000, 86_400_000, 1 << 40] {
            let packing = Packing::for_window(window_ms);
            let last = locate(MAX_TIME_MS, window_ms, window_ms - 1).unwrap().index;
            let last = last.max(locate(MAX_TIME_MS, window_ms, 0).unwrap().index);
            let counter = Counter {
                index: last,
                count: packing.max_count(),
            };
            assert_eq!(
                packing.unpack(packing.pack(counter)),
                counter,
                "{window_ms}"
            );
        }
        assert_eq!(Packing::for_window(1).max_count(), (1 << 17) - 1);
        assert_eq!(Packing::for_window(1000).max_count(), (1 << 27) - 1);
        assert_eq!(Packing::for_window(60_000).max_count(), (1 << 33) - 1);
    }
}
