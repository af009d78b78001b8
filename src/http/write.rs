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
/// when the request was denied (whatever the style). Names are constants and integer values
/// are formatted without `format!`; integers below 1024 are static values, a quota's limit and
/// reset time are shared copies of the ones the thread made last, and any other value is
/// written into a small per-thread chunk of bytes that several values share (no allocation of
/// its own).
/// Without a partition key the IETF fields carry no `pk`; see
/// [`write_headers_partitioned`].
///
/// # Example
///
/// ```
/// use http::HeaderMap;
/// use ratewindow::http::{HeaderStyle, IetfDraft, write_headers};
/// use ratewindow::{ManualClock, MemoryLimiter, Quota};
///
/// let clock = ManualClock::at_millis(1_800_000_037_000);
/// let limiter = MemoryLimiter::builder(Quota::per_minute(100)?).clock(clock).build()?;
/// let decision = limiter.check_sync("otr_your_key")?;
///
/// let mut headers = HeaderMap::new();
/// let style = HeaderStyle::x_ratelimit().with_ietf(IetfDraft::Draft10);
/// write_headers(&decision, style, &mut headers);
/// assert_eq!(headers["x-ratelimit-remaining"], "99");
/// assert_eq!(headers["x-ratelimit-reset"], "1800000060");
/// assert_eq!(headers["ratelimit-policy"], r#""per-minute";q=100;w=60"#);
/// assert_eq!(headers["ratelimit"], r#""per-minute";r=99;t=23"#);
/// assert!(!headers.contains_key("retry-after"));
/// # Ok::<(), ratewindow::Error>(())
/// ```
pub fn write_headers(decision: &Decision, style: HeaderStyle, headers: &mut HeaderMap) {
    write_headers_partitioned(decision, style, None, headers);
}

/// [`write_headers`], with the IETF fields' members carrying `partition` as their `pk`
/// parameter when it is `Some`. The other styles have no partition key and ignore it.
///
/// # Example
///
/// ```
/// use http::HeaderMap;
/// use ratewindow::http::{HeaderStyle, IetfDraft, PartitionKey, write_headers_partitioned};
/// use ratewindow::{ManualClock, MemoryLimiter, Quota};
///
/// let clock = ManualClock::at_millis(1_800_000_037_000);
/// let limiter = MemoryLimiter::builder(Quota::per_minute(100)?).clock(clock).build()?;
/// let key = "otr_your_key";
/// let decision = limiter.check_sync(key)?;
///
/// let pk = PartitionKey::hash_of(key); // never the key itself
/// let mut headers = HeaderMap::new();
/// let style = HeaderStyle::ietf(IetfDraft::Draft10);
/// write_headers_partitioned(&decision, style, Some(&pk), &mut headers);
/// let expected = format!(r#""per-minute";r=99;t=23;pk=:{}:"#, pk.as_base64());
/// assert_eq!(headers["ratelimit"], expected.as_str());
/// # Ok::<(), ratewindow::Error>(())
/// ```
pub fn write_headers_partitioned(
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
/// the headers of [`write_headers_partitioned`]. The body (e.g. `application/problem+json`) is
/// the caller's.
///
/// The status is 429 for every denial, including one made by a failure policy
/// ([`DecidedBy::FailClosed`](crate::DecidedBy::FailClosed)): a caller that wants a 503 for
/// those checks [`Decision::decided_by`] first. Meant for denied decisions; an allowed one
/// still gets 429, without `retry-after`.
///
/// # Example
///
/// ```
/// use http::StatusCode;
/// use ratewindow::http::{HeaderStyle, rate_limited_parts};
/// use ratewindow::{ManualClock, MemoryLimiter, Quota};
///
/// let clock = ManualClock::at_millis(1_800_000_037_000);
/// let limiter = MemoryLimiter::builder(Quota::per_minute(1)?).clock(clock).build()?;
/// limiter.check_sync("otr_your_key")?;
/// let denied = limiter.check_sync("otr_your_key")?;
///
/// let (status, headers) = rate_limited_parts(&denied, HeaderStyle::default(), None);
/// assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(headers["x-ratelimit-remaining"], "0");
/// assert_eq!(headers["retry-after"], "23");
/// // e.g. with axum: (status, headers, Json(problem)).into_response()
/// # Ok::<(), ratewindow::Error>(())
/// ```
pub fn rate_limited_parts(
    decision: &Decision,
    style: HeaderStyle,
    partition: Option<&PartitionKey>,
) -> (StatusCode, HeaderMap) {
    let mut headers = HeaderMap::with_capacity(8);
    write_headers_partitioned(decision, style, partition, &mut headers);
    (StatusCode::TOO_MANY_REQUESTS, headers)
}
