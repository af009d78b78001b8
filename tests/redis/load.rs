//! The load the fault tests put on a limiter: [`TASKS`] tasks checking shared keys in a loop,
//! each call recorded (its key, when it started, how long it took, what it returned) while a
//! test injects a fault, on one server (`faults.rs`) or on a cluster (`cluster.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ratewindow::{DecidedBy, Error, RateLimiter, RedisLimiter};
use tokio::runtime::Runtime;

use crate::support::Elapsed;

/// Tasks deciding at once during a fault.
const TASKS: usize = 64;
/// Keys the tasks share, so that several tasks race on each key.
pub(super) const KEYS: usize = 8;
/// How long each call may take before the failure policy answers.
pub(super) const TIMEOUT: Duration = Duration::from_millis(100);
/// What a call may take beyond its timeout: a task waiting for one of two busy worker threads
/// on a shared two-core machine, not a hang.
pub(super) const MARGIN: Duration = Duration::from_millis(250);
/// A limiter that is not back on Redis this long after a fault has ended has a bug.
pub(super) const RECOVERY_BOUND: Duration = Duration::from_secs(5);

/// One call made under load.
#[derive(Debug)]
pub(super) struct Call {
    /// Which key: `(key number, epoch)`.
    pub(super) key: (usize, usize),
    /// When it started, from the start of the load.
    pub(super) start: Duration,
    pub(super) took: Duration,
    pub(super) outcome: Result<(DecidedBy, bool), Error>,
}

impl Call {
    pub(super) fn end(&self) -> Duration {
        self.start + self.took
    }

    pub(super) fn by_redis(&self) -> bool {
        matches!(self.outcome, Ok((DecidedBy::Backend, _)))
    }
}

/// [`TASKS`] tasks checking keys in a loop until stopped. Keys carry an epoch that the test
/// moves on once a fault has ended, so that the keys used after it are counted from nothing.
pub(super) struct Load {
    start: Instant,
    stop: Arc<AtomicBool>,
    pub(super) epoch: Arc<AtomicUsize>,
    /// The latest start (ns from `start`) of a call Redis decided.
    last_by_redis_ns: Arc<AtomicU64>,
    /// The same per key number.
    by_redis_per_key: Arc<Vec<AtomicU64>>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Call>>>,
}

impl Load {
    pub(super) fn start(runtime: &Runtime, limiter: &RedisLimiter<Elapsed>) -> Load {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Arc::new(AtomicUsize::new(0));
        let last_by_redis_ns = Arc::new(AtomicU64::new(0));
        let by_redis_per_key: Arc<Vec<AtomicU64>> =
            Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
        let tasks = (0..TASKS)
            .map(|task| {
                let limiter = limiter.clone();
                let (stop, epoch, last) = (stop.clone(), epoch.clone(), last_by_redis_ns.clone());
                let per_key = by_redis_per_key.clone();
                runtime.spawn(async move {
                    let mut calls = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let key = (task % KEYS, epoch.load(Ordering::Relaxed));
                        let name = key_name(key);
                        let started = Instant::now();
                        let outcome = limiter
                            .check(&name)
                            .await
                            .map(|d| (d.decided_by(), d.is_allowed()));
                        let call = Call {
                            key,
                            start: started - start,
                            took: started.elapsed(),
                            outcome,
                        };
                        if call.by_redis() {
                            let start_ns = call.start.as_nanos() as u64;
                            last.fetch_max(start_ns, Ordering::Relaxed);
                            per_key[key.0].fetch_max(start_ns, Ordering::Relaxed);
                        }
                        calls.push(call);
                        // Calls the breaker answers return at once; without a pause the tasks
                        // would only spin.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    calls
                })
            })
            .collect();
        Load {
            start,
            stop,
            epoch,
            last_by_redis_ns,
            by_redis_per_key,
            tasks,
        }
    }

    pub(super) fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Waits until Redis has decided a call that started at or after `since`.
    pub(super) fn wait_for_redis_since(&self, since: Duration) {
        let deadline = Instant::now() + RECOVERY_BOUND;
        while Duration::from_nanos(self.last_by_redis_ns.load(Ordering::Relaxed)) < since {
            assert!(
                Instant::now() < deadline,
                "the limiter did not go back to Redis within {RECOVERY_BOUND:?}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until Redis has decided a call that started at or after `since` for one of the
    /// key numbers `wanted` picks.
    pub(super) fn wait_for_redis_on(&self, wanted: impl Fn(usize) -> bool, since: Duration) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(0..KEYS).any(|k| {
            wanted(k)
                && Duration::from_nanos(self.by_redis_per_key[k].load(Ordering::Relaxed)) >= since
        }) {
            assert!(
                Instant::now() < deadline,
                "those keys never went back to Redis"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the tasks and collects every call; a panicked task fails the test here.
    pub(super) fn finish(self, runtime: &Runtime) -> Vec<Call> {
        self.stop.store(true, Ordering::Relaxed);
        let mut calls = Vec::new();
        for task in self.tasks {
            calls.extend(runtime.block_on(task).expect("no task panicked"));
        }
        calls
    }
}

pub(super) fn key_name((key, epoch): (usize, usize)) -> String {
    format!("k{key}-e{epoch}")
}
