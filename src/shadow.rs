//! [`Shadow`]: which quotas only report their denials (a dry run), for rolling out a limit.

use crate::{DecidedBy, Decision, MAX_QUOTAS};

/// Quotas in shadow (dry-run) mode: a request that only they deny is let through, while the
/// decision still says it would have been denied. This is how a new limit is rolled out:
/// watch what it would deny (a [`DecisionCounters`](crate::tower::DecisionCounters) counts
/// these apart) before enforcing it.
///
/// Counters stay exact: the limiter decides as always, so a shadow-denied request is a denial
/// to it and counts against no quota, as an enforced denial. Only what is done with the
/// decision changes, which makes shadow mode the same on every backend: the tower layer takes
/// one ([`RateLimitLayer::shadow`](crate::tower::RateLimitLayer::shadow)), and any other caller
/// asks [`admits`](Shadow::admits) instead of [`Decision::is_allowed`].
///
/// Quotas are named by their position in the limiter's quotas (for [`Plans`](crate::tower::Plans),
/// in each plan's). A denial by a failure policy ([`DecidedBy::FailClosed`]) is not a quota's,
/// and stays enforced.
///
/// # Example
///
/// ```
/// use ratewindow::{ManualClock, MemoryLimiter, Shadow, quota};
///
/// // 100 per minute is enforced; the new 1 000 per hour is tried out in shadow first.
/// let limiter = MemoryLimiter::builder(quota!(100 per minute))
///     .quota(quota!(1_000 per hour))
///     .clock(ManualClock::at_millis(1_800_000_000_000))
///     .build()?;
/// let shadow = Shadow::quota(1);
///
/// let decision = limiter.check_n_sync("k", 100)?; // all of the minute
/// assert!(decision.is_allowed() && shadow.admits(&decision));
/// let over_minute = limiter.check_sync("k")?;
/// assert!(!shadow.admits(&over_minute)); // the minute is enforced
///
/// let hourly = limiter.plan("heavy", [quota!(10_000 per minute), quota!(50 per hour)])?;
/// let over_hour = hourly.check_sync("k")?;
/// assert!(!over_hour.is_allowed()); // would be denied by the hour...
/// assert!(shadow.admits(&over_hour) && shadow.denies_in_shadow(&over_hour)); // ...but is let through
/// assert_eq!(hourly.peek_sync("k")?.quotas()[1].used(), 100); // and counted nowhere
/// # Ok::<(), ratewindow::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Shadow {
    /// Bit `i`: quota `i` is in shadow.
    quotas: u8,
}

impl Shadow {
    /// Every quota enforced (the default).
    pub const NONE: Shadow = Shadow { quotas: 0 };

    /// Every quota in shadow: the whole limiter is a dry run.
    pub const ALL: Shadow = Shadow {
        quotas: (1 << MAX_QUOTAS) - 1,
    };

    /// The quota at `index` (in the limiter's quotas, from 0) in shadow; an index past the
    /// last quota a limiter may have puts none in shadow.
    pub const fn quota(index: usize) -> Shadow {
        if index < MAX_QUOTAS {
            Shadow { quotas: 1 << index }
        } else {
            Shadow::NONE
        }
    }

    /// The quotas in shadow here or in `other`.
    pub const fn and(self, other: Shadow) -> Shadow {
        Shadow {
            quotas: self.quotas | other.quotas,
        }
    }

    /// Whether no quota is in shadow.
    pub const fn is_none(&self) -> bool {
        self.quotas == 0
    }

    /// Whether `decision` is a denial by quotas in shadow alone: the request would have been
    /// denied, and is let through. Never for a failure policy's denial.
    pub fn denies_in_shadow(&self, decision: &Decision) -> bool {
        if decision.is_allowed() || self.quotas == 0 {
            return false;
        }
        if decision.decided_by() == DecidedBy::FailClosed {
            return false;
        }
        (0..decision.quotas().len())
            .all(|index| !decision.denied_by(index) || self.quotas & (1 << index) != 0)
    }

    /// Whether the request of `decision` goes ahead: allowed, or denied in shadow alone.
    pub fn admits(&self, decision: &Decision) -> bool {
        decision.is_allowed() || self.denies_in_shadow(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ManualClock, MemoryLimiter, Quota};

    #[test]
    fn only_denials_by_shadow_quotas_alone_are_let_through() {
        let limiter = MemoryLimiter::builder(Quota::per_second(1).unwrap())
            .quota(Quota::per_minute(1).unwrap())
            .clock(ManualClock::at_millis(1_800_000_000_000))
            .build()
            .unwrap();
        limiter.check_sync("k").unwrap();
        let both = limiter.check_sync("k").unwrap();
        assert!(both.denied_by(0) && both.denied_by(1));
        assert!(!Shadow::quota(0).admits(&both));
        assert!(!Shadow::quota(1).admits(&both));
        assert!(Shadow::quota(0).and(Shadow::quota(1)).admits(&both));
        assert!(Shadow::ALL.denies_in_shadow(&both));
        assert!(!Shadow::NONE.admits(&both));
        assert!(Shadow::quota(MAX_QUOTAS).is_none());

        let closed = both.attributed_to(DecidedBy::FailClosed);
        assert!(!Shadow::ALL.admits(&closed));
        let allowed = limiter.peek_sync("other").unwrap();
        assert!(Shadow::NONE.admits(&allowed) && !Shadow::ALL.denies_in_shadow(&allowed));
    }
}
