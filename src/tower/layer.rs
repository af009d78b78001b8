//! [`RateLimitLayer`]: the layer's configuration.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use ::http::Response;

use super::cost::UnitCost;
use super::headers::PartitionKeyMode;
use super::hooks::{OnDecision, Rejection};
use super::key::FallbackKey;
use super::problem::ProblemDetails;
use super::service::{RateLimit, Shared};
use super::settle::{Policies, ResponseHead, ShadowHeaders};
use super::skip::{AllowList, Gate};
use crate::http::HeaderStyle;

/// Rate limits every request of the services it wraps: configuration only; the work is done by
/// the [`RateLimit`] service it builds. See the [module docs](super) for what each outcome is
/// answered with.
///
/// - `L`: the limiter, any [`RateLimiter`](crate::RateLimiter): a
///   [`MemoryLimiter`](crate::MemoryLimiter), a Redis limiter, or an
///   `Arc<dyn DynRateLimiter>` chosen at run time; or [`Plans`](super::Plans), which choose a
///   limiter per request (a plan per key, a quota per route). It is cloned once per wrapped
///   service, and the wrapped service's clones share it.
/// - `K`: the [`KeyExtractor`](super::KeyExtractor) that names the key each request is charged
///   to.
/// - `C`: the [`Cost`](super::Cost) of each request, [`UnitCost`] (1) by default.
///
/// - `R`: what answers the requests the layer answers itself ([`on_rejection`]), by default
///   [`ProblemDetails`].
/// - `O`: what observes every outcome ([`on_decision`]), by default `()`, which observes
///   nothing.
///
/// # Rejections
///
/// The layer's own answers are built by its [`on_rejection`] hook, by default
/// [`ProblemDetails`]: an `application/problem+json` body (RFC 9457) with a stable `code`
/// ([`RejectionKind::code`](super::RejectionKind::code)) and, on a `429`, the names of the
/// quotas that denied the request. Whatever the hook answers, the layer then writes the
/// rate-limit headers of the [module docs' table](super) into it.
///
/// [`on_rejection`]: RateLimitLayer::on_rejection
/// [`on_decision`]: RateLimitLayer::on_decision
/// [`skip`]: RateLimitLayer::skip
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use http::Request;
/// use ratewindow::http::HeaderStyle;
/// use ratewindow::tower::{FixedKey, HeaderKey, RateLimitLayer};
/// use ratewindow::{DynRateLimiter, MemoryLimiter, Quota};
///
/// // A backend chosen at run time, e.g. from configuration.
/// let limiter: Arc<dyn DynRateLimiter> = Arc::new(MemoryLimiter::new(Quota::per_minute(100)?)?);
/// let layer = RateLimitLayer::new(limiter, HeaderKey::from_static("x-api-key"))
///     // Callers without a key share one quota instead of getting a 401.
///     .fallback_key(FixedKey::new("anonymous"))
///     // Uploads cost 5.
///     .cost(|request: &Request<axum::body::Body>| if request.method() == "PUT" { 5 } else { 1 })
///     .header_style("both".parse::<HeaderStyle>().unwrap());
/// let app: axum::Router = axum::Router::new().layer(layer);
/// # Ok::<(), ratewindow::Error>(())
/// ```
#[derive(Clone)]
pub struct RateLimitLayer<L, K, C = UnitCost, R = ProblemDetails, O = (), P = ()> {
    limiter: L,
    key: K,
    cost: C,
    style: HeaderStyle,
    partition_keys: PartitionKeyMode,
    on_rejection: R,
    on_decision: O,
    policies: Policies,
    gate: Gate<P>,
}

impl<L, K> RateLimitLayer<L, K> {
    /// Charges each request 1 unit of `limiter` under the key `key` extracts, writing headers
    /// in the default [`HeaderStyle`] (X-RateLimit); a request without a key gets a `401`.
    pub fn new(limiter: L, key: K) -> RateLimitLayer<L, K> {
        RateLimitLayer {
            limiter,
            key,
            cost: UnitCost,
            style: HeaderStyle::default(),
            partition_keys: PartitionKeyMode::None,
            on_rejection: ProblemDetails,
            on_decision: (),
            policies: Policies::default(),
            gate: Gate::default(),
        }
    }
}

impl<L, K, C, R, O, P> RateLimitLayer<L, K, C, R, O, P> {
    /// Charges each request what `cost` says instead of 1.
    pub fn cost<C2>(self, cost: C2) -> RateLimitLayer<L, K, C2, R, O, P> {
        RateLimitLayer {
            limiter: self.limiter,
            key: self.key,
            cost,
            style: self.style,
            partition_keys: self.partition_keys,
            on_rejection: self.on_rejection,
            on_decision: self.on_decision,
            policies: self.policies,
            gate: self.gate,
        }
    }

    /// Writes the rate-limit headers in `style`.
    pub fn header_style(mut self, style: HeaderStyle) -> Self {
        self.style = style;
        self
    }

    /// Adds a partition key (`pk`) made by `keys` from each request's key to the IETF fields,
    /// when the style has them. None by default.
    pub fn partition_keys(mut self, keys: PartitionKeyMode) -> Self {
        self.partition_keys = keys;
        self
    }

    /// Charges a request without a key to the key `fallback` extracts instead of answering
    /// `401` (which it still does when `fallback` finds none either).
    pub fn fallback_key<F>(self, fallback: F) -> RateLimitLayer<L, FallbackKey<K, F>, C, R, O, P> {
        RateLimitLayer {
            limiter: self.limiter,
            key: FallbackKey::new(self.key, fallback),
            cost: self.cost,
            style: self.style,
            partition_keys: self.partition_keys,
            on_rejection: self.on_rejection,
            on_decision: self.on_decision,
            policies: self.policies,
            gate: self.gate,
        }
    }

    /// Answers the requests the layer answers itself with `hook`'s response instead of the
    /// default [`ProblemDetails`]: like tower_governor's `error_handler`, for a body of your
    /// own. The hook gets a [`Rejection`]: why ([`kind`](Rejection::kind), whose
    /// [`status`](super::RejectionKind::status) is the default), the limiter's
    /// [`decision`](Rejection::decision) or [`error`](Rejection::error), and the request's
    /// head ([`request`](Rejection::request)). Its response's status and body are kept as they
    /// are; its body type is the inner service's.
    ///
    /// The layer then writes its rate-limit headers into the response, first and replacing
    /// the hook's values of the same names (the hook's other headers, `content-type` among
    /// them, are the hook's):
    ///
    /// | [`RejectionKind`](super::RejectionKind) | Headers the layer writes |
    /// |---|---|
    /// | `RateLimited` (`429`) | the style's headers of the denial, and `retry-after` (seconds to the window's end) |
    /// | `Unavailable` by a fail-closed policy (`503`) | the style's headers of the denial, and `retry-after: 1` |
    /// | `OverCapacity` (`503`) | the style's headers of the key's quotas as they stand (nothing charged), and `retry-after` (seconds to their window's end); none if the limiter could not tell |
    /// | `Unavailable` by a backend error, `MissingKey`, `InvalidKey`, `CostExceedsLimit`, `Internal` | none: nothing was decided for the key |
    ///
    /// # Example: the errors of your API's own shape
    ///
    /// ```
    /// use axum::body::Body;
    /// use axum::response::{IntoResponse, Json, Response};
    /// use http::Request;
    /// use ratewindow::tower::{HeaderKey, RateLimitLayer, Rejection, RejectionKind};
    /// use ratewindow::{ManualClock, MemoryLimiter, Quota};
    /// use tower::ServiceExt;
    ///
    /// let clock = ManualClock::at_millis(1_800_000_037_000);
    /// let limiter = MemoryLimiter::builder(Quota::per_minute(1)?).clock(clock).build()?;
    /// let layer = RateLimitLayer::new(limiter, HeaderKey::from_static("x-api-key"))
    ///     .on_rejection(|rejection: &Rejection<'_>| -> Response {
    ///         let message = match (rejection.kind(), rejection.decision()) {
    ///             (RejectionKind::RateLimited, Some(denied)) => {
    ///                 format!("{} requests per minute at most", denied.limit())
    ///             }
    ///             (kind, _) => kind.code().replace('_', " "),
    ///         };
    ///         let path = rejection.request().uri.path();
    ///         let body = serde_json::json!({ "error": { "message": message, "path": path } });
    ///         (rejection.kind().status(), Json(body)).into_response()
    ///     });
    /// let app = axum::Router::new()
    ///     .route("/", axum::routing::get(|| async { "hello" }))
    ///     .layer(layer);
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let request = || Request::get("/").header("x-api-key", "k").body(Body::empty()).unwrap();
    /// app.clone().oneshot(request()).await?;
    /// let denied = app.oneshot(request()).await?;
    /// assert_eq!(denied.status(), 429);
    /// assert_eq!(denied.headers()["content-type"], "application/json");
    /// // Written by the layer:
    /// assert_eq!(denied.headers()["x-ratelimit-remaining"], "0");
    /// assert_eq!(denied.headers()["retry-after"], "23");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// # Ok::<(), ratewindow::Error>(())
    /// ```
    pub fn on_rejection<F, B>(self, hook: F) -> RateLimitLayer<L, K, C, F, O, P>
    where
        F: Fn(&Rejection<'_>) -> Response<B>,
    {
        RateLimitLayer {
            limiter: self.limiter,
            key: self.key,
            cost: self.cost,
            style: self.style,
            partition_keys: self.partition_keys,
            on_rejection: hook,
            on_decision: self.on_decision,
            policies: self.policies,
            gate: self.gate,
        }
    }

    /// Calls `observer` with the limiter's [`Outcome`](super::Outcome) for each request it was asked about,
    /// allowed or not, decided by a failure policy or failed, before the request goes on or is
    /// answered: e.g. to count outcomes by [`DecidedBy`](crate::DecidedBy) without wrapping the
    /// limiter. Not called for a request without a key (`401`), of cost 0, skipped or allowed,
    /// which the limiter is not asked about. Without an observer (the default `()`), nothing
    /// is called.
    ///
    /// The observer runs on the request's path: keep it short (count, don't log per request).
    ///
    /// # Example: counting the failure policy's decisions
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use ratewindow::tower::{HeaderKey, Outcome, RateLimitLayer};
    /// use ratewindow::{DecidedBy, MemoryLimiter, Quota};
    ///
    /// let by_policy = Arc::new(AtomicU64::new(0));
    /// let counter = Arc::clone(&by_policy);
    /// let layer = RateLimitLayer::new(MemoryLimiter::new(Quota::per_minute(100)?)?, HeaderKey::from_static("x-api-key"))
    ///     .on_decision(move |outcome: &Outcome| {
    ///         let by = outcome.decision().map(|decision| decision.decided_by());
    ///         if matches!(by, Some(DecidedBy::FailOpen | DecidedBy::FailClosed | DecidedBy::Fallback)) {
    ///             counter.fetch_add(1, Ordering::Relaxed);
    ///         }
    ///     });
    /// # let _ = layer;
    /// # Ok::<(), ratewindow::Error>(())
    /// ```
    pub fn on_decision<F>(self, observer: F) -> RateLimitLayer<L, K, C, R, F, P>
    where
        F: OnDecision,
    {
        RateLimitLayer {
            limiter: self.limiter,
            key: self.key,
            cost: self.cost,
            style: self.style,
            partition_keys: self.partition_keys,
            on_rejection: self.on_rejection,
            on_decision: observer,
            policies: self.policies,
            gate: self.gate,
        }
    }

    /// Lets the requests `skip` picks through to the inner service without limiting them,
    /// e.g. health checks: a [`SkipRoutes`](super::SkipRoutes) of methods and paths, or any
    /// closure `Fn(&Request<B>) -> bool`. Replaces an earlier `skip`; nothing is skipped by
    /// default (`()`, which costs nothing).
    ///
    /// `skip` is asked first, before anything else the layer does with a request: before its
    /// cost, before its key is extracted (so a skipped request without a key is not a `401`),
    /// before the [allow list](RateLimitLayer::allow) and the limiter. A skipped request goes
    /// to the inner service as it came: nothing charged, no rate-limit headers, no
    /// [`on_decision`](RateLimitLayer::on_decision) call, no decision in its extensions.
    ///
    /// # Example: health checks and metrics scrapes are never limited
    ///
    /// ```
    /// use axum::{Router, body::Body, routing::get};
    /// use http::{Method, Request, StatusCode};
    /// use ratewindow::tower::{HeaderKey, RateLimitLayer, SkipRoutes};
    /// use ratewindow::{MemoryLimiter, Quota};
    /// use tower::ServiceExt;
    ///
    /// let limiter = MemoryLimiter::new(Quota::per_minute(100)?)?;
    /// let layer = RateLimitLayer::new(limiter, HeaderKey::from_static("x-api-key"))
    ///     .skip(SkipRoutes::new().route(Method::GET, "/healthz").path("/metrics"));
    /// // Or a closure of your own:
    /// // .skip(|request: &Request<Body>| request.uri().path().starts_with("/internal/"))
    /// let app: Router = Router::new()
    ///     .route("/healthz", get(|| async { "ok" }))
    ///     .route("/", get(|| async { "hello" }))
    ///     .layer(layer);
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// // No key, yet no 401: the health check is not limited at all.
    /// let health = app.clone().oneshot(Request::get("/healthz").body(Body::empty())?).await?;
    /// assert_eq!(health.status(), StatusCode::OK);
    /// assert!(!health.headers().contains_key("x-ratelimit-remaining"));
    /// let anonymous = app.oneshot(Request::get("/").body(Body::empty())?).await?;
    /// assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// # Ok::<(), ratewindow::Error>(())
    /// ```
    pub fn skip<P2>(self, skip: P2) -> RateLimitLayer<L, K, C, R, O, P2> {
        RateLimitLayer {
            limiter: self.limiter,
            key: self.key,
            cost: self.cost,
            style: self.style,
            partition_keys: self.partition_keys,
            on_rejection: self.on_rejection,
            on_decision: self.on_decision,
            policies: self.policies,
            gate: self.gate.with_skip(skip),
        }
    }

    /// Never limits the keys and client networks of `list` (replacing an earlier list): e.g.
    /// internal callers' API keys, your own monitoring's network.
    ///
    /// The networks are checked after [`skip`](RateLimitLayer::skip) and before the request's
    /// cost and key, against the client address the list finds (the connection's peer by
    /// default, never a forwarding header unless the list is given a
    /// [`ClientIpKey::behind_proxies`](super::ClientIpKey::behind_proxies) rule: see
    /// [`AllowList`]); the keys right after the key is extracted, before the limiter is asked.
    /// An allowed request is treated as a skipped one: it goes to the inner service as it
    /// came, nothing charged, no rate-limit headers, no
    /// [`on_decision`](RateLimitLayer::on_decision) call, no decision in its extensions.
    ///
    /// # Example
    ///
    /// ```
    /// use axum::{Router, body::Body, routing::get};
    /// use http::{Request, StatusCode};
    /// use ratewindow::tower::{AllowList, HeaderKey, RateLimitLayer};
    /// use ratewindow::{MemoryLimiter, Quota};
    /// use tower::ServiceExt;
    ///
    /// let limiter = MemoryLimiter::new(Quota::per_minute(1)?)?;
    /// let layer = RateLimitLayer::new(limiter, HeaderKey::from_static("x-api-key"))
    ///     .allow(AllowList::new().keys(["internal-billing"]).networks(["10.0.0.0/8".parse()?]));
    /// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(layer);
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// for _ in 0..3 {
    ///     let request = Request::get("/").header("x-api-key", "internal-billing").body(Body::empty())?;
    ///     let response = app.clone().oneshot(request).await?;
    ///     assert_eq!(response.status(), StatusCode::OK);
    ///     assert!(!response.headers().contains_key("x-ratelimit-remaining"));
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allow(mut self, list: AllowList) -> Self {
        self.gate.allow = Some(list);
        self
    }

    /// Puts the limiter's [`Decision`](crate::Decision) into the extensions of each request it
    /// admits, before the inner service is called, so that handlers can read `remaining` and
    /// the rest (axum: `Extension<Decision>`). Off by default: a request's first extension
    /// allocates its map and the boxed value, which in the layer's benchmark adds about 40 ns
    /// per request, more than the in-memory decision itself. A request that is not charged (skipped, allowed, of cost 0) gets
    /// none, so a handler behind both should take `Option<Extension<Decision>>`.
    ///
    /// # Example: echoing `remaining`
    ///
    /// ```
    /// use axum::{Extension, Router, body::Body, routing::get};
    /// use http::Request;
    /// use http_body_util::BodyExt;
    /// use ratewindow::tower::{HeaderKey, RateLimitLayer};
    /// use ratewindow::{Decision, MemoryLimiter, Quota};
    /// use tower::ServiceExt;
    ///
    /// let limiter = MemoryLimiter::new(Quota::per_minute(100)?)?;
    /// let layer = RateLimitLayer::new(limiter, HeaderKey::from_static("x-api-key"))
    ///     .decision_in_extensions(true);
    /// let app: Router = Router::new()
    ///     .route("/", get(|Extension(decision): Extension<Decision>| async move {
    ///         format!("{} left", decision.remaining())
    ///     }))
    ///     .layer(layer);
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let request = Request::get("/").header("x-api-key", "k").body(Body::empty())?;
    /// let body = app.oneshot(request).await?.into_body().collect().await?.to_bytes();
    /// assert_eq!(body, "99 left");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// # Ok::<(), ratewindow::Error>(())
    /// ```
    pub fn decision_in_extensions(mut self, enabled: bool) -> Self {
        self.gate.decision_in_extensions = enabled;
        self
    }

    /// What the response to a request denied by quotas in shadow alone carries: the denial's
    /// headers ([`ShadowHeaders::Denial`], the default) or none.
    ///
    /// Quotas are put in shadow on the limiter ([`Shadow`](crate::Shadow)): a request its
    /// decision admits in shadow ([`Decision::is_shadow_denied`](crate::Decision::is_shadow_denied))
    /// goes on to the inner service, and the observer gets
    /// [`Outcome::Shadowed`](super::Outcome::Shadowed), which
    /// [`DecisionCounters`](super::DecisionCounters) counts apart.
    ///
    /// # Example: a dry run of the whole limiter
    ///
    /// ```
    /// use axum::body::Body;
    /// use http::Request;
    /// use ratewindow::tower::{DecisionCounters, HeaderKey, RateLimitLayer};
    /// use ratewindow::{ManualClock, MemoryLimiter, Shadow, quota};
    /// use tower::ServiceExt;
    ///
    /// let limiter = MemoryLimiter::builder(quota!(1 per minute))
    ///     .shadow(Shadow::ALL)
    ///     .clock(ManualClock::at_millis(1_800_000_000_000))
    ///     .build()?;
    /// let counters = DecisionCounters::new();
    /// let app = axum::Router::new()
    ///     .route("/", axum::routing::get(|| async { "hello" }))
    ///     .layer(RateLimitLayer::new(limiter, HeaderKey::from_static("x-api-key")).on_decision(counters.clone()));
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let request = || Request::get("/").header("x-api-key", "k").body(Body::empty()).unwrap();
    /// app.clone().oneshot(request()).await?;
    /// let over = app.oneshot(request()).await?;
    /// assert_eq!(over.status(), 200); // would have been a 429
    /// assert_eq!(over.headers()["x-ratelimit-remaining"], "0");
    /// assert_eq!(counters.snapshot().shadow_denied, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// # Ok::<(), ratewindow::Error>(())
    /// ```
    pub fn shadow_headers(mut self, headers: ShadowHeaders) -> Self {
        self.policies.shadow_headers = headers;
        self
    }

    /// Charges by response: each request is charged on the way in as usual (a reservation),
    /// and given back ([`RateLimiter::release`](crate::RateLimiter::release)) once its
    /// response is ready if `counts` says it does not count, before the response goes out.
    /// E.g. count only failed logins (`4xx`), or not the `5xx` the server caused.
    ///
    /// What holds under any concurrency: a request is admitted only while its quotas have room
    /// for it counted with every request admitted before it and not released, so at every
    /// moment the requests of a window that were admitted and not released are at most the
    /// limit; a release makes room for later requests only. A release reaches only the
    /// windows the request was admitted in. A response that never comes (the inner service
    /// fails, the client goes away) leaves its request counted, as does a release that fails.
    /// A released request's response carries the headers of its admission.
    ///
    /// Costs nothing unless set. When set, every charged request costs a copy of its key and
    /// an allocation (what settling it needs), and its response a call of `counts`; a released
    /// one also an allocation and the limiter's release (one round trip on Redis, which the
    /// response waits for; none while Redis is failing, and the request stays counted).
    ///
    /// # Example: only failed logins count
    ///
    /// ```
    /// use ratewindow::tower::{HeaderKey, RateLimitLayer, ResponseHead};
    /// use ratewindow::{MemoryLimiter, quota};
    ///
    /// let limiter = MemoryLimiter::new(quota!(5 per minute))?;
    /// let layer = RateLimitLayer::new(limiter, HeaderKey::from_static("x-api-key"))
    ///     .charge_if(|response: &ResponseHead<'_>| response.status().is_client_error());
    /// # let _ = layer;
    /// # Ok::<(), ratewindow::Error>(())
    /// ```
    pub fn charge_if<F>(mut self, counts: F) -> Self
    where
        F: Fn(&ResponseHead<'_>) -> bool + Send + Sync + 'static,
    {
        self.policies.charge_if = Some(Arc::new(counts));
        self
    }

    /// The limiter.
    pub fn limiter(&self) -> &L {
        &self.limiter
    }

    /// The header style.
    pub fn style(&self) -> HeaderStyle {
        self.style
    }
}

impl<S, L: Clone, K: Clone, C: Clone, R: Clone, O: Clone, P: Clone> Layer<S>
    for RateLimitLayer<L, K, C, R, O, P>
{
    type Service = RateLimit<S, L, K, C, R, O, P>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(
            inner,
            Arc::new(Shared {
                limiter: self.limiter.clone(),
                key: self.key.clone(),
                cost: self.cost.clone(),
                style: self.style,
                partition_keys: self.partition_keys,
                on_rejection: self.on_rejection.clone(),
                on_decision: self.on_decision.clone(),
                policies: self.policies.clone(),
                gate: self.gate.clone(),
            }),
        )
    }
}

impl<L, K, C, R, O, P> fmt::Debug for RateLimitLayer<L, K, C, R, O, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("style", &self.style)
            .field("partition_keys", &self.partition_keys)
            .field("policies", &self.policies)
            .field("allow", &self.gate.allow)
            .field("decision_in_extensions", &self.gate.decision_in_extensions)
            .finish_non_exhaustive()
    }
}
