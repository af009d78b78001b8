//! Threads on one in-memory limiter: racing on one key they admit exactly the limit, charge
//! several quotas all or nothing, and stay exact while the clock moves and shards sweep; clones
//! share one set of counters.

use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ratewindow::{ManualClock, MemoryLimiter, Quota};

const T0_MS: u64 = 1_800_000_000_000;

/// `threads` threads hammer `key` with `attempts` checks each, starting together; returns how
/// many were admitted.
fn hammer(limiter: &MemoryLimiter<ManualClock>, threads: usize, attempts: usize, cost: u64) -> u64 {
    let admitted = AtomicU64::new(0);
    let start = Barrier::new(threads);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                start.wait();
                for _ in 0..attempts {
                    if limiter.check_n_sync("hot", cost).unwrap().is_allowed() {
                        admitted.fetch_add(cost, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    admitted.into_inner()
}

#[test]
fn threads_on_one_key_admit_exactly_the_limit() {
    let clock = ManualClock::at_millis(T0_MS);
    let limiter = MemoryLimiter::builder(Quota::per_minute(1_000).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap();
    assert_eq!(hammer(&limiter, 8, 500, 1), 1_000);
    assert_eq!(limiter.peek_sync("hot").unwrap().remaining(), 0);
    // The next window admits exactly the limit again.
    clock.advance(Duration::from_secs(60));
    assert_eq!(hammer(&limiter, 8, 500, 1), 1_000);
}

#[test]
fn threads_on_one_key_with_several_quotas_charge_all_or_nothing() {
    let clock = ManualClock::at_millis(T0_MS);
    let limiter = MemoryLimiter::builder(Quota::per_second(700).unwrap())
        .quota(Quota::per_hour(500).unwrap())
        .clock(clock)
        .build()
        .unwrap();
    assert_eq!(hammer(&limiter, 8, 200, 1), 500);
    let states = limiter.peek_sync("hot").unwrap();
    // Had a denied request been charged to the per-second quota, it would show more than 500.
    assert_eq!(states.quotas()[0].used(), 500);
    assert_eq!(states.quotas()[1].used(), 500);
}

#[test]
fn threads_with_costs_never_exceed_the_limit_and_fill_it_when_costs_divide_it() {
    let clock = ManualClock::at_millis(T0_MS);
    let limiter = MemoryLimiter::builder(Quota::per_minute(999).unwrap())
        .clock(clock)
        .build()
        .unwrap();
    assert_eq!(hammer(&limiter, 4, 400, 3), 999);
}

/// Threads hammer one key while another moves the clock across windows and sprays new keys, so
/// that shards sweep under the hammering threads' feet. No window may admit more than its limit.
#[test]
fn windows_stay_exact_while_the_clock_moves_and_shards_sweep() {
    const LIMIT: u64 = 40;
    let clock = ManualClock::at_millis(T0_MS);
    let limiter = MemoryLimiter::builder(Quota::per_second(LIMIT).unwrap())
        .max_keys(300)
        .clock(clock.clone())
        .build()
        .unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let attempts = AtomicU64::new(0);
    let per_window = std::sync::Mutex::new(std::collections::HashMap::<u64, u64>::new());
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                let mut seen = std::collections::HashMap::<u64, u64>::new();
                while !done.load(Ordering::Relaxed) {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    let decision = limiter.check_sync("hot").unwrap();
                    if decision.is_allowed() {
                        *seen.entry(decision.window_end_ms()).or_default() += 1;
                    }
                }
                let mut total = per_window.lock().unwrap();
                for (window, n) in seen {
                    *total.entry(window).or_default() += n;
                }
            });
        }
        s.spawn(|| {
            for round in 0..200 {
                // Let the hammering threads make progress in every quarter window.
                let seen = attempts.load(Ordering::Relaxed);
                while attempts.load(Ordering::Relaxed) < seen + 100 {
                    std::thread::yield_now();
                }
                clock.advance(Duration::from_millis(250));
                for i in 0..40 {
                    let _ = limiter.check_sync(&format!("spray:{round}:{i}"));
                }
            }
            done.store(true, Ordering::Relaxed);
        });
    });
    let per_window = per_window.into_inner().unwrap();
    assert!(
        per_window.len() >= 45,
        "the hammering threads saw only {} windows",
        per_window.len()
    );
    for (window, admitted) in per_window {
        assert!(
            admitted <= LIMIT,
            "window ending {window} admitted {admitted}"
        );
    }
}

#[test]
fn clones_share_counters() {
    let clock = ManualClock::at_millis(T0_MS);
    let limiter = MemoryLimiter::builder(Quota::per_minute(2).unwrap())
        .clock(clock)
        .build()
        .unwrap();
    let clone = limiter.clone();
    limiter.check_sync("k").unwrap();
    clone.check_sync("k").unwrap();
    assert!(!limiter.check_sync("k").unwrap().is_allowed());
}
