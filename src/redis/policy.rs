//! What a [`RedisLimiter`](crate::RedisLimiter) does when Redis does not answer.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a Redis-backed limiter answers when Redis times out or cannot be reached. The
/// [`Decision`](crate::Decision) says so through [`decided_by`](crate::Decision::decided_by).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Admit the request (the default): an outage of the limiter does not become an outage of
    /// the API.
    #[default]
    FailOpen,
    /// Deny the request: nothing gets through unmetered.
    FailClosed,
    /// Decide with a local in-memory limiter holding the same quotas, each limit divided by
    /// `instances` (the number of processes expected to share the load, at least 1): each
    /// process then admits about its share. Local counts are dropped when Redis is back.
    Fallback {
        /// How many processes share the quotas.
        instances: u64,
    },
    /// Return the [`Error::Backend`](crate::Error::Backend) to the caller.
    ReturnError,
}

/// Remembers a recent failure so that calls do not each wait for a dead server: after a
/// failure, calls go straight to the failure policy until `retry_after_ms` have passed; then the
/// next call tries Redis again, and a success closes the breaker.
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    /// Unix ms before which Redis is not tried; 0 when closed.
    open_until_ms: AtomicU64,
}

impl Breaker {
    /// Whether calls at `now_ms` should skip Redis.
    pub(crate) fn is_open(&self, now_ms: u64) -> bool {
        now_ms < self.open_until_ms.load(Ordering::Relaxed)
    }

    pub(crate) fn trip(&self, now_ms: u64, retry_after_ms: u64) {
        self.open_until_ms
            .store(now_ms.saturating_add(retry_after_ms), Ordering::Relaxed);
    }

    pub(crate) fn close(&self) {
        if self.open_until_ms.load(Ordering::Relaxed) != 0 {
            self.open_until_ms.store(0, Ordering::Relaxed);
        }
    }
}
