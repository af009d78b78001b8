//! `RoundTrips`, the histogram of a limiter's calls to Redis, against real servers: exactly
//! one round trip per call that went to Redis (single server and Cluster), none for answers
//! given without it (the over-limit cache, the failure breaker), failed and timed-out calls
//! recorded, and its Prometheus text read back and checked.

use std::time::Duration;

use ratewindow::{
    BackendErrorKind, DecidedBy, Error, FailurePolicy, ManualClock, Quota, RateLimiter,
    RedisConnection, RedisLimiter, RoundTrips,
};

use super::{TEST_TIMEOUT, cluster_connection, counter};
use crate::support::block_on;
use crate::support::redis_server::{RedisCluster, RedisServer};

/// Ten minutes into an hour, and the start of a minute.
const T0_MS: u64 = 1_800_000_600_000;

const FAMILY: &str = "ratewindow_redis_round_trip_seconds";

/// A `ratewindow_redis_round_trip_seconds` family read back from the text format.
#[derive(Debug)]
pub(crate) struct Histogram {
    /// `(le, cumulative count)`, in the order written.
    pub(crate) buckets: Vec<(String, u64)>,
    /// In seconds.
    pub(crate) sum: f64,
    pub(crate) count: u64,
}

/// Reads the `ratewindow_redis_round_trip_seconds` family out of a Prometheus text exposition
/// (other families may come before or after it), checking it on the way: `# HELP` and
/// `# TYPE ... histogram` first, then every bucket with increasing `le` bounds up to `+Inf` and
/// cumulative (never decreasing) counts, then `_sum` and `_count`, the count equal to the
/// `+Inf` bucket. `None` when the family is not there.
pub(crate) fn parse_histogram(text: &str) -> Option<Histogram> {
    assert!(text.ends_with('\n'), "no final newline");
    let lines: Vec<&str> = text.lines().filter(|line| line.contains(FAMILY)).collect();
    if lines.is_empty() {
        return None;
    }
    let help = format!("# HELP {FAMILY} ");
    assert!(
        lines[0].starts_with(&help) && lines[0].len() > help.len(),
        "{text}"
    );
    assert_eq!(lines[1], format!("# TYPE {FAMILY} histogram"), "{text}");
    let mut buckets = Vec::new();
    let mut rest = &lines[2..];
    let bucket = format!("{FAMILY}_bucket{{le=\"");
    while let Some(line) = rest.first().and_then(|line| line.strip_prefix(&bucket)) {
        let (le, count) = line.split_once("\"} ").expect("a bucket's le and count");
        buckets.push((
            le.to_owned(),
            count.parse::<u64>().expect("an integer count"),
        ));
        rest = &rest[1..];
    }
    assert_eq!(rest.len(), 2, "after the buckets, _sum and _count: {text}");
    let sum = rest[0]
        .strip_prefix(&format!("{FAMILY}_sum "))
        .expect("_sum after the buckets")
        .parse::<f64>()
        .expect("a number of seconds");
    let count = rest[1]
        .strip_prefix(&format!("{FAMILY}_count "))
        .expect("_count last")
        .parse::<u64>()
        .expect("an integer count");

    let (last, bounded) = buckets.split_last().expect("at least the +Inf bucket");
    assert_eq!(last.0, "+Inf", "{text}");
    assert_eq!(last.1, count, "_count is the +Inf bucket: {text}");
    let bounds: Vec<f64> = bounded
        .iter()
        .map(|(le, _)| le.parse().expect("a number of seconds"))
        .collect();
    assert!(bounds.windows(2).all(|b| b[0] < b[1]), "{text}");
    assert!(
        buckets.windows(2).all(|b| b[0].1 <= b[1].1),
        "cumulative counts: {text}"
    );
    assert!(sum >= 0.0, "{text}");
    assert_eq!(count == 0, sum == 0.0, "{text}");
    Some(Histogram {
        buckets,
        sum,
        count,
    })
}

/// The histogram as its Prometheus text says, checked against its snapshot.
fn scrape(round_trips: &RoundTrips) -> Histogram {
    let mut text = String::new();
    round_trips.write_prometheus(&mut text).unwrap();
    let histogram = parse_histogram(&text).expect("the family");
    let snapshot = round_trips.snapshot();
    assert_eq!(histogram.count, snapshot.count);
    assert_eq!(histogram.sum, snapshot.sum.as_secs_f64());
    let cumulative: Vec<u64> = snapshot.cumulative().map(|(_, count)| count).collect();
    let written: Vec<u64> = histogram.buckets.iter().map(|(_, count)| *count).collect();
    assert_eq!(written, cumulative);
    histogram
}

/// A limiter on `connection` recording into `round_trips`, with `policy` and `timeout`, on a
/// manual clock: the failure breaker stays open until the test moves the clock.
fn limiter(
    connection: RedisConnection,
    round_trips: &RoundTrips,
    policy: FailurePolicy,
    timeout: Duration,
) -> RedisLimiter<ManualClock> {
    RedisLimiter::builder(Quota::per_minute(3).unwrap())
        .prefix("round-trips")
        .timeout(timeout)
        .failure_policy(policy)
        .clock(ManualClock::at_millis(T0_MS))
        .round_trips(round_trips.clone())
        .build(connection)
        .unwrap()
}

#[test]
fn round_trips_count_every_call_to_redis_and_no_over_limit_cache_answer() {
    let server = RedisServer::new();
    let connection = block_on(RedisConnection::connect(&server.url())).expect("connect");
    let round_trips = RoundTrips::new();
    let limiter = limiter(
        connection,
        &round_trips,
        FailurePolicy::ReturnError,
        TEST_TIMEOUT,
    );
    assert_eq!(scrape(&round_trips).count, 0);
    block_on(async {
        // Three admitted by Redis, the last of them using up the quota.
        for _ in 0..3 {
            let decision = limiter.check("k").await.unwrap();
            assert_eq!(decision.decided_by(), DecidedBy::Backend);
        }
        let after_redis = scrape(&round_trips);
        assert_eq!(after_redis.count, 3);
        assert!(after_redis.sum > 0.0);

        // Its quota used up: the local cache answers, and Redis is not called.
        for _ in 0..10 {
            let decision = limiter.check("k").await.unwrap();
            assert_eq!(decision.decided_by(), DecidedBy::OverLimitCache);
        }
        let peeked = limiter.peek("k").await.unwrap();
        assert_eq!(peeked.decided_by(), DecidedBy::OverLimitCache);
        let cached = scrape(&round_trips);
        assert_eq!(cached.count, 3);
        assert_eq!(cached.sum, after_redis.sum);

        // Every other operation is a call to Redis: a peek of another key, a refund, a clear.
        limiter.peek("other").await.unwrap();
        limiter.refund("k", 1).await.unwrap();
        limiter.clear("other").await.unwrap();
        assert_eq!(scrape(&round_trips).count, 6);

        // A limiter made by with_quotas records into the same histogram.
        let raised = limiter
            .with_quotas([Quota::per_minute(10).unwrap()])
            .unwrap();
        assert_eq!(
            raised.check("k").await.unwrap().decided_by(),
            DecidedBy::Backend
        );
        let after = scrape(&round_trips);
        assert_eq!(after.count, 7);
        assert!(after.sum > cached.sum);
    });
}

#[test]
fn a_limiter_without_round_trips_records_nothing_in_anothers() {
    let server = RedisServer::new();
    let connection = block_on(RedisConnection::connect(&server.url())).expect("connect");
    let round_trips = RoundTrips::new();
    let recording = limiter(
        connection.clone(),
        &round_trips,
        FailurePolicy::ReturnError,
        TEST_TIMEOUT,
    );
    let silent = RedisLimiter::builder(Quota::per_minute(3).unwrap())
        .prefix("silent")
        .timeout(TEST_TIMEOUT)
        .build(connection)
        .unwrap();
    block_on(async {
        silent.check("k").await.unwrap();
        recording.check("k").await.unwrap();
        silent.check("k").await.unwrap();
    });
    assert_eq!(scrape(&round_trips).count, 1);
}

#[test]
fn a_call_to_a_stopped_server_is_a_round_trip_and_the_breakers_answers_are_not() {
    let mut server = RedisServer::new();
    let connection = block_on(RedisConnection::connect(&server.url())).expect("connect");
    let round_trips = RoundTrips::new();
    let failing = limiter(
        connection.clone(),
        &round_trips,
        FailurePolicy::ReturnError,
        Duration::from_millis(500),
    );
    let open = limiter(
        connection,
        &round_trips,
        FailurePolicy::FailOpen,
        Duration::from_millis(500),
    );
    block_on(async {
        failing.check("k").await.unwrap();
        open.check("k").await.unwrap();
    });
    assert_eq!(scrape(&round_trips).count, 2);
    server.stop();

    block_on(async {
        let error = failing.check("k").await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::Backend {
                    kind: BackendErrorKind::Unavailable | BackendErrorKind::Timeout,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(scrape(&round_trips).count, 3);
        let decision = open.check("k").await.unwrap();
        assert_eq!(decision.decided_by(), DecidedBy::FailOpen);
        assert_eq!(scrape(&round_trips).count, 4);

        // The breakers are open (the manual clocks stand still): the calls skip Redis and
        // record nothing.
        for _ in 0..5 {
            assert!(failing.check("k").await.is_err());
            let decision = open.check("k").await.unwrap();
            assert_eq!(decision.decided_by(), DecidedBy::FailOpen);
        }
        assert_eq!(scrape(&round_trips).count, 4);
    });
}

#[test]
fn a_timed_out_call_is_recorded_with_the_time_it_waited() {
    let server = RedisServer::new();
    let connection = block_on(RedisConnection::connect(&server.url())).expect("connect");
    let round_trips = RoundTrips::new();
    let timeout = Duration::from_millis(100);
    let limiter = limiter(connection, &round_trips, FailurePolicy::FailClosed, timeout);
    assert_eq!(
        block_on(limiter.check("k")).unwrap().decided_by(),
        DecidedBy::Backend
    );
    let before = round_trips.snapshot();
    assert_eq!(before.count, 1);

    // Frozen: the connection stays open and nothing comes back.
    server.signal("-STOP");
    let decision = block_on(limiter.check("k"));
    let skipped = block_on(limiter.check("k"));
    server.signal("-CONT");
    assert_eq!(decision.unwrap().decided_by(), DecidedBy::FailClosed);
    assert_eq!(skipped.unwrap().decided_by(), DecidedBy::FailClosed);

    // One round trip more (the second call was the breaker's), of at least the timeout.
    let after = round_trips.snapshot();
    assert_eq!(after.count, 2);
    assert!(
        after.sum - before.sum >= timeout,
        "{:?}",
        after.sum - before.sum
    );
    let at_most = |snapshot: &ratewindow::RoundTripSnapshot, bound: Duration| {
        snapshot
            .cumulative()
            .find(|&(le, _)| le == Some(bound))
            .map(|(_, count)| count)
            .unwrap()
    };
    // Not in a bucket below the timeout.
    let below = Duration::from_millis(50);
    assert_eq!(at_most(&after, below), at_most(&before, below));
    assert_eq!(scrape(&round_trips).count, 2);
}

#[test]
fn round_trips_on_a_cluster_count_each_call_to_any_master() {
    let mut cluster = RedisCluster::new();
    let round_trips = RoundTrips::new();
    let limiter = limiter(
        cluster_connection(&cluster),
        &round_trips,
        FailurePolicy::FailOpen,
        TEST_TIMEOUT,
    );
    let keys: Vec<String> = (0..30).map(|i| format!("tenant-{i}")).collect();
    block_on(async {
        for key in &keys {
            let decision = limiter.check(key).await.unwrap();
            assert_eq!(decision.decided_by(), DecidedBy::Backend);
        }
    });
    assert_eq!(scrape(&round_trips).count, 30);
    // Every master answered some of them.
    let owners: Vec<usize> = keys
        .iter()
        .map(|key| cluster.owner(&counter("round-trips", key, 60_000, T0_MS)))
        .collect();
    for master in 0..3 {
        assert!(owners.contains(&master), "{owners:?}");
    }

    // One master killed: a call for one of its keys fails (a round trip), after which its
    // slots' breaker answers without Redis; the other masters' keys still go to Redis.
    let dead = owners[0];
    cluster.nodes_mut()[dead].stop();
    let live = keys[owners.iter().position(|&o| o != dead).unwrap()].clone();
    block_on(async {
        let decision = limiter.check(&keys[0]).await.unwrap();
        assert_eq!(decision.decided_by(), DecidedBy::FailOpen);
        assert_eq!(scrape(&round_trips).count, 31);
        let decision = limiter.check(&keys[0]).await.unwrap();
        assert_eq!(decision.decided_by(), DecidedBy::FailOpen);
        assert_eq!(scrape(&round_trips).count, 31);
        let decision = limiter.check(&live).await.unwrap();
        assert_eq!(decision.decided_by(), DecidedBy::Backend);
        assert_eq!(scrape(&round_trips).count, 32);
    });
}
