//! One axum handler (`GET /`, a short text body) served five ways, for a real load generator to
//! measure what rate limiting adds per request (`scripts/bench-http` drives it with `wrk` and
//! reads this process's CPU time from `/proc`):
//!
//! - `bare`: axum alone;
//! - `ratewindow`: behind `ratewindow::tower::RateLimitLayer` on a `MemoryLimiter`, keyed by
//!   the `x-api-key` header, X-RateLimit headers on every response (the default style);
//! - `governor`: behind `tower_governor` keyed by the same header, with its headers on
//!   (`use_headers`);
//! - `ratewindow-redis`: `RateLimitLayer` on a `RedisLimiter` (fail closed, so a Redis failure
//!   shows up as a `503`, not as an unmetered `200`);
//! - `redis-incr`: the same contract written by hand on redis-rs's `ConnectionManager`: one
//!   pipelined `INCR` + `EXPIRE NX` per request, then the three X-RateLimit headers.
//!
//! Every quota is far above what the run sends (1 000 000 a minute per key; governor: a burst
//! of 1 000 000, one more every 60 µs), so every request is admitted: this measures the
//! admitted path. A request without `x-api-key` is answered `401` by every limited mode.
//!
//! The server runs on a current-thread tokio runtime: one thread serves every connection.
//!
//! ```text
//! cargo build --release -p ratewindow-http-bench
//! target/release/ratewindow-http-bench <mode> <port> [redis-url]
//! target/release/ratewindow-http-bench ratewindow 8090
//! target/release/ratewindow-http-bench ratewindow-redis 8090 redis://127.0.0.1:6390
//! curl -i -H 'x-api-key: key-1' http://127.0.0.1:8090/
//! ```

use std::error::Error;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::HeaderValue;
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ratewindow::tower::{HeaderKey, RateLimitLayer};
use ratewindow::{FailurePolicy, MemoryLimiter, Quota, RedisConnection, RedisLimiter};
use redis::aio::ConnectionManager;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;

/// Requests per key per minute: far more than a run sends.
const LIMIT: u64 = 1_000_000;
/// Seconds in the fixed window.
const WINDOW_SECS: u64 = 60;
const API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6390";
const USAGE: &str = "usage: ratewindow-http-bench \
    <bare|ratewindow|governor|ratewindow-redis|redis-incr> <port> [redis-url]";

/// The handler every mode serves.
async fn handler() -> &'static str {
    "ok"
}

fn router() -> Router {
    Router::new().route("/", get(handler))
}

/// `tower_governor`'s key: the `x-api-key` header's value, as ratewindow's `HeaderKey` reads it.
#[derive(Debug, Clone, Copy)]
struct ApiKey;

impl KeyExtractor for ApiKey {
    type Key = String;

    fn extract<T>(
        &self,
        request: &axum::http::Request<T>,
    ) -> Result<Self::Key, tower_governor::GovernorError> {
        request
            .headers()
            .get(API_KEY)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .ok_or(tower_governor::GovernorError::UnableToExtractKey)
    }
}

/// The hand-written Redis limiter: a fixed window counted by one pipelined `INCR` and
/// `EXPIRE NX` on the window's own key, then the same three X-RateLimit headers.
async fn redis_incr(
    State(mut redis): State<ConnectionManager>,
    request: Request,
    next: Next,
) -> Response {
    let Some(key) = request
        .headers()
        .get(API_KEY)
        .and_then(|value| value.to_str().ok())
    else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let window = now / WINDOW_SECS;
    let counter = format!("incr:{key}:{window}");
    let counted: redis::RedisResult<(u64,)> = redis::pipe()
        .cmd("INCR")
        .arg(&counter)
        .cmd("EXPIRE")
        .arg(&counter)
        .arg(WINDOW_SECS + 1)
        .arg("NX")
        .ignore()
        .query_async(&mut redis)
        .await;
    let count = match counted {
        Ok((count,)) => count,
        // Fail closed and loudly: the load generator counts every non-2xx answer.
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    let remaining = LIMIT.saturating_sub(count);
    let reset = (window + 1) * WINDOW_SECS;
    let mut response = if count > LIMIT {
        StatusCode::TOO_MANY_REQUESTS.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(LIMIT));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
    response
}

async fn app(mode: &str, redis_url: &str) -> Result<Router, Box<dyn Error>> {
    let quota = Quota::per_minute(LIMIT)?;
    let key = HeaderKey::new(API_KEY);
    Ok(match mode {
        "bare" => router(),
        "ratewindow" => router().layer(RateLimitLayer::new(MemoryLimiter::new(quota)?, key)),
        "governor" => {
            let config = GovernorConfigBuilder::default()
                .period(Duration::from_micros(WINDOW_SECS * 1_000_000 / LIMIT))
                .burst_size(u32::try_from(LIMIT)?)
                .key_extractor(ApiKey)
                .use_headers()
                .finish()
                .ok_or("invalid governor configuration")?;
            router().layer(GovernorLayer::new(config))
        }
        "ratewindow-redis" => {
            let connection = RedisConnection::connect(redis_url).await?;
            let limiter = RedisLimiter::builder(quota)
                .failure_policy(FailurePolicy::FailClosed)
                .build(connection)?;
            router().layer(RateLimitLayer::new(limiter, key))
        }
        "redis-incr" => {
            let client = redis::Client::open(redis_url)?;
            let connection = ConnectionManager::new(client).await?;
            router().layer(from_fn_with_state(connection, redis_incr))
        }
        _ => return Err(USAGE.into()),
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(mode), Some(port)) = (args.next(), args.next()) else {
        return Err(USAGE.into());
    };
    let port: u16 = port.parse().map_err(|_| USAGE)?;
    let redis_url = args.next().unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = app(&mode, &redis_url).await?;
        let address = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let listener = tokio::net::TcpListener::bind(address).await?;
        println!("{mode} listening on http://{address}");
        axum::serve(listener, app).await?;
        Ok(())
    })
}
