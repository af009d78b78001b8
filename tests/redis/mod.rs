//! The Redis backend against real `redis-server` processes.

mod backend;
mod eviction;
mod failover;
mod faults;
mod processes;

pub(crate) use backend::{cluster_connection, counter, counters, ttls};
