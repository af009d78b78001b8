//! The demo server on the Redis backend against real `redis-server` processes: two instances
//! sharing one quota exactly, the failure policies as HTTP answers, and the example binary
//! itself over real TCP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use ratewindow::http::HeaderStyle;
use ratewindow::{
    DynRateLimiter, FailurePolicy, ManualClock, Quota, RedisConnection, RedisLimiter,
};

use super::demo_server::{VARIABLES, app, unreported_policy_decisions};
use super::server::{Reply, call};
use crate::support::example_binary;
use crate::support::redis_server::RedisServer;

/// 20 minutes into an hour: a `/1h` window ends at `WINDOW_END_SECS`, 2400 s later.
const NOW_MS: u64 = 1_800_001_200_000;
const WINDOW_END_SECS: u64 = 1_800_003_600;

const ABC: &str = "/api/v1/campaigns/cmp_abc123";
const ABC_START: &str = "/api/v1/campaigns/cmp_abc123/start";

/// Generous: tests run unoptimised on a shared machine, and a timeout would hand the decision to
/// the failure policy.
const GENEROUS_TIMEOUT: Duration = Duration::from_secs(5);

/// One instance of the demo server: its own connection and limiter on `server`.
async fn instance(
    server: &RedisServer,
    prefix: &str,
    quota: &str,
    policy: FailurePolicy,
    timeout: Duration,
    clock: &ManualClock,
) -> Router {
    let connection = RedisConnection::connect(&server.url())
        .await
        .expect("connect to redis-server");
    let limiter = RedisLimiter::builder(quota.parse::<Quota>().unwrap())
        .prefix(prefix)
        .timeout(timeout)
        .failure_policy(policy)
        .clock(clock.clone())
        .build(connection)
        .unwrap();
    let limiter: Arc<dyn DynRateLimiter> = Arc::new(limiter);
    app(limiter, 10, HeaderStyle::default())
}

/// The error code of a handler's JSON error (`{"error": {"code": ...}}`) or of one of the rate
/// limit's own `application/problem+json` answers (`{"code": ...}`).
fn code(reply: &Reply) -> &str {
    reply.body["error"]["code"]
        .as_str()
        .or_else(|| reply.body["code"].as_str())
        .unwrap_or_default()
}

async fn send(app: &Router, method: Method, path: &str, key: &str) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("x-api-key", key)
        .body(Body::empty())
        .unwrap();
    call(app, request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_redis_admit_exactly_the_quota() {
    let server = RedisServer::new();
    let clock = ManualClock::at_millis(NOW_MS);
    // ReturnError: a Redis failure must show up as a 500, never be decided by a policy.
    let policy = FailurePolicy::ReturnError;
    let a = instance(&server, "shared", "50/1h", policy, GENEROUS_TIMEOUT, &clock).await;
    let b = instance(&server, "shared", "50/1h", policy, GENEROUS_TIMEOUT, &clock).await;

    let tasks: Vec<_> = (0..120)
        .map(|i| {
            let (which, app) = if i % 2 == 0 {
                (0, a.clone())
            } else {
                (1, b.clone())
            };
            tokio::spawn(async move { (which, send(&app, Method::POST, ABC_START, "k").await) })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.expect("request task"));
    }

    let mut remaining = Vec::new();
    let mut admitted_by = [0u64; 2];
    let mut started_by = [0u64; 2];
    for (which, reply) in &replies {
        let (limit, left, reset) = reply.rate_limit();
        assert_eq!((limit, reset), (50, WINDOW_END_SECS), "{}", reply.status);
        match reply.status {
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(left, 0);
                assert_eq!(reply.problem().0, "rate_limited");
                assert_eq!(reply.header("retry-after"), Some("2400"));
            }
            StatusCode::OK | StatusCode::BAD_REQUEST => {
                remaining.push(left);
                admitted_by[*which] += 1;
                if reply.status == StatusCode::OK {
                    started_by[*which] += 1;
                } else {
                    assert_eq!(code(reply), "campaign_already_active");
                }
                assert_eq!(reply.header("retry-after"), None);
            }
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
    assert_eq!(remaining.len(), 50, "admitted across both instances");
    assert_eq!(replies.len() - remaining.len(), 70, "denied");
    remaining.sort_unstable();
    assert_eq!(remaining, (0..50).collect::<Vec<u64>>());
    // Each instance keeps its own workspaces: the first start it admits succeeds.
    for which in 0..2 {
        assert_eq!(started_by[which], u64::from(admitted_by[which] > 0));
    }

    // One counter in Redis holds all 50.
    let counters = crate::redis::counters(&server, "shared:{k}:3600000:");
    assert_eq!(
        counters.iter().map(|(_, count)| count).sum::<u64>(),
        50,
        "{counters:?}"
    );
}

#[tokio::test]
async fn failure_policies_answer_over_http_while_redis_is_down() {
    let mut server = RedisServer::new();
    let clock = ManualClock::at_millis(NOW_MS);
    let timeout = Duration::from_millis(500);
    let closed = instance(
        &server,
        "closed",
        "10/1h",
        FailurePolicy::FailClosed,
        timeout,
        &clock,
    )
    .await;
    let open = instance(
        &server,
        "open",
        "10/1h",
        FailurePolicy::FailOpen,
        timeout,
        &clock,
    )
    .await;
    let fallback = instance(
        &server,
        "fallback",
        "10/1h",
        FailurePolicy::Fallback { instances: 2 },
        timeout,
        &clock,
    )
    .await;
    for app in [&closed, &open, &fallback] {
        let reply = send(app, Method::GET, ABC, "k").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.rate_limit(), (10, 9, WINDOW_END_SECS));
    }
    let policy_decisions_before = unreported_policy_decisions();

    server.stop();

    // Closed: 503, not 429, with the headers of the denial and a retry within the second. The
    // first call finds Redis gone; the second goes straight to the policy.
    for _ in 0..2 {
        let reply = send(&closed, Method::POST, ABC_START, "k").await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.body
        );
        assert_eq!(
            reply.problem(),
            (
                "rate_limiter_unavailable",
                "Rate limiting is temporarily unavailable; retry in 1 s"
            )
        );
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert_eq!(reply.rate_limit(), (10, 0, WINDOW_END_SECS));
    }

    // Open: served as usual, uncounted.
    for _ in 0..2 {
        let reply = send(&open, Method::GET, ABC, "k").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.rate_limit(), (10, 9, WINDOW_END_SECS));
        assert_eq!(reply.header("retry-after"), None);
    }
    let started = send(&open, Method::POST, ABC_START, "k").await;
    assert_eq!(started.status, StatusCode::OK, "the handler ran");
    assert_eq!(started.body["data"]["status"], "active");

    // Fallback, two instances: this one admits half the quota locally, then 429s as usual.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let reply = send(&fallback, Method::GET, ABC, "k").await;
        statuses.push(reply.status.as_u16());
        assert_eq!(reply.rate_limit().0, 5);
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(reply.header("retry-after"), Some("2400"));
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);

    // 2 closed + 3 open + 6 fallback, at least (other tests may add theirs).
    assert!(unreported_policy_decisions() >= policy_decisions_before + 11);

    // Back on Redis once it answers again (the counts died with it).
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        clock.advance(Duration::from_millis(300)); // past the limiter's wait before a retry
        let reply = send(&closed, Method::GET, ABC, "k").await;
        if reply.status == StatusCode::OK {
            assert_eq!(reply.rate_limit().1, 9);
            break;
        }
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "still 503 after Redis restarted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// The example binary itself.

/// The example running as a child process; killed and reaped on drop.
pub(crate) struct Example {
    child: Child,
    /// Everything it has written to stderr so far.
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Example {
    /// Starts the example with `vars` (and none of the outer environment's example variables).
    pub(crate) fn spawn(vars: &[(&str, &str)]) -> Example {
        let binary = example_binary("server", "--features redis,tower");
        let mut command = Command::new(&binary);
        // None of the outer environment's example variables leak in.
        for name in VARIABLES {
            command.env_remove(name);
        }
        command
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", binary.display()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        let reader = thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut sink = sink.lock().unwrap_or_else(PoisonError::into_inner);
                sink.push_str(&line);
                sink.push('\n');
            }
        });
        Example {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The exit status, once the process has exited within `timeout`.
    pub(crate) fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The pipe is closed: let the reader take the last lines.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address from the start-up line (`listening on http://<addr>`), once it is printed.
    /// Binding port 0 and reading the port back leaves no window for another process to take
    /// it first.
    pub(crate) fn wait_until_listening(&mut self, timeout: Duration) -> SocketAddr {
        let deadline = Instant::now() + timeout;
        loop {
            let stderr = self.stderr();
            if let Some(rest) = stderr.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                return addr
                    .parse()
                    .unwrap_or_else(|err| panic!("bad address {addr:?} ({err}):\n{stderr}"));
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                thread::sleep(Duration::from_millis(50)); // the reader's last lines
                panic!(
                    "the example exited ({status}) before listening:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the example did not listen within {timeout:?}:\n{stderr}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// A raw HTTP/1.1 response.
struct RawReply {
    status: u16,
    /// Lower-cased names.
    headers: Vec<(String, String)>,
    body: String,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn number(&self, name: &str) -> u64 {
        self.header(name)
            .unwrap_or_else(|| panic!("{name} missing on a {} reply", self.status))
            .parse()
            .unwrap_or_else(|err| panic!("{name}: {err}"))
    }
}

/// One `POST` over a fresh connection, read until the server closes it.
fn raw_post(addr: SocketAddr, path: &str, key: &str) -> RawReply {
    raw_request(addr, "POST", path, key)
}

/// One request over a fresh connection, read until the server closes it.
fn raw_request(addr: SocketAddr, method: &str, path: &str, key: &str) -> RawReply {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {key}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("a whole response");
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers: {raw:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .map(|line| {
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {line:?}"));
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    RawReply {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn unix_now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The binary runs on the real clock in epoch-aligned hours: a test that expects one window
/// waits out the last ten seconds of an hour rather than straddle two.
fn clear_of_an_hour_end() {
    let into_hour = unix_now_secs() % 3600;
    if into_hour > 3590 {
        thread::sleep(Duration::from_secs(3600 - into_hour + 1));
    }
}

#[test]
fn the_example_binary_serves_over_tcp_with_redis() {
    let server = RedisServer::new();
    let url = server.url();
    clear_of_an_hour_end();
    let mut example = Example::spawn(&[
        ("BIND", "127.0.0.1:0"),
        ("REDIS_URL", &url),
        ("RATE_LIMIT", "3/1h"),
    ]);
    let addr = example.wait_until_listening(Duration::from_secs(30));

    let replies: Vec<RawReply> = (0..4).map(|_| raw_post(addr, ABC_START, "k")).collect();
    let now = unix_now_secs();
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 400, 400, 429]);
    let reset = replies[0].number("x-ratelimit-reset");
    assert_eq!(reset % 3600, 0, "an epoch-aligned hour");
    assert!(
        reset > now && reset <= now + 3600,
        "reset {reset}, now {now}"
    );
    for (reply, remaining) in replies.iter().zip([2, 1, 0, 0]) {
        assert_eq!(reply.number("x-ratelimit-limit"), 3, "{}", reply.body);
        assert_eq!(reply.number("x-ratelimit-remaining"), remaining);
        assert_eq!(reply.number("x-ratelimit-reset"), reset);
        // The default style only.
        assert_eq!(reply.header("ratelimit"), None);
    }
    for reply in &replies[..3] {
        assert_eq!(reply.header("content-type"), Some("application/json"));
    }
    assert_eq!(
        replies[3].header("content-type"),
        Some("application/problem+json")
    );
    for reply in &replies[..3] {
        assert_eq!(reply.header("retry-after"), None);
    }
    assert!(
        replies[0].body.contains(r#""status":"active""#),
        "{}",
        replies[0].body
    );
    assert!(replies[1].body.contains("campaign_already_active"));
    let denied = &replies[3];
    assert!(
        denied.body.contains(r#""code":"rate_limited""#),
        "{}",
        denied.body
    );
    let retry_after = denied.number("retry-after");
    assert!(
        retry_after >= 1 && retry_after <= reset - now + 1,
        "Retry-After {retry_after}"
    );

    // The count is in Redis, under the default prefix.
    let counters = crate::redis::counters(&server, "ratewindow:{k}:3600000:");
    assert_eq!(
        counters.iter().map(|(_, count)| count).sum::<u64>(),
        3,
        "{counters:?}"
    );

    // `/metrics` has the round trips to Redis: one per decision Redis made (the start-up
    // probe and the denial of the over-limit cache are not).
    let metrics = raw_request(addr, "GET", "/metrics", "k");
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    assert!(
        metrics
            .body
            .contains("ratewindow_decisions_total{outcome=\"allowed\"} 3\n"),
        "{}",
        metrics.body
    );
    let round_trips = crate::redis::round_trips::parse_histogram(&metrics.body)
        .unwrap_or_else(|| panic!("no round trips in {}", metrics.body));
    assert_eq!(round_trips.count, 3, "{}", metrics.body);
    assert!(round_trips.sum > 0.0);

    let log = example.stderr();
    assert!(
        log.contains(&format!("backend: redis {url}, failure policy: open")),
        "{log}"
    );
    assert!(log.contains("headers: xratelimit)"), "{log}");
}

#[test]
fn the_example_binary_writes_the_headers_style_it_is_given() {
    let server = RedisServer::new();
    let url = server.url();
    clear_of_an_hour_end();
    let mut example = Example::spawn(&[
        ("BIND", "127.0.0.1:0"),
        ("REDIS_URL", &url),
        ("REDIS_PREFIX", "styles"),
        ("RATE_LIMIT", "1/1h"),
        ("HEADERS", "both"),
    ]);
    let addr = example.wait_until_listening(Duration::from_secs(30));
    let allowed = raw_post(addr, ABC_START, "k");
    let denied = raw_post(addr, ABC_START, "k");
    assert_eq!((allowed.status, denied.status), (200, 429));
    for (reply, remaining) in [(&allowed, 0), (&denied, 0)] {
        assert_eq!(reply.number("x-ratelimit-limit"), 1);
        assert_eq!(reply.number("x-ratelimit-remaining"), remaining);
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some(r#""per-hour";q=1;w=3600"#)
        );
        let t = reply.number("x-ratelimit-reset") - unix_now_secs();
        let ratelimit = reply.header("ratelimit").unwrap_or_default();
        let t_sent: u64 = ratelimit
            .strip_prefix(r#""per-hour";r=0;t="#)
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("ratelimit: {ratelimit:?}"));
        assert!(t_sent.abs_diff(t) <= 2, "t={t_sent}, reset in {t} s");
    }
    assert_eq!(allowed.header("retry-after"), None);
    assert!(denied.header("retry-after").is_some());
    assert!(example.stderr().contains("headers: xratelimit+ietf-10)"));
}

/// The binary's deployment limits, over real TCP: a connection that trickles its request head
/// is closed after `HEADER_READ_TIMEOUT_SECS`, and with `MAX_CONNECTIONS=1` a second
/// connection is answered only once the first is gone. (The exact timings are tested in
/// process, on a paused clock; here only lower bounds, which no slowness can break.)
#[test]
fn the_example_binary_cuts_off_slow_heads_and_caps_connections() {
    clear_of_an_hour_end();
    let mut example = Example::spawn(&[
        ("BIND", "127.0.0.1:0"),
        ("RATE_LIMIT", "10/1h"),
        ("HEADER_READ_TIMEOUT_SECS", "1"),
        ("MAX_CONNECTIONS", "1"),
    ]);
    let addr = example.wait_until_listening(Duration::from_secs(30));

    // The one slot: a connection that sends a header line now and then, never the head's end.
    let mut slow = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    let start = Instant::now();
    slow.write_all(
        format!(
            "GET {ABC} HTTP/1.1
host: demo
"
        )
        .as_bytes(),
    )
    .unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // Queued behind it: answered once it is gone.
    let second = thread::spawn(move || {
        let reply = raw_post(addr, ABC_START, "k");
        (reply, start.elapsed())
    });
    let mut buf = [0u8; 1024];
    let closed_after = loop {
        match slow.read(&mut buf) {
            Ok(0) => break start.elapsed(),
            Ok(n) => panic!(
                "answered an unfinished request: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "still open after {:?}",
                    start.elapsed()
                );
                if slow
                    .write_all(
                        b"x-pad: a
",
                    )
                    .is_err()
                {
                    break start.elapsed();
                }
            }
            Err(_) => break start.elapsed(),
        }
    };
    // The server's deadline runs from its accept, a little before `start`.
    assert!(
        closed_after >= Duration::from_millis(800),
        "closed after {closed_after:?}"
    );
    let (reply, answered_after) = second.join().expect("the second connection's thread");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.number("x-ratelimit-remaining"), 9);
    assert!(
        answered_after >= Duration::from_millis(800),
        "answered over the cap after {answered_after:?}"
    );
}

/// Runs the example with `vars`, expecting it to exit within `timeout`; its status and stderr.
pub(crate) fn run_to_exit(vars: &[(&str, &str)], timeout: Duration) -> (ExitStatus, String) {
    let mut example = Example::spawn(vars);
    let status = example.wait_for_exit(timeout).unwrap_or_else(|| {
        panic!(
            "the example with {vars:?} still runs after {timeout:?}:\n{}",
            example.stderr()
        )
    });
    (status, example.stderr())
}

#[test]
fn the_example_binary_refuses_bad_configuration() {
    let server = RedisServer::new();
    let url = server.url();
    let cases: [(&[(&str, &str)], &str); 16] = [
        (
            &[("PLANS", "pro plan=10/1m")],
            "PLANS: plan pro plan: invalid configuration: a limiter name is 1 to 32",
        ),
        (&[("SHADOW", "yes")], "SHADOW=\"yes\": expected 1 or 0"),
        (&[("START_FAILURE_LIMIT", "5")], "START_FAILURE_LIMIT=\"5\""),
        (&[("RATE_LIMIT", "abc")], "RATE_LIMIT=\"abc\""),
        (
            &[("PLANS", "pro:1000/1m")],
            "PLANS=\"pro:1000/1m\": \"pro:1000/1m\" has no '='",
        ),
        (
            &[("PLANS", "pro=1000/1h")],
            "\"pro=1000/1h\" has another window than RATE_LIMIT",
        ),
        (
            &[("PLANS", "pro=1000/1m,pro=5/1m")],
            "\"pro=5/1m\" repeats a plan's name",
        ),
        (&[("START_RATE_LIMIT", "0/1m")], "START_RATE_LIMIT=\"0/1m\""),
        (
            &[("HEADERS", "legacy")],
            "HEADERS=\"legacy\": unknown header style \"legacy\"",
        ),
        (
            &[("REDIS_URL", &url), ("FAILURE_POLICY", "bogus")],
            "FAILURE_POLICY=\"bogus\": expected open, closed or fallback",
        ),
        (&[("FAILURE_POLICY", "bogus")], "FAILURE_POLICY=\"bogus\""),
        (
            &[("REDIS_URL", &url), ("REDIS_TIMEOUT_MS", "0")],
            "REDIS_TIMEOUT_MS=\"0\"",
        ),
        (
            &[("REDIS_URL", &url), ("REDIS_PREFIX", "a{b}")],
            "REDIS_PREFIX=\"a{b}\"",
        ),
        (
            &[("HEADER_READ_TIMEOUT_SECS", "0")],
            "HEADER_READ_TIMEOUT_SECS=\"0\": expected a whole number of seconds from 1 to 3600",
        ),
        (
            &[("HEADER_READ_TIMEOUT_SECS", "1.5")],
            "HEADER_READ_TIMEOUT_SECS=\"1.5\"",
        ),
        (
            &[("MAX_CONNECTIONS", "0")],
            "MAX_CONNECTIONS=\"0\": expected a whole number from 1 to 1000000",
        ),
    ];
    for (vars, message) in cases {
        let mut vars = vars.to_vec();
        vars.push(("BIND", "127.0.0.1:0"));
        let (status, stderr) = run_to_exit(&vars, Duration::from_secs(20));
        assert_eq!(status.code(), Some(1), "{vars:?}: {stderr}");
        assert!(stderr.contains(message), "{vars:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{vars:?}: {stderr}");
        assert!(!stderr.contains("listening on"), "{vars:?}: {stderr}");
    }
}

#[test]
fn the_example_binary_exits_when_redis_is_unreachable_without_showing_the_password() {
    // A port nothing listens on (released at once).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}/");
    let (status, stderr) = run_to_exit(
        &[("BIND", "127.0.0.1:0"), ("REDIS_URL", &url)],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot connect to Redis at redis://:***@127.0.0.1:{port}/"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
}

/// The demo server's log never shows an API key: not at start-up, not per request, not while
/// Redis is down and the failure policy decides (the log then counts requests, and the
/// 429/200 bodies name no key either).
#[test]
fn the_example_binary_never_logs_an_api_key() {
    let mut server = RedisServer::new();
    let url = server.url();
    clear_of_an_hour_end();
    let mut example = Example::spawn(&[
        ("BIND", "127.0.0.1:0"),
        ("REDIS_URL", &url),
        ("RATE_LIMIT", "2/1h"),
        ("REDIS_TIMEOUT_MS", "200"),
    ]);
    let addr = example.wait_until_listening(Duration::from_secs(30));
    // One key over its limit (then answered from the over-limit cache), one that the failure
    // policy decides once Redis is gone.
    let (denied, open) = ("sk_live_secret_51c0ffee", "sk_live_secret_0ddba11");
    let before: Vec<RawReply> = (0..3).map(|_| raw_post(addr, ABC_START, denied)).collect();
    assert_eq!(before[2].status, 429);
    server.stop();
    let mut during = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !example.stderr().contains("decided by the failure policy") {
        assert!(Instant::now() < deadline, "{}", example.stderr());
        during.push(raw_post(addr, ABC_START, open));
        during.push(raw_post(addr, ABC_START, denied));
        thread::sleep(Duration::from_millis(100));
    }
    let statuses: Vec<u16> = during.iter().map(|reply| reply.status).collect();
    assert!(statuses.contains(&200), "fails open: {statuses:?}");
    let log = example.stderr();
    for key in [denied, open] {
        assert!(!log.contains(key), "{log}");
        assert!(!log.contains(&key[15..]), "{log}");
        for reply in before.iter().chain(&during) {
            assert!(!reply.body.contains(key), "{}", reply.body);
        }
    }
}

/// The load example (which runs the demo server binary and, for Redis, its own redis-server)
/// for a short run over real TCP against each backend: it exits zero only if no request
/// failed and every key's window admitted exactly `min(limit, offered)`.
#[test]
fn a_short_load_run_has_no_errors_and_exact_windows_on_both_backends() {
    // Built alongside: the load example finds the server binary next to itself.
    example_binary("server", "--features redis,tower");
    let load = example_binary("load", "--features redis");
    for redis in ["0", "1"] {
        let output = Command::new(&load)
            .envs([
                ("DURATION_SECS", "2"),
                ("CONNECTIONS", "8"),
                ("KEYS", "40"),
                ("RATE_LIMIT", "100/1m"),
                ("REDIS", redis),
            ])
            .env_remove("REDIS_URL")
            .output()
            .expect("the load example runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "REDIS={redis}: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("errors 0"), "{stdout}");
        assert!(stdout.contains(", 0 not admitting exactly"), "{stdout}");
    }
}
