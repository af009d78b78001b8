//! The tower layer driven in-process: an axum `Router` (or a bare `service_fn`) behind
//! `RateLimitLayer`, called with `oneshot`, on limiters with a manual clock.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, Response, StatusCode};
use axum::routing::get;
use http_body_util::BodyExt;
use ratewindow::http::{HeaderStyle, IetfDraft, PartitionKey};
use ratewindow::tower::{
    FixedKey, HeaderKey, Outcome, PartitionKeyMode, RateLimitLayer, Rejection, RejectionKind,
};
use ratewindow::{
    BackendErrorKind, Decision, DynRateLimiter, Error, ManualClock, MemoryLimiter, Quota,
    RateLimiter,
};
use serde_json::{Value, json};
use tower::{Layer, ServiceExt};

use crate::support::block_on;

/// 23 s before a minute ends; the hour began 37 s ago (3563 s before it ends).
const T0_MS: u64 = 1_800_000_037_000;
const API_KEY: HeaderKey = HeaderKey::from_static("x-api-key");

/// 3 per minute and 1000 per hour, at `T0_MS`.
fn limiter() -> MemoryLimiter<ManualClock> {
    MemoryLimiter::builder(Quota::per_minute(3).unwrap())
        .quota(Quota::per_hour(1000).unwrap())
        .clock(ManualClock::at_millis(T0_MS))
        .build()
        .unwrap()
}

/// A router whose one route counts its calls and sets a stale rate-limit header of its own,
/// which the layer must replace.
fn router<L>(layer: L, calls: &Arc<AtomicUsize>) -> Router
where
    L: Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
    L::Service: tower::Service<Request<Body>, Error = Infallible, Response = Response<Body>>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as tower::Service<Request<Body>>>::Future: Send + 'static,
{
    let calls = Arc::clone(calls);
    Router::new()
        .route(
            "/",
            get(move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                ([("x-ratelimit-limit", "stale")], "ok")
            }),
        )
        .layer(layer)
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    /// The rate-limit headers, in order, as `name: value` lines.
    fn rate_headers(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(name, _)| {
                let name = name.as_str();
                name.starts_with("x-ratelimit")
                    || name.starts_with("ratelimit")
                    || name == "retry-after"
            })
            .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap()))
            .collect()
    }

    fn problem(&self) -> Value {
        assert_eq!(self.headers["content-type"], "application/problem+json");
        serde_json::from_str(&self.body).unwrap()
    }
}

fn send(app: &Router, key: Option<&str>, cost: Option<&str>) -> Answer {
    let mut request = Request::get("/");
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    if let Some(cost) = cost {
        request = request.header("x-cost", cost);
    }
    let request = request.body(Body::empty()).unwrap();
    block_on(async {
        let response = app.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    })
}

#[test]
fn allowed_requests_pass_through_with_exact_headers_in_each_style() {
    let x_ratelimit = vec![
        "x-ratelimit-limit: 3",
        "x-ratelimit-remaining: 2",
        "x-ratelimit-reset: 1800000060",
    ];
    let ietf = vec![
        r#"ratelimit-policy: "per-minute";q=3;w=60, "per-hour";q=1000;w=3600"#,
        r#"ratelimit: "per-minute";r=2;t=23, "per-hour";r=999;t=3563"#,
    ];
    let both: Vec<_> = x_ratelimit.iter().chain(&ietf).copied().collect();
    for (style, expected) in [
        (HeaderStyle::default(), x_ratelimit.clone()),
        // The layer writes its style's headers only: the handler's own stale one stays.
        (
            HeaderStyle::ietf(IetfDraft::Draft10),
            [&["x-ratelimit-limit: stale"][..], &ietf].concat(),
        ),
        ("both".parse().unwrap(), both),
    ] {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = RateLimitLayer::new(limiter(), API_KEY).header_style(style);
        let app = router(layer, &calls);
        let answer = send(&app, Some("otr_your_key"), None);
        assert_eq!(answer.status, StatusCode::OK, "{style}");
        assert_eq!(answer.body, "ok");
        assert_eq!(answer.rate_headers(), expected, "{style}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

#[test]
fn partition_keys_are_hashes_of_the_key_in_the_ietf_fields_only() {
    let key = "otr_your_key";
    let secret = *b"0123456789abcdef";
    for (keys, pk) in [
        (PartitionKeyMode::Public, PartitionKey::hash_of(key)),
        (
            PartitionKeyMode::Keyed(secret),
            PartitionKey::keyed_hash_of(key, &secret),
        ),
    ] {
        let pk = format!(";pk=:{}:", pk.as_base64());
        let layer = RateLimitLayer::new(limiter(), API_KEY)
            .header_style("both".parse().unwrap())
            .partition_keys(keys);
        let app = router(layer, &Arc::new(AtomicUsize::new(0)));
        for (n, status) in [(1, 200), (2, 200), (3, 200), (4, 429)] {
            let answer = send(&app, Some(key), None);
            assert_eq!(answer.status.as_u16(), status, "request {n}");
            let expected = [
                format!(
                    r#"ratelimit-policy: "per-minute";q=3;w=60{pk}, "per-hour";q=1000;w=3600{pk}"#
                ),
                format!(
                    r#"ratelimit: "per-minute";r={};t=23{pk}, "per-hour";r={};t=3563{pk}"#,
                    3 - n.min(3),
                    1000 - n.min(3)
                ),
            ];
            let ietf: Vec<String> = answer
                .rate_headers()
                .into_iter()
                .filter(|line| line.starts_with("ratelimit"))
                .collect();
            assert_eq!(ietf, expected, "{keys:?}, request {n}");
            let all = format!("{:?} {}", answer.headers, answer.body);
            assert!(!all.contains(key), "{all}");
        }
    }
    // No pk without IETF fields, and none unless asked for.
    for (style, keys) in [
        (HeaderStyle::x_ratelimit(), PartitionKeyMode::Public),
        (
            HeaderStyle::ietf(IetfDraft::Draft10),
            PartitionKeyMode::None,
        ),
    ] {
        let layer = RateLimitLayer::new(limiter(), API_KEY)
            .header_style(style)
            .partition_keys(keys);
        let answer = send(
            &router(layer, &Arc::new(AtomicUsize::new(0))),
            Some(key),
            None,
        );
        assert!(
            answer
                .rate_headers()
                .iter()
                .all(|line| !line.contains("pk=")),
            "{style}: {:?}",
            answer.rate_headers()
        );
    }
    assert_eq!(
        format!("{:?}", PartitionKeyMode::Keyed(secret)),
        "Keyed(..)"
    );
}

#[test]
fn denied_request_is_a_429_problem_and_never_reaches_the_inner_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let style = HeaderStyle::x_ratelimit().with_ietf(IetfDraft::Draft10);
    let app = router(
        RateLimitLayer::new(limiter(), API_KEY).header_style(style),
        &calls,
    );
    for _ in 0..3 {
        assert_eq!(send(&app, Some("k"), None).status, StatusCode::OK);
    }
    let denied = send(&app, Some("k"), None);
    assert_eq!(denied.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(calls.load(Ordering::SeqCst), 3, "the inner service ran");
    assert_eq!(
        denied.rate_headers(),
        [
            "x-ratelimit-limit: 3",
            "x-ratelimit-remaining: 0",
            "x-ratelimit-reset: 1800000060",
            r#"ratelimit-policy: "per-minute";q=3;w=60, "per-hour";q=1000;w=3600"#,
            r#"ratelimit: "per-minute";r=0;t=23, "per-hour";r=997;t=3563"#,
            "retry-after: 23",
        ]
    );
    assert_eq!(
        denied.problem(),
        json!({
            "type": "about:blank",
            "title": "Too Many Requests",
            "status": 429,
            "detail": "Quota per-minute of 3 exceeded; retry in 23 s",
            "code": "rate_limited",
            "violated-policies": ["per-minute"],
        })
    );
    // Another key is not affected.
    assert_eq!(send(&app, Some("other"), None).status, StatusCode::OK);
}

#[test]
fn every_violated_policy_is_named() {
    let limiter = MemoryLimiter::builder(Quota::per_second(1).unwrap())
        .quota(Quota::per_minute(1).unwrap())
        .clock(ManualClock::at_millis(T0_MS))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = router(RateLimitLayer::new(limiter, API_KEY), &calls);
    send(&app, Some("k"), None);
    let denied = send(&app, Some("k"), None);
    let problem = denied.problem();
    assert_eq!(
        problem["violated-policies"],
        json!(["per-second", "per-minute"])
    );
    // The binding quota of a denial is the one that blocks longest.
    assert_eq!(
        problem["detail"],
        "Quota per-minute of 1 exceeded; retry in 23 s"
    );
    assert_eq!(denied.headers["retry-after"], "23");
}

#[test]
fn missing_key_is_a_401_by_default() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = router(RateLimitLayer::new(limiter(), API_KEY), &calls);
    for key in [None, Some("")] {
        let answer = send(&app, key, None);
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.rate_headers(), Vec::<String>::new());
        assert_eq!(answer.problem()["code"], "missing_key");
        assert_eq!(answer.problem()["status"], 401);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn missing_key_falls_back_when_configured() {
    let calls = Arc::new(AtomicUsize::new(0));
    let limiter = limiter();
    let layer =
        RateLimitLayer::new(limiter.clone(), API_KEY).fallback_key(FixedKey::new("anonymous"));
    let app = router(layer, &calls);
    let first = send(&app, None, None);
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.headers["x-ratelimit-remaining"], "2");
    assert_eq!(send(&app, None, None).headers["x-ratelimit-remaining"], "1");
    // Charged to the fallback key, not to a keyed caller.
    assert_eq!(limiter.peek_sync("anonymous").unwrap().remaining(), 0);
    assert_eq!(
        send(&app, Some("k"), None).headers["x-ratelimit-remaining"],
        "2"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

fn cost_from_header(request: &Request<Body>) -> u64 {
    request
        .headers()
        .get("x-cost")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(1)
}

#[test]
fn cost_function_charges_its_units() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = RateLimitLayer::new(limiter(), API_KEY).cost(cost_from_header);
    let app = router(layer, &calls);
    let answer = send(&app, Some("k"), Some("2"));
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["x-ratelimit-remaining"], "1");
    // 2 more do not fit in the 1 left: denied, nothing charged.
    let denied = send(&app, Some("k"), Some("2"));
    assert_eq!(denied.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(denied.headers["x-ratelimit-remaining"], "1");
    assert_eq!(
        send(&app, Some("k"), None).headers["x-ratelimit-remaining"],
        "0"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn cost_above_the_limit_is_a_413_and_cost_zero_is_free() {
    let calls = Arc::new(AtomicUsize::new(0));
    let limiter = limiter();
    let layer = RateLimitLayer::new(limiter.clone(), API_KEY).cost(cost_from_header);
    let app = router(layer, &calls);
    let too_big = send(&app, Some("k"), Some("4"));
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        too_big.rate_headers(),
        Vec::<String>::new(),
        "no retry-after"
    );
    let problem = too_big.problem();
    assert_eq!(problem["code"], "cost_exceeds_limit");
    assert_eq!(
        problem["detail"],
        "Cost 4 exceeds the limit 3 and can never be admitted"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // Cost 0: through, uncharged, no key needed, no rate-limit headers (the inner service's own
    // header stays).
    let free = send(&app, None, Some("0"));
    assert_eq!(free.status, StatusCode::OK);
    assert_eq!(free.rate_headers(), ["x-ratelimit-limit: stale"]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(limiter.peek_sync("k").unwrap().remaining(), 2);
}

#[test]
fn works_with_a_limiter_chosen_at_run_time() {
    let calls = Arc::new(AtomicUsize::new(0));
    let limiter: Arc<dyn DynRateLimiter> = Arc::new(limiter());
    let app = router(RateLimitLayer::new(limiter, API_KEY), &calls);
    let statuses: Vec<_> = (0..4).map(|_| send(&app, Some("k"), None).status).collect();
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

#[test]
fn a_full_limiter_is_a_503_not_a_panic() {
    let limiter = MemoryLimiter::builder(Quota::per_minute(3).unwrap())
        .clock(ManualClock::at_millis(T0_MS))
        .max_keys(1)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = router(RateLimitLayer::new(limiter, API_KEY), &calls);
    assert_eq!(send(&app, Some("first"), None).status, StatusCode::OK);
    let full = send(&app, Some("second"), None);
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    // Nothing was charged: the key's whole quota; and when the key's window ends, the limiter
    // can forget the first key.
    assert_eq!(
        full.rate_headers(),
        [
            "x-ratelimit-limit: 3",
            "x-ratelimit-remaining: 3",
            "x-ratelimit-reset: 1800000060",
            "retry-after: 23"
        ]
    );
    assert_eq!(full.problem()["code"], "over_capacity");
    assert_eq!(
        full.problem()["detail"],
        "Too many keys are active; retry in 23 s"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn an_invalid_key_is_a_400() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = router(RateLimitLayer::new(limiter(), API_KEY), &calls);
    let answer = send(&app, Some(&"k".repeat(ratewindow::MAX_KEY_LEN + 1)), None);
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let problem = answer.problem();
    assert_eq!(problem["code"], "invalid_key");
    assert!(
        !answer.body.contains("kkkk"),
        "the key leaked: {}",
        answer.body
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// A header key is the value as the request carries it: nothing trimmed or folded by the
/// extractor (HTTP/1 parsers drop the whitespace around a value before it gets there; the demo
/// server's tests show that over the wire), and no key at all for bytes beyond printable ASCII
/// and tabs.
#[test]
fn a_header_key_is_the_value_as_carried() {
    use axum::http::HeaderValue;
    use ratewindow::tower::KeyExtractor;

    let key_of = |value: &[u8]| {
        let request = Request::get("/")
            .header("x-api-key", HeaderValue::from_bytes(value).unwrap())
            .body(())
            .unwrap();
        API_KEY.extract(&request)
    };
    for value in [
        "k",
        "a b",
        "a\tb",
        " k",
        "k\t",
        "~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}",
    ] {
        assert_eq!(
            key_of(value.as_bytes()).as_deref(),
            Some(value),
            "{value:?}"
        );
    }
    // (Control characters and DEL are no header value at all.)
    for value in [&b""[..], b"cl\xc3\xa9", b"k\xff"] {
        assert_eq!(key_of(value), None, "{value:?}");
    }

    // Through the layer: inner whitespace makes keys of their own.
    let app = router(
        RateLimitLayer::new(limiter(), API_KEY),
        &Arc::new(AtomicUsize::new(0)),
    );
    let remaining =
        |key: &str| send(&app, Some(key), None).headers["x-ratelimit-remaining"].clone();
    assert_eq!(remaining("ab"), "2");
    assert_eq!(remaining("a b"), "2");
    assert_eq!(remaining("a\tb"), "2");
    assert_eq!(remaining("a b"), "1");
}

/// A backend that always fails, as a networked limiter without a failure policy would.
struct Broken;

impl RateLimiter for Broken {
    async fn check_n(&self, _key: &str, _cost: u64) -> Result<Decision, Error> {
        Err(Error::Backend {
            kind: BackendErrorKind::Timeout,
            detail: "secret \"internal\" detail".into(),
        })
    }
    async fn peek(&self, _key: &str) -> Result<Decision, Error> {
        unreachable!()
    }
    async fn clear(&self, _key: &str) -> Result<(), Error> {
        unreachable!()
    }
    async fn refund(&self, _key: &str, _amount: u64) -> Result<(), Error> {
        unreachable!()
    }
}

#[test]
fn a_backend_error_is_a_503_without_its_detail() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = router(RateLimitLayer::new(Arc::new(Broken), API_KEY), &calls);
    let answer = send(&app, Some("k"), None);
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.rate_headers(), Vec::<String>::new());
    let problem = answer.problem();
    assert_eq!(problem["code"], "rate_limiter_unavailable");
    assert_eq!(
        problem["detail"],
        "Rate limiting is unavailable: backend timed out"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn inner_responses_of_any_status_get_the_headers() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = router(RateLimitLayer::new(limiter(), API_KEY), &calls);
    let request = Request::get("/nowhere")
        .header("x-api-key", "k")
        .body(Body::empty())
        .unwrap();
    let response = block_on(app.oneshot(request)).unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()["x-ratelimit-remaining"], "2");
}

#[test]
fn wraps_a_bare_service_with_a_string_body() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let inner = tower::service_fn(move |_request: Request<()>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(String::from("ok"))) }
    });
    let key = |request: &Request<()>| Some(request.uri().path().trim_start_matches('/').to_owned());
    let quota = Quota::per_minute(1).unwrap();
    let limiter = MemoryLimiter::builder(quota)
        .clock(ManualClock::at_millis(T0_MS))
        .build()
        .unwrap();
    let service = RateLimitLayer::new(limiter, key).layer(inner);
    assert_eq!(service.limiter().quotas(), [quota]);
    let call = |path: &str| {
        let request = Request::get(path).body(()).unwrap();
        block_on(service.clone().oneshot(request)).unwrap()
    };
    let ok = call("/a");
    assert_eq!((ok.status(), ok.body().as_str()), (StatusCode::OK, "ok"));
    let denied = call("/a");
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(denied.body().contains(r#""code":"rate_limited""#));
    // The key extractor found no key in `/`: empty, which the closure reports as a key.
    assert_eq!(call("/").status(), StatusCode::BAD_REQUEST);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let _inner = service.into_inner();
}

/// A limiter that always makes the layer wait for its future, as a networked one does: the
/// layer's other path.
#[derive(Clone)]
struct Waiting<L>(L);

impl<L: RateLimiter> RateLimiter for Waiting<L> {
    fn check_n(
        &self,
        key: &str,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, Error>> + Send {
        self.0.check_n(key, cost)
    }
    fn peek(&self, key: &str) -> impl Future<Output = Result<Decision, Error>> + Send {
        self.0.peek(key)
    }
    fn clear(&self, key: &str) -> impl Future<Output = Result<(), Error>> + Send {
        self.0.clear(key)
    }
    fn refund(&self, key: &str, amount: u64) -> impl Future<Output = Result<(), Error>> + Send {
        self.0.refund(key, amount)
    }
}

/// What a hook or an observer saw, in order.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn push(&self, line: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A hook that answers every rejection with a plain-text body naming what it saw, a header of
/// its own, and a `retry-after` the layer must replace when it writes one; a missing key gets a
/// status of the hook's choosing.
fn plain_text_hook(seen: &Seen) -> impl Fn(&Rejection<'_>) -> Response<Body> + Clone + use<> {
    let seen = seen.clone();
    move |rejection: &Rejection<'_>| {
        let request = rejection.request();
        let decision = rejection
            .decision()
            .map(|d| format!("remaining {}", d.remaining()));
        let error = rejection.error().map(ToString::to_string);
        seen.push(format!(
            "{:?} {} {} {decision:?} {error:?}",
            rejection.kind(),
            request.method,
            request.uri.path()
        ));
        let status = match rejection.kind() {
            RejectionKind::MissingKey => StatusCode::IM_A_TEAPOT,
            kind => kind.status(),
        };
        Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .header("retry-after", "999")
            .header("x-hook", "1")
            .body(Body::from(format!("custom {}", rejection.kind().code())))
            .unwrap()
    }
}

/// 3 per minute and 1000 per hour at `T0_MS`, tracking one key at most.
fn one_key_limiter() -> MemoryLimiter<ManualClock> {
    MemoryLimiter::builder(Quota::per_minute(3).unwrap())
        .quota(Quota::per_hour(1000).unwrap())
        .clock(ManualClock::at_millis(T0_MS))
        .max_keys(1)
        .build()
        .unwrap()
}

/// Both of the layer's paths: a limiter that decides at once, and one it waits for.
fn on_both_paths(test: impl Fn(&str, Router, &Seen, &Arc<AtomicUsize>)) {
    for path in ["at once", "waiting"] {
        let seen = Seen::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let hook = plain_text_hook(&seen);
        let style = HeaderStyle::x_ratelimit().with_ietf(IetfDraft::Draft10);
        let app = if path == "at once" {
            let layer = RateLimitLayer::new(one_key_limiter(), API_KEY)
                .header_style(style)
                .cost(cost_from_header)
                .on_rejection(hook);
            router(layer, &calls)
        } else {
            let layer = RateLimitLayer::new(Waiting(one_key_limiter()), API_KEY)
                .header_style(style)
                .cost(cost_from_header)
                .on_rejection(hook);
            router(layer, &calls)
        };
        test(path, app, &seen, &calls);
    }
}

#[test]
fn an_on_rejection_hook_answers_and_the_layer_still_writes_its_headers() {
    on_both_paths(|path, app, seen, calls| {
        for _ in 0..3 {
            assert_eq!(send(&app, Some("k"), None).status, StatusCode::OK, "{path}");
        }
        assert_eq!(
            seen.take(),
            Vec::<String>::new(),
            "{path}: allowed is no rejection"
        );

        let denied = send(&app, Some("k"), None);
        assert_eq!(denied.status, StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert_eq!(denied.body, "custom rate_limited");
        assert_eq!(
            seen.take(),
            [r#"RateLimited GET / Some("remaining 0") None"#],
            "{path}"
        );
        // The layer's headers first, replacing the hook's `retry-after`; then the hook's own.
        let lines: Vec<String> = denied
            .headers
            .iter()
            .filter(|(name, _)| !matches!(name.as_str(), "content-length" | "date"))
            .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap()))
            .collect();
        assert_eq!(
            lines,
            [
                "x-ratelimit-limit: 3",
                "x-ratelimit-remaining: 0",
                "x-ratelimit-reset: 1800000060",
                r#"ratelimit-policy: "per-minute";q=3;w=60, "per-hour";q=1000;w=3600"#,
                r#"ratelimit: "per-minute";r=0;t=23, "per-hour";r=997;t=3563"#,
                "retry-after: 23",
                "content-type: text/plain",
                "x-hook: 1",
            ],
            "{path}"
        );

        // Nothing decided for the key: the hook's answer as it made it, status included.
        let anonymous = send(&app, None, None);
        assert_eq!(anonymous.status, StatusCode::IM_A_TEAPOT, "{path}");
        assert_eq!(anonymous.headers["retry-after"], "999");
        assert_eq!(anonymous.headers["x-hook"], "1");
        assert!(!anonymous.headers.contains_key("x-ratelimit-limit"));
        let long_key = "k".repeat(ratewindow::MAX_KEY_LEN + 1);
        let invalid = send(&app, Some(&long_key), None);
        assert_eq!(invalid.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(invalid.body, "custom invalid_key");
        let too_costly = send(&app, Some("k"), Some("4"));
        assert_eq!(too_costly.status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        assert_eq!(too_costly.headers["retry-after"], "999");
        assert_eq!(
            seen.take(),
            [
                "MissingKey GET / None None".to_owned(),
                format!(
                    "InvalidKey GET / None Some(\"key is {} bytes long, the maximum is {}\")",
                    ratewindow::MAX_KEY_LEN + 1,
                    ratewindow::MAX_KEY_LEN
                ),
                r#"CostExceedsLimit GET / None Some("cost 4 exceeds the limit 3 and can never be admitted")"#
                    .to_owned(),
            ],
            "{path}"
        );

        // The limiter is full: the key's quotas as they stand, nothing charged.
        let full = send(&app, Some("new"), None);
        assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(full.body, "custom over_capacity");
        assert_eq!(
            seen.take(),
            [r#"OverCapacity GET / Some("remaining 3") None"#],
            "{path}"
        );
        assert_eq!(full.headers["x-ratelimit-remaining"], "3");
        assert_eq!(
            full.headers["ratelimit"],
            r#""per-minute";r=3;t=23, "per-hour";r=1000;t=3563"#
        );
        assert_eq!(full.headers["retry-after"], "23");
        assert_eq!(full.headers["x-hook"], "1");
        assert_eq!(calls.load(Ordering::SeqCst), 3, "{path}");
    });
}

#[test]
fn an_on_rejection_hook_sees_a_backend_failure_by_its_kind() {
    let seen = Seen::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = RateLimitLayer::new(Arc::new(Broken), API_KEY).on_rejection(plain_text_hook(&seen));
    let answer = send(&router(layer, &calls), Some("k"), None);
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body, "custom rate_limiter_unavailable");
    // Nothing decided: no rate-limit headers, and the hook's `retry-after` stays.
    assert_eq!(answer.rate_headers(), ["retry-after: 999"]);
    assert_eq!(
        seen.take(),
        [r#"Unavailable GET / None Some("backend timed out: secret \"internal\" detail")"#]
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn an_on_decision_observer_sees_every_outcome_on_both_paths() {
    for waiting in [false, true] {
        let seen = Seen::default();
        let observer = {
            let seen = seen.clone();
            move |outcome: &Outcome| {
                seen.push(match outcome {
                    Outcome::Decided(decision) => format!(
                        "decided allowed={} admits={} remaining={}",
                        decision.is_allowed(),
                        outcome.admits(),
                        decision.remaining()
                    ),
                    Outcome::OverCapacity(stands) => format!(
                        "over capacity, remaining {:?}",
                        stands.map(|d| d.remaining())
                    ),
                    Outcome::Failed(err) => format!("failed: {err}"),
                    _ => "other".to_owned(),
                });
            }
        };
        let calls = Arc::new(AtomicUsize::new(0));
        let app = if waiting {
            let layer = RateLimitLayer::new(Waiting(one_key_limiter()), API_KEY)
                .cost(cost_from_header)
                .on_decision(observer);
            router(layer, &calls)
        } else {
            let layer = RateLimitLayer::new(one_key_limiter(), API_KEY)
                .cost(cost_from_header)
                .on_decision(observer);
            router(layer, &calls)
        };
        let statuses: Vec<u16> = [
            (Some("k"), None),
            (Some("k"), Some("2")),
            (Some("k"), None),
            (None, None),           // no key: the limiter is not asked
            (Some("k"), Some("0")), // cost 0: nor here
            (Some(""), None),
            (Some("k"), Some("4")),
            (Some("new"), None),
        ]
        .into_iter()
        .map(|(key, cost)| send(&app, key, cost).status.as_u16())
        .collect();
        assert_eq!(
            statuses,
            [200, 200, 429, 401, 200, 401, 413, 503],
            "waiting {waiting}"
        );
        assert_eq!(
            seen.take(),
            [
                "decided allowed=true admits=true remaining=2",
                "decided allowed=true admits=true remaining=0",
                "decided allowed=false admits=false remaining=0",
                "failed: cost 4 exceeds the limit 3 and can never be admitted",
                "over capacity, remaining Some(3)",
            ],
            "waiting {waiting}"
        );
        // The default answers are unchanged by an observer.
        assert_eq!(
            send(&app, Some("k"), None).problem()["code"],
            "rate_limited"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}

/// The layer on the Redis backend, against a real `redis-server`, and what each failure policy
/// makes of an outage.
#[cfg(feature = "redis")]
mod on_redis {
    use std::time::Duration;

    use ratewindow::{FailurePolicy, RedisConnection, RedisLimiter};

    use super::*;
    use crate::support::redis_server::RedisServer;

    fn limiter(server: &RedisServer, policy: FailurePolicy) -> RedisLimiter<ManualClock> {
        let connection = block_on(RedisConnection::connect(&server.url())).expect("connect");
        RedisLimiter::builder(Quota::per_minute(3).unwrap())
            .prefix(format!("layer-{policy:?}").replace(['{', '}', ' '], ""))
            .timeout(Duration::from_millis(500))
            .failure_policy(policy)
            .clock(ManualClock::at_millis(T0_MS))
            .build(connection)
            .unwrap()
    }

    fn app(server: &RedisServer, policy: FailurePolicy, calls: &Arc<AtomicUsize>) -> Router {
        router(RateLimitLayer::new(limiter(server, policy), API_KEY), calls)
    }

    #[test]
    fn a_fail_closed_503_through_hooks_keeps_its_headers() {
        let mut server = RedisServer::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Seen::default();
        let observed = Seen::default();
        let observer = {
            let observed = observed.clone();
            move |outcome: &Outcome| {
                let by = outcome.decision().map(|decision| decision.decided_by());
                observed.push(format!("{by:?}"));
            }
        };
        let layer = RateLimitLayer::new(limiter(&server, FailurePolicy::FailClosed), API_KEY)
            .on_rejection(plain_text_hook(&seen))
            .on_decision(observer);
        let app = router(layer, &calls);
        assert_eq!(send(&app, Some("k"), None).status, StatusCode::OK);

        server.stop();
        let unavailable = send(&app, Some("k"), None);
        assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.body, "custom rate_limiter_unavailable");
        assert_eq!(
            unavailable.rate_headers(),
            [
                "x-ratelimit-limit: 3",
                "x-ratelimit-remaining: 0",
                "x-ratelimit-reset: 1800000060",
                "retry-after: 1",
            ]
        );
        assert_eq!(unavailable.headers["x-hook"], "1");
        assert_eq!(
            seen.take(),
            [r#"Unavailable GET / Some("remaining 0") None"#]
        );
        assert_eq!(observed.take(), ["Some(Backend)", "Some(FailClosed)"]);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn decides_on_redis_and_follows_the_failure_policy_when_it_is_down() {
        let mut server = RedisServer::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let closed = app(&server, FailurePolicy::FailClosed, &calls);
        let open = app(&server, FailurePolicy::FailOpen, &calls);
        for app in [&closed, &open] {
            let answer = send(app, Some("k"), None);
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(
                answer.rate_headers(),
                [
                    "x-ratelimit-limit: 3",
                    "x-ratelimit-remaining: 2",
                    "x-ratelimit-reset: 1800000060",
                ]
            );
        }
        for _ in 0..2 {
            send(&closed, Some("k"), None);
        }
        let denied = send(&closed, Some("k"), None);
        assert_eq!(
            denied.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            server.log()
        );
        assert_eq!(denied.headers["retry-after"], "23");
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        server.stop();
        // Fail closed: a 503 with the denial's headers and a retry within a second.
        let unavailable = send(&closed, Some("k2"), None);
        assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.headers["retry-after"], "1");
        assert_eq!(unavailable.headers["x-ratelimit-remaining"], "0");
        assert_eq!(unavailable.problem()["code"], "rate_limiter_unavailable");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // Fail open: served, with headers.
        let served = send(&open, Some("k2"), None);
        assert_eq!(served.status, StatusCode::OK);
        assert!(served.headers.contains_key("x-ratelimit-remaining"));
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }
}
