//! [`Decision`]: what a limiter answers, with every quota's state, for the headers and the caller.

use std::fmt;
use std::time::Duration;

use crate::Shadow;
use crate::name::NameId;
use crate::window;

/// The most quotas one limiter enforces per key (e.g. per second, per minute and per hour).
/// A [`Decision`] keeps the state of every quota inline, so returning one never allocates; three
/// keep it small enough (112 bytes) to be returned in registers and inline moves rather than
/// through `memcpy`, which measurably matters on the hot path.
pub const MAX_QUOTAS: usize = 3;

/// The state of one quota for one key, as of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaState {
    limit: u64,
    used: u64,
    window_ms: u64,
    window_end_ms: u64,
}

impl QuotaState {
    #[inline(always)]
    pub(crate) fn new(limit: u64, used: u64, window_ms: u64, window_end_ms: u64) -> Self {
        QuotaState {
            limit,
            used,
            window_ms,
            window_end_ms,
        }
    }

    /// The same state with `used` units counted.
    #[inline(always)]
    pub(crate) fn with_used(self, used: u64) -> Self {
        QuotaState { used, ..self }
    }

    /// The quota's limit per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Units counted in the current window, including this request if it was allowed (for a
    /// peek: as if it had been).
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Units still available in the current window, after this request.
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }

    /// The quota's window length.
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    /// When the current window ends, in unix milliseconds (exclusive).
    pub fn window_end_ms(&self) -> u64 {
        self.window_end_ms
    }

    /// When the current window ends, in unix seconds, rounded up.
    pub fn reset_epoch_secs(&self) -> u64 {
        window::reset_epoch_secs(self.window_end_ms)
    }
}

/// A limiter's answer to one request: allowed or denied, plus everything the rate-limit headers
/// need.
///
/// With several quotas, the top-level accessors report the *binding* quota: when denied, the
/// denying quota whose window ends last (waiting for it is the only way through); when allowed,
/// the quota with the fewest units remaining (ties: the one whose window ends last).
/// [`quotas`](Decision::quotas) exposes every quota's state.
///
/// # Example
///
/// ```
/// use ratewindow::{Decision, MemoryLimiter, ManualClock, Quota};
///
/// let clock = ManualClock::at_millis(1_700_000_030_000);
/// let limiter = MemoryLimiter::builder(Quota::per_minute(2)?).clock(clock).build()?;
/// limiter.check_sync("k")?;
/// limiter.check_sync("k")?;
/// let denied: Decision = limiter.check_sync("k")?;
/// assert!(!denied.is_allowed());
/// assert_eq!(denied.remaining(), 0);
/// assert_eq!(denied.reset_epoch_secs(), 1_700_000_040);
/// assert_eq!(denied.retry_after_secs(), Some(10));
///
/// let headers: Vec<(&str, String)> =
///     denied.headers().map(|(name, value)| (name, value.to_string())).collect();
/// assert_eq!(headers, [
///     ("x-ratelimit-limit", "2".to_string()),
///     ("x-ratelimit-remaining", "0".to_string()),
///     ("x-ratelimit-reset", "1700000040".to_string()),
///     ("retry-after", "10".to_string()),
/// ]);
/// # Ok::<(), ratewindow::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    states: [QuotaState; MAX_QUOTAS],
    now_ms: u64,
    len: u8,
    /// Bit `i` is set when quota `i` alone would have denied the request.
    violated: u8,
    binding: u8,
    decided_by: DecidedBy,
    /// The deciding limiter's name (in what was padding: the decision stays 112 bytes).
    name: NameId,
    /// Bit `i`: quota `i` is in shadow ([`Shadow`]): its denials are only reported.
    shadow: u8,
}

/// Who made a [`Decision`]: the limiter's backend itself, or, for a networked backend, one of
/// the ways it answers without it. Servers log or count the latter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum DecidedBy {
    /// The backend's own counters (in memory, or in Redis).
    #[default]
    Backend,
    /// A local cache of keys the backend had already found over a quota in the current window:
    /// exact, since a denied request consumes nothing and counts only grow within a window.
    OverLimitCache,
    /// The backend failed and the failure policy admitted the request.
    FailOpen,
    /// The backend failed and the failure policy denied the request.
    FailClosed,
    /// The backend failed and a local in-memory limiter decided instead.
    Fallback,
}

impl Decision {
    /// A decision at `now_ms` with no quota states yet: fill them with
    /// [`set_quota`](Self::set_quota), then [`finish`](Self::finish). Building in place keeps
    /// the hot path from copying the whole decision around.
    #[inline]
    pub(crate) fn blank(now_ms: u64) -> Decision {
        Decision {
            states: [QuotaState::default(); MAX_QUOTAS],
            now_ms,
            len: 0,
            violated: 0,
            binding: 0,
            decided_by: DecidedBy::Backend,
            name: NameId::NONE,
            shadow: 0,
        }
    }

    /// A decision on one quota: the single-quota hot path builds it in one go.
    #[inline(always)]
    pub(crate) fn single(now_ms: u64, state: QuotaState, allowed: bool) -> Decision {
        let mut states = [QuotaState::default(); MAX_QUOTAS];
        states[0] = state;
        Decision {
            states,
            now_ms,
            len: 1,
            violated: u8::from(!allowed),
            binding: 0,
            decided_by: DecidedBy::Backend,
            name: NameId::NONE,
            shadow: 0,
        }
    }

    /// Attributes the decision to `decided_by`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn attributed_to(mut self, decided_by: DecidedBy) -> Decision {
        self.decided_by = decided_by;
        self
    }

    /// The decision as the limiter named `name`, with `shadow`'s quotas in shadow, made it.
    #[inline(always)]
    pub(crate) fn marked(mut self, name: NameId, shadow: Shadow) -> Decision {
        self.name = name;
        self.shadow = shadow.bits();
        let enforced = self.violated & !self.shadow;
        if enforced != 0 && enforced != self.violated {
            self.binding = self.pick_binding_among(enforced) as u8;
        }
        self
    }

    /// The quotas (bit `i`: quota `i`) the decision charged, if it was a check: all when
    /// allowed, the enforced ones when denied by quotas in shadow alone, else none.
    pub(crate) fn charged_mask(&self) -> u8 {
        crate::fixed_window::charged(
            self.violated,
            Shadow::from_bits(self.shadow),
            self.quotas().len(),
        )
    }

    /// The id of the deciding limiter's name.
    #[cfg(feature = "tower")]
    #[inline]
    pub(crate) fn name_id(&self) -> NameId {
        self.name
    }

    #[inline]
    pub(crate) fn set_quota(&mut self, i: usize, state: QuotaState) {
        self.states[i] = state;
    }

    /// Records how many quotas there are and which denied (bit `i`: quota `i`), and picks the
    /// binding one.
    #[inline]
    pub(crate) fn finish(&mut self, len: usize, violated: u8) {
        debug_assert!((1..=MAX_QUOTAS).contains(&len));
        self.len = len as u8;
        self.violated = violated;
        self.binding = if len > 1 {
            self.pick_binding() as u8
        } else {
            0
        };
    }

    fn pick_binding(&self) -> usize {
        self.pick_binding_among(self.violated)
    }

    /// [`pick_binding`](Self::pick_binding) with only the violated quotas of `violated` in
    /// the running: when an enforced quota denies, a quota in shadow must not be the one the
    /// headers and the `Retry-After` describe.
    fn pick_binding_among(&self, violated: u8) -> usize {
        let states = self.quotas();
        if violated == 0 {
            // Fewest remaining, ties to the later reset.
            (0..states.len())
                .min_by_key(|&i| {
                    (
                        states[i].remaining(),
                        std::cmp::Reverse(states[i].window_end_ms),
                    )
                })
                .unwrap_or(0)
        } else {
            // The violated quota that blocks longest; ties to the first.
            (0..states.len())
                .filter(|&i| violated & (1 << i) != 0)
                .min_by_key(|&i| std::cmp::Reverse(states[i].window_end_ms))
                .unwrap_or(0)
        }
    }

    /// Whether the request was admitted (and, for `check`, charged).
    pub fn is_allowed(&self) -> bool {
        self.violated == 0
    }

    /// Whether the request was denied by quotas in shadow alone ([`Shadow`]): it would have
    /// been denied, and is to be served. It was charged to the limiter's enforced quotas (a
    /// shadow quota's denial only reports), and to no quota in shadow. Never for a failure
    /// policy's denial ([`DecidedBy::FailClosed`]).
    ///
    /// A caller serves a request when `is_allowed() || is_shadow_denied()`.
    pub fn is_shadow_denied(&self) -> bool {
        self.violated != 0
            && self.violated & !self.shadow == 0
            && self.decided_by != DecidedBy::FailClosed
    }

    /// Whether the request goes ahead: allowed, or denied by quotas in shadow alone.
    pub fn admits(&self) -> bool {
        self.is_allowed() || self.is_shadow_denied()
    }

    /// The binding quota's state.
    pub fn binding(&self) -> &QuotaState {
        &self.states[usize::from(self.binding)]
    }

    /// Every quota's state, in the order the limiter was configured with.
    pub fn quotas(&self) -> &[QuotaState] {
        &self.states[..usize::from(self.len)]
    }

    /// The position of the [`binding`](Self::binding) quota in [`quotas`](Self::quotas), e.g.
    /// to name its policy.
    pub fn binding_index(&self) -> usize {
        usize::from(self.binding)
    }

    /// Whether quota `index` (in [`quotas`](Self::quotas)) alone would have denied the request.
    /// `false` for an allowed request and for an index past the last quota.
    ///
    /// ```
    /// use ratewindow::{ManualClock, MemoryLimiter, Quota};
    ///
    /// let limiter = MemoryLimiter::builder(Quota::per_second(1)?)
    ///     .quota(Quota::per_minute(100)?)
    ///     .clock(ManualClock::at_millis(1_700_000_000_000))
    ///     .build()?;
    /// limiter.check_sync("k")?;
    /// let denied = limiter.check_sync("k")?;
    /// assert!(denied.denied_by(0) && !denied.denied_by(1));
    /// assert_eq!(denied.binding_index(), 0);
    /// # Ok::<(), ratewindow::Error>(())
    /// ```
    pub fn denied_by(&self, index: usize) -> bool {
        index < usize::from(self.len) && self.violated & (1 << index) != 0
    }

    /// The quotas that denied the request (none when it was allowed), in configuration order.
    pub fn violated(&self) -> impl Iterator<Item = &QuotaState> + '_ {
        self.quotas()
            .iter()
            .enumerate()
            .filter(|(i, _)| self.violated & (1 << i) != 0)
            .map(|(_, state)| state)
    }

    /// The binding quota's limit: `X-RateLimit-Limit`.
    pub fn limit(&self) -> u64 {
        self.binding().limit()
    }

    /// Units left in the binding quota's window: `X-RateLimit-Remaining`.
    pub fn remaining(&self) -> u64 {
        self.binding().remaining()
    }

    /// When the binding quota's window ends, in unix seconds rounded up: `X-RateLimit-Reset`.
    pub fn reset_epoch_secs(&self) -> u64 {
        self.binding().reset_epoch_secs()
    }

    /// When denied, the seconds until the binding window ends, rounded up and at least 1:
    /// `Retry-After`. `None` when allowed.
    pub fn retry_after_secs(&self) -> Option<u64> {
        (!self.is_allowed()).then(|| window::retry_after_secs(self.window_end_ms(), self.now_ms))
    }

    /// When the binding quota's window ends, in unix milliseconds (exclusive).
    pub fn window_end_ms(&self) -> u64 {
        self.binding().window_end_ms()
    }

    /// The exact time from the decision until the binding window ends.
    pub fn time_to_reset(&self) -> Duration {
        window::time_to_reset(self.window_end_ms(), self.now_ms)
    }

    /// Who made the decision: the backend, or (for a networked backend) a local cache or the
    /// failure policy.
    pub fn decided_by(&self) -> DecidedBy {
        self.decided_by
    }

    /// The name of the limiter that decided, e.g. a plan's (`pro`) or a route's (`search`),
    /// given by its builder's `name` or its `plan` method; `None` for a limiter without one.
    /// The [policy names](crate::http::policy_names) in the headers start with it.
    ///
    /// ```
    /// use ratewindow::{MemoryLimiter, quota};
    ///
    /// let free = MemoryLimiter::builder(quota!(100 per minute)).name("free").build()?;
    /// assert_eq!(free.check_sync("k")?.name(), Some("free"));
    /// let pro = free.plan("pro", [quota!(1000 per minute)])?;
    /// assert_eq!(pro.check_sync("k")?.name(), Some("pro"));
    /// # Ok::<(), ratewindow::Error>(())
    /// ```
    pub fn name(&self) -> Option<&'static str> {
        self.name.as_str()
    }

    /// The clock reading the decision was made at, in unix milliseconds.
    pub fn decided_at_ms(&self) -> u64 {
        self.now_ms
    }
}

impl fmt::Debug for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decision")
            .field("allowed", &self.is_allowed())
            .field("limit", &self.limit())
            .field("remaining", &self.remaining())
            .field("reset_epoch_secs", &self.reset_epoch_secs())
            .field("retry_after_secs", &self.retry_after_secs())
            .field("time_to_reset", &self.time_to_reset())
            .field("quotas", &self.quotas())
            .field("decided_by", &self.decided_by)
            .field("name", &self.name())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_stays_small_enough_to_move_without_memcpy() {
        assert_eq!(std::mem::size_of::<Decision>(), 112);
    }

    fn decision(now_ms: u64, states: &[(u64, u64, u64)], violated: u8) -> Decision {
        let mut decision = Decision::blank(now_ms);
        for (i, &(limit, used, end)) in states.iter().enumerate() {
            decision.set_quota(i, QuotaState::new(limit, used, 1000, end));
        }
        decision.finish(states.len(), violated);
        decision
    }

    #[test]
    fn binding_quota_when_allowed_has_fewest_remaining() {
        let d = decision(0, &[(10, 9, 1000), (100, 50, 60_000)], 0);
        assert!(d.is_allowed());
        assert_eq!((d.limit(), d.remaining()), (10, 1));
        let tie = decision(0, &[(10, 9, 1000), (100, 99, 60_000)], 0);
        assert_eq!(tie.limit(), 100, "ties go to the later reset");
        assert_eq!(tie.headers().len(), 3);
        assert_eq!(tie.retry_after_secs(), None);
        assert_eq!(tie.violated().count(), 0);
    }

    #[test]
    fn binding_quota_when_denied_blocks_longest() {
        let d = decision(
            500,
            &[(10, 10, 1000), (100, 60, 60_000), (50, 50, 3_600_000)],
            0b101,
        );
        assert!(!d.is_allowed());
        assert_eq!(d.limit(), 50);
        assert_eq!(d.retry_after_secs(), Some(3600));
        assert_eq!(d.time_to_reset(), Duration::from_millis(3_599_500));
        assert_eq!(d.quotas().len(), 3);
        let violated: Vec<u64> = d.violated().map(|q| q.limit()).collect();
        assert_eq!(violated, [10, 50]);
        let names: Vec<_> = d.headers().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-ratelimit-reset",
                "retry-after"
            ]
        );
    }
}
