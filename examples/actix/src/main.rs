//! actix-web in front of ratewindow: the demo server's rate-limit contract as a `from_fn`
//! middleware written against ratewindow's public API (the library has no actix dependency).
//!
//! One route, `POST /api/v1/campaigns/{id}/start`, stands in for the API; the full seeded
//! campaigns API (and the Redis backend) lives in `examples/server/`. The middleware wraps
//! the whole `App`, so unknown routes are rate limited too:
//!
//! - every response to a request with an `X-API-Key` carries `X-RateLimit-Limit`,
//!   `X-RateLimit-Remaining` and `X-RateLimit-Reset` (unix epoch seconds);
//! - over the key's quota: `429` with `Retry-After` and a JSON error body, and the handler does
//!   not run;
//! - no (or an empty, repeated or non-ASCII) `X-API-Key`: `401` (`400` for a repeated one),
//!   without rate-limit headers: nothing was counted.
//!
//! ```text
//! cargo run --release -p ratewindow-actix-example
//! RATE_LIMIT=2/1m BIND=127.0.0.1:9000 cargo run --release -p ratewindow-actix-example
//!
//! curl -i -X POST http://127.0.0.1:8081/api/v1/campaigns/cmp_abc123/start \
//!      -H "X-API-Key: otr_your_key"
//! ```
//!
//! Environment: `BIND`, `host:port` (default `127.0.0.1:8081`); `RATE_LIMIT`, the quota per API
//! key as `<limit>/<window>` with a unit of `ms`, `s`, `m`, `h` or `d` (default `100/1m`).
//!
//! The decision is `MemoryLimiter::check_sync`, synchronous and a few tens of nanoseconds. For a
//! networked backend, hold any `RateLimiter` (e.g. a `RedisLimiter`) instead and `.await` its
//! `check`: the middleware is already async.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpResponse, HttpServer, web};
use ratewindow::{Decision, Error, MemoryLimiter, Quota};
use serde_json::json;

const DEFAULT_BIND: &str = "127.0.0.1:8081";
const DEFAULT_RATE_LIMIT: &str = "100/1m";

/// Charges one request to the caller's `X-API-Key` and runs the handler only within the quota.
async fn rate_limit<B: MessageBody>(
    limiter: web::Data<MemoryLimiter>,
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let key = match api_key(request.headers()) {
        Ok(key) => key.to_owned(),
        Err(response) => return Ok(request.into_response(response).map_into_right_body()),
    };
    let decision = match limiter.check_sync(&key) {
        Ok(decision) => decision,
        Err(err) => {
            return Ok(request
                .into_response(limiter_error(&err))
                .map_into_right_body());
        }
    };
    let mut response = if decision.is_allowed() {
        match next.call(request).await {
            Ok(response) => response.map_into_left_body(),
            // An error from an inner middleware: its response gets the headers too.
            Err(err) => {
                let mut response = err.error_response();
                write_headers(&decision, response.headers_mut());
                return Err(InternalError::from_response(err, response).into());
            }
        }
    } else {
        request
            .into_response(rate_limited(&decision))
            .map_into_right_body()
    };
    write_headers(&decision, response.headers_mut());
    Ok(response)
}

/// `X-RateLimit-*`, plus `Retry-After` on a denial: lower-case static names, integer values
/// formatted without allocating.
fn write_headers(decision: &Decision, headers: &mut HeaderMap) {
    for (name, value) in decision.headers() {
        if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// The one non-empty, visible-ASCII `X-API-Key`, or the answer to a request without one.
fn api_key(headers: &HeaderMap) -> Result<&str, HttpResponse> {
    let mut values = headers.get_all("x-api-key");
    let Some(value) = values.next() else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing X-API-Key header",
        ));
    };
    // Proxies disagree on which of several copies wins; refuse to guess.
    if values.next().is_some() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_api_key",
            "Send exactly one X-API-Key header",
        ));
    }
    match value.to_str() {
        Ok(key) if !key.is_empty() => Ok(key),
        _ => Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "X-API-Key must be non-empty visible ASCII",
        )),
    }
}

fn rate_limited(decision: &Decision) -> HttpResponse {
    let retry_after = decision.retry_after_secs().unwrap_or(1);
    HttpResponse::TooManyRequests().json(json!({
        "error": {
            "code": "rate_limited",
            "message": format!(
                "Rate limit of {} requests per window exceeded; retry in {retry_after} s",
                decision.limit()
            ),
            "retryAfter": retry_after,
        }
    }))
}

/// The limiter could not decide for the key: no count, so no rate-limit headers.
fn limiter_error(err: &Error) -> HttpResponse {
    match err {
        // The message names the problem (e.g. the key's length), never the key.
        Error::EmptyKey | Error::KeyTooLong { .. } => {
            error(StatusCode::BAD_REQUEST, "invalid_api_key", &err.to_string())
        }
        Error::CapacityExhausted { .. } => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "over_capacity",
            "Too many API keys are active; try again later",
        ),
        _ => {
            eprintln!("rate limiter error: {err}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Rate limiting failed",
            )
        }
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": { "code": code, "message": message } }))
}

async fn start_campaign(id: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "data": { "id": *id, "status": "active" } }))
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rate_limit_spec = env_or("RATE_LIMIT", DEFAULT_RATE_LIMIT);
    let quota: Quota = rate_limit_spec
        .parse()
        .map_err(|err| format!("RATE_LIMIT={rate_limit_spec:?}: {err}"))?;
    let bind = env_or("BIND", DEFAULT_BIND);
    // One limiter for every worker: `web::Data` is an `Arc`.
    let limiter = web::Data::new(MemoryLimiter::new(quota)?);

    let server = HttpServer::new(move || {
        App::new()
            .app_data(limiter.clone())
            .wrap(from_fn(rate_limit))
            .route(
                "/api/v1/campaigns/{id}/start",
                web::post().to(start_campaign),
            )
    })
    .bind(&bind)
    .map_err(|err| format!("BIND={bind:?}: {err}"))?;
    eprintln!("listening on http://{bind} ({quota} per X-API-Key)");
    server.run().await?;
    Ok(())
}
