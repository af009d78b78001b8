//! The crate's errors: [`Error`] for calls, [`ConfigError`] for configurations.

use std::fmt;

/// Why a call could not be decided.
///
/// A request that is over its limit is **not** an error: it is a [`Decision`](crate::Decision)
/// whose [`is_allowed`](crate::Decision::is_allowed) is `false`. Errors are for input that can
/// never be decided (an empty key, a cost above the limit), a limiter that cannot take more
/// state, and a networked backend that did not answer.
///
/// What each call can return:
///
/// | call | errors |
/// |---|---|
/// | `check`, `check_n` | [`EmptyKey`](Error::EmptyKey), [`KeyTooLong`](Error::KeyTooLong), [`ZeroCost`](Error::ZeroCost), [`CostExceedsLimit`](Error::CostExceedsLimit), [`ClockOutOfRange`](Error::ClockOutOfRange), [`CapacityExhausted`](Error::CapacityExhausted) (in memory, or Redis's `FailurePolicy::Fallback`), [`Backend`](Error::Backend) (Redis, under `FailurePolicy::ReturnError`) |
/// | `peek`, `refund` | [`EmptyKey`](Error::EmptyKey), [`KeyTooLong`](Error::KeyTooLong), [`ClockOutOfRange`](Error::ClockOutOfRange), [`Backend`](Error::Backend) |
/// | `clear` | [`EmptyKey`](Error::EmptyKey), [`KeyTooLong`](Error::KeyTooLong), [`ClockOutOfRange`](Error::ClockOutOfRange) (Redis), [`Backend`](Error::Backend) |
/// | `RedisConnection::connect*` | [`Config`](Error::Config), [`Backend`](Error::Backend) |
///
/// Building a quota or a limiter returns a [`ConfigError`] instead, which `?` turns into
/// [`Error::Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The key was empty.
    EmptyKey,
    /// The key was longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes.
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
    },
    /// A cost of 0 was asked for; use `peek` to look without consuming.
    ZeroCost,
    /// The cost is larger than a quota's limit, so the request could never be admitted.
    CostExceedsLimit {
        /// The cost asked for.
        cost: u64,
        /// The smallest limit among the limiter's quotas: no larger cost is ever admitted.
        min_limit: u64,
    },
    /// The clock read a time the limiter does not decide for: later than 2^46 ms after the
    /// epoch (in the year 4199).
    ClockOutOfRange {
        /// The clock's reading, in unix milliseconds.
        now_ms: u64,
    },
    /// The limiter already tracks `max_keys` keys whose windows are still open, so it cannot
    /// take a new key without forgetting a count. Existing keys are still decided exactly.
    CapacityExhausted {
        /// The configured cap.
        max_keys: usize,
    },
    /// A networked backend could not decide: it did not answer in time, could not be reached,
    /// or answered something unexpected.
    Backend {
        /// What went wrong, for a server to choose its answer.
        kind: BackendErrorKind,
        /// The backend's own description, for logs. Never contains a key.
        detail: String,
    },
    /// A configuration was refused: from connecting to a backend (a URL that does not parse),
    /// or a [`ConfigError`] passed on by `?`. Never returned by a call that decides.
    Config(ConfigError),
}

/// Why a quota or a limiter's configuration was refused. Returned when quotas and limiters are
/// built, never by a call that decides. Every field is `Copy`, so a `const` can check a quota
/// (see [`quota!`](crate::quota!)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigError {
    /// A quota's limit was 0: it could never admit anything.
    ZeroLimit,
    /// A quota's window was shorter than one millisecond.
    ZeroWindow,
    /// A quota's window was not a whole number of milliseconds.
    WindowNotWholeMillis,
    /// A quota's window was longer than [`Quota::MAX_WINDOW`](crate::Quota::MAX_WINDOW).
    WindowTooLong {
        /// The window asked for, in milliseconds (saturated at `u64::MAX`).
        window_ms: u64,
    },
    /// A quota specification such as `100/1m` could not be parsed.
    InvalidQuotaSpec {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A limiter was given more quotas than [`MAX_QUOTAS`](crate::MAX_QUOTAS).
    TooManyQuotas {
        /// How many quotas were given.
        count: usize,
    },
    /// A quota's limit is larger than the backend can count exactly for that window.
    LimitTooLarge {
        /// The limit asked for.
        limit: u64,
        /// The largest limit the backend supports for this window.
        max: u64,
    },
    /// New quotas for a limiter that shares counters must keep the same windows, in order.
    IncompatibleQuotas,
    /// A setting was refused, e.g. a key prefix containing `{` or `}`, or a Redis URL that does
    /// not parse.
    InvalidSetting {
        /// What is wrong.
        reason: &'static str,
    },
}

impl From<ConfigError> for Error {
    fn from(error: ConfigError) -> Error {
        Error::Config(error)
    }
}

/// The broad cause of an [`Error::Backend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// No answer within the configured timeout.
    Timeout,
    /// The backend could not be reached, or the connection broke.
    Unavailable,
    /// The backend answered with an error or a reply the limiter does not understand.
    Protocol,
}

impl fmt::Display for BackendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendErrorKind::Timeout => "timed out",
            BackendErrorKind::Unavailable => "unavailable",
            BackendErrorKind::Protocol => "protocol error",
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::EmptyKey => f.write_str("key is empty"),
            Error::KeyTooLong { len } => write!(
                f,
                "key is {len} bytes long, the maximum is {}",
                crate::MAX_KEY_LEN
            ),
            Error::ZeroCost => f.write_str("cost must be at least 1"),
            Error::CostExceedsLimit { cost, min_limit } => write!(
                f,
                "cost {cost} exceeds the limit {min_limit} and can never be admitted"
            ),
            Error::ClockOutOfRange { now_ms } => {
                write!(f, "clock reading {now_ms} ms is out of the supported range")
            }
            Error::CapacityExhausted { max_keys } => write!(
                f,
                "limiter is tracking its maximum of {max_keys} keys with open windows"
            ),
            Error::Backend { kind, detail } => write!(f, "backend {kind}: {detail}"),
            Error::Config(error) => fmt::Display::fmt(error, f),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ZeroLimit => f.write_str("quota limit must be at least 1"),
            ConfigError::ZeroWindow => f.write_str("quota window must be at least 1 ms"),
            ConfigError::WindowNotWholeMillis => {
                f.write_str("quota window must be a whole number of milliseconds")
            }
            ConfigError::WindowTooLong { window_ms } => write!(
                f,
                "quota window of {window_ms} ms is longer than the maximum of {} ms",
                crate::quota::MAX_WINDOW_MS
            ),
            ConfigError::InvalidQuotaSpec { reason } => write!(f, "invalid quota: {reason}"),
            ConfigError::TooManyQuotas { count } => write!(
                f,
                "{count} quotas given, at most {} are supported",
                crate::MAX_QUOTAS
            ),
            ConfigError::LimitTooLarge { limit, max } => write!(
                f,
                "limit {limit} is larger than the {max} this backend can count for that window"
            ),
            ConfigError::IncompatibleQuotas => {
                f.write_str("new quotas must keep the same windows in the same order")
            }
            ConfigError::InvalidSetting { reason } => write!(f, "invalid configuration: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl std::error::Error for Error {}
