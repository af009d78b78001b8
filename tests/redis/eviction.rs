//! A Redis that may evict keys may evict counters, and a lost counter lets its window admit its
//! limit again: against real servers, the limiter finds such a server (by `CONFIG GET`, or
//! `INFO` where `CONFIG` is renamed), warns of it once per change, counts the keys it evicts,
//! refuses it when asked to, and takes it back once it is set to `noeviction`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratewindow::{
    BackendErrorKind, DecidedBy, Error, FailurePolicy, ManualClock, Quota, RateLimiter,
    RedisConnection, RedisLimiter, RedisLimiterBuilder, RedisWarning,
};

use crate::support::block_on;
use crate::support::redis_server::{RedisCluster, RedisServer};

const T0_MS: u64 = 1_800_000_000_000;
/// Generous: tests run unoptimised on a shared two-core machine.
const TEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The default interval between checks.
const INTERVAL: Duration = Duration::from_secs(60);

/// Every warning the hook was given, in order.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<RedisWarning>>>);

impl Warnings {
    fn all(&self) -> Vec<RedisWarning> {
        self.0.lock().unwrap().clone()
    }
}

/// A limiter builder (one per hour, on `prefix`) whose warnings go to the returned recorder.
fn builder(clock: &ManualClock, prefix: &str) -> (RedisLimiterBuilder<ManualClock>, Warnings) {
    let warnings = Warnings::default();
    let sink = warnings.clone();
    let builder = RedisLimiter::builder(Quota::per_hour(1_000).unwrap())
        .prefix(prefix)
        .timeout(TEST_TIMEOUT)
        .clock(clock.clone())
        .on_warning(move |warning| sink.0.lock().unwrap().push(warning.clone()));
    (builder, warnings)
}

fn connect(server: &RedisServer) -> RedisConnection {
    block_on(RedisConnection::connect(&server.url())).expect("connect")
}

fn decided_by(limiter: &RedisLimiter<ManualClock>) -> DecidedBy {
    block_on(limiter.check("k"))
        .expect("a decision")
        .decided_by()
}

/// Calls until `limiter` is decided by `wanted`, letting the background check run between
/// calls; panics after about 5 s.
fn until_decided_by(limiter: &RedisLimiter<ManualClock>, wanted: DecidedBy) {
    for _ in 0..500 {
        if decided_by(limiter) == wanted {
            return;
        }
        pause(Duration::from_millis(10));
    }
    panic!("the limiter was not decided by {wanted:?} within 5 s");
}

/// Lets the runtime run the background checks for `duration`.
fn pause(duration: Duration) {
    block_on(async { tokio::time::sleep(duration).await });
}

fn is_evicting(warning: &RedisWarning, wanted: &str) -> bool {
    matches!(warning, RedisWarning::EvictingPolicy { policy, .. } if policy == wanted)
}

/// How many times the server ran `CONFIG GET` (once per check where `CONFIG` is enabled).
fn config_gets(server: &RedisServer) -> u64 {
    server
        .command(&["INFO", "commandstats"])
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_config|get:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_server_that_never_evicts_is_not_warned_of() {
    let server = RedisServer::new();
    let clock = ManualClock::at_millis(T0_MS);
    let (builder, warnings) = builder(&clock, "safe");
    let limiter = builder.build(connect(&server)).unwrap();

    let report = block_on(limiter.check_eviction()).unwrap();
    let [reading] = report.servers() else {
        panic!("one reading for one server: {report:?}");
    };
    assert_eq!(reading.node, None);
    assert_eq!(reading.policy.as_deref(), Some("noeviction"));
    assert_eq!(reading.maxmemory, Some(0));
    assert_eq!(reading.evicted_keys, Some(0));
    assert_eq!(
        reading.evicted_since_last_check, None,
        "the first is the baseline"
    );
    assert!(!report.may_evict());
    assert!(report.warnings().is_empty());

    // The first call checks too, in the background; it finds nothing either.
    assert_eq!(config_gets(&server), 1);
    for _ in 0..50 {
        assert_eq!(decided_by(&limiter), DecidedBy::Backend);
    }
    for _ in 0..500 {
        if config_gets(&server) == 2 {
            break;
        }
        pause(Duration::from_millis(10));
    }
    assert_eq!(config_gets(&server), 2, "one check for 50 calls");
    let again = block_on(limiter.check_eviction()).unwrap();
    assert_eq!(again.servers()[0].evicted_since_last_check, Some(0));
    assert!(warnings.all().is_empty(), "{:?}", warnings.all());
}

#[test]
fn the_first_call_finds_an_evicting_server_and_refuses_it() {
    let server = RedisServer::with_args(&["--maxmemory-policy", "allkeys-lru"]);
    let clock = ManualClock::at_millis(T0_MS);
    let (builder, warnings) = builder(&clock, "first");
    let limiter = builder
        .refuse_evicting_server()
        .failure_policy(FailurePolicy::FailClosed)
        .build(connect(&server))
        .unwrap();
    // Nobody awaited a check: the first call starts one and is decided before it answers.
    assert_eq!(decided_by(&limiter), DecidedBy::Backend);
    until_decided_by(&limiter, DecidedBy::FailClosed);
    for _ in 0..100 {
        assert_eq!(decided_by(&limiter), DecidedBy::FailClosed);
    }
    let warnings = warnings.all();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(is_evicting(&warnings[0], "allkeys-lru"), "{warnings:?}");
}

#[test]
fn an_evicting_policy_is_warned_of_once_and_refused_until_noeviction() {
    let server = RedisServer::new();
    let clock = ManualClock::at_millis(T0_MS);
    let (builder, warnings) = builder(&clock, "flip");
    let connection = connect(&server);
    let limiter = builder
        .clone()
        .refuse_evicting_server()
        .failure_policy(FailurePolicy::FailClosed)
        .build(connection.clone())
        .unwrap();
    // The same, returning the error, to read it.
    let strict = builder
        .refuse_evicting_server()
        .failure_policy(FailurePolicy::ReturnError)
        .build(connection)
        .unwrap();
    assert!(!block_on(limiter.check_eviction()).unwrap().may_evict());
    assert_eq!(decided_by(&limiter), DecidedBy::Backend);

    assert!(
        server
            .command(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"])
            .contains("OK")
    );
    let report = block_on(limiter.check_eviction()).unwrap();
    assert!(report.may_evict());
    let [warning] = &report.warnings()[..] else {
        panic!("one warning: {report:?}");
    };
    assert!(
        matches!(warning, RedisWarning::EvictingPolicy { node: None, policy, maxmemory: Some(0), .. } if policy == "allkeys-lru"),
        "{warning:?}"
    );
    assert_eq!(warnings.all(), std::slice::from_ref(warning));
    // Refused from now on: the failure policy answers.
    let denied = block_on(limiter.check("k")).unwrap();
    assert_eq!(denied.decided_by(), DecidedBy::FailClosed);
    assert!(!denied.is_allowed());

    // Checked again and again (each due call starts one), and called many times: still one
    // warning.
    block_on(strict.check_eviction()).unwrap();
    for _ in 0..3 {
        clock.advance(INTERVAL);
        for _ in 0..50 {
            assert_eq!(decided_by(&limiter), DecidedBy::FailClosed);
        }
        block_on(limiter.check_eviction()).unwrap();
    }
    let error = block_on(strict.check("k")).unwrap_err();
    match &error {
        Error::Backend {
            kind: BackendErrorKind::Unavailable,
            detail,
        } => assert_eq!(
            detail,
            "the Redis server may evict counters (maxmemory-policy allkeys-lru); set \
             maxmemory-policy noeviction"
        ),
        other => panic!("{other:?}"),
    }

    // Back to noeviction: the next due check (not an explicit one) gives it back to Redis.
    assert!(
        server
            .command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
            .contains("OK")
    );
    assert_eq!(decided_by(&limiter), DecidedBy::FailClosed, "not due yet");
    clock.advance(INTERVAL);
    until_decided_by(&limiter, DecidedBy::Backend);
    let warnings = warnings.all();
    // One from `limiter`, one from `strict`: each limiter warns once.
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings.iter().all(|w| is_evicting(w, "allkeys-lru")));
}

#[test]
fn keys_evicted_between_checks_are_reported() {
    let server = RedisServer::new();
    let clock = ManualClock::at_millis(T0_MS);
    let (builder, warnings) = builder(&clock, "evicted");
    let limiter = builder.build(connect(&server)).unwrap();
    let baseline = block_on(limiter.check_eviction()).unwrap();
    assert_eq!(baseline.servers()[0].evicted_keys, Some(0));

    // A megabyte above what is used now, then 4 MB of junk: the server evicts.
    let used: u64 = server
        .command(&["INFO", "memory"])
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse().ok())
        .expect("used_memory");
    let maxmemory = used + (1 << 20);
    for (name, value) in [
        ("maxmemory-policy", "allkeys-lru".to_owned()),
        ("maxmemory", maxmemory.to_string()),
    ] {
        assert!(
            server
                .command(&["CONFIG", "SET", name, &value])
                .contains("OK")
        );
    }
    let junk = "x".repeat(64 << 10);
    for i in 0..64 {
        assert_eq!(
            server.command(&["SET", &format!("junk:{i}"), &junk]),
            "+OK\r\n"
        );
    }

    let report = block_on(limiter.check_eviction()).unwrap();
    let reading = &report.servers()[0];
    let evicted = reading.evicted_since_last_check.expect("a growth");
    assert!(evicted >= 32, "{reading:?}");
    assert_eq!(reading.evicted_keys, Some(evicted));
    assert_eq!(reading.maxmemory, Some(maxmemory));
    let warned = warnings.all();
    assert_eq!(report.warnings(), warned);
    match &warned[..] {
        [
            RedisWarning::EvictingPolicy {
                node: None,
                policy,
                maxmemory: Some(limit),
                ..
            },
            RedisWarning::KeysEvicted {
                node: None,
                evicted: count,
                ..
            },
        ] => {
            assert_eq!((policy.as_str(), *limit), ("allkeys-lru", maxmemory));
            assert_eq!(*count, evicted);
        }
        other => panic!("{other:?}"),
    }
    assert!(warned[1].to_string().starts_with(&format!(
        "Redis evicted {evicted} keys since the last check"
    )),);
}

#[test]
fn the_policy_is_read_from_info_where_config_is_renamed() {
    let server = RedisServer::with_args(&[
        "--rename-command",
        "CONFIG",
        "",
        "--maxmemory-policy",
        "volatile-lru",
        "--maxmemory",
        "64mb",
    ]);
    assert!(
        server
            .command(&["CONFIG", "GET", "maxmemory-policy"])
            .starts_with("-ERR unknown command"),
    );
    let clock = ManualClock::at_millis(T0_MS);
    let (builder, warnings) = builder(&clock, "renamed");
    let limiter = builder.build(connect(&server)).unwrap();
    let report = block_on(limiter.check_eviction()).unwrap();
    let reading = &report.servers()[0];
    assert_eq!(reading.policy.as_deref(), Some("volatile-lru"));
    assert_eq!(reading.maxmemory, Some(64 << 20));
    assert_eq!(reading.evicted_keys, Some(0));
    assert!(report.may_evict());
    let warnings = warnings.all();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(is_evicting(&warnings[0], "volatile-lru"));
}

#[test]
fn a_policy_no_command_can_read_is_warned_of_and_not_refused() {
    let server = RedisServer::new();
    // A user that may run everything but CONFIG and INFO, as on some managed services.
    let acl = [
        "ACL", "SETUSER", "limiter", "on", ">us3r-pw", "~*", "+@all", "-config", "-info",
    ];
    assert!(server.command(&acl).contains("OK"));
    let url = format!("redis://limiter:us3r-pw@127.0.0.1:{}/", server.port());
    let connection = block_on(RedisConnection::connect(&url)).unwrap();
    let clock = ManualClock::at_millis(T0_MS);
    let (builder, warnings) = builder(&clock, "hidden");
    let limiter = builder
        .refuse_evicting_server()
        .failure_policy(FailurePolicy::FailClosed)
        .build(connection)
        .unwrap();
    for _ in 0..2 {
        let report = block_on(limiter.check_eviction()).unwrap();
        let reading = &report.servers()[0];
        assert_eq!((&reading.policy, reading.evicted_keys), (&None, None));
        assert!(!report.may_evict());
        let found = report.warnings();
        assert!(
            matches!(&found[..], [RedisWarning::PolicyUnknown { node: None, .. }]),
            "{found:?}"
        );
    }
    let warned = warnings.all();
    assert!(
        matches!(
            &warned[..],
            [RedisWarning::PolicyUnknown { node: None, .. }]
        ),
        "{warned:?}"
    );
    assert_eq!(decided_by(&limiter), DecidedBy::Backend);
}

#[test]
fn with_automatic_checks_off_only_check_eviction_checks() {
    let server = RedisServer::with_args(&["--maxmemory-policy", "allkeys-random"]);
    let clock = ManualClock::at_millis(T0_MS);
    let (builder, warnings) = builder(&clock, "manual");
    let limiter = builder
        .eviction_check_interval(Duration::ZERO)
        .refuse_evicting_server()
        .failure_policy(FailurePolicy::FailClosed)
        .build(connect(&server))
        .unwrap();
    for _ in 0..3 {
        assert_eq!(decided_by(&limiter), DecidedBy::Backend);
        clock.advance(Duration::from_secs(3_600));
    }
    pause(Duration::from_millis(50));
    assert_eq!(config_gets(&server), 0);
    assert!(warnings.all().is_empty());

    assert!(block_on(limiter.check_eviction()).unwrap().may_evict());
    assert_eq!(decided_by(&limiter), DecidedBy::FailClosed);
    assert_eq!(warnings.all().len(), 1);
    assert_eq!(config_gets(&server), 1);
}

#[test]
fn every_cluster_master_is_checked() {
    let cluster = RedisCluster::new();
    let connection = crate::redis::cluster_connection(&cluster);
    let clock = ManualClock::at_millis(T0_MS);
    let (builder, warnings) = builder(&clock, "cluster");
    let limiter = builder
        .refuse_evicting_server()
        .failure_policy(FailurePolicy::FailClosed)
        .build(connection)
        .unwrap();
    let report = block_on(limiter.check_eviction()).unwrap();
    let mut nodes: Vec<String> = report
        .servers()
        .iter()
        .map(|reading| reading.node.clone().expect("a master's address"))
        .collect();
    nodes.sort();
    let mut expected: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|node| format!("127.0.0.1:{}", node.port()))
        .collect();
    expected.sort();
    assert_eq!(nodes, expected);
    assert!(!report.may_evict());
    assert_eq!(decided_by(&limiter), DecidedBy::Backend);

    // One master of three evicts: it is named, and the limiter refuses the cluster.
    let evicting = &cluster.nodes()[1];
    assert!(
        evicting
            .command(&["CONFIG", "SET", "maxmemory-policy", "volatile-ttl"])
            .contains("OK")
    );
    let report = block_on(limiter.check_eviction()).unwrap();
    let node = format!("127.0.0.1:{}", evicting.port());
    let [warning] = &report.warnings()[..] else {
        panic!("one warning: {report:?}");
    };
    assert_eq!(warning.node(), Some(node.as_str()));
    assert!(is_evicting(warning, "volatile-ttl"));
    assert_eq!(warnings.all(), std::slice::from_ref(warning));
    // Refused as a whole, the keys of the other masters too.
    assert_eq!(decided_by(&limiter), DecidedBy::FailClosed);
}
