//! [`RateLimit`]: the service the layer builds.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::http::{Request, Response};
use tower_service::Service;

use super::cost::Cost;
use super::future::{Charged, Checked, ResponseFuture};
use super::headers::{PartitionKeyMode, ResponseHeaders, put_first};
use super::hooks::{OnDecision, OnRejection, Rejection, RejectionKind};
use super::key::KeyExtractor;
use super::outcome::{Outcome, admits};
use super::plans::{Choice, ChooseLimiter};
use super::problem::ProblemDetails;
use super::settle::{Policies, ResponseHead, Settle};
use super::skip::{Gate, Skip};
use crate::http::HeaderStyle;
use crate::{BoxFuture, Decision, Error, RateLimiter};

/// Marks a response as a rate-limit layer's own answer, whose rate-limit headers (those of
/// the denial) an outer layer must not replace with its own (an admission's).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerAnswer;

/// What every clone of one [`RateLimit`] shares.
pub(crate) struct Shared<L, K, C, R, O, P> {
    pub(crate) limiter: L,
    pub(crate) key: K,
    pub(crate) cost: C,
    pub(crate) style: HeaderStyle,
    pub(crate) partition_keys: PartitionKeyMode,
    pub(crate) on_rejection: R,
    pub(crate) on_decision: O,
    pub(crate) policies: Policies,
    pub(crate) gate: Gate<P>,
}

/// Decides the request with `limiter`; a full limiter is peeked at for when to retry.
async fn check<L: RateLimiter>(limiter: &L, key: &str, cost: u64) -> Outcome {
    match limiter.check_n(key, cost).await {
        Ok(decision) => Outcome::Decided(decision),
        Err(Error::CapacityExhausted { .. }) => over_capacity(limiter, key).await,
        Err(err) => Outcome::Failed(err),
    }
}

/// A full limiter's outcome for `key`, with its quotas as they stand if the limiter can tell.
async fn over_capacity<L: RateLimiter>(limiter: &L, key: &str) -> Outcome {
    Outcome::over_capacity(limiter.peek(key).await.ok())
}

impl<L, K, C, R, O, P> Shared<L, K, C, R, O, P> {
    /// The layer's own answer to `request`: the hook's response, with the rate-limit headers
    /// of `outcome` put first.
    fn answer<B, ResBody>(
        &self,
        kind: RejectionKind,
        outcome: Option<&Outcome>,
        request: Request<B>,
        headers: Option<&ResponseHeaders>,
    ) -> Response<ResBody>
    where
        R: OnRejection<ResBody>,
    {
        // The body is never read: the inner service does not run.
        let (parts, _body) = request.into_parts();
        let mut response = self
            .on_rejection
            .respond(&Rejection::new(kind, outcome, &parts));
        if let (Some(outcome), Some(headers)) = (outcome, headers) {
            put_first(headers.for_rejection(outcome), response.headers_mut());
        }
        // An outer rate-limit layer leaves this answer's headers as they are.
        response.extensions_mut().insert(LayerAnswer);
        response
    }

    /// Shows `outcome` (a denial by shadow quotas alone let through) to the observer; the
    /// decision if it admits the request.
    #[inline]
    fn decide(&self, outcome: Outcome) -> Result<Decision, Outcome>
    where
        O: OnDecision,
    {
        let outcome = outcome.shadowed();
        self.on_decision.observe(&outcome);
        outcome.into_admitted()
    }

    /// What the response to a request admitted by `decision` (of limiter `index`, for `key`
    /// and `cost`) gets: the decision's headers unless they are left out, and the settling by
    /// the response when the layer charges by response.
    #[inline(always)]
    fn charged<B, ResBody>(
        self: &Arc<Self>,
        index: usize,
        key: &str,
        cost: u64,
        decision: Decision,
        headers: ResponseHeaders,
    ) -> Charged<Response<ResBody>>
    where
        L: ChooseLimiter<B>,
        K: Send + Sync + 'static,
        C: Send + Sync + 'static,
        R: Send + Sync + 'static,
        O: Send + Sync + 'static,
        P: Send + Sync + 'static,
        ResBody: 'static,
    {
        let settle = match self.policies.settles(&decision) {
            false => None,
            true => Some(self.settle_by_response(index, key.to_owned(), cost, decision)),
        };
        let headers = self
            .policies
            .writes_headers(&decision)
            .then_some((decision, headers));
        Charged { headers, settle }
    }

    /// Releases the request of `decision` if its response says it does not count.
    #[cold]
    #[inline(never)]
    fn settle_by_response<B, ResBody>(
        self: &Arc<Self>,
        index: usize,
        key: String,
        cost: u64,
        decision: Decision,
    ) -> Settle<Response<ResBody>>
    where
        L: ChooseLimiter<B>,
        K: Send + Sync + 'static,
        C: Send + Sync + 'static,
        R: Send + Sync + 'static,
        O: Send + Sync + 'static,
        P: Send + Sync + 'static,
        ResBody: 'static,
    {
        let shared = Arc::clone(self);
        Box::new(move |response: &Response<ResBody>| {
            let counts = shared
                .policies
                .charge_if
                .as_ref()
                .is_none_or(|counts| counts(&ResponseHead::of(response)));
            if counts {
                return None;
            }
            let release: BoxFuture<'static, ()> = Box::pin(async move {
                // A release that fails leaves the request counted: never more than a limit.
                let limiter = shared.limiter.limiter(index);
                let _ = limiter.release(&key, cost, &decision).await;
            });
            Some(release)
        })
    }

    /// The layer's own answer to an outcome that does not admit `request`.
    fn reject<B, ResBody>(
        &self,
        outcome: &Outcome,
        request: Request<B>,
        headers: &ResponseHeaders,
    ) -> Response<ResBody>
    where
        R: OnRejection<ResBody>,
    {
        let kind = RejectionKind::of(outcome).unwrap_or(RejectionKind::Internal);
        #[cfg(feature = "tracing")]
        trace_rejection(kind, outcome);
        self.answer(kind, Some(outcome), request, Some(headers))
    }

    /// What `outcome` (of limiter `index`, for `key` and `cost`) comes to after a wait: the
    /// request back for the inner service, or the layer's own answer.
    fn after_wait<B, ResBody>(
        self: &Arc<Self>,
        outcome: Outcome,
        (index, key, cost): (usize, &str, u64),
        mut request: Request<B>,
        headers: ResponseHeaders,
    ) -> Checked<B, Response<ResBody>>
    where
        L: ChooseLimiter<B>,
        K: Send + Sync + 'static,
        C: Send + Sync + 'static,
        R: OnRejection<ResBody> + Send + Sync + 'static,
        O: OnDecision + Send + Sync + 'static,
        P: Send + Sync + 'static,
        ResBody: 'static,
    {
        match self.decide(outcome) {
            Ok(decision) => {
                self.gate.hand_over(&decision, &mut request);
                Checked::Admitted(request, self.charged(index, key, cost, decision, headers))
            }
            Err(outcome) => Checked::Answered(self.reject(&outcome, request, &headers)),
        }
    }
}

/// Rate limits the requests to `S`; built by [`RateLimitLayer`](super::RateLimitLayer).
///
/// Each call takes the key and cost from the request and returns a [`ResponseFuture`] that asks
/// the limiter and then calls the inner service (allowed) or answers itself (anything else).
/// A limiter that decides without waiting ([`RateLimiter::check_now`], e.g. the in-memory one)
/// is asked in `call` itself, which then calls the inner service at once when allowed.
/// Otherwise, as usual for tower middleware that calls the inner service from its future, the
/// service that `poll_ready` readied goes into the future and a clone of it stays behind, so
/// `S` must be `Clone` (an axum `Router` is, cheaply); the request goes into the limiter's
/// boxed future with it, so its body must be `Send`.
pub struct RateLimit<S, L, K, C, R = ProblemDetails, O = (), P = ()> {
    inner: S,
    shared: Arc<Shared<L, K, C, R, O, P>>,
}

impl<S, L, K, C, R, O, P> RateLimit<S, L, K, C, R, O, P> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<L, K, C, R, O, P>>) -> Self {
        RateLimit { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, without the rate limit.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The limiter.
    pub fn limiter(&self) -> &L {
        &self.shared.limiter
    }
}

impl<S: Clone, L, K, C, R, O, P> Clone for RateLimit<S, L, K, C, R, O, P> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, L, K, C, R, O, P> fmt::Debug for RateLimit<S, L, K, C, R, O, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("style", &self.shared.style)
            .finish_non_exhaustive()
    }
}

impl<S, L, K, C, R, O, P, ReqBody, ResBody> Service<Request<ReqBody>>
    for RateLimit<S, L, K, C, R, O, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    L: ChooseLimiter<ReqBody>,
    K: KeyExtractor<ReqBody> + Send + Sync + 'static,
    C: Cost<ReqBody> + Send + Sync + 'static,
    R: OnRejection<ResBody> + Send + Sync + 'static,
    O: OnDecision + Send + Sync + 'static,
    P: Skip<ReqBody> + Send + Sync + 'static,
    ReqBody: Send + 'static,
    ResBody: 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // Skipped routes and allowed networks: before the cost, the key and the limiter.
        if self.shared.gate.passes(&request) {
            return ResponseFuture::uncharged(self.inner.call(request));
        }
        let style = self.shared.style;
        let cost = self.shared.cost.cost(&request);
        if cost == 0 {
            return ResponseFuture::uncharged(self.inner.call(request));
        }
        let shared = &self.shared;
        let Some(key) = shared.key.extract_borrowed(&request) else {
            let kind = RejectionKind::MissingKey;
            return ResponseFuture::answered(shared.answer(kind, None, request, None));
        };
        if shared.gate.passes_key(&key) {
            return ResponseFuture::uncharged(self.inner.call(request));
        }
        let headers = ResponseHeaders::for_key(style, shared.partition_keys, &key);
        let index = match shared.limiter.choose(&request, &key) {
            Choice::Now(index) => index,
            Choice::Later(choice) => {
                let key = key.into_owned();
                return self.checking(Some(choice), 0, key, cost, request, headers);
            }
        };
        let limiter = shared.limiter.limiter(index);
        // A limiter that decides without waiting is asked now: no owned key, no boxed future.
        let outcome = match limiter.check_now(&key, cost) {
            None => {
                let key = key.into_owned();
                return self.checking(None, index, key, cost, request, headers);
            }
            Some(Err(Error::CapacityExhausted { .. })) => {
                // A full limiter is peeked at for when to retry, as on the waiting path.
                let key = key.into_owned();
                let shared = Arc::clone(shared);
                let check = Box::pin(async move {
                    let outcome = over_capacity(shared.limiter.limiter(index), &key).await;
                    shared.after_wait(outcome, (index, &key, cost), request, headers)
                });
                return ResponseFuture::rejecting(check);
            }
            Some(Ok(decision)) if admits(&decision) => {
                // A copy for the observer: without one (`()`), it is never made.
                shared.on_decision.observe(&Outcome::Decided(decision));
                let charged = shared.charged(index, &key, cost, decision, headers);
                shared.gate.hand_over(&decision, &mut request);
                return ResponseFuture::calling(self.inner.call(request), charged);
            }
            Some(Ok(decision)) => Outcome::Decided(decision),
            Some(Err(err)) => Outcome::Failed(err),
        };
        match shared.decide(outcome) {
            Ok(decision) => {
                let charged = shared.charged(index, &key, cost, decision, headers);
                shared.gate.hand_over(&decision, &mut request);
                ResponseFuture::calling(self.inner.call(request), charged)
            }
            Err(outcome) => ResponseFuture::answered(shared.reject(&outcome, request, &headers)),
        }
    }
}

impl<S, L, K, C, R, O, P> RateLimit<S, L, K, C, R, O, P> {
    /// The waiting path: the choice of limiter if it must be waited for (else limiter
    /// `index`), then the decision, in a boxed future; then the inner service.
    fn checking<ReqBody, ResBody>(
        &mut self,
        choice: Option<BoxFuture<'static, usize>>,
        index: usize,
        key: String,
        cost: u64,
        request: Request<ReqBody>,
        headers: ResponseHeaders,
    ) -> ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
        K: Send + Sync + 'static,
        C: Send + Sync + 'static,
        R: OnRejection<ResBody> + Send + Sync + 'static,
        O: OnDecision + Send + Sync + 'static,
        P: Send + Sync + 'static,
        L: ChooseLimiter<ReqBody>,
        ReqBody: Send + 'static,
        ResBody: 'static,
    {
        // The readied service goes with the request; its clone waits for the next poll_ready.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        // The limiter's future borrows the key and the limiter, so it is boxed with them.
        let check = Box::pin(async move {
            let index = match choice {
                Some(choice) => choice.await,
                None => index,
            };
            let outcome = check(shared.limiter.limiter(index), &key, cost).await;
            shared.after_wait(outcome, (index, &key, cost), request, headers)
        });
        ResponseFuture::checking(check, inner)
    }
}

/// A debug event for a request the layer answers itself: what answered it and why, never the
/// key (an error's text never holds one either).
#[cfg(feature = "tracing")]
fn trace_rejection(kind: RejectionKind, outcome: &Outcome) {
    match outcome {
        Outcome::Decided(decision) | Outcome::Shadowed(decision) => tracing::debug!(
            target: "ratewindow",
            status = kind.status().as_u16(),
            decided_by = ?decision.decided_by(),
            limit = decision.limit(),
            retry_after_secs = decision.retry_after_secs(),
            "request rate limited"
        ),
        Outcome::OverCapacity(_) => tracing::debug!(
            target: "ratewindow",
            status = kind.status().as_u16(),
            "request refused: the limiter tracks as many keys as it may"
        ),
        Outcome::Failed(error) => tracing::debug!(
            target: "ratewindow",
            status = kind.status().as_u16(),
            %error,
            "request refused: the limiter could not decide"
        ),
    }
}
