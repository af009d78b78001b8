//! Redis Cluster, on real clusters of three masters: the conformance table; a slot resharded
//! under a warm slot map (`ASK`, then `MOVED`) and migrated counter by counter under load
//! (`TRYAGAIN`); a password in the seed URL. Then faults: a master frozen or killed under load
//! and under bursts (only its own keys follow the failure policy), the breaker opening for
//! every slot of a failed master but not for an error about one key or a timeout after a
//! redirect, and a connection made again only when its master stops answering.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use ratewindow::{
    DecidedBy, FailurePolicy, ManualClock, Quota, RateLimiter, RedisConnection, RedisLimiter,
};
use tokio::runtime::Runtime;

use super::load::{Call, KEYS, Load, MARGIN, RECOVERY_BOUND, TIMEOUT, key_name};
use super::{
    HOUR_MS, Redis, TEST_TIMEOUT, assert_every_key_expires, cluster_connection, counter, one_value,
    redis_count,
};
use crate::support::redis_server::{RedisCluster, RedisServer};
use crate::support::{Elapsed, block_on, runtime};

/// A minute and hour boundary: where the manual clocks of the resharding tests start.
const T0_MS: u64 = 1_800_000_000_000;

#[test]
fn redis_cluster_passes_the_conformance_table() {
    let cluster = RedisCluster::new();
    crate::conformance::run(&Redis::cluster(&cluster));
}

/// A slot resharded while a limiter uses it, by the steps `redis-cli --cluster reshard` takes:
/// the limiter's warm slot map still names the old master throughout, and every decision is
/// made by Redis and counted exactly. While the slot migrates, the old master answers `ASK` for
/// the key it no longer holds, and the call must be sent with `ASKING` to the new one; once the
/// slot is reassigned, the old master answers `MOVED`, and the call must follow it.
#[test]
fn a_resharded_slot_is_followed_through_ask_and_moved() {
    let cluster = RedisCluster::new();
    let connection = cluster_connection(&cluster);
    const LIMIT: u64 = 100;
    let limiter = RedisLimiter::builder(Quota::per_hour(LIMIT).unwrap())
        .prefix("moved")
        .timeout(TEST_TIMEOUT)
        .failure_policy(FailurePolicy::ReturnError)
        .clock(ManualClock::at_millis(T0_MS))
        .build(connection)
        .unwrap();
    let key = "moving-tenant";
    let redis_key = counter("moved", key, 3_600_000, T0_MS);
    let nodes = cluster.nodes();
    let slot = one_value(&nodes[0].command(&["CLUSTER", "KEYSLOT", &redis_key])).to_owned();
    let source = (0..3)
        .find(|&i| {
            !nodes[i]
                .command(&["EXISTS", &redis_key])
                .starts_with("-MOVED")
        })
        .expect("an owner");
    let target = (source + 1) % 3;
    let id = |i: usize| one_value(&nodes[i].command(&["CLUSTER", "MYID"])).to_owned();
    let (source_id, target_id) = (id(source), id(target));
    let mut used = 0;
    let mut check = |when: &str| {
        let decision = block_on(limiter.check(key)).unwrap_or_else(|e| panic!("{when}: {e}"));
        used += 1;
        assert_eq!(decision.decided_by(), DecidedBy::Backend, "{when}");
        assert_eq!(decision.remaining(), LIMIT - used, "{when}");
    };
    let count = |i: usize| {
        let value = nodes[i].command(&["GET", &redis_key]);
        one_value(&value).parse::<u64>().unwrap()
    };

    check("before");
    check("before");
    let ok = |reply: String| assert!(reply.starts_with("+OK"), "{reply}");
    ok(nodes[target].command(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &source_id]));
    ok(nodes[source].command(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &target_id]));
    // Still on the old master, which serves the keys it holds.
    check("migrating, the key not moved yet");
    let target_port = nodes[target].port().to_string();
    ok(nodes[source].command(&[
        "MIGRATE",
        "127.0.0.1",
        &target_port,
        &redis_key,
        "0",
        "5000",
    ]));
    // The old master answers ASK: the call goes to the new one, with ASKING, and counts on
    // from the migrated count (which `remaining` shows).
    check("migrating, the key moved");
    check("migrating, the key moved");
    // The slot is the new master's: the old one answers MOVED, which the call follows.
    for i in [target, source, (source + 2) % 3] {
        ok(nodes[i].command(&["CLUSTER", "SETSLOT", &slot, "NODE", &target_id]));
    }
    check("moved");
    check("moved");
    assert_eq!(count(target), 7);
    assert!(
        nodes[source]
            .command(&["EXISTS", &redis_key])
            .starts_with("-MOVED")
    );
    let ttl: i64 = one_value(&nodes[target].command(&["PTTL", &redis_key]))
        .parse()
        .unwrap();
    assert!(ttl > 0, "PTTL {ttl}");
}

/// The password in the seed URL is used for every master the cluster names, not only the
/// seed: the router connects to masters by the addresses `CLUSTER SLOTS` gives.
#[test]
fn a_password_in_the_seed_url_reaches_every_master() {
    let cluster = RedisCluster::with_args(&["--requirepass", "s3cret"]);
    let seed = format!("redis://:s3cret@127.0.0.1:{}/", cluster.nodes()[0].port());
    let connection = block_on(RedisConnection::connect_cluster_with_timeout(
        &[&seed],
        TEST_TIMEOUT,
    ))
    .expect("connect to the cluster");
    let limiter = RedisLimiter::builder(Quota::per_hour(10).unwrap())
        .prefix("pw")
        .timeout(TEST_TIMEOUT)
        .failure_policy(FailurePolicy::ReturnError)
        .clock(ManualClock::at_millis(T0_MS))
        .build(connection)
        .unwrap();
    for i in 0..30 {
        let decision = block_on(limiter.check(&format!("tenant-{i}"))).expect("decided");
        assert_eq!(decision.decided_by(), DecidedBy::Backend);
    }
    for node in cluster.nodes() {
        let keys: u64 = one_value(&node.command(&["DBSIZE"])).parse().unwrap();
        assert!(keys > 0, "no key on the master at {}", node.port());
    }
}

/// A slot migrated key by key while 16 tasks decide its key. The key's two quotas have two
/// window lengths, so two counters, which the migration moves one at a time: while they are
/// split between the nodes, Redis answers `TRYAGAIN`, and the call is retried until the second
/// one has moved. Every decision is made by Redis, and each counter on the new master holds
/// exactly the admitted requests.
///
/// Regression test: `TRYAGAIN` was an error, so the key got the failure policy for as long as
/// its counters were split.
#[test]
fn a_slot_migrated_key_by_key_under_load_is_counted_exactly() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    let cluster = RedisCluster::new();
    let connection = cluster_connection(&cluster);
    let limiter = RedisLimiter::builder(Quota::per_minute(1_000_000).unwrap())
        .quota(Quota::per_hour(1_000_000).unwrap())
        .prefix("mig")
        .timeout(Duration::from_secs(1))
        .failure_policy(FailurePolicy::FailClosed)
        .clock(ManualClock::at_millis(T0_MS))
        .build(connection)
        .unwrap();
    let key = "migrating-tenant";
    let counters = [
        counter("mig", key, 60_000, T0_MS),
        counter("mig", key, 3_600_000, T0_MS),
    ];
    let nodes = cluster.nodes();
    let slot = one_value(&nodes[0].command(&["CLUSTER", "KEYSLOT", &counters[0]])).to_owned();
    let source = (0..3)
        .find(|&i| {
            !nodes[i]
                .command(&["EXISTS", &counters[0]])
                .starts_with("-MOVED")
        })
        .expect("an owner");
    let target = (source + 1) % 3;
    let id = |i: usize| one_value(&nodes[i].command(&["CLUSTER", "MYID"])).to_owned();
    let (source_id, target_id) = (id(source), id(target));
    let ok = |reply: String| assert!(reply.starts_with("+OK"), "{reply}");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (limiter, stop) = (limiter.clone(), stop.clone());
            runtime.spawn(async move {
                let mut outcomes = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let decision = limiter.check(key).await.expect("a policy answers");
                    outcomes.push((decision.decided_by(), decision.is_allowed()));
                }
                outcomes
            })
        })
        .collect();
    let pause = || std::thread::sleep(Duration::from_millis(100));
    pause();
    ok(nodes[target].command(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &source_id]));
    ok(nodes[source].command(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &target_id]));
    pause();
    let target_port = nodes[target].port().to_string();
    for counter in &counters {
        ok(nodes[source].command(&["MIGRATE", "127.0.0.1", &target_port, counter, "0", "5000"]));
        // Split for a while: calls meet `TRYAGAIN` (then, moved, `ASK`).
        pause();
    }
    for i in [target, source, (source + 2) % 3] {
        ok(nodes[i].command(&["CLUSTER", "SETSLOT", &slot, "NODE", &target_id]));
    }
    pause();
    stop.store(true, Ordering::Relaxed);
    let outcomes: Vec<(DecidedBy, bool)> = tasks
        .into_iter()
        .flat_map(|task| runtime.block_on(task).expect("no task panicked"))
        .collect();
    let by_policy = outcomes
        .iter()
        .filter(|o| o.0 != DecidedBy::Backend)
        .count();
    let admitted = outcomes.iter().filter(|o| o.1).count() as u64;
    assert_eq!(
        by_policy,
        0,
        "{by_policy} of {} by the policy",
        outcomes.len()
    );
    for counter in &counters {
        let counted: u64 = one_value(&nodes[target].command(&["GET", counter]))
            .parse()
            .unwrap();
        assert_eq!(counted, admitted, "{counter}");
    }
    assert!(admitted > 100, "too few calls to tell: {admitted}");
}

// Faults: a master frozen or killed, the breaker per master and per slot, connections made
// again.

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
    let clock = ManualClock::at_millis(Elapsed::T0_MS);
    let limiter = fail_closed(connection, "br", clock.clone());
    let (frozen, live) = spread_over_master_2(&cluster, "br");
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

/// A killed master fails its first call at once (the connection is refused): a failure of the
/// master, not of one key, so the breaker opens for every slot it serves. A listener that
/// accepts and never answers then takes the master's port, so a key whose call still went
/// there would wait out the timeout.
///
/// Regression test: any error from the first send counted as an answer from the master, so a
/// refused connection opened the breaker for the failing key's slot alone.
#[test]
fn faults_cluster_a_killed_master_opens_the_breaker_for_every_slot_of_its_master() {
    let mut cluster = RedisCluster::with_args(&["--cluster-require-full-coverage", "no"]);
    let runtime = runtime();
    let connection = connect(&runtime, &cluster);
    let limiter = fail_closed(connection, "bk", ManualClock::at_millis(Elapsed::T0_MS));
    let (dead, live) = spread_over_master_2(&cluster, "bk");
    let check = |key: &str| {
        let started = Instant::now();
        let decision = runtime
            .block_on(limiter.check(key))
            .expect("a policy answers");
        (decision.decided_by(), started.elapsed())
    };
    assert_eq!(check(&dead[0]).0, DecidedBy::Backend);

    let port = cluster.nodes()[2].port();
    cluster.nodes_mut()[2].stop();
    assert_eq!(check(&dead[0]).0, DecidedBy::FailClosed);
    let silent = std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
    thread::spawn(move || silent.incoming().collect::<Vec<_>>());
    for key in &dead[1..] {
        let (by, took) = check(key);
        assert_eq!(by, DecidedBy::FailClosed, "{key}");
        assert!(took < TIMEOUT / 2, "{key} waited {took:?}");
    }
    assert_eq!(check(&live).0, DecidedBy::Backend);
}

/// A live master that answers `CLUSTERDOWN` for one slot it no longer serves (here after
/// `CLUSTER DELSLOTS`, as with a stale map under `cluster-require-full-coverage no`) has
/// answered: that slot follows the policy, and the master's other slots stay on Redis.
///
/// Regression test: while a refused connection was first made a master's failure, every error
/// that `fails_master` names counted, this reply included, and it sent all of the master's keys
/// to the failure policy.
#[test]
fn faults_cluster_a_slot_not_served_keeps_its_master_in_use() {
    let cluster = RedisCluster::with_args(&["--cluster-require-full-coverage", "no"]);
    let runtime = runtime();
    let connection = connect(&runtime, &cluster);
    let limiter = fail_closed(connection, "ns", ManualClock::at_millis(Elapsed::T0_MS));
    let (keys, _) = spread_over_master_2(&cluster, "ns");
    let check = |key: &str| {
        runtime
            .block_on(limiter.check(key))
            .expect("a policy answers")
            .decided_by()
    };
    assert_eq!(check(&keys[0]), DecidedBy::Backend);
    let redis_key = format!("ns:{{{}}}:{HOUR_MS}", keys[0]);
    let slot = cluster.nodes()[2].command(&["CLUSTER", "KEYSLOT", &redis_key]);
    let slot = slot.trim().trim_start_matches(':');
    assert_eq!(
        cluster.nodes()[2]
            .command(&["CLUSTER", "DELSLOTS", slot])
            .trim(),
        "+OK"
    );
    assert_eq!(check(&keys[0]), DecidedBy::FailClosed);
    for key in &keys[1..] {
        assert_eq!(check(key), DecidedBy::Backend, "{key}");
    }
}

/// A limiter of 5 an hour on `prefix`, answering fail-closed when Redis does not decide, with
/// the tests' timeout.
fn fail_closed(
    connection: RedisConnection,
    prefix: &str,
    clock: ManualClock,
) -> RedisLimiter<ManualClock> {
    RedisLimiter::builder(Quota::per_hour(5).unwrap())
        .prefix(prefix)
        .timeout(TIMEOUT)
        .failure_policy(FailurePolicy::FailClosed)
        .clock(clock)
        .build(connection)
        .unwrap()
}

/// 20 keys of master 2, each in a slot of its own, and one key of master 0, for a limiter
/// with `prefix` and an hourly quota.
fn spread_over_master_2(cluster: &RedisCluster, prefix: &str) -> (Vec<String>, String) {
    let redis_key = |name: &str| format!("{prefix}:{{{name}}}:{HOUR_MS}");
    let mut on_2: Vec<String> = Vec::new();
    let mut slots = BTreeSet::new();
    let mut on_0 = None;
    for i in 0.. {
        if on_2.len() >= 20 && on_0.is_some() {
            break;
        }
        let name = format!("spread-{i}");
        let slot = cluster.nodes()[0].command(&["CLUSTER", "KEYSLOT", &redis_key(&name)]);
        match cluster.owner(&redis_key(&name)) {
            2 if slots.insert(slot) => on_2.push(name),
            0 if on_0.is_none() => on_0 = Some(name),
            _ => {}
        }
    }
    (on_2, on_0.expect("some key is on master 0"))
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
    let clock = ManualClock::at_millis(Elapsed::T0_MS);
    let limiter = fail_closed(connection, "rd", clock);
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
    let limiter = fail_closed(connection, "wt", ManualClock::at_millis(Elapsed::T0_MS));
    // Only the hash tag matters for the slot; the counter that fails is this window's.
    let redis_key = |name: &str| crate::redis::counter("wt", name, HOUR_MS, Elapsed::T0_MS);
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

/// Stops (kills, or freezes with SIGSTOP) one master of three, checks bursts of calls for keys
/// on every master and a mixed load, then starts the master again (restart, or SIGCONT) and
/// waits for its keys to be decided by Redis. The live masters' keys must be decided by Redis
/// throughout, exactly.
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
