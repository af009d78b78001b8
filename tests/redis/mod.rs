//! The Redis backend against real `redis-server` processes, by subject; the `Backend` the
//! conformance table and the model run on, and what the tests read back from Redis.

mod backend;
mod cluster;
mod eviction;
mod failover;
mod faults;
mod isolation;
mod load;
mod processes;
pub(crate) mod round_trips;
mod security;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ratewindow::{Alignment, ManualClock, Quota, RedisConnection, RedisLimiter};

use crate::support::redis_server::{RedisCluster, RedisServer};
use crate::support::{Backend, StepBack, block_on};

/// Generous: tests run unoptimised on a shared two-core machine.
const TEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The length of the tests' hour-long windows.
const HOUR_MS: u64 = 3_600_000;

/// Limiters on one connection, each on a prefix of its own (fresh state).
pub(crate) struct Redis {
    connection: RedisConnection,
    next_prefix: AtomicU64,
}

impl Redis {
    fn on(connection: RedisConnection) -> Redis {
        Redis {
            connection,
            next_prefix: AtomicU64::new(0),
        }
    }

    fn single(server: &RedisServer) -> Redis {
        Redis::on(block_on(RedisConnection::connect(&server.url())).expect("connect"))
    }

    fn cluster(cluster: &RedisCluster) -> Redis {
        Redis::on(cluster_connection(cluster))
    }

    fn prefix(&self) -> String {
        format!("test{}", self.next_prefix.fetch_add(1, Ordering::Relaxed))
    }
}

/// A connection to every node of `cluster`, reading slot maps within [`TEST_TIMEOUT`].
pub(crate) fn cluster_connection(cluster: &RedisCluster) -> RedisConnection {
    let urls = cluster.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    block_on(RedisConnection::connect_cluster_with_timeout(
        &urls,
        TEST_TIMEOUT,
    ))
    .expect("connect to the cluster")
}

impl Backend for Redis {
    type Limiter = RedisLimiter<ManualClock>;

    const STEP_BACK: StepBack = StepBack::OwnWindow;

    fn limiter(&self, quotas: &[Quota], alignment: Alignment, clock: ManualClock) -> Self::Limiter {
        let mut builder = RedisLimiter::builder(quotas[0])
            .alignment(alignment)
            .prefix(self.prefix())
            .timeout(TEST_TIMEOUT)
            .clock(clock);
        for &quota in &quotas[1..] {
            builder = builder.quota(quota);
        }
        builder
            .build(self.connection.clone())
            .expect("valid limiter")
    }

    fn requota(&self, base: &Self::Limiter, quotas: &[Quota]) -> Self::Limiter {
        base.with_quotas(quotas.iter().copied())
            .expect("same windows")
    }

    fn plan(&self, base: &Self::Limiter, name: &str, quotas: &[Quota]) -> Self::Limiter {
        base.plan(name, quotas.iter().copied())
            .expect("same windows")
    }
}

/// A limiter of one epoch-aligned quota on fresh state.
fn limiter(redis: &Redis, quota: Quota, clock: ManualClock) -> RedisLimiter<ManualClock> {
    redis.limiter(&[quota], Alignment::Epoch, clock)
}

/// Every counter whose name starts with `window` (`<prefix>:{<key>}:<window_ms>:`, one per
/// window), with its count.
pub(crate) fn counters(server: &RedisServer, window: &str) -> Vec<(String, u64)> {
    let keys = server.command(&["KEYS", &format!("{window}*")]);
    keys.lines()
        .filter(|line| line.starts_with(window))
        .map(|key| {
            let value = server.command(&["GET", key]);
            let count = one_value(&value)
                .parse()
                .unwrap_or_else(|_| panic!("{key} holds {value:?}"));
            (key.to_string(), count)
        })
        .collect()
}

/// The name of `key`'s counter (a plain key, epoch-aligned windows) for the window of
/// `window_ms` that holds `now_ms`.
pub(crate) fn counter(prefix: &str, key: &str, window_ms: u64, now_ms: u64) -> String {
    format!("{prefix}:{{{key}}}:{window_ms}:{}", now_ms / window_ms + 1)
}

/// Every key under `prefix` with its remaining time to live in ms (-1: none, -2: gone).
pub(crate) fn ttls(server: &RedisServer, prefix: &str) -> Vec<(String, i64)> {
    let keys = server.command(&["KEYS", &format!("{prefix}:*")]);
    keys.lines()
        .filter(|line| line.starts_with(prefix))
        .map(|key| {
            let ttl = server.command(&["PTTL", key]);
            let ttl = ttl.trim().trim_start_matches(':').parse().unwrap_or(-3);
            (key.to_string(), ttl)
        })
        .collect()
}

/// The bulk string or integer of a one-value RESP reply (`$3\r\nabc\r\n`, `:12\r\n`).
fn one_value(reply: &str) -> &str {
    match reply.strip_prefix(':') {
        Some(integer) => integer.trim_end(),
        None => reply.lines().nth(1).unwrap_or_default(),
    }
}

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
