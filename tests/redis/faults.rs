//! Faults under load against a real `redis-server` process and real signals: the server killed
//! and restarted, frozen (SIGSTOP), paused (`CLIENT PAUSE`), asleep (`DEBUG SLEEP`), its scripts
//! flushed, its memory full. A Cluster master down is in `cluster.rs`.
//!
//! Each fault runs 64 tasks deciding on one limiter (`load.rs`) while the test injects the
//! fault, then checks that nothing panicked, that no call outlived the timeout by more than a
//! scheduling margin, that the failure policy answered while Redis could not, that the limiter
//! went back to Redis by itself, that Redis's counts agree with the decisions, and that every
//! key still has a TTL. `cargo test --all-features faults -- --nocapture` prints the figures.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use ratewindow::{
    BackendErrorKind, DecidedBy, Error, FailurePolicy, Quota, RedisConnection, RedisLimiter,
};
use tokio::runtime::Runtime;

use super::load::{Call, Load, MARGIN, TIMEOUT, key_name};
use super::{HOUR_MS, assert_every_key_expires, redis_count};
use crate::support::redis_server::RedisServer;
use crate::support::{Elapsed, runtime};

/// How long a fault lasts: several timeouts and several breaker intervals (250 ms).
const FAULT: Duration = Duration::from_millis(1_000);

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
