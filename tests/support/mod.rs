//! Test support: a runner for async limiters, the backend abstraction the conformance table
//! runs against, and the naive model the property tests compare with.

pub(crate) mod model;
pub(crate) mod redis_server;

use std::future::Future;

use ratewindow::{Alignment, ManualClock, MemoryLimiter, Quota, RateLimiter};

thread_local! {
    /// One runtime per test thread: connections made in it (e.g. to Redis) keep working across
    /// every `block_on` of that test.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
}

/// Runs a future to completion on this test thread's runtime.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|runtime| runtime.block_on(future))
}

/// A backend under test: makes limiters on fresh state, and limiters that share a previous
/// one's state under new limits.
pub(crate) trait Backend {
    type Limiter: RateLimiter;

    /// A limiter on fresh state (no key has been seen).
    fn limiter(&self, quotas: &[Quota], alignment: Alignment, clock: ManualClock) -> Self::Limiter;

    /// A limiter that shares `base`'s counters but enforces `quotas` (same windows).
    fn requota(&self, base: &Self::Limiter, quotas: &[Quota]) -> Self::Limiter;
}

/// The in-memory backend with its default key cap.
pub(crate) struct Memory;

/// The in-memory backend with one shard of 511 keys, so that a few hundred keys make it sweep.
pub(crate) struct SmallMemory;

impl Backend for Memory {
    type Limiter = MemoryLimiter<ManualClock>;

    fn limiter(&self, quotas: &[Quota], alignment: Alignment, clock: ManualClock) -> Self::Limiter {
        memory(quotas, alignment, clock, 1 << 20)
    }

    fn requota(&self, base: &Self::Limiter, quotas: &[Quota]) -> Self::Limiter {
        base.with_quotas(quotas.iter().copied())
            .expect("same windows")
    }
}

impl Backend for SmallMemory {
    type Limiter = MemoryLimiter<ManualClock>;

    fn limiter(&self, quotas: &[Quota], alignment: Alignment, clock: ManualClock) -> Self::Limiter {
        memory(quotas, alignment, clock, 511)
    }

    fn requota(&self, base: &Self::Limiter, quotas: &[Quota]) -> Self::Limiter {
        base.with_quotas(quotas.iter().copied())
            .expect("same windows")
    }
}

fn memory(
    quotas: &[Quota],
    alignment: Alignment,
    clock: ManualClock,
    max_keys: usize,
) -> MemoryLimiter<ManualClock> {
    let mut builder = MemoryLimiter::builder(quotas[0])
        .alignment(alignment)
        .clock(clock)
        .max_keys(max_keys);
    for &quota in &quotas[1..] {
        builder = builder.quota(quota);
    }
    builder.build().expect("valid limiter")
}
