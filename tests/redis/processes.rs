//! Exactness across OS processes: three workers with skewed clocks share one real
//! `redis-server` for several windows, and every decision they make is checked against the
//! guarantee stated in `RedisLimiter`'s docs.
//!
//! A worker is this test binary run again as the ignored `worker` test, its role in environment
//! variables. I chose that over the demo server binary: it is always built from the code under
//! test, it hands over each `Decision` whole (its window, who decided it) with no HTTP in
//! between, and it takes a skewed clock, which the demo server has no setting for.

use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ratewindow::{
    Clock, DecidedBy, FailurePolicy, Quota, RateLimiter, RedisConnection, RedisLimiter, SystemClock,
};
use tokio::time::MissedTickBehavior;

use crate::redis::ttls;
use crate::support::redis_server::RedisServer;

const LIMIT: u64 = 20;
const WINDOW_MS: u64 = 1_000;
/// Each worker's requests per second per key: together the three offer about 90, 36, 18 and 9
/// per window against the limit of 20, so windows go both over and under it.
const KEYS: [(&str, u64); 4] = [("hot", 30), ("warm", 12), ("edge", 6), ("cold", 3)];
/// A client that moves from the fastest worker to the others: the fastest sends it 60 requests
/// a second for `HANDOFF_AT_MS` (filling each of its windows, the last one early), the others
/// from `TAKEOVER_AT_MS` on. The others then meet a counter last written by a clock 4 to 7 s
/// ahead of theirs, for a window their clocks have not reached.
const HANDOFF: (&str, u64) = ("handoff", 60);
const HANDOFF_AT_MS: u64 = 2_800;
const TAKEOVER_AT_MS: u64 = 3_000;
/// Concurrent tasks per key in each worker, so that a worker races with itself as well.
const TASKS_PER_KEY: u64 = 2;
/// Each worker's clock against the real one: one behind, one right, one ahead.
const OFFSETS_MS: [i64; 3] = [-3_000, 0, 4_000];
/// How far apart the clocks are: the skew allowance the local-clock limiters need.
const SPREAD_MS: u64 = 7_000;
/// Time for the workers to start before they all begin at one real instant.
const START_DELAY_MS: u64 = 1_000;
/// Six windows of load.
const RUN_MS: u64 = 6_000;
/// Generous: a timeout would be a failure, and the machine is shared.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The name of the worker test, as `--exact` wants it.
const WORKER_TEST: &str = "redis::processes::worker";

/// The system clock moved by a fixed offset: the clock of a process whose time is off. Built on
/// `SystemClock` rather than the coarse default so that the bounds below hold to the millisecond.
#[derive(Debug, Clone, Copy)]
struct SkewedClock {
    offset_ms: i64,
}

impl Clock for SkewedClock {
    fn now_ms(&self) -> u64 {
        SystemClock.now_ms().saturating_add_signed(self.offset_ms)
    }
}

/// What a worker is told, through environment variables.
#[derive(Debug, Clone)]
struct Role {
    url: String,
    prefix: String,
    offset_ms: i64,
    redis_time: bool,
    /// Real unix ms.
    start_ms: u64,
    end_ms: u64,
    out: PathBuf,
}

impl Role {
    const VARS: [&str; 7] = [
        "PROCESSES_URL",
        "PROCESSES_PREFIX",
        "PROCESSES_OFFSET_MS",
        "PROCESSES_REDIS_TIME",
        "PROCESSES_START_MS",
        "PROCESSES_END_MS",
        "PROCESSES_OUT",
    ];

    fn vars(&self) -> [(&'static str, String); 7] {
        let values = [
            self.url.clone(),
            self.prefix.clone(),
            self.offset_ms.to_string(),
            u8::from(self.redis_time).to_string(),
            self.start_ms.to_string(),
            self.end_ms.to_string(),
            self.out.display().to_string(),
        ];
        let mut values = values.into_iter();
        Self::VARS.map(|name| (name, values.next().expect("one value per name")))
    }

    /// `None` outside a worker process.
    fn from_env() -> Option<Role> {
        let [url, prefix, offset, redis_time, start, end, out] =
            Self::VARS.map(|name| env::var(name).ok());
        let number = |v: Option<String>| v?.parse::<u64>().ok();
        Some(Role {
            url: url?,
            prefix: prefix?,
            offset_ms: offset?.parse().ok()?,
            redis_time: redis_time? == "1",
            start_ms: number(start)?,
            end_ms: number(end)?,
            out: out?.into(),
        })
    }
}

/// One decision as a worker saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    key: String,
    /// Real unix ms just before the call and just after it.
    before_ms: u64,
    after_ms: u64,
    window_end_ms: u64,
    allowed: bool,
    decided_by: String,
    decided_at_ms: u64,
}

impl Record {
    fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {} {}",
            self.key,
            self.before_ms,
            self.after_ms,
            self.window_end_ms,
            u8::from(self.allowed),
            self.decided_by,
            self.decided_at_ms
        )
    }

    fn parse(line: &str) -> Record {
        let fields: Vec<&str> = line.split(' ').collect();
        let [key, before, after, end, allowed, decided_by, at] = fields[..] else {
            panic!("bad record {line:?}");
        };
        let number = |s: &str| s.parse::<u64>().unwrap_or_else(|_| panic!("{line:?}"));
        Record {
            key: key.to_string(),
            before_ms: number(before),
            after_ms: number(after),
            window_end_ms: number(end),
            allowed: allowed == "1",
            decided_by: decided_by.to_string(),
            decided_at_ms: number(at),
        }
    }
}

/// The worker process: sends each key its rate of checks from `start_ms` to `end_ms` (real
/// time) and writes one line per decision. Run by the tests below; on its own it does nothing.
#[test]
#[ignore = "a worker process of the tests in this module"]
fn worker() {
    let Some(role) = Role::from_env() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let records = runtime.block_on(drive(&role));
    let mut text = String::new();
    for record in &records {
        text.push_str(&record.line());
        text.push('\n');
    }
    fs::write(&role.out, text).expect("write the records");
}

async fn drive(role: &Role) -> Vec<Record> {
    let connection = RedisConnection::connect(&role.url)
        .await
        .expect("connect to redis-server");
    let mut builder = RedisLimiter::builder(Quota::from_millis(LIMIT, WINDOW_MS).unwrap())
        .prefix(role.prefix.as_str())
        .timeout(TIMEOUT)
        // A Redis failure is an error here, never a decision: no decision may be the policy's.
        .failure_policy(FailurePolicy::ReturnError)
        .clock(SkewedClock {
            offset_ms: role.offset_ms,
        });
    builder = if role.redis_time {
        // With the over-limit cache on, as deployed: its denials must be exact too.
        builder.redis_time()
    } else {
        // Every decision goes to Redis: a worker denied from its cache would not touch a
        // counter, and would hide one that expired while the worker was still in its window.
        builder
            .max_clock_skew(Duration::from_millis(SPREAD_MS))
            .over_limit_cache(0)
    };
    let limiter = builder.build(connection).expect("valid limiter");
    let wait = role.start_ms.saturating_sub(SystemClock.now_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let fastest = role.offset_ms == *OFFSETS_MS.iter().max().unwrap();
    let handoff = if fastest {
        (role.start_ms, role.start_ms + HANDOFF_AT_MS)
    } else {
        (role.start_ms + TAKEOVER_AT_MS, role.end_ms)
    };
    let schedule = KEYS
        .iter()
        .map(|&key| (key, (role.start_ms, role.end_ms)))
        .chain([(HANDOFF, handoff)]);
    let mut tasks = Vec::new();
    for ((key, rate), (start_ms, end_ms)) in schedule {
        let period = Duration::from_millis(1_000 * TASKS_PER_KEY / rate);
        for task in 0..TASKS_PER_KEY {
            // Spread the tasks of a key over its period.
            let first = Duration::from_millis(start_ms.saturating_sub(SystemClock.now_ms()))
                + period * task as u32 / TASKS_PER_KEY as u32;
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(first).await;
                let mut ticks = tokio::time::interval(period);
                // After a stall, carry on at the rate rather than catch up in a burst.
                ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
                let mut records = Vec::new();
                loop {
                    ticks.tick().await;
                    let before_ms = SystemClock.now_ms();
                    if before_ms >= end_ms {
                        return records;
                    }
                    let decision = limiter.check(key).await.expect("a decision by Redis");
                    records.push(Record {
                        key: key.to_string(),
                        before_ms,
                        after_ms: SystemClock.now_ms(),
                        window_end_ms: decision.window_end_ms(),
                        allowed: decision.is_allowed(),
                        decided_by: format!("{:?}", decision.decided_by()),
                        decided_at_ms: decision.decided_at_ms(),
                    });
                }
            }));
        }
    }
    let mut records = Vec::new();
    for task in tasks {
        records.extend(task.await.expect("a worker task"));
    }
    records
}

/// A worker process, killed if the test fails before it exits.
struct Worker {
    child: Option<Child>,
    out: PathBuf,
}

impl Worker {
    fn spawn(role: &Role) -> Worker {
        let exe = env::current_exe().expect("the test binary's path");
        let child = Command::new(&exe)
            .args([WORKER_TEST, "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .envs(role.vars())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", exe.display()));
        Worker {
            child: Some(child),
            out: role.out.clone(),
        }
    }

    /// Waits for the worker to exit and returns its records.
    fn records(mut self) -> Vec<Record> {
        let output = self
            .child
            .take()
            .expect("not yet waited for")
            .wait_with_output()
            .expect("wait for a worker");
        let log = || {
            format!(
                "--- stdout\n{}--- stderr\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        };
        assert!(output.status.success(), "worker failed:\n{}", log());
        // A renamed worker test would run nothing and still exit 0.
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("1 passed"),
            "the worker test did not run:\n{}",
            log()
        );
        let text = fs::read_to_string(&self.out)
            .unwrap_or_else(|err| panic!("no records at {}: {err}\n{}", self.out.display(), log()));
        text.lines().map(Record::parse).collect()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A directory for the workers' records, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = env::temp_dir().join(format!(
            "ratewindow-processes-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs one worker per clock offset against `server`, all for the same `RUN_MS` of real time;
/// returns each worker's records and, read as soon as they have all exited, every key's PTTL.
fn run_workers(server: &RedisServer, redis_time: bool) -> (Vec<Vec<Record>>, Vec<(String, i64)>) {
    let dir = TempDir::new();
    // On a window boundary: the clocks are off by whole windows, so the workers' windows all
    // start on the same real instants, and the fastest worker hands its client over late in a
    // window whose counter it has filled.
    let start_ms = (SystemClock.now_ms() + START_DELAY_MS).next_multiple_of(WINDOW_MS);
    let workers: Vec<Worker> = OFFSETS_MS
        .iter()
        .enumerate()
        .map(|(i, &offset_ms)| {
            Worker::spawn(&Role {
                url: server.url(),
                prefix: "shared".into(),
                offset_ms,
                redis_time,
                start_ms,
                end_ms: start_ms + RUN_MS,
                out: dir.path().join(format!("worker-{i}")),
            })
        })
        .collect();
    let records: Vec<Vec<Record>> = workers.into_iter().map(Worker::records).collect();
    let ttls = ttls(server, "shared");
    for (i, records) in records.iter().enumerate() {
        assert!(!records.is_empty(), "worker {i} decided nothing");
    }
    (records, ttls)
}

/// Checks that hold in both modes: Redis decided every admission and every denial was Redis's
/// or its over-limit cache's (never a failure policy); the workers' requests overlapped in
/// time; every steady key saw `min_windows` windows; both over- and under-limit windows
/// occurred, and windows counted by `shared_by` workers.
fn check_common(
    records: &[Vec<Record>],
    min_windows: usize,
    shared_by: usize,
) -> BTreeMap<(String, u64), Tally> {
    for record in records.iter().flatten() {
        let by = record.decided_by.as_str();
        assert!(
            by == format!("{:?}", DecidedBy::Backend)
                || (!record.allowed && by == format!("{:?}", DecidedBy::OverLimitCache)),
            "not decided by Redis's count: {record:?}"
        );
        assert_eq!(record.window_end_ms % WINDOW_MS, 0, "{record:?}");
    }
    let first = records
        .iter()
        .map(|r| r.iter().map(|r| r.before_ms).min().unwrap());
    let last = records
        .iter()
        .map(|r| r.iter().map(|r| r.after_ms).max().unwrap());
    let overlap = last.min().unwrap() as i64 - first.max().unwrap() as i64;
    assert!(
        overlap >= 2_000,
        "the workers overlapped for {overlap} ms only"
    );

    let windows = tally(records);
    for (key, _) in KEYS {
        let seen = windows.keys().filter(|(k, _)| k == key).count();
        assert!(seen >= min_windows, "{key} saw {seen} windows");
    }
    assert!(
        windows.values().any(|t| t.offered > LIMIT),
        "no window went over"
    );
    assert!(
        windows.values().any(|t| t.offered < LIMIT),
        "no window stayed under"
    );
    assert!(
        windows.values().any(|t| t.processes.len() >= shared_by),
        "no window had {shared_by} workers"
    );

    windows
}

/// Every key left has a TTL of at most `max_ttl_ms`: none can block its user key for good.
fn check_ttls(ttls: &[(String, i64)], max_ttl_ms: u64) {
    assert!(!ttls.is_empty(), "no key left to check");
    for (key, ttl) in ttls {
        assert!(
            *ttl > 0 && *ttl as u64 <= max_ttl_ms,
            "{key} has PTTL {ttl}"
        );
    }
}

#[derive(Debug, Default)]
struct Tally {
    offered: u64,
    admitted: u64,
    processes: std::collections::BTreeSet<usize>,
}

/// Decisions per key and window end, with the workers that took part.
fn tally(records: &[Vec<Record>]) -> BTreeMap<(String, u64), Tally> {
    let mut windows: BTreeMap<(String, u64), Tally> = BTreeMap::new();
    for (worker, records) in records.iter().enumerate() {
        for record in records {
            let window = windows
                .entry((record.key.clone(), record.window_end_ms))
                .or_default();
            window.offered += 1;
            window.admitted += u64::from(record.allowed);
            window.processes.insert(worker);
        }
    }
    windows
}

/// With Redis's clock, the workers' clocks (3 s behind, right, 4 s ahead) do not matter: every
/// decision is made at Redis's time, and for every key and window the three processes together
/// admit exactly `min(limit, offered)`.
#[test]
fn redis_time_admits_exactly_min_limit_offered_across_skewed_processes() {
    let server = RedisServer::new();
    let (records, ttls) = run_workers(&server, true);
    let windows = check_common(&records, 4, 3);
    for record in records.iter().flatten() {
        // Redis's TIME and the workers' real clock are the same kernel clock.
        if record.decided_by == format!("{:?}", DecidedBy::Backend) {
            assert!(
                (record.before_ms..=record.after_ms).contains(&record.decided_at_ms),
                "not decided at Redis's time: {record:?}"
            );
        }
    }
    for ((key, end), t) in &windows {
        assert_eq!(
            t.admitted,
            t.offered.min(LIMIT),
            "{key}, window ending {end}: {t:?}"
        );
    }
    // A window plus the default second of margin, all on Redis's clock.
    check_ttls(&ttls, WINDOW_MS + 1_000);
    report("redis time", &records, &windows);
}

/// With local clocks skewed by up to 7 s (3 s behind, right, 4 s ahead) and a skew allowance
/// that covers it, the guarantee of `RedisLimiter`'s docs: each worker counts in the window its
/// own clock reads, every (key, window) admits at most its limit in total, and a window admits
/// only from 4 s before its start (the fastest clock's lead) to 3 s after its end (the slowest
/// clock's lag), in real time. With an expiry margin short of the skew, the workers taking over
/// the handoff client would find its counters gone while their clocks were still in windows it
/// had filled, and count them again.
#[test]
fn local_clocks_skewed_by_seconds_never_admit_more_than_the_limit_per_window() {
    let server = RedisServer::new();
    let (records, ttls) = run_workers(&server, false);
    // Each worker counts in its own clock's windows: the workers 7 s apart share none in a
    // 6 s run, each shares some with the one in between.
    let windows = check_common(&records, 4, 2);
    let ahead = *OFFSETS_MS.iter().max().unwrap() as u64;
    let behind = OFFSETS_MS.iter().min().unwrap().unsigned_abs();
    // When each key's window was first counted, in real time.
    let mut first_counted = BTreeMap::<(&str, u64), u64>::new();
    for record in records.iter().flatten() {
        let first = first_counted
            .entry((&record.key, record.window_end_ms))
            .or_insert(u64::MAX);
        *first = (*first).min(record.before_ms);
    }
    let mut late_counted = 0;
    let mut early_admitted = 0;
    for (worker, records) in records.iter().enumerate() {
        let offset = OFFSETS_MS[worker];
        for record in records {
            assert_eq!(record.decided_by, format!("{:?}", DecidedBy::Backend));
            // Decided at the worker's own clock.
            let (from, to) = (
                record.before_ms.saturating_add_signed(offset),
                record.after_ms.saturating_add_signed(offset),
            );
            assert!(
                (from..=to).contains(&record.decided_at_ms),
                "worker {worker}: {record:?}"
            );
            // Counted in the window its own clock reads, whose counter a faster worker may
            // have opened seconds before.
            assert!(
                record.window_end_ms - WINDOW_MS <= record.decided_at_ms
                    && record.decided_at_ms < record.window_end_ms,
                "worker {worker} counted outside its clock's window: {record:?}"
            );
            // A counter met more than two windows after it was opened, in real time: only a
            // slower worker can, and only because the counter outlives the default margin.
            let first = first_counted[&(record.key.as_str(), record.window_end_ms)];
            late_counted += u64::from(record.before_ms > first + 2 * WINDOW_MS);
            if record.allowed {
                let start = record.window_end_ms - WINDOW_MS;
                assert!(
                    record.after_ms + ahead >= start
                        && record.before_ms < record.window_end_ms + behind,
                    "worker {worker} admitted outside the skew bounds: {record:?}"
                );
                early_admitted += u64::from(record.after_ms < start);
            }
        }
    }
    for ((key, end), t) in &windows {
        assert!(t.admitted <= LIMIT, "{key}, window ending {end}: {t:?}");
    }
    // The skew was exercised both ways.
    assert!(
        late_counted > 0,
        "no worker met a counter a faster worker had opened seconds before"
    );
    assert!(early_admitted > 0, "no window opened early in real time");
    // A counter outlives its window's end, on its writer's clock, by the margin: the spread.
    check_ttls(&ttls, WINDOW_MS + SPREAD_MS);
    report("local clocks", &records, &windows);
}

/// One line of figures for the test's output (`--nocapture`).
fn report(mode: &str, records: &[Vec<Record>], windows: &BTreeMap<(String, u64), Tally>) {
    let decisions: usize = records.iter().map(Vec::len).sum();
    let admitted: u64 = windows.values().map(|t| t.admitted).sum();
    let cached = records
        .iter()
        .flatten()
        .filter(|r| r.decided_by == format!("{:?}", DecidedBy::OverLimitCache))
        .count();
    let ends: std::collections::BTreeSet<u64> = windows.keys().map(|(_, end)| *end).collect();
    println!(
        "{mode}: {} workers, {} windows, {decisions} decisions ({cached} by the over-limit \
         cache), {admitted} admitted, {} key-windows over the limit",
        records.len(),
        ends.len(),
        windows.values().filter(|t| t.offered > LIMIT).count()
    );
}
