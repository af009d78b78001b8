//! One test binary for the whole crate: it links once.

mod support;

mod conformance;
mod fuzz;
mod hostile;
#[cfg(feature = "tower")]
mod http;
mod memory;
mod properties;
#[cfg(feature = "redis")]
mod redis;
#[cfg(all(feature = "tracing", any(feature = "tower", feature = "redis")))]
mod trace_events;
