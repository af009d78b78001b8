//! Test support: a runner for async limiters, the backend abstraction the conformance table
//! runs against, and the naive model the property tests compare with.

pub(crate) mod model;
pub(crate) mod redis_server;
#[cfg(feature = "tls")]
pub(crate) mod tls;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ratewindow::{Alignment, Clock, ManualClock, MemoryLimiter, Quota, RateLimiter};

thread_local! {
    /// One runtime per test thread: connections made in it (e.g. to Redis) keep working across
    /// every `block_on` of that test.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
}

/// A runtime with two workers, like the machine: tasks under load really run in parallel.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Real elapsed time from a fixed unix instant, [`Elapsed::T0_MS`]: a breaker's wait passes as
/// it does in production, while hour-long windows stay where the tests put them.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct Elapsed {
    start: Instant,
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
impl Elapsed {
    /// Ten minutes into an hour: an hour-long window does not end while a test runs.
    pub(crate) const T0_MS: u64 = 1_800_000_600_000;

    pub(crate) fn new() -> Elapsed {
        Elapsed {
            start: Instant::now(),
        }
    }
}

impl Clock for Elapsed {
    fn now_ms(&self) -> u64 {
        Elapsed::T0_MS + self.start.elapsed().as_millis() as u64
    }
}

/// Runs a future to completion on this test thread's runtime.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|runtime| runtime.block_on(future))
}

/// Which counter a backend charges when its clock steps back into an earlier window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepBack {
    /// The latest window the key was counted in keeps its count and is charged (one counter per
    /// key and quota: memory).
    LatestWindow,
    /// The earlier window's own counter, as it was left (one counter per window: Redis).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    OwnWindow,
}

/// A backend under test: makes limiters on fresh state, and limiters that share a previous
/// one's state under new limits.
pub(crate) trait Backend {
    type Limiter: RateLimiter;

    /// What a clock stepping back meets.
    const STEP_BACK: StepBack = StepBack::LatestWindow;

    /// A limiter on fresh state (no key has been seen).
    fn limiter(&self, quotas: &[Quota], alignment: Alignment, clock: ManualClock) -> Self::Limiter;

    /// A limiter that shares `base`'s counters but enforces `quotas` (same windows).
    fn requota(&self, base: &Self::Limiter, quotas: &[Quota]) -> Self::Limiter;

    /// [`requota`](Self::requota) as the plan `name`.
    fn plan(&self, base: &Self::Limiter, name: &str, quotas: &[Quota]) -> Self::Limiter;
}

/// The in-memory backend with its default key cap.
pub(crate) struct Memory;

/// The in-memory backend with one shard of 511 keys, so that a few hundred keys make it sweep.
pub(crate) struct SmallMemory;

impl Backend for Memory {
    type Limiter = MemoryLimiter<ManualClock>;

    fn limiter(&self, quotas: &[Quota], alignment: Alignment, clock: ManualClock) -> Self::Limiter {
        memory(quotas, alignment, clock, 1 << 20)
    }

    fn requota(&self, base: &Self::Limiter, quotas: &[Quota]) -> Self::Limiter {
        base.with_quotas(quotas.iter().copied())
            .expect("same windows")
    }

    fn plan(&self, base: &Self::Limiter, name: &str, quotas: &[Quota]) -> Self::Limiter {
        base.plan(name, quotas.iter().copied())
            .expect("same windows")
    }
}

impl Backend for SmallMemory {
    type Limiter = MemoryLimiter<ManualClock>;

    fn limiter(&self, quotas: &[Quota], alignment: Alignment, clock: ManualClock) -> Self::Limiter {
        memory(quotas, alignment, clock, 511)
    }

    fn requota(&self, base: &Self::Limiter, quotas: &[Quota]) -> Self::Limiter {
        base.with_quotas(quotas.iter().copied())
            .expect("same windows")
    }

    fn plan(&self, base: &Self::Limiter, name: &str, quotas: &[Quota]) -> Self::Limiter {
        base.plan(name, quotas.iter().copied())
            .expect("same windows")
    }
}

fn memory(
    quotas: &[Quota],
    alignment: Alignment,
    clock: ManualClock,
    max_keys: usize,
) -> MemoryLimiter<ManualClock> {
    let mut builder = MemoryLimiter::builder(quotas[0])
        .alignment(alignment)
        .clock(clock)
        .max_keys(max_keys);
    for &quota in &quotas[1..] {
        builder = builder.quota(quota);
    }
    builder.build().expect("valid limiter")
}

/// `target/<profile>/examples/<name>`, next to this test binary's `target/<profile>/deps`, so
/// that `cargo test --release` runs the optimised build. Cargo builds examples for `cargo test`
/// without target filters; `cargo test --test lib` does not. Panics if the binary is missing or
/// older than its source or the library's, rather than testing stale code.
pub(crate) fn example_binary(name: &str, features: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let binary = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let rebuild = format!(
        "build it with `cargo build {features} --example {name}` (plain `cargo test \
         --all-features` builds it too; `cargo test --test lib` does not)"
    );
    let built = std::fs::metadata(&binary)
        .and_then(|meta| meta.modified())
        .unwrap_or_else(|err| {
            panic!(
                "the example binary {} is missing ({err}): {rebuild}",
                binary.display()
            )
        });
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // An example is one file, or a folder of them (the demo server).
    let mut sources = vec![manifest_dir.join(format!("examples/{name}.rs"))];
    collect_rust_files(&manifest_dir.join("examples").join(name), &mut sources);
    collect_rust_files(&manifest_dir.join("src"), &mut sources);
    for source in sources {
        let changed = std::fs::metadata(&source).and_then(|meta| meta.modified());
        if changed.is_ok_and(|changed| changed > built) {
            panic!(
                "the example binary {} is older than {}: {rebuild}",
                binary.display(),
                source.display()
            );
        }
    }
    binary
}

fn collect_rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}
