//! The Redis backend against real `redis-server` processes, by subject, and what the tests read
//! back from Redis.

mod backend;
mod cluster;
mod eviction;
mod failover;
mod faults;
mod isolation;
mod load;
mod processes;
mod security;

pub(crate) use backend::{cluster_connection, counter, counters, ttls};

use crate::support::redis_server::RedisServer;

/// The length of the tests' hour-long windows.
const HOUR_MS: u64 = 3_600_000;

/// The count of every window under `window` (`<prefix>:{<key>}:<window_ms>`, to which each
/// window's counter appends `:<index>`), summed: 0 when there is none.
fn redis_count(server: &RedisServer, window: &str) -> u64 {
    counters(server, &format!("{window}:"))
        .iter()
        .map(|(_, count)| count)
        .sum()
}

/// Every key under `prefix`, each with a TTL that ends within its window plus the margin.
fn assert_every_key_expires(server: &RedisServer, prefix: &str) {
    let reply = server.command(&["KEYS", &format!("{prefix}*")]);
    let keys = bulk_strings(&reply);
    assert!(!keys.is_empty(), "no key under {prefix}");
    for key in keys {
        let ttl = server.command(&["PTTL", key]);
        let ttl: i64 = ttl.trim().trim_start_matches(':').parse().unwrap_or(-3);
        assert!(
            ttl > 0 && ttl as u64 <= HOUR_MS + 1_000,
            "{key} has PTTL {ttl}"
        );
    }
}

/// The bulk strings of an array reply, read by their lengths: keys may hold CR and LF.
fn bulk_strings(reply: &str) -> Vec<&str> {
    let mut rest = reply.split_once("\r\n").map_or("", |(_, rest)| rest);
    let mut out = Vec::new();
    while let Some((len, after)) = rest.strip_prefix('$').and_then(|r| r.split_once("\r\n")) {
        let len: usize = len.parse().expect("a bulk string length");
        out.push(&after[..len]);
        rest = &after[len + 2..];
    }
    out
}
