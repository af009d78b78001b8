//! Requests the layer never limits ([`Skip`], [`SkipRoutes`], [`AllowList`]), and the decision
//! handed to the handler in the request's extensions.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

use ::http::{Method, Request};
use foldhash::fast::RandomState;

use super::ip::{ClientIpKey, IpNet, PeerAddrFn};
use crate::Decision;

/// Which requests the layer lets through without limiting them, asked first, before the
/// request's cost or key: see [`RateLimitLayer::skip`](super::RateLimitLayer::skip).
///
/// Implemented by `()` (nothing is skipped, and asking costs nothing: the default), by
/// [`SkipRoutes`] (methods and paths), and by every closure `Fn(&Request<B>) -> bool`.
///
/// # Example
///
/// ```
/// use http::Request;
/// use ratewindow::tower::Skip;
///
/// let health_checks = |request: &Request<()>| request.uri().path() == "/healthz";
/// assert!(health_checks.skip(&Request::get("/healthz").body(())?));
/// assert!(!health_checks.skip(&Request::get("/items").body(())?));
/// assert!(!().skip(&Request::get("/healthz").body(())?));
/// # Ok::<(), http::Error>(())
/// ```
pub trait Skip<B> {
    /// Whether `request` goes to the inner service without being limited.
    fn skip(&self, request: &Request<B>) -> bool;
}

impl<B> Skip<B> for () {
    #[inline(always)]
    fn skip(&self, _request: &Request<B>) -> bool {
        false
    }
}

impl<B, F> Skip<B> for F
where
    F: Fn(&Request<B>) -> bool,
{
    #[inline]
    fn skip(&self, request: &Request<B>) -> bool {
        self(request)
    }
}

/// A [`Skip`] by method and path: health checks, metrics scrapes, CORS preflights.
///
/// Paths are compared with the request URI's path as the layer sees it, byte for byte: not
/// decoded, not normalized, without the query (`/healthz/` and `/Healthz` are not `/healthz`;
/// under an axum `Router::nest`, a layer on the nested router sees the path without the
/// prefix). A [`prefix`](SkipRoutes::prefix) matches whole segments only.
///
/// # Example
///
/// ```
/// use http::{Method, Request};
/// use ratewindow::tower::{Skip, SkipRoutes};
///
/// let skip = SkipRoutes::new()
///     .route(Method::GET, "/healthz")
///     .path("/metrics")
///     .prefix("/static")
///     .method(Method::OPTIONS);
/// let request = |method: Method, path: &str| Request::builder().method(method).uri(path).body(()).unwrap();
/// assert!(skip.skip(&request(Method::GET, "/healthz?verbose=1")));
/// assert!(!skip.skip(&request(Method::POST, "/healthz")));
/// assert!(skip.skip(&request(Method::POST, "/metrics")));
/// assert!(skip.skip(&request(Method::GET, "/static/app.js")));
/// assert!(!skip.skip(&request(Method::GET, "/staticky")));
/// assert!(skip.skip(&request(Method::OPTIONS, "/items")));
/// assert!(!skip.skip(&request(Method::GET, "/items")));
/// ```
#[derive(Debug, Clone, Default)]
pub struct SkipRoutes {
    routes: Vec<Route>,
}

#[derive(Debug, Clone)]
struct Route {
    /// `None`: any method.
    method: Option<Method>,
    /// `None`: any path.
    path: Option<Box<str>>,
    /// Whether `path` is a prefix of whole segments rather than the whole path.
    prefix: bool,
}

impl Route {
    fn matches<B>(&self, request: &Request<B>) -> bool {
        if self.method.as_ref().is_some_and(|m| m != request.method()) {
            return false;
        }
        let Some(path) = self.path.as_deref() else {
            return true;
        };
        let actual = request.uri().path();
        if !self.prefix {
            return actual == path;
        }
        match actual.strip_prefix(path) {
            Some(rest) => rest.is_empty() || path.ends_with('/') || rest.starts_with('/'),
            None => false,
        }
    }
}

impl SkipRoutes {
    /// Skips nothing yet.
    pub fn new() -> SkipRoutes {
        SkipRoutes::default()
    }

    /// Skips requests of `method` to exactly `path`, e.g. `GET /healthz`.
    pub fn route(mut self, method: Method, path: impl Into<String>) -> SkipRoutes {
        self.routes.push(Route {
            method: Some(method),
            path: Some(path.into().into_boxed_str()),
            prefix: false,
        });
        self
    }

    /// Skips requests of any method to exactly `path`.
    pub fn path(mut self, path: impl Into<String>) -> SkipRoutes {
        self.routes.push(Route {
            method: None,
            path: Some(path.into().into_boxed_str()),
            prefix: false,
        });
        self
    }

    /// Skips requests of any method to `prefix` and every path below it: `/static` skips
    /// `/static` and `/static/app.js`, not `/staticky`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> SkipRoutes {
        self.routes.push(Route {
            method: None,
            path: Some(prefix.into().into_boxed_str()),
            prefix: true,
        });
        self
    }

    /// Skips every request of `method`, e.g. `OPTIONS` (CORS preflights).
    pub fn method(mut self, method: Method) -> SkipRoutes {
        self.routes.push(Route {
            method: Some(method),
            path: None,
            prefix: false,
        });
        self
    }
}

impl<B> Skip<B> for SkipRoutes {
    fn skip(&self, request: &Request<B>) -> bool {
        self.routes.iter().any(|route| route.matches(request))
    }
}

/// Keys and client networks the layer never limits: see
/// [`RateLimitLayer::allow`](super::RateLimitLayer::allow).
///
/// - [`keys`](AllowList::keys): a request whose key (as the layer's key extractor returns it,
///   e.g. the `X-API-Key` value, or `ip:203.0.113.7` for a [`ClientIpKey`]) is one of these,
///   e.g. internal callers' API keys. Checked right after the key is extracted.
/// - [`networks`](AllowList::networks): a request whose client address is in one of these
///   networks, e.g. your own monitoring. Checked before the key is extracted.
///
/// The client address is found as a [`ClientIpKey`] finds it: by default
/// ([`ClientIpKey::peer`]) the connection's peer address from a
/// [`ClientAddr`](super::ClientAddr) extension, and never from a forwarding header, which
/// anyone can send; [`peer_addr`](AllowList::peer_addr) reads it elsewhere (axum's
/// `ConnectInfo`), and [`client_ip`](AllowList::client_ip) takes the rule of a
/// [`ClientIpKey::behind_proxies`] (a forwarding header read only as far as trusted proxies
/// wrote it). A request without a peer address is in no network.
///
/// # Example
///
/// ```
/// use std::net::SocketAddr;
/// use axum::extract::ConnectInfo;
/// use http::Request;
/// use ratewindow::tower::AllowList;
///
/// let allow = AllowList::new()
///     .keys(["internal-billing", "internal-search"])
///     .networks(["10.0.0.0/8".parse()?])
///     .peer_addr(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip()));
/// assert!(allow.allows_key("internal-billing"));
/// assert!(!allow.allows_key("otr_your_key"));
///
/// let mut request = Request::get("/").header("x-forwarded-for", "10.0.0.1").body(())?;
/// assert!(!allow.allows_client(&request)); // no peer address: a header is not one
/// request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([10, 1, 2, 3], 4000))));
/// assert!(allow.allows_client(&request));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct AllowList {
    keys: HashSet<Box<str>, RandomState>,
    networks: Vec<IpNet>,
    client: ClientIpKey,
}

impl AllowList {
    /// Allows nothing yet; client addresses are the peer's ([`ClientIpKey::peer`]).
    pub fn new() -> AllowList {
        AllowList::default()
    }

    /// Also allows requests whose key is one of `keys`.
    pub fn keys<I>(mut self, keys: I) -> AllowList
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.keys
            .extend(keys.into_iter().map(|key| key.into().into_boxed_str()));
        self
    }

    /// Also allows requests whose client address is in one of `networks`.
    pub fn networks(mut self, networks: impl IntoIterator<Item = IpNet>) -> AllowList {
        self.networks.extend(networks);
        self
    }

    /// Reads the peer address with `peer` instead of from a [`ClientAddr`](super::ClientAddr),
    /// as [`ClientIpKey::peer_addr`] does, e.g. axum's `ConnectInfo`:
    /// `|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip())`.
    pub fn peer_addr(mut self, peer: PeerAddrFn) -> AllowList {
        self.client = self.client.peer_addr(peer);
        self
    }

    /// Finds the client address as `client` does, e.g. the same
    /// [`ClientIpKey::behind_proxies`] the layer is keyed by, so that a request through a
    /// trusted proxy is matched by the client the proxy forwarded for. Its grouping prefixes
    /// play no part: networks are matched against the address itself.
    pub fn client_ip(mut self, client: ClientIpKey) -> AllowList {
        self.client = client;
        self
    }

    /// Whether `key` is allowed.
    pub fn allows_key(&self, key: &str) -> bool {
        !self.keys.is_empty() && self.keys.contains(key)
    }

    /// Whether `request`'s client address is in an allowed network.
    pub fn allows_client<B>(&self, request: &Request<B>) -> bool {
        !self.networks.is_empty()
            && self
                .client
                .client_ip(request)
                .is_some_and(|ip| self.allows_ip(ip))
    }

    /// Whether `ip` is in an allowed network.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|net| net.contains(ip))
    }
}

/// The keys are secrets: only their number is shown.
impl fmt::Debug for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllowList")
            .field("keys", &self.keys.len())
            .field("networks", &self.networks)
            .field("client", &self.client)
            .finish()
    }
}

/// What the layer asks of each request besides its key and cost: whether it is skipped or
/// allowed before the limiter is asked, and whether the handler gets the decision.
#[derive(Clone, Default)]
pub(crate) struct Gate<P> {
    pub(crate) skip: P,
    /// `None`: nothing allow-listed, nothing asked.
    pub(crate) allow: Option<AllowList>,
    pub(crate) decision_in_extensions: bool,
}

impl<P> Gate<P> {
    /// Whether `request` passes before its key is extracted: skipped, or from an allowed
    /// network.
    #[inline]
    pub(crate) fn passes<B>(&self, request: &Request<B>) -> bool
    where
        P: Skip<B>,
    {
        self.skip.skip(request)
            || self
                .allow
                .as_ref()
                .is_some_and(|allow| allow.allows_client(request))
    }

    /// Whether a request with `key` passes: an allowed key.
    #[inline]
    pub(crate) fn passes_key(&self, key: &str) -> bool {
        self.allow
            .as_ref()
            .is_some_and(|allow| allow.allows_key(key))
    }

    /// Hands `decision` to the handler in `request`'s extensions, if asked to.
    #[inline]
    pub(crate) fn hand_over<B>(&self, decision: &Decision, request: &mut Request<B>) {
        if self.decision_in_extensions {
            request.extensions_mut().insert(*decision);
        }
    }

    /// The same gate with `skip` instead.
    pub(crate) fn with_skip<P2>(self, skip: P2) -> Gate<P2> {
        Gate {
            skip,
            allow: self.allow,
            decision_in_extensions: self.decision_in_extensions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let skip = SkipRoutes::new().prefix("/static").prefix("/assets/");
        for path in ["/static", "/static/", "/static/a/b.js", "/assets/x.css"] {
            assert!(skip.skip(&get(path)), "{path}");
        }
        for path in ["/staticky", "/", "/Static/a", "/assets", "/api/static/x"] {
            assert!(!skip.skip(&get(path)), "{path}");
        }
    }

    #[test]
    fn an_empty_allow_list_allows_nothing() {
        let allow = AllowList::new();
        assert!(!allow.allows_key(""));
        assert!(!allow.allows_client(&get("/")));
        let gate = Gate::<()>::default();
        assert!(!gate.passes(&get("/")));
        assert!(!gate.passes_key("k"));
    }

    #[test]
    fn debug_never_shows_the_keys() {
        let allow = AllowList::new().keys(["secret-internal-key"]);
        let shown = format!("{allow:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("keys: 1"), "{shown}");
    }
}
