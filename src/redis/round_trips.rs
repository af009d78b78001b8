//! [`RoundTrips`]: a histogram of a [`RedisLimiter`](super::RedisLimiter)'s round trips to
//! Redis, and its Prometheus text exposition.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The buckets' upper bounds, with their `le` label values: from a round trip on loopback
/// (about 100 µs) to one as long as any sensible timeout (1 s).
const BOUNDS: [(Duration, &str); BOUNDS_LEN] = [
    (Duration::from_micros(100), "0.0001"),
    (Duration::from_micros(250), "0.00025"),
    (Duration::from_micros(500), "0.0005"),
    (Duration::from_millis(1), "0.001"),
    (Duration::from_micros(2_500), "0.0025"),
    (Duration::from_millis(5), "0.005"),
    (Duration::from_millis(10), "0.01"),
    (Duration::from_millis(25), "0.025"),
    (Duration::from_millis(50), "0.05"),
    (Duration::from_millis(100), "0.1"),
    (Duration::from_millis(250), "0.25"),
    (Duration::from_secs(1), "1"),
];

const BOUNDS_LEN: usize = 12;

/// The buckets: one per bound, and the last for round trips longer than every bound (`+Inf`).
const BUCKETS: usize = BOUNDS_LEN + 1;

/// The bounds in nanoseconds, for [`RoundTrips::record`]'s search.
const BOUNDS_NS: [u64; BOUNDS_LEN] = {
    let mut ns = [0; BOUNDS_LEN];
    let mut i = 0;
    while i < BOUNDS_LEN {
        ns[i] = BOUNDS[i].0.as_nanos() as u64;
        i += 1;
    }
    ns
};

const NAME: &str = "ratewindow_redis_round_trip_seconds";

/// A histogram of the time a [`RedisLimiter`](crate::RedisLimiter)'s calls to Redis take,
/// given to the limiter with
/// [`RedisLimiterBuilder::round_trips`](crate::RedisLimiterBuilder::round_trips).
///
/// # What counts as a round trip
///
/// Each run of the limiter's script in Redis (a check, peek, refund or clear) is one round
/// trip, timed on the monotonic clock ([`std::time::Instant`], not the limiter's
/// [`Clock`](crate::Clock)) from the moment the call is sent until it has its reply or has
/// failed. That includes what the call needed on the way: loading the script again after
/// `NOSCRIPT`, and on a Cluster the redirects and `TRYAGAIN` retries it followed. Failed calls
/// are round trips too, with the time they took:
///
/// - an error from Redis, or a refused or broken connection, when it came;
/// - a call past the limiter's [`timeout`](crate::RedisLimiterBuilder::timeout), with the time
///   it waited (the timeout, or a little more), since that is what the request waited.
///
/// Answers the limiter gives without calling Redis record nothing: denials from the over-limit
/// cache, failure-policy answers while the failure breaker keeps calls off Redis, refusals of
/// an evicting server, invalid keys and costs. A call abandoned by its caller (its future
/// dropped) records nothing either, nor do the limiter's own occasional reads of the server's
/// eviction settings.
///
/// # Cost
///
/// A limiter without a histogram does nothing of this: not even the clock read. With one, a
/// round trip costs two reads of the monotonic clock and two relaxed atomic increments
/// (its bucket and the sum). Clones are cheap and count into the same histogram (an `Arc` of
/// atomics): keep one for the limiter and one to read, and share one between limiters to
/// count their round trips together (`RedisLimiter::with_quotas` keeps it).
///
/// # Metric
///
/// [`write_prometheus`](Self::write_prometheus) writes one histogram family,
/// `ratewindow_redis_round_trip_seconds`: `_bucket{le="..."}` samples with cumulative counts
/// for the upper bounds 100 µs, 250 µs, 500 µs, 1 ms, 2.5 ms, 5 ms, 10 ms, 25 ms, 50 ms,
/// 100 ms, 250 ms, 1 s and `+Inf`, then `_sum` (seconds) and `_count`. A round trip that
/// takes exactly a bound's time is in that bound's bucket (`le`: less than or equal).
///
/// # Example
///
/// ```no_run
/// use ratewindow::{Quota, RateLimiter, RedisConnection, RedisLimiter, RoundTrips};
///
/// # async fn run() -> Result<(), ratewindow::Error> {
/// let round_trips = RoundTrips::new();
/// let connection = RedisConnection::connect("redis://127.0.0.1:6379/").await?;
/// let limiter = RedisLimiter::builder(Quota::per_minute(100)?)
///     .round_trips(round_trips.clone())
///     .build(connection)?;
/// limiter.check("api-key-1").await?;
///
/// // ... later, in a /metrics handler:
/// let mut text = String::new();
/// round_trips.write_prometheus(&mut text).unwrap();
/// assert!(text.contains("ratewindow_redis_round_trip_seconds_count 1\n"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct RoundTrips {
    histogram: Arc<Histogram>,
}

#[derive(Debug, Default)]
struct Histogram {
    /// Round trips per bucket, not cumulative: the count is their sum, so that it always
    /// matches the buckets.
    buckets: [AtomicU64; BUCKETS],
    /// The round trips' total time in nanoseconds (584 years before it wraps).
    sum_ns: AtomicU64,
}

impl RoundTrips {
    /// The upper bounds of the buckets, shortest first; a last bucket, `+Inf`, holds the round
    /// trips longer than every bound.
    pub const BOUNDS: [Duration; 12] = {
        let mut bounds = [Duration::ZERO; BOUNDS_LEN];
        let mut i = 0;
        while i < BOUNDS_LEN {
            bounds[i] = BOUNDS[i].0;
            i += 1;
        }
        bounds
    };

    /// An empty histogram.
    pub fn new() -> RoundTrips {
        RoundTrips::default()
    }

    /// Records one round trip of `elapsed`: what the limiter does for each call to Redis, and
    /// what a caller of its own may do for calls it times itself. It goes into the bucket of
    /// the smallest bound at or above it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratewindow::RoundTrips;
    ///
    /// let round_trips = RoundTrips::new();
    /// round_trips.record(Duration::from_millis(1)); // exactly on a bound: the 1 ms bucket
    /// round_trips.record(Duration::from_secs(3));
    /// let snapshot = round_trips.snapshot();
    /// assert_eq!(snapshot.count, 2);
    /// assert_eq!(snapshot.sum, Duration::from_millis(3_001));
    /// assert_eq!(snapshot.buckets[3], 1); // RoundTrips::BOUNDS[3] is 1 ms
    /// assert_eq!(snapshot.buckets[12], 1); // +Inf
    /// ```
    #[inline]
    pub fn record(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS.partition_point(|&bound| bound < ns);
        let histogram = &*self.histogram;
        histogram.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        histogram.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The histogram as it stands. Each bucket and the sum are read on their own (relaxed): a
    /// snapshot taken while round trips are recorded may count one in a bucket whose time is
    /// not yet in the sum, or the other way round. The count is always the buckets' total.
    pub fn snapshot(&self) -> RoundTripSnapshot {
        let histogram = &*self.histogram;
        let buckets = std::array::from_fn(|i| histogram.buckets[i].load(Ordering::Relaxed));
        RoundTripSnapshot {
            buckets,
            count: buckets.iter().sum(),
            sum: Duration::from_nanos(histogram.sum_ns.load(Ordering::Relaxed)),
        }
    }

    /// Writes the histogram in the Prometheus text exposition format (version 0.0.4, served
    /// as `text/plain; version=0.0.4`), as the family `ratewindow_redis_round_trip_seconds`:
    /// see [Metric](Self#metric). Takes a [`snapshot`](Self::snapshot) and writes it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratewindow::RoundTrips;
    ///
    /// let round_trips = RoundTrips::new();
    /// round_trips.record(Duration::from_micros(300));
    /// let mut text = String::new();
    /// round_trips.write_prometheus(&mut text).unwrap();
    /// assert!(text.starts_with("# HELP ratewindow_redis_round_trip_seconds "));
    /// assert!(text.contains("# TYPE ratewindow_redis_round_trip_seconds histogram\n"));
    /// assert!(text.contains("ratewindow_redis_round_trip_seconds_bucket{le=\"0.00025\"} 0\n"));
    /// assert!(text.contains("ratewindow_redis_round_trip_seconds_bucket{le=\"0.0005\"} 1\n"));
    /// assert!(text.contains("ratewindow_redis_round_trip_seconds_bucket{le=\"+Inf\"} 1\n"));
    /// assert!(text.contains("ratewindow_redis_round_trip_seconds_sum 0.000300000\n"));
    /// assert!(text.ends_with("ratewindow_redis_round_trip_seconds_count 1\n"));
    /// ```
    pub fn write_prometheus<W: fmt::Write + ?Sized>(&self, out: &mut W) -> fmt::Result {
        self.snapshot().write_prometheus(out)
    }
}

/// The counts of a [`RoundTrips`] histogram at one moment: see [`RoundTrips::snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RoundTripSnapshot {
    /// Round trips per bucket, not cumulative: `buckets[i]` for `i` below
    /// `RoundTrips::BOUNDS.len()` counts those that took longer than the bound before
    /// (`RoundTrips::BOUNDS[i - 1]`, or 0) and at most `RoundTrips::BOUNDS[i]`; the last counts
    /// those longer than every bound. [`cumulative`](Self::cumulative) gives Prometheus's
    /// counts.
    pub buckets: [u64; 13],
    /// The round trips recorded: the sum of `buckets`.
    pub count: u64,
    /// Their total time.
    pub sum: Duration,
}

impl RoundTripSnapshot {
    /// Each bucket's upper bound (`None` for `+Inf`) with the round trips that took at most
    /// that long: Prometheus's cumulative `le` counts, the last equal to
    /// [`count`](Self::count).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratewindow::RoundTrips;
    ///
    /// let round_trips = RoundTrips::new();
    /// round_trips.record(Duration::from_micros(100));
    /// round_trips.record(Duration::from_micros(101));
    /// let cumulative: Vec<_> = round_trips.snapshot().cumulative().take(2).collect();
    /// assert_eq!(
    ///     cumulative,
    ///     [
    ///         (Some(Duration::from_micros(100)), 1),
    ///         (Some(Duration::from_micros(250)), 2),
    ///     ]
    /// );
    /// ```
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<Duration>, u64)> + '_ {
        let bounds = RoundTrips::BOUNDS.into_iter().map(Some).chain([None]);
        bounds.zip(&self.buckets).scan(0, |total, (bound, &count)| {
            *total += count;
            Some((bound, *total))
        })
    }

    /// Writes these counts in the Prometheus text exposition format: see
    /// [`RoundTrips::write_prometheus`].
    pub fn write_prometheus<W: fmt::Write + ?Sized>(&self, out: &mut W) -> fmt::Result {
        writeln!(
            out,
            "# HELP {NAME} Round trips of the rate limiter's calls to Redis, failed and timed out \
             ones included."
        )?;
        writeln!(out, "# TYPE {NAME} histogram")?;
        let labels = BOUNDS.iter().map(|&(_, le)| le).chain(["+Inf"]);
        for (le, (_, count)) in labels.zip(self.cumulative()) {
            writeln!(out, "{NAME}_bucket{{le=\"{le}\"}} {count}")?;
        }
        // Exact decimal seconds: no float rounding of the nanoseconds.
        let sum = self.sum;
        writeln!(
            out,
            "{NAME}_sum {}.{:09}",
            sum.as_secs(),
            sum.subsec_nanos()
        )?;
        writeln!(out, "{NAME}_count {}", self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket_of(elapsed: Duration) -> usize {
        let round_trips = RoundTrips::new();
        round_trips.record(elapsed);
        let snapshot = round_trips.snapshot();
        assert_eq!(snapshot.count, 1);
        let buckets: Vec<usize> = (0..BUCKETS).filter(|&i| snapshot.buckets[i] == 1).collect();
        assert_eq!(buckets.len(), 1, "{snapshot:?}");
        buckets[0]
    }

    #[test]
    fn bounds_are_increasing_and_their_labels_are_their_seconds() {
        for pair in RoundTrips::BOUNDS.windows(2) {
            assert!(pair[0] < pair[1], "{pair:?}");
        }
        for (bound, le) in BOUNDS {
            let seconds: f64 = le.parse().unwrap();
            assert_eq!(Duration::from_secs_f64(seconds), bound, "{le}");
        }
    }

    #[test]
    fn a_round_trip_exactly_on_a_bound_is_in_that_bounds_bucket() {
        for (i, bound) in RoundTrips::BOUNDS.into_iter().enumerate() {
            assert_eq!(bucket_of(bound), i, "exactly {bound:?}");
            assert_eq!(
                bucket_of(bound + Duration::from_nanos(1)),
                i + 1,
                "{bound:?}"
            );
            assert_eq!(bucket_of(bound - Duration::from_nanos(1)), i, "{bound:?}");
        }
    }

    #[test]
    fn the_extremes_go_to_the_first_and_the_last_bucket() {
        assert_eq!(bucket_of(Duration::ZERO), 0);
        assert_eq!(bucket_of(Duration::from_nanos(1)), 0);
        assert_eq!(
            bucket_of(Duration::from_secs(1) + Duration::from_nanos(1)),
            12
        );
        assert_eq!(bucket_of(Duration::from_secs(3_600)), 12);
        // Past u64 nanoseconds (584 years) it saturates rather than wraps.
        assert_eq!(bucket_of(Duration::MAX), 12);
    }

    #[test]
    fn prometheus_text_is_cumulative_with_the_count_as_inf() {
        let round_trips = RoundTrips::new();
        for micros in [50, 100, 100, 600, 2_000_000] {
            round_trips.record(Duration::from_micros(micros));
        }
        let mut text = String::new();
        round_trips.write_prometheus(&mut text).unwrap();
        let expected = "\
# HELP ratewindow_redis_round_trip_seconds Round trips of the rate limiter's calls to Redis, failed and timed out ones included.
# TYPE ratewindow_redis_round_trip_seconds histogram
ratewindow_redis_round_trip_seconds_bucket{le=\"0.0001\"} 3
ratewindow_redis_round_trip_seconds_bucket{le=\"0.00025\"} 3
ratewindow_redis_round_trip_seconds_bucket{le=\"0.0005\"} 3
ratewindow_redis_round_trip_seconds_bucket{le=\"0.001\"} 4
ratewindow_redis_round_trip_seconds_bucket{le=\"0.0025\"} 4
ratewindow_redis_round_trip_seconds_bucket{le=\"0.005\"} 4
ratewindow_redis_round_trip_seconds_bucket{le=\"0.01\"} 4
ratewindow_redis_round_trip_seconds_bucket{le=\"0.025\"} 4
ratewindow_redis_round_trip_seconds_bucket{le=\"0.05\"} 4
ratewindow_redis_round_trip_seconds_bucket{le=\"0.1\"} 4
ratewindow_redis_round_trip_seconds_bucket{le=\"0.25\"} 4
ratewindow_redis_round_trip_seconds_bucket{le=\"1\"} 4
ratewindow_redis_round_trip_seconds_bucket{le=\"+Inf\"} 5
ratewindow_redis_round_trip_seconds_sum 2.000850000
ratewindow_redis_round_trip_seconds_count 5
";
        assert_eq!(text, expected);
    }

    #[test]
    fn an_empty_histogram_writes_every_bucket_at_zero() {
        let mut text = String::new();
        RoundTrips::new().write_prometheus(&mut text).unwrap();
        assert_eq!(text.matches("_bucket{").count(), BUCKETS);
        assert!(text.contains("ratewindow_redis_round_trip_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.contains("ratewindow_redis_round_trip_seconds_sum 0.000000000\n"));
        assert!(text.ends_with("ratewindow_redis_round_trip_seconds_count 0\n"));
    }

    #[test]
    fn clones_record_into_the_same_histogram() {
        let round_trips = RoundTrips::new();
        let clone = round_trips.clone();
        clone.record(Duration::from_millis(7));
        let snapshot = round_trips.snapshot();
        assert_eq!(
            (snapshot.count, snapshot.sum),
            (1, Duration::from_millis(7))
        );
        assert_eq!(snapshot.buckets[6], 1);
    }
}
