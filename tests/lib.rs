//! One test binary for the whole crate: it links once.

mod support;

mod conformance;
#[path = "../examples/server.rs"]
#[allow(dead_code)]
mod demo_server;
#[cfg(feature = "tower")]
mod layer;
mod memory;
mod properties;
#[cfg(feature = "redis")]
mod redis;
mod server;
#[cfg(feature = "redis")]
mod server_redis;
