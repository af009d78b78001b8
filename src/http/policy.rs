//! Policy names: what the IETF headers and `x-ratelimit-resource` call each quota.

use std::fmt;

use crate::headers::HeaderInt;
use crate::name::MAX_NAME_LEN;
use crate::{Decision, QuotaState};

const SECOND_MS: u64 = 1_000;
const MINUTE_MS: u64 = 60 * SECOND_MS;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;

/// The name of one quota of a [`Decision`], derived from its window: `per-second`,
/// `per-minute`, `per-hour` and `per-day` for one of those units, otherwise `per-` and the
/// window in the largest unit that divides it exactly (`d`, `h`, `m`, `s`, `ms`), as in
/// [`Quota`](crate::Quota)'s text form: `per-90s`, `per-5m`, `per-1500ms`. A second quota with
/// the same window as an earlier one gets `-2` appended (`per-minute-2`), a third `-3`, so names
/// are unique within a decision and stable for a given configuration. A decision of a named
/// limiter ([`Decision::name`]: a plan's or a route's) has its name first: `pro-per-minute`.
///
/// Only ASCII letters, digits, `-` and `_`: valid unquoted in a header value and inside an sf-string.
/// Built inline; never allocates.
///
/// # Example
///
/// ```
/// use ratewindow::http::policy_names;
/// use ratewindow::{MemoryLimiter, Quota};
///
/// let limiter = MemoryLimiter::builder(Quota::per_minute(100)?)
///     .quota(Quota::from_millis(10, 90_000)?)
///     .quota(Quota::per_minute(50)?)
///     .build()?;
/// let decision = limiter.check_sync("k")?;
/// let names: Vec<String> = policy_names(&decision).map(|n| n.to_string()).collect();
/// assert_eq!(names, ["per-minute", "per-90s", "per-minute-2"]);
/// # Ok::<(), ratewindow::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyName {
    buf: [u8; PolicyName::MAX_LEN],
    len: u8,
}

impl PolicyName {
    /// The longest name: a limiter's name and `-`, then `per-` + 13 digits (a window of at most
    /// 2^40 ms) + `ms` + `-3`, with room for a two-digit suffix.
    pub(crate) const MAX_LEN: usize = MAX_NAME_LEN + 1 + 24;

    /// The name of a quota with a window of `window_ms`, the `ordinal`-th (from 0) of the
    /// decision's quotas with that window, of the limiter named `limiter` if it has a name.
    pub(crate) fn new(limiter: Option<&str>, window_ms: u64, ordinal: usize) -> PolicyName {
        let mut name = PolicyName {
            buf: [0; Self::MAX_LEN],
            len: 0,
        };
        if let Some(limiter) = limiter {
            name.push(limiter.as_bytes());
            name.push(b"-");
        }
        match window_ms {
            SECOND_MS => name.push(b"per-second"),
            MINUTE_MS => name.push(b"per-minute"),
            HOUR_MS => name.push(b"per-hour"),
            DAY_MS => name.push(b"per-day"),
            _ => {
                let (count, unit) = [
                    (DAY_MS, &b"d"[..]),
                    (HOUR_MS, b"h"),
                    (MINUTE_MS, b"m"),
                    (SECOND_MS, b"s"),
                ]
                .into_iter()
                .find(|(unit_ms, _)| window_ms % unit_ms == 0)
                .map_or((window_ms, &b"ms"[..]), |(unit_ms, unit)| {
                    (window_ms / unit_ms, unit)
                });
                name.push(b"per-");
                name.push(HeaderInt::new(count).as_bytes());
                name.push(unit);
            }
        }
        if ordinal > 0 {
            name.push(b"-");
            name.push(HeaderInt::new(ordinal as u64 + 1).as_bytes());
        }
        name
    }

    fn push(&mut self, bytes: &[u8]) {
        let start = usize::from(self.len);
        // Names are at most 33 + 21 bytes for any valid limiter name and window and MAX_QUOTAS
        // below 100; anything longer is cut rather than panicking.
        let take = bytes.len().min(Self::MAX_LEN - start);
        self.buf[start..start + take].copy_from_slice(&bytes[..take]);
        self.len += take as u8;
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Only ASCII was written.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl std::ops::Deref for PolicyName {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for PolicyName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for PolicyName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for PolicyName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The [`PolicyName`] of every quota of `decision`, in the order of
/// [`Decision::quotas`], so the two zip together: these are the names the IETF headers use.
///
/// # Example
///
/// ```
/// use ratewindow::http::policy_names;
/// use ratewindow::{MemoryLimiter, Quota};
///
/// let limiter = MemoryLimiter::builder(Quota::per_second(1)?)
///     .quota(Quota::per_hour(1000)?)
///     .build()?;
/// limiter.check_sync("k")?;
/// let denied = limiter.check_sync("k")?;
/// // Name the exhausted quotas (with a cost of 1: the ones that denied), e.g. for a body.
/// let violated: Vec<String> = denied
///     .quotas()
///     .iter()
///     .zip(policy_names(&denied))
///     .filter(|(quota, _)| quota.remaining() == 0)
///     .map(|(_, name)| name.to_string())
///     .collect();
/// assert_eq!(violated, ["per-second"]);
/// # Ok::<(), ratewindow::Error>(())
/// ```
pub fn policy_names(decision: &Decision) -> PolicyNames<'_> {
    PolicyNames { decision, next: 0 }
}

/// The name of the quota at `index` of `decision.quotas()`.
pub(crate) fn policy_name_at(decision: &Decision, index: usize) -> PolicyName {
    let quotas = decision.quotas();
    let window_ms = window_ms_of(&quotas[index]);
    let ordinal = quotas[..index]
        .iter()
        .filter(|q| window_ms_of(q) == window_ms)
        .count();
    PolicyName::new(decision.name(), window_ms, ordinal)
}

/// The iterator of [`policy_names`].
#[derive(Debug, Clone)]
pub struct PolicyNames<'a> {
    decision: &'a Decision,
    next: usize,
}

impl Iterator for PolicyNames<'_> {
    type Item = PolicyName;

    fn next(&mut self) -> Option<PolicyName> {
        if self.next >= self.decision.quotas().len() {
            return None;
        }
        self.next += 1;
        Some(policy_name_at(self.decision, self.next - 1))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.decision.quotas().len().saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for PolicyNames<'_> {}

/// A quota's window in milliseconds, the one thing its name depends on.
fn window_ms_of(quota: &QuotaState) -> u64 {
    u64::try_from(quota.window().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_window() {
        let cases = [
            (1_000, "per-second"),
            (60_000, "per-minute"),
            (3_600_000, "per-hour"),
            (86_400_000, "per-day"),
            (90_000, "per-90s"),
            (1_500, "per-1500ms"),
            (250, "per-250ms"),
            (1, "per-1ms"),
            (300_000, "per-5m"),
            (7_200_000, "per-2h"),
            (172_800_000, "per-2d"),
            (5_400_000, "per-90m"),
            (1 << 40, "per-1099511627776ms"),
        ];
        for (window_ms, expected) in cases {
            assert_eq!(PolicyName::new(None, window_ms, 0), expected, "{window_ms}");
        }
        assert_eq!(PolicyName::new(None, 60_000, 1), "per-minute-2");
        assert_eq!(PolicyName::new(None, 1 << 40, 2), "per-1099511627776ms-3");
        assert_eq!(PolicyName::new(None, 1_500, 98), "per-1500ms-99");
        assert_eq!(PolicyName::new(Some("pro"), 60_000, 1), "pro-per-minute-2");
        let longest = "N".repeat(MAX_NAME_LEN);
        let name = PolicyName::new(Some(&longest), 1 << 40, 98);
        assert_eq!(name, format!("{longest}-per-1099511627776ms-99").as_str());
    }

    #[test]
    fn names_are_header_and_sf_string_safe() {
        for limiter in [None, Some("Pro_plan-2")] {
            for window_ms in [1, 999, 1_000, 61_000, 1 << 40] {
                let name = PolicyName::new(limiter, window_ms, 2);
                assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                );
            }
        }
    }
}
