//! The key cap: when full, new keys are refused with a typed error while known keys keep their
//! exact counts, and there is room again once windows end; a long key costs no more state than
//! a short one. (Ten million keys against the cap, in a process of their own: `spray.rs`.)

use std::time::Duration;

use ratewindow::{Error, ManualClock, MemoryLimiter, Quota};

const T0_MS: u64 = 1_800_000_000_000;

#[test]
fn key_cap_refuses_new_keys_but_keeps_deciding_existing_ones() {
    let clock = ManualClock::at_millis(T0_MS);
    let limiter = MemoryLimiter::builder(Quota::per_minute(2).unwrap())
        .max_keys(10)
        .clock(clock.clone())
        .build()
        .unwrap();
    for i in 0..10 {
        assert!(
            limiter
                .check_sync(&format!("user:{i}"))
                .unwrap()
                .is_allowed()
        );
    }
    assert_eq!(
        limiter.check_sync("user:10").unwrap_err(),
        Error::CapacityExhausted { max_keys: 10 }
    );
    // Peeking a new key needs no state, so it works even when full.
    assert_eq!(limiter.peek_sync("user:10").unwrap().remaining(), 1);
    // Existing keys keep their exact counts.
    assert!(limiter.check_sync("user:3").unwrap().is_allowed());
    assert!(!limiter.check_sync("user:3").unwrap().is_allowed());
    assert_eq!(limiter.tracked_keys(), 10);
    // Once their windows end, the old keys are swept and new keys fit again.
    clock.advance(Duration::from_secs(60));
    assert!(limiter.check_sync("user:10").unwrap().is_allowed());
    assert_eq!(limiter.tracked_keys(), 1);
    // A reset frees a slot at once.
    for i in 11..20 {
        limiter.check_sync(&format!("user:{i}")).unwrap();
    }
    assert!(limiter.check_sync("user:99").is_err());
    limiter.clear_sync("user:11").unwrap();
    assert!(limiter.check_sync("user:99").unwrap().is_allowed());
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
        limiter.check_sync(&format!("k{i}")).unwrap();
    }
    for i in 100..1_000 {
        assert!(limiter.check_sync(&format!("k{i}")).is_err());
    }
    clock.advance(Duration::from_secs(60));
    for i in 100..200 {
        assert!(limiter.check_sync(&format!("k{i}")).unwrap().is_allowed());
    }
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
    assert!(limiter.check_sync(&long).unwrap().is_allowed());
    assert!(!limiter.check_sync(&long).unwrap().is_allowed());
    assert_eq!(limiter.tracked_keys(), 1);
}
