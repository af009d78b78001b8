//! The Redis backend: one atomic script per decision, counters that cannot outlive their
//! window, Redis Cluster.

mod breaker;
mod builder;
mod cache;
mod cluster;
mod connection;
mod errors;
mod eviction;
mod keys;
mod limiter;
mod policy;
mod reply;
mod round_trips;
mod script;
#[cfg(feature = "tls")]
mod tls;

pub use builder::RedisLimiterBuilder;
pub use connection::RedisConnection;
pub use eviction::{EvictionReport, RedisWarning, ServerMemory};
pub use limiter::RedisLimiter;
pub use policy::FailurePolicy;
pub use round_trips::{RoundTripSnapshot, RoundTrips};
