//! [`RateLimitLayer`]: the layer's configuration.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::cost::UnitCost;
use super::headers::PartitionKeys;
use super::key::FallbackKey;
use super::service::{RateLimit, Shared};
use crate::http::HeaderStyle;

/// Rate limits every request of the services it wraps: configuration only; the work is done by
/// the [`RateLimit`] service it builds. See the [module docs](super) for what each outcome is
/// answered with.
///
/// - `L`: the limiter, any [`RateLimiter`](crate::RateLimiter): a
///   [`MemoryLimiter`](crate::MemoryLimiter), a Redis limiter, or an
///   `Arc<dyn DynRateLimiter>` chosen at run time. It is cloned once per wrapped service, and
///   the wrapped service's clones share it.
/// - `K`: the [`KeyExtractor`](super::KeyExtractor) that names the key each request is charged
///   to.
/// - `C`: the [`Cost`](super::Cost) of each request, [`UnitCost`] (1) by default.
///
/// # Rejections
///
/// The layer's own answers carry an `application/problem+json` body (RFC 9457) with `type`
/// `about:blank` (the status says what happened), `title` (the status's reason phrase),
/// `status`, `detail` (a sentence for people; never the key), `code` (stable, for programs:
/// `rate_limited`, `rate_limiter_unavailable`, `over_capacity`, `missing_key`, `invalid_key`,
/// `cost_exceeds_limit`, `internal_error`) and, on a `429`, `violated-policies`: the
/// [policy names](crate::http::policy_names) of the quotas that denied the request, e.g.
/// `["per-minute"]`.
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
pub struct RateLimitLayer<L, K, C = UnitCost> {
    limiter: L,
    key: K,
    cost: C,
    style: HeaderStyle,
    partition_keys: PartitionKeys,
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
            partition_keys: PartitionKeys::None,
        }
    }
}

impl<L, K, C> RateLimitLayer<L, K, C> {
    /// Charges each request what `cost` says instead of 1.
    pub fn cost<C2>(self, cost: C2) -> RateLimitLayer<L, K, C2> {
        RateLimitLayer {
            limiter: self.limiter,
            key: self.key,
            cost,
            style: self.style,
            partition_keys: self.partition_keys,
        }
    }

    /// Writes the rate-limit headers in `style`.
    pub fn header_style(mut self, style: HeaderStyle) -> Self {
        self.style = style;
        self
    }

    /// Adds a partition key (`pk`) made by `keys` from each request's key to the IETF fields,
    /// when the style has them. None by default.
    pub fn partition_keys(mut self, keys: PartitionKeys) -> Self {
        self.partition_keys = keys;
        self
    }

    /// Charges a request without a key to the key `fallback` extracts instead of answering
    /// `401` (which it still does when `fallback` finds none either).
    pub fn fallback_key<F>(self, fallback: F) -> RateLimitLayer<L, FallbackKey<K, F>, C> {
        RateLimitLayer {
            limiter: self.limiter,
            key: FallbackKey::new(self.key, fallback),
            cost: self.cost,
            style: self.style,
            partition_keys: self.partition_keys,
        }
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

impl<S, L: Clone, K: Clone, C: Clone> Layer<S> for RateLimitLayer<L, K, C> {
    type Service = RateLimit<S, L, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(
            inner,
            Arc::new(Shared {
                limiter: self.limiter.clone(),
                key: self.key.clone(),
                cost: self.cost.clone(),
                style: self.style,
                partition_keys: self.partition_keys,
            }),
        )
    }
}

impl<L, K, C> fmt::Debug for RateLimitLayer<L, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("style", &self.style)
            .field("partition_keys", &self.partition_keys)
            .finish_non_exhaustive()
    }
}
