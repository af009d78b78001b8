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

mod cost;
mod future;
mod headers;
mod hooks;
mod key;
mod layer;
mod metrics;
mod outcome;
mod problem;
mod service;

pub use cost::{Cost, UnitCost};
pub use future::ResponseFuture;
pub use headers::PartitionKeyMode;
pub use hooks::{OnDecision, OnRejection, Rejection, RejectionKind};
pub use key::{FallbackKey, FixedKey, HeaderKey, KeyExtractor};
pub use layer::RateLimitLayer;
pub use metrics::{DecisionCounters, DecisionSnapshot};
pub use outcome::Outcome;
pub use problem::ProblemDetails;
pub use service::RateLimit;
