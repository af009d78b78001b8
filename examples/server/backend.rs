//! The limiters behind the rate limit (the default plan's, the other plans', `/start`'s): in
//! memory, or on Redis with a failure policy, whose decisions are counted and logged without a
//! key.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[cfg(feature = "redis")]
use ratewindow::Error;
use ratewindow::tower::Outcome;
use ratewindow::{ConfigError, DecidedBy, DynRateLimiter, MemoryLimiter, Quota, Shadow};

use super::app::BackendMetrics;
use super::config::{Policy, Quotas, RedisSettings, RedisTarget};

/// The limiters a request may be decided by.
pub struct Limiters {
    /// The default plan's.
    pub default: Arc<dyn DynRateLimiter>,
    /// The other plans', by name: they share the default plan's counters.
    pub plans: Vec<(String, Arc<dyn DynRateLimiter>)>,
    /// `POST .../start`'s, with counters of its own.
    pub start: Option<Arc<dyn DynRateLimiter>>,
    /// Failed starts', with counters of their own.
    pub start_failures: Option<Arc<dyn DynRateLimiter>>,
}

impl Limiters {
    /// One limiter for every request.
    pub fn single(limiter: Arc<dyn DynRateLimiter>) -> Limiters {
        Limiters {
            default: limiter,
            plans: Vec::new(),
            start: None,
            start_failures: None,
        }
    }
}

/// What a plan's limiter refused, naming `PLANS`.
fn bad_plan(name: &str, err: ConfigError) -> String {
    format!("PLANS: plan {name}: {err}")
}

/// What a route's limiter refused, naming its `variable`.
fn bad_route(variable: &str, quota: Quota, err: ConfigError) -> String {
    format!("{variable}={:?}: {err}", quota.to_string())
}

/// The routes' limiters in memory: `/start`'s and failed starts', named `name`, if set.
fn memory_route(
    quota: Option<Quota>,
    shadow: Shadow,
    name: &str,
    variable: &str,
) -> Result<Option<Arc<dyn DynRateLimiter>>, String> {
    let Some(quota) = quota else {
        return Ok(None);
    };
    let limiter = MemoryLimiter::builder(quota)
        .shadow(shadow)
        .name(name)
        .build()
        .map_err(|err| bad_route(variable, quota, err))?;
    Ok(Some(Arc::new(limiter)))
}

/// How long start-up may take to connect to Redis and run a first (uncounted) decision.
#[cfg(feature = "redis")]
const REDIS_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The in-process backend; `RATE_LIMIT`'s quota refused is the error's `Err(Ok(..))`, any
/// other's its message.
pub fn memory(quotas: &Quotas) -> Result<Limiters, Result<ConfigError, String>> {
    let mut builder = MemoryLimiter::builder(quotas.default).shadow(quotas.shadow());
    if !quotas.plans.is_empty() {
        builder = builder.name(Quotas::DEFAULT_PLAN);
    }
    let default = builder.build().map_err(Ok)?;
    let mut plans: Vec<(String, Arc<dyn DynRateLimiter>)> = Vec::new();
    for (name, quota) in &quotas.plans {
        let plan = default
            .plan(name, [*quota])
            .map_err(|err| Err(bad_plan(name, err)))?;
        plans.push((name.clone(), Arc::new(plan)));
    }
    let shadow = quotas.shadow();
    let start =
        memory_route(quotas.start, shadow, Quotas::START, "START_RATE_LIMIT").map_err(Err)?;
    let start_failures = memory_route(
        quotas.start_failures,
        shadow,
        Quotas::START_FAILURES,
        "START_FAILURE_LIMIT",
    )
    .map_err(Err)?;
    Ok(Limiters {
        default: Arc::new(default),
        plans,
        start,
        start_failures,
    })
}

/// Limiters on `target` configured by `settings`, once Redis has answered a first
/// (uncounted) decision, and the histogram of their round trips to Redis for `GET /metrics`.
/// `/start`'s counters are under the prefix `<REDIS_PREFIX>:start`.
#[cfg(feature = "redis")]
pub async fn redis(
    target: &RedisTarget,
    quotas: &Quotas,
    settings: &RedisSettings,
) -> Result<(Limiters, BackendMetrics), String> {
    use ratewindow::{
        FailurePolicy, RateLimiter, RedisConnection, RedisLimiter, RedisLimiterBuilder, RoundTrips,
    };

    let connect = async {
        match target {
            RedisTarget::Single(url) => RedisConnection::connect(url).await,
            RedisTarget::Cluster(urls) => {
                let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
                RedisConnection::connect_cluster_with_timeout(&urls, settings.timeout).await
            }
        }
    };
    // The messages name the target with its password masked (Redis errors do not repeat it).
    let at = target.addresses();
    eprintln!("server: connecting to {at}");
    // The connection retries by itself for a few seconds (Redis may be starting too).
    let connection = tokio::time::timeout(REDIS_STARTUP_TIMEOUT, connect)
        .await
        .map_err(|_| format!("cannot connect to {at}: no answer within {REDIS_STARTUP_TIMEOUT:?}"))?
        .map_err(|err| match err {
            // A URL that does not parse: say which variable holds it.
            Error::Config(_) => {
                format!("{}={:?}: {err}", target.variable(), target.urls())
            }
            _ => format!("cannot connect to {at}: {err}"),
        })?;

    // The settings every limiter here shares.
    let tuned = |builder: RedisLimiterBuilder| {
        let builder = builder
            .timeout(settings.timeout)
            .max_clock_skew(settings.max_clock_skew)
            .shadow(quotas.shadow());
        if settings.redis_time {
            builder.redis_time()
        } else {
            builder
        }
    };
    let builder = tuned(RedisLimiter::builder(quotas.default).prefix(settings.prefix.as_str()));
    let invalid = |err: ConfigError| match err {
        ConfigError::InvalidSetting { .. } => {
            format!("REDIS_PREFIX={:?}: {err}", settings.prefix)
        }
        _ => format!("cannot configure the Redis limiter: {err}"),
    };
    // Connected is not yet usable (a cluster node given as REDIS_URL, a missing permission, no
    // TIME...): one peek, which counts nothing, must be decided by Redis itself, so this limiter
    // reports the error that the failure policy would otherwise hide.
    let probe = builder
        .clone()
        .timeout(REDIS_STARTUP_TIMEOUT)
        .failure_policy(FailurePolicy::ReturnError)
        .build(connection.clone())
        .map_err(invalid)?;
    probe
        .peek("ratewindow-demo-startup-probe")
        .await
        .map_err(|err| format!("cannot use {at}: {err}"))?;

    let policy = match settings.policy {
        Policy::Open => FailurePolicy::FailOpen,
        Policy::Closed => FailurePolicy::FailClosed,
        Policy::Fallback { instances } => FailurePolicy::Fallback { instances },
    };
    // Set after the probe: its round trip is start-up's, not the rate limit's.
    let round_trips = RoundTrips::new();
    let builder = builder
        .failure_policy(policy)
        .round_trips(round_trips.clone());
    // A route's limiter: counters of its own, under `<REDIS_PREFIX>:<name>`.
    let route = |quota: Option<Quota>, name: &str, variable: &str| {
        let Some(quota) = quota else {
            return Ok(None);
        };
        let builder = RedisLimiter::builder(quota)
            .name(name)
            .prefix(format!("{}:{name}", settings.prefix));
        let limiter = tuned(builder)
            .failure_policy(policy)
            .round_trips(round_trips.clone())
            .build(connection.clone())
            .map_err(|err| bad_route(variable, quota, err))?;
        Ok::<_, String>(Some(Arc::new(limiter) as Arc<dyn DynRateLimiter>))
    };
    let start = route(quotas.start, Quotas::START, "START_RATE_LIMIT")?;
    let start_failures = route(
        quotas.start_failures,
        Quotas::START_FAILURES,
        "START_FAILURE_LIMIT",
    )?;
    let builder = if quotas.plans.is_empty() {
        builder
    } else {
        builder.name(Quotas::DEFAULT_PLAN)
    };
    let default = builder.build(connection).map_err(invalid)?;
    let mut plans: Vec<(String, Arc<dyn DynRateLimiter>)> = Vec::new();
    for (name, quota) in &quotas.plans {
        let plan = default
            .plan(name, [*quota])
            .map_err(|err| bad_plan(name, err))?;
        plans.push((name.clone(), Arc::new(plan)));
    }
    let metrics: BackendMetrics = Arc::new(move |text: &mut String| {
        // Writing to a `String` cannot fail.
        let _ = round_trips.write_prometheus(text);
    });
    let limiters = Limiters {
        default: Arc::new(default),
        plans,
        start,
        start_failures,
    };
    Ok((limiters, metrics))
}

/// Without the `redis` feature there is no Redis backend to build.
#[cfg(not(feature = "redis"))]
pub async fn redis(
    target: &RedisTarget,
    _quotas: &Quotas,
    _settings: &RedisSettings,
) -> Result<(Limiters, BackendMetrics), String> {
    Err(format!(
        "{} is set, but this build has no Redis backend: rebuild with --features redis,tower, e.g. \
         `REDIS_URL=redis://127.0.0.1:6379 cargo run --release --features redis,tower --example server`",
        target.variable()
    ))
}

/// Requests decided by a Redis limiter's failure policy (Redis timed out or was unreachable)
/// since the server last reported them; see [`report_policy_decisions`].
static POLICY_DECISIONS: AtomicU64 = AtomicU64::new(0);

/// Requests decided by the failure policy and not reported yet.
#[cfg(feature = "redis")]
pub fn unreported_policy_decisions() -> u64 {
    POLICY_DECISIONS.load(Ordering::Relaxed)
}

/// The rate-limit layer's observer: counts the decisions a failure policy made (Redis timed out
/// or was unreachable) for [`report_policy_decisions`]. Counted, not logged: an outage would
/// otherwise print a line per request.
pub fn count_policy_decisions(outcome: &Outcome) {
    if let Outcome::Decided(decision) = outcome {
        if matches!(
            decision.decided_by(),
            DecidedBy::FailOpen | DecidedBy::FailClosed | DecidedBy::Fallback
        ) {
            POLICY_DECISIONS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Logs, at most once a second, how many requests the failure policy decided since the last
/// report. Never a key: only the count.
pub async fn report_policy_decisions(policy: Policy) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let count = POLICY_DECISIONS.swap(0, Ordering::Relaxed);
        if count > 0 {
            let requests = if count == 1 { "request" } else { "requests" };
            eprintln!(
                "redis unavailable: {count} {requests} decided by the failure policy \
                 ({policy}) in the last second"
            );
        }
    }
}
