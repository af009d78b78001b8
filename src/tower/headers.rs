//! What the layer writes into a response: the header style and, for the IETF fields, the
//! request's partition key.

use std::fmt;

use ::http::{HeaderMap, HeaderValue};

use super::outcome::Outcome;
use crate::http::{HeaderStyle, PartitionKey, RETRY_AFTER, write_headers};
use crate::{DecidedBy, Decision};

/// `Retry-After` of a fail-closed `503`: a networked limiter tries its backend again within a
/// second, so a retry then may well be decided normally.
pub(crate) const FAIL_CLOSED_RETRY_AFTER_SECS: u64 = 1;

/// `Retry-After` of an over-capacity answer: when the key's window ends, which is when the
/// limiter can next forget keys (for epoch-aligned windows, every key's). `None` without a
/// look at the key's quotas.
pub(crate) fn over_capacity_retry_secs(outcome: &Outcome) -> Option<u64> {
    let Outcome::OverCapacity(Some(stands)) = outcome else {
        return None;
    };
    let to_reset = stands.time_to_reset();
    Some((to_reset.as_secs() + u64::from(to_reset.subsec_nanos() > 0)).max(1))
}

/// How [`RateLimitLayer`](super::RateLimitLayer) fills the IETF fields' `pk` parameter, which
/// tells a client which partition of the server's quota (which of its keys) the fields
/// describe. Only written in a style with the IETF fields; never the key itself.
///
/// # Example
///
/// ```
/// use ratewindow::http::{HeaderStyle, IetfDraft};
/// use ratewindow::tower::{HeaderKey, PartitionKeyMode, RateLimitLayer};
/// use ratewindow::{MemoryLimiter, Quota};
///
/// let secret = *b"0123456789abcdef"; // load yours from configuration
/// let layer = RateLimitLayer::new(
///     MemoryLimiter::new(Quota::per_minute(100)?)?,
///     HeaderKey::from_static("x-api-key"),
/// )
/// .header_style(HeaderStyle::ietf(IetfDraft::Draft10))
/// .partition_keys(PartitionKeyMode::Keyed(secret));
/// # Ok::<(), ratewindow::Error>(())
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PartitionKeyMode {
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

impl fmt::Debug for PartitionKeyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.write_str(match self {
            PartitionKeyMode::None => "None",
            PartitionKeyMode::Public => "Public",
            PartitionKeyMode::Keyed(_) => "Keyed(..)",
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
    pub(crate) fn for_key(style: HeaderStyle, keys: PartitionKeyMode, key: &str) -> Self {
        let partition = match keys {
            _ if style.ietf_draft().is_none() => None,
            PartitionKeyMode::None => None,
            PartitionKeyMode::Public => Some(Box::new(PartitionKey::hash_of(key))),
            PartitionKeyMode::Keyed(secret) => {
                Some(Box::new(PartitionKey::keyed_hash_of(key, &secret)))
            }
        };
        ResponseHeaders { style, partition }
    }

    /// Writes `decision`'s headers into `headers`.
    pub(crate) fn write(&self, decision: &Decision, headers: &mut HeaderMap) {
        write_headers(decision, self.style, self.partition.as_deref(), headers);
    }

    /// The rate-limit headers of an answer the layer gives itself for `outcome`: a denial's
    /// (with `retry-after: 1` when a fail-closed policy made it, since the limiter tries its
    /// backend again within a second), the key's quotas as they stand with the time to their
    /// window's end for an over-capacity answer, and none for an error (nothing was decided for
    /// the key).
    pub(crate) fn for_rejection(&self, outcome: &Outcome) -> HeaderMap {
        let mut headers = HeaderMap::new();
        match outcome {
            Outcome::Decided(decision) | Outcome::Shadowed(decision) => {
                self.write(decision, &mut headers);
                if decision.decided_by() == DecidedBy::FailClosed {
                    headers.insert(RETRY_AFTER, HeaderValue::from(FAIL_CLOSED_RETRY_AFTER_SECS));
                }
            }
            Outcome::OverCapacity(Some(stands)) => {
                self.write(stands, &mut headers);
                if let Some(secs) = over_capacity_retry_secs(outcome) {
                    headers.insert(RETRY_AFTER, HeaderValue::from(secs));
                }
            }
            Outcome::OverCapacity(None) | Outcome::Failed(_) => {}
        }
        headers
    }
}

/// Puts `ours` (the layer's rate-limit headers) first in `response`: they replace the
/// response's values of the same names, and its other headers follow in their order.
pub(crate) fn put_first(mut ours: HeaderMap, response: &mut HeaderMap) {
    if ours.is_empty() {
        return;
    }
    let theirs = std::mem::take(response);
    let mut keep = false;
    let mut current = None;
    // A name comes once, before the first of its values; `None` names the previous one.
    for (name, value) in theirs {
        if let Some(name) = name {
            keep = !ours.contains_key(&name);
            current = Some(name);
        }
        if let (true, Some(name)) = (keep, &current) {
            ours.append(name.clone(), value);
        }
    }
    *response = ours;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layers_headers_come_first_and_win() {
        let mut ours = HeaderMap::new();
        ours.insert("x-ratelimit-limit", HeaderValue::from(3u64));
        ours.insert("retry-after", HeaderValue::from(1u64));
        let mut response = HeaderMap::new();
        response.insert("content-type", HeaderValue::from_static("text/plain"));
        response.append("retry-after", HeaderValue::from_static("99"));
        response.append("retry-after", HeaderValue::from_static("98"));
        response.append("vary", HeaderValue::from_static("a"));
        response.append("vary", HeaderValue::from_static("b"));
        put_first(ours, &mut response);
        let lines: Vec<String> = response
            .iter()
            .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap()))
            .collect();
        assert_eq!(
            lines,
            [
                "x-ratelimit-limit: 3",
                "retry-after: 1",
                "content-type: text/plain",
                "vary: a",
                "vary: b"
            ]
        );

        let mut untouched = HeaderMap::new();
        untouched.insert("vary", HeaderValue::from_static("a"));
        put_first(HeaderMap::new(), &mut untouched);
        assert_eq!(untouched.len(), 1);
    }
}
