//! Integer header values without an allocation where one can be spared: small integers come
//! from a static table, and values that change once per window (a quota's limit, its reset
//! time) from a small per-thread cache that hands out shared copies.

use std::cell::RefCell;
use std::fmt::Write;
use std::sync::LazyLock;
use std::thread::LocalKey;

use ::http::HeaderValue;

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
        _ => HeaderValue::from(n),
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
                    return HeaderValue::from(n);
                };
                match &slots[slot] {
                    Some((cached, value)) if *cached == n => value.clone(),
                    _ => {
                        let value = HeaderValue::from(n);
                        slots[slot] = Some((n, value.clone()));
                        value
                    }
                }
            })
            // The thread is exiting: no cache, but still the right value.
            .unwrap_or_else(|_| HeaderValue::from(n))
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
            // Twice each, and values sharing a slot in between: the cache never mixes them up.
            assert_eq!(LIMITS.int(n), expected.as_str());
            assert_eq!(
                RESETS.int(n + SLOTS as u64),
                (n + SLOTS as u64).to_string().as_str()
            );
            assert_eq!(LIMITS.int(n), expected.as_str());
        }
    }
}
