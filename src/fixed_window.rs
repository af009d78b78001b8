//! The fixed-window algorithm, written once: a request of `cost` units is admitted when every
//! quota's current window has room for it, and then counts against all of them; a denied
//! request counts against none.
//!
//! Every backend decides here: the in-memory store inside its compare-and-swap, the Redis
//! backend when it reads a script's reply, answers from its over-limit cache, or answers
//! without Redis under a failure policy. The Redis script is the one other copy (in Lua, next
//! to the counters); the conformance table holds both to the same answers.

use crate::Shadow;
use crate::decision::{Decision, QuotaState};

/// Whether `cost` more units fit under `limit` when `used` are already counted.
#[inline(always)]
pub(crate) const fn fits(used: u64, cost: u64, limit: u64) -> bool {
    used.saturating_add(cost) <= limit
}

/// The decision on a request of `cost` units at `now_ms`, given each quota's state as the
/// request found it (`used`: the count already in its current window). Admitted, each quota
/// reports its count with `cost` in it; denied, the counts it found, and which quotas deny.
#[cfg(any(feature = "redis", test))]
#[inline]
pub(crate) fn decide(now_ms: u64, found: &[QuotaState], cost: u64) -> Decision {
    decide_with_shadow(now_ms, found, cost, Shadow::NONE)
}

/// [`decide`] with the quotas of `shadow` in shadow: a request only they deny is denied (the
/// decision says so), and counts against the enforced quotas, which it fits, and against none
/// in shadow. With no quota enforced it counts against none.
#[inline]
pub(crate) fn decide_with_shadow(
    now_ms: u64,
    found: &[QuotaState],
    cost: u64,
    shadow: Shadow,
) -> Decision {
    let mut violated = 0u8;
    for (i, state) in found.iter().enumerate() {
        if !fits(state.used(), cost, state.limit()) {
            violated |= 1 << i;
        }
    }
    let taken = charged(violated, shadow, found.len());
    let mut decision = Decision::blank(now_ms);
    for (i, state) in found.iter().enumerate() {
        let cost = if taken & (1 << i) != 0 { cost } else { 0 };
        decision.set_quota(i, state.with_used(state.used() + cost));
    }
    decision.finish(found.len(), violated);
    decision
}

/// The quotas (bit `i`: quota `i`) a request that found those of `violated` over counts
/// against, with `shadow`'s in shadow, out of `len`: all when none is over; the enforced ones
/// when only quotas in shadow are; else none.
#[inline]
pub(crate) fn charged(violated: u8, shadow: Shadow, len: usize) -> u8 {
    let all = ((1u16 << len) - 1) as u8;
    if violated == 0 {
        all
    } else if violated & !shadow.bits() == 0 {
        all & !shadow.bits()
    } else {
        0
    }
}

/// [`decide`] for one quota: the in-memory hot path, which builds the decision in one go.
#[inline(always)]
pub(crate) fn decide_one(now_ms: u64, found: QuotaState, cost: u64) -> Decision {
    if fits(found.used(), cost, found.limit()) {
        Decision::single(now_ms, found.with_used(found.used() + cost), true)
    } else {
        Decision::single(now_ms, found, false)
    }
}

/// The decision on a request the quotas in `states` admitted and already count (a Redis
/// script's reply to a charge).
#[cfg(feature = "redis")]
pub(crate) fn admitted(now_ms: u64, states: &[QuotaState]) -> Decision {
    let mut decision = Decision::blank(now_ms);
    for (i, &state) in states.iter().enumerate() {
        decision.set_quota(i, state);
    }
    decision.finish(states.len(), 0);
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(limit: u64, used: u64, window_end_ms: u64) -> QuotaState {
        QuotaState::new(limit, used, 1_000, window_end_ms)
    }

    #[test]
    fn admits_only_when_every_quota_has_room_and_then_charges_them_all() {
        let found = [state(5, 3, 2_000), state(10, 9, 60_000)];
        let admitted = decide(1_500, &found, 1);
        assert!(admitted.is_allowed());
        assert_eq!(
            admitted
                .quotas()
                .iter()
                .map(QuotaState::used)
                .collect::<Vec<_>>(),
            [4, 10]
        );

        let denied = decide(1_500, &found, 2);
        assert!(!denied.is_allowed());
        assert!(!denied.denied_by(0) && denied.denied_by(1));
        // A denial counts against no quota, not even those with room.
        assert_eq!(
            denied
                .quotas()
                .iter()
                .map(QuotaState::used)
                .collect::<Vec<_>>(),
            [3, 9]
        );
    }

    #[test]
    fn a_denial_by_shadow_quotas_alone_counts_against_the_enforced_ones_only() {
        let found = [state(5, 3, 2_000), state(10, 10, 60_000)];
        let in_shadow = decide_with_shadow(1_500, &found, 1, Shadow::quota(1));
        assert!(!in_shadow.is_allowed() && in_shadow.denied_by(1) && !in_shadow.denied_by(0));
        let used: Vec<u64> = in_shadow.quotas().iter().map(QuotaState::used).collect();
        assert_eq!(used, [4, 10]);
        // An enforced quota over: nothing counted.
        let enforced = decide_with_shadow(1_500, &found, 3, Shadow::quota(1));
        let used: Vec<u64> = enforced.quotas().iter().map(QuotaState::used).collect();
        assert_eq!(used, [3, 10]);
        // Everything in shadow: nothing counted.
        let all = decide_with_shadow(1_500, &found, 1, Shadow::ALL);
        let used: Vec<u64> = all.quotas().iter().map(QuotaState::used).collect();
        assert_eq!(used, [3, 10]);
        assert_eq!(charged(0, Shadow::ALL, 2), 0b11);
    }

    #[test]
    fn one_quota_decides_as_many() {
        for (used, cost) in [(0, 1), (4, 1), (5, 1), (3, 2), (3, 3), (u64::MAX, 1)] {
            let found = state(5, used, 2_000);
            assert_eq!(
                decide_one(1_000, found, cost),
                decide(1_000, &[found], cost)
            );
        }
    }
}
