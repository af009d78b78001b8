//! The demo server end to end, in process: rate limiting, the campaigns contract and the
//! per-key workspaces, on a manual clock; and its connections (header-read timeout, connection
//! cap) over in-memory streams on a paused clock.

use std::future::pending;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use ratewindow::http::HeaderStyle;
use ratewindow::{DynRateLimiter, ManualClock, MemoryLimiter, Quota, Shadow};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tower::ServiceExt;

use super::demo_server::{Limiters, Limits, app, app_with_metrics, redacted, serve, utc_timestamp};

/// 20 s into a minute: the window ends at `WINDOW_END_SECS`.
const NOW_MS: u64 = 1_700_000_000_000;
const WINDOW_END_SECS: u64 = 1_700_000_040;

const ABC: &str = "/api/v1/campaigns/cmp_abc123";
const ABC_START: &str = "/api/v1/campaigns/cmp_abc123/start";
const XYZ_START: &str = "/api/v1/campaigns/cmp_xyz789/start";

struct Server {
    app: Router,
    clock: ManualClock,
}

fn server(quota: &str, max_workspaces: usize) -> Server {
    server_with(quota, max_workspaces, HeaderStyle::default(), None)
}

/// A server with `style` and, with `max_keys`, a limiter that tracks at most that many keys.
fn server_with(
    quota: &str,
    max_workspaces: usize,
    style: HeaderStyle,
    max_keys: Option<usize>,
) -> Server {
    let clock = ManualClock::at_millis(NOW_MS);
    let mut builder = MemoryLimiter::builder(quota.parse::<Quota>().unwrap()).clock(clock.clone());
    if let Some(max_keys) = max_keys {
        builder = builder.max_keys(max_keys);
    }
    let limiter: Arc<dyn DynRateLimiter> = Arc::new(builder.build().unwrap());
    Server {
        app: app(limiter, max_workspaces, style),
        clock,
    }
}

/// A response, read whole.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// `(X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset)` as numbers.
    pub(crate) fn rate_limit(&self) -> (u64, u64, u64) {
        let number = |name| {
            self.header(name)
                .unwrap_or_else(|| panic!("{name} missing on a {} reply", self.status))
                .parse::<u64>()
                .unwrap()
        };
        (
            number("x-ratelimit-limit"),
            number("x-ratelimit-remaining"),
            number("x-ratelimit-reset"),
        )
    }

    /// `(code, message)` of a handler's JSON error, `{"error": {"code", "message"}}`.
    fn error(&self) -> (&str, &str) {
        assert_eq!(self.header("content-type"), Some("application/json"));
        let error = &self.body["error"];
        (
            error["code"].as_str().unwrap(),
            error["message"].as_str().unwrap(),
        )
    }

    /// `(code, detail)` of one of the rate limit's own answers, an `application/problem+json`
    /// document whose `status` and `title` match the response's.
    pub(crate) fn problem(&self) -> (&str, &str) {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.body
        );
        assert_eq!(self.body["type"], "about:blank");
        assert_eq!(self.body["status"], self.status.as_u16());
        assert_eq!(
            self.body["title"].as_str(),
            self.status.canonical_reason(),
            "{}",
            self.body
        );
        (
            self.body["code"].as_str().unwrap(),
            self.body["detail"].as_str().unwrap(),
        )
    }

    fn status_of_campaign(&self) -> &str {
        self.body["data"]["status"].as_str().unwrap()
    }
}

/// Runs `request` through `app` and reads the JSON response.
pub(crate) async fn call(app: &Router, request: Request<Body>) -> Reply {
    let (reply, bytes) = respond(app, request).await;
    if let Err(err) = serde_json::from_slice::<Value>(&bytes) {
        panic!("{} body is not JSON ({err}): {bytes:?}", reply.status);
    }
    reply
}

/// Runs `request` through `app`: the response, its body as JSON (`null` when it is none), and
/// the body's bytes.
pub(crate) async fn respond(app: &Router, request: Request<Body>) -> (Reply, axum::body::Bytes) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let reply = Reply {
        status,
        headers,
        body,
    };
    (reply, bytes)
}

impl Server {
    async fn send(&self, method: Method, path: &str, key: Option<&str>) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        self.call(request.body(Body::empty()).unwrap()).await
    }

    async fn call(&self, request: Request<Body>) -> Reply {
        call(&self.app, request).await
    }

    async fn post(&self, path: &str, key: &str) -> Reply {
        self.send(Method::POST, path, Some(key)).await
    }

    async fn get(&self, path: &str, key: &str) -> Reply {
        self.send(Method::GET, path, Some(key)).await
    }
}

fn is_utc_timestamp(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 19
        && bytes.iter().enumerate().all(|(i, &b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        })
}

#[tokio::test]
async fn start_activates_the_campaign_with_rate_limit_headers() {
    let server = server("100/1m", 10);

    let before = server.get(ABC, "key-a").await;
    assert_eq!(before.status, StatusCode::OK);
    assert_eq!(before.rate_limit(), (100, 99, WINDOW_END_SECS));
    assert_eq!(before.body["data"]["status"], "draft");
    assert_eq!(before.body["data"]["startedAt"], Value::Null);

    let started = server.post(ABC_START, "key-a").await;
    assert_eq!(started.status, StatusCode::OK);
    assert_eq!(started.rate_limit(), (100, 98, WINDOW_END_SECS));
    assert_eq!(started.header("retry-after"), None);
    let data = &started.body["data"];
    assert_eq!(data["id"], "cmp_abc123");
    assert_eq!(data["name"], "Q1 Outreach");
    assert_eq!(data["status"], "active");
    assert!(data["sequenceSteps"].as_u64().unwrap() > 0);
    assert!(data["leadsEnrolled"].as_u64().unwrap() > 0);
    assert!(data["emailAccounts"].as_u64().unwrap() > 0);
    assert!(is_utc_timestamp(data["createdAt"].as_str().unwrap()));
    let started_at = data["startedAt"].as_str().unwrap();
    assert!(is_utc_timestamp(started_at), "{started_at}");

    let after = server.get(ABC, "key-a").await;
    assert_eq!(after.rate_limit(), (100, 97, WINDOW_END_SECS));
    assert_eq!(after.body["data"], *data, "the campaign stays active");

    let paused = server.post(XYZ_START, "key-a").await;
    assert_eq!(paused.status, StatusCode::OK);
    assert_eq!(paused.status_of_campaign(), "active");
    assert_eq!(paused.rate_limit(), (100, 96, WINDOW_END_SECS));
}

#[tokio::test]
async fn errors_follow_the_contract_and_still_count() {
    let server = server("100/1m", 10);
    assert_eq!(server.post(ABC_START, "k").await.status, StatusCode::OK);

    let cases = [
        (
            Method::POST,
            ABC_START,
            StatusCode::BAD_REQUEST,
            "Campaign is already active",
        ),
        (
            Method::POST,
            "/api/v1/campaigns/cmp_done/start",
            StatusCode::BAD_REQUEST,
            "Cannot start a completed campaign",
        ),
        (
            Method::POST,
            "/api/v1/campaigns/cmp_nosteps/start",
            StatusCode::BAD_REQUEST,
            "Campaign must have at least one sequence step",
        ),
        (
            Method::POST,
            "/api/v1/campaigns/cmp_missing/start",
            StatusCode::NOT_FOUND,
            "Campaign not found",
        ),
        (
            Method::GET,
            "/api/v1/campaigns/cmp_missing",
            StatusCode::NOT_FOUND,
            "Campaign not found",
        ),
        (
            Method::GET,
            "/no/such/route",
            StatusCode::NOT_FOUND,
            "Route not found",
        ),
        (
            Method::GET,
            ABC_START,
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
        ),
        (
            Method::DELETE,
            ABC,
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
        ),
    ];
    for (i, (method, path, status, message)) in cases.into_iter().enumerate() {
        let reply = server.send(method.clone(), path, Some("k")).await;
        assert_eq!(reply.status, status, "{method} {path}");
        assert_eq!(reply.error().1, message, "{method} {path}");
        assert_eq!(
            reply.rate_limit(),
            (100, 98 - i as u64, WINDOW_END_SECS),
            "{method} {path} is counted"
        );
    }
    assert_eq!(
        server
            .post("/api/v1/campaigns/cmp_done/start", "k")
            .await
            .error()
            .0,
        "campaign_completed"
    );
    // The failed starts changed nothing.
    let done = server.get("/api/v1/campaigns/cmp_done", "k").await;
    assert_eq!(done.status_of_campaign(), "completed");
    let nosteps = server.get("/api/v1/campaigns/cmp_nosteps", "k").await;
    assert_eq!(nosteps.status_of_campaign(), "draft");
}

#[tokio::test]
async fn missing_empty_or_ambiguous_keys_are_refused_and_not_counted() {
    let server = server("2/1m", 10);
    for key in [None, Some("")] {
        let reply = server.send(Method::POST, ABC_START, key).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "key {key:?}");
        assert_eq!(reply.problem().0, "missing_key");
        assert_eq!(reply.header("x-ratelimit-limit"), None);
        assert_eq!(reply.header("retry-after"), None);
    }
    let unknown_route = server.send(Method::GET, "/nowhere", None).await;
    assert_eq!(unknown_route.status, StatusCode::UNAUTHORIZED);
    let opaque = Request::get(ABC)
        .header("x-api-key", HeaderValue::from_bytes(b"k\xff").unwrap())
        .body(Body::empty())
        .unwrap();
    assert_eq!(server.call(opaque).await.status, StatusCode::UNAUTHORIZED);
    let twice = Request::get(ABC)
        .header("x-api-key", "k")
        .header("x-api-key", "other")
        .body(Body::empty())
        .unwrap();
    // Proxies and servers disagree on which copy wins: no key rather than a guess.
    let twice = server.call(twice).await;
    assert_eq!(twice.status, StatusCode::UNAUTHORIZED);
    assert_eq!(twice.problem().0, "missing_key");
    assert_eq!(twice.header("x-ratelimit-limit"), None);
    assert_eq!(twice.header("retry-after"), None);

    let reply = server.get(ABC, "k").await;
    assert_eq!(reply.rate_limit(), (2, 1, WINDOW_END_SECS));
}

#[tokio::test]
async fn over_the_limit_is_429_with_retry_after_and_skips_the_handler() {
    let server = server("3/1m", 10);
    for remaining in [2, 1, 0] {
        let reply = server.get(ABC, "k").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.rate_limit(), (3, remaining, WINDOW_END_SECS));
    }

    let denied = server.post(ABC_START, "k").await;
    assert_eq!(denied.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(denied.rate_limit(), (3, 0, WINDOW_END_SECS));
    assert_eq!(denied.header("retry-after"), Some("40"));
    assert_eq!(
        denied.problem(),
        (
            "rate_limited",
            "Quota per-minute of 3 exceeded; retry in 40 s"
        )
    );
    assert_eq!(
        denied.body["violated-policies"],
        serde_json::json!(["per-minute"])
    );

    // Denials consume nothing and count down to the window's end, rounding up.
    server.clock.advance(Duration::from_millis(39_500));
    let still = server.post(ABC_START, "k").await;
    assert_eq!(still.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(still.header("retry-after"), Some("1"));
    assert_eq!(still.rate_limit(), (3, 0, WINDOW_END_SECS));

    // At the window's end the key has its full quota, and the denied starts never ran.
    server.clock.advance(Duration::from_millis(500));
    let next_end = WINDOW_END_SECS + 60;
    let after = server.get(ABC, "k").await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.status_of_campaign(), "draft");
    assert_eq!(after.rate_limit(), (3, 2, next_end));
    assert_eq!(after.header("retry-after"), None);
    let started = server.post(ABC_START, "k").await;
    assert_eq!(started.status, StatusCode::OK);
    assert_eq!(started.rate_limit(), (3, 1, next_end));
}

/// `PLANS=pro=5/1m` and `START_RATE_LIMIT=1/1m` over `RATE_LIMIT=3/1m`: keys starting `pro_`
/// get the pro plan, named in the headers; starting a campaign has a quota and counters of its
/// own, for every key.
#[tokio::test]
async fn plans_by_key_prefix_and_a_stricter_start_quota() {
    let clock = ManualClock::at_millis(NOW_MS);
    let free = MemoryLimiter::builder("3/1m".parse().unwrap())
        .name("free")
        .clock(clock.clone())
        .build()
        .unwrap();
    let pro = free.plan("pro", ["5/1m".parse().unwrap()]).unwrap();
    let start = MemoryLimiter::builder("1/1m".parse().unwrap())
        .name("start")
        .clock(clock.clone())
        .build()
        .unwrap();
    let limiters = Limiters {
        default: Arc::new(free),
        plans: vec![("pro".to_owned(), Arc::new(pro))],
        start: Some(Arc::new(start)),
        start_failures: None,
    };
    let style = "both".parse().unwrap();
    let server = Server {
        app: app_with_metrics(limiters, 10, style, None),
        clock,
    };

    let pro = server.get(ABC, "pro_k").await;
    assert_eq!(pro.rate_limit(), (5, 4, WINDOW_END_SECS));
    assert_eq!(
        pro.header("ratelimit-policy"),
        Some(r#""pro-per-minute";q=5;w=60"#)
    );
    let free = server.get(ABC, "k").await;
    assert_eq!(free.rate_limit(), (3, 2, WINDOW_END_SECS));
    assert_eq!(
        free.header("ratelimit"),
        Some(r#""free-per-minute";r=2;t=40"#)
    );

    // One start per minute, whatever the plan, and it leaves the plan's quota alone.
    for key in ["k", "pro_k"] {
        let started = server.post(ABC_START, key).await;
        assert_eq!(started.status, StatusCode::OK, "{key}");
        assert_eq!(started.rate_limit(), (1, 0, WINDOW_END_SECS));
        let again = server.post(XYZ_START, key).await;
        assert_eq!(again.status, StatusCode::TOO_MANY_REQUESTS, "{key}");
        assert_eq!(
            again.body["violated-policies"],
            serde_json::json!(["start-per-minute"])
        );
    }
    assert_eq!(
        server.get(ABC, "k").await.rate_limit(),
        (3, 1, WINDOW_END_SECS)
    );
    let activated = server.get(ABC, "pro_k").await;
    assert_eq!(activated.status_of_campaign(), "active");
    assert_eq!(activated.rate_limit(), (5, 3, WINDOW_END_SECS));
}

/// `START_FAILURE_LIMIT=2/1m`: failed starts (`400`) count against a quota of their own, the
/// successful ones are released from it; every start counts against the key's quota too.
/// Then `SHADOW=1`: the same requests over either quota go through, with the denial's headers.
#[tokio::test]
async fn failed_starts_count_against_a_stricter_quota_and_shadow_lets_them_through() {
    for shadow in [false, true] {
        let clock = ManualClock::at_millis(NOW_MS);
        let limiter = |quota: &str, name: Option<&str>| {
            let shadow = if shadow { Shadow::ALL } else { Shadow::NONE };
            let mut builder = MemoryLimiter::builder(quota.parse().unwrap())
                .shadow(shadow)
                .clock(clock.clone());
            if let Some(name) = name {
                builder = builder.name(name);
            }
            Arc::new(builder.build().unwrap()) as Arc<dyn DynRateLimiter>
        };
        let limiters = Limiters {
            start_failures: Some(limiter("2/1m", Some("start-failures"))),
            ..Limiters::single(limiter("6/1m", None))
        };
        let server = Server {
            app: app_with_metrics(limiters, 10, HeaderStyle::default(), None),
            clock: clock.clone(),
        };
        // A start that succeeds is released from the failures' quota.
        assert_eq!(server.post(ABC_START, "k").await.status, StatusCode::OK);
        for _ in 0..2 {
            let failed = server.post("/api/v1/campaigns/cmp_done/start", "k").await;
            assert_eq!(failed.error().0, "campaign_completed");
        }
        let locked = server.post(XYZ_START, "k").await;
        if shadow {
            // Let through: the start runs, with the denial's headers.
            assert_eq!(locked.status, StatusCode::OK);
            assert_eq!(locked.header("x-ratelimit-remaining"), Some("2"));
        } else {
            assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
            // The inner layer's denial keeps its own headers.
            assert_eq!(locked.rate_limit(), (2, 0, WINDOW_END_SECS));
            assert_eq!(
                locked.body["violated-policies"],
                serde_json::json!(["start-failures-per-minute"])
            );
        }
        // Every start counted against the key's quota; a GET is not limited by failures.
        let get = server.get(ABC, "k").await;
        assert_eq!(get.status, StatusCode::OK);
        assert_eq!(get.rate_limit(), (6, 1, WINDOW_END_SECS));
    }
}

/// The rate-limit headers a reply carries, in every style, with their values.
const RATE_LIMIT_HEADERS: [&str; 6] = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-policy",
    "ratelimit",
    "retry-after",
];

impl Reply {
    /// The rate-limit headers present, as `(name, value)`, in [`RATE_LIMIT_HEADERS`] order.
    fn rate_limit_headers(&self) -> Vec<(&'static str, &str)> {
        RATE_LIMIT_HEADERS
            .iter()
            .filter_map(|&name| self.header(name).map(|value| (name, value)))
            .collect()
    }
}

#[tokio::test]
async fn ietf_headers_replace_the_x_ratelimit_ones() {
    let server = server_with("2/1m", 10, "ietf".parse().unwrap(), None);
    let policy = ("ratelimit-policy", r#""per-minute";q=2;w=60"#);

    let started = server.post(ABC_START, "k").await;
    assert_eq!(started.status, StatusCode::OK);
    assert_eq!(started.status_of_campaign(), "active");
    assert_eq!(
        started.rate_limit_headers(),
        [policy, ("ratelimit", r#""per-minute";r=1;t=40"#)]
    );

    // The handler's own errors carry them too, and count.
    let again = server.post(ABC_START, "k").await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.error().0, "campaign_already_active");
    assert_eq!(
        again.rate_limit_headers(),
        [policy, ("ratelimit", r#""per-minute";r=0;t=40"#)]
    );

    // 24.5 s before the window's end: `t` and `Retry-After` round up alike.
    server.clock.advance(Duration::from_millis(15_500));
    let denied = server.post(ABC_START, "k").await;
    assert_eq!(denied.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(denied.problem().0, "rate_limited");
    assert_eq!(
        denied.rate_limit_headers(),
        [
            policy,
            ("ratelimit", r#""per-minute";r=0;t=25"#),
            ("retry-after", "25")
        ]
    );
}

#[tokio::test]
async fn both_styles_together() {
    let server = server_with("2/1m", 10, "both".parse().unwrap(), None);
    let reset = WINDOW_END_SECS.to_string();
    let policy = ("ratelimit-policy", r#""per-minute";q=2;w=60"#);

    let first = server.get(ABC, "k").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        first.rate_limit_headers(),
        [
            ("x-ratelimit-limit", "2"),
            ("x-ratelimit-remaining", "1"),
            ("x-ratelimit-reset", reset.as_str()),
            policy,
            ("ratelimit", r#""per-minute";r=1;t=40"#),
        ]
    );
    assert_eq!(server.get(ABC, "k").await.status, StatusCode::OK);
    let denied = server.get(ABC, "k").await;
    assert_eq!(denied.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        denied.rate_limit_headers(),
        [
            ("x-ratelimit-limit", "2"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", reset.as_str()),
            policy,
            ("ratelimit", r#""per-minute";r=0;t=40"#),
            ("retry-after", "40"),
        ]
    );

    // Unknown keys answer as before: no headers in any style.
    let anonymous = server.send(Method::GET, ABC, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.rate_limit_headers(), []);
}

#[tokio::test]
async fn over_capacity_headers_follow_the_style() {
    let server = server_with("10/1m", 10, "both".parse().unwrap(), Some(1));
    assert_eq!(server.get(ABC, "first").await.status, StatusCode::OK);
    let full = server.get(ABC, "second").await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(full.problem().0, "over_capacity");
    // Nothing charged: the whole quota, in both styles.
    let reset = WINDOW_END_SECS.to_string();
    assert_eq!(
        full.rate_limit_headers(),
        [
            ("x-ratelimit-limit", "10"),
            ("x-ratelimit-remaining", "10"),
            ("x-ratelimit-reset", reset.as_str()),
            ("ratelimit-policy", r#""per-minute";q=10;w=60"#),
            ("ratelimit", r#""per-minute";r=10;t=40"#),
            ("retry-after", "40"),
        ]
    );
}

#[tokio::test]
async fn keys_are_limited_independently() {
    let server = server("1/1m", 10);
    assert_eq!(server.get(ABC, "a").await.status, StatusCode::OK);
    assert_eq!(
        server.get(ABC, "a").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let b = server.get(ABC, "b").await;
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(b.rate_limit(), (1, 0, WINDOW_END_SECS));
}

#[tokio::test]
async fn each_key_has_its_own_workspace() {
    let server = server("100/1m", 10);
    assert_eq!(server.post(ABC_START, "a").await.status, StatusCode::OK);
    assert_eq!(server.get(ABC, "a").await.status_of_campaign(), "active");
    assert_eq!(server.get(ABC, "b").await.status_of_campaign(), "draft");
    assert_eq!(server.post(ABC_START, "b").await.status, StatusCode::OK);
    assert_eq!(
        server.post(ABC_START, "a").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn workspaces_are_capped_evicting_the_least_recently_used() {
    let server = server("100/1m", 2);
    for key in ["a", "b", "c"] {
        assert_eq!(server.post(ABC_START, key).await.status, StatusCode::OK);
    }
    // "a" was evicted for "c": it comes back fresh (and evicts "b").
    assert_eq!(server.get(ABC, "a").await.status_of_campaign(), "draft");
    assert_eq!(server.get(ABC, "c").await.status_of_campaign(), "active");

    // "a" was used after "c" was created, so "c" goes first now.
    assert_eq!(server.post(ABC_START, "a").await.status, StatusCode::OK);
    assert_eq!(server.get(ABC, "b").await.status_of_campaign(), "draft");
    assert_eq!(server.get(ABC, "a").await.status_of_campaign(), "active");
    assert_eq!(server.get(ABC, "c").await.status_of_campaign(), "draft");
}

#[tokio::test]
async fn limiter_errors_are_problem_documents() {
    let server = server_with("10/1m", 10, HeaderStyle::default(), Some(1));
    assert_eq!(server.get(ABC, "first").await.status, StatusCode::OK);

    // 32.345 s into the minute: the window ends in 27.655 s, so Retry-After rounds up to 28.
    server.clock.advance(Duration::from_millis(12_345));
    let full = server.get(ABC, "second").await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        full.problem(),
        ("over_capacity", "Too many keys are active; retry in 28 s")
    );
    // Nothing was charged to "second": its whole quota is left.
    assert_eq!(full.rate_limit(), (10, 10, WINDOW_END_SECS));
    assert_eq!(full.header("retry-after"), Some("28"));

    // Still not charged, and counting down (rounded up, never below 1).
    server.clock.advance(Duration::from_millis(27_654));
    let again = server.get(ABC, "second").await;
    assert_eq!(again.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(again.rate_limit(), (10, 10, WINDOW_END_SECS));
    assert_eq!(again.header("retry-after"), Some("1"));

    // Honouring Retry-After works: at the window's end "first"'s entry is gone.
    server.clock.advance(Duration::from_millis(1));
    let admitted = server.get(ABC, "second").await;
    assert_eq!(admitted.status, StatusCode::OK);
    assert_eq!(admitted.rate_limit(), (10, 9, WINDOW_END_SECS + 60));
    assert_eq!(admitted.header("retry-after"), None);

    // Keys the limiter refuses outright have no count, so no rate-limit headers.
    let long_key = "k".repeat(ratewindow::MAX_KEY_LEN + 1);
    let too_long = server.get(ABC, &long_key).await;
    assert_eq!(too_long.status, StatusCode::BAD_REQUEST);
    assert_eq!(too_long.problem().0, "invalid_key");
    assert!(!too_long.problem().1.contains(&long_key));
    assert_eq!(too_long.header("x-ratelimit-limit"), None);
    assert_eq!(too_long.header("x-ratelimit-remaining"), None);
    assert_eq!(too_long.header("x-ratelimit-reset"), None);
    assert_eq!(too_long.header("retry-after"), None);
}

#[test]
fn timestamps_are_utc_iso_8601() {
    assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00");
    assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00");
    assert_eq!(utc_timestamp(1_709_251_199), "2024-02-29T23:59:59");
    assert_eq!(utc_timestamp(1_736_931_600), "2025-01-15T09:00:00");
    assert_eq!(utc_timestamp(253_402_300_799), "9999-12-31T23:59:59");
    // Past the year 9999: its last second, not a panic.
    assert_eq!(utc_timestamp(253_402_300_800), "9999-12-31T23:59:59");
    assert_eq!(utc_timestamp(u64::MAX), "9999-12-31T23:59:59");
}

#[test]
fn redis_urls_are_shown_without_passwords() {
    let cases = [
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        (
            "redis://user:s3cret@host:6379",
            "redis://user:***@host:6379",
        ),
        ("redis://user:p@ss@host/", "redis://user:***@host/"),
        // A user part alone may be a misplaced password.
        ("redis://s3cret@host:6379", "redis://***@host:6379"),
        (
            "rediss://u:s3cret@host?protocol=resp3",
            "rediss://u:***@host?protocol=resp3",
        ),
        (
            "redis+unix:///tmp/redis.sock?db=1&pass=s3cret",
            "redis+unix:///tmp/redis.sock?db=1&pass=***",
        ),
        ("u:s3cret@host:6379", "u:***@host:6379"),
        // Unescaped `/`, `?` and `#` in a password: the user part still ends at the last `@`.
        ("redis://:s3cret/x@host:6379", "redis://:***@host:6379"),
        ("redis://:s3cret?x@host", "redis://:***@host"),
        (
            "redis://user:s3#cret@host:6379/0",
            "redis://user:***@host:6379/0",
        ),
        ("redis://user:s3cret@x@host", "redis://user:***@host"),
        ("host:6379", "host:6379"),
        ("", ""),
    ];
    for (url, shown) in cases {
        assert_eq!(redacted(url), shown, "{url}");
        assert!(!redacted(url).contains("s3cret"), "{url}");
    }
}

// Connections: the server's own accept loop over in-memory streams, on tokio's paused clock,
// which moves only when every task waits: timeouts are exact, and "not answered" means the
// server had nothing left to do.

/// In-memory connections, handed to the server as a listener hands it TCP ones.
struct Connections(mpsc::UnboundedReceiver<DuplexStream>);

impl axum::serve::Listener for Connections {
    type Io = DuplexStream;
    type Addr = ();

    async fn accept(&mut self) -> (DuplexStream, ()) {
        match self.0.recv().await {
            Some(io) => (io, ()),
            None => pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Serves the demo (100 per minute) with `limits`; the returned function opens a connection.
fn serving(limits: Limits) -> impl Fn() -> DuplexStream {
    let (connect, connections) = mpsc::unbounded_channel();
    let app = server("100/1m", 10).app;
    tokio::spawn(serve(Connections(connections), app, limits, pending()));
    move || {
        let (client, server) = tokio::io::duplex(64 * 1024);
        connect.send(server).expect("the server is running");
        client
    }
}

/// `GET` of a campaign with `key`, keeping the connection open.
fn get_request(key: &str) -> Vec<u8> {
    format!("GET {ABC} HTTP/1.1\r\nhost: demo\r\nx-api-key: {key}\r\n\r\n").into_bytes()
}

/// One whole response (its head and a `content-length` body), or `None` if the server closes
/// the connection first.
async fn read_response(io: &mut DuplexStream) -> Option<String> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |value| value.trim().parse().unwrap());
            if raw.len() >= end + 4 + len {
                return Some(String::from_utf8_lossy(&raw[..end + 4 + len]).into_owned());
            }
        }
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
}

fn status_of(response: &str) -> &str {
    response.split(' ').nth(1).unwrap_or_default()
}

fn header_of<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.lines().find_map(|line| {
        let (n, value) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Whether the server has closed `io`, waiting for it at most `within`.
async fn closed_within(io: &mut DuplexStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(within, io.read(&mut buf)).await {
        Err(_) => false,
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(n)) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_head_sent_too_slowly_is_cut_off() {
    let timeout = Duration::from_secs(10);
    let connect = serving(Limits {
        header_read_timeout: timeout,
        max_connections: 8,
    });
    let start = tokio::time::Instant::now();

    // A whole request in time is served.
    let mut quick = connect();
    quick.write_all(&get_request("k")).await.unwrap();
    let answer = read_response(&mut quick).await.expect("an answer");
    assert_eq!(status_of(&answer), "200", "{answer}");

    // One header line a second, never the end of the head: closed at the deadline, unanswered.
    let mut slow = connect();
    let idle = connect();
    slow.write_all(format!("GET {ABC} HTTP/1.1\r\nhost: demo\r\n").as_bytes())
        .await
        .unwrap();
    let mut lines = 0;
    while !closed_within(&mut slow, Duration::from_secs(1)).await {
        assert!(lines < 60, "still open after {lines} header lines");
        lines += 1;
        if slow
            .write_all(format!("x-pad-{lines}: a\r\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
    }
    let closed_after = start.elapsed();
    assert!(
        closed_after >= timeout && closed_after <= timeout + Duration::from_secs(1),
        "closed after {closed_after:?}, {lines} header lines"
    );
    assert!(lines >= 9, "{lines} header lines");

    // A connection that never sends a byte is closed as well, and so is the quick one, idle
    // since its answer.
    let mut idle = idle;
    assert!(closed_within(&mut idle, Duration::ZERO).await);
    assert!(closed_within(&mut quick, Duration::ZERO).await);

    // Nothing was charged for the unfinished request.
    let mut after = connect();
    after.write_all(&get_request("k")).await.unwrap();
    let answer = read_response(&mut after).await.expect("an answer");
    assert_eq!(header_of(&answer, "x-ratelimit-remaining"), Some("98"));
}

#[tokio::test(start_paused = true)]
async fn connections_over_the_cap_wait_until_one_closes() {
    let connect = serving(Limits {
        // Not the subject here: far longer than the waits below.
        header_read_timeout: Duration::from_secs(3600),
        max_connections: 2,
    });
    let mut first = connect();
    let mut second = connect();
    for (io, key) in [(&mut first, "a"), (&mut second, "b")] {
        io.write_all(&get_request(key)).await.unwrap();
        let answer = read_response(io).await.expect("an answer");
        assert_eq!(status_of(&answer), "200", "{answer}");
    }

    // Two connections are open: a third waits, its request unread, however long.
    let mut third = connect();
    third.write_all(&get_request("c")).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(600), read_response(&mut third)).await;
    assert!(waited.is_err(), "answered over the cap: {waited:?}");

    // The open ones are still served.
    second.write_all(&get_request("b")).await.unwrap();
    let again = read_response(&mut second).await.expect("an answer");
    assert_eq!(header_of(&again, "x-ratelimit-remaining"), Some("98"));

    // One closes: the third is taken in and answered.
    drop(first);
    let answer = tokio::time::timeout(Duration::from_secs(1), read_response(&mut third))
        .await
        .expect("answered once a connection closed")
        .expect("an answer");
    assert_eq!(status_of(&answer), "200", "{answer}");
    assert_eq!(header_of(&answer, "x-ratelimit-remaining"), Some("99"));
}

/// Over the wire, HTTP drops the whitespace around a header value, so `k` and ` k\t` are one
/// key; spaces and tabs inside a key are part of it.
#[tokio::test(start_paused = true)]
async fn a_key_is_its_header_value_without_the_whitespace_around_it() {
    let connect = serving(Limits {
        header_read_timeout: Duration::from_secs(10),
        max_connections: 8,
    });
    let mut io = connect();
    let mut remaining = Vec::new();
    for key in ["k", "  k \t", "k  ", "a b", "a\tb", "a b"] {
        io.write_all(&get_request(key)).await.unwrap();
        let answer = read_response(&mut io).await.expect("an answer");
        assert_eq!(status_of(&answer), "200", "{key:?}: {answer}");
        remaining.push(header_of(&answer, "x-ratelimit-remaining").map(str::to_owned));
    }
    let remaining: Vec<_> = remaining.iter().map(|r| r.as_deref().unwrap()).collect();
    assert_eq!(remaining, ["99", "98", "97", "99", "99", "98"]);
}
