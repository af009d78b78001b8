//! Resident memory per key: 1 000 000 keys `user:NNNNNN` in a ratewindow `MemoryLimiter` (one
//! per-minute quota, `max_keys` 2^21) and in governor's `DefaultKeyedRateLimiter<String>`.
//!
//! `cargo run --release --example bytes_per_key` runs each limiter in a child process of its own
//! (`bytes_per_key ratewindow`, `bytes_per_key governor`), so that neither inherits the other's
//! heap, and prints the `VmRSS` growth per key of each plus the ratio. Each child also reports
//! the heap bytes still allocated per key (a counting allocator), which does not depend on how
//! the allocator returns pages to the kernel.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use governor::{DefaultKeyedRateLimiter, Quota as GovernorQuota, RateLimiter};
use ratewindow::{MemoryLimiter, Quota};

const KEYS: usize = 1_000_000;

/// The system allocator, counting live bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to `System` unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// `VmRSS` of this process, in bytes.
fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

/// Inserts the keys through `insert`, then prints `rss_per_key heap_per_key keys_held` (the
/// last from `held`, once the keys are in).
fn measure(insert: impl Fn(&String), held: impl Fn() -> usize) {
    let mut key = String::with_capacity(16);
    let (rss_before, heap_before) = (rss_bytes(), LIVE.load(Ordering::Relaxed));
    for i in 0..KEYS {
        key.clear();
        write!(key, "user:{i:06}").expect("write to String");
        insert(&key);
    }
    let (rss_after, heap_after) = (rss_bytes(), LIVE.load(Ordering::Relaxed));
    let rss = (rss_after as f64 - rss_before as f64) / KEYS as f64;
    let heap = (heap_after as f64 - heap_before as f64) / KEYS as f64;
    println!("{rss:.1} {heap:.1} {}", held());
}

fn ratewindow() {
    let limiter = MemoryLimiter::builder(Quota::per_minute(1_000).expect("valid quota"))
        .max_keys(1 << 21)
        .build()
        .expect("limit fits");
    measure(
        |key| {
            assert!(
                limiter
                    .check_sync(key)
                    .expect("within the key cap")
                    .is_allowed()
            )
        },
        || limiter.tracked_keys(),
    );
    black_box(limiter);
}

fn governor() {
    let limiter: DefaultKeyedRateLimiter<String> = RateLimiter::keyed(GovernorQuota::per_minute(
        NonZeroU32::new(1_000).expect("nonzero"),
    ));
    // Governor keys by `String` and stores its own copy of each new key.
    measure(
        |key| assert!(limiter.check_key(key).is_ok()),
        || limiter.len(),
    );
    black_box(limiter);
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("ratewindow") => ratewindow(),
        Some("governor") => governor(),
        Some(other) => panic!("unknown subcommand {other:?}: use ratewindow or governor"),
        None => parent(),
    }
}

/// Runs both children and prints the comparison.
fn parent() {
    let exe = std::env::current_exe().expect("own path");
    let run = |which: &str| -> (f64, f64, usize) {
        let output = Command::new(&exe).arg(which).output().expect("spawn child");
        assert!(
            output.status.success(),
            "{which} child failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).expect("UTF-8");
        let mut fields = text.split_whitespace();
        let mut next = || fields.next().expect("three fields");
        (
            next().parse().expect("rss"),
            next().parse().expect("heap"),
            next().parse().expect("tracked"),
        )
    };
    let (rw_rss, rw_heap, rw_keys) = run("ratewindow");
    let (gov_rss, gov_heap, gov_keys) = run("governor");
    println!("{KEYS} keys \"user:NNNNNN\", one per-minute quota, each limiter in its own process");
    println!(
        "{:<11} {:>14} {:>15} {:>10}",
        "limiter", "RSS bytes/key", "heap bytes/key", "keys held"
    );
    println!(
        "{:<11} {rw_rss:>14.1} {rw_heap:>15.1} {rw_keys:>10}",
        "ratewindow"
    );
    println!(
        "{:<11} {gov_rss:>14.1} {gov_heap:>15.1} {gov_keys:>10}",
        "governor"
    );
    println!(
        "ratio ratewindow/governor: RSS {:.3}, heap {:.3}",
        rw_rss / gov_rss,
        rw_heap / gov_heap
    );
}
