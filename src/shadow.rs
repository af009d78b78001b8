//! [`Shadow`]: which quotas only report their denials (a dry run), for rolling out a limit.

#[cfg(doc)]
use crate::Decision;
use crate::MAX_QUOTAS;

/// Quotas in shadow (dry-run) mode: a request that only they deny is served, while its
/// decision says it would have been denied ([`Decision::is_shadow_denied`]). This is how a new
/// limit is rolled out: watch what it would deny (a
/// [`DecisionCounters`](crate::tower::DecisionCounters) counts these apart) before enforcing
/// it. A limiter is given one by its builder's `shadow`, or `with_shadow` on a limiter that
/// shares its counters; the tower layer serves what such a limiter's decisions admit.
///
/// Counters stay exact. A request denied by shadow quotas alone is charged to the limiter's
/// enforced quotas, which it fits (so they keep counting every request served, and keep
/// denying), and to no quota in shadow, as any denial (so a shadow quota counts exactly what it
/// would admit if enforced). With every quota in shadow ([`Shadow::ALL`]) it is charged to
/// none. A cost above a shadow quota's limit is no error: the request is a shadow denial. On
/// Redis, quotas of one window length share one counter, so a shadow quota with the same window
/// as an enforced one counts every request served. Quotas are named by their position in the
/// limiter's quotas. A failure policy's denial
/// ([`DecidedBy::FailClosed`](crate::DecidedBy::FailClosed)) is no quota's, and stays one.
///
/// # Example
///
/// ```
/// use ratewindow::{ManualClock, MemoryLimiter, Shadow, quota};
///
/// // 100 per minute is enforced; the new 150 per hour is tried out in shadow first.
/// let clock = ManualClock::at_millis(1_800_000_000_000);
/// let limiter = MemoryLimiter::builder(quota!(100 per minute))
///     .quota(quota!(150 per hour))
///     .shadow(Shadow::quota(1))
///     .clock(clock.clone())
///     .build()?;
///
/// assert!(limiter.check_n_sync("k", 100)?.is_allowed()); // all of the minute
/// let over_minute = limiter.check_sync("k")?;
/// assert!(!over_minute.admits()); // the minute is enforced
///
/// clock.advance(std::time::Duration::from_secs(60));
/// assert!(limiter.check_n_sync("k", 50)?.is_allowed()); // all of the hour
/// let over_hour = limiter.check_sync("k")?;
/// assert!(!over_hour.is_allowed() && over_hour.is_shadow_denied()); // served
/// let counts: Vec<u64> = over_hour.quotas().iter().map(|q| q.used()).collect();
/// assert_eq!(counts, [51, 150]); // charged to the minute, not to the hour
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

    /// Whether the quota at `index` is in shadow.
    pub const fn contains(&self, index: usize) -> bool {
        index < MAX_QUOTAS && self.quotas & (1 << index) != 0
    }

    /// Bit `i`: quota `i` is in shadow.
    pub(crate) const fn bits(self) -> u8 {
        self.quotas
    }

    /// The quotas of bits `quotas`.
    pub(crate) const fn from_bits(quotas: u8) -> Shadow {
        Shadow { quotas }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ManualClock, MemoryLimiter, Quota};

    fn minute_and_shadow_hour(clock: &ManualClock) -> MemoryLimiter<ManualClock> {
        MemoryLimiter::builder(Quota::per_minute(2).unwrap())
            .quota(Quota::per_hour(3).unwrap())
            .shadow(Shadow::quota(1))
            .clock(clock.clone())
            .build()
            .unwrap()
    }

    #[test]
    fn an_enforced_denial_is_described_by_the_enforced_quota() {
        let clock = ManualClock::at_millis(1_800_000_000_000);
        let limiter = minute_and_shadow_hour(&clock);
        limiter.check_n_sync("k", 2).unwrap();
        clock.advance(std::time::Duration::from_secs(60));
        limiter.check_sync("k").unwrap();
        assert!(limiter.check_sync("k").unwrap().is_shadow_denied());
        // The minute (enforced) and the hour (shadow) both over: the minute is binding.
        let denied = limiter.check_sync("k").unwrap();
        assert!(denied.denied_by(0) && denied.denied_by(1) && !denied.admits());
        assert_eq!((denied.binding_index(), denied.limit()), (0, 2));
        assert_eq!(denied.retry_after_secs(), Some(60));
    }

    #[test]
    fn a_cost_above_a_shadow_limit_is_a_shadow_denial_not_an_error() {
        let clock = ManualClock::at_millis(1_800_000_000_000);
        let limiter = minute_and_shadow_hour(&clock)
            .with_quotas([Quota::per_minute(10).unwrap(), Quota::per_hour(3).unwrap()])
            .unwrap();
        let decision = limiter.check_n_sync("k", 5).unwrap();
        assert!(decision.is_shadow_denied());
        assert_eq!(decision.quotas()[0].used(), 5);
        assert_eq!(decision.quotas()[1].used(), 0);
        // Above the enforced limit: still an error.
        assert!(limiter.check_n_sync("k", 11).is_err());
        let all = limiter.with_shadow(Shadow::ALL);
        assert!(all.check_n_sync("k", 11).unwrap().is_shadow_denied());
    }

    #[test]
    fn masks_compose_and_stay_within_the_quotas() {
        let both = Shadow::quota(0).and(Shadow::quota(2));
        assert!(both.contains(0) && !both.contains(1) && both.contains(2));
        assert!(Shadow::quota(MAX_QUOTAS).is_none());
        assert!(!Shadow::ALL.contains(MAX_QUOTAS));
        assert_eq!(Shadow::default(), Shadow::NONE);
    }
}
