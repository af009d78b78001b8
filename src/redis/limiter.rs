//! [`RedisLimiter`]: the same fixed-window semantics as the in-memory backend, shared by every
//! process that talks to one Redis (or Redis Cluster).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{ErrorKind, RedisError};

use super::{keys, script};
use crate::decision::QuotaState;
use crate::{
    Alignment, BackendErrorKind, Clock, Decision, DefaultClock, Error, MAX_QUOTAS, Quota,
    RateLimiter, key, window,
};

/// How long a call may take by default, round trip included.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// Counters outlive their window by this much, so that a process whose clock is a little behind
/// still finds the count of a window that has just ended for the others.
const EXPIRY_MARGIN_MS: u64 = 1_000;
const DEFAULT_PREFIX: &str = "ratewindow";

/// A connection to a single Redis server (reconnecting by itself) or to a Redis Cluster. Both
/// multiplex every concurrent call over their connections; cloning one is cheap and shares them.
#[derive(Clone)]
pub enum RedisConnection {
    /// One server, through redis-rs's [`ConnectionManager`].
    Single(ConnectionManager),
    /// A cluster, through redis-rs's async [`ClusterConnection`]; `MOVED` and `ASK` are
    /// followed by the client.
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Connects to one server, e.g. `redis://127.0.0.1:6379/`.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if the URL is invalid or the server cannot be reached.
    pub async fn connect(url: &str) -> Result<RedisConnection, Error> {
        let client = ::redis::Client::open(url).map_err(backend_error)?;
        Ok(RedisConnection::Single(
            ConnectionManager::new(client)
                .await
                .map_err(backend_error)?,
        ))
    }

    /// Connects to a cluster through any of its nodes.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if a URL is invalid or no node can be reached.
    pub async fn connect_cluster(urls: &[&str]) -> Result<RedisConnection, Error> {
        let client = ::redis::cluster::ClusterClient::new(urls.to_vec()).map_err(backend_error)?;
        Ok(RedisConnection::Cluster(
            client.get_async_connection().await.map_err(backend_error)?,
        ))
    }
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RedisConnection::Single(_) => "RedisConnection::Single",
            RedisConnection::Cluster(_) => "RedisConnection::Cluster",
        })
    }
}

/// Where a [`RedisLimiter`] reads the time.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TimeSource<C = DefaultClock> {
    /// The local clock, sent with each call (the default). Processes agree on windows as far as
    /// their clocks agree.
    Local(C),
    /// Redis's `TIME`, read inside the script: every process sees the same windows whatever its
    /// own clock says.
    Redis,
}

/// An exact fixed-window rate limiter whose counters live in Redis, shared by every process
/// that uses the same server (or cluster) and key prefix.
///
/// Each decision is one `EVALSHA` of one script that applies the in-memory backend's algorithm
/// to every quota of the key atomically: all or nothing, a denied request consumes nothing, a
/// clock that steps back never reopens a counted window. Counters are written with an absolute
/// expiry at their window's end plus a margin, in the same command as their value, so none can
/// outlive its window. See the module docs of the key layout for how hostile keys are kept
/// apart and on one Cluster slot.
///
/// # Example
///
/// ```no_run
/// use ratewindow::{Quota, RateLimiter, RedisConnection, RedisLimiter};
///
/// # async fn run() -> Result<(), ratewindow::Error> {
/// let connection = RedisConnection::connect("redis://127.0.0.1:6379/").await?;
/// let limiter = RedisLimiter::builder(Quota::per_minute(100)?).build(connection)?;
/// let decision = limiter.check("api-key-1").await?;
/// println!("allowed: {}, remaining: {}", decision.is_allowed(), decision.remaining());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisLimiter<C = DefaultClock> {
    quotas: Vec<Quota>,
    min_limit: u64,
    alignment: Alignment,
    prefix: Arc<str>,
    time: TimeSource<C>,
    timeout: Duration,
    connection: RedisConnection,
}

impl RedisLimiter {
    /// Starts configuring a limiter whose first quota is `quota`.
    pub fn builder(quota: Quota) -> RedisLimiterBuilder {
        RedisLimiterBuilder {
            quotas: vec![quota],
            alignment: Alignment::Epoch,
            prefix: DEFAULT_PREFIX.into(),
            time: TimeSource::Local(DefaultClock::default()),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// What the script is asked to do.
#[derive(Clone, Copy)]
enum Op {
    Check,
    Peek,
    Refund,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Check => "check",
            Op::Peek => "peek",
            Op::Refund => "refund",
        }
    }
}

impl<C: Clock> RedisLimiter<C> {
    /// The quotas this limiter enforces, in order.
    pub fn quotas(&self) -> &[Quota] {
        &self.quotas
    }

    /// A limiter that shares this one's connection, prefix and counters but enforces new limits
    /// (e.g. after a configuration reload); counts carry over, so a limit raised mid-window
    /// takes effect at once.
    ///
    /// # Errors
    ///
    /// [`Error::IncompatibleQuotas`] unless `quotas` has the same windows in the same order.
    pub fn with_quotas(&self, quotas: impl IntoIterator<Item = Quota>) -> Result<Self, Error>
    where
        C: Clone,
    {
        let quotas: Vec<Quota> = quotas.into_iter().collect();
        let same_windows = quotas.len() == self.quotas.len()
            && quotas
                .iter()
                .zip(&self.quotas)
                .all(|(a, b)| a.window_ms() == b.window_ms());
        if !same_windows {
            return Err(Error::IncompatibleQuotas);
        }
        let mut next = self.clone();
        next.min_limit = min_limit(&quotas);
        next.quotas = quotas;
        Ok(next)
    }

    /// Runs the script for `key`.
    async fn run(&self, key: &str, op: Op, amount: u64) -> Result<Decision, Error> {
        let base = keys::base(&self.prefix, key);
        let stagger = match self.alignment {
            Alignment::Staggered => Some(window::stagger_hash(key)),
            _ => None,
        };
        let mut invocation = script::DECIDE.prepare_invoke();
        invocation.arg(op.name()).arg(amount);
        match &self.time {
            TimeSource::Local(clock) => {
                let now_ms = clock.now_ms();
                if now_ms > window::MAX_TIME_MS {
                    return Err(Error::ClockOutOfRange { now_ms });
                }
                invocation.arg(now_ms)
            }
            TimeSource::Redis => invocation.arg(""),
        };
        invocation.arg(EXPIRY_MARGIN_MS);
        for quota in &self.quotas {
            let window_ms = quota.window_ms();
            invocation.key(format!("{base}{window_ms}"));
            invocation
                .arg(quota.limit())
                .arg(window_ms)
                .arg(stagger.map_or(0, |hash| hash % window_ms));
        }
        let reply = self
            .within_timeout(async {
                match &self.connection {
                    RedisConnection::Single(c) => invoke(&invocation, &mut c.clone()).await,
                    RedisConnection::Cluster(c) => invoke(&invocation, &mut c.clone()).await,
                }
            })
            .await?;
        self.decision(&reply)
    }

    /// Bounds a call by the configured timeout.
    async fn within_timeout<T>(
        &self,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| Error::Backend {
                kind: BackendErrorKind::Timeout,
                detail: format!("no answer from Redis within {:?}", self.timeout),
            })?
    }

    /// Reads the script's reply.
    fn decision(&self, reply: &[i64]) -> Result<Decision, Error> {
        let protocol = || Error::Backend {
            kind: BackendErrorKind::Protocol,
            detail: format!("unexpected script reply of {} integers", reply.len()),
        };
        let [now_ms, violated, rest @ ..] = reply else {
            return Err(protocol());
        };
        if rest.len() != 3 * self.quotas.len() {
            return Err(protocol());
        }
        let mut decision = Decision::blank(*now_ms as u64);
        for (i, (quota, state)) in self.quotas.iter().zip(rest.chunks_exact(3)).enumerate() {
            let (count, end_ms) = (state[1] as u64, state[2] as u64);
            decision.set_quota(
                i,
                QuotaState::new(quota.limit(), count, quota.window_ms(), end_ms),
            );
        }
        decision.finish(self.quotas.len(), *violated as u8);
        Ok(decision)
    }
}

/// One script call on either kind of connection.
async fn invoke(
    invocation: &::redis::ScriptInvocation<'_>,
    connection: &mut impl ConnectionLike,
) -> Result<Vec<i64>, Error> {
    invocation
        .invoke_async(connection)
        .await
        .map_err(backend_error)
}

fn backend_error(error: RedisError) -> Error {
    let kind = if error.is_timeout() {
        BackendErrorKind::Timeout
    } else if error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(error.kind(), ErrorKind::Io | ErrorKind::Client)
    {
        BackendErrorKind::Unavailable
    } else {
        BackendErrorKind::Protocol
    };
    Error::Backend {
        kind,
        detail: error.to_string(),
    }
}

impl<C: Clock> RateLimiter for RedisLimiter<C> {
    async fn check_n(&self, key: &str, cost: u64) -> Result<Decision, Error> {
        key::validate(key)?;
        if cost == 0 {
            return Err(Error::ZeroCost);
        }
        if cost > self.min_limit {
            return Err(Error::CostExceedsLimit {
                cost,
                limit: self.min_limit,
            });
        }
        self.run(key, Op::Check, cost).await
    }

    async fn peek(&self, key: &str) -> Result<Decision, Error> {
        key::validate(key)?;
        self.run(key, Op::Peek, 1).await
    }

    async fn reset(&self, key: &str) -> Result<(), Error> {
        key::validate(key)?;
        let base = keys::base(&self.prefix, key);
        let mut command = ::redis::cmd("DEL");
        for quota in &self.quotas {
            command.arg(format!("{base}{}", quota.window_ms()));
        }
        self.within_timeout(async {
            match &self.connection {
                RedisConnection::Single(c) => command.query_async::<i64>(&mut c.clone()).await,
                RedisConnection::Cluster(c) => command.query_async::<i64>(&mut c.clone()).await,
            }
            .map_err(backend_error)
        })
        .await?;
        Ok(())
    }

    async fn refund(&self, key: &str, amount: u64) -> Result<(), Error> {
        key::validate(key)?;
        self.run(key, Op::Refund, amount).await.map(|_| ())
    }
}

impl<C> fmt::Debug for RedisLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("quotas", &self.quotas)
            .field("alignment", &self.alignment)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

/// Configures a [`RedisLimiter`]; made by [`RedisLimiter::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisLimiterBuilder<C = DefaultClock> {
    quotas: Vec<Quota>,
    alignment: Alignment,
    prefix: String,
    time: TimeSource<C>,
    timeout: Duration,
}

impl<C: Clock> RedisLimiterBuilder<C> {
    /// Adds a quota; a request must fit every quota (up to [`MAX_QUOTAS`]).
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quotas.push(quota);
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

    /// The longest a call may take, round trip included (default 50 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Reads time from a local clock (default: [`CoarseClock`](crate::CoarseClock)).
    pub fn clock<C2: Clock>(self, clock: C2) -> RedisLimiterBuilder<C2> {
        self.time_source(TimeSource::Local(clock))
    }

    /// Reads time from Redis's `TIME` inside the script, so that processes with skewed clocks
    /// still agree on windows.
    pub fn redis_time(self) -> RedisLimiterBuilder<C> {
        self.time_source(TimeSource::Redis)
    }

    fn time_source<C2: Clock>(self, time: TimeSource<C2>) -> RedisLimiterBuilder<C2> {
        RedisLimiterBuilder {
            quotas: self.quotas,
            alignment: self.alignment,
            prefix: self.prefix,
            time,
            timeout: self.timeout,
        }
    }

    /// Builds the limiter on `connection`.
    ///
    /// # Errors
    ///
    /// [`Error::TooManyQuotas`] past [`MAX_QUOTAS`]; [`Error::InvalidConfig`] for a prefix that
    /// is empty or contains a brace.
    pub fn build(self, connection: RedisConnection) -> Result<RedisLimiter<C>, Error> {
        if self.quotas.len() > MAX_QUOTAS {
            return Err(Error::TooManyQuotas {
                count: self.quotas.len(),
            });
        }
        keys::validate_prefix(&self.prefix)?;
        Ok(RedisLimiter {
            min_limit: min_limit(&self.quotas),
            quotas: self.quotas,
            alignment: self.alignment,
            prefix: self.prefix.into(),
            time: self.time,
            timeout: self.timeout,
            connection,
        })
    }
}

fn min_limit(quotas: &[Quota]) -> u64 {
    quotas.iter().map(Quota::limit).min().unwrap_or(0)
}
