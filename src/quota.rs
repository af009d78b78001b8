//! [`Quota`]: a limit per fixed window, and its `100/1m` text form.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::name::NameId;
use crate::{ConfigError, MAX_QUOTAS, Shadow};

const SECOND_MS: u64 = 1_000;
const MINUTE_MS: u64 = 60 * SECOND_MS;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;
/// [`Quota::MAX_WINDOW`] in milliseconds.
pub(crate) const MAX_WINDOW_MS: u64 = 1 << 40;

/// A limit of requests (or cost units) per fixed window.
///
/// The limit is at least 1 and the window a whole number of milliseconds between 1 ms and
/// [`Quota::MAX_WINDOW`]. Every constructor checks this and returns a typed [`ConfigError`] instead of
/// panicking.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use ratewindow::Quota;
///
/// let per_minute = Quota::per_minute(100)?;
/// assert_eq!(per_minute.limit(), 100);
/// assert_eq!(per_minute.window(), Duration::from_secs(60));
///
/// // The same quota in its text form, as the demo server's RATE_LIMIT takes it.
/// assert_eq!("100/1m".parse::<Quota>()?, per_minute);
/// assert_eq!(per_minute.to_string(), "100/1m");
///
/// // Invalid quotas are errors, never panics.
/// assert!(Quota::per_second(0).is_err());
/// assert!(Quota::new(5, Duration::from_micros(1500)).is_err());
/// # Ok::<(), ratewindow::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: u64,
    window_ms: u64,
}

impl Quota {
    /// The longest window a quota may have: 2^40 ms, about 34.8 years.
    pub const MAX_WINDOW: Duration = Duration::from_millis(MAX_WINDOW_MS);

    /// `limit` per window of `window`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroLimit`], [`ConfigError::ZeroWindow`], [`ConfigError::WindowNotWholeMillis`] or
    /// [`ConfigError::WindowTooLong`].
    pub fn new(limit: u64, window: Duration) -> Result<Self, ConfigError> {
        if window.subsec_nanos() % 1_000_000 != 0 {
            return Err(ConfigError::WindowNotWholeMillis);
        }
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        Self::from_millis(limit, window_ms)
    }

    /// `limit` per window of `window_ms` milliseconds.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroLimit`], [`ConfigError::ZeroWindow`] or [`ConfigError::WindowTooLong`].
    pub const fn from_millis(limit: u64, window_ms: u64) -> Result<Self, ConfigError> {
        if limit == 0 {
            return Err(ConfigError::ZeroLimit);
        }
        if window_ms == 0 {
            return Err(ConfigError::ZeroWindow);
        }
        if window_ms > MAX_WINDOW_MS {
            return Err(ConfigError::WindowTooLong { window_ms });
        }
        Ok(Quota { limit, window_ms })
    }

    /// `limit` per second.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroLimit`] when `limit` is 0.
    pub const fn per_second(limit: u64) -> Result<Self, ConfigError> {
        Self::from_millis(limit, SECOND_MS)
    }

    /// `limit` per minute.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroLimit`] when `limit` is 0.
    pub const fn per_minute(limit: u64) -> Result<Self, ConfigError> {
        Self::from_millis(limit, MINUTE_MS)
    }

    /// `limit` per hour.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroLimit`] when `limit` is 0.
    pub const fn per_hour(limit: u64) -> Result<Self, ConfigError> {
        Self::from_millis(limit, HOUR_MS)
    }

    /// `limit` per day (86 400 s; windows are aligned to the unix epoch, i.e. UTC midnight).
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroLimit`] when `limit` is 0.
    pub const fn per_day(limit: u64) -> Result<Self, ConfigError> {
        Self::from_millis(limit, DAY_MS)
    }

    /// The largest number of units admitted per window.
    pub const fn limit(&self) -> u64 {
        self.limit
    }

    /// The window's length.
    pub const fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    /// The window's length in milliseconds.
    pub const fn window_ms(&self) -> u64 {
        self.window_ms
    }
}

/// A [`Quota`] from a literal limit and a unit, checked when the program compiles: no `?`. A
/// limiter still checks that its backend counts the limit exactly for the window
/// ([`ConfigError::LimitTooLarge`]). Limits known only at run time take the constructors or the
/// text form.
///
/// ```
/// use ratewindow::{MemoryLimiter, Quota, quota};
///
/// const API: Quota = quota!(100 per minute);
/// let limiter = MemoryLimiter::builder(API).quota(quota!(5_000 per hour)).build()?;
/// assert_eq!(limiter.quotas(), [Quota::per_minute(100)?, Quota::per_hour(5_000)?]);
/// # Ok::<(), ratewindow::ConfigError>(())
/// ```
///
/// The units are `second`, `minute`, `hour` and `day`. A limit of 0 does not compile:
///
/// ```compile_fail
/// let never = ratewindow::quota!(0 per second);
/// ```
#[macro_export]
macro_rules! quota {
    ($limit:literal per second) => {
        $crate::quota!(@checked $limit, 1_000)
    };
    ($limit:literal per minute) => {
        $crate::quota!(@checked $limit, 60_000)
    };
    ($limit:literal per hour) => {
        $crate::quota!(@checked $limit, 3_600_000)
    };
    ($limit:literal per day) => {
        $crate::quota!(@checked $limit, 86_400_000)
    };
    (@checked $limit:expr, $window_ms:expr) => {
        const {
            match $crate::Quota::from_millis($limit, $window_ms) {
                ::core::result::Result::Ok(quota) => quota,
                ::core::result::Result::Err(_) => {
                    ::core::panic!("a quota's limit must be at least 1")
                }
            }
        }
    };
}

/// Writes the text form `<limit>/<window>` with the largest unit that divides the window
/// exactly, e.g. `100/1m`, `10/5s`, `7/1500ms`.
impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (count, unit) = [
            (DAY_MS, "d"),
            (HOUR_MS, "h"),
            (MINUTE_MS, "m"),
            (SECOND_MS, "s"),
        ]
        .into_iter()
        .find(|(unit_ms, _)| self.window_ms % unit_ms == 0)
        .map_or((self.window_ms, "ms"), |(unit_ms, unit)| {
            (self.window_ms / unit_ms, unit)
        });
        write!(f, "{}/{count}{unit}", self.limit)
    }
}

/// Parses `<limit>/<window>`: a limit, a slash, then a window of an optional whole count and a
/// unit out of `ms`, `s`, `m`, `h`, `d` (also `sec`, `min`, `hour`, `day`). Examples: `100/1m`,
/// `100/m`, `10/5s`, `1000/1h`, `5/250ms`. Surrounding whitespace is ignored.
impl FromStr for Quota {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        let invalid = |reason| ConfigError::InvalidQuotaSpec { reason };
        let (limit, window) = text
            .trim()
            .split_once('/')
            .ok_or(invalid("expected <limit>/<window>, e.g. 100/1m"))?;
        let limit = parse_count(limit.trim())
            .ok_or(invalid("limit is not a whole number of at most 20 digits"))?;
        let window = window.trim();
        let unit_at = window
            .find(|c: char| !c.is_ascii_digit())
            .ok_or(invalid("window has no unit (ms, s, m, h or d)"))?;
        let (count, unit) = window.split_at(unit_at);
        let count = if count.is_empty() {
            1
        } else {
            parse_count(count).ok_or(invalid("window count is too large"))?
        };
        let unit_ms = match unit {
            "ms" => 1,
            "s" | "sec" => SECOND_MS,
            "m" | "min" => MINUTE_MS,
            "h" | "hour" => HOUR_MS,
            "d" | "day" => DAY_MS,
            _ => return Err(invalid("unknown window unit; use ms, s, m, h or d")),
        };
        let window_ms = count
            .checked_mul(unit_ms)
            .ok_or(ConfigError::WindowTooLong {
                window_ms: u64::MAX,
            })?;
        Quota::from_millis(limit, window_ms)
    }
}

/// A limiter's quotas, checked once: at least one, at most [`MAX_QUOTAS`], each limit within
/// what the backend counts exactly; with the smallest limit, above which no cost is ever
/// admitted, worked out up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QuotaSet {
    /// The first `len` are the quotas; the rest repeat the first and are never read.
    quotas: [Quota; MAX_QUOTAS],
    len: usize,
    min_limit: u64,
    /// The limiter's name, which its decisions carry.
    name: NameId,
    /// The quotas whose denials only report.
    shadow: Shadow,
}

impl QuotaSet {
    /// `quotas`, where `max_limit` is the largest limit the backend counts exactly for a quota's
    /// window.
    ///
    /// # Errors
    ///
    /// [`ConfigError::TooManyQuotas`] past [`MAX_QUOTAS`], [`ConfigError::InvalidSetting`] for none,
    /// [`ConfigError::LimitTooLarge`] for a limit above `max_limit`.
    pub(crate) fn new(
        quotas: &[Quota],
        max_limit: impl Fn(Quota) -> u64,
    ) -> Result<Self, ConfigError> {
        let Some(&first) = quotas.first() else {
            return Err(ConfigError::InvalidSetting {
                reason: "a limiter needs at least one quota",
            });
        };
        if quotas.len() > MAX_QUOTAS {
            return Err(ConfigError::TooManyQuotas {
                count: quotas.len(),
            });
        }
        let mut set = QuotaSet {
            quotas: [first; MAX_QUOTAS],
            len: quotas.len(),
            min_limit: u64::MAX,
            name: NameId::NONE,
            shadow: Shadow::NONE,
        };
        for (slot, &quota) in set.quotas.iter_mut().zip(quotas) {
            let max = max_limit(quota);
            if quota.limit() > max {
                return Err(ConfigError::LimitTooLarge {
                    limit: quota.limit(),
                    max,
                });
            }
            *slot = quota;
            set.min_limit = set.min_limit.min(quota.limit());
        }
        Ok(set)
    }

    /// New limits for a limiter that keeps its counters: the same windows, in the same order.
    ///
    /// # Errors
    ///
    /// [`ConfigError::IncompatibleQuotas`] for other windows; then as [`new`](Self::new).
    pub(crate) fn with_limits(
        &self,
        quotas: &[Quota],
        max_limit: impl Fn(Quota) -> u64,
    ) -> Result<Self, ConfigError> {
        let same_windows = self.len() == quotas.len()
            && self
                .iter()
                .zip(quotas)
                .all(|(a, b)| a.window_ms() == b.window_ms());
        if !same_windows {
            return Err(ConfigError::IncompatibleQuotas);
        }
        Ok(QuotaSet {
            name: self.name,
            ..QuotaSet::new(quotas, max_limit)?
        }
        .shadowed(self.shadow))
    }

    /// The same quotas under the name `name`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidSetting`] for a name that is not 1 to 32 ASCII letters, digits,
    /// `-` or `_`.
    pub(crate) fn named(self, name: &str) -> Result<Self, ConfigError> {
        Ok(QuotaSet {
            name: NameId::intern(name)?,
            ..self
        })
    }

    /// The limiter's name.
    #[inline(always)]
    pub(crate) fn name(&self) -> NameId {
        self.name
    }

    /// The same quotas with `shadow`'s in shadow.
    ///
    /// A cost above a shadow quota's limit is then no error: the request is a shadow denial. So
    /// the smallest limit is the smallest enforced one (none: no cost is refused for a limit).
    pub(crate) fn shadowed(self, shadow: Shadow) -> Self {
        let min_limit = self
            .iter()
            .enumerate()
            .filter(|(i, _)| !shadow.contains(*i))
            .map(|(_, quota)| quota.limit())
            .min()
            .unwrap_or(u64::MAX);
        QuotaSet {
            shadow,
            min_limit,
            ..self
        }
    }

    /// The quotas in shadow.
    #[inline(always)]
    pub(crate) fn shadow(&self) -> Shadow {
        self.shadow
    }

    /// The quotas, in order.
    #[inline(always)]
    pub(crate) fn as_slice(&self) -> &[Quota] {
        &self.quotas[..self.len]
    }

    /// The first quota: every limiter has one.
    #[inline(always)]
    pub(crate) fn first(&self) -> Quota {
        self.quotas[0]
    }

    /// The smallest limit: a larger cost can never be admitted.
    #[inline(always)]
    pub(crate) fn min_limit(&self) -> u64 {
        self.min_limit
    }
}

impl std::ops::Deref for QuotaSet {
    type Target = [Quota];

    #[inline(always)]
    fn deref(&self) -> &[Quota] {
        self.as_slice()
    }
}

/// Digits only: no sign, no underscores, nothing `u64::from_str` would also forgive.
fn parse_count(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_validate() {
        assert_eq!(Quota::per_minute(0), Err(ConfigError::ZeroLimit));
        assert_eq!(Quota::from_millis(1, 0), Err(ConfigError::ZeroWindow));
        assert_eq!(Quota::new(1, Duration::ZERO), Err(ConfigError::ZeroWindow));
        assert_eq!(
            Quota::new(1, Duration::from_nanos(1_000_001)),
            Err(ConfigError::WindowNotWholeMillis)
        );
        assert_eq!(
            Quota::new(1, Duration::from_secs(u64::MAX)),
            Err(ConfigError::WindowTooLong {
                window_ms: u64::MAX
            })
        );
        assert_eq!(
            Quota::new(1, Duration::MAX),
            Err(ConfigError::WindowNotWholeMillis)
        );
        let max = Quota::new(u64::MAX, Quota::MAX_WINDOW).unwrap();
        assert_eq!(max.window(), Quota::MAX_WINDOW);
        assert_eq!(Quota::per_day(3).unwrap().window_ms(), 86_400_000);
        assert_eq!(
            Quota::per_hour(3).unwrap().window(),
            Duration::from_secs(3600)
        );
        assert_eq!(Quota::per_second(3).unwrap().window_ms(), 1000);
    }

    #[test]
    fn parses_text_form() {
        let q = |s: &str| s.parse::<Quota>();
        assert_eq!(q("100/1m"), Quota::per_minute(100));
        assert_eq!(q(" 100 / m "), Quota::per_minute(100));
        assert_eq!(q("10/5s"), Quota::from_millis(10, 5_000));
        assert_eq!(q("1000/1h"), Quota::per_hour(1000));
        assert_eq!(q("5/250ms"), Quota::from_millis(5, 250));
        assert_eq!(q("2/day"), Quota::per_day(2));
        assert_eq!(q("0/1m"), Err(ConfigError::ZeroLimit));
        assert_eq!(q("1/0s"), Err(ConfigError::ZeroWindow));
        for bad in [
            "", "100", "/1m", "x/1m", "-1/1m", "+1/1m", "1/1y", "1/1", "1/m1", "1/ 1 m",
        ] {
            assert!(
                matches!(q(bad), Err(ConfigError::InvalidQuotaSpec { .. })),
                "{bad:?} parsed as {:?}",
                q(bad)
            );
        }
        assert!(matches!(
            q("1/99999999999999999999d"),
            Err(ConfigError::InvalidQuotaSpec { .. })
        ));
        assert_eq!(
            q("1/999999999999d"),
            Err(ConfigError::WindowTooLong {
                window_ms: u64::MAX
            })
        );
    }

    #[test]
    fn display_round_trips() {
        for text in ["100/1m", "10/5s", "1000/1h", "7/1500ms", "1/1d", "3/90s"] {
            let quota: Quota = text.parse().unwrap();
            assert_eq!(quota.to_string(), text);
            assert_eq!(quota.to_string().parse::<Quota>().unwrap(), quota);
        }
    }
}
