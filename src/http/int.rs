//! Integer header values without an allocation where one can be spared: small integers come
//! from a static table, values that change once per window (a quota's limit, its reset time)
//! from a small per-thread cache that hands out shared copies, and any other integer is
//! written into a per-thread chunk of bytes that many values share.

use std::cell::RefCell;
use std::fmt::Write;
use std::sync::LazyLock;
use std::thread::LocalKey;

use ::http::HeaderValue;
use bytes::BytesMut;

/// Integers below this come from [`SMALL`].
const SMALL_LEN: usize = 1024;

/// `0..SMALL_LEN` as static header values: cloning one copies a pointer, nothing more.
static SMALL: LazyLock<Box<[HeaderValue]>> = LazyLock::new(|| {
    // One leaked buffer of all the digits, made once per process (under 3 KiB).
    let mut digits = String::new();
    let mut ends = Vec::with_capacity(SMALL_LEN);
    for n in 0..SMALL_LEN {
        let _ = write!(digits, "{n}");
        ends.push(digits.len());
    }
    let digits: &'static str = Box::leak(digits.into_boxed_str());
    let mut start = 0;
    ends.into_iter()
        .map(|end| {
            let value = HeaderValue::from_static(&digits[start..end]);
            start = end;
            value
        })
        .collect()
});

/// `n` as a header value; from the static table when it is small.
#[inline]
pub(crate) fn int(n: u64) -> HeaderValue {
    match usize::try_from(n) {
        Ok(small) if small < SMALL_LEN => SMALL[small].clone(),
        _ => formatted(n),
    }
}

/// Bytes per chunk: room for a dozen to two dozen integers. Small on purpose: a value keeps its
/// whole chunk alive, and some values outlive their response (HTTP/2's HPACK table keeps a copy
/// of each header it indexes for the connection's life, and the caches below keep theirs), so
/// the chunk size bounds what each such copy can hold on to.
const CHUNK: usize = 256;

thread_local! {
    /// The unused rest of this thread's current chunk.
    static CHUNK_REST: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `n` as a header value sharing this thread's chunk (see [`chunked`]).
fn formatted(n: u64) -> HeaderValue {
    let mut digits = [0u8; 20];
    chunked(decimal(n, &mut digits)).unwrap_or_else(|| HeaderValue::from(n))
}

/// `bytes` as a header value written into this thread's current chunk, which many values
/// share: a value costs an atomic increment (and its drop a decrement) instead of an
/// allocation and a free. A chunk is freed when its last value is; a value that outlives its
/// response keeps at most [`CHUNK`] bytes alive. `None` if `bytes` is not a valid header
/// value.
pub(crate) fn chunked(bytes: &[u8]) -> Option<HeaderValue> {
    CHUNK_REST
        .try_with(|rest| {
            let Ok(mut rest) = rest.try_borrow_mut() else {
                return HeaderValue::from_bytes(bytes).ok();
            };
            if rest.capacity() < bytes.len() {
                // Reclaims the chunk in place when every value written into it has been
                // dropped, or starts a new one.
                rest.reserve(CHUNK.max(bytes.len()));
            }
            rest.extend_from_slice(bytes);
            HeaderValue::from_maybe_shared(rest.split().freeze()).ok()
        })
        // The thread is exiting: no chunk, but still the right value.
        .unwrap_or_else(|_| HeaderValue::from_bytes(bytes).ok())
}

/// `n` in decimal, in the tail of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[start..];
        }
    }
}

/// Slots per thread and cache; a value's slot is fixed by the value (direct-mapped).
const SLOTS: usize = 8;

/// A per-thread cache of integer header values that repeat from request to request.
pub(crate) struct Cache(&'static LocalKey<Slots>);

/// One thread's slots of one [`Cache`]: a value and its header value.
type Slots = RefCell<[Option<(u64, HeaderValue)>; SLOTS]>;

/// A quota's limit: the same for every request.
pub(crate) static LIMITS: Cache = Cache(&LIMITS_SLOTS);
/// A window's end: the same for every request of the window.
pub(crate) static RESETS: Cache = Cache(&RESETS_SLOTS);

thread_local! {
    static LIMITS_SLOTS: Slots =
        const { RefCell::new([const { None }; SLOTS]) };
    static RESETS_SLOTS: Slots =
        const { RefCell::new([const { None }; SLOTS]) };
}

impl Cache {
    /// `n` as a header value: a shared copy of the one this thread made last time, if any.
    #[inline]
    pub(crate) fn int(&'static self, n: u64) -> HeaderValue {
        if n < SMALL_LEN as u64 {
            return int(n);
        }
        let slot = (n as usize) % SLOTS;
        self.0
            .try_with(|slots| {
                let Ok(mut slots) = slots.try_borrow_mut() else {
                    return formatted(n);
                };
                match &slots[slot] {
                    Some((cached, value)) if *cached == n => value.clone(),
                    _ => {
                        let value = formatted(n);
                        slots[slot] = Some((n, value.clone()));
                        value
                    }
                }
            })
            // The thread is exiting: no cache, but still the right value.
            .unwrap_or_else(|_| formatted(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_the_decimal_integers() {
        for n in (0..2048).chain([
            u64::from(u32::MAX),
            (1 << 33) - 1,
            1_800_000_060,
            u64::MAX - SLOTS as u64,
        ]) {
            let expected = n.to_string();
            assert_eq!(int(n), expected.as_str());
            assert_eq!(formatted(n), expected.as_str());
            // Twice each, and values sharing a slot in between: the cache never mixes them up.
            assert_eq!(LIMITS.int(n), expected.as_str());
            assert_eq!(
                RESETS.int(n + SLOTS as u64),
                (n + SLOTS as u64).to_string().as_str()
            );
            assert_eq!(LIMITS.int(n), expected.as_str());
        }
    }

    #[test]
    fn values_from_one_chunk_stay_intact_as_it_fills_and_is_reclaimed() {
        // Enough values to fill several chunks while the first ones are alive, then again
        // after they are dropped (the chunk is reused in place).
        for _ in 0..2 {
            let values: Vec<(u64, HeaderValue)> = (0..30 * CHUNK as u64 / 10)
                .map(|i| {
                    let n = u64::MAX - i * 7_919;
                    (n, formatted(n))
                })
                .collect();
            for (n, value) in &values {
                assert_eq!(value, n.to_string().as_str());
            }
        }
        assert_eq!(formatted(0), "0");
        assert_eq!(formatted(1_024), "1024");
        let long = "a".repeat(2 * CHUNK);
        assert_eq!(chunked(long.as_bytes()).unwrap(), long.as_str());
        assert_eq!(chunked(b"\"q\";r=1").unwrap(), "\"q\";r=1");
        assert!(chunked(b"bad\nvalue").is_none());
    }
}
