//! The tower layer and the demo server, end to end.

mod client_ip;
#[path = "../../examples/server/main.rs"]
#[allow(dead_code)]
mod demo_server;
mod layer;
mod metrics;
mod plans;
mod policies;
mod server;
#[cfg(feature = "redis")]
pub(crate) mod server_redis;
mod skip;
