//! Behaviour particular to the in-memory backend: exactness under threads, the key cap, sweeping
//! of ended windows, and configuration errors.

use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ratewindow::{Alignment, Error, ManualClock, MemoryLimiter, Quota};

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
                    if limiter.check_n("hot", cost).unwrap().is_allowed() {
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
    assert_eq!(limiter.peek("hot").unwrap().remaining(), 0);
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
    let states = limiter.peek("hot").unwrap();
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

#[test]
fn key_cap_refuses_new_keys_but_keeps_deciding_existing_ones() {
    let clock = ManualClock::at_millis(T0_MS);
    let limiter = MemoryLimiter::builder(Quota::per_minute(2).unwrap())
        .max_keys(10)
        .clock(clock.clone())
        .build()
        .unwrap();
    for i in 0..10 {
        assert!(limiter.check(&format!("user:{i}")).unwrap().is_allowed());
    }
    assert_eq!(
        limiter.check("user:10").unwrap_err(),
        Error::CapacityExhausted { max_keys: 10 }
    );
    // Peeking a new key needs no state, so it works even when full.
    assert_eq!(limiter.peek("user:10").unwrap().remaining(), 1);
    // Existing keys keep their exact counts.
    assert!(limiter.check("user:3").unwrap().is_allowed());
    assert!(!limiter.check("user:3").unwrap().is_allowed());
    assert_eq!(limiter.tracked_keys(), 10);
    // Once their windows end, the old keys are swept and new keys fit again.
    clock.advance(Duration::from_secs(60));
    assert!(limiter.check("user:10").unwrap().is_allowed());
    assert_eq!(limiter.tracked_keys(), 1);
    // A reset frees a slot at once.
    for i in 11..20 {
        limiter.check(&format!("user:{i}")).unwrap();
    }
    assert!(limiter.check("user:99").is_err());
    limiter.reset("user:11").unwrap();
    assert!(limiter.check("user:99").unwrap().is_allowed());
}

#[test]
fn ended_windows_are_swept_without_a_cleanup_task() {
    let clock = ManualClock::at_millis(T0_MS);
    // A cap of 32 × 256 keys splits into 32 shards on any machine of 2 cores or more.
    let limiter = MemoryLimiter::builder(Quota::per_second(5).unwrap())
        .max_keys(32 * 256)
        .clock(clock.clone())
        .build()
        .unwrap();
    // 100 windows of 1 000 fresh keys each: 100 000 keys in all, 1 000 live at a time.
    let mut peak = 0;
    for window in 0..100 {
        for i in 0..1_000 {
            limiter.check(&format!("w{window}:k{i}")).unwrap();
        }
        peak = peak.max(limiter.tracked_keys());
        clock.advance(Duration::from_secs(1));
    }
    // A shard sweeps whenever its table must grow: at three quarters of its slots, which a sweep
    // sets to under four times its live keys (at least 64). So ended keys never outnumber live
    // ones by much: three times the live keys at most, plus a floor of 48 per shard (32).
    assert!(
        peak <= 3 * 1_000 + 32 * 48,
        "ended windows were not swept: peak of {peak} keys"
    );
}

#[test]
fn staggered_windows_are_swept_too() {
    let clock = ManualClock::at_millis(T0_MS);
    let limiter = MemoryLimiter::builder(Quota::per_second(5).unwrap())
        .alignment(Alignment::Staggered)
        .max_keys(500)
        .clock(clock.clone())
        .build()
        .unwrap();
    for window in 0..20 {
        // Without sweeps, the second round would already find the cap of 500 full.
        for i in 0..400 {
            let decision = limiter.check(&format!("w{window}:k{i}")).unwrap();
            assert!(decision.is_allowed());
        }
        assert!(limiter.tracked_keys() <= 500);
        // A staggered key's window can end up to a whole window after the clock's: two windows
        // on, everything from this round has certainly ended.
        clock.advance(Duration::from_secs(2));
    }
}

/// Regression: a sweep dropped a key's ended counter, then a clock reading from before the sweep
/// (the clock stepped back, or a thread read it before another thread swept) found the key
/// absent and counted it from zero in the old window, admitting its limit twice.
#[test]
fn a_key_swept_after_its_window_is_charged_as_of_the_sweep() {
    let clock = ManualClock::at_millis(T0_MS + 30_000);
    let limiter = MemoryLimiter::builder(Quota::per_minute(2).unwrap())
        .max_keys(10)
        .clock(clock.clone())
        .build()
        .unwrap();
    let admitted = |n| {
        (0..n)
            .filter(|_| limiter.check("victim").unwrap().is_allowed())
            .count()
    };
    assert_eq!(admitted(3), 2);
    for i in 0..9 {
        limiter.check(&format!("filler{i}")).unwrap();
    }
    // A minute later the full shard sweeps every ended window, the victim's included.
    clock.advance(Duration::from_secs(60));
    limiter.check("newcomer").unwrap();
    assert_eq!(limiter.tracked_keys(), 1);
    // Back in the first minute, the victim is counted in the sweep's window, not from zero in
    // the first one.
    clock.set_millis(T0_MS + 45_000);
    let decision = limiter.check("victim").unwrap();
    assert_eq!(decision.reset_epoch_secs(), T0_MS / 1000 + 120);
    assert_eq!(admitted(2), 1);
    // That window holds two at most, whenever its requests come.
    clock.set_millis(T0_MS + 100_000);
    assert_eq!(admitted(2), 0);
    // A peek from the past agrees with what a check would do.
    clock.set_millis(T0_MS + 10_000);
    assert_eq!(
        limiter.peek("never-seen").unwrap().reset_epoch_secs(),
        T0_MS / 1000 + 120
    );
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
                    let decision = limiter.check("hot").unwrap();
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
                    let _ = limiter.check(&format!("spray:{round}:{i}"));
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
fn a_full_limiter_recovers_when_windows_end() {
    let clock = ManualClock::at_millis(T0_MS);
    let limiter = MemoryLimiter::builder(Quota::per_minute(5).unwrap())
        .max_keys(100)
        .clock(clock.clone())
        .build()
        .unwrap();
    for i in 0..100 {
        limiter.check(&format!("k{i}")).unwrap();
    }
    for i in 100..1_000 {
        assert!(limiter.check(&format!("k{i}")).is_err());
    }
    clock.advance(Duration::from_secs(60));
    for i in 100..200 {
        assert!(limiter.check(&format!("k{i}")).unwrap().is_allowed());
    }
}

#[test]
fn configuration_errors_are_typed() {
    let minute = Quota::per_minute(10).unwrap();
    let too_many =
        (0..ratewindow::MAX_QUOTAS).fold(MemoryLimiter::builder(minute), |b, _| b.quota(minute));
    assert_eq!(
        too_many.build().unwrap_err(),
        Error::TooManyQuotas {
            count: ratewindow::MAX_QUOTAS + 1
        }
    );
    assert_eq!(
        MemoryLimiter::new(Quota::from_millis(1 << 17, 1).unwrap()).unwrap_err(),
        Error::LimitTooLarge {
            limit: 1 << 17,
            max: (1 << 17) - 1
        }
    );
    assert!(MemoryLimiter::new(Quota::from_millis((1 << 17) - 1, 1).unwrap()).is_ok());
    assert!(MemoryLimiter::new(Quota::per_minute((1 << 33) - 1).unwrap()).is_ok());

    let limiter = MemoryLimiter::builder(minute)
        .quota(Quota::per_hour(100).unwrap())
        .build()
        .unwrap();
    assert_eq!(
        limiter.with_quotas([minute]).unwrap_err(),
        Error::IncompatibleQuotas
    );
    assert_eq!(
        limiter
            .with_quotas([Quota::per_hour(100).unwrap(), minute])
            .unwrap_err(),
        Error::IncompatibleQuotas
    );
    let raised = limiter
        .with_quotas([
            Quota::per_minute(20).unwrap(),
            Quota::per_hour(200).unwrap(),
        ])
        .unwrap();
    assert_eq!(raised.quotas()[1].limit(), 200);
}

#[test]
fn clones_share_counters() {
    let clock = ManualClock::at_millis(T0_MS);
    let limiter = MemoryLimiter::builder(Quota::per_minute(2).unwrap())
        .clock(clock)
        .build()
        .unwrap();
    let clone = limiter.clone();
    limiter.check("k").unwrap();
    clone.check("k").unwrap();
    assert!(!limiter.check("k").unwrap().is_allowed());
}

#[test]
fn a_long_key_costs_no_more_state_than_a_short_one() {
    let clock = ManualClock::at_millis(T0_MS);
    let limiter = MemoryLimiter::builder(Quota::per_minute(1).unwrap())
        .max_keys(3)
        .clock(clock)
        .build()
        .unwrap();
    let long = "x".repeat(ratewindow::MAX_KEY_LEN);
    assert!(limiter.check(&long).unwrap().is_allowed());
    assert!(!limiter.check(&long).unwrap().is_allowed());
    assert_eq!(limiter.tracked_keys(), 1);
}
