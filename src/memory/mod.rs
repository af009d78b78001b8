//! The in-memory backend: sharded, lock-free per key, bounded in memory.

mod cell;
mod key_id;
mod limiter;
mod shards;

pub use limiter::{MemoryLimiter, MemoryLimiterBuilder};
