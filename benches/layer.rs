//! The tower layer's overhead per request, in one group: a bare inner service against the same
//! service behind `RateLimitLayer` (in-memory limiter, every request allowed), next to what the
//! layer is made of: the in-memory decision alone, taking the key from the request, and header
//! writing alone in the X-RateLimit and IETF styles. Target: the layer adds at most twice the
//! in-memory decision, `rate_limited_service - bare_service <= 2 * memory_check`.
//!
//! The inner service comes in two kinds: one whose response has no headers (its header map
//! allocates on the layer's first insert) and one that sets `content-type`, as every axum
//! handler returning a body does. `floor_service` is the least any such layer can do: a
//! hand-written middleware that reads `x-api-key` and inserts three constant X-RateLimit
//! values, with no decision: what `http`'s header map itself costs.
//!
//! The services run on a current-thread tokio runtime; every future is ready at its first poll.
//! Each service iteration builds its request (with its `x-api-key`) and drops the response, the
//! same work in both, so their difference is the layer's alone. `key_extract` and
//! `key_and_boxed_check` show where that difference goes besides the decision and the headers.
//! `rate_limited_service_with_counters` is `rate_limited_service` with a `DecisionCounters`
//! observer: what counting every decision adds. The layer's options each have a case:
//! skipping (a predicate that does not match; a skipped request), an allow list that does not
//! match, the decision in the request's extensions, charging by response (every request
//! counted; every one released), a shadow denial served, and two plans chosen by key.
//!
//! What each of the layer's request options costs: `with_skip_unmatched` asks a `SkipRoutes`
//! of two routes that the request is not on (the cost of asking); `skipped_service` is a request
//! such a list skips (about `bare_service`); `with_allow_keys_unmatched` looks the request's key
//! up in an allow list of four keys; `with_decision_in_extensions` puts the decision into the
//! request's extensions (their map's first insert allocates). `uncharged_service` is a request
//! of cost 0, the layer's other way through without a decision, for comparison with
//! `skipped_service`.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use ratewindow::http::{HeaderStyle, IetfDraft, write_headers};
use ratewindow::tower::{
    AllowList, DecisionCounters, HeaderKey, KeyExtractor, Plans, RateLimitLayer, ResponseHead,
    SkipRoutes,
};
use ratewindow::{BoxFuture, MemoryLimiter, Quota, RateLimiter, Shadow};
use tower::{Layer, Service, ServiceExt, service_fn};

/// The largest per-minute limit ratewindow counts (2^33 - 1): the allowed path throughout.
const HUGE: u64 = (1 << 33) - 1;
const API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const KEY: &str = "otr_your_key";

fn limiter(limit: u64) -> MemoryLimiter {
    MemoryLimiter::new(Quota::per_minute(limit).expect("valid quota")).expect("limit fits")
}

fn request() -> Request<()> {
    let mut request = Request::new(());
    request
        .headers_mut()
        .insert(API_KEY, HeaderValue::from_static(KEY));
    request
}

/// The inner service: a small `200` and nothing else.
async fn ok(_request: Request<()>) -> Result<Response<String>, Infallible> {
    Ok(Response::new(String::from(r#"{"data":{}}"#)))
}

/// The inner service as axum's handlers answer: a small `200` with its `content-type`.
async fn ok_typed(_request: Request<()>) -> Result<Response<String>, Infallible> {
    let mut response = Response::new(String::from(r#"{"data":{}}"#));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// The least a rate-limit middleware does on `http` types: find the key header, then insert
/// three header values into the response (constants here: no decision, no formatting). Built
/// from tower's `map_request` and `map_response`, whose futures are not boxed.
fn floor<S>(
    inner: S,
) -> impl Service<Request<()>, Response = Response<String>, Error = Infallible> + Clone
where
    S: Service<Request<()>, Response = Response<String>, Error = Infallible> + Clone,
{
    inner
        .map_request(|request: Request<()>| {
            black_box(request.headers().get(API_KEY).is_some());
            request
        })
        .map_response(|mut response: Response<String>| {
            let headers = response.headers_mut();
            for name in FLOOR_NAMES {
                headers.insert(name, HeaderValue::from_static("100"));
            }
            response
        })
}

const FLOOR_NAMES: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit"),
    HeaderName::from_static("x-ratelimit-remaining"),
    HeaderName::from_static("x-ratelimit-reset"),
];

/// Calls `service` once per iteration through `oneshot` (on a clone, as a server does).
fn bench_service<S>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &tokio::runtime::Runtime,
    id: &str,
    service: S,
) where
    S: Service<Request<()>, Response = Response<String>, Error = Infallible> + Clone,
{
    group.bench_function(BenchmarkId::from_parameter(id), |b| {
        b.to_async(runtime)
            .iter(|| service.clone().oneshot(black_box(request())))
    });
}

pub(crate) fn bench_all(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let bare = service_fn(ok);
    let layered =
        RateLimitLayer::new(limiter(HUGE), HeaderKey::from_static("x-api-key")).layer(bare);
    let counters = DecisionCounters::new();
    let counted = RateLimitLayer::new(limiter(HUGE), HeaderKey::from_static("x-api-key"))
        .on_decision(counters.clone())
        .layer(bare);
    let layer = || RateLimitLayer::new(limiter(HUGE), HeaderKey::from_static("x-api-key"));
    let skip_unmatched = layer()
        .skip(
            SkipRoutes::new()
                .route(Method::GET, "/healthz")
                .path("/metrics"),
        )
        .layer(bare);
    // The benchmark's requests are `GET /`.
    let skipped = layer()
        .skip(SkipRoutes::new().route(Method::GET, "/"))
        .layer(bare);
    let uncharged = layer().cost(|_: &Request<()>| 0).layer(bare);
    let allow_unmatched = layer()
        .allow(AllowList::new().keys([
            "internal-billing",
            "internal-search",
            "internal-export",
            "internal-monitoring",
        ]))
        .layer(bare);
    let handed_over = layer().decision_in_extensions(true).layer(bare);
    // Settled by the response: every request counted, or every one released.
    let settled_counted = layer().charge_if(|_: &ResponseHead<'_>| true).layer(bare);
    let settled_released = layer().charge_if(|_: &ResponseHead<'_>| false).layer(bare);
    // Every request over its (shadow) quota: served with the denial's headers.
    let shadow = MemoryLimiter::builder(Quota::per_minute(1).expect("valid quota"))
        .shadow(Shadow::ALL)
        .build()
        .expect("limit fits");
    shadow.check_sync(KEY).expect("valid key");
    let shadowed = RateLimitLayer::new(shadow, HeaderKey::from_static("x-api-key")).layer(bare);
    // Two plans sharing counters, chosen by the key.
    let free = limiter(HUGE);
    let pro = free
        .plan("pro", [Quota::per_minute(HUGE).expect("valid quota")])
        .expect("same windows");
    let plans = Plans::new("free", free)
        .plan("pro", pro)
        .by_key(|key: &str| {
            if key.starts_with("pro_") {
                "pro"
            } else {
                "free"
            }
        });
    let planned = RateLimitLayer::new(plans, HeaderKey::from_static("x-api-key")).layer(bare);
    let typed = service_fn(ok_typed);
    let layered_typed =
        RateLimitLayer::new(limiter(HUGE), HeaderKey::from_static("x-api-key")).layer(typed);
    let alone = limiter(HUGE);
    // A decision of the seed contract (100 per minute) for the header writers.
    let decision = limiter(100).check_sync(KEY).expect("valid key");
    let key = HeaderKey::from_static("x-api-key");

    // The measured paths are the ones meant: allowed, with headers.
    let response = runtime
        .block_on(layered.clone().oneshot(request()))
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-ratelimit-remaining"));

    let skipped_response = runtime
        .block_on(skipped.clone().oneshot(request()))
        .expect("infallible");
    assert!(
        !skipped_response
            .headers()
            .contains_key("x-ratelimit-remaining")
    );
    let unmatched = runtime
        .block_on(allow_unmatched.clone().oneshot(request()))
        .expect("infallible");
    assert!(unmatched.headers().contains_key("x-ratelimit-remaining"));

    let mut group = c.benchmark_group("layer");
    group.throughput(Throughput::Elements(1));
    bench_service(&mut group, &runtime, "bare_service", bare);
    bench_service(
        &mut group,
        &runtime,
        "rate_limited_service",
        layered.clone(),
    );
    bench_service(
        &mut group,
        &runtime,
        "rate_limited_service_with_counters",
        counted,
    );
    bench_service(
        &mut group,
        &runtime,
        "rate_limited_service_with_skip_unmatched",
        skip_unmatched,
    );
    bench_service(&mut group, &runtime, "skipped_service", skipped);
    bench_service(&mut group, &runtime, "uncharged_service", uncharged);
    bench_service(
        &mut group,
        &runtime,
        "rate_limited_service_with_allow_keys_unmatched",
        allow_unmatched,
    );
    bench_service(
        &mut group,
        &runtime,
        "rate_limited_service_with_decision_in_extensions",
        handed_over,
    );
    bench_service(
        &mut group,
        &runtime,
        "rate_limited_service_charge_if_counted",
        settled_counted,
    );
    bench_service(
        &mut group,
        &runtime,
        "rate_limited_service_charge_if_released",
        settled_released,
    );
    bench_service(&mut group, &runtime, "shadow_denied_service", shadowed);
    bench_service(&mut group, &runtime, "plans_by_key_service", planned);
    bench_service(&mut group, &runtime, "typed/bare_service", typed);
    bench_service(
        &mut group,
        &runtime,
        "typed/rate_limited_service",
        layered_typed,
    );
    bench_service(&mut group, &runtime, "typed/floor_service", floor(typed));
    group.bench_function(BenchmarkId::from_parameter("memory_check"), |b| {
        b.iter(|| black_box(alone.check_sync(black_box(KEY))))
    });
    let with_key = request();
    group.bench_function(BenchmarkId::from_parameter("key_extract"), |b| {
        b.iter(|| black_box(key.extract(black_box(&with_key))))
    });
    // What the layer does before the inner call for a limiter it must wait for (e.g. Redis):
    // the key as a `String`, then the decision in a boxed future that owns it and a handle on
    // the limiter.
    let shared = Arc::new(limiter(HUGE));
    group.bench_function(BenchmarkId::from_parameter("key_and_boxed_check"), |b| {
        b.to_async(&runtime).iter(|| {
            let key = key.extract(black_box(&with_key)).expect("has a key");
            let limiter = Arc::clone(&shared);
            let check: BoxFuture<'static, _> =
                Box::pin(async move { RateLimiter::check(&*limiter, &key).await });
            check
        })
    });
    // What the layer does now for a limiter that decides without waiting (the in-memory one):
    // the key borrowed from the request, then the decision at once.
    group.bench_function(BenchmarkId::from_parameter("key_and_check_now"), |b| {
        b.iter(|| {
            let key = key
                .extract_borrowed(black_box(&with_key))
                .expect("has a key");
            black_box(shared.check_now(&key, 1))
        })
    });
    for (name, style) in [
        ("x-ratelimit", HeaderStyle::x_ratelimit()),
        ("ietf", HeaderStyle::ietf(IetfDraft::Draft10)),
    ] {
        group.bench_function(BenchmarkId::new("write_headers", name), |b| {
            b.iter(|| {
                let mut headers = HeaderMap::new();
                write_headers(black_box(&decision), style, None, &mut headers);
                headers
            })
        });
    }
    group.finish();

    assert!(alone.check_sync(KEY).expect("valid key").is_allowed());
    let response = runtime
        .block_on(layered.oneshot(request()))
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK, "still allowed");
    // (Nothing counted when a filter left the case out.)
    let counted = counters.snapshot();
    assert_eq!(counted.denied, 0, "{counted:?}");
}
