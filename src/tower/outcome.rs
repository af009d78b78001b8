//! [`Outcome`]: what the limiter said about one request, and the one place that says whether
//! that admits the request.

use crate::{DecidedBy, Decision, Error, QuotaState};

/// What the limiter said about one request: what an
/// [`on_decision`](super::RateLimitLayer::on_decision) observer is given, and what a
/// [`Rejection`](super::Rejection) carries.
///
/// # Example
///
/// ```
/// use ratewindow::tower::Outcome;
/// use ratewindow::{DecidedBy, Error, MemoryLimiter, Quota};
///
/// let limiter = MemoryLimiter::new(Quota::per_minute(1)?)?;
/// let allowed = Outcome::Decided(limiter.check_sync("k")?);
/// let denied = Outcome::Decided(limiter.check_sync("k")?);
/// assert!(allowed.admits());
/// assert!(!denied.admits());
/// assert_eq!(denied.decision().map(|d| d.decided_by()), Some(DecidedBy::Backend));
/// assert!(!Outcome::Failed(Error::EmptyKey).admits());
/// # Ok::<(), ratewindow::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The limiter decided: allowed or denied, by its backend or, for a networked backend, by
    /// a local cache or its failure policy ([`Decision::decided_by`]).
    Decided(Decision),
    /// The limiter denied the request, by quotas in shadow alone
    /// ([`Decision::is_shadow_denied`], [`Shadow`](crate::Shadow)): it goes on to the inner
    /// service as if allowed. It was charged to the enforced quotas only.
    Shadowed(Decision),
    /// The limiter already tracks as many keys as it may and this key is new
    /// ([`Error::CapacityExhausted`]): nothing was charged. With the key's quotas as they stand
    /// (a peek, with nothing charged for this request) when the peek succeeded.
    OverCapacity(Option<Decision>),
    /// The limiter could not decide: an invalid key, a cost above a limit, or a backend
    /// failure that no failure policy decided.
    Failed(Error),
}

impl Outcome {
    /// Whether the request goes on to the inner service: an allowed decision, unless a
    /// fail-closed policy made it ([`DecidedBy::FailClosed`]), or a denial in shadow. The layer
    /// answers every other outcome itself.
    pub fn admits(&self) -> bool {
        match self {
            Outcome::Decided(decision) => admits(decision),
            Outcome::Shadowed(_) => true,
            Outcome::OverCapacity(_) | Outcome::Failed(_) => false,
        }
    }

    /// The decision the rate-limit headers are written from: the limiter's, or for
    /// [`OverCapacity`](Outcome::OverCapacity) the key's quotas as they stand. `None` when
    /// there is none.
    pub fn decision(&self) -> Option<&Decision> {
        match self {
            Outcome::Decided(decision) | Outcome::Shadowed(decision) => Some(decision),
            Outcome::OverCapacity(peek) => peek.as_ref(),
            Outcome::Failed(_) => None,
        }
    }

    /// The limiter's error, for [`Failed`](Outcome::Failed).
    pub fn error(&self) -> Option<&Error> {
        match self {
            Outcome::Failed(err) => Some(err),
            Outcome::Decided(_) | Outcome::Shadowed(_) | Outcome::OverCapacity(_) => None,
        }
    }

    /// The decision when it admits the request, or else the outcome back.
    pub(crate) fn into_admitted(self) -> Result<Decision, Outcome> {
        match self {
            Outcome::Decided(decision) if admits(&decision) => Ok(decision),
            Outcome::Shadowed(decision) => Ok(decision),
            outcome => Err(outcome),
        }
    }

    /// The outcome, with a denial by quotas in shadow alone let through.
    #[inline]
    pub(crate) fn shadowed(self) -> Outcome {
        match self {
            Outcome::Decided(decision) if decision.is_shadow_denied() => {
                Outcome::Shadowed(decision)
            }
            outcome => outcome,
        }
    }

    /// An over-capacity outcome from a peek at the key (`None` when the peek failed).
    pub(crate) fn over_capacity(peek: Option<Decision>) -> Outcome {
        Outcome::OverCapacity(peek.map(|peek| uncharged(&peek)))
    }
}

/// Whether a decision admits its request: what [`Outcome::admits`] says of a decision.
#[inline]
pub(crate) fn admits(decision: &Decision) -> bool {
    decision.is_allowed() && decision.decided_by() != DecidedBy::FailClosed
}

/// A peek's decision as the key stands, with nothing charged for this request: a peek that
/// admits reports every quota as if a request of cost 1 had been charged, so that unit is given
/// back. A denying peek already reports what is left.
fn uncharged(peek: &Decision) -> Decision {
    if !peek.is_allowed() {
        return *peek;
    }
    let mut decision = Decision::blank(peek.decided_at_ms());
    for (i, quota) in peek.quotas().iter().enumerate() {
        let window_ms = u64::try_from(quota.window().as_millis()).unwrap_or(u64::MAX);
        let state = QuotaState::new(
            quota.limit(),
            quota.used().saturating_sub(1),
            window_ms,
            quota.window_end_ms(),
        );
        decision.set_quota(i, state);
    }
    decision.finish(peek.quotas().len(), 0);
    decision
        .marked(peek.name_id(), Default::default())
        .attributed_to(peek.decided_by())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ManualClock, MemoryLimiter, Quota};

    #[test]
    fn an_admitting_peek_gives_back_the_unit_it_assumed() {
        let limiter = MemoryLimiter::builder(Quota::per_minute(3).unwrap())
            .quota(Quota::per_hour(10).unwrap())
            .clock(ManualClock::at_millis(1_800_000_037_000))
            .build()
            .unwrap();
        limiter.check_sync("k").unwrap();
        let peek = limiter.peek_sync("k").unwrap();
        assert_eq!((peek.remaining(), peek.binding().used()), (1, 2));
        let Outcome::OverCapacity(Some(stands)) = Outcome::over_capacity(Some(peek)) else {
            panic!("not over capacity");
        };
        assert!(stands.is_allowed());
        assert_eq!((stands.remaining(), stands.binding().used()), (2, 1));
        let remaining: Vec<u64> = stands.quotas().iter().map(QuotaState::remaining).collect();
        assert_eq!(remaining, [2, 9]);
        assert_eq!(stands.window_end_ms(), peek.window_end_ms());
        assert_eq!(stands.quotas()[1].window(), peek.quotas()[1].window());

        // A denying peek charged nothing: as it is.
        limiter.check_sync("k").unwrap();
        limiter.check_sync("k").unwrap();
        let denied = limiter.peek_sync("k").unwrap();
        assert!(!denied.is_allowed());
        assert_eq!(
            Outcome::over_capacity(Some(denied)).decision(),
            Some(&denied)
        );
    }

    #[test]
    fn only_an_allowed_decision_not_made_fail_closed_admits() {
        let limiter = MemoryLimiter::new(Quota::per_minute(1).unwrap()).unwrap();
        let allowed = limiter.check_sync("k").unwrap();
        let denied = limiter.check_sync("k").unwrap();
        assert!(Outcome::Decided(allowed).admits());
        assert_eq!(Outcome::Decided(allowed).into_admitted(), Ok(allowed));
        assert!(!Outcome::Decided(denied).admits());
        let closed = allowed.attributed_to(DecidedBy::FailClosed);
        assert!(!Outcome::Decided(closed).admits());
        assert!(Outcome::Decided(closed).into_admitted().is_err());
        assert!(!Outcome::over_capacity(Some(allowed)).admits());
        assert!(!Outcome::Failed(Error::EmptyKey).admits());
    }
}
