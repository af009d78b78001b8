//! [`RedisLimiter`]: the same fixed-window semantics as the in-memory backend, shared by every
//! process that talks to one Redis (or Redis Cluster).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::breaker::Breaker;
use super::builder::{max_limit, scaled};
use super::cache::OverLimitCache;
use super::cluster::ClusterRouter;
use super::connection::{RedisConnection, Request};
use super::errors::{Cause, Failure, scrubbed};
use super::eviction::EvictionWatch;
use super::policy::FailurePolicy;
use super::reply::{Reply, unexpected_reply};
use super::round_trips::RoundTrips;
use super::{keys, script};
use crate::decision::QuotaState;
use crate::fixed_window;
use crate::quota::QuotaSet;
use crate::{
    Alignment, BackendErrorKind, Clock, ConfigError, DecidedBy, Decision, DefaultClock, Error,
    MAX_QUOTAS, MemoryLimiter, Quota, RateLimiter, Shadow, key, window,
};

/// An exact fixed-window rate limiter whose counters live in Redis, shared by every process
/// that uses the same server (or cluster) and key prefix.
///
/// Each decision is one `EVALSHA` of a script that charges every quota of the key atomically
/// (`INCR` or `INCRBY` on one integer counter per window length and window) and gives the
/// charges back if any quota is over its limit: all or nothing, and a denied request consumes
/// nothing. A counter gets its
/// expiry (its window's end plus the [skew allowance](crate::RedisLimiterBuilder::max_clock_skew)) in
/// the script that creates it, so none outlives its window by more. See the module docs of the
/// key layout for how hostile keys are kept apart and on one Cluster slot.
///
/// # Clocks and exactness across processes
///
/// With [`redis_time`](crate::RedisLimiterBuilder::redis_time), every window is decided by Redis's
/// clock and the local clocks do not matter: for every key and window, the processes together
/// admit exactly `min(limit, offered)` units.
///
/// With local clocks (the default), each process counts in the window its own clock reads, in
/// that window's own counter. A counter lives until its window ends, on the clock of the
/// process that created it, plus the skew allowance. So, as long as the clocks differ by at
/// most the skew allowance (default 1 s), a process behind still finds the counter of its
/// window, and **every (key, window) admits at most its limit in total** (refunds and clears
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
/// [`on_warning`](crate::RedisLimiterBuilder::on_warning)'s hook or stderr), and can refuse it
/// ([`refuse_evicting_server`](crate::RedisLimiterBuilder::refuse_evicting_server)); await
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
    pub(super) quotas: QuotaSet,
    /// The counters the quotas use in Redis: one per window length.
    pub(super) counters: keys::Counters,
    pub(super) alignment: Alignment,
    pub(super) prefix: Arc<str>,
    pub(super) clock: C,
    /// Decide at Redis's `TIME` rather than `clock`'s (which then only times the breaker and
    /// the caches).
    pub(super) redis_time: bool,
    /// How long a counter outlives its window's end: the clock skew allowed.
    pub(super) expiry_margin_ms: u64,
    pub(super) timeout: Duration,
    pub(super) connection: RedisConnection,
    pub(super) policy: FailurePolicy,
    /// Only with [`FailurePolicy::Fallback`].
    pub(super) fallback: Option<MemoryLimiter<C>>,
    pub(super) breaker: Arc<Breaker>,
    pub(super) retry_after_ms: u64,
    pub(super) over_limit: Arc<OverLimitCache>,
    /// The server's eviction policy, checked periodically.
    pub(super) eviction: Arc<EvictionWatch>,
    /// Where each call to Redis records its time, if anywhere.
    pub(super) round_trips: Option<RoundTrips>,
}

/// What the script is asked to do.
#[derive(Clone, Copy)]
enum Op {
    Check,
    Peek,
    Refund,
    /// A refund to the windows of a given time (a decision's), whatever clock decides windows.
    Release,
    Clear,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Check => "check",
            Op::Peek => "peek",
            Op::Refund | Op::Release => "refund",
            Op::Clear => "clear",
        }
    }
}

/// One run of the script: `op` with `amount` for `key`, whose counters' names start with
/// `base` (on Cluster `slot`), at local time `now_ms` unless windows follow Redis's time.
struct Call<'a> {
    key: &'a str,
    base: &'a mut String,
    slot: u16,
    op: Op,
    amount: u64,
    now_ms: u64,
}

/// Why a run of the script did not decide.
struct Undecided {
    error: Error,
    /// Read only on a Cluster failure (an [`Error::Backend`]): whether the master of the slot
    /// failed (no answer, a broken connection, the cluster down), so that every slot it serves
    /// waits for the retry, or only this slot or key (an answer from the master first, a
    /// redirect not followed, an error about the key's own value).
    whole_master: bool,
}

impl From<Error> for Undecided {
    /// An error of the request's own, met before or after the call (a clock out of range): no
    /// failure of Redis, so it never reaches the breaker.
    fn from(error: Error) -> Undecided {
        Undecided {
            error,
            whole_master: false,
        }
    }
}

impl<C: Clock> RedisLimiter<C> {
    /// The quotas this limiter enforces, in order.
    pub fn quotas(&self) -> &[Quota] {
        self.quotas.as_slice()
    }

    /// A limiter that shares this one's connection, prefix and counters but enforces new limits
    /// (e.g. after a configuration reload); counts carry over, so a limit raised mid-window
    /// takes effect at once. The limiter keeps its name.
    ///
    /// # Errors
    ///
    /// [`ConfigError::IncompatibleQuotas`] unless `quotas` has the same windows in the same order;
    /// [`ConfigError::LimitTooLarge`] as for [`RedisLimiterBuilder::build`](crate::RedisLimiterBuilder::build).
    pub fn with_quotas(&self, quotas: impl IntoIterator<Item = Quota>) -> Result<Self, ConfigError>
    where
        C: Clone,
    {
        let quotas: Vec<Quota> = quotas.into_iter().collect();
        let set = self.quotas.with_limits(&quotas, max_limit)?;
        let mut next = self.clone();
        if let (Some(fallback), FailurePolicy::Fallback { instances }) =
            (&self.fallback, self.policy)
        {
            next.fallback = Some(fallback.with_quotas(scaled(&quotas, instances))?);
        }
        next.counters = keys::Counters::new(&quotas);
        next.quotas = set;
        // The cached denials were made under the old limits.
        next.over_limit = Arc::new(OverLimitCache::new(self.over_limit.capacity()));
        Ok(next)
    }

    /// A plan: a limiter named `name` that shares this one's connection, prefix and counters
    /// but enforces its own limits, as [`with_quotas`](Self::with_quotas) makes. A key's count
    /// is the same under every plan of one limiter, so a key moved to another plan mid-window
    /// keeps its count. Its decisions carry `name` ([`Decision::name`]).
    ///
    /// # Errors
    ///
    /// As [`with_quotas`](Self::with_quotas), and [`ConfigError::InvalidSetting`] for a name
    /// that is not 1 to 32 ASCII letters, digits, `-` or `_`.
    pub fn plan(
        &self,
        name: &str,
        quotas: impl IntoIterator<Item = Quota>,
    ) -> Result<Self, ConfigError>
    where
        C: Clone,
    {
        let mut plan = self.with_quotas(quotas)?;
        plan.quotas = plan.quotas.named(name)?;
        Ok(plan)
    }

    /// A limiter that shares this one's connection, prefix and counters (and everything else)
    /// with the quotas of `shadow` in shadow instead: see [`Shadow`].
    pub fn with_shadow(&self, shadow: Shadow) -> Self
    where
        C: Clone,
    {
        let mut next = self.clone();
        next.quotas = next.quotas.shadowed(shadow);
        if let Some(fallback) = &self.fallback {
            next.fallback = Some(fallback.with_shadow(shadow));
        }
        // The cached denials were made under the old shadow.
        next.over_limit = Arc::new(OverLimitCache::new(self.over_limit.capacity()));
        next
    }

    /// Charges a request that `denied` found over quotas in shadow alone to the enforced
    /// quotas: a second run of the script, on those quotas' counters only. What that run
    /// decides is the decision, with the shadow quotas' states as the first run found them.
    async fn charge_enforced(
        &self,
        key: &str,
        cost: u64,
        denied: Decision,
    ) -> Result<Decision, Error>
    where
        C: Clone,
    {
        let shadow = self.quotas.shadow();
        let Some((view, enforced)) = self.enforced_view()? else {
            // Every quota in shadow: nothing to charge.
            return Ok(denied);
        };
        let charged = view.decide(key, Op::Check, cost).await?;
        if charged.decided_by() == DecidedBy::Fallback {
            // The fallback limiter decided for every quota (it has them all, shadow included).
            return Ok(charged.marked(self.quotas.name(), shadow));
        }
        let mut states = [QuotaState::default(); MAX_QUOTAS];
        let mut violated = 0u8;
        for (i, state) in denied.quotas().iter().enumerate() {
            states[i] = *state;
            if denied.denied_by(i) {
                violated |= 1 << i;
            }
        }
        for (j, &i) in enforced.iter().enumerate() {
            states[i] = charged.quotas()[j];
            if charged.denied_by(j) {
                violated |= 1 << i;
            }
        }
        let mut decision = Decision::blank(charged.decided_at_ms());
        for (i, state) in states[..denied.quotas().len()].iter().enumerate() {
            decision.set_quota(i, *state);
        }
        decision.finish(denied.quotas().len(), violated);
        Ok(decision
            .marked(self.quotas.name(), shadow)
            .attributed_to(charged.decided_by()))
    }

    /// A limiter on the enforced quotas' counters alone, and those quotas' positions; `None`
    /// when every quota is in shadow. Its over-limit cache is empty: the key's cached denials
    /// are the whole limiter's.
    fn enforced_view(&self) -> Result<Option<(Self, Vec<usize>)>, Error>
    where
        C: Clone,
    {
        let shadow = self.quotas.shadow();
        let enforced: Vec<usize> = (0..self.quotas.len())
            .filter(|&i| !shadow.contains(i))
            .collect();
        if enforced.is_empty() {
            return Ok(None);
        }
        let quotas: Vec<Quota> = enforced.iter().map(|&i| self.quotas[i]).collect();
        let mut view = self.clone();
        view.quotas = QuotaSet::new(&quotas, max_limit).map_err(Error::Config)?;
        view.counters = keys::Counters::new(&quotas);
        view.over_limit = Arc::new(OverLimitCache::new(0));
        Ok(Some((view, enforced)))
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
        let call = Call {
            key,
            base: &mut base,
            slot: slot as u16,
            op,
            amount,
            now_ms: local_ms,
        };
        match self.run(call).await {
            Ok(decision) => {
                self.breaker.close(slot);
                if let Op::Check = op {
                    self.over_limit
                        .remember(key, &decision, local_ms, self.quotas.shadow());
                } else if let Op::Peek = op {
                    // Only a peek an enforced quota denies: a shadow denial's peek shows its
                    // enforced quotas as the next request would charge them.
                    let shadow = self.quotas.shadow();
                    let enforced_denies = (0..self.quotas.len())
                        .any(|i| decision.denied_by(i) && !shadow.contains(i));
                    if enforced_denies {
                        self.over_limit.remember(key, &decision, local_ms, shadow);
                    }
                }
                Ok(decision)
            }
            Err(Undecided {
                error: error @ Error::Backend { .. },
                whole_master,
            }) => {
                // Once per failed call to Redis: the breaker keeps the calls after it, and so
                // the warnings, to one per slot and retry interval. The error never holds a key.
                #[cfg(feature = "tracing")]
                tracing::warn!(
                    target: "ratewindow",
                    %error,
                    policy = ?self.policy,
                    "Redis did not decide; the failure policy answers"
                );
                match self.connection.cluster() {
                    Some(router) if whole_master && !self.breaker.is_open(slot, local_ms) => {
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
            Err(Undecided { error, .. }) => Err(error),
        }
    }

    /// The failure policy's answer when Redis did not decide.
    fn on_failure(&self, key: &str, op: Op, amount: u64, error: Error) -> Result<Decision, Error> {
        match (self.policy, &self.fallback) {
            (FailurePolicy::Fallback { .. }, Some(fallback)) => {
                let decision = match op {
                    Op::Check => {
                        fallback.check_n_sync(key, amount.min(fallback.min_limit()).max(1))
                    }
                    // A clear or a release never comes here: neither has a failure policy.
                    Op::Peek | Op::Clear | Op::Release => fallback.peek_sync(key),
                    Op::Refund => fallback
                        .refund_sync(key, amount)
                        .and_then(|()| fallback.peek_sync(key)),
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
        let mut found = [QuotaState::default(); MAX_QUOTAS];
        for (state, quota) in found.iter_mut().zip(self.quotas.iter()) {
            let window_ms = quota.window_ms();
            let window = window::locate(now_ms, window_ms, phases.of(window_ms))?;
            // As if the request met empty windows, or full ones.
            let used = if admit { 0 } else { quota.limit() };
            *state = QuotaState::new(quota.limit(), used, window_ms, window.end_ms);
        }
        let decision = fixed_window::decide(now_ms, &found[..self.quotas.len()], cost);
        Ok(decision.attributed_to(if admit {
            DecidedBy::FailOpen
        } else {
            DecidedBy::FailClosed
        }))
    }

    /// Runs the script for `call`; when Redis does not decide, says what failed.
    async fn run(&self, call: Call<'_>) -> Result<Decision, Undecided> {
        let Call {
            key,
            base,
            slot,
            op,
            amount,
            now_ms,
        } = call;
        // A release names the windows it gives back to by the decision's time, which is Redis's
        // own under `redis_time`.
        let local_windows = !self.redis_time || matches!(op, Op::Release);
        if local_windows && now_ms > window::MAX_TIME_MS {
            return Err(Error::ClockOutOfRange { now_ms }.into());
        }
        let phases = self.alignment.phases(key);
        let n = self.counters.len();
        let base_len = base.len();
        let capacity = n * (base_len + 64) + 64;
        // Each counter's window, where the client decides it: computed once for the counters'
        // names, their TTLs and the decision.
        let local = local_windows
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
        // The one call to Redis of every operation, single server or Cluster: its time is the
        // round trip, whatever the outcome (a timeout included: the request waited for it).
        let started = self.round_trips.as_ref().map(|_| Instant::now());
        let sent = self
            .connection
            .send(slot, Request::Script(script, &command), self.timeout)
            .await;
        if let (Some(round_trips), Some(started)) = (&self.round_trips, started) {
            round_trips.record(started.elapsed());
        }
        let reply = match sent {
            Ok(reply) => reply,
            Err(failure) => {
                // A failure met after the master answered (following a redirect, retrying
                // `TRYAGAIN`) is the slot's alone.
                let whole_master = matches!(failure, Failure::Master(_));
                let error = match failure.cause() {
                    Cause::Redis(_) => scrubbed(failure.into_error(), &[base, key]),
                    Cause::TimedOut(_) => {
                        if let Some(router) = self.connection.cluster() {
                            // A timeout is the master's unless the master had answered.
                            router.timed_out(slot, whole_master);
                        }
                        failure.into_error()
                    }
                };
                return Err(Undecided {
                    error,
                    whole_master,
                });
            }
        };
        let reply =
            Reply::parse(&reply, n, local_check.then_some(now_ms)).ok_or_else(|| Undecided {
                error: unexpected_reply(&reply),
                // A reply of another shape than the script's is blamed on the master, for
                // every slot it serves.
                whole_master: true,
            })?;
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
        let mut states = [QuotaState::default(); MAX_QUOTAS];
        for (i, (state, quota)) in states.iter_mut().zip(self.quotas.iter()).enumerate() {
            let counter = self.counters.of(i);
            let window_ms = quota.window_ms();
            let used = reply.counts[counter];
            *state = QuotaState::new(quota.limit(), used, window_ms, windows[counter].end_ms);
        }
        let states = &states[..self.quotas.len()];
        if matches!(op, Op::Peek) {
            // The decision the next request would get, as the in-memory backend makes it: a
            // shadow denial shows its enforced quotas charged.
            fixed_window::decide_with_shadow(reply.now_ms, states, amount, self.quotas.shadow())
        } else if reply.denied {
            // The counts are those the request met (a denied check was given back): decide on
            // them, as the script did.
            fixed_window::decide(reply.now_ms, states, amount)
        } else {
            fixed_window::admitted(reply.now_ms, states)
        }
    }
}

// Every limiter is built with a `Clone` clock (see the builder).
impl<C: Clock + Clone> RateLimiter for RedisLimiter<C> {
    async fn check_n(&self, key: &str, cost: u64) -> Result<Decision, Error> {
        key::validate_request(key, cost, self.quotas.min_limit())?;
        let shadow = self.quotas.shadow();
        let decision = self
            .decide(key, Op::Check, cost)
            .await?
            .marked(self.quotas.name(), shadow);
        if !decision.is_shadow_denied() || decision.decided_by() == DecidedBy::Fallback {
            // (The fallback limiter has the same quotas in shadow, and has charged.)
            return Ok(decision);
        }
        self.charge_enforced(key, cost, decision).await
    }

    async fn peek(&self, key: &str) -> Result<Decision, Error> {
        key::validate(key)?;
        let decision = self.decide(key, Op::Peek, 1).await?;
        Ok(decision.marked(self.quotas.name(), self.quotas.shadow()))
    }

    async fn clear(&self, key: &str) -> Result<(), Error> {
        key::validate(key)?;
        self.over_limit.forget(key);
        if let Some(fallback) = &self.fallback {
            fallback.clear_sync(key)?;
        }
        let mut base = keys::base(&self.prefix, key);
        let slot = keys::slot(&base);
        let now_ms = self.clock.now_ms();
        let call = Call {
            key,
            base: &mut base,
            slot,
            op: Op::Clear,
            amount: 0,
            now_ms,
        };
        // A clear is no decision: no breaker, no failure policy, so the master is not blamed.
        self.run(call).await.map_err(|undecided| undecided.error)?;
        Ok(())
    }

    async fn refund(&self, key: &str, amount: u64) -> Result<(), Error> {
        key::validate(key)?;
        self.decide(key, Op::Refund, amount).await.map(|_| ())
    }

    async fn release(&self, key: &str, amount: u64, decision: &Decision) -> Result<(), Error> {
        key::validate(key)?;
        if decision.charged_mask() == 0 {
            // Charged nothing.
            return Ok(());
        }
        match decision.decided_by() {
            DecidedBy::Backend => {}
            DecidedBy::Fallback => {
                return match &self.fallback {
                    // What the fallback charged: at most its smallest limit (see `on_failure`).
                    Some(fallback) => {
                        let charged = amount.min(fallback.min_limit()).max(1);
                        fallback.release_charged(key, charged, decision)
                    }
                    None => Ok(()),
                };
            }
            // Charged nothing.
            _ => return Ok(()),
        }
        if !decision.is_allowed() {
            // A shadow denial charged the enforced quotas alone: give back to them alone.
            return match self.enforced_view()? {
                Some((view, _)) => view.release_counters(key, amount, decision).await,
                None => Ok(()),
            };
        }
        self.release_counters(key, amount, decision).await
    }
}

impl<C: Clock + Clone> RedisLimiter<C> {
    /// Gives back `amount` to each of this limiter's counters of `decision`'s windows.
    async fn release_counters(
        &self,
        key: &str,
        amount: u64,
        decision: &Decision,
    ) -> Result<(), Error> {
        // A denial remembered for the key may have room again.
        self.over_limit.forget(key);
        let mut base = keys::base(&self.prefix, key);
        let slot = keys::slot(&base);
        // While Redis is failing, a release would only wait for its timeout: the units stay
        // counted.
        let breaker_slot = match self.connection.cluster() {
            None => 0,
            Some(_) => usize::from(slot),
        };
        if self.breaker.is_open(breaker_slot, self.clock.now_ms()) {
            return Ok(());
        }
        let call = Call {
            key,
            base: &mut base,
            slot,
            op: Op::Release,
            amount,
            now_ms: decision.decided_at_ms(),
        };
        // Like a clear, no failure policy: a release that fails leaves the units counted.
        self.run(call).await.map_err(|undecided| undecided.error)?;
        Ok(())
    }
}

impl<C> fmt::Debug for RedisLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("quotas", &self.quotas.as_slice())
            .field("alignment", &self.alignment)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}
