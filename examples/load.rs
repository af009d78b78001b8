//! A bounded load test of the demo server: starts `examples/server` as a child process (and,
//! with `REDIS=1`, a `redis-server` on a free loopback port for it), drives it from many
//! keep-alive connections for a fixed time, and reports requests per second, latency
//! percentiles, statuses, errors, the server's resident memory before and after, and whether
//! every key's window admitted exactly `min(limit, offered)` requests.
//!
//! ```text
//! cargo build --release --examples --features redis
//! target/release/examples/load                  # in-memory, 30 s
//! REDIS=1 target/release/examples/load          # Redis (needs redis-server on the PATH)
//! ```
//!
//! Settings (environment): `DURATION_SECS` (30), `CONNECTIONS` (64), `KEYS` (1000 API keys,
//! spread evenly over the connections' requests), `RATE_LIMIT` (the server's, `100/1m`),
//! `REDIS=1`. The process exits non-zero if any request failed (a connection error, or a status
//! other than 200 and 429) or any window admitted more or fewer than it should have.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One connection's results.
#[derive(Default)]
struct Tally {
    /// Microseconds per request, in order.
    latencies_us: Vec<u32>,
    ok: u64,
    limited: u64,
    /// Connection errors and unexpected statuses.
    errors: u64,
    /// `(key, X-RateLimit-Limit, X-RateLimit-Reset)` -> (offered, admitted).
    windows: HashMap<(u32, u64, u64), (u64, u64)>,
    first_error: Option<String>,
}

/// One parsed response.
struct Reply {
    status: u16,
    limit: u64,
    reset: u64,
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("load: {message}");
            ExitCode::FAILURE
        }
    }
}

fn setting(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .map_err(|_| format!("{name}={value:?}: expected a whole number")),
        Err(_) => Ok(default),
    }
}

fn run() -> Result<bool, String> {
    let duration = Duration::from_secs(setting("DURATION_SECS", 30)?);
    let small = |name: &str, default: u64| -> Result<u32, String> {
        u32::try_from(setting(name, default)?)
            .ok()
            .filter(|&n| (1..=1_000_000).contains(&n))
            .ok_or_else(|| format!("{name}: expected a whole number from 1 to 1000000"))
    };
    let connections = small("CONNECTIONS", 64)?;
    let keys = small("KEYS", 1000)?;
    let rate_limit = std::env::var("RATE_LIMIT").unwrap_or_else(|_| "100/1m".to_owned());
    let with_redis = std::env::var("REDIS").is_ok_and(|v| v == "1");

    let redis = if with_redis {
        Some(ChildGuard::redis()?)
    } else {
        None
    };
    let port = free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut server = Command::new(sibling("server")?);
    server
        .env("BIND", addr.to_string())
        .env("RATE_LIMIT", &rate_limit)
        .env_remove("REDIS_CLUSTER_URLS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match &redis {
        Some(redis) => server.env("REDIS_URL", format!("redis://127.0.0.1:{}", redis.port)),
        None => server.env_remove("REDIS_URL"),
    };
    let server = ChildGuard {
        child: server
            .spawn()
            .map_err(|err| format!("cannot start the demo server: {err}"))?,
        port,
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| err.to_string())?;
    runtime.block_on(wait_for(addr))?;
    let rss_before = rss_kib(server.child.id());
    let started = Instant::now();
    let tallies = runtime.block_on(async {
        let tasks: Vec<_> = (0..connections)
            .map(|c| tokio::spawn(drive(addr, c, connections, keys, started + duration)))
            .collect();
        let mut tallies = Vec::new();
        for task in tasks {
            tallies.push(task.await.unwrap_or_default());
        }
        tallies
    });
    let elapsed = started.elapsed();
    let rss_after = rss_kib(server.child.id());
    let peak = peak_kib(server.child.id());

    let mut latencies: Vec<u32> = Vec::new();
    let (mut ok, mut limited, mut errors) = (0, 0, 0);
    let mut windows: HashMap<(u32, u64, u64), (u64, u64)> = HashMap::new();
    let mut first_error = None;
    for tally in tallies {
        latencies.extend(tally.latencies_us);
        ok += tally.ok;
        limited += tally.limited;
        errors += tally.errors;
        first_error = first_error.or(tally.first_error);
        for (window, (offered, admitted)) in tally.windows {
            let entry = windows.entry(window).or_default();
            entry.0 += offered;
            entry.1 += admitted;
        }
    }
    latencies.sort_unstable();
    let total = ok + limited + errors;
    // A window is exact when it admitted min(limit, offered); the windows cut short by the
    // start and the end of the run are as exact as the others.
    let inexact = windows
        .iter()
        .filter(|((_, limit, _), (offered, admitted))| *admitted != (*offered).min(*limit))
        .count();

    let backend = if with_redis { "Redis" } else { "in-memory" };
    println!(
        "demo server ({backend}, RATE_LIMIT={rate_limit}), {connections} keep-alive connections, \
         {keys} keys, {:.1} s",
        elapsed.as_secs_f64()
    );
    println!(
        "requests: {total} ({:.0}/s): 200 {ok}, 429 {limited}, errors {errors}",
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency: p50 {} us, p90 {} us, p99 {} us, p99.9 {} us, max {} us",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
        latencies.last().copied().unwrap_or(0)
    );
    println!(
        "server RSS: {} KiB before, {} KiB after, peak {} KiB",
        rss_before.unwrap_or(0),
        rss_after.unwrap_or(0),
        peak.unwrap_or(0)
    );
    println!(
        "windows: {} (key, window) pairs, {inexact} not admitting exactly min(limit, offered)",
        windows.len()
    );
    if let Some(error) = first_error {
        println!("first error: {error}");
    }
    drop(server);
    drop(redis);
    Ok(errors == 0 && inexact == 0 && total > 0)
}

/// One keep-alive connection sending requests back to back until `until`, cycling through the
/// keys `connection, connection + connections, ...` so that every key is on one connection
/// and all keys get the same load.
async fn drive(
    addr: SocketAddr,
    connection: u32,
    connections: u32,
    keys: u32,
    until: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let own: Vec<u32> = (connection..keys).step_by(connections as usize).collect();
    let own = if own.is_empty() {
        vec![connection % keys]
    } else {
        own
    };
    let mut stream = None;
    let mut buf = Vec::with_capacity(4096);
    let mut i = 0usize;
    while Instant::now() < until {
        let key = own[i % own.len()];
        i += 1;
        if stream.is_none() {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream = Some(s);
                }
                Err(err) => {
                    tally.errors += 1;
                    tally.first_error.get_or_insert(format!("connect: {err}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = stream.as_mut() else { continue };
        let request = format!(
            "GET /api/v1/campaigns/cmp_abc123 HTTP/1.1\r\nhost: load\r\nx-api-key: \
             load_key_{key}\r\n\r\n"
        );
        let sent = Instant::now();
        match exchange(s, request.as_bytes(), &mut buf).await {
            Ok(reply) => {
                let micros = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                tally.latencies_us.push(micros);
                let window = tally
                    .windows
                    .entry((key, reply.limit, reply.reset))
                    .or_default();
                window.0 += 1;
                match reply.status {
                    200 => {
                        tally.ok += 1;
                        window.1 += 1;
                    }
                    429 => tally.limited += 1,
                    other => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert(format!("status {other}"));
                    }
                }
            }
            Err(err) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(err);
                stream = None;
            }
        }
    }
    tally
}

/// Writes `request`, reads one whole response (headers and `content-length` body).
async fn exchange(s: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> Result<Reply, String> {
    s.write_all(request)
        .await
        .map_err(|err| format!("write: {err}"))?;
    buf.clear();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        read_more(s, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "head not UTF-8".to_owned())?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let (mut length, mut limit, mut reset) = (0usize, 0u64, 0u64);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().unwrap_or(0),
            "x-ratelimit-limit" => limit = value.parse().unwrap_or(0),
            "x-ratelimit-reset" => reset = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    while buf.len() < head_end + length {
        read_more(s, buf).await?;
    }
    Ok(Reply {
        status,
        limit,
        reset,
    })
}

/// Appends what the connection has next to `buf`.
async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    let n = s
        .read(&mut chunk)
        .await
        .map_err(|err| format!("read: {err}"))?;
    if n == 0 {
        return Err("the server closed the connection".to_owned());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Waits until the server accepts connections (it may be connecting to Redis first).
async fn wait_for(addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!(
        "the demo server did not listen on {addr} within 20 s"
    ))
}

/// A binary next to this one (`target/<profile>/examples/`).
fn sibling(name: &str) -> Result<PathBuf, String> {
    let path = std::env::current_exe()
        .map_err(|err| err.to_string())?
        .with_file_name(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build the examples first (cargo build --release --examples --features redis)",
            path.display()
        ))
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|err| format!("no free port: {err}"))
}

/// A field of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

fn peak_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// A child process killed and reaped on drop.
struct ChildGuard {
    child: Child,
    port: u16,
}

impl ChildGuard {
    /// A `redis-server` on a free loopback port, without persistence, answering `PING`.
    fn redis() -> Result<ChildGuard, String> {
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|err| format!("cannot start redis-server: {err}"))?;
        let guard = ChildGuard { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("redis-server did not listen on {port}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(guard)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
