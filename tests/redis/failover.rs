//! Redis Cluster failover under load, on a real cluster of three masters with one replica each
//! (`cluster-node-timeout 1000`, `cluster-require-full-coverage no`): a master is killed
//! (SIGKILL) or frozen (SIGSTOP, as behind a network partition, then SIGCONT once its replica
//! has been promoted, so it comes back as a demoted old master). Throughout, tasks decide keys
//! of every master with a 100 ms timeout and `FailClosed`. The keys of the live masters must
//! never fail, and the lost master's keys must be back on Redis within 1 s of the promotion.
//! `cargo test --all-features failover -- --nocapture` prints the figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ratewindow::{DecidedBy, FailurePolicy, Quota, RateLimiter, RedisConnection, RedisLimiter};
use tokio::runtime::Runtime;

use crate::support::redis_server::RedisCluster;
use crate::support::{Elapsed, runtime};

/// How long a call may take before the failure policy answers.
const TIMEOUT: Duration = Duration::from_millis(100);
/// Keys over the three masters, and tasks deciding them.
const KEYS: usize = 300;
const TASKS: usize = 8;
/// After the promotion, the lost master's keys must be decided by Redis again within this.
const BACK_WITHIN: Duration = Duration::from_secs(1);
/// How long the load goes on once the cluster has settled: well past the bound.
const AFTER: Duration = Duration::from_secs(3);

/// One call: which key, when it started (from the test's start), and who decided it.
struct Call {
    key: usize,
    started: Duration,
    decided_by: Option<DecidedBy>,
}

/// Polls `node` until it says it is a master; the time it first did.
fn wait_for_promotion(cluster: &RedisCluster, node: usize, bound: Duration) -> Instant {
    let deadline = Instant::now() + bound;
    loop {
        if cluster.is_master(node) {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "node {node} was never promoted");
        thread::sleep(Duration::from_millis(5));
    }
}

fn failover(freeze: bool) {
    let fault = if freeze { "frozen" } else { "killed" };
    let mut cluster = RedisCluster::with_replicas(&[
        "--cluster-node-timeout",
        "1000",
        "--cluster-require-full-coverage",
        "no",
    ]);
    let masters: Vec<usize> = (0..cluster.nodes().len())
        .filter(|&i| cluster.is_master(i))
        .collect();
    assert_eq!(masters.len(), 3);
    let lost = masters[0];
    let replica = cluster.replica_of(lost);

    let runtime = runtime();
    let urls = cluster.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let connection = runtime
        .block_on(RedisConnection::connect_cluster(&urls))
        .expect("connect to the cluster");
    let start = Instant::now();
    let limiter = RedisLimiter::builder(Quota::per_hour(1_000_000).unwrap())
        .prefix("fo")
        .timeout(TIMEOUT)
        .failure_policy(FailurePolicy::FailClosed)
        .clock(Elapsed::new())
        .build(connection)
        .unwrap();
    let names: Vec<String> = (0..KEYS).map(|k| format!("key-{k}")).collect();
    let on_lost: Vec<bool> = names
        .iter()
        .map(|name| cluster.owner(&format!("fo:{{{name}}}:3600000")) == lost)
        .collect();
    assert!(on_lost.iter().any(|&l| l) && !on_lost.iter().all(|&l| l));

    let calls = Arc::new(Mutex::new(Vec::<Call>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&runtime, &limiter, &names, &calls, &stop, start);

    thread::sleep(Duration::from_secs(1));
    let fault_at = Instant::now();
    if freeze {
        cluster.nodes()[lost].signal("-STOP");
    } else {
        cluster.nodes()[lost].signal("-KILL");
        cluster.nodes_mut()[lost].stop();
    }
    let promoted = wait_for_promotion(&cluster, replica, Duration::from_secs(20));
    let mut settled = promoted;
    if freeze {
        // Still frozen well past the bound: its keys must have moved on without its help (a
        // frozen master answers nothing, not even the `MOVED` that would redirect them).
        thread::sleep(BACK_WITHIN + Duration::from_millis(500));
        // Then the old master comes back, still believing it serves its slots until the
        // cluster tells it otherwise: it must not pull its keys back to itself.
        cluster.nodes()[lost].signal("-CONT");
        let deadline = Instant::now() + Duration::from_secs(20);
        while cluster.is_master(lost) {
            assert!(
                Instant::now() < deadline,
                "the old master was never demoted"
            );
            thread::sleep(Duration::from_millis(5));
        }
        settled = Instant::now();
    }
    thread::sleep(AFTER);
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        runtime.block_on(task).expect("no task panicked");
    }

    let calls = calls.lock();
    let since = |at: Instant| at - start;
    let (promoted, fault_at) = (since(promoted), since(fault_at));
    let failed = |c: &Call| c.decided_by != Some(DecidedBy::Backend);
    let live_failures: Vec<&Call> = calls
        .iter()
        .filter(|c| !on_lost[c.key] && failed(c))
        .collect();
    let lost_calls: Vec<&Call> = calls.iter().filter(|c| on_lost[c.key]).collect();
    let last_lost_failure = lost_calls
        .iter()
        .filter(|c| failed(c))
        .map(|c| c.started)
        .max();
    let late = lost_calls
        .iter()
        .filter(|c| c.started > promoted + BACK_WITHIN)
        .count();
    println!(
        "failover, master {fault}: {} calls; promotion visible {:?} after the fault; last policy \
         answer for the lost master's keys at {:?} s from the promotion; {} failures on live masters; \
         settled (old master demoted) {:?} after the promotion",
        calls.len(),
        promoted - fault_at,
        last_lost_failure.map(|at| at.as_secs_f64() - promoted.as_secs_f64()),
        live_failures.len(),
        since(settled).saturating_sub(promoted),
    );
    assert!(
        live_failures.is_empty(),
        "{} calls for the live masters' keys failed, the first at {:?} (fault at {fault_at:?})",
        live_failures.len(),
        live_failures[0].started
    );
    assert!(
        late > 100,
        "too few calls after the promotion to tell: {late}"
    );
    if let Some(last) = last_lost_failure {
        assert!(
            last <= promoted + BACK_WITHIN,
            "the lost master's keys were still answered by the policy {:?} after the promotion",
            last - promoted
        );
    }
}

/// `TASKS` tasks cycling over `names` until `stop`, recording every call.
fn load(
    runtime: &Runtime,
    limiter: &RedisLimiter<Elapsed>,
    names: &[String],
    calls: &Arc<Mutex<Vec<Call>>>,
    stop: &Arc<AtomicBool>,
    start: Instant,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..TASKS)
        .map(|t| {
            let (limiter, names) = (limiter.clone(), names.to_vec());
            let (calls, stop) = (calls.clone(), stop.clone());
            runtime.spawn(async move {
                let mut key = t;
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = start.elapsed();
                    let decided_by = limiter
                        .check(&names[key])
                        .await
                        .ok()
                        .map(|d| d.decided_by());
                    mine.push(Call {
                        key,
                        started,
                        decided_by,
                    });
                    key = (key + TASKS) % names.len();
                }
                calls.lock().extend(mine);
            })
        })
        .collect()
}

#[test]
fn failover_master_killed_its_replica_takes_over_within_a_second() {
    failover(false);
}

#[test]
fn failover_master_frozen_its_replica_takes_over_and_the_old_master_comes_back_demoted() {
    failover(true);
}
