//! One test binary for the whole crate: it links once.

mod support;

mod conformance;
#[cfg(feature = "tower")]
#[path = "../examples/server/main.rs"]
#[allow(dead_code)]
mod demo_server;
#[cfg(feature = "redis")]
mod eviction;
#[cfg(feature = "redis")]
mod failover;
#[cfg(feature = "redis")]
mod faults;
mod fuzz;
mod hostile;
#[cfg(feature = "tower")]
mod layer;
mod memory;
#[cfg(feature = "redis")]
mod processes;
mod properties;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "tower")]
mod server;
#[cfg(all(feature = "redis", feature = "tower"))]
mod server_redis;
mod spray;
