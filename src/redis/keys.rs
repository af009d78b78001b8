//! The Redis key layout: `<prefix>:{<key>}:<window_ms>:<window index>`, one integer counter
//! per user key, quota window length and window.
//!
//! The user key becomes the hash tag, so every counter of one decision lives in one Cluster slot
//! and the script may touch them together. A user key may contain anything, `{` and `}`
//! included, so it is escaped first: `%` → `%25`, `{` → `%7B`, `}` → `%7D`. The escaped key has
//! no braces, which makes the first `{`…`}` pair exactly the tag we wrote, and the escaping is
//! reversible, so two user keys never share a Redis key. The prefix may contain neither brace.
//!
//! Each window has a counter of its own, so a counter is a plain integer (`INCRBY`) that lives
//! until its window ends plus the skew allowance, and a clock that steps back meets the earlier
//! window's own counter. Counters of the earlier layout (`<prefix>:{<key>}:<window_ms>`, no
//! window index, holding `"<index>:<count>"`) never share a name with these.

use std::fmt::Write;

use crate::{ConfigError, MAX_QUOTAS, Quota};

/// Checks a prefix: not empty, no braces (they would move the hash tag).
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), ConfigError> {
    if prefix.is_empty() {
        return Err(ConfigError::InvalidSetting {
            reason: "the Redis key prefix is empty",
        });
    }
    if prefix.contains(['{', '}']) {
        return Err(ConfigError::InvalidSetting {
            reason: "the Redis key prefix contains a brace, which would move the hash tag",
        });
    }
    Ok(())
}

/// `<prefix>:{<escaped key>}:`, to which each quota appends its window length (see
/// [`push_window`] and [`push_counter`]).
pub(crate) fn base(prefix: &str, key: &str) -> String {
    // Room for a counter's suffix too: the window length and index.
    let mut out = String::with_capacity(prefix.len() + key.len() + 40);
    out.push_str(prefix);
    out.push_str(":{");
    let mut rest = key;
    // Most keys have nothing to escape: copy the runs between escapes whole.
    while let Some(at) = rest.find(['%', '{', '}']) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'%' => "%25",
            b'{' => "%7B",
            _ => "%7D",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out.push_str("}:");
    out
}

/// Appends `<window_ms>:` to a [`base`]: every counter of that quota window starts with it.
pub(crate) fn push_window(name: &mut String, window_ms: u64) {
    // Writing into a String cannot fail.
    let _ = write!(name, "{window_ms}:");
}

/// Appends `<window_ms>:<index>` to a [`base`]: the name of that window's counter.
pub(crate) fn push_counter(name: &mut String, window_ms: u64, index: u64) {
    let _ = write!(name, "{window_ms}:{index}");
}

/// The counters a limiter's quotas use: one per distinct window length, since quotas of the same
/// length count the same requests in the same windows (they differ only in their limits).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counters {
    len: usize,
    /// Counter `j`'s window length, and the smallest limit of the quotas that use it.
    counters: [(u64, u64); MAX_QUOTAS],
    /// Quota `i` uses counter `of[i]`.
    of: [u8; MAX_QUOTAS],
}

impl Counters {
    /// `quotas` has at most [`MAX_QUOTAS`] entries.
    pub(crate) fn new(quotas: &[Quota]) -> Counters {
        let mut counters = Counters {
            len: 0,
            counters: [(0, 0); MAX_QUOTAS],
            of: [0; MAX_QUOTAS],
        };
        for (i, quota) in quotas.iter().enumerate().take(MAX_QUOTAS) {
            let window_ms = quota.window_ms();
            let known = counters.iter().position(|(w, _)| w == window_ms);
            let j = known.unwrap_or(counters.len);
            if known.is_none() {
                counters.counters[j] = (window_ms, u64::MAX);
                counters.len += 1;
            }
            let limit = &mut counters.counters[j].1;
            *limit = (*limit).min(quota.limit());
            counters.of[i] = j as u8;
        }
        counters
    }

    /// How many counters there are.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Each counter's (window length, smallest limit).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counters[..self.len].iter().copied()
    }

    /// The counter quota `i` uses.
    pub(crate) fn of(&self, i: usize) -> usize {
        usize::from(self.of[i])
    }
}

/// The number of Redis Cluster hash slots.
pub(crate) const SLOTS: usize = 16_384;

/// The Cluster hash slot of every counter under `base` (from [`base`]): CRC16 (XMODEM) of the
/// hash tag, modulo [`SLOTS`], as Redis computes it.
pub(crate) fn slot(base: &str) -> u16 {
    let open = base.find('{').map_or(0, |i| i + 1);
    let close = base[open..].find('}').map_or(base.len(), |i| open + i);
    crc16(&base.as_bytes()[open..close]) % SLOTS as u16
}

/// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, as in the Redis Cluster spec.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash tag Redis Cluster would use for `key`.
    fn tag(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = open + key[open..].find('}').unwrap();
        &key[open + 1..close]
    }

    #[test]
    fn hostile_keys_keep_their_own_tag_and_never_collide() {
        let keys = [
            "a", "{a}", "}a{", "a}b", "%7Ba%7D", "%", ":60000", "a}:60000", "\n", "{}",
        ];
        let mut seen = std::collections::HashSet::new();
        for key in keys {
            let base = base("rw", key);
            assert!(seen.insert(base.clone()), "{key:?} collides");
            assert!(!tag(&base).is_empty());
            assert!(!tag(&base).contains(['{', '}']));
            // Every counter of the key carries the same tag.
            assert_eq!(tag(&format!("{base}60000")), tag(&format!("{base}1000")));
        }
        assert_eq!(base("rw", "user:1"), "rw:{user:1}:");
        assert_eq!(base("rw", "{x}%"), "rw:{%7Bx%7D%25}:");
    }

    /// Inverts `base` for the prefix it was made with: `None` unless `redis_key` has exactly
    /// the layout `base` writes, with every `%` starting one of the three escapes.
    fn unescape(prefix: &str, redis_key: &str) -> Option<String> {
        let inner = redis_key.strip_prefix(prefix)?.strip_prefix(":{")?;
        let inner = inner.strip_suffix("}:")?;
        let mut key = String::new();
        let mut rest = inner;
        while let Some(c) = rest.chars().next() {
            let (decoded, len) = match c {
                '{' | '}' => return None,
                '%' => match rest.get(..3)? {
                    "%25" => ('%', 3),
                    "%7B" => ('{', 3),
                    "%7D" => ('}', 3),
                    _ => return None,
                },
                c => (c, c.len_utf8()),
            };
            key.push(decoded);
            rest = &rest[len..];
        }
        Some(key)
    }

    /// Keys made mostly of the characters the escaping cares about, and any text at all.
    fn key() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "[%{}:7BDbd25a]{0,12}",
            any::<String>(),
            proptest::collection::vec(any::<char>(), 0..6).prop_map(|c| c.into_iter().collect()),
        ]
    }

    proptest::proptest! {
        /// Injective and well-formed for any key: `base` decodes back to the key it was made
        /// from (so two distinct keys never share a Redis key, for any quota window appended),
        /// and Redis Cluster's hash tag is exactly the escaped key, the same for every window.
        #[test]
        fn any_key_escapes_reversibly_into_its_own_hash_tag(
            prefix in "[^{}]{1,8}",
            a in key(),
            b in key(),
            window_a in 1..=(1u64 << 40),
            window_b in 1..=(1u64 << 40),
            index_a in 0..=(1u64 << 46),
            index_b in 0..=(1u64 << 46),
        ) {
            let (base_a, base_b) = (base(&prefix, &a), base(&prefix, &b));
            proptest::prop_assert_eq!(unescape(&prefix, &base_a), Some(a.clone()));
            proptest::prop_assert_eq!(base_a == base_b, a == b);
            let (mut full_a, mut full_b) = (base_a.clone(), base_b.clone());
            push_counter(&mut full_a, window_a, index_a);
            push_counter(&mut full_b, window_b, index_b);
            proptest::prop_assert_eq!(
                full_a == full_b,
                a == b && window_a == window_b && index_a == index_b
            );
            // A counter of the earlier layout (no window index) never has a counter's name.
            proptest::prop_assert_ne!(&full_a, &format!("{base_b}{window_b}"));
            // The script names a counter by appending the index to the window's name.
            let mut window_name = base_a.clone();
            push_window(&mut window_name, window_a);
            proptest::prop_assert_eq!(format!("{window_name}{index_a}"), full_a.clone());
            // The tag Redis would hash: from the first `{` to the first `}` after it.
            let tagged = tag(&full_a);
            let braced = tagged.contains(['{', '}']);
            proptest::prop_assert!(!braced, "tag {:?}", tagged);
            proptest::prop_assert_eq!(tagged, tag(&base_a));
            proptest::prop_assert_eq!(unescape(&prefix, &format!("{prefix}:{{{tagged}}}:")), Some(a));
        }
    }

    #[test]
    fn slots_are_redis_clusters() {
        // The spec's check value, and `CLUSTER KEYSLOT foo`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot("rw:{foo}:"), 12_182);
        assert_eq!(slot(&base("rw", "foo")), 12_182);
        assert_eq!(slot(&base("other", "foo")), 12_182);
    }

    #[test]
    fn quotas_of_one_window_length_share_a_counter_at_their_smallest_limit() {
        let quota = |limit, window_ms| Quota::from_millis(limit, window_ms).unwrap();
        let counters = Counters::new(&[quota(5, 1000), quota(100, 60_000), quota(3, 1000)]);
        assert_eq!(counters.len(), 2);
        assert_eq!(
            counters.iter().collect::<Vec<_>>(),
            [(1000, 3), (60_000, 100)]
        );
        assert_eq!([counters.of(0), counters.of(1), counters.of(2)], [0, 1, 0]);
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(validate_prefix("ratewindow").is_ok());
        assert!(validate_prefix("").is_err());
        assert!(validate_prefix("a{b").is_err());
        assert!(validate_prefix("a}b").is_err());
    }
}
