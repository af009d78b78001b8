//! [`RateLimit`]: the service the layer builds.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::http::{Request, Response};
use tower_service::Service;

use super::cost::Cost;
use super::future::{Outcome, ResponseFuture};
use super::headers::{PartitionKeys, ResponseHeaders};
use super::key::KeyExtractor;
use super::problem;
use crate::http::HeaderStyle;
use crate::{DecidedBy, Error, RateLimiter};

/// What every clone of one [`RateLimit`] shares.
pub(crate) struct Shared<L, K, C> {
    pub(crate) limiter: L,
    pub(crate) key: K,
    pub(crate) cost: C,
    pub(crate) style: HeaderStyle,
    pub(crate) partition_keys: PartitionKeys,
}

impl<L: RateLimiter, K, C> Shared<L, K, C> {
    /// Decides the request; a full limiter is peeked at for when to retry.
    async fn check(&self, key: &str, cost: u64) -> Outcome {
        match self.limiter.check_n(key, cost).await {
            Ok(decision) => Outcome::Decided(decision),
            Err(Error::CapacityExhausted { .. }) => {
                Outcome::OverCapacity(self.limiter.peek(key).await.ok())
            }
            Err(err) => Outcome::Failed(err),
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
/// `S` must be `Clone` (an axum `Router` is, cheaply).
pub struct RateLimit<S, L, K, C> {
    inner: S,
    shared: Arc<Shared<L, K, C>>,
}

impl<S, L, K, C> RateLimit<S, L, K, C> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<L, K, C>>) -> Self {
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

impl<S: Clone, L, K, C> Clone for RateLimit<S, L, K, C> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, L, K, C> fmt::Debug for RateLimit<S, L, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("style", &self.shared.style)
            .finish_non_exhaustive()
    }
}

impl<S, L, K, C, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, L, K, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    L: RateLimiter + 'static,
    K: KeyExtractor<ReqBody> + Send + Sync + 'static,
    C: Cost<ReqBody> + Send + Sync + 'static,
    ResBody: From<String>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let style = self.shared.style;
        let cost = self.shared.cost.cost(&request);
        if cost == 0 {
            return ResponseFuture::uncharged(self.inner.call(request));
        }
        let shared = &*self.shared;
        let Some(key) = shared.key.extract_borrowed(&request) else {
            return ResponseFuture::rejected(problem::missing_key());
        };
        // A limiter that decides without waiting is asked now: no owned key, no boxed future.
        let now = shared.limiter.check_now(&key, cost);
        let headers = ResponseHeaders::for_key(style, shared.partition_keys, &key);
        let owned_key = match &now {
            None | Some(Err(Error::CapacityExhausted { .. })) => Some(key.into_owned()),
            Some(_) => None,
        };
        match (now, owned_key) {
            (Some(Ok(decision)), _)
                if decision.is_allowed() && decision.decided_by() != DecidedBy::FailClosed =>
            {
                ResponseFuture::calling(self.inner.call(request), decision, headers)
            }
            (Some(Err(Error::CapacityExhausted { .. })), Some(key)) => {
                // A full limiter is peeked at for when to retry, as on the waiting path.
                let shared = Arc::clone(&self.shared);
                let peek =
                    Box::pin(
                        async move { Outcome::OverCapacity(shared.limiter.peek(&key).await.ok()) },
                    );
                ResponseFuture::rejecting(peek, headers)
            }
            (Some(Ok(decision)), _) => {
                ResponseFuture::rejected(problem::reject(Outcome::Decided(decision), &headers))
            }
            (Some(Err(err)), _) => {
                ResponseFuture::rejected(problem::reject(Outcome::Failed(err), &headers))
            }
            (None, key) => {
                let key = key.expect("owned when the limiter must be awaited");
                self.checking(key, cost, request, headers)
            }
        }
    }
}

impl<S, L, K, C> RateLimit<S, L, K, C>
where
    L: RateLimiter + 'static,
{
    /// The waiting path: the decision in a boxed future, then the inner service.
    fn checking<ReqBody>(
        &mut self,
        key: String,
        cost: u64,
        request: Request<ReqBody>,
        headers: ResponseHeaders,
    ) -> ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>> + Clone,
        K: Send + Sync + 'static,
        C: Send + Sync + 'static,
    {
        // The readied service goes with the request; its clone waits for the next poll_ready.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        // The limiter's future borrows the key and the limiter, so it is boxed with them.
        let check = Box::pin(async move { shared.check(&key, cost).await });
        ResponseFuture::checking(check, inner, request, headers)
    }
}
