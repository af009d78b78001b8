//! [`RedisLimiterBuilder`]: a [`RedisLimiter`]'s settings, their defaults and their checks.

use std::sync::Arc;
use std::time::Duration;

use super::breaker::Breaker;
use super::cache::OverLimitCache;
use super::connection::RedisConnection;
use super::eviction::{EvictionSettings, EvictionWatch};
use super::keys;
use super::limiter::RedisLimiter;
use super::policy::FailurePolicy;
use super::round_trips::RoundTrips;
use crate::quota::QuotaSet;
use crate::{Alignment, Clock, ConfigError, DefaultClock, MemoryLimiter, Quota, Shadow};

/// How long a call may take by default, round trip included.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// After a failure, how long calls skip Redis before one tries it again.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_millis(250);
/// Keys remembered as over a quota, at most.
const DEFAULT_OVER_LIMIT_CAPACITY: usize = 10_000;
/// How far apart the processes' clocks may be by default; counters outlive their window by
/// this much.
const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(1);
/// The largest skew allowance accepted: past it a counter would outlive its window by more
/// than a day.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(86_400);
const DEFAULT_PREFIX: &str = "ratewindow";

impl RedisLimiter {
    /// Starts configuring a limiter whose first quota is `quota`.
    pub fn builder(quota: Quota) -> RedisLimiterBuilder {
        RedisLimiterBuilder {
            quotas: vec![quota],
            alignment: Alignment::Epoch,
            prefix: DEFAULT_PREFIX.into(),
            clock: DefaultClock::default(),
            redis_time: false,
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            timeout: DEFAULT_TIMEOUT,
            policy: FailurePolicy::default(),
            retry_after: DEFAULT_RETRY_AFTER,
            over_limit_capacity: DEFAULT_OVER_LIMIT_CAPACITY,
            eviction: EvictionSettings::default(),
            name: None,
            round_trips: None,
            shadow: Shadow::NONE,
        }
    }
}

/// Configures a [`RedisLimiter`]; made by [`RedisLimiter::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisLimiterBuilder<C = DefaultClock> {
    quotas: Vec<Quota>,
    alignment: Alignment,
    prefix: String,
    clock: C,
    redis_time: bool,
    max_clock_skew: Duration,
    timeout: Duration,
    policy: FailurePolicy,
    retry_after: Duration,
    over_limit_capacity: usize,
    pub(super) eviction: EvictionSettings,
    name: Option<String>,
    round_trips: Option<RoundTrips>,
    shadow: Shadow,
}

impl<C: Clock + Clone> RedisLimiterBuilder<C> {
    /// Adds a quota; a request must fit every quota (up to [`MAX_QUOTAS`](crate::MAX_QUOTAS)).
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quotas.push(quota);
        self
    }

    /// Puts the quotas of `shadow` in shadow (a dry run): a request only they deny is served,
    /// its decision saying it would have been denied
    /// ([`Decision::is_shadow_denied`](crate::Decision::is_shadow_denied)), and is charged to
    /// the enforced quotas only (a second round trip, for such requests alone). See
    /// [`Shadow`]. None by default.
    pub fn shadow(mut self, shadow: Shadow) -> Self {
        self.shadow = shadow;
        self
    }

    /// Names the limiter, e.g. after the route or plan it serves: its decisions carry the name
    /// ([`Decision::name`](crate::Decision::name)), and the policy names in their headers start
    /// with it (`search-per-minute`). 1 to 32 ASCII letters, digits, `-` or `_`; none by
    /// default. The name is not part of the Redis keys: give a route's limiter a
    /// [`prefix`](Self::prefix) of its own for counters of its own.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Where windows start (default: [`Alignment::Epoch`]).
    pub fn alignment(mut self, alignment: Alignment) -> Self {
        self.alignment = alignment;
        self
    }

    /// The prefix of every Redis key (default `ratewindow`); limiters with different prefixes
    /// never share counters. It may not contain `{` or `}`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The longest a call may take, round trip included (default 50 ms). Past it, the failure
    /// policy answers.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to answer when Redis fails (default [`FailurePolicy::FailOpen`]).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// After a failure, how long calls go straight to the failure policy before one tries Redis
    /// again (default 250 ms): a dead server costs one timeout per interval, not one per call.
    /// On a Cluster each hash slot has its own interval, and a failure opens it for every slot
    /// of the same master: a failed master costs one timeout per interval and sends only its
    /// own keys to the policy.
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// How many keys the local over-limit cache remembers (default 10 000; 0 turns it off). A
    /// key Redis has found over a quota is denied here, without a round trip, until the window
    /// ends by this process's clock; with skewed clocks that can outlast the window by the skew
    /// (denying longer, never admitting more).
    pub fn over_limit_cache(mut self, capacity: usize) -> Self {
        self.over_limit_capacity = capacity;
        self
    }

    /// The local clock (default: [`CoarseClock`](crate::CoarseClock)). It decides windows
    /// unless [`redis_time`](Self::redis_time) is set, and always times the failure breaker,
    /// the over-limit cache and the fallback limiter.
    pub fn clock<C2: Clock + Clone>(self, clock: C2) -> RedisLimiterBuilder<C2> {
        RedisLimiterBuilder {
            quotas: self.quotas,
            alignment: self.alignment,
            prefix: self.prefix,
            clock,
            redis_time: self.redis_time,
            max_clock_skew: self.max_clock_skew,
            timeout: self.timeout,
            policy: self.policy,
            retry_after: self.retry_after,
            over_limit_capacity: self.over_limit_capacity,
            eviction: self.eviction,
            name: self.name,
            shadow: self.shadow,
            round_trips: self.round_trips,
        }
    }

    /// Decides windows by Redis's `TIME`, read inside the script, so that processes with skewed
    /// clocks still agree on windows.
    pub fn redis_time(mut self) -> Self {
        self.redis_time = true;
        self
    }

    /// How far apart the clocks of the processes sharing these counters may be (default 1 s, at
    /// most a day), and so how long each counter outlives its window: one setting, since the
    /// second must cover the first.
    ///
    /// A counter expires this long after its window's end, on the clock of the process that
    /// created it, so that a process behind by up to this much never finds the counter of its
    /// current window gone and counts that window again. The cost is keys kept this much longer.
    /// With [`redis_time`](Self::redis_time) the local clocks do not matter, and this is only
    /// the expiry margin. See [`RedisLimiter`] for the guarantee.
    pub fn max_clock_skew(mut self, skew: Duration) -> Self {
        self.max_clock_skew = skew;
        self
    }

    /// Records the time of each of the limiter's calls to Redis in `histogram` (default: none,
    /// and nothing is timed), failed and timed-out calls included; answers given without
    /// calling Redis (the over-limit cache, the failure breaker) record nothing. See
    /// [`RoundTrips`] for what counts. Limiters made from this one by
    /// [`with_quotas`](RedisLimiter::with_quotas) keep recording into it.
    ///
    /// ```no_run
    /// use ratewindow::{Quota, RedisConnection, RedisLimiter, RoundTrips};
    ///
    /// # async fn run() -> Result<(), ratewindow::Error> {
    /// let round_trips = RoundTrips::new();
    /// let limiter = RedisLimiter::builder(Quota::per_minute(100)?)
    ///     .round_trips(round_trips.clone())
    ///     .build(RedisConnection::connect("redis://127.0.0.1:6379/").await?)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn round_trips(mut self, histogram: RoundTrips) -> Self {
        self.round_trips = Some(histogram);
        self
    }

    /// Builds the limiter on `connection`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::TooManyQuotas`] past [`MAX_QUOTAS`](crate::MAX_QUOTAS); [`ConfigError::InvalidSetting`] for a prefix that
    /// is empty or contains a brace, or a clock skew allowance above a day;
    /// [`ConfigError::LimitTooLarge`] for a limit above 2^53 − 1, the largest the server-side script
    /// counts exactly; for [`FailurePolicy::Fallback`], what building its [`MemoryLimiter`]
    /// returns; [`ConfigError::InvalidSetting`] for a [`name`](Self::name) that is not 1 to 32
    /// ASCII letters, digits, `-` or `_`.
    pub fn build(self, connection: RedisConnection) -> Result<RedisLimiter<C>, ConfigError> {
        let mut quotas = QuotaSet::new(&self.quotas, max_limit)?.shadowed(self.shadow);
        if let Some(name) = &self.name {
            quotas = quotas.named(name)?;
        }
        keys::validate_prefix(&self.prefix)?;
        if self.max_clock_skew > MAX_CLOCK_SKEW {
            return Err(ConfigError::InvalidSetting {
                reason: "the clock skew allowance is above a day",
            });
        }
        let fallback = match self.policy {
            FailurePolicy::Fallback { instances } => {
                let quotas = scaled(&self.quotas, instances);
                let mut builder = MemoryLimiter::builder(quotas[0])
                    .alignment(self.alignment)
                    .shadow(self.shadow)
                    .clock(self.clock.clone());
                for &quota in &quotas[1..] {
                    builder = builder.quota(quota);
                }
                Some(builder.build()?)
            }
            _ => None,
        };
        let slots = match connection.cluster() {
            None => 1,
            Some(_) => keys::SLOTS,
        };
        let eviction = EvictionWatch::new(self.eviction, connection.clone(), self.timeout);
        Ok(RedisLimiter {
            counters: keys::Counters::new(&quotas),
            quotas,
            alignment: self.alignment,
            prefix: self.prefix.into(),
            clock: self.clock,
            redis_time: self.redis_time,
            expiry_margin_ms: self.max_clock_skew.as_millis() as u64,
            timeout: self.timeout,
            connection,
            policy: self.policy,
            fallback,
            breaker: Arc::new(Breaker::new(slots)),
            retry_after_ms: u64::try_from(self.retry_after.as_millis()).unwrap_or(u64::MAX),
            over_limit: Arc::new(OverLimitCache::new(self.over_limit_capacity)),
            eviction: Arc::new(eviction),
            round_trips: self.round_trips,
        })
    }
}

/// The largest limit the script counts exactly: Lua's numbers are doubles, which hold every
/// integer up to 2^53 and no longer count one by one above it (2^53 + 1 == 2^53). Not 2^53
/// itself: a full count of 2^53 plus one is 2^53 again, which is not above a limit of 2^53, so
/// the request would be admitted and not counted. With limits below 2^53 any sum above the
/// limit is exact or rounds to at least 2^53, still above it.
const MAX_LIMIT: u64 = (1 << 53) - 1;

/// The largest limit the script counts exactly, whatever the window.
pub(super) fn max_limit(_: Quota) -> u64 {
    MAX_LIMIT
}

/// The quotas with each limit divided among `instances` processes (at least 1 each).
pub(super) fn scaled(quotas: &[Quota], instances: u64) -> Vec<Quota> {
    quotas
        .iter()
        .map(|q| {
            let limit = (q.limit() / instances.max(1)).max(1);
            Quota::from_millis(limit, q.window_ms()).unwrap_or(*q)
        })
        .collect()
}
