//! The header names the writers use, validated once, at compile time.

use ::http::HeaderName;

/// `x-ratelimit-limit`: the binding quota's limit.
pub const X_RATELIMIT_LIMIT: HeaderName =
    HeaderName::from_static(crate::headers::X_RATELIMIT_LIMIT);
/// `x-ratelimit-remaining`: units left in the binding quota's window.
pub const X_RATELIMIT_REMAINING: HeaderName =
    HeaderName::from_static(crate::headers::X_RATELIMIT_REMAINING);
/// `x-ratelimit-reset`: when the binding quota's window ends, in unix epoch seconds.
pub const X_RATELIMIT_RESET: HeaderName =
    HeaderName::from_static(crate::headers::X_RATELIMIT_RESET);
/// `x-ratelimit-used` (GitHub): units used in the binding quota's window.
pub const X_RATELIMIT_USED: HeaderName = HeaderName::from_static("x-ratelimit-used");
/// `x-ratelimit-resource` (GitHub): the binding quota's [`PolicyName`](super::PolicyName).
pub const X_RATELIMIT_RESOURCE: HeaderName = HeaderName::from_static("x-ratelimit-resource");
/// `ratelimit-policy` (IETF): every quota as a named policy.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `ratelimit` (IETF): every quota's remaining units and time to reset.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `retry-after`: seconds until a denied request can succeed (the `http` crate's constant).
pub const RETRY_AFTER: HeaderName = ::http::header::RETRY_AFTER;
