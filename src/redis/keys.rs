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

    #[test]
    fn prefixes_are_checked() {
        assert!(validate_prefix("ratewindow").is_ok());
        assert!(validate_prefix("").is_err());
        assert!(validate_prefix("a{b").is_err());
        assert!(validate_prefix("a}b").is_err());
    }
}
