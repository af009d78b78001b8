//! What a [`RedisLimiter`](crate::RedisLimiter) does when Redis does not answer.

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
