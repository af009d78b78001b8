//! The layer's policies for what a decision leads to, through axum on the memory backend and
//! on a real redis-server: shadow (dry-run) quotas, and charging by the response.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use ratewindow::tower::{DecisionCounters, HeaderKey, RateLimitLayer, ResponseHead, ShadowHeaders};
use ratewindow::{ManualClock, MemoryLimiter, RateLimiter, Shadow, quota};

use super::server::{Reply, respond};

/// 20 s into a minute and an hour.
const T0_MS: u64 = 1_800_000_020_000;
const API_KEY: HeaderKey = HeaderKey::from_static("x-api-key");

async fn send(app: &Router, key: &str, path: &str) -> Reply {
    let request = Request::get(path)
        .header("x-api-key", key)
        .body(Body::empty())
        .unwrap();
    respond(app, request).await.0
}

/// The count `limiter` holds for `key` in its first quota's current window.
async fn count<L: RateLimiter>(limiter: &L, key: &str) -> u64 {
    let peek = limiter.peek(key).await.unwrap();
    let used = peek.quotas()[0].used();
    // A peek that admits reports the count with its own unit in it; so does one denied in
    // shadow alone, for an enforced quota it does not deny (here: the first).
    let charged = peek.is_allowed() || (peek.is_shadow_denied() && !peek.denied_by(0));
    if charged { used - 1 } else { used }
}

/// A route that counts its calls.
fn counted(calls: &Arc<AtomicUsize>) -> Router {
    let calls = Arc::clone(calls);
    Router::new().route(
        "/",
        get(move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            "ok"
        }),
    )
}

/// The whole limiter in shadow: every request goes through, the denials say so in their
/// headers and in the counters, and no quota counts them.
async fn shadow_lets_denials_through_and_counts_them_apart<L>(limiter: L)
where
    L: RateLimiter + Clone + 'static,
{
    let calls = Arc::new(AtomicUsize::new(0));
    let counters = DecisionCounters::new();
    let app = counted(&calls)
        .layer(RateLimitLayer::new(limiter.clone(), API_KEY).on_decision(counters.clone()));
    for expected in ["1", "0", "0", "0", "0"] {
        let reply = send(&app, "k", "/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("x-ratelimit-remaining"), Some(expected));
    }
    let over = send(&app, "k", "/").await;
    assert_eq!(over.header("retry-after"), Some("40"));
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    // Exact: the shadow denials consumed nothing.
    assert_eq!(count(&limiter, "k").await, 2);
    let s = counters.snapshot();
    assert_eq!((s.allowed, s.denied, s.shadow_denied), (2, 0, 4));
    let by_policy: Vec<(String, u64)> = s
        .shadow_denied_by_policy()
        .map(|(name, count)| (name.to_string(), count))
        .collect();
    assert_eq!(by_policy, [("per-minute".to_string(), 4)]);
}

#[tokio::test]
async fn shadow_in_memory() {
    let limiter = MemoryLimiter::builder(quota!(2 per minute))
        .shadow(Shadow::ALL)
        .clock(ManualClock::at_millis(T0_MS))
        .build()
        .unwrap();
    shadow_lets_denials_through_and_counts_them_apart(limiter).await;
}

/// One quota in shadow: its denials go through (without headers, as configured) and count
/// against the enforced quota, which keeps denying; the enforced quota's denials are 429s.
async fn one_quota_in_shadow_the_other_enforced<L>(limiter: L, clock: ManualClock)
where
    L: RateLimiter + Clone + 'static,
{
    let calls = Arc::new(AtomicUsize::new(0));
    let app = counted(&calls)
        .layer(RateLimitLayer::new(limiter.clone(), API_KEY).shadow_headers(ShadowHeaders::None));
    for _ in 0..3 {
        assert_eq!(send(&app, "k", "/").await.status, StatusCode::OK);
    }
    // Over the minute (enforced): a 429.
    let over_minute = send(&app, "k", "/").await;
    assert_eq!(over_minute.status, StatusCode::TOO_MANY_REQUESTS);
    clock.advance(Duration::from_secs(60));
    assert_eq!(send(&app, "k", "/").await.status, StatusCode::OK);
    // Over the hour (in shadow) alone: let through, without headers, counted in the minute.
    for _ in 0..2 {
        let over_hour = send(&app, "k", "/").await;
        assert_eq!(over_hour.status, StatusCode::OK);
        assert_eq!(
            (
                over_hour.header("x-ratelimit-remaining"),
                over_hour.header("retry-after")
            ),
            (None, None)
        );
    }
    // The minute is still enforced while the hour is over: 3 served in it, then a 429.
    let over_both = send(&app, "k", "/").await;
    assert_eq!(over_both.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    let peek = limiter.peek("k").await.unwrap();
    let counts: Vec<u64> = peek.quotas().iter().map(|q| q.used()).collect();
    assert_eq!(counts, [3, 4], "the hour counts only what it admits");
}

fn minute_and_shadow_hour(clock: &ManualClock) -> MemoryLimiter<ManualClock> {
    MemoryLimiter::builder(quota!(3 per minute))
        .quota(quota!(4 per hour))
        .shadow(Shadow::quota(1))
        .clock(clock.clone())
        .build()
        .unwrap()
}

#[tokio::test]
async fn one_quota_in_shadow_in_memory() {
    let clock = ManualClock::at_millis(T0_MS);
    one_quota_in_shadow_the_other_enforced(minute_and_shadow_hour(&clock), clock).await;
}

/// Counting only failed attempts (4xx): successes are released, failures count and run out.
async fn only_failures_count<L>(limiter: L)
where
    L: RateLimiter + Clone + 'static,
{
    let app = Router::new()
        .route("/login", get(|| async { "welcome" }))
        .route("/fail", get(|| async { (StatusCode::UNAUTHORIZED, "no") }))
        .layer(
            RateLimitLayer::new(limiter.clone(), API_KEY)
                .charge_if(|response: &ResponseHead<'_>| response.status().is_client_error()),
        );
    for _ in 0..10 {
        let ok = send(&app, "k", "/login").await;
        assert_eq!(ok.status, StatusCode::OK);
        // The headers of its admission: 1 of 2 left while it ran.
        assert_eq!(ok.header("x-ratelimit-remaining"), Some("1"));
    }
    assert_eq!(count(&limiter, "k").await, 0);
    assert_eq!(
        send(&app, "k", "/fail").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, "k", "/fail").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(count(&limiter, "k").await, 2);
    let denied = send(&app, "k", "/login").await;
    assert_eq!(denied.status, StatusCode::TOO_MANY_REQUESTS);
}

/// A shadow denial settled by its response: served, charged to the enforced quota, and given
/// back when its response does not count, so a shadow quota that ran out changes nothing that
/// is enforced.
async fn shadow_denials_are_released_too<L>(limiter: L)
where
    L: RateLimiter + Clone + 'static,
{
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/fail", get(|| async { (StatusCode::UNAUTHORIZED, "no") }))
        .layer(
            RateLimitLayer::new(limiter.clone(), API_KEY)
                .charge_if(|response: &ResponseHead<'_>| response.status().is_client_error()),
        );
    // Two failures fill the shadow hour (2) and count in the minute (3).
    for _ in 0..2 {
        assert_eq!(
            send(&app, "k", "/fail").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // Successes over the shadow hour: served, charged to the minute, released.
    for _ in 0..5 {
        assert_eq!(send(&app, "k", "/").await.status, StatusCode::OK);
    }
    assert_eq!(count(&limiter, "k").await, 2);
    // One more failure fills the minute; then it denies.
    assert_eq!(
        send(&app, "k", "/fail").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, "k", "/").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn shadow_denials_are_released_too_in_memory() {
    let limiter = MemoryLimiter::builder(quota!(3 per minute))
        .quota(quota!(2 per hour))
        .shadow(Shadow::quota(1))
        .clock(ManualClock::at_millis(T0_MS))
        .build()
        .unwrap();
    shadow_denials_are_released_too(limiter).await;
}

#[tokio::test]
async fn charge_by_response_in_memory() {
    let limiter = MemoryLimiter::builder(quota!(2 per minute))
        .clock(ManualClock::at_millis(T0_MS))
        .build()
        .unwrap();
    only_failures_count(limiter).await;
}

/// A response that comes after its window ended releases nothing of the next window.
#[tokio::test]
async fn a_release_after_the_window_ended_leaves_the_next_window_alone() {
    let clock = ManualClock::at_millis(T0_MS);
    let limiter = MemoryLimiter::builder(quota!(2 per minute))
        .clock(clock.clone())
        .build()
        .unwrap();
    let slow_clock = clock.clone();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/slow-error",
            get(move || async move {
                slow_clock.advance(Duration::from_secs(60));
                StatusCode::INTERNAL_SERVER_ERROR
            }),
        )
        .layer(
            RateLimitLayer::new(limiter.clone(), API_KEY)
                .charge_if(|response: &ResponseHead<'_>| !response.status().is_server_error()),
        );
    assert_eq!(send(&app, "k", "/").await.status, StatusCode::OK);
    assert_eq!(
        send(&app, "k", "/slow-error").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    // The next minute: one request counted before the release came, and it stays counted.
    assert_eq!(count(&limiter, "k").await, 0);
    assert_eq!(
        send(&app, "k", "/").await.header("x-ratelimit-remaining"),
        Some("1")
    );
    assert_eq!(count(&limiter, "k").await, 1);
}

/// 64 concurrent clients race a limit of 8 with retries, and half the answers are released:
/// at no moment are more requests admitted and unreleased than the limit, as the handler sees
/// them and as the backend counts them; releases let later requests in.
async fn settling_under_concurrency_never_exceeds_the_limit<L>(limiter: L)
where
    L: RateLimiter + Clone + 'static,
{
    const LIMIT: u64 = 8;
    let inside = Arc::new(AtomicU64::new(0));
    let most_inside = Arc::new(AtomicU64::new(0));
    let most_counted = Arc::new(AtomicU64::new(0));
    let entered = Arc::new(AtomicU64::new(0));
    let handler = {
        let (inside, most_inside) = (Arc::clone(&inside), Arc::clone(&most_inside));
        let (most_counted, entered) = (Arc::clone(&most_counted), Arc::clone(&entered));
        let limiter = limiter.clone();
        move || {
            let (inside, most_inside) = (Arc::clone(&inside), Arc::clone(&most_inside));
            let (most_counted, entered) = (Arc::clone(&most_counted), Arc::clone(&entered));
            let limiter = limiter.clone();
            async move {
                let n = entered.fetch_add(1, Ordering::SeqCst);
                let now_inside = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most_inside.fetch_max(now_inside, Ordering::SeqCst);
                most_counted.fetch_max(count(&limiter, "k").await, Ordering::SeqCst);
                for _ in 0..5 {
                    tokio::task::yield_now().await;
                }
                // Leaves before its response is settled: still counted until released.
                inside.fetch_sub(1, Ordering::SeqCst);
                if n % 2 == 0 {
                    StatusCode::CONFLICT
                } else {
                    StatusCode::OK
                }
            }
        }
    };
    let app = Router::new().route("/", get(handler)).layer(
        RateLimitLayer::new(limiter.clone(), API_KEY)
            .charge_if(|response: &ResponseHead<'_>| response.status().is_success()),
    );
    let clients = (0..64).map(|_| {
        let app = app.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                let reply = send(&app, "k", "/").await;
                if reply.status != StatusCode::TOO_MANY_REQUESTS {
                    return Some(reply.status);
                }
                tokio::task::yield_now().await;
            }
            None
        })
    });
    let mut ok = 0;
    let mut released = 0;
    for client in clients {
        match client.await.unwrap() {
            Some(StatusCode::OK) => ok += 1,
            Some(StatusCode::CONFLICT) => released += 1,
            other => assert!(other.is_none(), "{other:?}"),
        }
    }
    assert!(most_inside.load(Ordering::SeqCst) <= LIMIT);
    assert!(most_counted.load(Ordering::SeqCst) <= LIMIT);
    // Only the counted ones stay, never more than the limit; the released made room.
    assert_eq!(ok, LIMIT, "released: {released}");
    assert_eq!(count(&limiter, "k").await, LIMIT);
    assert!(released > 0, "nothing was released");
    assert_eq!(entered.load(Ordering::SeqCst), ok + released);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settling_under_concurrency_in_memory() {
    let limiter = MemoryLimiter::builder(quota!(8 per minute))
        .clock(ManualClock::at_millis(T0_MS))
        .build()
        .unwrap();
    settling_under_concurrency_never_exceeds_the_limit(limiter).await;
}

#[cfg(feature = "redis")]
mod on_redis {
    use ratewindow::{RedisConnection, RedisLimiter};

    use super::*;
    use crate::support::redis_server::RedisServer;

    async fn limiter(server: &RedisServer, limit: u64) -> RedisLimiter<ManualClock> {
        let connection = RedisConnection::connect(&server.url()).await.unwrap();
        RedisLimiter::builder(ratewindow::Quota::per_minute(limit).unwrap())
            .timeout(Duration::from_secs(5))
            .clock(ManualClock::at_millis(T0_MS))
            .build(connection)
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shadow_on_redis() {
        let server = RedisServer::new();
        let limiter = limiter(&server, 2).await.with_shadow(Shadow::ALL);
        shadow_lets_denials_through_and_counts_them_apart(limiter).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_quota_in_shadow_on_redis() {
        let server = RedisServer::new();
        let connection = RedisConnection::connect(&server.url()).await.unwrap();
        let clock = ManualClock::at_millis(T0_MS);
        let limiter = RedisLimiter::builder(quota!(3 per minute))
            .quota(quota!(4 per hour))
            .shadow(Shadow::quota(1))
            .timeout(Duration::from_secs(5))
            .clock(clock.clone())
            .build(connection)
            .unwrap();
        one_quota_in_shadow_the_other_enforced(limiter, clock).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shadow_denials_are_released_too_on_redis() {
        let server = RedisServer::new();
        let connection = RedisConnection::connect(&server.url()).await.unwrap();
        let limiter = RedisLimiter::builder(quota!(3 per minute))
            .quota(quota!(2 per hour))
            .shadow(Shadow::quota(1))
            .timeout(Duration::from_secs(5))
            .clock(ManualClock::at_millis(T0_MS))
            .build(connection)
            .unwrap();
        shadow_denials_are_released_too(limiter).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn charge_by_response_on_redis() {
        let server = RedisServer::new();
        only_failures_count(limiter(&server, 2).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn settling_under_concurrency_on_redis() {
        let server = RedisServer::new();
        settling_under_concurrency_never_exceeds_the_limit(limiter(&server, 8).await).await;
    }
}
