//! Rate-limit headers for the `http` crate's types (feature `http`).
//!
//! [`write_headers`] writes a [`Decision`](crate::Decision) into an `http::HeaderMap`, and
//! [`rejection_parts`] builds the status and headers of a 429; the body is yours. Any
//! framework on the `http` crate (axum, hyper, tower, reqwest, ...) takes the map as it is.
//! Header names are constants validated at compile time; integer values are formatted without
//! `format!` and structured fields are serialized into a stack buffer, so each value costs one
//! small copy into its `HeaderValue`.
//!
//! # Header styles
//!
//! A [`HeaderStyle`] is any combination of:
//!
//! - **X-RateLimit** ([`HeaderStyle::x_ratelimit`], the default): `x-ratelimit-limit`,
//!   `x-ratelimit-remaining` and `x-ratelimit-reset` (unix epoch seconds) of the decision's
//!   binding quota (see [`Decision`](crate::Decision)).
//! - **IETF** ([`HeaderStyle::ietf`] with an [`IetfDraft`]): for
//!   [draft-ietf-httpapi-ratelimit-headers-10](https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/10/),
//!   `ratelimit-policy` lists every quota as a named policy with `q` (its limit) and `w` (its
//!   window in seconds, rounded up), and `ratelimit` gives each policy's `r` (units remaining)
//!   and `t` (seconds until its window ends, rounded up), both as Structured Field Value lists
//!   (RFC 9651). Policies are named after their windows ([`PolicyName`]). A [`PartitionKey`]
//!   adds `pk`, a hash of the client's key and never the key itself, to every member.
//!   Integers above the 15 digits a structured field allows are written as 999999999999999.
//! - **GitHub extras** ([`HeaderStyle::github_extras`]): `x-ratelimit-used` (units used in the
//!   binding quota's window) and `x-ratelimit-resource` (its policy name).
//!
//! Whatever the style, a denied decision also gets `retry-after`: seconds until the binding
//! quota's window ends, rounded up, the same rounding as `t`, and the binding quota of a
//! denial is the denying quota that blocks longest, so `retry-after` is never below the `t` of
//! any quota that denied the request. Headers are written in the order of the samples below,
//! replacing any values they had.
//!
//! # Sample output
//!
//! Quotas of 100 per minute and 1000 per hour for the key `otr_your_key`, at
//! 2027-01-15T08:29:37Z (`1800001777` s: 23 s before the minute ends, 1823 s before the hour
//! does). The 200 answers the 43rd request of the minute, the 429 the 101st. Names are lower
//! case, as HTTP/2 requires and HTTP/1 servers send them.
//!
//! `HeaderStyle::x_ratelimit()` (the default):
//!
//! ```text
//! HTTP/1.1 200 OK
//! x-ratelimit-limit: 100
//! x-ratelimit-remaining: 57
//! x-ratelimit-reset: 1800001800
//! ```
//!
//! ```text
//! HTTP/1.1 429 Too Many Requests
//! x-ratelimit-limit: 100
//! x-ratelimit-remaining: 0
//! x-ratelimit-reset: 1800001800
//! retry-after: 23
//! ```
//!
//! `HeaderStyle::ietf(IetfDraft::Draft10)`:
//!
//! ```text
//! HTTP/1.1 200 OK
//! ratelimit-policy: "per-minute";q=100;w=60, "per-hour";q=1000;w=3600
//! ratelimit: "per-minute";r=57;t=23, "per-hour";r=957;t=1823
//! ```
//!
//! ```text
//! HTTP/1.1 429 Too Many Requests
//! ratelimit-policy: "per-minute";q=100;w=60, "per-hour";q=1000;w=3600
//! ratelimit: "per-minute";r=0;t=23, "per-hour";r=900;t=1823
//! retry-after: 23
//! ```
//!
//! `HeaderStyle::x_ratelimit().with_github_extras()`:
//!
//! ```text
//! HTTP/1.1 200 OK
//! x-ratelimit-limit: 100
//! x-ratelimit-remaining: 57
//! x-ratelimit-reset: 1800001800
//! x-ratelimit-used: 43
//! x-ratelimit-resource: per-minute
//! ```
//!
//! ```text
//! HTTP/1.1 429 Too Many Requests
//! x-ratelimit-limit: 100
//! x-ratelimit-remaining: 0
//! x-ratelimit-reset: 1800001800
//! x-ratelimit-used: 100
//! x-ratelimit-resource: per-minute
//! retry-after: 23
//! ```
//!
//! `HeaderStyle::ietf(IetfDraft::Draft10)` with `PartitionKey::hash_of("otr_your_key")`:
//!
//! ```text
//! HTTP/1.1 200 OK
//! ratelimit-policy: "per-minute";q=100;w=60;pk=:kq44CxugRB0=:, "per-hour";q=1000;w=3600;pk=:kq44CxugRB0=:
//! ratelimit: "per-minute";r=57;t=23;pk=:kq44CxugRB0=:, "per-hour";r=957;t=1823;pk=:kq44CxugRB0=:
//! ```
//!
//! ```text
//! HTTP/1.1 429 Too Many Requests
//! ratelimit-policy: "per-minute";q=100;w=60;pk=:kq44CxugRB0=:, "per-hour";q=1000;w=3600;pk=:kq44CxugRB0=:
//! ratelimit: "per-minute";r=0;t=23;pk=:kq44CxugRB0=:, "per-hour";r=900;t=1823;pk=:kq44CxugRB0=:
//! retry-after: 23
//! ```
//!
//! Combined styles write the union, in the same order: X-RateLimit, GitHub extras, IETF,
//! `retry-after`. (A unit test checks that these samples are exactly what the writers
//! produce.)
//!
//! # Example: a handler's response headers
//!
//! ```
//! use http::{HeaderMap, StatusCode};
//! use ratewindow::http::{HeaderStyle, IetfDraft, rejection_parts, write_headers};
//! use ratewindow::{MemoryLimiter, quota};
//!
//! let limiter = MemoryLimiter::builder(quota!(100 per minute))
//!     .quota(quota!(1000 per hour))
//!     .build()?;
//! // Chosen once, e.g. from configuration: `"both".parse()?`.
//! let style = HeaderStyle::x_ratelimit().with_ietf(IetfDraft::Draft10);
//!
//! let decision = limiter.check_sync("otr_your_key")?;
//! let (status, headers) = rejection_parts(&decision, style, None).unwrap_or_else(|| {
//!     let mut headers = HeaderMap::new(); // the handler's response headers
//!     write_headers(&decision, style, None, &mut headers);
//!     (StatusCode::OK, headers)
//! });
//! assert_eq!(status, StatusCode::OK);
//! assert_eq!(headers["x-ratelimit-remaining"], "99");
//! assert!(headers["ratelimit"].to_str().unwrap().starts_with(r#""per-minute";r=99;t="#));
//! # Ok::<(), ratewindow::Error>(())
//! ```

mod ietf;
mod int;
mod names;
mod partition;
mod policy;
mod sf;
mod style;
#[cfg(test)]
mod tests;
mod write;

pub use names::{
    RATELIMIT, RATELIMIT_POLICY, RETRY_AFTER, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING,
    X_RATELIMIT_RESET, X_RATELIMIT_RESOURCE, X_RATELIMIT_USED,
};
pub use partition::PartitionKey;
#[cfg(feature = "tower")]
pub(crate) use policy::policy_name_at;
pub use policy::{PolicyName, PolicyNames, policy_names};
pub use style::{HeaderStyle, IetfDraft, ParseHeaderStyleError};
pub use write::{rejection_parts, write_headers};
