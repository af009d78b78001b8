//! A tower layer that rate limits HTTP requests (feature `tower`).
//!
//! [`RateLimitLayer`] wraps any `tower` service of `http::Request` → `http::Response` (an axum
//! `Router`, a hyper service, ...). For each request it takes a key from the request (a
//! [`KeyExtractor`]: a header such as `X-API-Key`, a fixed key, a closure) and a cost (a
//! [`Cost`], 1 by default), asks the limiter, and then:
//!
//! | Outcome | Status | Rate-limit headers | Inner service |
//! |---|---|---|---|
//! | allowed (also when decided by a fail-open or fallback policy) | the inner service's | yes | called |
//! | denied | `429` | yes, with `retry-after` | not called |
//! | denied by a fail-closed policy ([`DecidedBy::FailClosed`](crate::DecidedBy::FailClosed)) | `503` | yes, with `retry-after: 1` | not called |
//! | no key (and no fallback key) | `401` | no | not called |
//! | key empty or too long ([`Error::EmptyKey`](crate::Error::EmptyKey), [`Error::KeyTooLong`](crate::Error::KeyTooLong)) | `400` | no | not called |
//! | cost above a limit ([`Error::CostExceedsLimit`](crate::Error::CostExceedsLimit)) | `413` | no | not called |
//! | limiter full ([`Error::CapacityExhausted`](crate::Error::CapacityExhausted)) | `503` | yes, of the key's quotas as they stand (nothing charged), with `retry-after` (none if the limiter cannot tell) | not called |
//! | backend failure ([`Error::Backend`](crate::Error::Backend)) | `503` | no | not called |
//! | any other limiter error | `500` | no | not called |
//! | cost 0 | the inner service's | no | called, nothing charged |
//! | skipped ([`skip`](RateLimitLayer::skip)) or allowed ([`allow`](RateLimitLayer::allow)) | the inner service's | no | called, nothing charged, key not extracted if skipped |
//!
//! Every answer of the layer's own is an `application/problem+json` document (RFC 9457) by
//! default ([`ProblemDetails`]); an [`on_rejection`](RateLimitLayer::on_rejection) hook builds
//! them instead, from a [`Rejection`] ([`RejectionKind`] names the rows above), and the layer
//! still writes the rate-limit headers into them. The rate-limit headers are those of
//! [`write_headers`](crate::http::write_headers) in the layer's
//! [`HeaderStyle`](crate::http::HeaderStyle); they replace the inner service's (or the hook's)
//! values of the same headers, and leave its other headers alone. The `401` carries no
//! `WWW-Authenticate` (an API key has no standard scheme); add one in an outer layer or an
//! `on_rejection` hook if your clients need it.
//!
//! An [`on_decision`](RateLimitLayer::on_decision) observer sees the limiter's [`Outcome`] for
//! every request it was asked about, e.g. to count the decisions a failure policy made;
//! [`DecisionCounters`] is a ready-made one that counts every outcome and writes the counts in
//! the Prometheus text format.
//!
//! Requests that are never limited are let through before the limiter is asked: a
//! [`skip`](RateLimitLayer::skip) predicate ([`SkipRoutes`], a closure) before anything else, an
//! [`allow`](RateLimitLayer::allow) list's networks before the key is extracted and its keys
//! right after ([`AllowList`]). With
//! [`decision_in_extensions`](RateLimitLayer::decision_in_extensions), each admitted request
//! carries its [`Decision`](crate::Decision) to the handler in its extensions.
//!
//! The default answers' bodies are built with `From<String>`, so without an `on_rejection`
//! hook the inner service's response body type must implement it: axum's `Body` does, and so
//! do `String` and `http_body_util::Full<Bytes>`.
//!
//! # Example: axum, keyed by `X-API-Key`
//!
//! ```
//! use axum::{Router, body::Body, routing::get};
//! use http::{Request, StatusCode};
//! use ratewindow::http::{HeaderStyle, IetfDraft};
//! use ratewindow::tower::{HeaderKey, RateLimitLayer};
//! use ratewindow::{MemoryLimiter, Quota};
//! use tower::ServiceExt;
//!
//! let limiter = MemoryLimiter::new(Quota::per_minute(100)?)?;
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(
//!         RateLimitLayer::new(limiter, HeaderKey::from_static("x-api-key"))
//!             .header_style(HeaderStyle::x_ratelimit().with_ietf(IetfDraft::Draft10)),
//!     );
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! # rt.block_on(async {
//! let request = Request::get("/").header("x-api-key", "otr_your_key").body(Body::empty())?;
//! let response = app.clone().oneshot(request).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.headers()["x-ratelimit-remaining"], "99");
//!
//! let anonymous = app.oneshot(Request::get("/").body(Body::empty())?).await?;
//! assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! # Ok::<(), ratewindow::Error>(())
//! ```
//!
//! Serving it is axum's usual `axum::serve(listener, app)`.
//!
//! # Example: keyed by client IP, behind a proxy
//!
//! [`ClientIpKey`] keys a request by its client's address (`ip:203.0.113.7`; IPv6 by `/64`,
//! `ip:2001:db8:1:2::/64`). It takes the connection's peer address from the request's
//! extensions (a [`ClientAddr`], or axum's `ConnectInfo` as here), and reads a forwarding
//! header only when that peer is one of the trusted proxies, as far as they wrote it: neither
//! a forged nor a malformed header gets a client a fresh quota (the rule is on
//! [`ClientIpKey`]). [`ClientIpKey::peer`] ignores forwarding headers altogether.
//!
//! ```
//! use std::net::SocketAddr;
//! use axum::{Router, body::Body, extract::ConnectInfo, routing::get};
//! use http::{Request, StatusCode};
//! use ratewindow::tower::{ClientIpKey, ProxyHeader, RateLimitLayer};
//! use ratewindow::{MemoryLimiter, Quota};
//! use tower::ServiceExt;
//!
//! let proxies = ["10.0.0.0/8".parse()?, "fd00::/8".parse()?];
//! let key = ClientIpKey::behind_proxies(proxies, ProxyHeader::XForwardedFor)
//!     .peer_addr(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip()));
//! let limiter = MemoryLimiter::new(Quota::per_minute(100)?)?;
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(RateLimitLayer::new(limiter, key));
//! // Served with the peer addresses axum's `ConnectInfo` needs:
//! // axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! # rt.block_on(async {
//! // What `into_make_service_with_connect_info` does for a request from the proxy at 10.0.0.2:
//! let mut request = Request::get("/")
//!     .header("x-forwarded-for", "1.2.3.4, 203.0.113.7") // forged, then the proxy's own
//!     .body(Body::empty())?;
//! request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 2], 41000))));
//! let response = app.oneshot(request).await?; // charged to ip:203.0.113.7
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.headers()["x-ratelimit-remaining"], "99");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A hyper server inserts [`ClientAddr`] itself, from the address its accept loop got, and
//! keeps [`ClientIpKey`]'s default peer source.

mod cost;
mod future;
mod headers;
mod hooks;
mod ip;
mod key;
mod layer;
mod metrics;
mod outcome;
mod plans;
mod problem;
mod service;
mod settle;
mod skip;

pub use cost::{Cost, UnitCost};
pub use future::ResponseFuture;
pub use headers::PartitionKeyMode;
pub use hooks::{OnDecision, OnRejection, Rejection, RejectionKind};
pub use ip::{ClientAddr, ClientIpKey, IpNet, IpNetError, PeerAddrFn, ProxyHeader};
pub use key::{FallbackKey, FixedKey, HeaderKey, KeyExtractor};
pub use layer::RateLimitLayer;
pub use metrics::{DecisionCounters, DecisionSnapshot};
pub use outcome::Outcome;
pub use plans::{ByKey, ByRequest, CachedPlanLookup, Choice, ChooseLimiter, PlanLookup, Plans};
pub use problem::ProblemDetails;
pub use service::RateLimit;
pub use settle::{ResponseHead, ShadowHeaders};
pub use skip::{AllowList, Skip, SkipRoutes};
