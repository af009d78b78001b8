//! One decision, ratewindow's `MemoryLimiter::check_sync` against governor's keyed `check_key`, on the
//! same keys in the same group: one hot key, 10k and 1M keys round-robin, 1M keys in a scattered
//! order, the denied path, and two threads on one key or on distinct keys.
//!
//! The module is compiled into two bench binaries (`benches`, with every other bench, and
//! `memory`, alone), so the same calls are measured from two callers the compiler inlines into
//! differently.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Barrier;
use std::thread;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput};
use governor::{DefaultKeyedRateLimiter, Quota as GovernorQuota, RateLimiter};
use ratewindow::{MemoryLimiter, Quota};

/// The largest per-minute limit ratewindow counts (2^33 - 1): the allowed path throughout a run.
const HUGE_RATEWINDOW: u64 = (1 << 33) - 1;
/// Governor's largest limit: its burst is a minute's worth, so it also admits throughout.
const HUGE_GOVERNOR: u32 = u32::MAX;
/// Decisions each thread makes per iteration of the threaded cases.
const BATCH: u64 = 10_000;
const THREADS: usize = 2;
/// Keys per thread in `threads_distinct_keys`.
const KEYS_PER_THREAD: usize = 1_000;

fn ratewindow(limit: u64, max_keys: usize) -> MemoryLimiter {
    MemoryLimiter::builder(Quota::per_minute(limit).expect("valid quota"))
        .max_keys(max_keys)
        .build()
        .expect("limit fits")
}

fn governor(limit: u32) -> DefaultKeyedRateLimiter<String> {
    RateLimiter::keyed(GovernorQuota::per_minute(
        NonZeroU32::new(limit).expect("nonzero"),
    ))
}

/// `user:000000`, `user:000001`, ...
fn keys(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("user:{i:06}")).collect()
}

/// Both limiters with one decision already made for every key, checked to be allowed.
fn populated(keys: &[String], max_keys: usize) -> (MemoryLimiter, DefaultKeyedRateLimiter<String>) {
    let rw = ratewindow(HUGE_RATEWINDOW, max_keys);
    let gov = governor(HUGE_GOVERNOR);
    for key in keys {
        assert!(rw.check_sync(key).expect("within the key cap").is_allowed());
        assert!(gov.check_key(key).is_ok());
    }
    (rw, gov)
}

/// Both limiters still admit a sample of the keys (the measured path was the allowed one).
fn assert_still_allowed(
    rw: &MemoryLimiter,
    gov: &DefaultKeyedRateLimiter<String>,
    keys: &[String],
) {
    for key in keys.iter().step_by((keys.len() / 100).max(1)) {
        assert!(rw.check_sync(key).expect("key exists").is_allowed());
        assert!(gov.check_key(key).is_ok());
    }
}

/// A step through the keys that is prime, so coprime with any key count here: it visits every key
/// once per round, with consecutive calls far apart in memory, as real traffic does.
const SCATTER_STRIDE: usize = 7_919;

/// The keys in the order `SCATTER_STRIDE` visits them.
fn scattered(keys: &[String]) -> Vec<String> {
    (0..keys.len())
        .map(|i| keys[i * SCATTER_STRIDE % keys.len()].clone())
        .collect()
}

/// One decision per iteration, cycling through `keys` in the order given; both limiters were
/// populated in `populate_order` (the order keys first arrived).
fn single_threaded(c: &mut Criterion, name: &str, keys: &[String], max_keys: usize) {
    single_threaded_in(c, name, keys, keys, max_keys)
}

fn single_threaded_in(
    c: &mut Criterion,
    name: &str,
    populate_order: &[String],
    keys: &[String],
    max_keys: usize,
) {
    let (rw, gov) = populated(populate_order, max_keys);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::from_parameter("ratewindow"), |b| {
        let mut i = 0;
        b.iter(|| {
            let key = &keys[i];
            i += 1;
            if i == keys.len() {
                i = 0;
            }
            black_box(rw.check_sync(black_box(key)))
        })
    });
    group.bench_function(BenchmarkId::from_parameter("governor"), |b| {
        let mut i = 0;
        b.iter(|| {
            let key = &keys[i];
            i += 1;
            if i == keys.len() {
                i = 0;
            }
            black_box(gov.check_key(black_box(key)))
        })
    });
    group.finish();
    assert_still_allowed(&rw, &gov, keys);
}

fn denied(c: &mut Criterion) {
    let key = String::from("user:000000");
    let rw = ratewindow(1, 1 << 20);
    let gov = governor(1);
    assert!(rw.check_sync(&key).expect("valid").is_allowed());
    assert!(gov.check_key(&key).is_ok());
    assert!(!rw.check_sync(&key).expect("valid").is_allowed());
    assert!(gov.check_key(&key).is_err());

    let mut group = c.benchmark_group("denied");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::from_parameter("ratewindow"), |b| {
        b.iter(|| black_box(rw.check_sync(black_box(&key))))
    });
    group.bench_function(BenchmarkId::from_parameter("governor"), |b| {
        b.iter(|| black_box(gov.check_key(black_box(&key))))
    });
    group.finish();
}

/// `THREADS` threads, thread `t` cycling through `key_sets[t]`, each making `BATCH` decisions per
/// iteration. Measures wall time from a common start to the last thread's finish; spawning is
/// outside the timed region.
fn parallel(
    b: &mut criterion::Bencher<'_>,
    key_sets: &[Vec<String>],
    decide: impl Fn(&String) + Sync,
) {
    b.iter_custom(|iters| {
        let start_line = Barrier::new(key_sets.len() + 1);
        let finish_line = Barrier::new(key_sets.len() + 1);
        thread::scope(|s| {
            for keys in key_sets {
                let (start_line, finish_line, decide) = (&start_line, &finish_line, &decide);
                s.spawn(move || {
                    start_line.wait();
                    let mut i = 0;
                    for _ in 0..iters * BATCH {
                        decide(&keys[i]);
                        i += 1;
                        if i == keys.len() {
                            i = 0;
                        }
                    }
                    finish_line.wait();
                });
            }
            start_line.wait();
            let start = Instant::now();
            finish_line.wait();
            start.elapsed()
        })
    });
}

fn threaded(c: &mut Criterion, name: &str, key_sets: &[Vec<String>]) {
    let all: Vec<String> = key_sets.concat();
    let (rw, gov) = populated(&all, 1 << 20);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(key_sets.len() as u64 * BATCH));
    group.bench_function(BenchmarkId::from_parameter("ratewindow"), |b| {
        parallel(b, key_sets, |key| {
            let _ = black_box(rw.check_sync(black_box(key)));
        })
    });
    group.bench_function(BenchmarkId::from_parameter("governor"), |b| {
        parallel(b, key_sets, |key| {
            let _ = black_box(gov.check_key(black_box(key)));
        })
    });
    group.finish();
    assert_still_allowed(&rw, &gov, &all);
}

pub(crate) fn bench_all(c: &mut Criterion) {
    single_threaded(c, "hot_key", &keys(0..1), 1 << 20);
    single_threaded(c, "keys_10k", &keys(0..10_000), 1 << 20);
    let million = keys(0..1_000_000);
    single_threaded(c, "keys_1m", &million, 2_000_000);
    single_threaded_in(
        c,
        "keys_1m_scattered",
        &million,
        &scattered(&million),
        2_000_000,
    );
    drop(million);
    denied(c);

    let same: Vec<Vec<String>> = vec![keys(0..1); THREADS];
    threaded(c, "threads_same_key", &same);
    let distinct: Vec<Vec<String>> = (0..THREADS)
        .map(|t| keys(t * KEYS_PER_THREAD..(t + 1) * KEYS_PER_THREAD))
        .collect();
    threaded(c, "threads_distinct_keys", &distinct);
}
