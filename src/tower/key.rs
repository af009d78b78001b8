//! [`KeyExtractor`]: which key a request is charged to.

use std::borrow::Cow;
use std::sync::Arc;

use ::http::{HeaderName, Request};

/// Takes the rate-limit key from a request: `None` when the request has none, which the layer
/// answers with `401` unless a fallback key is configured
/// ([`RateLimitLayer::fallback_key`](super::RateLimitLayer::fallback_key)).
///
/// Implemented by [`HeaderKey`], [`FixedKey`], [`FallbackKey`],
/// [`ClientIpKey`](super::ClientIpKey) and every closure
/// `Fn(&Request<B>) -> Option<String>`, e.g. for the client's address:
///
/// ```
/// use std::net::SocketAddr;
/// use axum::{body::Body, extract::ConnectInfo};
/// use http::Request;
/// use ratewindow::tower::KeyExtractor;
///
/// let client_ip = |request: &Request<Body>| {
///     let ConnectInfo(addr) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
///     Some(format!("ip:{}", addr.ip()))
/// };
/// let mut request = Request::new(Body::empty());
/// assert_eq!(client_ip.extract(&request), None);
/// request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 4000))));
/// assert_eq!(client_ip.extract(&request).as_deref(), Some("ip:192.0.2.7"));
/// ```
///
/// Keys from different extractors share the limiter's key space: prefix them (`ip:`, `key:`)
/// when an API key could equal a client address.
pub trait KeyExtractor<B> {
    /// The key of `request`, or `None` if it has none.
    fn extract(&self, request: &Request<B>) -> Option<String>;

    /// The same key as [`extract`](KeyExtractor::extract), borrowed from the request or the
    /// extractor where it can be, which spares the layer a copy per request. The default
    /// wraps `extract`'s `String`; override it only together with `extract`.
    fn extract_borrowed<'a>(&'a self, request: &'a Request<B>) -> Option<Cow<'a, str>> {
        self.extract(request).map(Cow::Owned)
    }
}

impl<B, F> KeyExtractor<B> for F
where
    F: Fn(&Request<B>) -> Option<String>,
{
    fn extract(&self, request: &Request<B>) -> Option<String> {
        self(request)
    }
}

/// The value of one request header, e.g. `X-API-Key`.
///
/// The key is the header's value exactly as the request carries it, when the header appears
/// exactly once and its value is not empty and consists of printable ASCII (bytes `0x20` to
/// `0x7E`, so spaces count) and tabs. Otherwise the request has no key (`None`): a repeated
/// header is refused rather than guessing which copy a proxy meant, and a value with other
/// bytes (control characters, `0x7F`, anything above `0x7F` such as UTF-8) is not a key.
///
/// Nothing is trimmed here, but HTTP/1 servers (hyper, and so axum) drop the spaces and tabs
/// around a field value when they parse a request, so over the wire `k`, ` k` and `k\t` are
/// the same key, and a value of only whitespace arrives empty (no key). Spaces and tabs inside
/// a value are part of the key: `a b` and `a\tb` are two keys, each distinct from `ab`. A key
/// longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes is the limiter's to refuse (`400`).
///
/// # Example
///
/// ```
/// use http::Request;
/// use ratewindow::tower::{HeaderKey, KeyExtractor};
///
/// let key = HeaderKey::from_static("x-api-key");
/// let request = Request::get("/").header("x-api-key", "otr_your_key").body(())?;
/// assert_eq!(key.extract(&request).as_deref(), Some("otr_your_key"));
/// let twice = Request::get("/").header("x-api-key", "a").header("x-api-key", "b").body(())?;
/// assert_eq!(key.extract(&twice), None);
/// // Inner spaces are part of the key; bytes beyond printable ASCII make none.
/// let spaced = Request::get("/").header("x-api-key", "a b").body(())?;
/// assert_eq!(key.extract(&spaced).as_deref(), Some("a b"));
/// let utf8 = Request::get("/").header("x-api-key", "clé").body(())?;
/// assert_eq!(key.extract(&utf8), None);
/// # Ok::<(), http::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// The header `name`.
    pub fn new(name: HeaderName) -> HeaderKey {
        HeaderKey { name }
    }

    /// The header `name`, which must be lower case (as `HeaderName::from_static` requires; it
    /// panics otherwise, at compile time in a `const`).
    pub const fn from_static(name: &'static str) -> HeaderKey {
        HeaderKey {
            name: HeaderName::from_static(name),
        }
    }

    /// The header's name.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }
}

impl HeaderKey {
    fn key_of<'a, B>(&self, request: &'a Request<B>) -> Option<&'a str> {
        let mut values = request.headers().get_all(&self.name).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        match value.to_str() {
            Ok("") | Err(_) => None,
            Ok(key) => Some(key),
        }
    }
}

impl<B> KeyExtractor<B> for HeaderKey {
    fn extract(&self, request: &Request<B>) -> Option<String> {
        self.key_of(request).map(str::to_owned)
    }

    fn extract_borrowed<'a>(&'a self, request: &'a Request<B>) -> Option<Cow<'a, str>> {
        self.key_of(request).map(Cow::Borrowed)
    }
}

/// The same key for every request, e.g. one shared quota for anonymous callers as a
/// [fallback](super::RateLimitLayer::fallback_key).
///
/// # Example
///
/// ```
/// use http::Request;
/// use ratewindow::tower::{FixedKey, KeyExtractor};
///
/// let key = FixedKey::new("anonymous");
/// assert_eq!(key.extract(&Request::new(())).as_deref(), Some("anonymous"));
/// ```
#[derive(Debug, Clone)]
pub struct FixedKey {
    key: Arc<str>,
}

impl FixedKey {
    /// Every request is charged to `key`.
    pub fn new(key: impl Into<Arc<str>>) -> FixedKey {
        FixedKey { key: key.into() }
    }
}

impl<B> KeyExtractor<B> for FixedKey {
    fn extract(&self, _request: &Request<B>) -> Option<String> {
        Some(self.key.to_string())
    }

    fn extract_borrowed<'a>(&'a self, _request: &'a Request<B>) -> Option<Cow<'a, str>> {
        Some(Cow::Borrowed(&self.key))
    }
}

/// The key of `primary`, or else that of `fallback`: what
/// [`RateLimitLayer::fallback_key`](super::RateLimitLayer::fallback_key) builds.
#[derive(Debug, Clone)]
pub struct FallbackKey<P, F> {
    primary: P,
    fallback: F,
}

impl<P, F> FallbackKey<P, F> {
    /// `primary`'s key, or else `fallback`'s.
    pub fn new(primary: P, fallback: F) -> FallbackKey<P, F> {
        FallbackKey { primary, fallback }
    }
}

impl<B, P: KeyExtractor<B>, F: KeyExtractor<B>> KeyExtractor<B> for FallbackKey<P, F> {
    fn extract(&self, request: &Request<B>) -> Option<String> {
        self.primary
            .extract(request)
            .or_else(|| self.fallback.extract(request))
    }

    fn extract_borrowed<'a>(&'a self, request: &'a Request<B>) -> Option<Cow<'a, str>> {
        self.primary
            .extract_borrowed(request)
            .or_else(|| self.fallback.extract_borrowed(request))
    }
}
