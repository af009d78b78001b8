//! The layer's hooks: [`OnRejection`] builds the answers the layer gives itself, [`OnDecision`]
//! observes every outcome.

use ::http::request::Parts;
use ::http::{Response, StatusCode};

use super::outcome::Outcome;
use crate::{DecidedBy, Decision, Error};

/// Why the layer answers a request itself, and with which status by default.
///
/// Each kind has a status and a stable `code` (the problem document's `code` member of the
/// default answers, [`ProblemDetails`](super::ProblemDetails)).
///
/// # Example
///
/// ```
/// use http::StatusCode;
/// use ratewindow::tower::RejectionKind;
///
/// assert_eq!(RejectionKind::RateLimited.status(), StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(RejectionKind::RateLimited.code(), "rate_limited");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// Over a quota: `429`, `rate_limited`.
    RateLimited,
    /// The backend failed and its failure policy refuses the request
    /// ([`DecidedBy::FailClosed`]), or the backend failed and no policy decided
    /// ([`Error::Backend`]): `503`, `rate_limiter_unavailable`.
    Unavailable,
    /// The limiter tracks as many keys as it may and this key is new
    /// ([`Error::CapacityExhausted`]): `503`, `over_capacity`.
    OverCapacity,
    /// The request has no key (and no fallback key): `401`, `missing_key`.
    MissingKey,
    /// The key is empty or too long ([`Error::EmptyKey`], [`Error::KeyTooLong`]): `400`,
    /// `invalid_key`.
    InvalidKey,
    /// The cost is above a quota's limit, so the request can never be admitted
    /// ([`Error::CostExceedsLimit`]): `413`, `cost_exceeds_limit`.
    CostExceedsLimit,
    /// Any other limiter error: `500`, `internal_error`.
    Internal,
}

impl RejectionKind {
    /// The kind of an outcome that does not admit its request; `None` when it does.
    pub(crate) fn of(outcome: &Outcome) -> Option<RejectionKind> {
        if outcome.admits() {
            return None;
        }
        Some(match outcome {
            Outcome::Decided(decision) if decision.decided_by() == DecidedBy::FailClosed => {
                RejectionKind::Unavailable
            }
            Outcome::Decided(_) | Outcome::Shadowed(_) => RejectionKind::RateLimited,
            Outcome::OverCapacity(_) => RejectionKind::OverCapacity,
            Outcome::Failed(err) => match err {
                Error::EmptyKey | Error::KeyTooLong { .. } => RejectionKind::InvalidKey,
                Error::CostExceedsLimit { .. } => RejectionKind::CostExceedsLimit,
                Error::Backend { .. } => RejectionKind::Unavailable,
                Error::CapacityExhausted { .. } => RejectionKind::OverCapacity,
                _ => RejectionKind::Internal,
            },
        })
    }

    /// The status the layer answers with by default.
    pub fn status(self) -> StatusCode {
        match self {
            RejectionKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            RejectionKind::Unavailable | RejectionKind::OverCapacity => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RejectionKind::MissingKey => StatusCode::UNAUTHORIZED,
            RejectionKind::InvalidKey => StatusCode::BAD_REQUEST,
            RejectionKind::CostExceedsLimit => StatusCode::PAYLOAD_TOO_LARGE,
            RejectionKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable name for programs: `rate_limited`, `rate_limiter_unavailable`,
    /// `over_capacity`, `missing_key`, `invalid_key`, `cost_exceeds_limit` or
    /// `internal_error`.
    pub fn code(self) -> &'static str {
        match self {
            RejectionKind::RateLimited => "rate_limited",
            RejectionKind::Unavailable => "rate_limiter_unavailable",
            RejectionKind::OverCapacity => "over_capacity",
            RejectionKind::MissingKey => "missing_key",
            RejectionKind::InvalidKey => "invalid_key",
            RejectionKind::CostExceedsLimit => "cost_exceeds_limit",
            RejectionKind::Internal => "internal_error",
        }
    }
}

/// A request the layer answers itself, as an [`OnRejection`] hook sees it: why, the limiter's
/// decision or error, and the request's head.
#[derive(Debug)]
pub struct Rejection<'a> {
    kind: RejectionKind,
    outcome: Option<&'a Outcome>,
    request: &'a Parts,
}

impl<'a> Rejection<'a> {
    /// A rejection of `request` for `kind`; `outcome` is `None` when the limiter was not asked
    /// (no key).
    pub(crate) fn new(
        kind: RejectionKind,
        outcome: Option<&'a Outcome>,
        request: &'a Parts,
    ) -> Rejection<'a> {
        Rejection {
            kind,
            outcome,
            request,
        }
    }

    /// Why the layer answers.
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The limiter's decision: the denial of a `429` or of a fail-closed `503`; for
    /// [`RejectionKind::OverCapacity`], the key's quotas as they stand (nothing charged) when
    /// the limiter could tell. The layer writes its rate-limit headers.
    pub fn decision(&self) -> Option<&'a Decision> {
        self.outcome.and_then(Outcome::decision)
    }

    /// The limiter's error, when it could not decide: e.g. [`Error::Backend`] with its
    /// [`kind`](crate::BackendErrorKind), or [`Error::KeyTooLong`]. Its `detail` is for logs,
    /// not for clients, and no error's text contains the key.
    pub fn error(&self) -> Option<&'a Error> {
        self.outcome.and_then(Outcome::error)
    }

    /// The limiter's outcome; `None` for [`RejectionKind::MissingKey`], when it was not asked.
    pub fn outcome(&self) -> Option<&'a Outcome> {
        self.outcome
    }

    /// The request's head: method, URI, headers, extensions.
    pub fn request(&self) -> &'a Parts {
        self.request
    }
}

/// Builds the response to a request the layer answers itself: see
/// [`RateLimitLayer::on_rejection`](super::RateLimitLayer::on_rejection), which takes any
/// closure `Fn(&Rejection<'_>) -> Response<B>`. [`ProblemDetails`](super::ProblemDetails), the
/// default, answers `application/problem+json` documents.
pub trait OnRejection<B> {
    /// The response to `rejection`, before the layer adds its rate-limit headers.
    fn respond(&self, rejection: &Rejection<'_>) -> Response<B>;
}

impl<B, F> OnRejection<B> for F
where
    F: Fn(&Rejection<'_>) -> Response<B>,
{
    fn respond(&self, rejection: &Rejection<'_>) -> Response<B> {
        self(rejection)
    }
}

/// Observes the limiter's [`Outcome`] for each request: see
/// [`RateLimitLayer::on_decision`](super::RateLimitLayer::on_decision), which takes any
/// closure `Fn(&Outcome)` or a [`DecisionCounters`](super::DecisionCounters). `()`, the
/// default, observes nothing and costs nothing.
pub trait OnDecision {
    /// Called once for each request the limiter was asked about, before the request goes on
    /// or is answered.
    fn observe(&self, outcome: &Outcome);
}

impl OnDecision for () {
    #[inline(always)]
    fn observe(&self, _outcome: &Outcome) {}
}

impl<F> OnDecision for F
where
    F: Fn(&Outcome),
{
    fn observe(&self, outcome: &Outcome) {
        self(outcome);
    }
}
