//! [`PartitionKey`]: the IETF headers' `pk` parameter, which is never the raw API key.

use std::fmt;
use std::hash::Hasher;

use siphasher::sip::SipHasher24;

/// The fixed, public SipHash key of [`PartitionKey::hash_of`]: the 16 ASCII bytes
/// `ratewindow-pk-v1`.
const PUBLIC_SIP_KEY: &[u8; 16] = b"ratewindow-pk-v1";

/// The most bytes a partition key holds: 32, the size of an HMAC-SHA-256.
const MAX_BYTES: usize = 32;
/// The base64 length of [`MAX_BYTES`] bytes.
pub(crate) const MAX_ENCODED: usize = MAX_BYTES.div_ceil(3) * 4;

/// The partition key of the IETF headers' `pk` parameter: which partition of the server's
/// quota (which client) the headers describe, serialized as an sf byte sequence
/// (`pk=:base64:`).
///
/// It must never be the raw API key, which the headers would otherwise echo to anything on the
/// response path (logs, proxies, caches). Build it from a hash:
///
/// - [`PartitionKey::hash_of`] hashes the key with SipHash-2-4 under a fixed, public key and
///   keeps its 8 bytes. It is stable across processes and releases, so every replica gives a
///   client the same `pk`. It is for partitioning, not secrecy: anyone can compute it for a
///   guessed key, so a guessable key can be confirmed from its `pk`.
/// - [`PartitionKey::keyed_hash_of`] does the same under a secret key of yours (SipHash is a
///   pseudo-random function under a secret key), so a `pk` reveals nothing without the secret.
/// - [`PartitionKey::from_bytes`] takes bytes you computed, e.g. an HMAC-SHA-256 of the key
///   (truncated or not): the choice when you already have one.
///
/// The base64 form is computed once, here, so writing headers only copies it.
///
/// # Example
///
/// ```
/// use ratewindow::http::PartitionKey;
///
/// let pk = PartitionKey::hash_of("otr_your_key");
/// assert_eq!(pk.as_base64().len(), 12); // 8 bytes
/// assert!(!pk.as_base64().contains("otr_your_key"));
///
/// let secret = *b"0123456789abcdef"; // load yours from configuration
/// assert_ne!(PartitionKey::keyed_hash_of("otr_your_key", &secret), pk);
///
/// let mine = PartitionKey::from_bytes(b"\x01\x02\x03").unwrap();
/// assert_eq!(mine.as_base64(), "AQID");
/// assert!(PartitionKey::from_bytes(&[0; 33]).is_none());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    encoded: [u8; MAX_ENCODED],
    len: u8,
}

impl PartitionKey {
    /// The most bytes [`from_bytes`](Self::from_bytes) accepts: 32, an HMAC-SHA-256.
    pub const MAX_BYTES: usize = MAX_BYTES;

    /// A partition key of `bytes`: 1 to [`MAX_BYTES`](Self::MAX_BYTES) of them, which should be
    /// a hash of the client's key, never the key itself. `None` when empty or longer.
    pub fn from_bytes(bytes: &[u8]) -> Option<PartitionKey> {
        if bytes.is_empty() || bytes.len() > MAX_BYTES {
            return None;
        }
        let mut encoded = [0; MAX_ENCODED];
        let len = base64_encode(bytes, &mut encoded);
        Some(PartitionKey {
            encoded,
            len: len as u8,
        })
    }

    /// The partition key of a client key: SipHash-2-4 of `key`'s bytes under the fixed, public
    /// SipHash key `ratewindow-pk-v1` (16 ASCII bytes), as its 8 output bytes in the reference
    /// implementation's order (the little-endian bytes of the 64-bit result).
    ///
    /// Stable: every process and every release gives the same key the same partition key (a
    /// test pins it). For partitioning, not secrecy; see [`keyed_hash_of`](Self::keyed_hash_of)
    /// or pass your own HMAC to [`from_bytes`](Self::from_bytes) when keys may be guessable.
    pub fn hash_of(key: impl AsRef<[u8]>) -> PartitionKey {
        Self::keyed_hash_of(key, PUBLIC_SIP_KEY)
    }

    /// The partition key of a client key under your `secret`: SipHash-2-4 of `key`'s bytes
    /// keyed with `secret`, as its 8 output bytes in the reference implementation's order.
    /// Without the secret, a `pk` neither reveals nor confirms the key. Keep the secret the same
    /// across replicas so a client's `pk` is too.
    pub fn keyed_hash_of(key: impl AsRef<[u8]>, secret: &[u8; 16]) -> PartitionKey {
        let mut hasher = SipHasher24::new_with_key(secret);
        hasher.write(key.as_ref());
        let bytes = hasher.finish().to_le_bytes();
        let mut encoded = [0; MAX_ENCODED];
        let len = base64_encode(&bytes, &mut encoded);
        PartitionKey {
            encoded,
            len: len as u8,
        }
    }

    /// The bytes in standard base64 with padding (RFC 4648, section 4), as the sf byte sequence
    /// carries them between colons.
    pub fn as_base64(&self) -> &str {
        // Only base64 alphabet bytes were written.
        std::str::from_utf8(self.base64_bytes()).unwrap_or_default()
    }

    pub(crate) fn base64_bytes(&self) -> &[u8] {
        &self.encoded[..usize::from(self.len)]
    }
}

impl fmt::Debug for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PartitionKey")
            .field(&self.as_base64())
            .finish()
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with `=` padding, written into `out` (at least `4 * ceil(len / 3)` bytes);
/// returns the length written.
fn base64_encode(bytes: &[u8], out: &mut [u8]) -> usize {
    let mut len = 0;
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let sextet = |shift: u32| ALPHABET[((n >> shift) & 0x3f) as usize];
        let quad = [
            sextet(18),
            sextet(12),
            if chunk.len() > 1 { sextet(6) } else { b'=' },
            if chunk.len() > 2 { sextet(0) } else { b'=' },
        ];
        out[len..len + 4].copy_from_slice(&quad);
        len += 4;
    }
    len
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A naive decoder, the reference the encoder is checked against.
    pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
        if text.len() % 4 != 0 {
            return None;
        }
        let value = |c: u8| ALPHABET.iter().position(|&a| a == c).map(|v| v as u32);
        let mut out = Vec::new();
        for quad in text.as_bytes().chunks(4) {
            let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
            let mut n = 0u32;
            for &c in &quad[..4 - pad] {
                n = n << 6 | value(c)?;
            }
            n <<= 6 * pad as u32;
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&bytes[..3 - pad]);
        }
        Some(out)
    }

    fn encode(bytes: &[u8]) -> String {
        let mut out = vec![0; bytes.len().div_ceil(3) * 4];
        let len = base64_encode(bytes, &mut out);
        String::from_utf8(out[..len].to_vec()).unwrap()
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in vectors {
            assert_eq!(encode(input.as_bytes()), expected);
        }
        assert_eq!(encode(&[0xfb, 0xff, 0xfe]), "+//+");
    }

    proptest! {
        #[test]
        fn base64_round_trips(bytes in proptest::collection::vec(any::<u8>(), 1..=32)) {
            let pk = PartitionKey::from_bytes(&bytes).unwrap();
            prop_assert_eq!(pk.as_base64(), encode(&bytes));
            prop_assert_eq!(base64_decode(pk.as_base64()), Some(bytes));
        }
    }

    #[test]
    fn from_bytes_bounds() {
        assert!(PartitionKey::from_bytes(&[]).is_none());
        assert!(PartitionKey::from_bytes(&[7; 33]).is_none());
        let max = PartitionKey::from_bytes(&[0xff; 32]).unwrap();
        assert_eq!(max.as_base64().len(), MAX_ENCODED);
        assert_eq!(
            format!("{:?}", PartitionKey::from_bytes(b"foo").unwrap()),
            r#"PartitionKey("Zm9v")"#
        );
    }

    #[test]
    fn siphash_is_the_reference_siphash_2_4() {
        // The first vector of the SipHash reference implementation (vectors.h): key 00..0f,
        // empty message, output bytes 31 0e 0e dd 47 db 6f 72.
        let key: [u8; 16] = std::array::from_fn(|i| i as u8);
        let pk = PartitionKey::keyed_hash_of(b"", &key);
        assert_eq!(
            base64_decode(pk.as_base64()).unwrap(),
            [0x31, 0x0e, 0x0e, 0xdd, 0x47, 0xdb, 0x6f, 0x72]
        );
    }

    #[test]
    fn hash_of_is_stable() {
        // Pins the documented derivation: a change here changes every client's `pk` and must be
        // a new, documented version of the public SipHash key.
        let pk = PartitionKey::hash_of("otr_your_key");
        assert_eq!(
            pk,
            PartitionKey::keyed_hash_of("otr_your_key", PUBLIC_SIP_KEY)
        );
        assert_eq!(pk.as_base64(), PINNED_OTR_YOUR_KEY);
        assert_ne!(PartitionKey::hash_of("otr_your_kez"), pk);
        assert_ne!(
            PartitionKey::keyed_hash_of("otr_your_key", b"another 16 bytes"),
            pk
        );
    }

    const PINNED_OTR_YOUR_KEY: &str = "kq44CxugRB0=";
}
