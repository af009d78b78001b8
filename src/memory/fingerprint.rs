//! Keys are stored as 128-bit keyed fingerprints, not as strings.
//!
//! I chose this over storing the key because it makes every entry the same small size whatever
//! the key's length (a 4 KiB key costs what a 4-byte one does, so `max_keys` bounds bytes, not
//! just entries), saves the key's heap allocation, and keeps API keys out of process memory.
//! The fingerprint is SipHash-1-3 with a random 128-bit key drawn per limiter, a keyed PRF: two
//! distinct keys collide with probability 2^-128 per pair, and nobody can choose keys that
//! collide without knowing the secret. With a million live keys the chance that any two share a
//! counter is below 10^-26.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

use siphasher::sip128::{Hasher128, SipHasher13};

/// A key's fingerprint: `shard` picks the shard, `slot` is the hash inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub(crate) shard: u64,
    pub(crate) slot: u64,
}

impl Hash for Fingerprint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.slot);
    }
}

/// Computes fingerprints with one secret per limiter.
#[derive(Debug, Clone)]
pub(crate) struct Fingerprinter {
    k0: u64,
    k1: u64,
}

impl Fingerprinter {
    /// A fingerprinter with a fresh random secret, drawn from the OS through std's `RandomState`.
    pub(crate) fn random() -> Fingerprinter {
        let draw = || RandomState::new().hash_one(0x5eed_u64);
        Fingerprinter {
            k0: draw(),
            k1: draw(),
        }
    }

    pub(crate) fn of(&self, key: &str) -> Fingerprint {
        let mut hasher = SipHasher13::new_with_keys(self.k0, self.k1);
        hasher.write(key.as_bytes());
        let hash = hasher.finish128();
        Fingerprint {
            shard: hash.h1,
            slot: hash.h2,
        }
    }
}

/// The map's hasher: the fingerprint is already uniformly random, so it passes through.
#[derive(Debug, Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `Fingerprint` is hashed, and it writes one u64; stay total regardless.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}

pub(crate) type BuildPassThrough = BuildHasherDefault<PassThrough>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_per_secret_and_stable() {
        let a = Fingerprinter::random();
        let b = Fingerprinter::random();
        assert_eq!(a.of("user:1"), a.of("user:1"));
        assert_ne!(a.of("user:1"), a.of("user:2"));
        assert_ne!(
            a.of("user:1"),
            b.of("user:1"),
            "secrets are drawn per limiter"
        );
    }
}
