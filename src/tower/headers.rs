//! What the layer writes into a response: the header style and, for the IETF fields, the
//! request's partition key.

use std::fmt;

use ::http::HeaderMap;

use crate::Decision;
use crate::http::{HeaderStyle, PartitionKey, write_headers_partitioned};

/// How [`RateLimitLayer`](super::RateLimitLayer) fills the IETF fields' `pk` parameter, which
/// tells a client which partition of the server's quota (which of its keys) the fields
/// describe. Only written in a style with the IETF fields; never the key itself.
///
/// # Example
///
/// ```
/// use ratewindow::http::{HeaderStyle, IetfDraft};
/// use ratewindow::tower::{HeaderKey, PartitionKeys, RateLimitLayer};
/// use ratewindow::{MemoryLimiter, Quota};
///
/// let secret = *b"0123456789abcdef"; // load yours from configuration
/// let layer = RateLimitLayer::new(
///     MemoryLimiter::new(Quota::per_minute(100)?)?,
///     HeaderKey::from_static("x-api-key"),
/// )
/// .header_style(HeaderStyle::ietf(IetfDraft::Draft10))
/// .partition_keys(PartitionKeys::Keyed(secret));
/// # Ok::<(), ratewindow::Error>(())
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PartitionKeys {
    /// No `pk` (the default).
    #[default]
    None,
    /// [`PartitionKey::hash_of`] the key: the same in every process and release, but anyone
    /// can compute it for a guessed key. Not for keys from a small space, such as client IP
    /// addresses (a fallback key): all 2^32 IPv4 addresses are quickly tried; use `Keyed`.
    Public,
    /// [`PartitionKey::keyed_hash_of`] the key under this secret: reveals nothing about the key
    /// without the secret; every instance given the same secret gives a key the same `pk`.
    Keyed([u8; 16]),
}

impl fmt::Debug for PartitionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.write_str(match self {
            PartitionKeys::None => "None",
            PartitionKeys::Public => "Public",
            PartitionKeys::Keyed(_) => "Keyed(..)",
        })
    }
}

/// The headers one request's answer gets: the layer's style, and the request's partition key
/// when the style has IETF fields and the layer makes partition keys (boxed: most layers don't,
/// and the response future stays small).
#[derive(Debug)]
pub(crate) struct ResponseHeaders {
    style: HeaderStyle,
    partition: Option<Box<PartitionKey>>,
}

impl ResponseHeaders {
    /// For a request charged to `key`.
    pub(crate) fn for_key(style: HeaderStyle, keys: PartitionKeys, key: &str) -> Self {
        let partition = match keys {
            _ if style.ietf_draft().is_none() => None,
            PartitionKeys::None => None,
            PartitionKeys::Public => Some(Box::new(PartitionKey::hash_of(key))),
            PartitionKeys::Keyed(secret) => {
                Some(Box::new(PartitionKey::keyed_hash_of(key, &secret)))
            }
        };
        ResponseHeaders { style, partition }
    }

    /// Without a partition key.
    pub(crate) fn plain(style: HeaderStyle) -> Self {
        ResponseHeaders {
            style,
            partition: None,
        }
    }

    /// Writes `decision`'s headers into `headers`.
    pub(crate) fn write(&self, decision: &Decision, headers: &mut HeaderMap) {
        write_headers_partitioned(decision, self.style, self.partition.as_deref(), headers);
    }
}
