//! Tenant isolation: user keys are input, and must never reach another tenant's counters.

use std::time::Duration;

use ratewindow::{
    ConfigError, FailurePolicy, ManualClock, Quota, RateLimiter, RedisConnection, RedisLimiter,
};

use super::{HOUR_MS, Redis, assert_every_key_expires, limiter};
use crate::support::block_on;
use crate::support::redis_server::RedisServer;
use crate::support::{Elapsed, runtime};

const T0_MS: u64 = 1_800_000_000_000;

/// User keys built to collide with, or address, other keys: braces (the hash tag), the
/// escape character, the window suffix, glob characters, control bytes, and other tenants'
/// whole Redis keys.
const HOSTILE_KEYS: &[&str] = &[
    "a",
    "{a}",
    "a}",
    "{a",
    "}a{",
    "a}:x",
    "a}:3600000",
    "a:3600000",
    ":3600000",
    "{}",
    "}{",
    "%",
    "%7Ba%7D",
    "%7Ba%7D%",
    "%257Ba%257D",
    "*",
    "a*",
    "?",
    "[a-z]",
    "\\*",
    "\x01",
    "a\x01",
    "\t",
    "\r\n",
    "a\r\nb",
    "\x1b[0m",
    "\x7f",
    " ",
    "é{",
];

/// For every pair of distinct user keys and prefixes the Redis keys differ, and counting one
/// never charges, resets or addresses another.
#[test]
fn isolation_hostile_keys_and_prefixes_never_share_counters() {
    let runtime = runtime();
    let server = RedisServer::new();
    let connection = runtime
        .block_on(RedisConnection::connect(&server.url()))
        .unwrap();
    // Prefixes sharing a server, one a prefix of another.
    let prefixes = ["iso", "iso:", "iso:a", "isoa", "iso%7B"];
    let limiters: Vec<_> = prefixes
        .iter()
        .map(|prefix| {
            RedisLimiter::builder(Quota::per_hour(1_000).unwrap())
                .prefix(*prefix)
                .timeout(Duration::from_secs(2))
                .failure_policy(FailurePolicy::ReturnError)
                .clock(Elapsed::new())
                .build(connection.clone())
                .unwrap()
        })
        .collect();
    let mut keys: Vec<String> = HOSTILE_KEYS.iter().map(|k| k.to_string()).collect();
    // Every tenant's own Redis key names, given as user keys.
    for prefix in prefixes {
        for key in ["a", "{a}", "*"] {
            keys.push(format!("{prefix}:{{{key}}}:{HOUR_MS}"));
        }
    }
    let cost = |p: usize, k: usize| ((p * keys.len() + k) % 40 + 1) as u64;
    runtime.block_on(async {
        for (p, limiter) in limiters.iter().enumerate() {
            for (k, key) in keys.iter().enumerate() {
                let d = limiter.check_n(key, cost(p, k)).await.unwrap();
                assert_eq!(
                    d.quotas()[0].used(),
                    cost(p, k),
                    "{:?} {key:?}",
                    prefixes[p]
                );
            }
        }
        // One Redis key per prefix and user key: none shared.
        let stored = server.command(&["DBSIZE"]);
        let expected = prefixes.len() * keys.len();
        assert_eq!(stored, format!(":{expected}\r\n"));
        // Each still holds exactly its own charge: one more unit shows it.
        for (p, limiter) in limiters.iter().enumerate() {
            for (k, key) in keys.iter().enumerate() {
                let d = limiter.check(key).await.unwrap();
                assert_eq!(
                    d.quotas()[0].used(),
                    cost(p, k) + 1,
                    "{:?} {key:?}",
                    prefixes[p]
                );
            }
        }
        // Resetting one key resets no other.
        limiters[0].clear("a").await.unwrap();
        for (p, limiter) in limiters.iter().enumerate() {
            for (k, key) in keys.iter().enumerate() {
                let expected = if (p, key.as_str()) == (0, "a") {
                    0
                } else {
                    cost(p, k) + 1
                };
                let d = limiter.peek(key).await.unwrap();
                assert_eq!(
                    d.quotas()[0].used(),
                    expected + 1,
                    "{:?} {key:?}",
                    prefixes[p]
                );
            }
        }
    });
    assert_every_key_expires(&server, "iso");
}

#[test]
fn hostile_keys_and_prefixes() {
    let server = RedisServer::new();
    let redis = Redis::single(&server);
    let limiter = limiter(
        &redis,
        Quota::per_minute(1).unwrap(),
        ManualClock::at_millis(T0_MS),
    );
    block_on(async {
        let long = "é{}:\n".repeat(800); // 4.8 KB
        for key in ["{a}", "a}", "}{", "%7Ba%7D", "a\nb", long.as_str()] {
            assert!(limiter.check(key).await.unwrap().is_allowed(), "{key:?}");
            assert!(!limiter.check(key).await.unwrap().is_allowed(), "{key:?}");
        }
    });
    let bad = RedisLimiter::builder(Quota::per_minute(1).unwrap())
        .prefix("a{b}")
        .build(redis.connection.clone());
    assert!(matches!(bad, Err(ConfigError::InvalidSetting { .. })));
}
