//! [`RedisLimiter`]: the same fixed-window semantics as the in-memory backend, shared by every
//! process that talks to one Redis (or Redis Cluster).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::breaker::Breaker;
use super::cache::OverLimitCache;
use super::cluster::ClusterRouter;
use super::connection::{RedisConnection, Request, bounded};
use super::errors::{backend_error, master_failed, scrubbed};
use super::eviction::{EvictionSettings, EvictionWatch};
use super::policy::FailurePolicy;
use super::reply::{Reply, unexpected_reply};
use super::{keys, script};
use crate::decision::QuotaState;
use crate::quota;
use crate::{
    Alignment, BackendErrorKind, Clock, DecidedBy, Decision, DefaultClock, Error, MAX_QUOTAS,
    MemoryLimiter, Quota, RateLimiter, key, window,
};

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

/// An exact fixed-window rate limiter whose counters live in Redis, shared by every process
/// that uses the same server (or cluster) and key prefix.
///
/// Each decision is one `EVALSHA` of a script that charges every quota of the key atomically
/// (`INCR` or `INCRBY` on one integer counter per window length and window) and gives the
/// charges back if any quota is over its limit: all or nothing, and a denied request consumes
/// nothing. A counter gets its
/// expiry (its window's end plus the [skew allowance](RedisLimiterBuilder::max_clock_skew)) in
/// the script that creates it, so none outlives its window by more. See the module docs of the
/// key layout for how hostile keys are kept apart and on one Cluster slot.
///
/// # Clocks and exactness across processes
///
/// With [`redis_time`](RedisLimiterBuilder::redis_time), every window is decided by Redis's
/// clock and the local clocks do not matter: for every key and window, the processes together
/// admit exactly `min(limit, offered)` units.
///
/// With local clocks (the default), each process counts in the window its own clock reads, in
/// that window's own counter. A counter lives until its window ends, on the clock of the
/// process that created it, plus the skew allowance. So, as long as the clocks differ by at
/// most the skew allowance (default 1 s), a process behind still finds the counter of its
/// window, and **every (key, window) admits at most its limit in total** (refunds and resets
/// aside). What skew changes is when: with the fastest clock ahead of real time by `a` and the
/// slowest behind by `b`, a window admits from `a` before its start until at most `b` after its
/// end, in real time. Beyond the allowance, a counter can expire while a process far behind is
/// still in its window, and that process counts the window again. A clock that steps back meets
/// the earlier window's counter as it was left (the in-memory backend, which keeps one count
/// per key, charges the later window instead), for as long as that counter lives: a step back
/// within the skew allowance admits nothing extra; a longer one can find the counter expired
/// and count its window again.
///
/// # Eviction
///
/// A counter that Redis evicts is a window counted from zero again: with any `maxmemory-policy`
/// but `noeviction`, a server short of memory lets keys over their limits. The limiter reads
/// the policy and `evicted_keys` on its first call and then every minute, warns of a server that
/// may evict ([`RedisWarning`](crate::RedisWarning), to
/// [`on_warning`](RedisLimiterBuilder::on_warning)'s hook or stderr), and can refuse it
/// ([`refuse_evicting_server`](RedisLimiterBuilder::refuse_evicting_server)); await
/// [`check_eviction`](Self::check_eviction) to check at startup. Run Redis with
/// `maxmemory-policy noeviction` and memory for one key per user key and quota window.
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
    /// The counters the quotas use in Redis: one per window length.
    counters: keys::Counters,
    min_limit: u64,
    alignment: Alignment,
    prefix: Arc<str>,
    clock: C,
    /// Decide at Redis's `TIME` rather than `clock`'s (which then only times the breaker and
    /// the caches).
    redis_time: bool,
    /// How long a counter outlives its window's end: the clock skew allowed.
    expiry_margin_ms: u64,
    timeout: Duration,
    connection: RedisConnection,
    policy: FailurePolicy,
    /// Only with [`FailurePolicy::Fallback`].
    fallback: Option<MemoryLimiter<C>>,
    breaker: Arc<Breaker>,
    retry_after_ms: u64,
    over_limit: Arc<OverLimitCache>,
    /// The server's eviction policy, checked periodically.
    pub(super) eviction: Arc<EvictionWatch>,
}

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
        }
    }
}

/// What the script is asked to do.
#[derive(Clone, Copy)]
enum Op {
    Check,
    Peek,
    Refund,
    Reset,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Check => "check",
            Op::Peek => "peek",
            Op::Refund => "refund",
            Op::Reset => "reset",
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
    /// [`Error::IncompatibleQuotas`] unless `quotas` has the same windows in the same order;
    /// [`Error::LimitTooLarge`] as for [`RedisLimiterBuilder::build`].
    pub fn with_quotas(&self, quotas: impl IntoIterator<Item = Quota>) -> Result<Self, Error>
    where
        C: Clone,
    {
        let quotas: Vec<Quota> = quotas.into_iter().collect();
        quota::check_same_windows(&self.quotas, &quotas)?;
        check_limits(&quotas)?;
        let mut next = self.clone();
        if let (Some(fallback), FailurePolicy::Fallback { instances }) =
            (&self.fallback, self.policy)
        {
            next.fallback = Some(fallback.with_quotas(scaled(&quotas, instances))?);
        }
        next.min_limit = quota::min_limit(&quotas);
        next.counters = keys::Counters::new(&quotas);
        next.quotas = quotas;
        // The cached denials were made under the old limits.
        next.over_limit = Arc::new(OverLimitCache::new(self.over_limit.capacity()));
        Ok(next)
    }

    /// Decides for a valid key: from the over-limit cache, else Redis, else the failure policy.
    async fn decide(&self, key: &str, op: Op, amount: u64) -> Result<Decision, Error> {
        let local_ms = self.clock.now_ms();
        if let Op::Refund = op {
            self.over_limit.forget(key);
        } else if let Some(denied) = self.over_limit.get(key, local_ms, amount) {
            return Ok(denied);
        }
        // A server found to evict counters is refused if so configured; a due check of it is
        // started in the background.
        if let Err(error) = self.eviction.poll(local_ms) {
            return self.on_failure(key, op, amount, error);
        }
        let mut base = keys::base(&self.prefix, key);
        // A Cluster fails by hash slot (a master and its slots): a dead master must not send
        // the keys of the live ones to the failure policy.
        let slot = match self.connection.cluster() {
            None => 0,
            Some(_) => usize::from(keys::slot(&base)),
        };
        // A Cluster's map that changed since the breaker opened may name a replica promoted in
        // the failed master's place: the call goes through (and trips the breaker again if not).
        let map_generation = self
            .connection
            .cluster()
            .map_or(0, ClusterRouter::map_generation);
        if self.breaker.is_open(slot, local_ms) && !self.breaker.map_changed(map_generation) {
            let error = Error::Backend {
                kind: BackendErrorKind::Unavailable,
                detail: "Redis failed moments ago; retrying it shortly".into(),
            };
            return self.on_failure(key, op, amount, error);
        }
        let whole_master = AtomicBool::new(true);
        match self
            .run(
                key,
                &mut base,
                slot as u16,
                op,
                amount,
                local_ms,
                &whole_master,
            )
            .await
        {
            Ok(decision) => {
                self.breaker.close(slot);
                if let Op::Check = op {
                    self.over_limit.remember(key, &decision, local_ms);
                } else if let Op::Peek = op {
                    if !decision.is_allowed() {
                        self.over_limit.remember(key, &decision, local_ms);
                    }
                }
                Ok(decision)
            }
            Err(error @ Error::Backend { .. }) => {
                match self.connection.cluster() {
                    Some(router)
                        if whole_master.load(Ordering::Relaxed)
                            && !self.breaker.is_open(slot, local_ms) =>
                    {
                        // The master failed, not the slot: every key it serves waits for the
                        // retry. (Once per failure: a call that finds the slot already open
                        // found the others open too.)
                        for s in router.slots_of_master(slot as u16) {
                            self.breaker
                                .trip(usize::from(s), local_ms, self.retry_after_ms);
                        }
                        self.breaker.tripped_at_map(map_generation);
                    }
                    _ => {
                        self.breaker.trip(slot, local_ms, self.retry_after_ms);
                        self.breaker.tripped_at_map(map_generation);
                    }
                }
                self.on_failure(key, op, amount, error)
            }
            Err(error) => Err(error),
        }
    }

    /// The failure policy's answer when Redis did not decide.
    fn on_failure(&self, key: &str, op: Op, amount: u64, error: Error) -> Result<Decision, Error> {
        match (self.policy, &self.fallback) {
            (FailurePolicy::Fallback { .. }, Some(fallback)) => {
                let decision = match op {
                    Op::Check => fallback
                        .check_n(key, amount.min(quota::min_limit(fallback.quotas())).max(1)),
                    // A reset never comes here: it has no failure policy.
                    Op::Peek | Op::Reset => fallback.peek(key),
                    Op::Refund => fallback
                        .refund(key, amount)
                        .and_then(|()| fallback.peek(key)),
                }?;
                Ok(decision.attributed_to(DecidedBy::Fallback))
            }
            (FailurePolicy::FailOpen, _) => Ok(self.local_decision(key, amount, true)?),
            (FailurePolicy::FailClosed, _) => Ok(self.local_decision(key, amount, false)?),
            _ => Err(error),
        }
    }

    /// A decision made without any count: `admit`ted with the full limit left, or denied with
    /// none, in the local clock's windows.
    fn local_decision(&self, key: &str, cost: u64, admit: bool) -> Result<Decision, Error> {
        let now_ms = self.clock.now_ms();
        let phases = self.alignment.phases(key);
        let mut decision = Decision::blank(now_ms);
        for (i, quota) in self.quotas.iter().enumerate() {
            let window_ms = quota.window_ms();
            let window = window::locate(now_ms, window_ms, phases.of(window_ms))?;
            let used = if admit {
                cost.min(quota.limit())
            } else {
                quota.limit()
            };
            decision.set_quota(
                i,
                QuotaState::new(quota.limit(), used, window_ms, window.end_ms),
            );
        }
        let violated = if admit {
            0
        } else {
            (1u8 << self.quotas.len()) - 1
        };
        decision.finish(self.quotas.len(), violated);
        Ok(decision.attributed_to(if admit {
            DecidedBy::FailOpen
        } else {
            DecidedBy::FailClosed
        }))
    }

    /// Runs the script for `key`, whose counters' names start with `base` (on Cluster `slot`),
    /// at local time `now_ms` unless windows follow Redis's time. On a Cluster failure,
    /// `whole_master` says whether the master failed (no answer, a broken connection, the
    /// cluster down) or only this slot or key (an answer from the master first, a redirect not
    /// followed, an error about the key's own value).
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        key: &str,
        base: &mut String,
        slot: u16,
        op: Op,
        amount: u64,
        now_ms: u64,
        whole_master: &AtomicBool,
    ) -> Result<Decision, Error> {
        if !self.redis_time && now_ms > window::MAX_TIME_MS {
            return Err(Error::ClockOutOfRange { now_ms });
        }
        let phases = self.alignment.phases(key);
        let n = self.counters.len();
        let base_len = base.len();
        let capacity = n * (base_len + 64) + 64;
        // Each counter's window, where the client decides it: computed once for the counters'
        // names, their TTLs and the decision.
        let local = (!self.redis_time)
            .then(|| self.windows(now_ms, phases))
            .transpose()?;
        let local_check = matches!(op, Op::Check) && local.is_some();
        let script = if local_check {
            &*script::CHECK
        } else {
            &*script::GENERAL
        };
        let mut command = script.command(n, capacity);
        // The counters' full names where the client knows the window, so that Redis Cluster can
        // route by them (a migrating slot's keys are found by name); else up to the index.
        for (j, (window_ms, _)) in self.counters.iter().enumerate() {
            match &local {
                Some(windows) => keys::push_counter(base, window_ms, windows[j].index),
                None => keys::push_window(base, window_ms),
            }
            command.arg(base.as_bytes());
            base.truncate(base_len);
        }
        match &local {
            // The hot path: every integer is computed here, so the script only counts. One
            // counter and a cost of 1 leave the cost out (see the script).
            Some(windows) if local_check => {
                if n > 1 || amount != 1 {
                    command.arg(amount);
                }
                for ((_, limit), window) in self.counters.iter().zip(windows) {
                    command
                        .arg(limit)
                        .arg(window.end_ms - now_ms + self.expiry_margin_ms);
                }
            }
            _ => {
                command.arg(op.name()).arg(amount);
                if local.is_some() {
                    command.arg(now_ms);
                } else {
                    command.arg("");
                }
                command.arg(self.expiry_margin_ms);
                for (window_ms, limit) in self.counters.iter() {
                    command.arg(limit).arg(window_ms).arg(phases.of(window_ms));
                }
            }
        }
        let master_answered = AtomicBool::new(false);
        let sent = self
            .connection
            .send(slot, Request::Script(script, &command), &master_answered);
        // `whole_master` is read only on a Cluster, where a failed master fails all its slots;
        // a failure met after the master answered (following a redirect, retrying `TRYAGAIN`)
        // is the slot's alone.
        let at_master = || !master_answered.load(Ordering::Relaxed);
        let reply = match bounded(self.timeout, sent).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => {
                whole_master.store(master_failed(&error) && at_master(), Ordering::Relaxed);
                return Err(scrubbed(backend_error(error), &[base, key]));
            }
            Err(timeout) => {
                whole_master.store(at_master(), Ordering::Relaxed);
                if let Some(router) = self.connection.cluster() {
                    router.timed_out(slot, at_master());
                }
                return Err(timeout);
            }
        };
        let reply = Reply::parse(&reply, n, local_check.then_some(now_ms))
            .ok_or_else(|| unexpected_reply(&reply))?;
        let windows = match local {
            Some(windows) => windows,
            None => self.windows(reply.now_ms, phases)?,
        };
        Ok(self.decision(&reply, &windows, op, amount))
    }

    /// Each counter's window at `now_ms`.
    fn windows(
        &self,
        now_ms: u64,
        phases: crate::alignment::Phases,
    ) -> Result<[window::Window; MAX_QUOTAS], Error> {
        let mut windows = [window::Window {
            index: 0,
            end_ms: 0,
        }; MAX_QUOTAS];
        for ((window_ms, _), slot) in self.counters.iter().zip(&mut windows) {
            *slot = window::locate(now_ms, window_ms, phases.of(window_ms))?;
        }
        Ok(windows)
    }

    /// The decision a script's reply makes: each quota's current window (`windows`, by
    /// counter) with its counter's count; a peek reports the counts as if charged, when the
    /// request would fit.
    fn decision(&self, reply: &Reply, windows: &[window::Window], op: Op, amount: u64) -> Decision {
        let count = |i: usize| reply.counts[self.counters.of(i)];
        // The script says whether a check was denied (it gave the charge back, so the counts
        // are those the request met); which quotas deny follows from the counts, for a peek too.
        let mut violated = 0u8;
        if reply.denied || matches!(op, Op::Peek) {
            for (i, quota) in self.quotas.iter().enumerate() {
                if count(i).saturating_add(amount) > quota.limit() {
                    violated |= 1 << i;
                }
            }
        }
        let charge = matches!(op, Op::Peek) && violated == 0;
        let mut decision = Decision::blank(reply.now_ms);
        for (i, quota) in self.quotas.iter().enumerate() {
            let used = if charge { count(i) + amount } else { count(i) };
            let end_ms = windows[self.counters.of(i)].end_ms;
            decision.set_quota(
                i,
                QuotaState::new(quota.limit(), used, quota.window_ms(), end_ms),
            );
        }
        decision.finish(self.quotas.len(), violated);
        decision
    }
}

impl<C: Clock> RateLimiter for RedisLimiter<C> {
    async fn check_n(&self, key: &str, cost: u64) -> Result<Decision, Error> {
        key::validate_request(key, cost, self.min_limit)?;
        self.decide(key, Op::Check, cost).await
    }

    async fn peek(&self, key: &str) -> Result<Decision, Error> {
        key::validate(key)?;
        self.decide(key, Op::Peek, 1).await
    }

    async fn reset(&self, key: &str) -> Result<(), Error> {
        key::validate(key)?;
        self.over_limit.forget(key);
        if let Some(fallback) = &self.fallback {
            fallback.reset(key)?;
        }
        let mut base = keys::base(&self.prefix, key);
        let slot = keys::slot(&base);
        let now_ms = self.clock.now_ms();
        // A reset is no decision: no breaker, no failure policy, so the master is not blamed.
        let whole_master = AtomicBool::new(false);
        self.run(key, &mut base, slot, Op::Reset, 0, now_ms, &whole_master)
            .await?;
        Ok(())
    }

    async fn refund(&self, key: &str, amount: u64) -> Result<(), Error> {
        key::validate(key)?;
        self.decide(key, Op::Refund, amount).await.map(|_| ())
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
    clock: C,
    redis_time: bool,
    max_clock_skew: Duration,
    timeout: Duration,
    policy: FailurePolicy,
    retry_after: Duration,
    over_limit_capacity: usize,
    pub(super) eviction: EvictionSettings,
}

impl<C: Clock + Clone> RedisLimiterBuilder<C> {
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
        }
    }

    /// Decides windows by Redis's `TIME`, read inside the script, so that processes with skewed
    /// clocks still agree on windows.
    pub fn redis_time(mut self) -> Self {
        self.redis_time = true;
        self
    }

    /// How far apart the clocks of the processes sharing these counters may be (default 1 s, at
    /// most a day). Each counter outlives its window's end, on the clock of the process that
    /// created it, by this much, so that a process behind by up to this much never finds the
    /// counter of its current window gone and counts that window again. The cost is keys kept
    /// this much longer. With [`redis_time`](Self::redis_time) the local clocks do not matter.
    /// See [`RedisLimiter`] for the guarantee.
    pub fn max_clock_skew(mut self, skew: Duration) -> Self {
        self.max_clock_skew = skew;
        self
    }

    /// Builds the limiter on `connection`.
    ///
    /// # Errors
    ///
    /// [`Error::TooManyQuotas`] past [`MAX_QUOTAS`]; [`Error::InvalidConfig`] for a prefix that
    /// is empty or contains a brace, or a clock skew allowance above a day;
    /// [`Error::LimitTooLarge`] for a limit above 2^53 − 1, the largest the server-side script
    /// counts exactly; for [`FailurePolicy::Fallback`], what building its [`MemoryLimiter`]
    /// returns.
    pub fn build(self, connection: RedisConnection) -> Result<RedisLimiter<C>, Error> {
        if self.quotas.len() > MAX_QUOTAS {
            return Err(Error::TooManyQuotas {
                count: self.quotas.len(),
            });
        }
        keys::validate_prefix(&self.prefix)?;
        if self.max_clock_skew > MAX_CLOCK_SKEW {
            return Err(Error::InvalidConfig {
                reason: "the clock skew allowance is above a day",
            });
        }
        check_limits(&self.quotas)?;
        let fallback = match self.policy {
            FailurePolicy::Fallback { instances } => {
                let quotas = scaled(&self.quotas, instances);
                let mut builder = MemoryLimiter::builder(quotas[0])
                    .alignment(self.alignment)
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
            min_limit: quota::min_limit(&self.quotas),
            counters: keys::Counters::new(&self.quotas),
            quotas: self.quotas,
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
        })
    }
}

/// The largest limit the script counts exactly: Lua's numbers are doubles, which hold every
/// integer up to 2^53 and no longer count one by one above it (2^53 + 1 == 2^53). Not 2^53
/// itself: a full count of 2^53 plus one is 2^53 again, which is not above a limit of 2^53, so
/// the request would be admitted and not counted. With limits below 2^53 any sum above the
/// limit is exact or rounds to at least 2^53, still above it.
const MAX_LIMIT: u64 = (1 << 53) - 1;

/// Refuses limits the script could not count exactly.
fn check_limits(quotas: &[Quota]) -> Result<(), Error> {
    match quotas.iter().find(|q| q.limit() > MAX_LIMIT) {
        Some(quota) => Err(Error::LimitTooLarge {
            limit: quota.limit(),
            max: MAX_LIMIT,
        }),
        None => Ok(()),
    }
}

/// The quotas with each limit divided among `instances` processes (at least 1 each).
fn scaled(quotas: &[Quota], instances: u64) -> Vec<Quota> {
    quotas
        .iter()
        .map(|q| {
            let limit = (q.limit() / instances.max(1)).max(1);
            Quota::from_millis(limit, q.window_ms()).unwrap_or(*q)
        })
        .collect()
}
