//! The Redis backend on one real `redis-server`: the shared conformance table and model,
//! exactness under concurrency, expiry of every key, script reloads, restarts, `FLUSHALL`, the
//! failure policies, the over-limit cache, Redis time and clock skew, errors that never show
//! the key, and counters the limiter did not write.

use std::time::Duration;

use proptest::prelude::*;
use ratewindow::{
    Alignment, BackendErrorKind, Clock, ConfigError, DecidedBy, Error, FailurePolicy, ManualClock,
    Quota, RateLimiter, RedisConnection, RedisLimiter,
};

use super::{Redis, TEST_TIMEOUT, counter, counters, limiter, one_value, ttls};
use crate::support::redis_server::RedisServer;
use crate::support::{Backend, block_on};

const T0_MS: u64 = 1_800_000_000_000;

#[test]
fn redis_backend_passes_the_conformance_table() {
    let server = RedisServer::new();
    crate::conformance::run(&Redis::single(&server));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(96)
    ))]

    #[test]
    fn redis_limiter_matches_the_model(case in crate::properties::any_case()) {
        thread_local!(static SERVER: (RedisServer, Redis) = {
            let server = RedisServer::new();
            let redis = Redis::single(&server);
            (server, redis)
        });
        SERVER.with(|(_, redis)| crate::properties::same_as_model(redis, &case))?;
    }
}

#[test]
fn two_hundred_concurrent_tasks_on_one_key_admit_exactly_the_limit() {
    let server = RedisServer::new();
    let redis = Redis::single(&server);
    let limiter = limiter(
        &redis,
        Quota::per_minute(150).unwrap(),
        ManualClock::at_millis(T0_MS),
    );
    let admitted = block_on(async {
        let calls = (0..200).map(|_| limiter.check("hot"));
        let decisions = futures_join_all(calls).await;
        decisions
            .into_iter()
            .filter(|d| d.as_ref().unwrap().is_allowed())
            .count()
    });
    assert_eq!(admitted, 150);
}

/// What `FLUSHALL` (or a restart without persistence) loses: the counts of the windows in
/// progress, so a key can be admitted its limit again in that window; nothing else. Keys the
/// over-limit cache holds stay denied until their window ends (the cache is local), other keys
/// count from zero, and the new counters have TTLs.
#[test]
fn flushall_loses_the_open_windows_counts_and_nothing_else() {
    let server = RedisServer::new();
    let redis = Redis::single(&server);
    let clock = ManualClock::at_millis(T0_MS);
    let limiter = limiter(&redis, Quota::per_minute(3).unwrap(), clock.clone());
    block_on(async {
        for _ in 0..3 {
            assert!(limiter.check("full").await.unwrap().is_allowed());
        }
        let denied = limiter.check("full").await.unwrap();
        assert!(!denied.is_allowed());
        assert_eq!(limiter.check("part").await.unwrap().remaining(), 2);

        assert!(server.command(&["FLUSHALL"]).contains("OK"));

        // Denied from the local cache until the window ends: never more than the limit here.
        let cached = limiter.check("full").await.unwrap();
        assert_eq!(cached.decided_by(), DecidedBy::OverLimitCache);
        assert!(!cached.is_allowed());
        // The count of "part" is gone: it starts again from zero in the same window.
        let again = limiter.check("part").await.unwrap();
        assert_eq!(again.decided_by(), DecidedBy::Backend);
        assert_eq!(
            again.remaining(),
            2,
            "one unit counted twice in this window"
        );
        assert_eq!(again.window_end_ms(), denied.window_end_ms());
        // The next window is whole again, for both keys.
        clock.advance(Duration::from_millis(denied.window_end_ms() - T0_MS));
        assert_eq!(limiter.check("full").await.unwrap().remaining(), 2);
    });
    let keys = ttls(&server, "test0"); // the first prefix of a fresh `Redis`
    assert_eq!(keys.len(), 2, "{keys:?}");
    for (key, ttl) in keys {
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
}

/// Polls all futures together on this task (the connection multiplexes them).
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let handles: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = handles.iter().map(|_| None).collect();
    let mut handles: Vec<_> = handles.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, output) in handles.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// Regression guard for a bug peers have shipped for years (a counter written without, or
/// losing, its expiry lives forever and blocks its key for good): after every operation every
/// key has a TTL, and one that lost it gets it back at the next touch.
#[test]
fn every_key_has_a_ttl_after_every_operation() {
    let server = RedisServer::new();
    let redis = Redis::single(&server);
    let clock = ManualClock::at_millis(T0_MS + 10_000);
    let quotas = [Quota::per_second(2).unwrap(), Quota::per_minute(3).unwrap()];
    let limiter = redis.limiter(&quotas, Alignment::Epoch, clock.clone());
    let prefix = "test0";
    block_on(async {
        let mut steps = 0;
        for round in 0..6 {
            limiter.check("k").await.unwrap(); // allowed, then denied by the minute quota
            limiter.peek("k").await.unwrap();
            limiter.refund("k", 1).await.unwrap();
            limiter.check_n(&format!("other{round}"), 2).await.unwrap();
            clock.advance(Duration::from_millis(700));
            for (key, ttl) in ttls(&server, prefix) {
                assert!(ttl > 0, "{key} has PTTL {ttl} after round {round}");
                // Never longer than the longest window plus the margin.
                assert!(ttl <= 61_000 + 60_000, "{key} expires in {ttl} ms");
            }
            steps += 1;
        }
        assert_eq!(steps, 6);
        assert!(!ttls(&server, prefix).is_empty());
        // A counter that lost its expiry (restored from a dump, written by hand) keeps its
        // window's count, but cannot block the key for longer: the next window has a counter
        // of its own, created with its expiry.
        let now = clock.now_ms();
        let key = counter(prefix, "k", 60_000, now);
        assert_eq!(server.command(&["PERSIST", &key]).trim(), ":1");
        clock.set_millis((now / 60_000 + 1) * 60_000);
        assert!(limiter.check("k").await.unwrap().is_allowed());
        let next = counter(prefix, "k", 60_000, clock.now_ms());
        let ttl: i64 = one_value(&server.command(&["PTTL", &next]))
            .parse()
            .unwrap();
        assert!(ttl > 0, "PTTL {ttl} of the next window's counter");
    });
}

#[test]
fn the_script_is_reloaded_after_script_flush() {
    let server = RedisServer::new();
    let redis = Redis::single(&server);
    let limiter = limiter(
        &redis,
        Quota::per_minute(3).unwrap(),
        ManualClock::at_millis(T0_MS),
    );
    block_on(async {
        assert_eq!(limiter.check("k").await.unwrap().remaining(), 2);
        assert!(server.command(&["SCRIPT", "FLUSH"]).contains("OK"));
        assert_eq!(limiter.check("k").await.unwrap().remaining(), 1);
    });
}

/// A limiter on `server` whose failure policy is `policy`, with a short timeout.
fn with_policy(
    server: &RedisServer,
    quota: Quota,
    clock: &ManualClock,
    policy: FailurePolicy,
) -> RedisLimiter<ManualClock> {
    let connection = block_on(RedisConnection::connect(&server.url())).expect("connect");
    RedisLimiter::builder(quota)
        .prefix("policy")
        .timeout(Duration::from_millis(500))
        .failure_policy(policy)
        .clock(clock.clone())
        .build(connection)
        .unwrap()
}

/// Checks until the limiter is back on Redis, moving the clock past the breaker's wait each
/// time; the connection manager reconnects by itself.
fn until_back_on_redis(
    limiter: &RedisLimiter<ManualClock>,
    clock: &ManualClock,
) -> ratewindow::Decision {
    for _ in 0..100 {
        clock.advance(Duration::from_millis(300));
        if let Ok(decision) = block_on(limiter.check("k")) {
            if decision.decided_by() == DecidedBy::Backend {
                return decision;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the limiter did not go back to Redis within 5 s");
}

#[test]
fn a_restarted_server_is_used_again_without_a_new_limiter() {
    let mut server = RedisServer::new();
    let clock = ManualClock::at_millis(T0_MS);
    let limiter = with_policy(
        &server,
        Quota::per_hour(3).unwrap(),
        &clock,
        FailurePolicy::ReturnError,
    );
    assert!(block_on(limiter.check("k")).unwrap().is_allowed());
    server.stop();
    let failed = block_on(limiter.check("k")).unwrap_err();
    assert!(
        matches!(
            failed,
            Error::Backend {
                kind: BackendErrorKind::Unavailable | BackendErrorKind::Timeout,
                ..
            }
        ),
        "{failed:?}"
    );
    server.restart();
    // The counts died with the server (it saves nothing).
    assert_eq!(until_back_on_redis(&limiter, &clock).remaining(), 2);
}

#[test]
fn failure_policies_answer_while_redis_is_down_and_redis_takes_over_again() {
    let mut server = RedisServer::new();
    let clock = ManualClock::at_millis(T0_MS);
    let quota = Quota::per_hour(4).unwrap();
    let open = with_policy(&server, quota, &clock, FailurePolicy::FailOpen);
    let closed = with_policy(&server, quota, &clock, FailurePolicy::FailClosed);
    let fallback = with_policy(
        &server,
        quota,
        &clock,
        FailurePolicy::Fallback { instances: 2 },
    );
    for limiter in [&open, &closed, &fallback] {
        assert_eq!(
            block_on(limiter.check("warm")).unwrap().decided_by(),
            DecidedBy::Backend
        );
    }
    server.stop();

    let d = block_on(open.check("k")).unwrap();
    assert!(d.is_allowed());
    assert_eq!(
        (d.decided_by(), d.limit(), d.remaining()),
        (DecidedBy::FailOpen, 4, 3)
    );

    let d = block_on(closed.check("k")).unwrap();
    assert!(!d.is_allowed());
    assert_eq!((d.decided_by(), d.remaining()), (DecidedBy::FailClosed, 0));
    assert!(d.retry_after_secs().is_some());

    // Fallback: a local limiter with half of each limit (two instances share the quota).
    let decisions: Vec<_> = (0..3)
        .map(|_| block_on(fallback.check("k")).unwrap())
        .collect();
    assert!(
        decisions
            .iter()
            .all(|d| d.decided_by() == DecidedBy::Fallback)
    );
    let admitted: Vec<bool> = decisions.iter().map(|d| d.is_allowed()).collect();
    assert_eq!(admitted, [true, true, false]);
    assert_eq!(decisions[0].limit(), 2);

    server.restart();
    for limiter in [&open, &closed, &fallback] {
        let decision = until_back_on_redis(limiter, &clock);
        assert!(decision.is_allowed());
    }
}

/// Commands Redis has executed so far (from `INFO commandstats`).
fn commands_run(server: &RedisServer) -> u64 {
    server
        .command(&["INFO", "commandstats"])
        .lines()
        .filter_map(|line| line.split("calls=").nth(1))
        .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_key_over_its_limit_is_denied_locally_until_its_window_ends() {
    let server = RedisServer::new();
    let redis = Redis::single(&server);
    let clock = ManualClock::at_millis(T0_MS + 15_000);
    let limiter = limiter(&redis, Quota::per_minute(3).unwrap(), clock.clone());
    block_on(async {
        for _ in 0..3 {
            assert_eq!(
                limiter.check("abuser").await.unwrap().decided_by(),
                DecidedBy::Backend
            );
        }
        let before = commands_run(&server);
        for _ in 0..100 {
            let d = limiter.check("abuser").await.unwrap();
            assert!(!d.is_allowed());
            assert_eq!(d.decided_by(), DecidedBy::OverLimitCache);
            assert_eq!(d.retry_after_secs(), Some(45));
        }
        let peeked = limiter.peek("abuser").await.unwrap();
        assert_eq!(peeked.decided_by(), DecidedBy::OverLimitCache);
        // INFO itself is the one command counted in between.
        assert_eq!(
            commands_run(&server) - before,
            1,
            "the cache must not call Redis"
        );
        // Exactly at the window's end the key goes back to Redis, and is admitted.
        clock.advance(Duration::from_millis(44_999));
        assert_eq!(
            limiter.check("abuser").await.unwrap().decided_by(),
            DecidedBy::OverLimitCache
        );
        clock.advance(Duration::from_millis(1));
        let d = limiter.check("abuser").await.unwrap();
        assert!(d.is_allowed());
        assert_eq!(d.decided_by(), DecidedBy::Backend);
        // A refund or a reset through the limiter clears the cache at once.
        limiter.check_n("abuser", 2).await.unwrap();
        assert_eq!(
            limiter.check("abuser").await.unwrap().decided_by(),
            DecidedBy::OverLimitCache
        );
        limiter.refund("abuser", 1).await.unwrap();
        assert!(limiter.check("abuser").await.unwrap().is_allowed());
        limiter.clear("abuser").await.unwrap();
        assert_eq!(limiter.check("abuser").await.unwrap().remaining(), 2);
    });
}

/// Under `redis_time` a decision's time is Redis's: a release names its counters by that time,
/// not by the local clock (here at the epoch, a whole era away).
#[test]
fn a_release_under_redis_time_gives_back_in_the_window_redis_decided() {
    let server = RedisServer::new();
    let redis = Redis::single(&server);
    let limiter = RedisLimiter::builder(Quota::per_day(10).unwrap())
        .prefix("released")
        .timeout(TEST_TIMEOUT)
        .clock(ManualClock::at_millis(0))
        .redis_time()
        .build(redis.connection.clone())
        .unwrap();
    block_on(async {
        let reserved = limiter.check_n("k", 3).await.unwrap();
        assert_eq!(reserved.remaining(), 7);
        limiter.release("k", 2, &reserved).await.unwrap();
        assert_eq!(limiter.peek("k").await.unwrap().remaining(), 8);
    });
}

#[test]
fn redis_time_makes_skewed_processes_agree_on_windows() {
    let server = RedisServer::new();
    let redis = Redis::single(&server);
    let quota = Quota::per_minute(4).unwrap();
    // Two processes sharing a prefix: one clock an hour fast, one at the epoch. With Redis's
    // time both see the server's window and share one count.
    let connection = redis.connection.clone();
    let make = |clock: ManualClock| {
        RedisLimiter::builder(quota)
            .prefix("shared")
            .timeout(TEST_TIMEOUT)
            .clock(clock)
            .redis_time()
            .build(connection.clone())
            .unwrap()
    };
    let fast = make(ManualClock::at_millis(T0_MS + 3_600_000));
    let slow = make(ManualClock::at_millis(0));
    let server_ms = |server: &RedisServer| {
        let time = server.command(&["TIME"]);
        let secs: u64 = time.lines().find_map(|l| l.parse().ok()).unwrap();
        secs * 1000
    };
    block_on(async {
        let before = server_ms(&server);
        let a = fast.check("k").await.unwrap();
        let b = slow.check("k").await.unwrap();
        let after = server_ms(&server) + 1000;
        assert_eq!(b.remaining(), 2, "both processes count in one window");
        assert!(
            a.window_end_ms() == b.window_end_ms()
                || a.window_end_ms() + 60_000 == b.window_end_ms()
        );
        assert!(
            a.decided_at_ms() >= before && a.decided_at_ms() <= after,
            "decided at Redis time"
        );
        assert_eq!(b.window_end_ms() % 60_000, 0);
        assert!(
            b.window_end_ms() > b.decided_at_ms()
                && b.window_end_ms() - b.decided_at_ms() <= 60_000
        );
    });
    // With their own clocks the same two processes would count in different windows.
    let local = |clock: ManualClock| redis.limiter(&[quota], Alignment::Epoch, clock);
    let (fast, slow) = (
        local(ManualClock::at_millis(T0_MS + 3_600_000)),
        local(ManualClock::at_millis(T0_MS)),
    );
    block_on(async {
        assert_ne!(
            fast.check("k").await.unwrap().window_end_ms(),
            slow.check("k").await.unwrap().window_end_ms()
        );
    });
}

/// A backend error never carries the API key (or the Redis key built from it) in its text,
/// whatever Redis answered: here a tenant's Redis key holds a list, so the script fails on it.
#[test]
fn backend_errors_never_show_the_key() {
    let server = RedisServer::new();
    let clock = ManualClock::at_millis(T0_MS);
    let limiter = with_policy(
        &server,
        Quota::per_minute(5).unwrap(),
        &clock,
        FailurePolicy::ReturnError,
    );
    let key = "tenant-secret-7f3a";
    server.command(&["RPUSH", &counter("policy", key, 60_000, T0_MS), "x"]);
    let error = block_on(limiter.check(key)).expect_err("the script fails on a list");
    let text = format!("{error} {error:?}");
    assert!(matches!(error, Error::Backend { .. }), "{text}");
    assert!(!text.contains(key), "{text}");
    // Another tenant is decided by Redis as usual once the breaker lets calls through again.
    clock.advance(Duration::from_secs(1));
    let other = block_on(limiter.check("tenant-b")).unwrap();
    assert_eq!(other.decided_by(), DecidedBy::Backend);
}

/// A server that stops answering (SIGSTOP: the socket stays open, nothing comes back) must cost
/// each call at most the timeout, and the policy answers.
#[test]
fn a_frozen_server_costs_at_most_the_timeout() {
    let server = RedisServer::new();
    let clock = ManualClock::at_millis(T0_MS);
    let connection = block_on(RedisConnection::connect(&server.url())).expect("connect");
    let limiter = RedisLimiter::builder(Quota::per_minute(10).unwrap())
        .prefix("frozen")
        .timeout(Duration::from_millis(100))
        .failure_policy(FailurePolicy::FailClosed)
        .clock(clock.clone())
        .build(connection)
        .unwrap();
    assert_eq!(
        block_on(limiter.check("k")).unwrap().decided_by(),
        DecidedBy::Backend
    );
    let pid = server.pid().expect("running").to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    let started = std::time::Instant::now();
    let decision = block_on(limiter.check("k")).unwrap();
    let took = started.elapsed();
    signal("-CONT");
    assert_eq!(decision.decided_by(), DecidedBy::FailClosed);
    assert!(!decision.is_allowed());
    // 100 ms timeout; the margin covers a descheduled test thread, not a hang.
    assert!(took < Duration::from_secs(2), "a call took {took:?}");
    // While the breaker is open, calls do not wait for Redis at all.
    let started = std::time::Instant::now();
    assert_eq!(
        block_on(limiter.check("k")).unwrap().decided_by(),
        DecidedBy::FailClosed
    );
    assert!(started.elapsed() < Duration::from_millis(100));
    // Once the server answers again, the limiter goes back to it after the breaker's wait. The
    // call that timed out had reached the server, which ran it on waking: it counts (a late
    // write can only err towards the limit), while the one skipped by the breaker never left.
    let decision = until_back_on_redis(&limiter, &clock);
    assert_eq!(decision.remaining(), 7);
}

/// Regression: a counter expired a fixed second after its window's end on the clock of the
/// process that last wrote it. When that clock was ahead of another process's by more than
/// that, the counter was gone while the process behind was still in its window, and it counted
/// the window again from zero: twice the limit in one window. The expiry now covers the clock
/// skew the limiter is told to allow.
#[test]
fn a_process_behind_by_the_allowed_skew_never_counts_a_window_again() {
    let server = RedisServer::new();
    let redis = Redis::single(&server);
    let quota = Quota::from_millis(2, 10_000).unwrap();
    let skew = Duration::from_millis(1_500);
    // 10 ms before window j ends on the fast clock; the slow one is 1.5 s behind it.
    let window_end = T0_MS + 10_000;
    let fast_ms = window_end - 10;
    let slow_ms = fast_ms - 1_500;
    let (fast_clock, slow_clock) = (
        ManualClock::at_millis(fast_ms),
        ManualClock::at_millis(slow_ms),
    );
    let make = |clock: &ManualClock| {
        RedisLimiter::builder(quota)
            .prefix("shared")
            .timeout(TEST_TIMEOUT)
            .max_clock_skew(skew)
            .over_limit_cache(0)
            .clock(clock.clone())
            .build(redis.connection.clone())
            .unwrap()
    };
    let (fast, slow) = (make(&fast_clock), make(&slow_clock));
    let key = &counter("shared", "k", 10_000, fast_ms);
    let mut admitted = std::collections::BTreeMap::<u64, u64>::new();
    block_on(async {
        let started = std::time::Instant::now();
        for _ in 0..3 {
            let d = fast.check("k").await.unwrap();
            *admitted.entry(d.window_end_ms()).or_default() += u64::from(d.is_allowed());
        }
        // The process behind counts in the window the counter holds.
        let d = slow.check("k").await.unwrap();
        assert_eq!((d.is_allowed(), d.window_end_ms()), (false, window_end));
        // Wait for Redis to drop the counter, then read the slow clock as it would be by then.
        while server.command(&["EXISTS", key]).trim() != ":0" {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{key} never expired"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        slow_clock.advance(started.elapsed());
        let d = slow.check("k").await.unwrap();
        *admitted.entry(d.window_end_ms()).or_default() += u64::from(d.is_allowed());
    });
    assert!(
        admitted.values().all(|&n| n <= quota.limit()),
        "admitted per window end: {admitted:?}"
    );
    let too_wide = RedisLimiter::builder(quota)
        .max_clock_skew(Duration::from_secs(86_401))
        .build(redis.connection.clone());
    assert!(matches!(too_wide, Err(ConfigError::InvalidSetting { .. })));
    assert!(
        slow_clock.now_ms() >= window_end,
        "the counter outlived the window on the slow clock"
    );
}

/// A rolling deploy from the earlier layout (`<prefix>:{<key>}:<window_ms>` holding
/// `"<window index>:<count>"`): counters of the two layouts never share a name, so the new
/// script neither reads an old counter as its own nor fails on its string value, and leaves it
/// to expire by itself.
#[test]
fn counters_of_the_earlier_layout_are_never_read_or_written() {
    let server = RedisServer::new();
    let redis = Redis::single(&server);
    let clock = ManualClock::at_millis(T0_MS + 5_000);
    let old = "up:{k}:60000";
    let index = (T0_MS + 5_000) / 60_000 + 1;
    let full = format!("{index}:3");
    server.command(&["SET", old, &full, "PX", "56000"]);
    let limiter = RedisLimiter::builder(Quota::per_minute(3).unwrap())
        .prefix("up")
        .timeout(TEST_TIMEOUT)
        .failure_policy(FailurePolicy::ReturnError)
        .clock(clock.clone())
        .build(redis.connection.clone())
        .unwrap();
    block_on(async {
        let decision = limiter.peek("k").await.unwrap();
        assert_eq!((decision.is_allowed(), decision.remaining()), (true, 2));
        let decision = limiter.check("k").await.unwrap();
        assert_eq!((decision.is_allowed(), decision.remaining()), (true, 2));
        limiter.refund("k", 1).await.unwrap();
        limiter.clear("k").await.unwrap();
        assert!(limiter.check("k").await.unwrap().is_allowed());
    });
    assert_eq!(one_value(&server.command(&["GET", old])), full);
    let counters = counters(&server, "up:{k}:60000:");
    assert_eq!(counters, [(counter("up", "k", 60_000, T0_MS + 5_000), 1)]);
}

/// Counters under the prefix that the limiter did not write: one set below zero by hand counts
/// as empty (and never makes a decision panic), and a quota whose counter holds another type
/// fails the call with every other quota's charge given back, since Redis keeps a failed
/// script's writes.
#[test]
fn foreign_values_in_counters_neither_panic_nor_leave_a_partial_charge() {
    let server = RedisServer::new();
    let redis = Redis::single(&server);
    let now = T0_MS + 5_000;
    let clock = ManualClock::at_millis(now);
    let make = |quotas: &[Quota]| {
        let mut builder = RedisLimiter::builder(quotas[0])
            .prefix("foreign")
            .timeout(TEST_TIMEOUT)
            .failure_policy(FailurePolicy::ReturnError)
            .over_limit_cache(0)
            .clock(clock.clone());
        for &quota in &quotas[1..] {
            builder = builder.quota(quota);
        }
        builder.build(redis.connection.clone()).unwrap()
    };
    let minute = Quota::per_minute(5).unwrap();
    let below = counter("foreign", "below", 60_000, now);
    server.command(&["SET", &below, "-1", "PX", "60000"]);
    let decision = block_on(make(&[minute]).check("below")).unwrap();
    assert!(decision.is_allowed(), "{decision:?}");
    assert_eq!(decision.remaining(), 4);

    let hour = Quota::per_hour(5).unwrap();
    let listed = counter("foreign", "listed", 3_600_000, now);
    server.command(&["RPUSH", &listed, "x"]);
    let error = block_on(make(&[minute, hour]).check("listed")).unwrap_err();
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    let charged = counter("foreign", "listed", 60_000, now);
    let left = server.command(&["GET", &charged]);
    assert!(
        left.starts_with("$-1") || one_value(&left) == "0",
        "{charged} kept a charge: {left:?}"
    );
}
