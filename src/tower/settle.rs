//! What the layer does with a decision besides enforcing it: shadow (dry-run) quotas, and
//! charging by the response (reserve on the way in, release on the way out).

use std::fmt;
use std::sync::Arc;

use ::http::{Extensions, HeaderMap, Response, StatusCode};

use crate::{BoxFuture, DecidedBy, Decision};

/// What the response to a request denied by quotas in shadow alone
/// ([`Decision::is_shadow_denied`]) carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShadowHeaders {
    /// The headers of the denial, as its `429` would have (`remaining: 0`, `retry-after`): a
    /// client sees what the limit will do once enforced. The default.
    #[default]
    Denial,
    /// No rate-limit headers: clients see nothing of the limit while it is tried out.
    None,
}

/// The part of a response that decides whether its request counts
/// ([`RateLimitLayer::charge_if`](super::RateLimitLayer::charge_if)): its status, its headers
/// and its extensions (where a handler can leave a signal of its own).
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead<'a> {
    status: StatusCode,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
}

impl<'a> ResponseHead<'a> {
    /// The head of `response`.
    pub fn of<B>(response: &'a Response<B>) -> ResponseHead<'a> {
        ResponseHead {
            status: response.status(),
            headers: response.headers(),
            extensions: response.extensions(),
        }
    }

    /// The response's status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response's headers (the rate-limit headers among them).
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The response's extensions.
    pub fn extensions(&self) -> &'a Extensions {
        self.extensions
    }
}

/// Whether a response's request counts.
pub(crate) type ChargeIf = Arc<dyn Fn(&ResponseHead<'_>) -> bool + Send + Sync>;

/// The layer's policies for what a decision leads to; none of them by default.
#[derive(Clone, Default)]
pub(crate) struct Policies {
    pub(crate) shadow_headers: ShadowHeaders,
    pub(crate) charge_if: Option<ChargeIf>,
}

impl Policies {
    /// Whether an admitted request's response gets `decision`'s headers: always, but for a
    /// shadow denial under [`ShadowHeaders::None`].
    #[inline(always)]
    pub(crate) fn writes_headers(&self, decision: &Decision) -> bool {
        decision.is_allowed() || self.shadow_headers == ShadowHeaders::Denial
    }

    /// Whether the request of `decision` is settled by its response: when charging by response
    /// and the decision charged something to give back (an admission; a shadow denial, to its
    /// enforced quotas).
    #[inline(always)]
    pub(crate) fn settles(&self, decision: &Decision) -> bool {
        self.charge_if.is_some()
            && decision.charged_mask() != 0
            && matches!(
                decision.decided_by(),
                DecidedBy::Backend | DecidedBy::Fallback
            )
    }
}

impl fmt::Debug for Policies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policies")
            .field("shadow_headers", &self.shadow_headers)
            .field("charge_if", &self.charge_if.is_some())
            .finish()
    }
}

/// Settles a request by its response: given the response, the release to wait for before it
/// goes out, if the request does not count.
pub(crate) type Settle<Res> = Box<dyn FnOnce(&Res) -> Option<BoxFuture<'static, ()>> + Send>;
