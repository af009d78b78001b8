//! Quotas chosen per request through the layer: plans per key sharing one key's counters, a
//! route with counters of its own, and plans looked up asynchronously and cached; on the
//! memory backend and on a real redis-server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::routing::{get, post};
use ratewindow::http::{HeaderStyle, IetfDraft};
use ratewindow::tower::{CachedPlanLookup, HeaderKey, Plans, RateLimitLayer};
use ratewindow::{ManualClock, MemoryLimiter, RateLimiter, quota};

use super::server::{Reply, respond};

/// 20 s into a minute (40 s before it ends), 20 s into an hour.
const T0_MS: u64 = 1_800_000_020_000;
const START: &str = "/campaigns/c1/start";

async fn send(app: &Router, method: Method, path: &str, key: &str) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("x-api-key", key)
        .body(Body::empty())
        .unwrap();
    respond(app, request).await.0
}

/// `GET /` and `POST /campaigns/{id}/start` behind one layer: `start` decides the starts (its
/// own counters), `pro` the keys starting `pro_`, `free` the rest.
fn app<L: RateLimiter + Clone + 'static>(free: L, pro: L, start: L) -> Router {
    let plans = Plans::new("free", free)
        .plan("pro", pro)
        .plan("start", start)
        .by_request(|request: &Request<Body>, key: &str| {
            if request.method() == Method::POST && request.uri().path().ends_with("/start") {
                "start"
            } else if key.starts_with("pro_") {
                "pro"
            } else {
                "free"
            }
        });
    let layer = RateLimitLayer::new(plans, HeaderKey::from_static("x-api-key"))
        .header_style(HeaderStyle::x_ratelimit().with_ietf(IetfDraft::Draft10));
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/campaigns/{id}/start", post(|| async { "started" }))
        .layer(layer)
}

/// Plans and a route's own counters, on limiters made by the backend under test.
async fn plans_and_routes<L: RateLimiter + Clone + 'static>(free: L, pro: L, start: L) {
    let app = app(free, pro, start);

    // A free key: 3 per minute.
    for remaining in ["2", "1", "0"] {
        let reply = send(&app, Method::GET, "/", "k1").await;
        assert_eq!(
            (
                reply.status,
                reply.header("x-ratelimit-remaining").unwrap_or_default()
            ),
            (StatusCode::OK, remaining)
        );
        assert_eq!(reply.header("x-ratelimit-limit"), Some("3"));
    }
    let denied = send(&app, Method::GET, "/", "k1").await;
    assert_eq!(denied.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        denied.header("ratelimit-policy").unwrap_or_default(),
        r#""free-per-minute";q=3;w=60, "free-per-hour";q=100;w=3600"#
    );
    assert_eq!(
        denied.body["violated-policies"],
        serde_json::json!(["free-per-minute"])
    );

    // A pro key: 10 per minute, named in the headers.
    let pro = send(&app, Method::GET, "/", "pro_k2").await;
    assert_eq!(
        (
            pro.status,
            pro.header("x-ratelimit-limit").unwrap_or_default(),
            pro.header("x-ratelimit-remaining").unwrap_or_default()
        ),
        (StatusCode::OK, "10", "9")
    );
    assert_eq!(
        pro.header("ratelimit-policy").unwrap_or_default(),
        r#""pro-per-minute";q=10;w=60, "pro-per-hour";q=1000;w=3600"#
    );

    // The start route counts apart: the free key that is out of GETs may still start twice,
    // and starting does not use its GETs.
    for remaining in ["1", "0"] {
        let reply = send(&app, Method::POST, START, "k1").await;
        assert_eq!(
            (
                reply.status,
                reply.header("x-ratelimit-remaining").unwrap_or_default()
            ),
            (StatusCode::OK, remaining)
        );
        assert_eq!(
            reply.header("ratelimit-policy").unwrap_or_default(),
            r#""start-per-minute";q=2;w=60"#
        );
    }
    let no_start = send(&app, Method::POST, START, "k1").await;
    assert_eq!(no_start.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        no_start.body["violated-policies"],
        serde_json::json!(["start-per-minute"])
    );
    let other_key = send(&app, Method::POST, START, "k3").await;
    assert_eq!(
        (
            other_key.status,
            other_key
                .header("x-ratelimit-remaining")
                .unwrap_or_default()
        ),
        (StatusCode::OK, "1")
    );
    let get_after = send(&app, Method::GET, "/", "k3").await;
    assert_eq!(
        (
            get_after.status,
            get_after
                .header("x-ratelimit-remaining")
                .unwrap_or_default()
        ),
        (StatusCode::OK, "2")
    );
}

fn memory_limiters(clock: &ManualClock) -> [MemoryLimiter<ManualClock>; 3] {
    let free = MemoryLimiter::builder(quota!(3 per minute))
        .quota(quota!(100 per hour))
        .name("free")
        .clock(clock.clone())
        .build()
        .unwrap();
    let pro = free
        .plan("pro", [quota!(10 per minute), quota!(1000 per hour)])
        .unwrap();
    let start = MemoryLimiter::builder(quota!(2 per minute))
        .name("start")
        .clock(clock.clone())
        .build()
        .unwrap();
    [free, pro, start]
}

#[tokio::test]
async fn plans_by_key_and_a_routes_own_counters_in_memory() {
    let [free, pro, start] = memory_limiters(&ManualClock::at_millis(T0_MS));
    plans_and_routes(free, pro, start).await;
}

/// A key's plan looked up, cached for a minute: a changed plan takes effect when the cached
/// answer expires, and the key keeps its count.
#[tokio::test]
async fn a_looked_up_plan_is_cached_and_a_change_keeps_the_count() {
    let clock = ManualClock::at_millis(T0_MS);
    let [free, pro, _] = memory_limiters(&clock);
    let lookups = Arc::new(AtomicUsize::new(0));
    let paid = Arc::new(AtomicUsize::new(0));
    let lookup = {
        let (lookups, paid) = (Arc::clone(&lookups), Arc::clone(&paid));
        move |key: String| {
            lookups.fetch_add(1, Ordering::SeqCst);
            let plan = (key == "k" && paid.load(Ordering::SeqCst) == 1).then(|| "pro".to_string());
            async move {
                tokio::task::yield_now().await;
                plan
            }
        }
    };
    let cached = CachedPlanLookup::with_clock(lookup, Duration::from_secs(30), clock.clone());
    let plans = Plans::new("free", free).plan("pro", pro).looked_up(cached);
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(RateLimitLayer::new(
            plans,
            HeaderKey::from_static("x-api-key"),
        ));

    for remaining in ["2", "1", "0"] {
        let reply = send(&app, Method::GET, "/", "k").await;
        assert_eq!(
            (
                reply.status,
                reply.header("x-ratelimit-remaining").unwrap_or_default()
            ),
            (StatusCode::OK, remaining)
        );
    }
    assert_eq!(lookups.load(Ordering::SeqCst), 1, "the answer is cached");
    // Upgraded: the cached answer still says free until it expires.
    paid.store(1, Ordering::SeqCst);
    let denied = send(&app, Method::GET, "/", "k").await;
    assert_eq!(
        (
            denied.status,
            denied.header("x-ratelimit-limit").unwrap_or_default()
        ),
        (StatusCode::TOO_MANY_REQUESTS, "3")
    );
    clock.advance(Duration::from_secs(30));
    // 10 s of the minute left: the pro plan, with the 3 already counted.
    let upgraded = send(&app, Method::GET, "/", "k").await;
    assert_eq!(
        (
            upgraded.status,
            upgraded.header("x-ratelimit-limit").unwrap_or_default(),
            upgraded.header("x-ratelimit-remaining").unwrap_or_default()
        ),
        (StatusCode::OK, "10", "6")
    );
    assert_eq!(lookups.load(Ordering::SeqCst), 2);
    // Another key is looked up once, and gets the default plan.
    send(&app, Method::GET, "/", "other").await;
    let other = send(&app, Method::GET, "/", "other").await;
    assert_eq!(
        (
            other.header("x-ratelimit-limit").unwrap_or_default(),
            other.header("x-ratelimit-remaining").unwrap_or_default()
        ),
        ("3", "1")
    );
    assert_eq!(lookups.load(Ordering::SeqCst), 3);
}

/// A cache of one key forgets the others: never more than its capacity, and a forgotten
/// key is looked up again.
#[tokio::test]
async fn a_full_plan_cache_starts_over_rather_than_growing() {
    let clock = ManualClock::at_millis(T0_MS);
    let [free, pro, _] = memory_limiters(&clock);
    let lookups = Arc::new(AtomicUsize::new(0));
    let lookup = {
        let lookups = Arc::clone(&lookups);
        move |_key: String| {
            lookups.fetch_add(1, Ordering::SeqCst);
            async { None }
        }
    };
    let cached =
        CachedPlanLookup::with_clock(lookup, Duration::from_secs(60), clock.clone()).capacity(1);
    let plans = Plans::new("free", free).plan("pro", pro).looked_up(cached);
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(RateLimitLayer::new(
            plans,
            HeaderKey::from_static("x-api-key"),
        ));
    for key in ["a", "a", "b", "b", "a"] {
        assert_eq!(
            send(&app, Method::GET, "/", key).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(lookups.load(Ordering::SeqCst), 3);
}

#[cfg(feature = "redis")]
mod on_redis {
    use ratewindow::{RedisConnection, RedisLimiter};

    use super::*;
    use crate::support::redis_server::RedisServer;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plans_by_key_and_a_routes_own_counters_on_redis() {
        let server = RedisServer::new();
        let connection = RedisConnection::connect(&server.url()).await.unwrap();
        let clock = ManualClock::at_millis(T0_MS);
        let free = RedisLimiter::builder(quota!(3 per minute))
            .quota(quota!(100 per hour))
            .name("free")
            .timeout(Duration::from_secs(5))
            .clock(clock.clone())
            .build(connection.clone())
            .unwrap();
        let pro = free
            .plan("pro", [quota!(10 per minute), quota!(1000 per hour)])
            .unwrap();
        let start = RedisLimiter::builder(quota!(2 per minute))
            .name("start")
            .prefix("start")
            .timeout(Duration::from_secs(5))
            .clock(clock.clone())
            .build(connection)
            .unwrap();
        plans_and_routes(free, pro, start).await;
        // The route's counters are its own keys.
        let keys = server.command(&["KEYS", "start:*"]);
        assert_eq!(
            keys.lines()
                .filter(|line| line.starts_with("start:"))
                .count(),
            2,
            "{keys}"
        );
    }
}
