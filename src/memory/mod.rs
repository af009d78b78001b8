//! The in-memory backend: sharded, lock-free per key, bounded in memory.

mod cell;
#[cfg(ratewindow_dashmap)]
mod dashmap_shards;
mod key_id;
mod limiter;
mod sharding;
#[cfg(not(ratewindow_dashmap))]
mod shards;

// `RUSTFLAGS="--cfg ratewindow_dashmap"` builds the store on dashmap instead, under the name the
// limiter uses, so the two can be measured side by side (BENCHMARKS.md).
#[cfg(ratewindow_dashmap)]
use dashmap_shards as shards;

pub use limiter::{MemoryLimiter, MemoryLimiterBuilder};
