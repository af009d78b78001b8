//! A demo API server rate limited per API key with ratewindow.
//!
//! It serves a small campaigns API (`POST /api/v1/campaigns/{id}/start`,
//! `GET /api/v1/campaigns/{id}`) and enforces a fixed-window quota per `X-API-Key`. Every
//! request with a valid key within its quota is charged to that key, whatever the handler
//! answers. Over the limit the answer is `429` with `Retry-After` and the handler does not run.
//! The rate limit is the crate's tower layer, so the example needs the `tower` feature.
//!
//! `GET /metrics` answers this instance's rate-limit decision counts since start-up in the
//! Prometheus text format ([`ratewindow::tower::DecisionCounters`]:
//! `ratewindow_decisions_total`, `ratewindow_decided_by_total`, `ratewindow_errors_total`,
//! `ratewindow_denied_total`) and, on Redis, the histogram of the limiter's round trips to
//! Redis ([`ratewindow::RoundTrips`]: `ratewindow_redis_round_trip_seconds`). It is outside
//! the rate limit: no key needed, never a `429`, no rate-limit headers, not counted.
//!
//! The rate limit's counters live in memory by default, or in Redis (the `redis` feature),
//! where every instance of the server that uses the same Redis and key prefix shares them: the
//! quota is then exact across all instances.
//!
//! The code is split by job: `app.rs` (the router, its handlers, the rate-limit layer and
//! `/metrics`), `campaigns.rs` (the campaigns and each key's workspace of them), `backend.rs`
//! (the limiter: in memory or on Redis, and the failure policy's log), `config.rs` (the
//! environment variables) and `serve.rs` (connections: timeouts, a cap, graceful shutdown).
//!
//! # Responses
//!
//! Rate limiting is [`ratewindow::tower::RateLimitLayer`] in front of the router, keyed by
//! `X-API-Key`, writing the rate-limit headers of `HEADERS` (below; the X-RateLimit headers by
//! default). In the X-RateLimit style:
//!
//! - Every response to a request with a valid key carries `X-RateLimit-Limit`,
//!   `X-RateLimit-Remaining` and `X-RateLimit-Reset` (unix epoch seconds): the handler's own
//!   answers (`200`, `400`, `404`, `405`), a `429` and (see below) a `503`.
//! - `429` (over the key's quota) adds `Retry-After`: seconds until the key's window ends.
//! - `503` `rate_limiter_unavailable` (Redis only): Redis did not answer in time or could not be
//!   reached, and the failure policy is `closed`. It is not a `429`: the key may well be within
//!   its quota, the limiter just cannot tell, so the fault is the server's, not the client's.
//!   Nothing was counted; the rate-limit headers are those of the denial (`X-RateLimit-Remaining:
//!   0`) and `Retry-After` is `1`, not the time to the window's end: the limiter tries Redis
//!   again within a second, so a retry then may well be decided normally. Under the `open` and
//!   `fallback` policies requests are served as usual (see `FAILURE_POLICY`).
//! - `503` `over_capacity` (the limiter tracks as many keys as it may and this key is new) is not
//!   counted; its headers come from a peek at the key's quota, so `X-RateLimit-Remaining` is
//!   what the key has left, and it adds `Retry-After`: seconds until that window ends. Should the
//!   peek fail too, the `503` goes out without headers.
//! - `401` `missing_key` (a missing, empty, repeated or non-ASCII `X-API-Key`) and `400`
//!   `invalid_key` (a key longer than [`ratewindow::MAX_KEY_LEN`] bytes) carry none: no key was
//!   counted, so there is no remaining count to report. Nor does a `500` when the limiter itself
//!   fails, or a `503` `rate_limiter_unavailable` for a Redis error the failure policy does not
//!   decide.
//!
//! With `HEADERS=ietf` the same responses carry `RateLimit-Policy` and `RateLimit` instead (e.g.
//! `"per-minute";q=100;w=60` and `"per-minute";r=99;t=23`), with `HEADERS=both` all five;
//! `Retry-After` is the same in every style.
//!
//! The rate limit's own answers (`401`, `400` `invalid_key`, `429`, `503`, `500`) have an
//! `application/problem+json` body (RFC 9457): `type`, `title`, `status`, `detail` (for people),
//! `code` (for programs, as above) and, on a `429`, `violated-policies` (e.g. `["per-minute"]`).
//! The handlers' own errors (`400`, `404`, `405`) keep the seed API's
//! `{"error": {"code": ..., "message": ...}}`.
//!
//! An API key is the `X-API-Key` value as it arrives: printable ASCII, spaces and tabs inside
//! it included; HTTP drops the whitespace around a header value, so `k` and `k ` are one key.
//!
//! Each API key gets its own in-memory workspace of seeded campaigns: `cmp_abc123` and
//! `cmp_xyz789` can be started, `cmp_done` is completed and `cmp_nosteps` has no sequence steps.
//! (Workspaces stay per process even with Redis: only the rate limits are shared.)
//!
//! ```text
//! cargo run --release --features tower --example server
//! RATE_LIMIT=10/5s BIND=0.0.0.0:3000 cargo run --release --features tower --example server
//! HEADERS=both cargo run --release --features tower --example server
//!
//! # Counters in Redis, shared by every instance that uses it:
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release --features redis,tower --example server
//! # ... or in a Redis Cluster, through any of its nodes:
//! REDIS_CLUSTER_URLS=redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002 \
//!     cargo run --release --features redis,tower --example server
//!
//! curl -i -X POST http://127.0.0.1:8080/api/v1/campaigns/cmp_abc123/start \
//!      -H "X-API-Key: otr_your_key"
//! ```
//!
//! Environment:
//! - `BIND`: the address to listen on, `host:port` (default `127.0.0.1:8080`).
//! - `RATE_LIMIT`: the quota per API key as `<limit>/<window>` with a window unit of `ms`, `s`,
//!   `m`, `h` or `d` (default `100/1m`; e.g. `10/5s`, `1000/1h`).
//! - `PLANS`: other plans than the default, as comma-separated `<name>=<limit>/<window>` with
//!   `RATE_LIMIT`'s window (e.g. `pro=1000/1m,team=500/1m`; default none). A key starting with
//!   `<name>_` is on plan `<name>`, any other on `free` (`RATE_LIMIT`). A key's count is the same
//!   whatever its plan, and the policy names in the headers and the `429` body start with the
//!   plan's name (`pro-per-minute`).
//! - `START_RATE_LIMIT`: a quota for `POST .../start` of its own, counted apart from the other
//!   requests (e.g. `10/1m`; default none: starts count against the key's plan). Its policy
//!   name is `start-per-minute`; on Redis its counters are under `<REDIS_PREFIX>:start`.
//! - `START_FAILURE_LIMIT`: a stricter quota that only failed starts count against: a
//!   `POST .../start` answered `4xx` (a campaign that cannot start), with counters of its own
//!   (e.g. `5/1m`; default none). Each start is charged to it on the way in and released once
//!   it succeeds; over it, starts get `429` (`start-failures-per-minute`) until the window ends.
//! - `SHADOW`: `1` to run every quota in shadow (a dry run): requests over a quota are served
//!   as if allowed, with the headers the `429` would have had, and counted apart in
//!   `GET /metrics` (`outcome="shadow_denied"`); default `0`.
//! - `HEADERS`: which rate-limit headers to send: `xratelimit` (default: `X-RateLimit-Limit`,
//!   `-Remaining` and `-Reset`), `ietf` (`RateLimit-Policy` and `RateLimit`, IETF draft 10) or
//!   `both`; also `github` for `X-RateLimit-Used` and `X-RateLimit-Resource`, and combinations
//!   joined by `+` (see [`ratewindow::http::HeaderStyle`]).
//! - `HEADER_READ_TIMEOUT_SECS`: how long a connection may take to send a request's headers,
//!   in seconds (default 10, at most 3600). A connection that has not sent a whole request head
//!   by then (one that trickles header lines, or sits idle between requests) is closed.
//! - `MAX_CONNECTIONS`: how many connections are served at once (default 1024, at most
//!   1000000). Further connections wait in the listen queue, unanswered, until one closes.
//! - `REDIS_URL`: keep the counters in this Redis server, e.g. `redis://127.0.0.1:6379` or
//!   `redis://:password@host:6379/0` (needs the `redis` feature). Unset or empty: in memory.
//! - `REDIS_CLUSTER_URLS`: keep the counters in a Redis Cluster instead, given as a
//!   comma-separated list of node URLs (any reachable node will do). Not with `REDIS_URL`.
//!
//! With `REDIS_URL` or `REDIS_CLUSTER_URLS` only:
//! - `FAILURE_POLICY`: what to answer when Redis times out or cannot be reached (default
//!   `open`): `open` serves the request uncounted; `closed` answers `503`
//!   `rate_limiter_unavailable`; `fallback` decides with a local in-memory limiter that allows
//!   each instance its share of the quota.
//! - `FALLBACK_INSTANCES`: with `fallback`, how many instances share the quota (default 1): each
//!   instance admits `limit / FALLBACK_INSTANCES` requests per window while Redis is down.
//! - `REDIS_PREFIX`: the prefix of every Redis key (default `ratewindow`); instances share
//!   counters only under the same prefix. No `{` or `}`.
//! - `REDIS_TIMEOUT_MS`: how long one decision may wait for Redis before the failure policy
//!   answers, in milliseconds (default 50).
//! - `REDIS_TIME`: `1` to decide windows by Redis's `TIME` instead of this host's clock, so that
//!   instances with skewed clocks agree on windows (default `0`).
//! - `REDIS_MAX_CLOCK_SKEW_MS`: with the local clock, how far apart the instances' clocks may be
//!   (default 1000): counters outlive their window by this much, so that no window admits more
//!   than its limit while the clocks stay this close.
//!
//! Requests decided by the failure policy are counted, and the count is logged at most once per
//! second (`redis unavailable: N requests decided by the failure policy ...`); API keys are never
//! logged.
//!
//! Invalid configuration, an unreachable Redis at start-up, or `REDIS_URL` in a build without the
//! `redis` feature are reported on stderr with exit code 1. Ctrl-C (or SIGTERM) stops the server
//! after in-flight requests finish.

mod app;
mod backend;
mod campaigns;
mod config;
mod serve;

use std::process::ExitCode;

use config::{Backend, Settings};

pub use app::{app, app_with_metrics};
pub use backend::Limiters;
#[cfg(feature = "redis")]
pub use backend::unreported_policy_decisions;
pub use campaigns::utc_timestamp;
#[cfg(feature = "redis")]
pub use config::VARIABLES;
pub use config::redacted;
pub use serve::{Limits, serve};

/// Workspaces kept at once; the least recently used one goes when a new key needs room.
const MAX_WORKSPACES: usize = 10_000;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("server: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let settings = Settings::from_env()?;
    let ignored = settings.redis.ignored_with(&settings.backend);
    if !ignored.is_empty() {
        eprintln!(
            "server: note: {} ignored (see the docs)",
            ignored.join(", ")
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the async runtime: {err}"))?;
    runtime.block_on(async {
        let Settings {
            quotas,
            bind,
            addrs,
            style,
            limits,
            backend,
            redis,
            ..
        } = &settings;
        // Before listening: a server that cannot reach Redis does not start.
        let (limiters, backend_metrics, description) = match backend {
            Backend::Memory => (
                backend::memory(quotas).map_err(|err| match err {
                    Ok(err) => settings.bad_rate_limit(err),
                    Err(message) => message,
                })?,
                None,
                "memory".to_owned(),
            ),
            Backend::Redis(target) => {
                let (limiters, metrics) = backend::redis(target, quotas, redis).await?;
                tokio::spawn(backend::report_policy_decisions(redis.policy));
                (limiters, Some(metrics), format!("{target}, {redis}"))
            }
        };
        let listener = tokio::net::TcpListener::bind(addrs.as_slice())
            .await
            .map_err(|err| format!("cannot listen on {bind}: {err}"))?;
        let local = listener
            .local_addr()
            .map_err(|err| format!("cannot read the listening address: {err}"))?;
        eprintln!(
            "ratewindow demo server listening on http://{local} \
             (rate limit {quotas}, backend: {description}, headers: {style})"
        );
        let app = app_with_metrics(limiters, MAX_WORKSPACES, *style, backend_metrics);
        serve(listener, app, *limits, serve::shutdown_signal()).await;
        Ok(())
    })
}
