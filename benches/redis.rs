//! The Redis backend against a redis-server this bench spawns itself (default config plus
//! `--save ""` and `--appendonly no`, through the tests' harness): `RedisLimiter::check` against
//! three peers, in the same run, each on one multiplexed redis-rs `ConnectionManager`: the
//! limiter's from `RedisConnection::connect`, the peers' with redis-rs's defaults (each call
//! of either bounded by one timer):
//!
//! - `incr`: a raw `INCR`, one command, no expiry;
//! - `incr_pexpireat`: an `INCR` + `PEXPIREAT` pipeline, one round trip, two commands;
//! - `incrby_script`: a 3-line Lua script by `EVALSHA` (`redis::Script`): `INCRBY`, `PEXPIRE` on
//!   the window's first hit, return the count; the least a script-based fixed window can do.
//!
//! The groups (N tasks deciding in a loop over the one shared connection, each on a key of its
//! own; throughput is total decisions over wall time; limiters return errors instead of failing
//! open, and every error panics):
//!
//! - `redis_latency/interleaved_c1`: one task calling the four in turn, for latencies at
//!   concurrency 1 that all see the same state of the machine.
//! - `redis_decisions/concurrency/{1,16,64,256}`: a huge per-minute limit, every decision
//!   allowed; the limiter has its default over-limit cache (which never answers here).
//! - `redis_denied/concurrency/{1,16,64,256}`: keys filled past their limit (10/min) before the
//!   case, the limiter's over-limit cache off (`over_limit_cache(0)`), so every denial is an
//!   `EVALSHA`. Denials are counted, not asserted: a case crossing a minute boundary admits the
//!   new window's first 10 calls per key. The peers do what they do when allowed.
//! - `redis_three_quotas/concurrency/{1,16,64,256}`: huge per-second, per-minute and per-hour
//!   quotas on every key, every decision allowed, against the same one-counter peers.
//! - `redis_over_limit`: 64 tasks hammering one key far over its limit (10/min), the limiter
//!   with its local over-limit cache off and on (10 000 keys), against `incr` and
//!   `incr_pexpireat` on one hot key.
//! - `redis_rounds` (printed, not a criterion group): the concurrency-64 comparisons of the
//!   three groups above, and the cluster's, again as 3 interleaved rounds of 3 s per subject,
//!   so that each round's ratios compare subjects measured in the same state of this shared
//!   machine. The cluster's also run with the filter `redis_cluster`.
//! - `redis_cluster_decisions/concurrency/64`: on a 3-master Redis Cluster (the harness's,
//!   `cluster-require-full-coverage no`): ratewindow's own slot routing against a raw `INCR`
//!   through redis-rs's async cluster client, 64 tasks on keys spread over the masters.
//!
//! Each case prints its per-call latency percentiles (`latency ...`) and what it cost per
//! request (`commands ...`): commands sent and executed (`INFO commandstats` before and after,
//! summed over every call criterion made and, for the cluster, over the masters), denials, and
//! redis-server and client CPU time from `/proc`. The run ends with a markdown table per group:
//! decisions/s from criterion's medians (`target/criterion/<group>/<id>/new/estimates.json`),
//! ratios to each peer, p50/p99 and CPU per decision.
//!
//! About 4 minutes in all: 1 s of warm-up and 15 samples per case, over 3 s at concurrency 64
//! (where the targets are judged) and in the interleaved case, over 2 s at the others.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::redis::aio::ConnectionManager;
use criterion::{BenchmarkId, Criterion, Throughput};
use ratewindow::{DecidedBy, FailurePolicy, Quota, RateLimiter, RedisConnection, RedisLimiter};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

// The tests' harness; its own `#[test]`s (and what only they use) are not compiled here.
#[allow(dead_code, unused_imports)]
#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use redis_server::{RedisCluster, RedisServer};

const CONCURRENCY: [usize; 4] = [1, 16, 64, 256];
const OVER_LIMIT_CONCURRENCY: usize = 64;
/// The concurrency the targets are judged at: its cases get the full measurement time.
const TARGET_CONCURRENCY: usize = 64;
/// Far more than a run can spend in a second: every decision of `redis_decisions` and
/// `redis_three_quotas` is allowed.
const HUGE_LIMIT: u64 = 1_000_000_000_000;
// The Redis limiter refuses limits its script cannot count exactly (above 2^53 - 1).
const _: () = assert!(HUGE_LIMIT < 1 << 53);
/// The limit per minute of `redis_denied` and `redis_over_limit`: all but the first 10
/// decisions of a key's window are denied.
const OVER_LIMIT: u64 = 10;
/// Capacity of the over-limit cache in the `cache` variant (the builder's default).
const OVER_LIMIT_CACHE_CAPACITY: usize = 10_000;
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// The pipeline's expiry: the end of the current minute plus the limiter's own margin.
const WINDOW_MS: u64 = 60_000;
const EXPIRY_MARGIN_MS: u64 = 1_000;
/// The least a fixed window can be as a script: count, set the expiry on the window's first
/// hit, return the count. No limit, no reply fields: a floor for any script-based limiter.
const INCRBY_SCRIPT: &str = "local v = redis.call('INCRBY', KEYS[1], ARGV[1]) \
    if v == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return v";
/// The script's cost argument, pre-formatted as ratewindow's script gets its integers.
const COST: &str = "1";
/// Short, bounded runs: the Redis cases take about 4 minutes in all.
const WARM_UP: Duration = Duration::from_secs(1);
const MEASUREMENT: Duration = Duration::from_secs(3);
/// The measurement at concurrencies other than 64, which the targets are not judged at.
const SHORT_MEASUREMENT: Duration = Duration::from_secs(2);
const SAMPLES: usize = 15;

/// What one decision is made with; the peers share one connection manager.
#[derive(Clone)]
enum Subject {
    Ratewindow(Box<RedisLimiter>),
    Incr(ConnectionManager),
    IncrPexpireat(ConnectionManager),
    IncrbyScript(ConnectionManager, Arc<::redis::Script>),
    ClusterIncr(::redis::cluster_async::ClusterConnection),
}

impl Subject {
    /// Whether the subject decides (the peers only count).
    fn is_limiter(&self) -> bool {
        matches!(self, Subject::Ratewindow(_))
    }

    /// One decision (or its raw stand-in) on `key`; panics on any error (the limiter returns
    /// them rather than failing open), so that a failing backend cannot pass for a fast one.
    async fn decide(&self, key: &str, expect_allowed: bool) -> Verdict {
        match self {
            Subject::Ratewindow(limiter) => {
                let decision = limiter.check(key).await.expect("ratewindow decision");
                assert!(!expect_allowed || decision.is_allowed(), "denied: {key}");
                let cached = match decision.decided_by() {
                    DecidedBy::Backend => false,
                    DecidedBy::OverLimitCache => true,
                    other => panic!("decided by {other:?}"),
                };
                let denied = !decision.is_allowed();
                black_box(decision);
                Verdict { denied, cached }
            }
            Subject::Incr(connection) => {
                let count: i64 = ::redis::cmd("INCR")
                    .arg(key)
                    .query_async(&mut connection.clone())
                    .await
                    .expect("INCR");
                black_box(count);
                Verdict::COUNTED
            }
            Subject::ClusterIncr(connection) => {
                let count: i64 = ::redis::cmd("INCR")
                    .arg(key)
                    .query_async(&mut connection.clone())
                    .await
                    .expect("INCR on the cluster");
                black_box(count);
                Verdict::COUNTED
            }
            Subject::IncrPexpireat(connection) => {
                let (_, expire_at) = expiry();
                let reply: (i64, i64) = ::redis::pipe()
                    .cmd("INCR")
                    .arg(key)
                    .cmd("PEXPIREAT")
                    .arg(key)
                    .arg(expire_at)
                    .query_async(&mut connection.clone())
                    .await
                    .expect("INCR + PEXPIREAT pipeline");
                black_box(reply);
                Verdict::COUNTED
            }
            Subject::IncrbyScript(connection, script) => {
                let (now_ms, expire_at) = expiry();
                let count: i64 = script
                    .key(key)
                    .arg(COST)
                    .arg((expire_at - now_ms).to_string())
                    .invoke_async(&mut connection.clone())
                    .await
                    .expect("INCRBY script");
                black_box(count);
                Verdict::COUNTED
            }
        }
    }
}

/// How a decision went, as a case counts it.
#[derive(Clone, Copy)]
struct Verdict {
    denied: bool,
    /// Answered by the over-limit cache, without a call to Redis.
    cached: bool,
}

impl Verdict {
    /// A peer's answer: it only counts, so it never denies.
    const COUNTED: Verdict = Verdict {
        denied: false,
        cached: false,
    };
}

/// Now, and when the current minute's counter should expire (its end plus the limiter's own
/// margin), in unix milliseconds.
fn expiry() -> (u64, u64) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis() as u64;
    (
        now_ms,
        (now_ms / WINDOW_MS + 1) * WINDOW_MS + EXPIRY_MARGIN_MS,
    )
}

/// What one case collects over all of criterion's calls: the latency of every call made after
/// the warm-up, the number of requests (warm-up included, as `INFO commandstats` is), and the
/// CPU time used when the last batch ended.
struct Record {
    first_batch: OnceLock<Instant>,
    latencies_ns: Mutex<Vec<u64>>,
    requests: AtomicU64,
    /// Requests the over-limit cache answered.
    cached: AtomicU64,
    /// Requests denied.
    denied: AtomicU64,
    /// The redis-server processes the case is charged, whose CPU is read after every batch.
    pids: Vec<u32>,
    /// CPU time at the end of the latest batch: criterion's analysis after the last one is not
    /// a decision's cost (at concurrency 1 it would add microseconds per request).
    cpu_at_end: Mutex<Option<Cpu>>,
}

impl Record {
    fn new(pids: Vec<u32>) -> Arc<Record> {
        Arc::new(Record {
            first_batch: OnceLock::new(),
            latencies_ns: Mutex::new(Vec::new()),
            requests: AtomicU64::new(0),
            cached: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            pids,
            cpu_at_end: Mutex::new(None),
        })
    }

    /// Whether a batch starting now is past criterion's warm-up (which starts with the first).
    fn past_warm_up(&self, now: Instant) -> bool {
        now >= *self.first_batch.get_or_init(|| now) + WARM_UP
    }

    /// p50 and p99 of the recorded calls, and their number; `None` when the case did not run
    /// (filtered out).
    fn percentiles(&self) -> Option<(Duration, Duration, usize)> {
        let mut latencies = self
            .latencies_ns
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if latencies.is_empty() {
            return None;
        }
        latencies.sort_unstable();
        let at = |q: f64| {
            let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
            Duration::from_nanos(latencies[i])
        };
        Some((at(0.50), at(0.99), latencies.len()))
    }
}

/// One criterion iteration is one decision per task: `keys.len()` tasks (task `t` on `keys[t]`)
/// each make `iters` decisions in a loop, timing each; returns the wall time from before the
/// first spawn to the last task's end.
async fn batch(
    subject: &Subject,
    keys: &Arc<[String]>,
    iters: u64,
    expect_allowed: bool,
    record: &Record,
) -> Duration {
    let keep = record.past_warm_up(Instant::now());
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for t in 0..keys.len() {
        let (subject, keys) = (subject.clone(), Arc::clone(keys));
        tasks.spawn(async move {
            let key = keys[t].as_str();
            let mut latencies = Vec::with_capacity(iters as usize);
            let (mut cached, mut denied) = (0, 0);
            for _ in 0..iters {
                let call = Instant::now();
                let verdict = subject.decide(key, expect_allowed).await;
                latencies.push(call.elapsed().as_nanos() as u64);
                cached += u64::from(verdict.cached);
                denied += u64::from(verdict.denied);
            }
            (latencies, cached, denied)
        });
    }
    let mut latencies = Vec::new();
    while let Some(task) = tasks.join_next().await {
        let (task_latencies, cached, denied) = task.expect("bench task");
        latencies.extend(task_latencies);
        record.cached.fetch_add(cached, Ordering::Relaxed);
        record.denied.fetch_add(denied, Ordering::Relaxed);
    }
    let elapsed = start.elapsed();
    *record
        .cpu_at_end
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(Cpu::now(&record.pids));
    record
        .requests
        .fetch_add(iters * keys.len() as u64, Ordering::Relaxed);
    if keep {
        record
            .latencies_ns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(latencies);
    }
    elapsed
}

/// `INFO commandstats` as command name to (calls, usec).
fn command_stats(server: &RedisServer) -> BTreeMap<String, (u64, u64)> {
    let info = server.command(&["INFO", "commandstats"]);
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |wanted: &str| {
                fields.split(',').find_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    (key == wanted).then(|| value.parse::<u64>().ok()).flatten()
                })
            };
            Some((name.to_string(), (field("calls")?, field("usec")?)))
        })
        .collect()
}

/// Commands a client sends to run a script. In a case that sent any (ratewindow's, or the
/// `incrby_script` peer's), every other command ran inside the script: counted by
/// `commandstats` too, but never sent by the client. No case mixes scripts with commands of its
/// own, and ratewindow's script runs `INCR`, which the `incr` peer sends itself.
const SCRIPT_CALLS: [&str; 3] = ["evalsha", "eval", "script"];

/// CPU time (user + system, all threads) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name: state is the first, utime the 12th, stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

/// CPU time used so far by the redis-server processes (summed) and by this one.
#[derive(Clone, Copy)]
struct Cpu {
    server: Duration,
    client: Duration,
}

impl Cpu {
    fn now(pids: &[u32]) -> Cpu {
        Cpu {
            server: pids.iter().map(|pid| cpu_time(&pid.to_string())).sum(),
            client: cpu_time("self"),
        }
    }
}

/// The commandstats of every server a case is charged (summed by command) and the CPU time,
/// taken before and after a case.
struct Snapshot {
    commands: BTreeMap<String, (u64, u64)>,
    cpu: Cpu,
}

impl Snapshot {
    fn take(servers: &[&RedisServer]) -> Snapshot {
        let mut commands = BTreeMap::new();
        for server in servers {
            for (name, (calls, usec)) in command_stats(server) {
                let total: &mut (u64, u64) = commands.entry(name).or_default();
                *total = (total.0 + calls, total.1 + usec);
            }
        }
        Snapshot {
            commands,
            cpu: Cpu::now(&pids(servers)),
        }
    }
}

fn pids(servers: &[&RedisServer]) -> Vec<u32> {
    servers
        .iter()
        .map(|server| server.pid().expect("redis-server runs"))
        .collect()
}

/// What a case cost per request, in redis-server and in this process's CPU time (µs).
#[derive(Clone, Copy)]
struct CpuPerRequest {
    server_us: f64,
    client_us: f64,
}

/// Prints what a case cost per request: commands sent by the client, commands executed
/// (script-internal ones included), the server's time inside the commands sent (a script's
/// includes its inner commands), both processes' CPU time, and the calls of each command. The
/// `INFO` calls of the measurement itself are left out. `end` is the CPU time when the last
/// batch ended.
fn report_costs(
    label: &str,
    before: &Snapshot,
    after: &Snapshot,
    end: Cpu,
    record: &Record,
    decides: bool,
) -> CpuPerRequest {
    let requests = record.requests.load(Ordering::Relaxed);
    let per_request = |n: u64| n as f64 / requests.max(1) as f64;
    let (mut executed, mut sent, mut usec) = (0, 0, 0);
    let mut breakdown = String::new();
    let delta = |name: &str| {
        let calls = |snapshot: &Snapshot| snapshot.commands.get(name).map_or(0, |c| c.0);
        calls(after) - calls(before)
    };
    let scripted = SCRIPT_CALLS.iter().any(|name| delta(name) > 0);
    for (name, &(calls, micros)) in &after.commands {
        let (calls_before, micros_before) = before.commands.get(name).copied().unwrap_or((0, 0));
        let (calls, micros) = (calls - calls_before, micros - micros_before);
        if name == "info" || calls == 0 {
            continue;
        }
        executed += calls;
        if !scripted || SCRIPT_CALLS.contains(&name.as_str()) {
            sent += calls;
            usec += micros;
        }
        breakdown += &format!(" {name}={calls}");
    }
    let cpu_us = |d: Duration| d.as_secs_f64() * 1e6 / requests.max(1) as f64;
    let cpu = CpuPerRequest {
        server_us: cpu_us(end.server.saturating_sub(before.cpu.server)),
        client_us: cpu_us(end.client.saturating_sub(before.cpu.client)),
    };
    // Counted, not asserted, where denials are expected: a minute boundary during the case
    // admits the new window's first calls.
    let denied = if decides {
        format!(" denied={}", record.denied.load(Ordering::Relaxed))
    } else {
        String::new()
    };
    println!(
        "commands {label} requests={requests}{denied} cache_answered={} sent={sent} \
         ({:.3e}/request) executed={executed} ({:.3e}/request) [{}] in_command_us/request={:.2} \
         cpu_us/request: redis-server={:.2} client={:.2}",
        record.cached.load(Ordering::Relaxed),
        per_request(sent),
        per_request(executed),
        breakdown.trim_start(),
        per_request(usec),
        cpu.server_us,
        cpu.client_us,
    );
    cpu
}

/// What the cases run on: the runtime, and the redis-server(s) whose commands and CPU time
/// they are charged.
struct Env<'a> {
    runtime: &'a Runtime,
    servers: Vec<&'a RedisServer>,
}

/// A criterion group of cases on `tasks` tasks each, with the short, bounded timing every Redis
/// case uses. `label` starts the printed `latency` and `commands` lines.
struct Group<'c> {
    criterion: criterion::BenchmarkGroup<'c, criterion::measurement::WallTime>,
    name: String,
    label: String,
    tasks: usize,
}

impl<'c> Group<'c> {
    fn new(c: &'c mut Criterion, name: String, label: String, tasks: usize) -> Group<'c> {
        let measurement = if tasks == TARGET_CONCURRENCY {
            MEASUREMENT
        } else {
            SHORT_MEASUREMENT
        };
        let mut criterion = bounded_group(c, name.clone(), measurement);
        criterion.throughput(Throughput::Elements(tasks as u64));
        Group {
            criterion,
            name,
            label,
            tasks,
        }
    }

    /// One case: `subject` over `keys` (one task per key), with its latency percentiles and
    /// Redis commands per request printed afterwards.
    fn case(
        &mut self,
        env: &Env<'_>,
        name: &str,
        subject: &Subject,
        keys: &Arc<[String]>,
        expect_allowed: bool,
    ) {
        let record = Record::new(pids(&env.servers));
        let started = SystemTime::now();
        let before = Snapshot::take(&env.servers);
        self.criterion
            .bench_function(BenchmarkId::from_parameter(name), |b| {
                b.to_async(env.runtime).iter_custom(|iters| {
                    let (subject, keys, record) =
                        (subject.clone(), Arc::clone(keys), Arc::clone(&record));
                    async move { batch(&subject, &keys, iters, expect_allowed, &record).await }
                })
            });
        let after = Snapshot::take(&env.servers);
        let Some((p50, p99)) = print_latency(&self.label, name, &record) else {
            return;
        };
        let end = record
            .cpu_at_end
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or(after.cpu);
        let cpu = report_costs(
            &format!("{} {name}", self.label),
            &before,
            &after,
            end,
            &record,
            subject.is_limiter(),
        );
        let requests = record.requests.load(Ordering::Relaxed).max(1);
        keep_figures(
            &self.name,
            name,
            Figures {
                criterion: Some((
                    format!("{}/{}", filename_safe(&self.name), filename_safe(name)),
                    started,
                )),
                tasks: self.tasks,
                p50,
                p99,
                cpu: Some(cpu),
                denied: subject
                    .is_limiter()
                    .then(|| record.denied.load(Ordering::Relaxed) as f64 / requests as f64),
            },
        );
    }

    fn finish(self) {
        self.criterion.finish();
    }
}

/// Prints a case's p50 and p99 and returns them; `None` when it did not run (filtered out).
fn print_latency(label: &str, name: &str, record: &Record) -> Option<(Duration, Duration)> {
    let (p50, p99, calls) = record.percentiles()?;
    println!(
        "latency {label} {name} p50={:.1}us p99={:.1}us (calls={calls})",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    Some((p50, p99))
}

/// What the summary prints for one case that ran.
struct Figures {
    /// The case's directory under criterion's output, and when the case started (an
    /// `estimates.json` older than that is another run's: criterion writes none under
    /// `--baseline`). `None` where an iteration is not one decision per task.
    criterion: Option<(String, SystemTime)>,
    tasks: usize,
    p50: Duration,
    p99: Duration,
    cpu: Option<CpuPerRequest>,
    /// Share of the decisions denied; `None` for the peers, which only count.
    denied: Option<f64>,
}

/// Every case that ran, by (group, subject), with its place in the run, for the summary.
static FIGURES: Mutex<BTreeMap<(String, String), (usize, Figures)>> = Mutex::new(BTreeMap::new());

fn keep_figures(group: &str, subject: &str, figures: Figures) {
    let mut all = FIGURES.lock().unwrap_or_else(PoisonError::into_inner);
    let order = all.len();
    all.insert((group.to_string(), subject.to_string()), (order, figures));
}

/// A name as criterion turns it into a directory (`make_filename_safe`): `?"/\*<>:|^` become
/// `_`, and it is cut to 64 bytes.
fn filename_safe(name: &str) -> String {
    let mut safe: String = name
        .chars()
        .map(|c| if "?\"/\\*<>:|^".contains(c) { '_' } else { c })
        .collect();
    let mut end = safe.len().min(64);
    while !safe.is_char_boundary(end) {
        end -= 1;
    }
    safe.truncate(end);
    safe
}

/// Criterion's output directory, found as criterion finds it: `CRITERION_HOME`, else
/// `$CARGO_TARGET_DIR/criterion`, else `target/criterion` in this crate.
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
            PathBuf::from,
        )
        .join("criterion")
}

/// Criterion's median time per iteration (ns) of the case in `dir`, if this run wrote it.
fn median_ns(home: &Path, dir: &str, started: SystemTime) -> Option<f64> {
    let path = home.join(dir).join("new").join("estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < started {
        return None;
    }
    let estimates: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
    estimates["median"]["point_estimate"]
        .as_f64()
        .filter(|&ns| ns > 0.0)
}

/// The peers every decisions/s is divided by in the summary, as its columns.
const RATIO_PEERS: [&str; 3] = ["incrby_script", "incr_pexpireat", "incr"];

/// A markdown table per group that ran, in the run's order: each subject's decisions/s (tasks ×
/// 1e9 ÷ criterion's median ns per iteration, an iteration being one decision per task), its
/// ratio to each peer's in the same group, its latency percentiles and CPU time per decision.
fn print_summary() {
    let all = std::mem::take(&mut *FIGURES.lock().unwrap_or_else(PoisonError::into_inner));
    let mut cases: Vec<_> = all.iter().collect();
    cases.sort_by_key(|(_, (order, _))| *order);
    let mut groups: Vec<(&str, Vec<(&str, &Figures)>)> = Vec::new();
    for ((group, subject), (_, figures)) in cases {
        match groups.iter_mut().find(|(name, _)| name == group) {
            Some((_, rows)) => rows.push((subject, figures)),
            None => groups.push((group, vec![(subject, figures)])),
        }
    }
    if groups.is_empty() {
        return;
    }
    let home = criterion_home();
    println!(
        "\n## Redis summary\n\ndecisions/s from criterion's medians in {}; ratios divide two \
         decisions/s of the same group and run; p50/p99 over every call after the warm-up; CPU \
         in µs per decision (warm-up included).",
        home.display()
    );
    let dash = || "–".to_string();
    for (group, rows) in groups {
        let rates: Vec<Option<f64>> = rows
            .iter()
            .map(|(_, figures)| {
                let (dir, started) = figures.criterion.as_ref()?;
                Some(figures.tasks as f64 * 1e9 / median_ns(&home, dir, *started)?)
            })
            .collect();
        let rate_of = |peer: &str| {
            let at = rows.iter().position(|(subject, _)| *subject == peer)?;
            rates[at]
        };
        println!("\n### {group}\n");
        println!(
            "| subject | decisions/s | {} | p50 µs | p99 µs | redis-server CPU µs | client CPU µs \
             | denied |",
            RATIO_PEERS.map(|peer| format!("÷ {peer}")).join(" | ")
        );
        println!("| --- |{}", " ---: |".repeat(RATIO_PEERS.len() + 6));
        for ((subject, figures), rate) in rows.iter().zip(&rates) {
            let ratios = RATIO_PEERS.map(|peer| match (rate, rate_of(peer)) {
                (Some(rate), Some(peer)) => format!("{:.2}", rate / peer),
                _ => dash(),
            });
            let us = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e6);
            let cpu = |us: fn(&CpuPerRequest) -> f64| {
                figures
                    .cpu
                    .as_ref()
                    .map_or_else(dash, |cpu| format!("{:.2}", us(cpu)))
            };
            println!(
                "| {subject} | {} | {} | {} | {} | {} | {} | {} |",
                rate.map_or_else(dash, format_rate),
                ratios.join(" | "),
                us(figures.p50),
                us(figures.p99),
                cpu(|cpu| cpu.server_us),
                cpu(|cpu| cpu.client_us),
                figures
                    .denied
                    .map_or_else(dash, |share| format!("{:.1}%", share * 100.0)),
            );
        }
    }
}

/// `97.1k`, `1.25M`.
fn format_rate(rate: f64) -> String {
    match rate {
        r if r >= 1e6 => format!("{:.2}M", r / 1e6),
        r if r >= 1e3 => format!("{:.1}k", r / 1e3),
        r => format!("{r:.0}"),
    }
}

/// `redis_latency/interleaved_c1`: one task calling each subject in turn, so that all of them
/// see the same state of the machine. On this VM a lone round trip takes either ~20 µs or
/// ~60 µs depending on how fast a sleeping vCPU wakes up, and that state can change between
/// two cases measured one after the other; interleaving compares them call by call. One
/// iteration is one call of each subject; the printed percentiles are per subject.
fn interleaved(c: &mut Criterion, runtime: &Runtime, subjects: &[(&str, Subject, String)]) {
    let records: Vec<Arc<Record>> = subjects.iter().map(|_| Record::new(vec![])).collect();
    let subjects: Arc<[(String, Subject, String)]> = subjects
        .iter()
        .map(|(name, subject, key)| (name.to_string(), subject.clone(), key.clone()))
        .collect();
    let mut group = bounded_group(c, "redis_latency".into(), MEASUREMENT);
    group.bench_function(BenchmarkId::from_parameter("interleaved_c1"), |b| {
        b.to_async(runtime).iter_custom(|iters| {
            let (subjects, records) = (Arc::clone(&subjects), records.clone());
            async move {
                let task = tokio::spawn(async move {
                    let keep = records[0].past_warm_up(Instant::now());
                    let mut latencies = vec![Vec::with_capacity(iters as usize); subjects.len()];
                    let start = Instant::now();
                    for _ in 0..iters {
                        for ((_, subject, key), latencies) in subjects.iter().zip(&mut latencies) {
                            let call = Instant::now();
                            subject.decide(key, true).await;
                            latencies.push(call.elapsed().as_nanos() as u64);
                        }
                    }
                    let elapsed = start.elapsed();
                    if keep {
                        for (record, latencies) in records.iter().zip(latencies) {
                            record
                                .latencies_ns
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .extend(latencies);
                        }
                    }
                    elapsed
                });
                task.await.expect("bench task")
            }
        })
    });
    group.finish();
    for ((name, _, _), record) in subjects.iter().zip(&records) {
        if let Some((p50, p99)) = print_latency("redis_latency_interleaved c=1", name, record) {
            keep_figures(
                "redis_latency/interleaved_c1",
                name,
                Figures {
                    criterion: None,
                    tasks: 1,
                    p50,
                    p99,
                    cpu: None,
                    denied: None,
                },
            );
        }
    }
}

/// A group with the short, bounded timing every Redis case uses.
fn bounded_group(
    c: &mut Criterion,
    name: String,
    measurement: Duration,
) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(WARM_UP)
        .measurement_time(measurement)
        .sample_size(SAMPLES);
    group
}

/// A limiter with a timeout of [`CALL_TIMEOUT`] that returns Redis's errors instead of
/// answering for it.
fn limiter(limit: u64, prefix: &str) -> ratewindow::RedisLimiterBuilder {
    RedisLimiter::builder(Quota::per_minute(limit).expect("valid quota"))
        .prefix(prefix)
        .timeout(CALL_TIMEOUT)
        .failure_policy(FailurePolicy::ReturnError)
}

/// The version line of the `redis-server` binary the harness runs.
fn server_version() -> String {
    let bin = std::env::var_os("REDIS_SERVER_BIN").unwrap_or_else(|| "redis-server".into());
    let output = Command::new(bin)
        .arg("--version")
        .output()
        .expect("redis-server --version");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The value of `CONFIG GET <name>` (RESP: `*2 $len name $len value`).
fn config_value(server: &RedisServer, name: &str) -> String {
    let reply = server.command(&["CONFIG", "GET", name]);
    reply
        .split("\r\n")
        .nth(4)
        .map_or_else(|| format!("?{reply:?}"), str::to_string)
}

/// The peers every single-server group measures ratewindow against, on one connection manager.
struct Peers {
    incr: Subject,
    pipeline: Subject,
    script: Subject,
}

impl Peers {
    fn new(runtime: &Runtime, manager: &ConnectionManager) -> Peers {
        Peers {
            incr: Subject::Incr(manager.clone()),
            pipeline: Subject::IncrPexpireat(manager.clone()),
            script: incrby_script(runtime, manager),
        }
    }

    /// Each peer's case name and subject, with its keys: `keys(prefix)`.
    fn cases(
        &self,
        keys: impl Fn(&str) -> Arc<[String]>,
    ) -> [(&'static str, &Subject, Arc<[String]>); 3] {
        [
            ("incr", &self.incr, keys("incr:")),
            ("incr_pexpireat", &self.pipeline, keys("pipe:")),
            ("incrby_script", &self.script, keys("script:")),
        ]
    }
}

fn decisions(c: &mut Criterion, env: &Env<'_>, connection: &RedisConnection, peers: &Peers) {
    let ratewindow = Subject::Ratewindow(Box::new(
        limiter(HUGE_LIMIT, "rw")
            .build(connection.clone())
            .expect("valid limiter"),
    ));
    interleaved(
        c,
        env.runtime,
        &[
            ("ratewindow", ratewindow.clone(), "solo".into()),
            ("incr", peers.incr.clone(), "incr:solo".into()),
            ("incr_pexpireat", peers.pipeline.clone(), "pipe:solo".into()),
            ("incrby_script", peers.script.clone(), "script:solo".into()),
        ],
    );
    for n in CONCURRENCY {
        let keys = |prefix: &str| -> Arc<[String]> {
            (0..n).map(|t| format!("{prefix}user:{t}")).collect()
        };
        let mut group = Group::new(
            c,
            format!("redis_decisions/concurrency/{n}"),
            format!("redis_decisions c={n}"),
            n,
        );
        group.case(env, "ratewindow", &ratewindow, &keys(""), true);
        for (name, subject, keys) in peers.cases(keys) {
            group.case(env, name, subject, &keys, true);
        }
        group.finish();
    }
}

/// `redis_denied/concurrency/N`: ratewindow without its over-limit cache on keys already over
/// their limit (every denial is an `EVALSHA`), against the peers on as many keys, which do the
/// same as when allowed.
fn denied(c: &mut Criterion, env: &Env<'_>, connection: &RedisConnection, peers: &Peers) {
    let ratewindow = Subject::Ratewindow(Box::new(
        limiter(OVER_LIMIT, "denied")
            .over_limit_cache(0)
            .build(connection.clone())
            .expect("valid limiter"),
    ));
    for n in CONCURRENCY {
        let keys = |prefix: &str| -> Arc<[String]> {
            (0..n).map(|t| format!("denied:{prefix}user:{t}")).collect()
        };
        let mut group = Group::new(
            c,
            format!("redis_denied/concurrency/{n}"),
            format!("redis_denied c={n}"),
            n,
        );
        // Every key's limit spent before the case, so that its counts hold denials only.
        let over = keys("");
        env.runtime.block_on(async {
            for key in over.iter() {
                for _ in 0..OVER_LIMIT {
                    ratewindow.decide(key, false).await;
                }
            }
        });
        group.case(env, "ratewindow", &ratewindow, &over, false);
        for (name, subject, keys) in peers.cases(keys) {
            group.case(env, name, subject, &keys, false);
        }
        group.finish();
    }
}

/// `redis_three_quotas/concurrency/N`: ratewindow with a per-second, a per-minute and a
/// per-hour quota on every key (one `EVALSHA` reading and writing three counters), all
/// allowed, against the same one-counter peers.
fn three_quotas(c: &mut Criterion, env: &Env<'_>, connection: &RedisConnection, peers: &Peers) {
    let ratewindow = Subject::Ratewindow(Box::new(
        limiter(HUGE_LIMIT, "three")
            .quota(Quota::per_second(HUGE_LIMIT).expect("valid quota"))
            .quota(Quota::per_hour(HUGE_LIMIT).expect("valid quota"))
            .build(connection.clone())
            .expect("valid limiter"),
    ));
    for n in CONCURRENCY {
        let keys = |prefix: &str| -> Arc<[String]> {
            (0..n).map(|t| format!("three:{prefix}user:{t}")).collect()
        };
        let mut group = Group::new(
            c,
            format!("redis_three_quotas/concurrency/{n}"),
            format!("redis_three_quotas c={n}"),
            n,
        );
        group.case(env, "ratewindow", &ratewindow, &keys(""), true);
        for (name, subject, keys) in peers.cases(keys) {
            group.case(env, name, subject, &keys, true);
        }
        group.finish();
    }
}

/// The `incrby_script` peer, its script loaded first so that no case pays (or counts) the load.
fn incrby_script(runtime: &Runtime, manager: &ConnectionManager) -> Subject {
    let script = ::redis::Script::new(INCRBY_SCRIPT);
    runtime
        .block_on(script.load_async(&mut manager.clone()))
        .expect("SCRIPT LOAD");
    Subject::IncrbyScript(manager.clone(), Arc::new(script))
}

/// `redis_cluster_decisions`: ratewindow's routing against redis-rs's cluster client, 64 tasks,
/// charged the commands and CPU time of all three masters.
fn cluster_decisions(c: &mut Criterion, runtime: &Runtime) {
    const TASKS: usize = 64;
    let cluster = RedisCluster::with_args(&["--cluster-require-full-coverage", "no"]);
    let urls = cluster.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let connection = runtime
        .block_on(RedisConnection::connect_cluster_with_timeout(
            &urls,
            CALL_TIMEOUT,
        ))
        .expect("connect to the cluster");
    let ratewindow = Subject::Ratewindow(Box::new(
        limiter(HUGE_LIMIT, "rw")
            .build(connection)
            .expect("valid limiter"),
    ));
    let client = ::redis::cluster::ClusterClientBuilder::new(urls.clone())
        .build()
        .expect("cluster client");
    let incr = Subject::ClusterIncr(
        runtime
            .block_on(client.get_async_connection())
            .expect("redis-rs cluster connection"),
    );
    let env = Env {
        runtime,
        servers: cluster.nodes().iter().collect(),
    };
    let mut group = Group::new(
        c,
        format!("redis_cluster_decisions/concurrency/{TASKS}"),
        format!("redis_cluster_decisions c={TASKS}"),
        TASKS,
    );
    let mut cases = Vec::new();
    for (name, subject, prefix) in [("ratewindow", &ratewindow, ""), ("incr", &incr, "incr:")] {
        // Hash-tagged as ratewindow's keys are, so both spread over the masters alike.
        let keys: Arc<[String]> = (0..TASKS)
            .map(|t| format!("{prefix}{{user:{t}}}"))
            .collect();
        // A first call on every key loads ratewindow's script on every master, so that the
        // case neither pays nor counts the loads.
        runtime.block_on(async {
            for key in keys.iter() {
                subject.decide(key, true).await;
            }
        });
        group.case(&env, name, subject, &keys, true);
        cases.push((name, subject, keys));
    }
    group.finish();
    if rounds_requested("redis_cluster") {
        let subjects: Vec<(&str, &Subject, &Arc<[String]>)> = cases
            .iter()
            .map(|(name, subject, keys)| (*name, *subject, keys))
            .collect();
        interleaved_rounds(
            &env,
            &format!("cluster (3 masters), concurrency {TASKS}"),
            &subjects,
            true,
        );
    }
}

fn over_limit(c: &mut Criterion, env: &Env<'_>, connection: &RedisConnection, peers: &Peers) {
    let no_cache = Subject::Ratewindow(Box::new(
        limiter(OVER_LIMIT, "nocache")
            .over_limit_cache(0)
            .build(connection.clone())
            .expect("valid limiter"),
    ));
    let cache = Subject::Ratewindow(Box::new(
        limiter(OVER_LIMIT, "cache")
            .over_limit_cache(OVER_LIMIT_CACHE_CAPACITY)
            .build(connection.clone())
            .expect("valid limiter"),
    ));
    let hot = |key: &str| -> Arc<[String]> {
        std::iter::repeat_n(key.to_string(), OVER_LIMIT_CONCURRENCY).collect()
    };
    let mut group = Group::new(
        c,
        "redis_over_limit".into(),
        format!("redis_over_limit c={OVER_LIMIT_CONCURRENCY}"),
        OVER_LIMIT_CONCURRENCY,
    );
    let cases = [
        ("no_cache", &no_cache, hot("hot")),
        ("cache", &cache, hot("hot")),
        ("incr", &peers.incr, hot("incr:hot")),
        ("incr_pexpireat", &peers.pipeline, hot("pipe:hot")),
    ];
    for (name, subject, keys) in cases {
        group.case(env, name, subject, &keys, false);
    }
    group.finish();
}

/// `redis_rounds`: the concurrency-64 comparisons again, as interleaved rounds rather than
/// criterion cases measured one after another, so that every subject of a round sees the same
/// state of this shared machine: per round, each subject in turn (the order rotating) runs 64
/// tasks for [`ROUND`], and the round's ratios divide figures of that round. Prints decisions/s
/// and CPU per decision per subject (median of the rounds) and each round's ratios.
const ROUND: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;

/// One subject for one round: decisions made, wall time, and the CPU time both sides used.
#[derive(Clone, Copy)]
struct RoundFigures {
    rate: f64,
    server_us: f64,
    client_us: f64,
}

async fn round(
    env: &Env<'_>,
    subject: &Subject,
    keys: &Arc<[String]>,
    allowed: bool,
) -> RoundFigures {
    let pids = pids(&env.servers);
    let before = Cpu::now(&pids);
    let start = Instant::now();
    let deadline = start + ROUND;
    let mut tasks = JoinSet::new();
    for t in 0..keys.len() {
        let (subject, keys) = (subject.clone(), Arc::clone(keys));
        tasks.spawn(async move {
            let mut decisions = 0u64;
            while Instant::now() < deadline {
                subject.decide(&keys[t], allowed).await;
                decisions += 1;
            }
            decisions
        });
    }
    let mut decisions = 0;
    while let Some(task) = tasks.join_next().await {
        decisions += task.expect("round task");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = Cpu::now(&pids);
    let per = |d: Duration| d.as_secs_f64() * 1e6 / decisions.max(1) as f64;
    RoundFigures {
        rate: decisions as f64 / elapsed,
        server_us: per(after.server.saturating_sub(before.server)),
        client_us: per(after.client.saturating_sub(before.client)),
    }
}

fn rounds(env: &Env<'_>, connection: &RedisConnection, peers: &Peers) {
    let n = TARGET_CONCURRENCY;
    let keys = |prefix: &str| -> Arc<[String]> {
        (0..n).map(|t| format!("rounds:{prefix}user:{t}")).collect()
    };
    let build = |builder: ratewindow::RedisLimiterBuilder| {
        Subject::Ratewindow(Box::new(
            builder.build(connection.clone()).expect("valid limiter"),
        ))
    };
    let allowed = build(limiter(HUGE_LIMIT, "rounds"));
    let denied = build(limiter(OVER_LIMIT, "rounds_denied").over_limit_cache(0));
    let three = build(
        limiter(HUGE_LIMIT, "rounds_three")
            .quota(Quota::per_second(HUGE_LIMIT).expect("valid quota"))
            .quota(Quota::per_hour(HUGE_LIMIT).expect("valid quota")),
    );
    let over = keys("denied:");
    env.runtime.block_on(async {
        for key in over.iter() {
            for _ in 0..OVER_LIMIT {
                denied.decide(key, false).await;
            }
        }
    });
    let groups: [(&str, &Subject, Arc<[String]>, bool); 3] = [
        ("allowed", &allowed, keys(""), true),
        ("denied, cache off", &denied, over, false),
        ("three quotas", &three, keys("three:"), true),
    ];
    let peer_cases = peers.cases(keys);
    for (group, ratewindow, rw_keys, allowed) in groups {
        let mut subjects: Vec<(&str, &Subject, &Arc<[String]>)> =
            vec![("ratewindow", ratewindow, &rw_keys)];
        subjects.extend(
            peer_cases
                .iter()
                .map(|(name, subject, keys)| (*name, *subject, keys)),
        );
        interleaved_rounds(
            env,
            &format!("{group}, concurrency {n}"),
            &subjects,
            allowed,
        );
    }
}

/// Runs [`ROUNDS`] interleaved rounds of `subjects` (ratewindow first) and prints their
/// figures and each round's ratios of ratewindow to every other subject.
fn interleaved_rounds(
    env: &Env<'_>,
    title: &str,
    subjects: &[(&str, &Subject, &Arc<[String]>)],
    allowed: bool,
) {
    let mut figures: Vec<Vec<RoundFigures>> = vec![Vec::new(); subjects.len()];
    for r in 0..ROUNDS {
        for k in 0..subjects.len() {
            let i = (k + r) % subjects.len();
            let (_, subject, keys) = subjects[i];
            let expect_allowed = allowed || !subject.is_limiter();
            figures[i].push(
                env.runtime
                    .block_on(round(env, subject, keys, expect_allowed)),
            );
        }
    }
    println!("\n### redis_rounds: {title}, {ROUNDS} interleaved rounds of {ROUND:?}\n");
    println!(
        "| subject | decisions/s (median) | redis-server CPU µs | client CPU µs | rounds: decisions/s |"
    );
    println!("| --- | ---: | ---: | ---: | --- |");
    let median = |values: Vec<f64>| {
        let mut values = values;
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    for ((name, _, _), rounds) in subjects.iter().zip(&figures) {
        let each: Vec<String> = rounds.iter().map(|f| format_rate(f.rate)).collect();
        println!(
            "| {name} | {} | {:.2} | {:.2} | {} |",
            format_rate(median(rounds.iter().map(|f| f.rate).collect())),
            median(rounds.iter().map(|f| f.server_us).collect()),
            median(rounds.iter().map(|f| f.client_us).collect()),
            each.join(" / ")
        );
    }
    println!();
    for (peer, rounds) in subjects.iter().zip(&figures).skip(1) {
        let ratio = |of: fn(&RoundFigures) -> f64| -> String {
            figures[0]
                .iter()
                .zip(rounds)
                .map(|(rw, p)| format!("{:.2}", of(rw) / of(p)))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        println!(
            "ratewindow ÷ {}: decisions/s {}; redis-server CPU {}",
            peer.0,
            ratio(|f| f.rate),
            ratio(|f| f.server_us)
        );
    }
}

/// Whether the command line asks for interleaved rounds of a group named `group`: criterion's
/// filter (the first argument that is not a flag) names `redis_rounds` or `group`, or a prefix
/// of either (`redis`), or there is no filter.
fn rounds_requested(group: &str) -> bool {
    match std::env::args().skip(1).find(|arg| !arg.starts_with('-')) {
        Some(filter) => ["redis_rounds", group]
            .iter()
            .any(|name| name.starts_with(&filter) || filter.contains(name)),
        None => true,
    }
}

pub(crate) fn bench_all(c: &mut Criterion) {
    let started = Instant::now();
    let server = RedisServer::new();
    println!(
        "redis-server: {}; config: default + --save \"{}\" --appendonly {} (io-threads {}, \
         maxmemory-policy {}), 127.0.0.1:{}",
        server_version(),
        config_value(&server, "save"),
        config_value(&server, "appendonly"),
        config_value(&server, "io-threads"),
        config_value(&server, "maxmemory-policy"),
        server.port()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let connection = runtime
        .block_on(RedisConnection::connect(&server.url()))
        .expect("connect to redis-server");
    // The peers on redis-rs's `ConnectionManager` as its users get it by default: one timer
    // per call (its 500 ms response timeout), as ratewindow's calls have one (the limiter's
    // timeout; its own connection has no second one).
    let manager = runtime
        .block_on(ConnectionManager::new(
            ::redis::Client::open(server.url()).expect("valid url"),
        ))
        .expect("connect the peers to redis-server");
    // ratewindow's script loaded too (by a first call), so that no case counts the load.
    runtime
        .block_on(
            limiter(HUGE_LIMIT, "setup")
                .build(connection.clone())
                .expect("valid limiter")
                .check("setup"),
        )
        .expect("first decision");
    let peers = Peers::new(&runtime, &manager);
    let env = Env {
        runtime: &runtime,
        servers: vec![&server],
    };
    decisions(c, &env, &connection, &peers);
    denied(c, &env, &connection, &peers);
    three_quotas(c, &env, &connection, &peers);
    over_limit(c, &env, &connection, &peers);
    cluster_decisions(c, &runtime);
    print_summary();
    if rounds_requested("redis_decisions") {
        rounds(&env, &connection, &peers);
    }
    println!(
        "\nRedis benches: {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
}
