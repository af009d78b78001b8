//! Hostile and invalid input: every case gets a typed error or a defined decision, never a
//! panic. Keys of any shape, costs and limits at their extremes, windows as long as allowed,
//! clocks at the epoch, far in the future and stepping back; the demo server's environment.
//!
//! Already covered elsewhere, and not repeated here: empty and over-long (8 KiB + 1) keys,
//! `{a}:b\n` and non-ASCII keys, cost 0 and cost above the limit, a clock at the epoch and at
//! `u64::MAX`, a clock stepping back (`conformance.rs`, for every backend); quota validation
//! and the `100/1m` parser (`src/quota.rs`); `LimitTooLarge` at a packing's edge and too many
//! quotas (`memory/config.rs`); Redis key escaping (`src/redis/keys.rs`).

use std::time::Duration;

use ratewindow::{Alignment, ConfigError, Error, MAX_KEY_LEN, ManualClock, MemoryLimiter, Quota};

const T0_MS: u64 = 1_800_000_000_000;
/// The latest time limiters decide for: 2^46 ms after the epoch, in the year 4199.
const MAX_TIME_MS: u64 = 1 << 46;
/// 9999-12-31T23:59:59.999Z.
const YEAR_9999_MS: u64 = 253_402_300_799_999;

fn limiter(quota: Quota, clock: &ManualClock) -> MemoryLimiter<ManualClock> {
    MemoryLimiter::builder(quota)
        .clock(clock.clone())
        .build()
        .expect("valid limiter")
}

/// Keys that look like escapes, separators, hash tags or nothing at all: each is a key of its
/// own, counted on its own, short and long alike.
pub(crate) fn hostile_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "{",
        "}",
        "{}",
        "{a}",
        "}a{",
        ":",
        "::",
        "a:b",
        "{a}:60000",
        "%",
        "%25",
        "%7B",
        "%7D",
        "%FF",
        "%ff",
        "\\xff",
        "\\x00",
        "\u{ff}",
        "\u{fffd}",
        "\0",
        "\0\0",
        "\n",
        "\r\n",
        "\t",
        "\x1b[2J",
        "\x7f",
        " ",
        "a\0b",
        "a\u{0}",
        "\u{feff}",
        "\u{202e}abc",
    ]
    .map(String::from)
    .to_vec();
    // The same shapes past 15 bytes, where keys are fingerprinted rather than stored.
    let long: Vec<String> = keys
        .iter()
        .map(|k| format!("{k}-padding-past-15"))
        .collect();
    keys.extend(long);
    keys.push("\0".repeat(16));
    keys.push("\0".repeat(17));
    keys
}

#[test]
fn keys_of_any_shape_are_distinct_keys() {
    let clock = ManualClock::at_millis(T0_MS);
    let limiter = limiter(Quota::per_minute(1).unwrap(), &clock);
    let keys = hostile_keys();
    let unique: std::collections::HashSet<&String> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len());
    for key in &keys {
        let first = limiter.check_sync(key).unwrap();
        assert!(first.is_allowed(), "{key:?} shares a counter: {first:?}");
    }
    for key in &keys {
        assert!(!limiter.check_sync(key).unwrap().is_allowed(), "{key:?}");
    }
    assert_eq!(limiter.tracked_keys(), keys.len());
}

#[test]
fn empty_and_oversized_keys_are_typed_errors_for_every_operation() {
    let clock = ManualClock::at_millis(T0_MS);
    let limiter = limiter(Quota::per_minute(5).unwrap(), &clock);
    let megabyte = "k".repeat(1 << 20);
    for (key, error) in [
        ("", Error::EmptyKey),
        (megabyte.as_str(), Error::KeyTooLong { len: 1 << 20 }),
        (
            &megabyte[..MAX_KEY_LEN + 1],
            Error::KeyTooLong {
                len: MAX_KEY_LEN + 1,
            },
        ),
    ] {
        assert_eq!(limiter.check_sync(key).unwrap_err(), error);
        assert_eq!(
            limiter.check_n_sync(key, 0).unwrap_err(),
            error,
            "key first"
        );
        assert_eq!(limiter.peek_sync(key).unwrap_err(), error);
        assert_eq!(limiter.clear_sync(key).unwrap_err(), error);
        assert_eq!(limiter.refund_sync(key, 1).unwrap_err(), error);
    }
    assert_eq!(limiter.tracked_keys(), 0);
    // Multi-byte characters count in bytes: 2 731 three-byte characters are 8 193 bytes.
    let wide = "€".repeat(MAX_KEY_LEN / 3 + 1);
    assert_eq!(
        limiter.check_sync(&wide).unwrap_err(),
        Error::KeyTooLong { len: wide.len() }
    );
    assert!(limiter.check_sync(&"€".repeat(MAX_KEY_LEN / 3)).is_ok());
}

#[test]
fn costs_and_refunds_at_their_extremes() {
    let clock = ManualClock::at_millis(T0_MS);
    let limiter = limiter(Quota::per_minute(5).unwrap(), &clock);
    assert_eq!(limiter.check_n_sync("k", 0).unwrap_err(), Error::ZeroCost);
    for cost in [6, u64::MAX / 2, u64::MAX] {
        assert_eq!(
            limiter.check_n_sync("k", cost).unwrap_err(),
            Error::CostExceedsLimit { cost, min_limit: 5 }
        );
    }
    // None of those consumed anything or created state.
    assert_eq!(limiter.tracked_keys(), 0);
    let all = limiter.check_n_sync("k", 5).unwrap();
    assert!(all.is_allowed() && all.remaining() == 0);
    // Refunds of nothing and of everything: never below zero, never above the limit.
    limiter.refund_sync("k", 0).unwrap();
    assert!(!limiter.check_sync("k").unwrap().is_allowed());
    limiter.refund_sync("k", u64::MAX).unwrap();
    assert_eq!(limiter.check_n_sync("k", 5).unwrap().remaining(), 0);
    limiter.refund_sync("never-seen", u64::MAX).unwrap();
    assert_eq!(limiter.tracked_keys(), 1);
}

#[test]
fn limits_and_windows_at_zero_one_and_their_maximum() {
    assert_eq!(Quota::from_millis(0, 1_000), Err(ConfigError::ZeroLimit));
    assert_eq!(Quota::from_millis(1, 0), Err(ConfigError::ZeroWindow));
    assert_eq!(Quota::new(0, Duration::ZERO), Err(ConfigError::ZeroLimit));
    for window_ms in [(1 << 40) + 1, u64::MAX] {
        assert_eq!(
            Quota::from_millis(1, window_ms),
            Err(ConfigError::WindowTooLong { window_ms })
        );
    }
    assert_eq!(
        MemoryLimiter::new(Quota::per_minute(u64::MAX).unwrap()).unwrap_err(),
        ConfigError::LimitTooLarge {
            limit: u64::MAX,
            max: (1 << 33) - 1
        }
    );

    // 1 per 1 ms: every millisecond is a window of its own.
    let clock = ManualClock::at_millis(T0_MS);
    let tiny = limiter(Quota::from_millis(1, 1).unwrap(), &clock);
    assert!(tiny.check_sync("k").unwrap().is_allowed());
    let denied = tiny.check_sync("k").unwrap();
    assert!(!denied.is_allowed());
    assert_eq!(denied.time_to_reset(), Duration::from_millis(1));
    assert_eq!(denied.retry_after_secs(), Some(1));
    clock.advance(Duration::from_millis(1));
    assert!(tiny.check_sync("k").unwrap().is_allowed());

    // The longest window with the largest limit it can count, filled in one request.
    let longest = Quota::MAX_WINDOW;
    let max = match MemoryLimiter::new(Quota::new(u64::MAX, longest).unwrap()) {
        Err(ConfigError::LimitTooLarge { max, .. }) => max,
        other => panic!("{other:?}"),
    };
    assert_eq!(max, (1 << 57) - 1);
    let quota = Quota::new(max, longest).unwrap();
    for now_ms in [0, T0_MS, MAX_TIME_MS] {
        let clock = ManualClock::at_millis(now_ms);
        let huge = limiter(quota, &clock);
        let all = huge.check_n_sync("k", max).unwrap();
        assert!(all.is_allowed() && all.remaining() == 0, "{all:?}");
        let over = huge.check_sync("k").unwrap();
        assert!(!over.is_allowed());
        assert_eq!(over.quotas()[0].used(), max);
        assert!(over.window_end_ms() > now_ms);
        assert!(over.window_end_ms() - now_ms <= 1 << 40);
        assert!(over.retry_after_secs().unwrap() >= 1);
        // Every header is the decimal of the decision's numbers.
        let headers: Vec<(&str, String)> =
            over.headers().map(|(n, v)| (n, v.to_string())).collect();
        assert_eq!(headers[0], ("x-ratelimit-limit", max.to_string()));
    }
}

#[test]
fn key_caps_of_zero_one_and_usize_max() {
    let clock = ManualClock::at_millis(T0_MS);
    for (asked, holds) in [(0, 1), (1, 1), (usize::MAX, 1_000)] {
        let limiter = MemoryLimiter::builder(Quota::per_minute(1).unwrap())
            .max_keys(asked)
            .clock(clock.clone())
            .build()
            .unwrap();
        for i in 0..holds {
            assert!(limiter.check_sync(&format!("k{i}")).unwrap().is_allowed());
        }
        if holds == 1 {
            // A cap of 0 is a cap of 1: one key, and the next one is refused.
            assert_eq!(
                limiter.check_sync("other").unwrap_err(),
                Error::CapacityExhausted { max_keys: 1 }
            );
        }
        assert_eq!(limiter.tracked_keys(), holds);
    }
}

#[test]
fn window_ends_at_the_end_of_time_do_not_overflow() {
    // At the last decidable millisecond, the longest window, staggered by up to a whole
    // window: the end lies past MAX_TIME_MS but well inside u64.
    let clock = ManualClock::at_millis(MAX_TIME_MS);
    for alignment in [Alignment::Epoch, Alignment::Staggered] {
        for quota in [
            Quota::new(3, Quota::MAX_WINDOW).unwrap(),
            Quota::from_millis(3, (1 << 40) - 1).unwrap(),
            Quota::from_millis(3, 1).unwrap(),
            Quota::per_day(3).unwrap(),
        ] {
            let limiter = MemoryLimiter::builder(quota)
                .quota(Quota::from_millis(3, 7).unwrap())
                .alignment(alignment)
                .clock(clock.clone())
                .build()
                .unwrap();
            for key in ["k", "another key", "{}"] {
                let decision = limiter.check_sync(key).unwrap();
                assert!(decision.is_allowed());
                for state in decision.quotas() {
                    let end = state.window_end_ms();
                    assert!(end > MAX_TIME_MS, "{alignment:?} {quota} {key}: {end}");
                    assert!(end - MAX_TIME_MS <= state.window().as_millis() as u64);
                    assert_eq!(state.reset_epoch_secs(), end.div_ceil(1000));
                }
                assert!(limiter.peek_sync(key).is_ok());
                limiter.refund_sync(key, 1).unwrap();
            }
        }
    }
}

#[test]
fn clocks_past_the_supported_range_are_typed_errors_and_lose_nothing() {
    let clock = ManualClock::at_millis(T0_MS);
    let limiter = limiter(Quota::per_hour(2).unwrap(), &clock);
    assert!(limiter.check_sync("k").unwrap().is_allowed());
    for now_ms in [MAX_TIME_MS + 1, YEAR_9999_MS, u64::MAX - 1, u64::MAX] {
        clock.set_millis(now_ms);
        let out_of_range = Error::ClockOutOfRange { now_ms };
        assert_eq!(limiter.check_sync("k").unwrap_err(), out_of_range);
        assert_eq!(limiter.check_sync("new").unwrap_err(), out_of_range);
        assert_eq!(limiter.peek_sync("k").unwrap_err(), out_of_range);
        assert_eq!(limiter.refund_sync("k", 1).unwrap_err(), out_of_range);
    }
    // Back in range, the count made before is intact and nothing else was stored.
    clock.set_millis(T0_MS + 1);
    assert_eq!(limiter.tracked_keys(), 1);
    assert_eq!(limiter.check_sync("k").unwrap().remaining(), 0);
    // Reset needs no clock.
    clock.set_millis(u64::MAX);
    limiter.clear_sync("k").unwrap();
    assert_eq!(limiter.tracked_keys(), 0);
}

#[test]
fn a_clock_at_the_epoch_and_stepping_back_from_the_end_of_time() {
    let clock = ManualClock::at_millis(0);
    for alignment in [Alignment::Epoch, Alignment::Staggered] {
        let limiter = MemoryLimiter::builder(Quota::per_second(2).unwrap())
            .quota(Quota::from_millis(3, 1).unwrap())
            .alignment(alignment)
            .clock(clock.clone())
            .build()
            .unwrap();
        clock.set_millis(0);
        let first = limiter.check_n_sync("k", 2).unwrap();
        assert!(first.is_allowed());
        assert!(first.window_end_ms() <= 1_000);
        // The last decidable millisecond, then all the way back to the epoch: the key stays
        // charged in the latest window it was counted in, so the epoch admits nothing extra.
        clock.set_millis(MAX_TIME_MS);
        assert!(limiter.check_n_sync("k", 2).unwrap().is_allowed());
        clock.set_millis(0);
        let back = limiter.check_sync("k").unwrap();
        assert!(!back.is_allowed(), "{alignment:?}: {back:?}");
        assert!(back.window_end_ms() > MAX_TIME_MS);
        // A retry-after from the epoch to the year 4199: large, but a number, not a panic.
        assert!(back.retry_after_secs().unwrap() >= MAX_TIME_MS / 1000);
        // Stepping back one millisecond at a time across a window boundary admits nothing.
        clock.set_millis(MAX_TIME_MS);
        for step in 0..1_500 {
            clock.set_millis(MAX_TIME_MS - step);
            assert!(!limiter.check_sync("k").unwrap().is_allowed(), "{step}");
        }
    }
}

#[cfg(feature = "redis")]
mod redis {
    //! The same cases, cheaply, against one real `redis-server`.

    use ratewindow::{
        ConfigError, DecidedBy, Error, ManualClock, Quota, RateLimiter, RedisConnection,
        RedisLimiter,
    };

    use super::{MAX_TIME_MS, T0_MS, YEAR_9999_MS, hostile_keys};
    use crate::support::block_on;
    use crate::support::redis_server::RedisServer;

    fn limiter(
        connection: &RedisConnection,
        prefix: &str,
        quota: Quota,
        clock: &ManualClock,
    ) -> Result<RedisLimiter<ManualClock>, ConfigError> {
        RedisLimiter::builder(quota)
            .prefix(prefix)
            .timeout(std::time::Duration::from_secs(5))
            .clock(clock.clone())
            .build(connection.clone())
    }

    #[test]
    fn redis_hostile_input_is_typed_errors_or_distinct_keys() {
        let server = RedisServer::new();
        let connection = block_on(RedisConnection::connect(&server.url())).expect("connect");
        let clock = ManualClock::at_millis(T0_MS);
        let quota = Quota::per_minute(1).unwrap();
        let limiter = limiter(&connection, "hostile", quota, &clock).unwrap();
        block_on(async {
            let keys = hostile_keys();
            for key in &keys {
                assert!(limiter.check(key).await.unwrap().is_allowed(), "{key:?}");
            }
            for key in &keys {
                assert!(!limiter.check(key).await.unwrap().is_allowed(), "{key:?}");
            }
            let megabyte = "k".repeat(1 << 20);
            let too_long = Error::KeyTooLong { len: 1 << 20 };
            assert_eq!(limiter.check(&megabyte).await.unwrap_err(), too_long);
            assert_eq!(limiter.peek("").await.unwrap_err(), Error::EmptyKey);
            assert_eq!(limiter.check_n("k", 0).await.unwrap_err(), Error::ZeroCost);
            assert_eq!(
                limiter.check_n("k", u64::MAX).await.unwrap_err(),
                Error::CostExceedsLimit {
                    cost: u64::MAX,
                    min_limit: 1
                }
            );
            for now_ms in [MAX_TIME_MS + 1, YEAR_9999_MS, u64::MAX] {
                clock.set_millis(now_ms);
                assert_eq!(
                    limiter.check("k").await.unwrap_err(),
                    Error::ClockOutOfRange { now_ms }
                );
            }
            clock.set_millis(0);
            let at_epoch = limiter.check("k").await.unwrap();
            assert_eq!(at_epoch.window_end_ms(), 60_000);
        });
        // One Redis key per user key: none collided, none was written for an error.
        let size = server.command(&["DBSIZE"]);
        assert_eq!(size.trim(), format!(":{}", hostile_keys().len() + 1));
    }

    /// Regression: the script counts in Lua numbers, which are doubles, and limits from 2^53 up
    /// were accepted. With a limit of 2^53 + 1, a count of 2^53 plus one stayed 2^53, so every
    /// later request of cost 1 was admitted and none was counted; at exactly 2^53 a full window
    /// admitted every further request the same way (2^53 + 1 > 2^53 is false in doubles); near
    /// 2^57 a count was stored rounded up, denying units that were left. Such limits are now
    /// refused when building. The over-limit cache is off so that every check reaches Redis.
    #[test]
    fn redis_limits_from_two_to_the_53_are_refused_and_the_largest_counts_exactly() {
        let server = RedisServer::new();
        let connection = block_on(RedisConnection::connect(&server.url())).expect("connect");
        let clock = ManualClock::at_millis(T0_MS);
        for limit in [1 << 53, (1 << 53) + 1, (1 << 57) - 1, u64::MAX] {
            let quota = Quota::per_minute(limit).unwrap();
            assert_eq!(
                limiter(&connection, "big", quota, &clock).unwrap_err(),
                ConfigError::LimitTooLarge {
                    limit,
                    max: (1 << 53) - 1
                }
            );
        }
        let small = limiter(&connection, "big", Quota::per_minute(1).unwrap(), &clock).unwrap();
        assert_eq!(
            small
                .with_quotas([Quota::per_minute(1 << 53).unwrap()])
                .unwrap_err(),
            ConfigError::LimitTooLarge {
                limit: 1 << 53,
                max: (1 << 53) - 1
            }
        );

        let max = (1u64 << 53) - 1;
        let limiter = RedisLimiter::builder(Quota::per_minute(max).unwrap())
            .prefix("big")
            .timeout(std::time::Duration::from_secs(5))
            .over_limit_cache(0)
            .clock(clock.clone())
            .build(connection.clone())
            .unwrap();
        block_on(async {
            let most = limiter.check_n("k", max - 1).await.unwrap();
            assert!(most.is_allowed() && most.remaining() == 1, "{most:?}");
            let last = limiter.check("k").await.unwrap();
            assert!(last.is_allowed() && last.remaining() == 0, "{last:?}");
            for cost in [1, 1, 2, 3] {
                let over = limiter.check_n("k", cost).await.unwrap();
                assert!(!over.is_allowed(), "{over:?}");
                assert_eq!(over.decided_by(), DecidedBy::Backend);
                assert_eq!(over.quotas()[0].used(), max);
            }
        });
    }
}

#[cfg(all(feature = "redis", feature = "tower"))]
mod demo_server {
    //! The demo server's environment: each malformed variable stops it with exit code 1 and a
    //! message naming the variable, before it listens.

    use std::time::Duration;

    use crate::http::server_redis::run_to_exit;

    #[test]
    fn the_example_binary_names_the_variable_it_refuses() {
        let cases: &[(&str, &str, &str)] = &[
            ("RATE_LIMIT", "abc", "expected <limit>/<window>"),
            ("RATE_LIMIT", "", "expected <limit>/<window>"),
            ("RATE_LIMIT", "0/1m", "limit must be at least 1"),
            ("RATE_LIMIT", "100/0s", "window must be at least 1 ms"),
            ("RATE_LIMIT", "100/1x", "unknown window unit"),
            ("RATE_LIMIT", "100/-1m", "unknown window unit"),
            ("RATE_LIMIT", "1e3/1m", "limit is not a whole number"),
            (
                "RATE_LIMIT",
                "100/99999999999999999999d",
                "window count is too large",
            ),
            ("RATE_LIMIT", "100/999999999999d", "longer than the maximum"),
            ("RATE_LIMIT", "200000000000/1ms", "larger than the 131071"),
            ("REDIS_URL", "notaurl", "the Redis URL does not parse"),
            (
                "REDIS_URL",
                "redis://:99999",
                "the Redis URL does not parse",
            ),
            (
                "REDIS_URL",
                "http://127.0.0.1:6379",
                "the Redis URL does not parse",
            ),
            (
                "REDIS_CLUSTER_URLS",
                "redis://127.0.0.1:1,notaurl",
                "the Redis URL does not parse",
            ),
            (
                "REDIS_CLUSTER_URLS",
                "redis://127.0.0.1:1,,",
                "has an empty entry",
            ),
            ("HEADERS", "", "unknown header style \"\""),
            ("HEADERS", "xratelimit+", "unknown header style \"\""),
            ("HEADERS", "ietf-9", "unknown header style \"ietf-9\""),
            ("FAILURE_POLICY", "", "expected open, closed or fallback"),
            (
                "FAILURE_POLICY",
                "fail-open",
                "expected open, closed or fallback",
            ),
            ("FALLBACK_INSTANCES", "0", "a whole number of at least 1"),
            ("REDIS_TIMEOUT_MS", "-5", "a whole number of milliseconds"),
            ("REDIS_TIME", "maybe", "expected 1"),
            ("REDIS_MAX_CLOCK_SKEW_MS", "-5", "at most a day"),
            ("REDIS_MAX_CLOCK_SKEW_MS", "86400001", "at most a day"),
            ("BIND", "nowhere", "expected host:port"),
        ];
        for &(name, value, message) in cases {
            let mut vars = vec![(name, value)];
            if name != "BIND" {
                vars.push(("BIND", "127.0.0.1:0"));
            }
            let (status, stderr) = run_to_exit(&vars, Duration::from_secs(20));
            let shown = format!("{name}={value:?}");
            assert_eq!(status.code(), Some(1), "{shown}: {stderr}");
            assert!(
                stderr.contains(&shown) && stderr.contains(message),
                "{shown} should be named with {message:?}: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{shown}: {stderr}");
            assert!(!stderr.contains("listening on"), "{shown}: {stderr}");
        }
    }
}
