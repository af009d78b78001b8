//! Sweeping ended windows without a cleanup task: epoch-aligned and staggered keys alike, with
//! the tracked keys bounded, and a key swept after its window charged as of the sweep.

use std::time::Duration;

use ratewindow::{Alignment, ManualClock, MemoryLimiter, Quota};

const T0_MS: u64 = 1_800_000_000_000;

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
            limiter.check_sync(&format!("w{window}:k{i}")).unwrap();
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
            let decision = limiter.check_sync(&format!("w{window}:k{i}")).unwrap();
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
            .filter(|_| limiter.check_sync("victim").unwrap().is_allowed())
            .count()
    };
    assert_eq!(admitted(3), 2);
    for i in 0..9 {
        limiter.check_sync(&format!("filler{i}")).unwrap();
    }
    // A minute later the full shard sweeps every ended window, the victim's included.
    clock.advance(Duration::from_secs(60));
    limiter.check_sync("newcomer").unwrap();
    assert_eq!(limiter.tracked_keys(), 1);
    // Back in the first minute, the victim is counted in the sweep's window, not from zero in
    // the first one.
    clock.set_millis(T0_MS + 45_000);
    let decision = limiter.check_sync("victim").unwrap();
    assert_eq!(decision.reset_epoch_secs(), T0_MS / 1000 + 120);
    assert_eq!(admitted(2), 1);
    // That window holds two at most, whenever its requests come.
    clock.set_millis(T0_MS + 100_000);
    assert_eq!(admitted(2), 0);
    // A peek from the past agrees with what a check would do.
    clock.set_millis(T0_MS + 10_000);
    assert_eq!(
        limiter.peek_sync("never-seen").unwrap().reset_epoch_secs(),
        T0_MS / 1000 + 120
    );
}
