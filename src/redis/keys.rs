//! The Redis key layout: `<prefix>:{<key>}:<window_ms>`, one key per user key and quota window.
//!
//! The user key becomes the hash tag, so every counter of one decision lives in one Cluster slot
//! and the script may touch them together. A user key may contain anything, `{` and `}`
//! included, so it is escaped first: `%` → `%25`, `{` → `%7B`, `}` → `%7D`. The escaped key has
//! no braces, which makes the first `{`…`}` pair exactly the tag we wrote, and the escaping is
//! reversible, so two user keys never share a Redis key. The prefix may contain neither brace.
//!
//! The window length is in the name and the window's index in the value, next to the count: a
//! clock that steps back must find the later window's count (as in memory), which per-window
//! key names would hide.

use crate::Error;

/// Checks a prefix: not empty, no braces (they would move the hash tag).
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), Error> {
    if prefix.is_empty() {
        return Err(Error::InvalidConfig {
            reason: "the Redis key prefix is empty",
        });
    }
    if prefix.contains(['{', '}']) {
        return Err(Error::InvalidConfig {
            reason: "the Redis key prefix contains a brace, which would move the hash tag",
        });
    }
    Ok(())
}

/// `<prefix>:{<escaped key>}:`, to which each quota appends its window length.
pub(crate) fn base(prefix: &str, key: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + key.len() + 24);
    out.push_str(prefix);
    out.push_str(":{");
    for c in key.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out.push_str("}:");
    out
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
        ) {
            let (base_a, base_b) = (base(&prefix, &a), base(&prefix, &b));
            proptest::prop_assert_eq!(unescape(&prefix, &base_a), Some(a.clone()));
            proptest::prop_assert_eq!(base_a == base_b, a == b);
            let (full_a, full_b) = (format!("{base_a}{window_a}"), format!("{base_b}{window_b}"));
            proptest::prop_assert_eq!(full_a == full_b, a == b && window_a == window_b);
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
    fn prefixes_are_checked() {
        assert!(validate_prefix("ratewindow").is_ok());
        assert!(validate_prefix("").is_err());
        assert!(validate_prefix("a{b").is_err());
        assert!(validate_prefix("a}b").is_err());
    }
}
