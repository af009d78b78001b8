//! The Redis backend: one atomic script per decision, counters that cannot outlive their
//! window, Redis Cluster.

mod keys;
mod limiter;
mod script;

pub use limiter::{RedisConnection, RedisLimiter, RedisLimiterBuilder, TimeSource};
