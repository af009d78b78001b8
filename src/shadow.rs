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
/// none. Quotas are named by their position in the limiter's quotas. A failure policy's denial
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_compose_and_stay_within_the_quotas() {
        let both = Shadow::quota(0).and(Shadow::quota(2));
        assert!(both.contains(0) && !both.contains(1) && both.contains(2));
        assert!(Shadow::quota(MAX_QUOTAS).is_none());
        assert!(!Shadow::ALL.contains(MAX_QUOTAS));
        assert_eq!(Shadow::default(), Shadow::NONE);
    }
}
