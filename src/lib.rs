//! Exact fixed-window rate limiting for API servers.
//!
//! # Overview
//!
//! A [`Quota`] is a limit per fixed window ("100 per minute"). Windows are aligned to the unix
//! epoch by default, so every process agrees on when a window starts and ends; a staggered
//! [`Alignment`] spreads keys' resets across the window instead. A limiter enforces one or more
//! quotas per key, all or nothing, and answers every request with a [`Decision`] that maps
//! straight onto the `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` and
//! `Retry-After` headers.
//!
//! - [`RateLimiter`] is the one interface every backend implements (async, so networked
//!   backends fit); [`DynRateLimiter`] is its object-safe twin for backends picked at run time.
//! - [`MemoryLimiter`] is the in-process backend: sharded, lock-free per key, exact under
//!   concurrency, bounded in memory without a cleanup task.
//! - `RedisLimiter` (feature `redis`) shares the same semantics across processes through Redis
//!   or Redis Cluster: one atomic script per decision.
//! - [`Clock`] is injected: [`CoarseClock`] (default, a few ns per read), [`SystemClock`], and
//!   [`ManualClock`] for tests, yours included.
//!
//! A denied request is a normal [`Decision`], and consumes nothing. [`Error`] is for a call
//! that cannot be decided: an empty or over-long key, a cost above a limit, a full key cap, a
//! backend that did not answer. [`ConfigError`] is for a quota or a limiter that cannot be
//! built.
//!
//! # Example: limit a request and write its headers
//!
//! ```
//! use ratewindow::{MemoryLimiter, quota};
//!
//! let limiter = MemoryLimiter::new(quota!(100 per minute))?;
//! let decision = limiter.check_sync("api-key-123")?;
//! let status = if decision.is_allowed() { 200 } else { 429 };
//! for (name, value) in decision.headers() {
//!     // e.g. response.headers_mut().insert(HeaderName::from_static(name),
//!     //                                     HeaderValue::from_bytes(value.as_bytes())?);
//!     println!("{name}: {value}");
//! }
//! assert_eq!(status, 200);
//! assert_eq!(decision.remaining(), 99);
//! # Ok::<(), ratewindow::Error>(())
//! ```
//!
//! # Example: several quotas, tested with a manual clock
//!
//! ```
//! use std::time::Duration;
//! use ratewindow::{ManualClock, MemoryLimiter, quota};
//!
//! let clock = ManualClock::at_millis(1_800_000_000_000); // an hour boundary
//! let limiter = MemoryLimiter::builder(quota!(2 per second))
//!     .quota(quota!(3 per hour))
//!     .clock(clock.clone())
//!     .build()?;
//! assert!(limiter.check_sync("k")?.is_allowed());
//! assert!(limiter.check_sync("k")?.is_allowed());
//! assert!(!limiter.check_sync("k")?.is_allowed()); // the per-second quota
//! clock.advance(Duration::from_secs(1));
//! assert!(limiter.check_sync("k")?.is_allowed());
//! let denied = limiter.check_sync("k")?; // the hourly quota now binds
//! assert!(!denied.is_allowed());
//! assert_eq!(denied.retry_after_secs(), Some(3599));
//! # Ok::<(), ratewindow::Error>(())
//! ```
//!
//! # Example: static and run-time backend selection
//!
//! Generic code takes `L: RateLimiter` and costs nothing extra. When the backend comes from
//! configuration, hold an `Arc<dyn DynRateLimiter>`, which is also a `RateLimiter`:
//!
//! ```
//! use std::sync::Arc;
//! use ratewindow::{DynRateLimiter, MemoryLimiter, Quota, RateLimiter};
//!
//! async fn admit(limiter: &impl RateLimiter, key: &str) -> bool {
//!     limiter.check(key).await.is_ok_and(|d| d.is_allowed())
//! }
//!
//! let quota: Quota = "2/1m".parse()?;
//! let fixed = MemoryLimiter::new(quota)?;
//! let chosen: Arc<dyn DynRateLimiter> = Arc::new(MemoryLimiter::new(quota)?);
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! # rt.block_on(async {
//! assert!(admit(&fixed, "k").await);
//! assert!(admit(&chosen, "k").await);
//! # });
//! # Ok::<(), ratewindow::Error>(())
//! ```
//!
//! # Crate features
//!
//! - `redis`: `RedisLimiter`, the Redis and Redis Cluster backend, with its `FailurePolicy` and
//!   `RedisConnection` (one server, or a Cluster with each call routed to its key's master);
//!   `RedisWarning` and `EvictionReport` for a server that may evict counters. Adds the `redis`
//!   crate (with tokio and its connection manager) and `tokio`'s timer, task spawning and async
//!   mutex.
//! - `tls` (implies `redis`): `rediss://` URLs, trusting the system's root certificates, and
//!   `RedisConnection::connect_with_ca` (one server) and `connect_cluster_with_ca` (a cluster) for
//!   a private CA. redis-rs's rustls support, with
//!   rustls on its `ring` provider, installed as the process default at the first `rediss://`
//!   connection unless one already is.
//! - `http`: the `http` module, which writes a [`Decision`] into an `http::HeaderMap` in the
//!   X-RateLimit, IETF `RateLimit`/`RateLimit-Policy` (draft 10) and GitHub styles, and builds
//!   429 response parts. Adds the `http` crate.
//! - `tower` (implies `http`): the `tower` module's `RateLimitLayer`, which rate limits any
//!   tower service of `http` requests (an axum `Router`, ...), answers 429 with problem+json and
//!   writes the headers. Adds `tower-service`, `tower-layer` and `pin-project-lite`.
//! - `tracing`: events on the `ratewindow` target, never with a key: a warning each time Redis
//!   fails to decide and the failure policy answers, and a debug event for each request the
//!   tower layer answers itself. Adds `tracing`.
//!
//! Always-on dependencies: `parking_lot` (shard locks), `foldhash` (shard and table hashing),
//! `siphasher` (fingerprints of keys over 15 bytes) and `libc` (the coarse clock).
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod alignment;
mod clock;
mod decision;
mod error;
mod fixed_window;
pub mod headers;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod key;
mod limiter;
mod memory;
mod name;
mod quota;
#[cfg(feature = "redis")]
mod redis;
mod shadow;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;
mod window;

pub use alignment::Alignment;
pub use clock::{Clock, CoarseClock, DefaultClock, ManualClock, SystemClock};
pub use decision::{DecidedBy, Decision, MAX_QUOTAS, QuotaState};
pub use error::{BackendErrorKind, ConfigError, Error};
pub use key::MAX_KEY_LEN;
pub use limiter::{BoxFuture, DynRateLimiter, RateLimiter};
pub use memory::{MemoryLimiter, MemoryLimiterBuilder};
pub use quota::Quota;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{
    EvictionReport, FailurePolicy, RedisConnection, RedisLimiter, RedisLimiterBuilder,
    RedisWarning, RoundTripSnapshot, RoundTrips, ServerMemory,
};
pub use shadow::Shadow;
