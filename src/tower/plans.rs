//! [`Plans`]: the limiter that decides a request, chosen per request (a plan per key, a quota
//! per route), and [`ChooseLimiter`], how the layer asks for it.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ::http::Request;
use parking_lot::Mutex;

use crate::{BoxFuture, Clock, DefaultClock, RateLimiter};

/// Which limiter decides a request: what [`RateLimitLayer`](super::RateLimitLayer) asks of its
/// limiter. Every [`RateLimiter`] is one that decides every request itself; [`Plans`] choose
/// among several.
pub trait ChooseLimiter<B>: Send + Sync + 'static {
    /// The limiters chosen among.
    type Limiter: RateLimiter + 'static;

    /// The limiter for `request`, charged to `key`: now, or once a lookup answers.
    fn choose(&self, request: &Request<B>, key: &str) -> Choice;

    /// The limiter a [`Choice`] gave the index of.
    fn limiter(&self, index: usize) -> &Self::Limiter;
}

/// The index of a limiter of a [`ChooseLimiter`]: known now, or once a lookup answers.
#[non_exhaustive]
pub enum Choice {
    /// The limiter at this index.
    Now(usize),
    /// The limiter at the index this future ends with.
    Later(BoxFuture<'static, usize>),
}

impl fmt::Debug for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Choice::Now(index) => f.debug_tuple("Now").field(index).finish(),
            Choice::Later(_) => f.write_str("Later(..)"),
        }
    }
}

impl<L: RateLimiter + 'static, B> ChooseLimiter<B> for L {
    type Limiter = L;

    #[inline(always)]
    fn choose(&self, _: &Request<B>, _: &str) -> Choice {
        Choice::Now(0)
    }

    #[inline(always)]
    fn limiter(&self, _: usize) -> &L {
        self
    }
}

/// Limiters under names, one chosen per request by a selector: a plan per key (free, pro), a
/// quota per route (a stricter one for `POST /login`), or both.
///
/// The first plan is the default: a request the selector names no plan for (or names one
/// that is not here) is decided by it. Make the plans of one key space with
/// [`MemoryLimiter::plan`](crate::MemoryLimiter::plan) (or
/// [`RedisLimiter::plan`](crate::RedisLimiter::plan)) from one limiter: they share its
/// counters, so a key whose plan changes mid-window keeps its count, and their decisions carry
/// the plan's name into the headers' policy names (`pro-per-minute`) and the `429` body. A
/// limiter of its own (a route's) counts apart.
///
/// A selector returns the plan's name as anything `AsRef<str>`: a `&'static str`, or an
/// `Arc<str>` or `String` for names from configuration (a name borrowed from the request does
/// not fit its signature; copy it). Name the request's body type in a `by_request` closure
/// (`|request: &Request<Body>, key: &str|`). Quotas put in shadow ([`Shadow`](crate::Shadow))
/// are named by position in each plan's own quotas.
///
/// The selector is [`by_key`](Plans::by_key) (a function of the key),
/// [`by_request`](Plans::by_request) (of the request and its key), or
/// [`looked_up`](Plans::looked_up) (an asynchronous lookup per key, e.g. in your database,
/// cached).
///
/// # Example: plans by key prefix, a stricter quota for one route
///
/// ```
/// use axum::body::Body;
/// use http::{Method, Request};
/// use ratewindow::tower::{HeaderKey, Plans, RateLimitLayer};
/// use ratewindow::{MemoryLimiter, quota};
/// use tower::ServiceExt;
///
/// // One key space: the plans share its counters.
/// let free = MemoryLimiter::builder(quota!(100 per minute))
///     .quota(quota!(1_000 per hour))
///     .name("free")
///     .build()?;
/// let pro = free.plan("pro", [quota!(1_000 per minute), quota!(10_000 per hour)])?;
/// // A route with counters of its own.
/// let login = MemoryLimiter::builder(quota!(5 per minute)).name("login").build()?;
///
/// let plans = Plans::new("free", free)
///     .plan("pro", pro)
///     .plan("login", login)
///     .by_request(|request: &Request<Body>, key: &str| {
///         if request.method() == Method::POST && request.uri().path() == "/login" {
///             "login"
///         } else if key.starts_with("pro_") {
///             "pro"
///         } else {
///             "free"
///         }
///     });
/// let app = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hello" }))
///     .layer(RateLimitLayer::new(plans, HeaderKey::from_static("x-api-key")));
///
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async {
/// let request = Request::get("/").header("x-api-key", "pro_k").body(Body::empty())?;
/// let response = app.oneshot(request).await?;
/// assert_eq!(response.headers()["x-ratelimit-limit"], "1000");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// # Ok::<(), ratewindow::Error>(())
/// ```
pub struct Plans<L, S = ()> {
    names: Arc<PlanNames>,
    limiters: Vec<L>,
    select: S,
}

impl<L> Plans<L> {
    /// Plans whose first (the default) is `limiter`, named `name`.
    pub fn new(name: impl Into<String>, limiter: L) -> Plans<L> {
        Plans {
            names: Arc::new(PlanNames(vec![name.into().into_boxed_str()])),
            limiters: vec![limiter],
            select: (),
        }
    }

    /// Adds a plan: `limiter`, named `name`. A plan of a name already here replaces it.
    pub fn plan(mut self, name: impl Into<String>, limiter: L) -> Plans<L> {
        let name = name.into();
        match self.names.position(&name) {
            Some(index) => self.limiters[index] = limiter,
            None => {
                Arc::make_mut(&mut self.names).0.push(name.into_boxed_str());
                self.limiters.push(limiter);
            }
        }
        self
    }

    /// Chooses each request's plan by its key: `select` names the plan.
    ///
    /// ```
    /// use ratewindow::tower::Plans;
    /// use ratewindow::{MemoryLimiter, quota};
    ///
    /// let free = MemoryLimiter::builder(quota!(100 per minute)).name("free").build()?;
    /// let pro = free.plan("pro", [quota!(1_000 per minute)])?;
    /// let plans = Plans::new("free", free)
    ///     .plan("pro", pro)
    ///     .by_key(|key: &str| if key.starts_with("pro_") { "pro" } else { "free" });
    /// # Ok::<(), ratewindow::Error>(())
    /// ```
    pub fn by_key<F, N>(self, select: F) -> Plans<L, ByKey<F>>
    where
        F: Fn(&str) -> N,
        N: AsRef<str>,
    {
        self.select_with(ByKey(select))
    }

    /// Chooses each request's plan by the request and its key (its route, its method, ...):
    /// `select` names the plan.
    pub fn by_request<F, N, B>(self, select: F) -> Plans<L, ByRequest<F>>
    where
        F: Fn(&Request<B>, &str) -> N,
        N: AsRef<str>,
    {
        self.select_with(ByRequest(select))
    }

    /// Chooses each request's plan by looking its key up, e.g. in your database, with the
    /// answers cached: see [`CachedPlanLookup`].
    pub fn looked_up<P, C>(self, lookup: CachedPlanLookup<P, C>) -> Plans<L, CachedPlanLookup<P, C>>
    where
        P: PlanLookup,
        C: Clock,
    {
        self.select_with(lookup)
    }

    fn select_with<S>(self, select: S) -> Plans<L, S> {
        Plans {
            names: self.names,
            limiters: self.limiters,
            select,
        }
    }
}

impl<L, S> Plans<L, S> {
    /// The limiter at `index`: indexes come from the names, which are as many as the limiters;
    /// a bad one gets the default rather than a panic.
    #[inline]
    fn limiter_at(&self, index: usize) -> &L {
        self.limiters.get(index).unwrap_or(&self.limiters[0])
    }

    /// The plans' names, the default first.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.names.0.iter().map(|name| &**name)
    }

    /// The limiter of the plan `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<&L> {
        self.names.position(name).map(|index| &self.limiters[index])
    }
}

impl<L: Clone, S: Clone> Clone for Plans<L, S> {
    fn clone(&self) -> Self {
        Plans {
            names: Arc::clone(&self.names),
            limiters: self.limiters.clone(),
            select: self.select.clone(),
        }
    }
}

impl<L, S> fmt::Debug for Plans<L, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plans")
            .field("names", &self.names.0)
            .finish_non_exhaustive()
    }
}

/// The names of [`Plans`], in order: a request's plan is found by a short scan (plans are few).
#[derive(Debug, Clone)]
struct PlanNames(Vec<Box<str>>);

impl PlanNames {
    fn position(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|known| **known == *name)
    }

    /// The index of the plan `name`; the default's (0) for an unknown one.
    #[inline]
    fn index(&self, name: &str) -> usize {
        self.position(name).unwrap_or(0)
    }
}

/// The selector of [`Plans::by_key`].
#[derive(Debug, Clone, Copy)]
pub struct ByKey<F>(F);

impl<L, F, N, B> ChooseLimiter<B> for Plans<L, ByKey<F>>
where
    L: RateLimiter + 'static,
    F: Fn(&str) -> N + Send + Sync + 'static,
    N: AsRef<str>,
{
    type Limiter = L;

    #[inline]
    fn choose(&self, _: &Request<B>, key: &str) -> Choice {
        Choice::Now(self.names.index((self.select.0)(key).as_ref()))
    }

    #[inline]
    fn limiter(&self, index: usize) -> &L {
        self.limiter_at(index)
    }
}

/// The selector of [`Plans::by_request`].
#[derive(Debug, Clone, Copy)]
pub struct ByRequest<F>(F);

impl<L, F, N, B> ChooseLimiter<B> for Plans<L, ByRequest<F>>
where
    L: RateLimiter + 'static,
    F: Fn(&Request<B>, &str) -> N + Send + Sync + 'static,
    N: AsRef<str>,
{
    type Limiter = L;

    #[inline]
    fn choose(&self, request: &Request<B>, key: &str) -> Choice {
        Choice::Now(self.names.index((self.select.0)(request, key).as_ref()))
    }

    #[inline]
    fn limiter(&self, index: usize) -> &L {
        self.limiter_at(index)
    }
}

/// Looks up a key's plan, e.g. in your database: the name of its plan, or `None` for the
/// default plan. Implemented by every `Fn(String) -> impl Future<Output = Option<String>>`;
/// used through a [`CachedPlanLookup`].
///
/// A lookup that fails should answer what the API should do meanwhile, usually `None` (the
/// default plan): the answer is cached like any other.
pub trait PlanLookup: Send + Sync + 'static {
    /// The plan of `key`.
    fn plan(&self, key: String) -> impl Future<Output = Option<String>> + Send + 'static;
}

impl<F, Fut> PlanLookup for F
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<String>> + Send + 'static,
{
    fn plan(&self, key: String) -> impl Future<Output = Option<String>> + Send + 'static {
        self(key)
    }
}

/// The most keys a [`CachedPlanLookup`] remembers by default.
const DEFAULT_CACHED_KEYS: usize = 100_000;

/// A [`PlanLookup`] with its answers cached for a while, per key: the selector of
/// [`Plans::looked_up`].
///
/// A request whose key's plan is cached is decided at once; otherwise the lookup runs first
/// (the layer's request waits for it), and its answer serves the key's requests for `ttl`
/// after. So a plan change takes effect within `ttl`, and keeps the key's count (see
/// [`Plans`]). Concurrent first requests of one key each look it up, and nothing bounds how
/// long a lookup takes: give yours a timeout that answers the default plan. A `ttl` of zero
/// looks every request up. At most
/// [`capacity`](Self::capacity) keys are remembered; a lookup that finds the cache full drops
/// the answers that have expired, or else every answer, and starts over (a burst of lookups
/// rather than an unbounded cache).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use ratewindow::tower::{CachedPlanLookup, Plans};
/// use ratewindow::{MemoryLimiter, quota};
///
/// let free = MemoryLimiter::builder(quota!(100 per minute)).name("free").build()?;
/// let pro = free.plan("pro", [quota!(1_000 per minute)])?;
/// // Your database's answer; here, a stand-in.
/// let lookup = |key: String| async move { key.ends_with("-paid").then(|| "pro".to_string()) };
/// let plans = Plans::new("free", free)
///     .plan("pro", pro)
///     .looked_up(CachedPlanLookup::new(lookup, Duration::from_secs(60)));
/// # Ok::<(), ratewindow::Error>(())
/// ```
pub struct CachedPlanLookup<P, C = DefaultClock> {
    shared: Arc<LookupShared<P, C>>,
}

struct LookupShared<P, C> {
    lookup: P,
    ttl_ms: u64,
    capacity: AtomicUsize,
    clock: C,
    cache: Mutex<HashMap<Box<str>, Cached>>,
}

/// A key's plan (`None`: the default) and when the answer expires, in the clock's milliseconds.
type Cached = (Option<Box<str>>, u64);

impl<P: PlanLookup> CachedPlanLookup<P> {
    /// `lookup`, each answer used for `ttl`, on the default clock.
    pub fn new(lookup: P, ttl: Duration) -> CachedPlanLookup<P> {
        CachedPlanLookup::with_clock(lookup, ttl, DefaultClock::default())
    }
}

impl<P: PlanLookup, C: Clock> CachedPlanLookup<P, C> {
    /// `lookup`, each answer used for `ttl` as `clock` tells time (a
    /// [`ManualClock`](crate::ManualClock) in tests).
    pub fn with_clock(lookup: P, ttl: Duration, clock: C) -> CachedPlanLookup<P, C> {
        CachedPlanLookup {
            shared: Arc::new(LookupShared {
                lookup,
                ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
                capacity: AtomicUsize::new(DEFAULT_CACHED_KEYS),
                clock,
                cache: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Remembers at most `keys` keys' plans (default 100 000; at least 1), in this lookup and
    /// its clones.
    pub fn capacity(self, keys: usize) -> Self {
        self.shared.capacity.store(keys.max(1), Ordering::Relaxed);
        self
    }

    /// The index among `names` of the cached plan of `key`, if its answer has not expired.
    fn cached(&self, key: &str, names: &PlanNames) -> Option<usize> {
        let now_ms = self.shared.clock.now_ms();
        let cache = self.shared.cache.lock();
        let (plan, expires_ms) = cache.get(key)?;
        (now_ms < *expires_ms).then(|| plan.as_deref().map_or(0, |plan| names.index(plan)))
    }
}

impl<P: PlanLookup, C: Clock> LookupShared<P, C> {
    /// Remembers `plan` for `key` from now.
    fn remember(&self, key: String, plan: Option<Box<str>>) {
        let now_ms = self.clock.now_ms();
        let expires_ms = now_ms.saturating_add(self.ttl_ms);
        let mut cache = self.cache.lock();
        let capacity = self.capacity.load(Ordering::Relaxed);
        if cache.len() >= capacity && !cache.contains_key(key.as_str()) {
            cache.retain(|_, (_, expires_ms)| now_ms < *expires_ms);
            if cache.len() >= capacity {
                cache.clear();
            }
        }
        cache.insert(key.into_boxed_str(), (plan, expires_ms));
    }
}

impl<P, C> Clone for CachedPlanLookup<P, C> {
    fn clone(&self) -> Self {
        CachedPlanLookup {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<P, C> fmt::Debug for CachedPlanLookup<P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedPlanLookup")
            .field("ttl_ms", &self.shared.ttl_ms)
            .field("capacity", &self.shared.capacity.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<L, P, C, B> ChooseLimiter<B> for Plans<L, CachedPlanLookup<P, C>>
where
    L: RateLimiter + 'static,
    P: PlanLookup,
    C: Clock,
{
    type Limiter = L;

    fn choose(&self, _: &Request<B>, key: &str) -> Choice {
        self.select.choose(key, &self.names)
    }

    #[inline]
    fn limiter(&self, index: usize) -> &L {
        self.limiter_at(index)
    }
}

impl<P: PlanLookup, C: Clock> CachedPlanLookup<P, C> {
    /// The index of `key`'s plan among `names`: now if its answer is cached, else once the
    /// lookup answers (which is then cached).
    fn choose(&self, key: &str, names: &Arc<PlanNames>) -> Choice {
        if let Some(index) = self.cached(key, names) {
            return Choice::Now(index);
        }
        let shared = Arc::clone(&self.shared);
        let names = Arc::clone(names);
        let key = key.to_owned();
        Choice::Later(Box::pin(async move {
            let plan = shared.lookup.plan(key.clone()).await;
            let index = plan.as_deref().map_or(0, |plan| names.index(plan));
            shared.remember(key, plan.map(String::into_boxed_str));
            index
        }))
    }
}
