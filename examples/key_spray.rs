//! A key spray against the in-memory limiter's key cap, in a process of its own so that its
//! resident memory is its own: `tests/memory/spray.rs` runs it and checks what it prints.
//!
//! ```sh
//! cargo run --release --example key_spray              # 10 000 000 keys, max_keys 1 000 000
//! cargo run --release --example key_spray -- 2000000 200000
//! ```
//!
//! One per-minute quota, a manual clock. First 1 000 "resident" keys are charged 1 to 5 units
//! each; then `KEYS` unique keys (half of them short, half long enough to be fingerprinted) are
//! sprayed within the same minute, far past `MAX_KEYS`. Every sprayed request must be admitted
//! or refused with `Error::CapacityExhausted`; the resident keys must keep their exact counts
//! throughout; the limiter never tracks more than `MAX_KEYS` keys. A minute later, when every
//! window has ended, half the cap's worth of new keys must all be admitted (sweeping frees the
//! room) and the resident keys start afresh.
//!
//! Prints `name value` lines (sizes in bytes) and exits with status 1 and a message on stderr
//! at the first broken expectation.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ratewindow::{Error, ManualClock, MemoryLimiter, Quota};

const T0_MS: u64 = 1_800_000_000_000;
const LIMIT: u64 = 10;
const RESIDENT: u64 = 1_000;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut number = |default: u64| {
        args.next()
            .map_or(Ok(default), |arg| arg.parse::<u64>().map_err(|_| arg))
    };
    let (keys, max_keys) = match (number(10_000_000), number(1_000_000)) {
        (Ok(keys), Ok(max_keys)) => (keys, max_keys),
        (Err(arg), _) | (_, Err(arg)) => {
            eprintln!("key_spray: {arg:?} is not a number; usage: key_spray [KEYS [MAX_KEYS]]");
            return ExitCode::FAILURE;
        }
    };
    // The resident keys, then half the cap of new keys after the window, must fit.
    if max_keys < 2 * RESIDENT {
        eprintln!("key_spray: MAX_KEYS must be at least {}", 2 * RESIDENT);
        return ExitCode::FAILURE;
    }
    match spray(keys, max_keys) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("key_spray: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Units charged to resident key `i` before the spray.
fn charged(i: u64) -> u64 {
    i % 5 + 1
}

fn spray(keys: u64, max_keys: u64) -> Result<(), String> {
    let started = Instant::now();
    let rss_start = status_kib("VmRSS")?;
    let clock = ManualClock::at_millis(T0_MS);
    let limiter = MemoryLimiter::builder(Quota::per_minute(LIMIT).map_err(|e| e.to_string())?)
        .max_keys(usize::try_from(max_keys).map_err(|_| "MAX_KEYS too large")?)
        .clock(clock.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let rss_empty = status_kib("VmRSS")?;

    let resident = |i: u64| format!("resident:{i}");
    for i in 0..RESIDENT {
        let decision = limiter
            .check_n_sync(&resident(i), charged(i))
            .map_err(|e| format!("resident key {i}: {e}"))?;
        if !decision.is_allowed() {
            return Err(format!("resident key {i} denied: {decision:?}"));
        }
    }
    // Each resident key's count, read back without consuming anything.
    let verify_residents = |when: &str| -> Result<(), String> {
        for i in 0..RESIDENT {
            let peek = limiter.peek_sync(&resident(i)).map_err(|e| e.to_string())?;
            // A peek reports the count as if one more unit were charged.
            if peek.quotas()[0].used() != charged(i) + 1 {
                return Err(format!("{when}: resident key {i} reads {peek:?}"));
            }
        }
        Ok(())
    };

    let (mut admitted, mut refused) = (0u64, 0u64);
    let mut key = String::with_capacity(40);
    let mut full_at = None;
    for i in 0..keys {
        key.clear();
        // Half short keys (stored verbatim), half long ones (fingerprinted).
        let _ = if i % 2 == 0 {
            write!(key, "s{i}")
        } else {
            write!(key, "sprayed-long-key-{i:012}")
        };
        match limiter.check_sync(&key) {
            Ok(decision) if decision.is_allowed() && decision.remaining() == LIMIT - 1 => {
                admitted += 1;
            }
            Err(Error::CapacityExhausted { .. }) => {
                refused += 1;
                if full_at.is_none() {
                    full_at = Some(i);
                }
            }
            other => return Err(format!("sprayed key {key:?}: {other:?}")),
        }
        if i % 1_000_000 == 999_999 {
            verify_residents(&format!("after {} sprayed keys", i + 1))?;
        }
    }
    let tracked = limiter.tracked_keys() as u64;
    let rss_full = status_kib("VmRSS")?;
    let spray_secs = started.elapsed().as_secs_f64();
    if tracked > max_keys {
        return Err(format!(
            "{tracked} keys tracked, above the cap of {max_keys}"
        ));
    }
    verify_residents("after the spray")?;
    // The resident keys are still charged exactly: their remaining units fit, one more does not.
    for i in 0..RESIDENT {
        let rest = limiter.check_n_sync(&resident(i), LIMIT - charged(i));
        if !rest
            .as_ref()
            .is_ok_and(|d| d.is_allowed() && d.remaining() == 0)
        {
            return Err(format!("resident key {i}, its last units: {rest:?}"));
        }
        let over = limiter.check_sync(&resident(i));
        if !over.as_ref().is_ok_and(|d| !d.is_allowed()) {
            return Err(format!("resident key {i}, one unit over: {over:?}"));
        }
    }

    // The minute ends: every window has ended, so sweeps make room for new keys.
    clock.advance(Duration::from_secs(60));
    let after = max_keys / 2;
    for i in 0..after {
        key.clear();
        let _ = write!(key, "after:{i}");
        let decision = limiter.check_sync(&key);
        if !decision.as_ref().is_ok_and(|d| d.is_allowed()) {
            return Err(format!(
                "new key {i} of {after} after the windows ended: {decision:?}"
            ));
        }
    }
    for i in 0..RESIDENT {
        let fresh = limiter.check_sync(&resident(i));
        if !fresh
            .as_ref()
            .is_ok_and(|d| d.is_allowed() && d.remaining() == LIMIT - 1)
        {
            return Err(format!("resident key {i} in a new window: {fresh:?}"));
        }
    }
    let tracked_after = limiter.tracked_keys() as u64;
    if tracked_after > max_keys {
        return Err(format!(
            "{tracked_after} keys tracked after the window, above the cap of {max_keys}"
        ));
    }

    let held = tracked.max(1);
    println!("keys {keys}");
    println!("max_keys {max_keys}");
    println!("admitted {admitted}");
    println!("refused {refused}");
    println!("first_refused_at {}", full_at.unwrap_or(keys));
    println!("tracked {tracked}");
    println!("tracked_after_window {tracked_after}");
    println!("rss_start {}", rss_start * 1024);
    println!("rss_empty_limiter {}", rss_empty * 1024);
    println!("rss_full {}", rss_full * 1024);
    println!("peak_rss {}", status_kib("VmHWM")? * 1024);
    println!(
        "bytes_per_key {:.1}",
        (rss_full.saturating_sub(rss_empty) * 1024) as f64 / held as f64
    );
    println!("spray_secs {spray_secs:.2}");
    println!("total_secs {:.2}", started.elapsed().as_secs_f64());
    Ok(())
}

/// A `kB` field of `/proc/self/status` (`VmRSS`: resident now; `VmHWM`: the peak).
fn status_kib(field: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no {field} in /proc/self/status"))
}
