//! [`Cost`]: how many units a request is charged.

use ::http::Request;

/// How many units a request costs, e.g. from its path or a batch size.
///
/// Implemented by [`UnitCost`] (every request costs 1, the default) and every closure
/// `Fn(&Request<B>) -> u64`. A cost of 0 lets the request through uncharged, without
/// rate-limit headers (e.g. for a health check). A cost above a quota's limit can never be
/// admitted: the layer answers `413` (see [`RateLimitLayer`](super::RateLimitLayer)).
///
/// # Example
///
/// ```
/// use http::Request;
/// use ratewindow::tower::Cost;
///
/// // Exports cost 10, everything else 1.
/// let cost = |request: &Request<()>| if request.uri().path().starts_with("/export") { 10 } else { 1 };
/// assert_eq!(cost.cost(&Request::get("/export/all").body(())?), 10);
/// assert_eq!(cost.cost(&Request::get("/items").body(())?), 1);
/// # Ok::<(), http::Error>(())
/// ```
pub trait Cost<B> {
    /// The units `request` costs.
    fn cost(&self, request: &Request<B>) -> u64;
}

impl<B, F> Cost<B> for F
where
    F: Fn(&Request<B>) -> u64,
{
    fn cost(&self, request: &Request<B>) -> u64 {
        self(request)
    }
}

/// Every request costs 1: the default [`Cost`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitCost;

impl<B> Cost<B> for UnitCost {
    fn cost(&self, _request: &Request<B>) -> u64 {
        1
    }
}
