//! Writing a [`Decision`] into a `HeaderMap`, and the parts of a 429 response.

use ::http::{HeaderMap, HeaderValue, StatusCode};

use super::names::{
    RETRY_AFTER, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET, X_RATELIMIT_RESOURCE,
    X_RATELIMIT_USED,
};
use super::partition::PartitionKey;
use super::policy::policy_name_at;
use super::style::{HeaderStyle, IetfDraft};
use super::{ietf, int};
use crate::Decision;

/// Writes the rate-limit headers of `decision` into `headers` in `style`, replacing any values
/// those headers already had (so an inner service's own values never leak through twice).
///
/// In order: the X-RateLimit headers, GitHub's extras, the IETF fields, then `retry-after`
/// when the request was denied (whatever the style). With a `partition` key, the IETF fields'
/// members carry it as their `pk` parameter; the other styles have none and ignore it. Names
/// are constants and integer values are formatted without `format!`; integers below 1024 are
/// static values, a quota's limit and reset time are shared copies of the ones the thread made
/// last, and any other value is written into a small per-thread chunk of bytes that several
/// values share (no allocation of its own).
///
/// # Example
///
/// ```
/// use http::HeaderMap;
/// use ratewindow::http::{HeaderStyle, IetfDraft, PartitionKey, write_headers};
/// use ratewindow::{ManualClock, MemoryLimiter, quota};
///
/// let clock = ManualClock::at_millis(1_800_000_037_000);
/// let limiter = MemoryLimiter::builder(quota!(100 per minute)).clock(clock).build()?;
/// let key = "otr_your_key";
/// let decision = limiter.check_sync(key)?;
///
/// let mut headers = HeaderMap::new();
/// let style = HeaderStyle::x_ratelimit().with_ietf(IetfDraft::Draft10);
/// write_headers(&decision, style, None, &mut headers);
/// assert_eq!(headers["x-ratelimit-remaining"], "99");
/// assert_eq!(headers["x-ratelimit-reset"], "1800000060");
/// assert_eq!(headers["ratelimit-policy"], r#""per-minute";q=100;w=60"#);
/// assert_eq!(headers["ratelimit"], r#""per-minute";r=99;t=23"#);
/// assert!(!headers.contains_key("retry-after"));
///
/// // The IETF fields with a partition key: a hash of the key, never the key itself.
/// let pk = PartitionKey::hash_of(key);
/// write_headers(&decision, style, Some(&pk), &mut headers);
/// let expected = format!(r#""per-minute";r=99;t=23;pk=:{}:"#, pk.as_base64());
/// assert_eq!(headers["ratelimit"], expected.as_str());
/// # Ok::<(), ratewindow::Error>(())
/// ```
pub fn write_headers(
    decision: &Decision,
    style: HeaderStyle,
    partition: Option<&PartitionKey>,
    headers: &mut HeaderMap,
) {
    if style.has_x_ratelimit() {
        headers.insert(X_RATELIMIT_LIMIT, int::LIMITS.int(decision.limit()));
        headers.insert(X_RATELIMIT_REMAINING, int::int(decision.remaining()));
        headers.insert(
            X_RATELIMIT_RESET,
            int::RESETS.int(decision.reset_epoch_secs()),
        );
    }
    if style.has_github_extras() {
        headers.insert(X_RATELIMIT_USED, int::int(decision.binding().used()));
        let name = policy_name_at(decision, decision.binding_index());
        // A policy name is ASCII letters, digits and `-`: always a valid value.
        if let Ok(value) = HeaderValue::from_bytes(name.as_bytes()) {
            headers.insert(X_RATELIMIT_RESOURCE, value);
        }
    }
    if let Some(draft) = style.ietf_draft() {
        match draft {
            IetfDraft::Draft10 => ietf::write_draft10(decision, partition, headers),
        }
    }
    if let Some(secs) = decision.retry_after_secs() {
        headers.insert(RETRY_AFTER, int::int(secs));
    }
}

/// The status and headers of the response to a denied request: `429 Too Many Requests` and
/// the headers of [`write_headers`]; `None` for an allowed request, whose status is the
/// handler's. The body (e.g. `application/problem+json`) is the caller's.
///
/// The status is 429 for every denial, including one made by a failure policy
/// ([`DecidedBy::FailClosed`](crate::DecidedBy::FailClosed)): a caller that wants a 503 for
/// those checks [`Decision::decided_by`] first, as the tower layer does.
///
/// # Example
///
/// ```
/// use http::StatusCode;
/// use ratewindow::http::{HeaderStyle, rejection_parts};
/// use ratewindow::{ManualClock, MemoryLimiter, quota};
///
/// let clock = ManualClock::at_millis(1_800_000_037_000);
/// let limiter = MemoryLimiter::builder(quota!(1 per minute)).clock(clock).build()?;
/// let allowed = limiter.check_sync("otr_your_key")?;
/// assert!(rejection_parts(&allowed, HeaderStyle::default(), None).is_none());
///
/// let denied = limiter.check_sync("otr_your_key")?;
/// let (status, headers) = rejection_parts(&denied, HeaderStyle::default(), None).unwrap();
/// assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(headers["x-ratelimit-remaining"], "0");
/// assert_eq!(headers["retry-after"], "23");
/// // e.g. with axum: (status, headers, Json(problem)).into_response()
/// # Ok::<(), ratewindow::Error>(())
/// ```
pub fn rejection_parts(
    decision: &Decision,
    style: HeaderStyle,
    partition: Option<&PartitionKey>,
) -> Option<(StatusCode, HeaderMap)> {
    if decision.is_allowed() {
        return None;
    }
    let mut headers = HeaderMap::with_capacity(8);
    write_headers(decision, style, partition, &mut headers);
    Some((StatusCode::TOO_MANY_REQUESTS, headers))
}
