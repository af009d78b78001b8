//! How the in-memory backend identifies a key: 16 bytes, whatever the key.
//!
//! A key of up to 15 bytes *is* its id: its bytes and its length, packed into two words, so
//! short keys (user ids, IPs, most tenant names) are compared exactly and cost no hashing
//! beyond the map's own. A longer key is identified by a 120-bit SipHash-1-3 fingerprint under
//! a secret drawn per limiter, with the length byte set to 0xFF so it can never equal a short
//! key's id.
//!
//! I chose fixed 16-byte ids over storing keys because every entry then has the same small size
//! (a 4 KiB key costs what a 4-byte one does, so `max_keys` bounds bytes, not just entries),
//! there is no per-key heap allocation, and API keys are not kept in process memory. SipHash is
//! a keyed PRF: two distinct long keys share an id with probability 2^-120 per pair, and nobody
//! can pick colliding keys without the secret; with a million live keys the chance that any two
//! share a counter is below 10^-23.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};

use siphasher::sip128::{Hasher128, SipHasher13};

/// Keys this long or shorter are stored verbatim.
const INLINE_LEN: usize = 15;
/// The length byte of a fingerprinted key.
const FINGERPRINT_TAG: u64 = 0xFF;

/// A key's identity in the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyId([u64; 2]);

/// A free slot: tables fill new slots with the default id.
impl Default for KeyId {
    fn default() -> KeyId {
        KeyId::VACANT
    }
}

impl KeyId {
    /// No key's id: a short id's length byte is at least 1 and a fingerprint's is 0xFF, so the
    /// second word of a real id is never 0. Marks a free slot.
    pub(crate) const VACANT: KeyId = KeyId([0, 0]);

    #[cfg(all(test, not(ratewindow_dashmap)))]
    pub(crate) fn from_words(first: u64, second: u64) -> KeyId {
        KeyId([first, second])
    }

    #[cfg(all(test, not(ratewindow_dashmap)))]
    pub(crate) fn words(self) -> [u64; 2] {
        self.0
    }
}

impl Hash for KeyId {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0[0]);
        state.write_u64(self.0[1]);
    }
}

/// Makes ids, with one secret per limiter for the keys it fingerprints.
#[derive(Debug, Clone)]
pub(crate) struct KeyIds {
    k0: u64,
    k1: u64,
}

impl KeyIds {
    /// Draws a fresh secret from the OS through std's `RandomState`.
    pub(crate) fn random() -> KeyIds {
        let draw = || RandomState::new().hash_one(0x5eed_u64);
        KeyIds {
            k0: draw(),
            k1: draw(),
        }
    }

    /// The id of a valid (non-empty) key. Short keys take a few loads and no call, in any
    /// caller: this is on every decision's path.
    #[inline(always)]
    pub(crate) fn of(&self, key: &str) -> KeyId {
        let bytes = key.as_bytes();
        let len = bytes.len();
        // The key's bytes in two words, with the length in the top byte of the second. Every
        // read below is of fixed width, and the pairs of reads overlap for lengths between the
        // widths; with the length known, the words still determine every byte.
        let (first, rest) = match len {
            // Bytes 0..8, then the last 7.
            8..=INLINE_LEN => (read::<8>(bytes, 0), read::<8>(bytes, len - 8) >> 8),
            4..=7 => (read::<4>(bytes, 0) | read::<4>(bytes, len - 4) << 32, 0),
            1..=3 => {
                let (a, b, c) = (bytes[0], bytes[len / 2], bytes[len - 1]);
                (u64::from(a) | u64::from(b) << 8 | u64::from(c) << 16, 0)
            }
            _ => return self.fingerprint(bytes),
        };
        KeyId([first, rest | (len as u64) << 56])
    }

    /// The id of a key too long to store: its keyed 120-bit fingerprint.
    #[inline(never)]
    fn fingerprint(&self, bytes: &[u8]) -> KeyId {
        let mut hasher = SipHasher13::new_with_keys(self.k0, self.k1);
        hasher.write(bytes);
        let hash = hasher.finish128();
        KeyId([hash.h1, (hash.h2 & (u64::MAX >> 8)) | FINGERPRINT_TAG << 56])
    }
}

/// `N` (4 or 8) bytes from `at` as a little-endian word; the caller checked the length.
#[inline(always)]
fn read<const N: usize>(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word[..N].copy_from_slice(&bytes[at..at + N]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn short_keys_are_exact_and_distinct() {
        let ids = KeyIds::random();
        let keys: Vec<String> = (0..=INLINE_LEN)
            .flat_map(|len| ["a", "b", "\0", "é"].map(|c| c.repeat(len)))
            .chain(
                [
                    "user:000001",
                    "user:000010",
                    "12345678",
                    "123456789",
                    "0123456789abcde",
                ]
                .map(String::from),
            )
            .collect();
        let unique: HashSet<&String> = keys.iter().collect();
        let id_set: HashSet<KeyId> = unique
            .iter()
            .map(|k| ids.of(k))
            .collect::<Vec<_>>()
            .into_iter()
            .collect();
        assert_eq!(id_set.len(), unique.len());
        // Short ids do not depend on the secret.
        assert_eq!(ids.of("user:1"), KeyIds::random().of("user:1"));
    }

    proptest::proptest! {
        /// Short ids are exact: two keys of up to 15 bytes share an id only if they are equal,
        /// including keys of 8 to 15 bytes that differ only where the two reads overlap.
        #[test]
        fn distinct_short_keys_get_distinct_ids(
            a in proptest::collection::vec(proptest::num::u8::ANY, 1..=INLINE_LEN),
            b in proptest::collection::vec(proptest::num::u8::ANY, 1..=INLINE_LEN),
            flip in 0..INLINE_LEN,
        ) {
            let ids = KeyIds::random();
            let text = |bytes: &[u8]| bytes.iter().map(|&b| char::from(b % 128)).collect::<String>();
            let (a, b) = (text(&a), text(&b));
            proptest::prop_assert_eq!(ids.of(&a) == ids.of(&b), a == b);
            // The same key with one byte changed.
            let mut c = a.clone().into_bytes();
            let at = flip % c.len();
            c[at] = (c[at] + 1) % 128;
            let c = String::from_utf8(c).unwrap();
            proptest::prop_assert_ne!(ids.of(&a), ids.of(&c));
        }
    }

    #[test]
    fn long_keys_are_fingerprinted_per_secret() {
        let a = KeyIds::random();
        let b = KeyIds::random();
        let long = "0123456789abcdef";
        assert_eq!(a.of(long), a.of(long));
        assert_ne!(a.of(long), a.of("0123456789abcdeg"));
        assert_ne!(a.of(long), b.of(long));
        assert_eq!(a.of(long).0[1] >> 56, FINGERPRINT_TAG);
    }
}
