//! Rate-limit headers as plain `(name, value)` string pairs, for any HTTP library:
//! [`Decision::headers`] yields them without allocating. With the `http` crate's types (axum,
//! hyper, tonic, the tower layer), the `http` module's writers do the same and more header
//! styles.
//!
//! # Example: actix-web, or any framework with its own header types
//!
//! ```
//! use ratewindow::{MemoryLimiter, Quota};
//!
//! let limiter = MemoryLimiter::new(Quota::per_minute(100)?)?;
//! let decision = limiter.check_sync("api-key-123")?;
//! let mut response = Vec::new(); // e.g. actix's `HttpResponse::build(status)`
//! for (name, value) in decision.headers() {
//!     response.push((name, value.to_string())); // e.g. `.insert_header((name, value.as_str()))`
//! }
//! assert_eq!(response[0], ("x-ratelimit-limit", "100".to_string()));
//! # Ok::<(), ratewindow::Error>(())
//! ```

use std::fmt;

use crate::Decision;

/// `X-RateLimit-Limit`: the binding quota's limit. Header names are lower case, as HTTP/2
/// requires and `http::HeaderName::from_static` accepts; HTTP/1 matches them case-insensitively.
pub const X_RATELIMIT_LIMIT: &str = "x-ratelimit-limit";
/// `X-RateLimit-Remaining`: units left in the binding quota's current window.
pub const X_RATELIMIT_REMAINING: &str = "x-ratelimit-remaining";
/// `X-RateLimit-Reset`: when the binding quota's window ends, in unix epoch seconds.
pub const X_RATELIMIT_RESET: &str = "x-ratelimit-reset";
/// `Retry-After`: seconds until a denied request can succeed; sent only on denial.
pub const RETRY_AFTER: &str = "retry-after";

impl Decision {
    /// The rate-limit headers for this decision as `(name, value)` pairs: the three
    /// `X-RateLimit-*` headers, then `Retry-After` when denied. Nothing is allocated: names are
    /// constants and values are formatted into a buffer inside each [`HeaderInt`].
    pub fn headers(&self) -> Headers {
        let retry = self.retry_after_secs();
        Headers {
            values: [
                self.limit(),
                self.remaining(),
                self.reset_epoch_secs(),
                retry.unwrap_or(0),
            ],
            len: if retry.is_some() { 4 } else { 3 },
            next: 0,
        }
    }
}

const HEADER_NAMES: [&str; 4] = [
    X_RATELIMIT_LIMIT,
    X_RATELIMIT_REMAINING,
    X_RATELIMIT_RESET,
    RETRY_AFTER,
];

/// The iterator of [`Decision::headers`].
#[derive(Debug, Clone)]
pub struct Headers {
    values: [u64; 4],
    len: u8,
    next: u8,
}

impl Iterator for Headers {
    type Item = (&'static str, HeaderInt);

    fn next(&mut self) -> Option<Self::Item> {
        let i = usize::from(self.next);
        if i >= usize::from(self.len) {
            return None;
        }
        self.next += 1;
        Some((HEADER_NAMES[i], HeaderInt::new(self.values[i])))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::from(self.len - self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Headers {}

/// An unsigned integer formatted in decimal into an inline buffer: a header value that needs no
/// allocation. Dereferences to `str`.
#[derive(Clone, Copy)]
pub struct HeaderInt {
    buf: [u8; 20],
    start: u8,
}

impl HeaderInt {
    /// Formats `value` in decimal.
    pub fn new(mut value: u64) -> HeaderInt {
        let mut buf = [0u8; 20];
        let mut start = buf.len();
        loop {
            start -= 1;
            buf[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        HeaderInt {
            buf,
            start: start as u8,
        }
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits were written from `start` on.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The digits as bytes, e.g. for `http::HeaderValue::from_bytes`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[usize::from(self.start)..]
    }
}

impl std::ops::Deref for HeaderInt {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for HeaderInt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for HeaderInt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_int_formats_every_width() {
        for value in [0, 7, 10, 99, 100, 1_700_000_040, u64::MAX] {
            assert_eq!(HeaderInt::new(value).as_str(), value.to_string());
        }
    }
}
