//! Faults under load against real `redis-server` processes and real signals: a server killed
//! and restarted, frozen (SIGSTOP), paused (`CLIENT PAUSE`), asleep (`DEBUG SLEEP`), its scripts
//! flushed, its memory full; a Cluster master down. Then the Redis side of security (passwords,
//! ACL users, TLS) and tenant isolation in the key layout.
//!
//! Each single-server fault runs 64 tasks deciding on one limiter while the test injects the
//! fault, then checks that nothing panicked, that no call outlived the timeout by more than a
//! scheduling margin, that the failure policy answered while Redis could not, that the limiter
//! went back to Redis by itself, that Redis's counts agree with the decisions, and that every
//! key still has a TTL. `cargo test --all-features faults -- --nocapture` prints the figures.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ratewindow::{
    BackendErrorKind, DecidedBy, Error, FailurePolicy, Quota, RateLimiter, RedisConnection,
    RedisLimiter,
};
use tokio::runtime::Runtime;

use crate::support::redis_server::{RedisCluster, RedisServer};
use crate::support::{Elapsed, runtime};

/// Ten minutes into an hour, as the `Elapsed` clock starts: the tests' hour-long windows never
/// end while they run.
const T0_MS: u64 = Elapsed::T0_MS;
const HOUR_MS: u64 = 3_600_000;
/// Tasks deciding at once during a fault.
const TASKS: usize = 64;
/// Keys the tasks share, so that several tasks race on each key.
const KEYS: usize = 8;
/// How long each call may take before the failure policy answers.
const TIMEOUT: Duration = Duration::from_millis(100);
/// What a call may take beyond its timeout: a task waiting for one of two busy worker threads
/// on a shared two-core machine, not a hang.
const MARGIN: Duration = Duration::from_millis(250);
/// How long a fault lasts: several timeouts and several breaker intervals (250 ms).
const FAULT: Duration = Duration::from_millis(1_000);
/// A limiter that is not back on Redis this long after a fault has ended has a bug.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);

/// One call made under load.
#[derive(Debug)]
struct Call {
    /// Which key: `(key number, epoch)`.
    key: (usize, usize),
    /// When it started, from the start of the load.
    start: Duration,
    took: Duration,
    outcome: Result<(DecidedBy, bool), Error>,
}

impl Call {
    fn end(&self) -> Duration {
        self.start + self.took
    }

    fn by_redis(&self) -> bool {
        matches!(self.outcome, Ok((DecidedBy::Backend, _)))
    }
}

/// [`TASKS`] tasks checking keys in a loop until stopped. Keys carry an epoch that the test
/// moves on once a fault has ended, so that the keys used after it are counted from nothing.
struct Load {
    start: Instant,
    stop: Arc<AtomicBool>,
    epoch: Arc<AtomicUsize>,
    /// The latest start (ns from `start`) of a call Redis decided.
    last_by_redis_ns: Arc<AtomicU64>,
    /// The same per key number.
    by_redis_per_key: Arc<Vec<AtomicU64>>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Call>>>,
}

impl Load {
    fn start(runtime: &Runtime, limiter: &RedisLimiter<Elapsed>) -> Load {
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

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Waits until Redis has decided a call that started at or after `since`.
    fn wait_for_redis_since(&self, since: Duration) {
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
    fn wait_for_redis_on(&self, wanted: impl Fn(usize) -> bool, since: Duration) {
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
    fn finish(self, runtime: &Runtime) -> Vec<Call> {
        self.stop.store(true, Ordering::Relaxed);
        let mut calls = Vec::new();
        for task in self.tasks {
            calls.extend(runtime.block_on(task).expect("no task panicked"));
        }
        calls
    }
}

fn key_name((key, epoch): (usize, usize)) -> String {
    format!("k{key}-e{epoch}")
}

/// What a fault run measured.
struct Run {
    calls: Vec<Call>,
    fault_start: Duration,
    fault_end: Duration,
}

impl Run {
    fn max_latency(&self) -> Duration {
        self.calls.iter().map(|c| c.took).max().unwrap_or_default()
    }

    /// From the end of the fault to the end of the first call Redis decided among those that
    /// started after it.
    fn back_on_redis_after(&self) -> Duration {
        self.calls
            .iter()
            .filter(|c| c.by_redis() && c.start >= self.fault_end)
            .map(|c| c.end() - self.fault_end)
            .min()
            .expect("a call decided by Redis after the fault")
    }

    fn not_by_redis(&self) -> impl Iterator<Item = &Call> {
        self.calls.iter().filter(|c| !c.by_redis())
    }

    /// The figures, and the checks every fault shares.
    fn check_common(&self, name: &str) {
        let max = self.max_latency();
        let back = self.back_on_redis_after();
        println!(
            "fault {name}: {} calls, {} not decided by Redis, max call latency {max:?} \
             (timeout {TIMEOUT:?}), back on Redis {back:?} after the fault ended",
            self.calls.len(),
            self.not_by_redis().count(),
        );
        let slow = self
            .calls
            .iter()
            .filter(|c| c.took > TIMEOUT + MARGIN)
            .count();
        assert!(
            max <= TIMEOUT + MARGIN,
            "{name}: {slow} calls took longer than {:?}, the longest {max:?}",
            TIMEOUT + MARGIN
        );
        assert!(
            self.calls
                .iter()
                .any(|c| c.by_redis() && c.end() <= self.fault_start),
            "{name}: Redis decided nothing before the fault"
        );
    }

    /// Checks that Redis's count of every key used since `epoch` lies between the units Redis
    /// admitted and those plus every call the failure policy answered: a call that timed out
    /// may still have run on the server, but nothing else is counted, and nothing admitted is
    /// lost.
    fn check_counts(&self, server: &RedisServer, prefix: &str, epoch: usize) {
        let keys: BTreeSet<(usize, usize)> = self.calls.iter().map(|c| c.key).collect();
        let mut checked = 0;
        for key in keys.into_iter().filter(|k| k.1 >= epoch) {
            let calls = || self.calls.iter().filter(move |c| c.key == key);
            let admitted = calls()
                .filter(|c| matches!(c.outcome, Ok((DecidedBy::Backend, true))))
                .count() as u64;
            let unknown = calls().filter(|c| !c.by_redis()).count() as u64;
            let counted = redis_count(server, &format!("{prefix}:{{{}}}:{HOUR_MS}", key_name(key)));
            assert!(
                admitted <= counted && counted <= admitted + unknown,
                "{key:?}: Redis counted {counted}, Redis admitted {admitted}, \
                 the policy answered {unknown}"
            );
            checked += 1;
        }
        assert!(checked > 0);
    }
}

/// The count of every window under `window` (`<prefix>:{<key>}:<window_ms>`, to which each
/// window's counter appends `:<index>`), summed: 0 when there is none.
fn redis_count(server: &RedisServer, window: &str) -> u64 {
    crate::redis::counters(server, &format!("{window}:"))
        .iter()
        .map(|(_, count)| count)
        .sum()
}

/// Every key under `prefix`, each with a TTL that ends within its window plus the margin.
fn assert_every_key_expires(server: &RedisServer, prefix: &str) {
    let reply = server.command(&["KEYS", &format!("{prefix}*")]);
    let keys = bulk_strings(&reply);
    assert!(!keys.is_empty(), "no key under {prefix}");
    for key in keys {
        let ttl = server.command(&["PTTL", key]);
        let ttl: i64 = ttl.trim().trim_start_matches(':').parse().unwrap_or(-3);
        assert!(
            ttl > 0 && ttl as u64 <= HOUR_MS + 1_000,
            "{key} has PTTL {ttl}"
        );
    }
}

/// The bulk strings of an array reply, read by their lengths: keys may hold CR and LF.
fn bulk_strings(reply: &str) -> Vec<&str> {
    let mut rest = reply.split_once("\r\n").map_or("", |(_, rest)| rest);
    let mut out = Vec::new();
    while let Some((len, after)) = rest.strip_prefix('$').and_then(|r| r.split_once("\r\n")) {
        let len: usize = len.parse().expect("a bulk string length");
        out.push(&after[..len]);
        rest = &after[len + 2..];
    }
    out
}

/// A limiter on `server` with `policy`, the test timeout and the default breaker interval.
fn limiter(
    runtime: &Runtime,
    url: &str,
    prefix: &str,
    policy: FailurePolicy,
    timeout: Duration,
) -> RedisLimiter<Elapsed> {
    let connection = runtime
        .block_on(RedisConnection::connect(url))
        .expect("connect");
    RedisLimiter::builder(Quota::per_hour(1_000_000).unwrap())
        .prefix(prefix)
        .timeout(timeout)
        .failure_policy(policy)
        .clock(Elapsed::new())
        .build(connection)
        .unwrap()
}

/// Runs the load on `limiter`, lets Redis decide for a while, injects the fault with `inject`
/// (which returns once the fault is over), waits until the limiter is back on Redis, and
/// returns what every call did.
fn under_load(
    runtime: &Runtime,
    limiter: &RedisLimiter<Elapsed>,
    server: &mut RedisServer,
    inject: impl FnOnce(&mut RedisServer),
) -> Run {
    let load = Load::start(runtime, limiter);
    load.wait_for_redis_since(Duration::ZERO);
    thread::sleep(Duration::from_millis(200));
    let fault_start = load.now();
    inject(server);
    let fault_end = load.now();
    // Keys from here on are new: their counts start after the fault.
    load.epoch.store(1, Ordering::Relaxed);
    load.wait_for_redis_since(fault_end);
    thread::sleep(Duration::from_millis(200));
    Run {
        calls: load.finish(runtime),
        fault_start,
        fault_end,
    }
}

/// The outcomes of calls the failure policy answered.
fn policy_outcomes(run: &Run) -> Vec<&Result<(DecidedBy, bool), Error>> {
    run.not_by_redis().map(|c| &c.outcome).collect()
}

/// Some calls were answered by the failure policy, every one of them by `by`, `allowed` or not.
fn assert_policy_answered(run: &Run, by: DecidedBy, allowed: bool) {
    let outcomes = policy_outcomes(run);
    assert!(!outcomes.is_empty());
    for outcome in outcomes {
        assert!(
            matches!(outcome, Ok((decided, admitted)) if *decided == by && *admitted == allowed),
            "{outcome:?}"
        );
    }
}

#[test]
fn faults_kill_and_restart_fail_open() {
    let runtime = runtime();
    let mut server = RedisServer::new();
    let limiter = limiter(
        &runtime,
        &server.url(),
        "kill",
        FailurePolicy::FailOpen,
        TIMEOUT,
    );
    let run = under_load(&runtime, &limiter, &mut server, |server| {
        server.signal("-KILL");
        thread::sleep(FAULT);
        server.restart();
    });
    run.check_common("kill -9, restart");
    assert_policy_answered(&run, DecidedBy::FailOpen, true);
    // The counts before the kill died with the server; those after it are exact.
    run.check_counts(&server, "kill", 1);
    assert_every_key_expires(&server, "kill");
}

#[test]
fn faults_sigstop_longer_than_the_timeout_fail_closed() {
    let runtime = runtime();
    let mut server = RedisServer::new();
    let limiter = limiter(
        &runtime,
        &server.url(),
        "stop",
        FailurePolicy::FailClosed,
        TIMEOUT,
    );
    let run = under_load(&runtime, &limiter, &mut server, |server| {
        server.signal("-STOP");
        thread::sleep(FAULT);
        server.signal("-CONT");
    });
    run.check_common("SIGSTOP");
    assert_policy_answered(&run, DecidedBy::FailClosed, false);
    run.check_counts(&server, "stop", 0);
    assert_every_key_expires(&server, "stop");
}

/// `ReturnError` hands the caller a typed error: a timeout, or "unavailable" while the breaker
/// skips Redis.
fn assert_typed_errors(run: &Run, kinds: &[BackendErrorKind]) {
    let outcomes = policy_outcomes(run);
    assert!(!outcomes.is_empty());
    for outcome in outcomes {
        match outcome {
            Err(Error::Backend { kind, .. }) if kinds.contains(kind) => {}
            other => panic!("expected a backend error of kind {kinds:?}, got {other:?}"),
        }
    }
}

#[test]
fn faults_client_pause_returns_typed_errors() {
    let runtime = runtime();
    let mut server = RedisServer::new();
    let limiter = limiter(
        &runtime,
        &server.url(),
        "pause",
        FailurePolicy::ReturnError,
        TIMEOUT,
    );
    let run = under_load(&runtime, &limiter, &mut server, |server| {
        // A pause holds every client's commands, `CLIENT UNPAUSE` included, until it ends by
        // itself; this PING is answered when it does.
        let ms = FAULT.as_millis().to_string();
        assert!(server.command(&["CLIENT", "PAUSE", &ms]).contains("OK"));
        assert_eq!(server.command(&["PING"]), "+PONG\r\n");
    });
    run.check_common("CLIENT PAUSE");
    assert_typed_errors(
        &run,
        &[BackendErrorKind::Timeout, BackendErrorKind::Unavailable],
    );
    run.check_counts(&server, "pause", 0);
    assert_every_key_expires(&server, "pause");
}

#[test]
fn faults_debug_sleep_falls_back_to_local_limits() {
    let runtime = runtime();
    let mut server = RedisServer::new();
    let limiter = limiter(
        &runtime,
        &server.url(),
        "sleep",
        FailurePolicy::Fallback { instances: 2 },
        TIMEOUT,
    );
    let run = under_load(&runtime, &limiter, &mut server, |server| {
        // Blocks this thread (and the server) for the whole second.
        assert!(server.command(&["DEBUG", "SLEEP", "1"]).contains("OK"));
    });
    run.check_common("DEBUG SLEEP");
    assert_policy_answered(&run, DecidedBy::Fallback, true);
    run.check_counts(&server, "sleep", 0);
    assert_every_key_expires(&server, "sleep");
}

/// `NOSCRIPT` after a flush is the client's to handle: the caller never sees it, and counts stay
/// exact.
#[test]
fn faults_script_flush_under_load_is_invisible() {
    let runtime = runtime();
    let mut server = RedisServer::new();
    // A generous timeout: any call not decided by Redis here is a failure, not a slow machine.
    let limiter = limiter(
        &runtime,
        &server.url(),
        "flush",
        FailurePolicy::ReturnError,
        Duration::from_secs(2),
    );
    let run = under_load(&runtime, &limiter, &mut server, |server| {
        for _ in 0..5 {
            assert!(server.command(&["SCRIPT", "FLUSH"]).contains("OK"));
            thread::sleep(Duration::from_millis(100));
        }
    });
    let failed: Vec<_> = policy_outcomes(&run);
    assert!(failed.is_empty(), "{failed:?}");
    println!(
        "fault SCRIPT FLUSH: {} calls, all decided by Redis, max call latency {:?}",
        run.calls.len(),
        run.max_latency()
    );
    assert!(run.max_latency() <= Duration::from_secs(2) + MARGIN);
    run.check_counts(&server, "flush", 0);
    assert_every_key_expires(&server, "flush");
}

/// Used memory in bytes, from `INFO memory`.
fn used_memory(server: &RedisServer) -> u64 {
    server
        .command(&["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO")
}

/// Out of memory under `noeviction`, writes fail with `-OOM`: the script must fail before its
/// first write (never half-charged), the caller gets a typed error, and counting resumes once
/// memory is freed.
#[test]
fn faults_maxmemory_noeviction_returns_typed_errors() {
    let runtime = runtime();
    let mut server = RedisServer::new();
    let limiter = limiter(
        &runtime,
        &server.url(),
        "oom",
        FailurePolicy::ReturnError,
        TIMEOUT,
    );
    let big = "x".repeat(4 << 20);
    let run = under_load(&runtime, &limiter, &mut server, |server| {
        assert_eq!(server.command(&["SET", "ballast", &big]), "+OK\r\n");
        assert!(
            server
                .command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
                .contains("OK")
        );
        let limit = (used_memory(server) - (1 << 20)).to_string();
        assert!(
            server
                .command(&["CONFIG", "SET", "maxmemory", &limit])
                .contains("OK")
        );
        thread::sleep(FAULT);
        // DEL is allowed when out of memory; then there is room again.
        assert_eq!(server.command(&["DEL", "ballast"]), ":1\r\n");
    });
    run.check_common("maxmemory");
    let outcomes = policy_outcomes(&run);
    assert!(
        outcomes.iter().any(|o| matches!(
            o,
            Err(Error::Backend { kind: BackendErrorKind::Protocol, detail }) if detail.contains("OOM")
        )),
        "no OOM error reached the caller"
    );
    assert_typed_errors(
        &run,
        &[
            BackendErrorKind::Protocol,
            BackendErrorKind::Timeout,
            BackendErrorKind::Unavailable,
        ],
    );
    run.check_counts(&server, "oom", 0);
    assert_every_key_expires(&server, "oom");
}

/// A connection to every node of `cluster`, reading slot maps within [`TIMEOUT`].
fn connect(runtime: &Runtime, cluster: &RedisCluster) -> RedisConnection {
    let urls = cluster.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    runtime
        .block_on(RedisConnection::connect_cluster_with_timeout(
            &urls, TIMEOUT,
        ))
        .expect("connect to the cluster")
}

/// A fail-closed limiter under `prefix` whose breaker waits only 1 ms, so every call tries the
/// connection, and a key of it that master 0 serves.
fn unpaced_on_master_0(
    cluster: &RedisCluster,
    connection: RedisConnection,
    prefix: &str,
) -> (RedisLimiter<Elapsed>, String) {
    let limiter = RedisLimiter::builder(Quota::per_hour(1_000).unwrap())
        .prefix(prefix)
        .timeout(TIMEOUT)
        .failure_policy(FailurePolicy::FailClosed)
        .retry_after(Duration::from_millis(1))
        .clock(Elapsed::new())
        .build(connection)
        .unwrap();
    let key = (0..)
        .map(|i| format!("tenant-{i}"))
        .find(|name| cluster.owner(&format!("{prefix}:{{{name}}}:{HOUR_MS}")) == 0)
        .unwrap();
    (limiter, key)
}

/// `calls` concurrent checks of `key`: the outcomes and the longest call.
fn burst(
    runtime: &Runtime,
    limiter: &RedisLimiter<Elapsed>,
    key: &str,
    calls: usize,
) -> (Vec<(DecidedBy, bool)>, Duration) {
    let tasks: Vec<_> = (0..calls)
        .map(|_| {
            let (limiter, key) = (limiter.clone(), key.to_owned());
            runtime.spawn(async move {
                let started = Instant::now();
                let decision = limiter.check(&key).await.expect("a policy answers");
                (
                    (decision.decided_by(), decision.is_allowed()),
                    started.elapsed(),
                )
            })
        })
        .collect();
    let results: Vec<_> = tasks
        .into_iter()
        .map(|task| runtime.block_on(task).expect("no task panicked"))
        .collect();
    let max = results.iter().map(|r| r.1).max().unwrap_or_default();
    (results.into_iter().map(|r| r.0).collect(), max)
}

/// One master of three frozen (SIGSTOP: its connections stay open, nothing comes back): keys on
/// the other two are still counted exactly by Redis, under bursts and under mixed load, and
/// only keys on the frozen one get the failure policy, before and after the others mark it as
/// failed; once it is back, its keys go back to Redis.
///
/// Regression test: the failure breaker was one for the whole limiter, so a failed call for a
/// key on the stopped master sent every key, on every master, to the failure policy for the
/// next 250 ms.
#[test]
fn faults_cluster_master_frozen_only_its_keys_follow_the_policy() {
    cluster_master_down(true);
}

/// One master of three killed (SIGKILL), as the frozen-master test: only its keys get the
/// failure policy, the others are counted exactly by Redis, and its keys go back to Redis once
/// it is restarted.
///
/// Regression test: with redis-rs 1.2's async cluster client, after the kill, under concurrent
/// calls, the client stopped answering for the live masters too (it rediscovered the cluster
/// while holding every command, waiting on the dead master), often until long after the master
/// was back.
#[test]
fn faults_cluster_master_killed_only_its_keys_follow_the_policy() {
    cluster_master_down(false);
}

/// How long a restarted master's keys may take to be decided by Redis again. A restarted
/// master refuses every key (`CLUSTERDOWN`) for its first 2 s (Redis's writable delay); then
/// the slot's breaker (250 ms) lets the next call through. The rest is a busy machine.
const CLUSTER_RESTART_BOUND: Duration = Duration::from_millis(3_500);

/// 64 tasks deciding for keys on all three masters while one master is killed (SIGKILL), stays
/// down until the live masters mark it as failed, and is restarted:
///
/// - every call for a live master's key is decided by Redis, except a call in flight at the
///   kill, and Redis's counts of those keys are exact;
/// - every call for the dead master's keys is answered by the failure policy, none later than
///   the timeout plus a scheduling margin;
/// - after the restart, its keys are decided by Redis again within [`CLUSTER_RESTART_BOUND`],
///   by themselves, and counted exactly from then on;
/// - every key on every master has a TTL.
///
/// Regression test: see [`faults_cluster_master_killed_only_its_keys_follow_the_policy`]; the
/// live masters' keys then went to the failure policy for seconds after the kill.
#[test]
fn faults_cluster_master_killed_live_masters_keep_being_decided_by_redis() {
    const DEAD: usize = 2;
    let mut cluster = RedisCluster::with_args(&["--cluster-require-full-coverage", "no"]);
    let runtime = runtime();
    let connection = connect(&runtime, &cluster);
    let limiter = RedisLimiter::builder(Quota::per_hour(1_000_000).unwrap())
        .prefix("kl")
        .timeout(TIMEOUT)
        .failure_policy(FailurePolicy::FailClosed)
        .clock(Elapsed::new())
        .build(connection)
        .unwrap();
    let redis_key = |key| format!("kl:{{{}}}:{HOUR_MS}", key_name(key));
    // Which master serves each key of each epoch; every master must serve some in both.
    let owners: HashMap<(usize, usize), usize> = (0..KEYS)
        .flat_map(|k| [(k, 0), (k, 1)])
        .map(|key| (key, cluster.owner(&redis_key(key))))
        .collect();
    for (node, epoch) in (0..3).flat_map(|n| [(n, 0), (n, 1)]) {
        assert!(
            owners.iter().any(|(k, &o)| o == node && k.1 == epoch),
            "no key of epoch {epoch} on master {node}: {owners:?}"
        );
    }

    let load = Load::start(&runtime, &limiter);
    load.wait_for_redis_since(Duration::ZERO);
    thread::sleep(Duration::from_millis(300));
    let killed = load.now();
    cluster.nodes()[DEAD].signal("-KILL");
    // Reaped: dead from here on.
    cluster.nodes_mut()[DEAD].stop();
    let dead = load.now();
    // Down until the live masters have marked it as failed (2 s of node timeout, then gossip),
    // and a little longer: both views of the cluster are lived through.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cluster.nodes()[0]
        .command(&["CLUSTER", "NODES"])
        .contains("fail")
    {
        assert!(Instant::now() < deadline, "never marked as failed");
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(500));
    let restarted = load.now();
    cluster.nodes_mut()[DEAD].restart();
    load.wait_for_redis_on(|k| owners[&(k, 0)] == DEAD, restarted);
    // Keys from here on are new: the restarted master lost its counts.
    let fresh = load.now();
    load.epoch.store(1, Ordering::Relaxed);
    thread::sleep(Duration::from_millis(500));
    let calls = load.finish(&runtime);

    let in_flight_at_kill = |c: &Call| c.start <= dead && killed <= c.end();
    let live: Vec<&Call> = calls.iter().filter(|c| owners[&c.key] != DEAD).collect();
    let live_failed: Vec<&Call> = live.iter().copied().filter(|c| !c.by_redis()).collect();
    let dead_down: Vec<&Call> = calls
        .iter()
        .filter(|c| owners[&c.key] == DEAD && c.start > dead && c.end() < restarted)
        .collect();
    let max = calls.iter().map(|c| c.took).max().unwrap_or_default();
    // From the restart to the end of the first call for its keys that Redis decided.
    let back = calls
        .iter()
        .filter(|c| owners[&c.key] == DEAD && c.start >= restarted && c.by_redis())
        .map(|c| c.end() - restarted)
        .min()
        .expect("a call for the restarted master's keys decided by Redis");
    println!(
        "fault cluster master killed under load: {} calls, {} for the live masters of which {} \
         not decided by Redis ({} in flight at the kill), {} for the dead master while down; \
         max call latency {max:?} (timeout {TIMEOUT:?}); its keys back on Redis {back:?} after \
         the restart",
        calls.len(),
        live.len(),
        live_failed.len(),
        live_failed.iter().filter(|c| in_flight_at_kill(c)).count(),
        dead_down.len(),
    );
    let late: Vec<&&Call> = live_failed
        .iter()
        .filter(|c| !in_flight_at_kill(c))
        .collect();
    assert!(
        late.is_empty(),
        "{} calls for live masters' keys not decided by Redis, e.g. {:?}",
        late.len(),
        &late[..late.len().min(5)]
    );
    assert!(!dead_down.is_empty());
    let wrong = dead_down
        .iter()
        .find(|c| !matches!(c.outcome, Ok((DecidedBy::FailClosed, false))));
    assert!(wrong.is_none(), "dead master's key while down: {wrong:?}");
    assert!(max <= TIMEOUT + MARGIN, "a call took {max:?}");
    assert!(
        back <= CLUSTER_RESTART_BOUND,
        "back on Redis {back:?} after the restart"
    );
    // Exact counts: the live masters' keys of both epochs, and every key of the second epoch
    // (used once every master was back, and decided by Redis).
    for (&key, &node) in &owners {
        if node == DEAD && key.1 == 0 {
            continue;
        }
        let calls = || calls.iter().filter(move |c| c.key == key);
        let admitted = calls()
            .filter(|c| matches!(c.outcome, Ok((DecidedBy::Backend, true))))
            .count() as u64;
        let unknown = calls().filter(|c| !c.by_redis()).count() as u64;
        let counted = redis_count(&cluster.nodes()[node], &redis_key(key));
        assert!(
            admitted <= counted && counted <= admitted + unknown,
            "{key:?} on master {node}: Redis counted {counted}, admitted {admitted}, the \
             policy answered {unknown}"
        );
        if key.1 == 1 {
            assert!(
                calls().all(|c| c.start < fresh || c.by_redis()),
                "{key:?}: a call after every master was back not decided by Redis"
            );
        }
    }
    for node in cluster.nodes() {
        assert_every_key_expires(node, "kl");
    }
}

/// Stops (kills, or freezes with SIGSTOP) one master of three, checks bursts of calls for keys
/// on every master and a mixed load, then starts the master again (restart, or SIGCONT) and
/// waits for its keys to be decided by Redis. The live masters' keys must be decided by Redis
/// throughout, exactly.
/// A frozen master's first failed call opens the breaker for every slot it serves: its other
/// keys, whatever their slots, get the failure policy at once instead of each waiting for the
/// timeout, while the live masters' keys are still decided by Redis. The breaker's clock is a
/// manual one, so the interval never ends by itself here.
///
/// Regression test: the breaker was per slot only, so with keys spread over a dead master's
/// slots nearly every call waited the full timeout.
#[test]
fn faults_cluster_one_failure_opens_the_breaker_for_every_slot_of_its_master() {
    let cluster = RedisCluster::with_args(&["--cluster-require-full-coverage", "no"]);
    let runtime = runtime();
    let connection = connect(&runtime, &cluster);
    let clock = ratewindow::ManualClock::at_millis(T0_MS);
    let limiter = RedisLimiter::builder(Quota::per_hour(5).unwrap())
        .prefix("br")
        .timeout(TIMEOUT)
        .failure_policy(FailurePolicy::FailClosed)
        .clock(clock.clone())
        .build(connection)
        .unwrap();
    let redis_key = |name: &str| format!("br:{{{name}}}:{HOUR_MS}");
    // Keys of master 2, each in a slot of its own, and one key of master 0.
    let mut frozen: Vec<String> = Vec::new();
    let mut slots = BTreeSet::new();
    let mut live = None;
    for i in 0.. {
        if frozen.len() >= 20 && live.is_some() {
            break;
        }
        let name = format!("spread-{i}");
        let slot = cluster.nodes()[0].command(&["CLUSTER", "KEYSLOT", &redis_key(&name)]);
        match cluster.owner(&redis_key(&name)) {
            2 if slots.insert(slot) => frozen.push(name),
            0 if live.is_none() => live = Some(name),
            _ => {}
        }
    }
    let live = live.unwrap();
    let check = |key: &str| {
        let started = Instant::now();
        let decision = runtime
            .block_on(limiter.check(key))
            .expect("a policy answers");
        (decision.decided_by(), started.elapsed())
    };
    assert_eq!(check(&frozen[0]).0, DecidedBy::Backend);

    cluster.nodes()[2].signal("-STOP");
    let (first, waited) = check(&frozen[0]);
    assert_eq!(first, DecidedBy::FailClosed);
    assert!(
        waited >= TIMEOUT,
        "the first call waits for the timeout: {waited:?}"
    );
    for key in &frozen[1..] {
        let (by, took) = check(key);
        assert_eq!(by, DecidedBy::FailClosed, "{key}");
        assert!(took < TIMEOUT / 2, "{key} waited {took:?}");
    }
    assert_eq!(check(&live).0, DecidedBy::Backend);

    cluster.nodes()[2].signal("-CONT");
    clock.advance(Duration::from_millis(300));
    let back = (0..50)
        .map(|_| {
            thread::sleep(Duration::from_millis(20));
            check(&frozen[1]).0
        })
        .find(|by| *by == DecidedBy::Backend);
    assert_eq!(
        back,
        Some(DecidedBy::Backend),
        "back on Redis after SIGCONT"
    );
}

/// A call that times out while following a redirect has not found its slot's master silent:
/// the master answered (`MOVED`), the node it pointed to did not. The breaker opens for that
/// slot alone, and the master's other keys are still decided by Redis.
///
/// Regression test: the limiter's timeout fired before the router could say where the call
/// was, so it blamed the slot's master and sent every key it serves to the failure policy.
#[test]
fn faults_cluster_a_timeout_after_a_redirect_keeps_the_old_master_in_use() {
    let cluster = RedisCluster::with_args(&["--cluster-require-full-coverage", "no"]);
    let runtime = runtime();
    let connection = connect(&runtime, &cluster);
    let clock = ratewindow::ManualClock::at_millis(T0_MS);
    let limiter = RedisLimiter::builder(Quota::per_hour(5).unwrap())
        .prefix("rd")
        .timeout(TIMEOUT)
        .failure_policy(FailurePolicy::FailClosed)
        .clock(clock)
        .build(connection)
        .unwrap();
    let redis_key = |name: &str| format!("rd:{{{name}}}:{HOUR_MS}");
    let slot_of =
        |name: &str| cluster.nodes()[0].command(&["CLUSTER", "KEYSLOT", &redis_key(name)]);
    // Two keys of master 0 in different slots.
    let mut names = (0..)
        .map(|i| format!("moving-{i}"))
        .filter(|name| cluster.owner(&redis_key(name)) == 0);
    let moving = names.next().unwrap();
    let staying = names
        .find(|name| slot_of(name) != slot_of(&moving))
        .unwrap();
    let check = |key: &str| {
        runtime
            .block_on(limiter.check(key))
            .expect("a policy answers")
            .decided_by()
    };
    assert_eq!(check(&staying), DecidedBy::Backend);

    // Master 0 now redirects the moving key's slot (which holds no key yet) to node 1, which
    // answers nothing.
    let slot = slot_of(&moving);
    let slot = slot.trim_start_matches(':').trim();
    let node_1 = cluster.nodes()[1].command(&["CLUSTER", "MYID"]);
    let node_1 = node_1.lines().nth(1).expect("a bulk string reply");
    let set = cluster.nodes()[0].command(&["CLUSTER", "SETSLOT", slot, "NODE", node_1]);
    assert_eq!(set, "+OK\r\n");
    cluster.nodes()[1].signal("-STOP");
    let redirected = check(&moving);
    let other = check(&staying);
    cluster.nodes()[1].signal("-CONT");
    assert_eq!(
        redirected,
        DecidedBy::FailClosed,
        "the frozen node timed out"
    );
    assert_eq!(
        other,
        DecidedBy::Backend,
        "the old master answered; its other slots must stay in use"
    );
}

/// An error about one key's own value (here its counter is a list: `WRONGTYPE`) is not its
/// master failing: the breaker opens for that slot alone, and the master's other keys are still
/// decided by Redis.
///
/// Regression test: every backend error opened the breaker for all of the master's slots, so
/// one bad key sent every tenant on its master to the failure policy.
#[test]
fn faults_cluster_an_error_about_one_key_keeps_its_master_in_use() {
    let cluster = RedisCluster::with_args(&["--cluster-require-full-coverage", "no"]);
    let runtime = runtime();
    let connection = connect(&runtime, &cluster);
    let limiter = RedisLimiter::builder(Quota::per_hour(5).unwrap())
        .prefix("wt")
        .timeout(TIMEOUT)
        .failure_policy(FailurePolicy::FailClosed)
        .clock(ratewindow::ManualClock::at_millis(T0_MS))
        .build(connection)
        .unwrap();
    // Only the hash tag matters for the slot; the counter that fails is this window's.
    let redis_key = |name: &str| crate::redis::counter("wt", name, HOUR_MS, T0_MS);
    // Keys of master 1, each in a slot of its own.
    let mut on_master_1: Vec<String> = Vec::new();
    let mut slots = BTreeSet::new();
    for i in 0.. {
        if on_master_1.len() >= 6 {
            break;
        }
        let name = format!("tenant-{i}");
        let slot = cluster.nodes()[0].command(&["CLUSTER", "KEYSLOT", &redis_key(&name)]);
        if cluster.owner(&redis_key(&name)) == 1 && slots.insert(slot) {
            on_master_1.push(name);
        }
    }
    let (bad, others) = on_master_1.split_first().unwrap();
    assert!(
        cluster.nodes()[1]
            .command(&["RPUSH", &redis_key(bad), "x"])
            .starts_with(':')
    );
    let decided = |key: &str| runtime.block_on(limiter.check(key)).unwrap().decided_by();
    assert_eq!(decided(bad), DecidedBy::FailClosed);
    for key in others {
        assert_eq!(decided(key), DecidedBy::Backend, "{key}");
    }
}

/// Client ids of the connections `node` has open now, but the one asking.
fn client_ids(node: &RedisServer) -> BTreeSet<String> {
    node.command(&["CLIENT", "LIST"])
        .lines()
        .filter(|line| !line.contains("cmd=client|list"))
        .filter_map(|line| {
            line.split_whitespace()
                .find_map(|field| field.strip_prefix("id="))
                .map(str::to_owned)
        })
        .collect()
}

/// A master connection that answers nothing for a while (here: `CLIENT PAUSE` for longer than
/// the allowance; in production a half-open connection after a partition) is replaced, not
/// kept until the operating system gives up on it: once the master answers again, the calls
/// go over a new connection.
#[test]
fn faults_cluster_a_connection_unanswered_for_seconds_is_made_again() {
    let cluster = RedisCluster::with_args(&["--cluster-require-full-coverage", "no"]);
    let runtime = runtime();
    let connection = connect(&runtime, &cluster);
    let (limiter, key) = unpaced_on_master_0(&cluster, connection, "ho");
    let decided = || runtime.block_on(limiter.check(&key)).unwrap().decided_by();
    assert_eq!(decided(), DecidedBy::Backend);
    let before = client_ids(&cluster.nodes()[0]);

    // Longer than the 5 s allowance; calls keep coming and time out.
    assert!(
        cluster.nodes()[0]
            .command(&["CLIENT", "PAUSE", "6500", "ALL"])
            .contains("OK")
    );
    let paused = Instant::now();
    while paused.elapsed() < Duration::from_millis(6_500) {
        assert_ne!(decided(), DecidedBy::Backend);
        thread::sleep(Duration::from_millis(200));
    }
    let back = Instant::now();
    while decided() != DecidedBy::Backend {
        assert!(back.elapsed() < RECOVERY_BOUND, "not back on Redis");
        thread::sleep(Duration::from_millis(50));
    }
    let after = client_ids(&cluster.nodes()[0]);
    assert!(
        after.difference(&before).count() >= 1,
        "a new connection: before {before:?}, after {after:?}"
    );
}

/// A call that times out at a master that is only slow, then seconds without calls: the next
/// call finds the connection as it was, answered since, and keeps it.
///
/// Regression test: only a call's own reply cleared the unanswered mark; the timed-out call's
/// reply went nowhere, so the first call after 5 s idle made the connection again.
#[test]
fn faults_cluster_a_timeout_then_idle_keeps_a_healthy_connection() {
    let cluster = RedisCluster::with_args(&["--cluster-require-full-coverage", "no"]);
    let runtime = runtime();
    let connection = connect(&runtime, &cluster);
    let (limiter, key) = unpaced_on_master_0(&cluster, connection, "id");
    let decided = || runtime.block_on(limiter.check(&key)).unwrap().decided_by();
    assert_eq!(decided(), DecidedBy::Backend);
    let before = client_ids(&cluster.nodes()[0]);

    // The master sleeps for 300 ms: one call times out, then the master answers again.
    thread::scope(|scope| {
        let sleeper = scope.spawn(|| cluster.nodes()[0].command(&["DEBUG", "SLEEP", "0.3"]));
        thread::sleep(Duration::from_millis(50));
        assert_eq!(decided(), DecidedBy::FailClosed);
        assert!(sleeper.join().unwrap().contains("OK"));
    });
    // Idle past the 5 s allowance for an unanswered connection.
    thread::sleep(Duration::from_millis(5_500));
    assert_eq!(decided(), DecidedBy::Backend);
    let after = client_ids(&cluster.nodes()[0]);
    assert!(
        after.difference(&before).count() == 0,
        "the connection was made again: before {before:?}, after {after:?}"
    );
}

fn cluster_master_down(freeze: bool) {
    let fault = if freeze { "frozen" } else { "killed" };
    const LIMIT: u64 = 20;
    const ROUNDS: usize = 3;
    // The default (`yes`) makes the live masters refuse every key (CLUSTERDOWN) once they have
    // marked the stopped one as failed: then every key follows the policy, by design of Redis.
    let mut cluster = RedisCluster::with_args(&["--cluster-require-full-coverage", "no"]);
    let runtime = runtime();
    let urls = cluster.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let connection = runtime
        .block_on(RedisConnection::connect_cluster(&urls))
        .expect("connect to the cluster");
    let limiter = RedisLimiter::builder(Quota::per_hour(LIMIT).unwrap())
        .prefix("cl")
        .timeout(TIMEOUT)
        .failure_policy(FailurePolicy::FailClosed)
        .clock(Elapsed::new())
        .build(connection.clone())
        .unwrap();
    let redis_key = |name: &str| format!("cl:{{{name}}}:{HOUR_MS}");
    // Two fresh keys per master and round, and one probe per master.
    let mut names: [Vec<String>; 3] = Default::default();
    for i in 0.. {
        if names.iter().all(|n| n.len() > 2 * ROUNDS) {
            break;
        }
        let name = format!("tenant-{i}");
        let node = cluster.owner(&redis_key(&name));
        names[node].push(name);
    }
    for node in &names {
        let (outcomes, _) = burst(&runtime, &limiter, &node[2 * ROUNDS], 1);
        assert_eq!(outcomes, [(DecidedBy::Backend, true)]);
    }
    let live_keys: Vec<bool> = (0..KEYS)
        .map(|k| cluster.owner(&format!("mix:{{{}}}:{HOUR_MS}", key_name((k, 0)))) != 2)
        .collect();

    // Until the live masters' probes are decided by Redis (they should be at once): the time
    // it took, within the bound.
    let settle = |when: &str| {
        let started = Instant::now();
        loop {
            let live: Vec<_> = (0..2)
                .map(|node| burst(&runtime, &limiter, &names[node][2 * ROUNDS], 1).0[0])
                .collect();
            if live.iter().all(|o| o.0 == DecidedBy::Backend) {
                let took = started.elapsed();
                println!("fault cluster master {fault}: live masters used again {took:?} {when}");
                return;
            }
            assert!(
                started.elapsed() < RECOVERY_BOUND,
                "live masters not used again {when}: {live:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    };
    if freeze {
        cluster.nodes()[2].signal("-STOP");
    } else {
        cluster.nodes()[2].signal("-KILL");
        cluster.nodes_mut()[2].stop();
    }
    settle("after the fault");
    let (mut max_live, mut max_dead) = (Duration::ZERO, Duration::ZERO);
    for round in 0..ROUNDS {
        if round == ROUNDS - 1 {
            // The last round runs after the live masters have marked the stopped one as failed.
            let deadline = Instant::now() + Duration::from_secs(20);
            while !cluster.nodes()[0]
                .command(&["CLUSTER", "NODES"])
                .contains("fail")
            {
                assert!(Instant::now() < deadline, "never marked as failed");
                thread::sleep(Duration::from_millis(50));
            }
            settle("after it was marked as failed");
        }
        // A failed call for a key of the stopped master trips its slot's breaker, and must not
        // send the live masters' keys to the policy.
        let dead = &names[2][2 * round..2 * round + 2];
        let (outcomes, max) = burst(&runtime, &limiter, &dead[0], 1);
        assert_eq!(outcomes, [(DecidedBy::FailClosed, false)], "round {round}");
        max_dead = max_dead.max(max);
        for (node, names) in names[..2].iter().enumerate() {
            for name in &names[2 * round..2 * round + 2] {
                let (outcomes, max) = burst(&runtime, &limiter, name, 25);
                max_live = max_live.max(max);
                let admitted = outcomes.iter().filter(|o| o.1).count() as u64;
                let by_policy = outcomes
                    .iter()
                    .filter(|o| o.0 == DecidedBy::FailClosed)
                    .count() as u64;
                // Only Redis admits, never beyond the limit; a call that timed out may still
                // have been counted, nothing else is.
                assert!(
                    outcomes.iter().all(|o| matches!(
                        o,
                        (DecidedBy::Backend, _)
                            | (DecidedBy::OverLimitCache | DecidedBy::FailClosed, false)
                    )),
                    "round {round}, {name}: {outcomes:?}"
                );
                assert!(admitted <= LIMIT, "round {round}, {name}: {outcomes:?}");
                let counted = redis_count(&cluster.nodes()[node], &redis_key(name));
                assert!(
                    admitted <= counted && counted <= admitted + by_policy,
                    "round {round}, {name}: counted {counted}, {outcomes:?}"
                );
                assert_eq!(
                    (admitted, by_policy, counted),
                    (LIMIT, 0, LIMIT),
                    "round {round}, {name}: {outcomes:?}"
                );
            }
        }
        // Many concurrent calls for the stopped master: all answered by the policy, quickly.
        for name in dead {
            let (outcomes, max) = burst(&runtime, &limiter, name, 25);
            max_dead = max_dead.max(max);
            assert!(
                outcomes
                    .iter()
                    .all(|o| *o == (DecidedBy::FailClosed, false)),
                "round {round}, {name}: {outcomes:?}"
            );
        }
        settle("after 50 calls for the stopped master");
        // Past the breaker's interval: the stopped master's slots are tried again.
        thread::sleep(Duration::from_millis(300));
    }
    for node in &cluster.nodes()[..2] {
        assert_every_key_expires(node, "cl");
    }

    // 64 tasks over keys of every master, for a second.
    let mixed = RedisLimiter::builder(Quota::per_hour(1_000_000).unwrap())
        .prefix("mix")
        .timeout(TIMEOUT)
        .failure_policy(FailurePolicy::FailClosed)
        .clock(Elapsed::new())
        .build(connection)
        .unwrap();
    let load = Load::start(&runtime, &mixed);
    thread::sleep(Duration::from_secs(1));
    let calls = load.finish(&runtime);
    let live: Vec<&Call> = calls.iter().filter(|c| live_keys[c.key.0]).collect();
    let by_redis = live.iter().filter(|c| c.by_redis()).count();
    let max_mixed = calls.iter().map(|c| c.took).max().unwrap_or_default();
    println!(
        "fault cluster master {fault}: under mixed load, {by_redis} of {} calls for the live \
         masters' keys decided by Redis; max call latency {max_mixed:?}",
        live.len(),
    );
    assert!(max_mixed <= TIMEOUT + MARGIN, "a call took {max_mixed:?}");
    // A call may miss its timeout on a busy machine; the routing must not.
    assert!(
        by_redis * 100 >= live.len() * 95,
        "{by_redis} of {}",
        live.len()
    );

    if freeze {
        cluster.nodes()[2].signal("-CONT");
    } else {
        cluster.nodes_mut()[2].restart();
    }
    let restarted = Instant::now();
    let name = &names[2][2 * ROUNDS];
    let back = loop {
        let (outcomes, _) = burst(&runtime, &limiter, name, 1);
        if outcomes[0].0 == DecidedBy::Backend {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < RECOVERY_BOUND,
            "the master's keys did not go back to Redis"
        );
        thread::sleep(Duration::from_millis(20));
    };
    println!(
        "fault cluster master {fault}: max call latency {max_live:?} on live masters, {max_dead:?} \
         on the stopped one (timeout {TIMEOUT:?}); its keys back on Redis {back:?} after it came \
         back"
    );
    assert!(max_live <= TIMEOUT + MARGIN && max_dead <= TIMEOUT + MARGIN);
}

// Security, on the Redis side: credentials through the URL, and TLS.

/// A limiter that reports every failure (no policy hides it), on `connection` and `prefix`.
fn strict(connection: RedisConnection, prefix: &str) -> RedisLimiter<Elapsed> {
    RedisLimiter::builder(Quota::per_hour(10).unwrap())
        .prefix(prefix)
        .timeout(Duration::from_secs(2))
        .failure_policy(FailurePolicy::ReturnError)
        .clock(Elapsed::new())
        .build(connection)
        .unwrap()
}

/// Connecting must fail with a typed error, soon, and without repeating `secret`.
fn assert_refused(runtime: &Runtime, url: &str, secret: &str) -> Error {
    let started = Instant::now();
    let error = runtime
        .block_on(RedisConnection::connect(url))
        .expect_err("connecting must fail");
    let took = started.elapsed();
    println!("security: {url:?} refused in {took:?}: {error}");
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    assert!(!error.to_string().contains(secret), "{error}");
    // redis-rs's connection manager tries a few times with backoff before it gives up.
    assert!(
        took < Duration::from_secs(15),
        "{url}: refused after {took:?}"
    );
    error
}

#[test]
fn security_password_and_acl_user_through_the_url() {
    let runtime = runtime();
    let server = RedisServer::with_args(&["--requirepass", "pw-s3cret"]);
    // A user that may touch only its own prefix's keys.
    let acl = [
        "ACL", "SETUSER", "limiter", "on", ">us3r-pw", "~acl:*", "+@all",
    ];
    assert!(server.command(&acl).contains("OK"));
    let port = server.port();

    let url = format!("redis://:pw-s3cret@127.0.0.1:{port}/");
    let connection = runtime.block_on(RedisConnection::connect(&url)).unwrap();
    let d = runtime
        .block_on(strict(connection, "pw").check("k"))
        .unwrap();
    assert_eq!((d.decided_by(), d.remaining()), (DecidedBy::Backend, 9));

    let url = format!("redis://limiter:us3r-pw@127.0.0.1:{port}/");
    let connection = runtime.block_on(RedisConnection::connect(&url)).unwrap();
    let d = runtime
        .block_on(strict(connection.clone(), "acl").check("k"))
        .unwrap();
    assert_eq!((d.decided_by(), d.remaining()), (DecidedBy::Backend, 9));
    // Outside its key pattern the user is refused by Redis: a typed error, not a count.
    let error = runtime
        .block_on(strict(connection, "other").check("k"))
        .unwrap_err();
    assert!(
        matches!(&error, Error::Backend { kind: BackendErrorKind::Protocol, detail } if detail.to_lowercase().contains("noperm")),
        "{error:?}"
    );
    assert_eq!(server.command(&["KEYS", "other:*"]), "*0\r\n");
}

#[test]
fn security_wrong_or_missing_password_is_a_typed_error() {
    let runtime = runtime();
    let server = RedisServer::with_args(&["--requirepass", "pw-s3cret"]);
    let port = server.port();
    assert_refused(
        &runtime,
        &format!("redis://:wr0ng-pw@127.0.0.1:{port}/"),
        "wr0ng-pw",
    );
    assert_refused(
        &runtime,
        &format!("redis://nobody:wr0ng-pw@127.0.0.1:{port}/"),
        "wr0ng-pw",
    );
    // Without a password redis-rs connects (nothing is asked until the first command), and
    // Redis refuses every decision (NOAUTH, or a protocol error for an unauthenticated
    // command this long): a typed error, or the policy's answer.
    let url = format!("redis://127.0.0.1:{port}/");
    match runtime.block_on(RedisConnection::connect(&url)) {
        Err(error) => assert!(matches!(error, Error::Backend { .. }), "{error:?}"),
        Ok(connection) => {
            let error = runtime
                .block_on(strict(connection.clone(), "noauth").check("k"))
                .unwrap_err();
            assert!(
                matches!(
                    error,
                    Error::Backend {
                        kind: BackendErrorKind::Protocol,
                        ..
                    }
                ),
                "{error:?}"
            );
            let closed = RedisLimiter::builder(Quota::per_hour(10).unwrap())
                .failure_policy(FailurePolicy::FailClosed)
                .clock(Elapsed::new())
                .build(connection)
                .unwrap();
            let d = runtime.block_on(closed.check("k")).unwrap();
            assert_eq!(d.decided_by(), DecidedBy::FailClosed);
        }
    }
}

/// The demo server names its Redis in its start-up log and errors, with the password masked.
#[cfg(feature = "tower")]
#[test]
fn security_the_demo_server_never_logs_the_password() {
    use crate::http::server_redis::Example;

    let server = RedisServer::with_args(&["--requirepass", "pw-s3cret"]);
    let port = server.port();
    for url in [
        format!("redis://:pw-s3cret@127.0.0.1:{port}/"),
        format!("redis://default:pw-s3cret@127.0.0.1:{port}/"),
    ] {
        let mut example = Example::spawn(&[("BIND", "127.0.0.1:0"), ("REDIS_URL", &url)]);
        example.wait_until_listening(Duration::from_secs(30));
        let log = example.stderr();
        assert!(!log.contains("pw-s3cret"), "{log}");
        assert!(log.contains(":***@127.0.0.1"), "{log}");
    }
    let url = format!("redis://:wr0ng-pw@127.0.0.1:{port}/");
    let mut example = Example::spawn(&[("BIND", "127.0.0.1:0"), ("REDIS_URL", &url)]);
    let status = example.wait_for_exit(Duration::from_secs(30));
    let log = example.stderr();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    assert!(!log.contains("wr0ng-pw"), "{log}");
    assert!(log.contains(":***@127.0.0.1"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// Runs the `openssl` CLI in `dir`; it must succeed.
#[cfg(feature = "tls")]
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run `openssl` ({err}): the TLS test needs it (`apt-get install openssl`)"
            )
        });
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A private CA (`ca.crt`) and a certificate for 127.0.0.1 it signed (`server.crt`,
/// `server.key`), valid for a day, in a new temp dir.
#[cfg(feature = "tls")]
fn certificates() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ratewindow-tls-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
            ^ u128::from(crate::support::redis_server::free_port(false))
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &dir,
        &[
            &[
                "req",
                "-x509",
                "-days",
                "1",
                "-subj",
                "/CN=ratewindow test CA",
            ][..],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ],
        ]
        .concat(),
    );
    openssl(
        &dir,
        &[
            &["req", "-subj", "/CN=127.0.0.1"][..],
            &ec[..],
            &["-keyout", "server.key", "-out", "server.csr"],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        // Client use too: cluster nodes authenticate each other on the bus with it.
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-extfile",
            "server.ext",
        ],
    );
    dir
}

/// `rediss://` to a real TLS redis-server, trusting the test's private CA; without it the
/// server's certificate is refused with a typed error.
#[cfg(feature = "tls")]
#[test]
fn security_tls_with_a_private_ca() {
    let runtime = runtime();
    let dir = certificates();
    let tls_port = crate::support::redis_server::free_port(false);
    let args = crate::support::redis_server::tls_args(&dir, tls_port);
    let server = RedisServer::with_args(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let ca = std::fs::read(dir.join("ca.crt")).unwrap();
    let url = format!("rediss://127.0.0.1:{tls_port}/");

    let connection = runtime
        .block_on(RedisConnection::connect_with_ca(&url, &ca))
        .expect("a TLS connection trusting the private CA");
    let limiter = strict(connection, "tls");
    for remaining in [9, 8] {
        let d = runtime.block_on(limiter.check("k")).unwrap();
        assert_eq!(
            (d.decided_by(), d.remaining()),
            (DecidedBy::Backend, remaining)
        );
    }
    // The counts are this server's, reached through its TLS port.
    assert_eq!(redis_count(&server, &format!("tls:{{k}}:{HOUR_MS}")), 2);
    let clients = server.command(&["INFO", "stats"]);
    assert!(
        !clients.contains("total_connections_received:0"),
        "{clients}"
    );

    // The system's roots do not know the private CA.
    let started = Instant::now();
    let error = runtime
        .block_on(RedisConnection::connect(&url))
        .expect_err("an untrusted certificate");
    let took = started.elapsed();
    println!("security: TLS without the CA refused in {took:?}: {error}");
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    // Regression: an untrusted certificate, like a wrong password, was retried by the
    // connection manager with backoff for about ten seconds before connecting failed.
    assert!(took < Duration::from_secs(2), "refused after {took:?}");
    // A CA that is not PEM trusts nothing: the server's certificate is refused.
    let error = runtime
        .block_on(RedisConnection::connect_with_ca(&url, b"not a certificate"))
        .expect_err("no certificate");
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    // A plain URL is the caller's configuration: refused before any connection.
    let plain = url.replacen("rediss://", "redis://", 1);
    let error = runtime
        .block_on(RedisConnection::connect_with_ca(&plain, &ca))
        .expect_err("not rediss://");
    assert_eq!(
        error,
        Error::InvalidConfig {
            reason: "a TLS connection with a CA needs a rediss:// URL"
        }
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// Tenant isolation: user keys are input, and must never reach another tenant's counters.

/// User keys built to collide with, or address, other keys: braces (the hash tag), the
/// escape character, the window suffix, glob characters, control bytes, and other tenants'
/// whole Redis keys.
const HOSTILE_KEYS: &[&str] = &[
    "a",
    "{a}",
    "a}",
    "{a",
    "}a{",
    "a}:x",
    "a}:3600000",
    "a:3600000",
    ":3600000",
    "{}",
    "}{",
    "%",
    "%7Ba%7D",
    "%7Ba%7D%",
    "%257Ba%257D",
    "*",
    "a*",
    "?",
    "[a-z]",
    "\\*",
    "\x01",
    "a\x01",
    "\t",
    "\r\n",
    "a\r\nb",
    "\x1b[0m",
    "\x7f",
    " ",
    "é{",
];

/// A cluster reached over TLS only, with a private CA: the router connects to every master at
/// the address and TLS port `CLUSTER SLOTS` names (an IP address, which the test certificate
/// carries as `subjectAltName=IP:127.0.0.1`), with the seed's CA, and every key is decided by
/// its own master. Without the CA, the system's roots refuse the nodes.
#[cfg(feature = "tls")]
#[test]
fn security_tls_to_a_cluster_with_a_private_ca() {
    let runtime = runtime();
    let dir = certificates();
    let cluster = RedisCluster::with_tls(&dir);
    let ca = std::fs::read(dir.join("ca.crt")).unwrap();
    let urls = cluster.tls_urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let connection = runtime
        .block_on(RedisConnection::connect_cluster_with_ca(&urls, &ca))
        .expect("a TLS cluster connection trusting the private CA");
    let limiter = strict(connection, "tlsc");
    // Keys until every master has served one.
    let mut served = [0u64; 3];
    for i in 0.. {
        if served.iter().all(|&n| n > 0) {
            break;
        }
        assert!(i < 1_000, "three masters never all served: {served:?}");
        let name = format!("tenant-{i}");
        let redis_key = format!("tlsc:{{{name}}}:{HOUR_MS}");
        let master = cluster.owner(&redis_key);
        for remaining in [9, 8] {
            let d = runtime.block_on(limiter.check(&name)).unwrap();
            assert_eq!(
                (d.decided_by(), d.remaining()),
                (DecidedBy::Backend, remaining)
            );
        }
        assert_eq!(redis_count(&cluster.nodes()[master], &redis_key), 2);
        served[master] += 1;
    }
    // The system's roots do not know the private CA.
    let error = runtime
        .block_on(RedisConnection::connect_cluster(&urls))
        .expect_err("an untrusted certificate");
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    // A CA goes with TLS only.
    let plain: Vec<String> = cluster.urls();
    let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
    let error = runtime
        .block_on(RedisConnection::connect_cluster_with_ca(&plain, &ca))
        .expect_err("a plain URL with a CA");
    assert!(matches!(error, Error::InvalidConfig { .. }), "{error:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// For every pair of distinct user keys and prefixes the Redis keys differ, and counting one
/// never charges, resets or addresses another.
#[test]
fn isolation_hostile_keys_and_prefixes_never_share_counters() {
    let runtime = runtime();
    let server = RedisServer::new();
    let connection = runtime
        .block_on(RedisConnection::connect(&server.url()))
        .unwrap();
    // Prefixes sharing a server, one a prefix of another.
    let prefixes = ["iso", "iso:", "iso:a", "isoa", "iso%7B"];
    let limiters: Vec<_> = prefixes
        .iter()
        .map(|prefix| {
            RedisLimiter::builder(Quota::per_hour(1_000).unwrap())
                .prefix(*prefix)
                .timeout(Duration::from_secs(2))
                .failure_policy(FailurePolicy::ReturnError)
                .clock(Elapsed::new())
                .build(connection.clone())
                .unwrap()
        })
        .collect();
    let mut keys: Vec<String> = HOSTILE_KEYS.iter().map(|k| k.to_string()).collect();
    // Every tenant's own Redis key names, given as user keys.
    for prefix in prefixes {
        for key in ["a", "{a}", "*"] {
            keys.push(format!("{prefix}:{{{key}}}:{HOUR_MS}"));
        }
    }
    let cost = |p: usize, k: usize| ((p * keys.len() + k) % 40 + 1) as u64;
    runtime.block_on(async {
        for (p, limiter) in limiters.iter().enumerate() {
            for (k, key) in keys.iter().enumerate() {
                let d = limiter.check_n(key, cost(p, k)).await.unwrap();
                assert_eq!(
                    d.quotas()[0].used(),
                    cost(p, k),
                    "{:?} {key:?}",
                    prefixes[p]
                );
            }
        }
        // One Redis key per prefix and user key: none shared.
        let stored = server.command(&["DBSIZE"]);
        let expected = prefixes.len() * keys.len();
        assert_eq!(stored, format!(":{expected}\r\n"));
        // Each still holds exactly its own charge: one more unit shows it.
        for (p, limiter) in limiters.iter().enumerate() {
            for (k, key) in keys.iter().enumerate() {
                let d = limiter.check(key).await.unwrap();
                assert_eq!(
                    d.quotas()[0].used(),
                    cost(p, k) + 1,
                    "{:?} {key:?}",
                    prefixes[p]
                );
            }
        }
        // Resetting one key resets no other.
        limiters[0].reset("a").await.unwrap();
        for (p, limiter) in limiters.iter().enumerate() {
            for (k, key) in keys.iter().enumerate() {
                let expected = if (p, key.as_str()) == (0, "a") {
                    0
                } else {
                    cost(p, k) + 1
                };
                let d = limiter.peek(key).await.unwrap();
                assert_eq!(
                    d.quotas()[0].used(),
                    expected + 1,
                    "{:?} {key:?}",
                    prefixes[p]
                );
            }
        }
    });
    assert_every_key_expires(&server, "iso");
}
