//! A demo API server rate limited per API key with ratewindow.
//!
//! It serves a small campaigns API (`POST /api/v1/campaigns/{id}/start`,
//! `GET /api/v1/campaigns/{id}`) and enforces a fixed-window quota per `X-API-Key`. Every
//! request with a valid key within its quota is charged to that key, whatever the handler
//! answers. Over the limit the answer is `429` with `Retry-After` and the handler does not run.
//! The rate limit is the crate's tower layer, so the example needs the `tower` feature.
//!
//! The counters live in memory by default, or in Redis (the `redis` feature), where every
//! instance of the server that uses the same Redis and key prefix shares them: the quota is
//! then exact across all instances.
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
//! - `HEADERS`: which rate-limit headers to send: `xratelimit` (default: `X-RateLimit-Limit`,
//!   `-Remaining` and `-Reset`), `ietf` (`RateLimit-Policy` and `RateLimit`, IETF draft 10) or
//!   `both`; also `github` for `X-RateLimit-Used` and `X-RateLimit-Resource`, and combinations
//!   joined by `+` (see [`ratewindow::http::HeaderStyle`]).
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

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use ratewindow::http::{
    HeaderStyle, RATELIMIT, RATELIMIT_POLICY, RETRY_AFTER, X_RATELIMIT_LIMIT,
    X_RATELIMIT_REMAINING, X_RATELIMIT_USED, policy_names, write_headers,
};
use ratewindow::tower::{HeaderKey, RateLimitLayer};
use ratewindow::{DecidedBy, Decision, DynRateLimiter, Error, MemoryLimiter, Quota, RateLimiter};
use serde_json::{Value, json};

const DEFAULT_BIND: &str = "127.0.0.1:8080";
const DEFAULT_RATE_LIMIT: &str = "100/1m";
const DEFAULT_HEADERS: &str = "xratelimit";
const DEFAULT_REDIS_PREFIX: &str = "ratewindow";
const DEFAULT_REDIS_TIMEOUT_MS: u64 = 50;
const DEFAULT_REDIS_MAX_CLOCK_SKEW_MS: u64 = 1000;
/// How long start-up may take to connect to Redis and run a first (uncounted) decision.
#[cfg(feature = "redis")]
const REDIS_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Workspaces kept at once; the least recently used one goes when a new key needs room.
const MAX_WORKSPACES: usize = 10_000;

const API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The router: the rate-limit layer in front of every route, unknown ones included, writing
/// its headers in `style`.
pub fn app(limiter: Arc<dyn DynRateLimiter>, max_workspaces: usize, style: HeaderStyle) -> Router {
    let state = AppState {
        workspaces: Arc::new(Workspaces::new(max_workspaces)),
    };
    let limiter = CountingLimiter(limiter);
    let rate_limit =
        RateLimitLayer::new(limiter.clone(), HeaderKey::new(API_KEY)).header_style(style);
    let over_capacity = OverCapacity { limiter, style };
    Router::new()
        .route("/api/v1/campaigns/{id}", get(get_campaign))
        .route("/api/v1/campaigns/{id}/start", post(start_campaign))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "Route not found") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            )
        })
        // `layer`, not `route_layer`: the fallbacks are rate limited too. The last layer added
        // is the outermost: it sees the rate limit's own answers.
        .layer(rate_limit)
        .layer(middleware::from_fn_with_state(
            over_capacity,
            over_capacity_headers,
        ))
        .with_state(state)
}

#[derive(Clone)]
struct AppState {
    workspaces: Arc<Workspaces>,
}

/// The backend chosen at start-up, counting the decisions its failure policy makes (Redis timed
/// out or was unreachable) for [`report_policy_decisions`].
#[derive(Clone)]
struct CountingLimiter(Arc<dyn DynRateLimiter>);

impl RateLimiter for CountingLimiter {
    async fn check_n(&self, key: &str, cost: u64) -> Result<Decision, Error> {
        let decision = self.0.check_n(key, cost).await?;
        if matches!(
            decision.decided_by(),
            DecidedBy::FailOpen | DecidedBy::FailClosed | DecidedBy::Fallback
        ) {
            // Counted, not logged: an outage would otherwise print a line per request.
            POLICY_DECISIONS.fetch_add(1, Ordering::Relaxed);
        }
        Ok(decision)
    }

    async fn peek(&self, key: &str) -> Result<Decision, Error> {
        self.0.peek(key).await
    }

    async fn reset(&self, key: &str) -> Result<(), Error> {
        self.0.reset(key).await
    }

    async fn refund(&self, key: &str, amount: u64) -> Result<(), Error> {
        self.0.refund(key, amount).await
    }
}

/// Requests decided by a Redis limiter's failure policy (Redis timed out or was unreachable)
/// since the server last reported them; see [`report_policy_decisions`].
static POLICY_DECISIONS: AtomicU64 = AtomicU64::new(0);

/// Requests decided by the failure policy and not reported yet.
pub fn unreported_policy_decisions() -> u64 {
    POLICY_DECISIONS.load(Ordering::Relaxed)
}

/// What [`over_capacity_headers`] needs.
#[derive(Clone)]
struct OverCapacity {
    limiter: CountingLimiter,
    style: HeaderStyle,
}

/// Completes the layer's `503` `over_capacity` (the limiter holds as many keys as it may and
/// this key is new) with the key's rate-limit headers, so that it too carries them as the
/// contract asks of every response. The layer sends only `Retry-After` with it; its other 503s
/// differ: a fail-closed one already has the headers, a backend error has no `Retry-After`.
///
/// The headers come from a peek, which counts nothing; should it fail too, the `503` goes out
/// as the layer wrote it.
async fn over_capacity_headers(
    State(over): State<OverCapacity>,
    request: Request,
    next: Next,
) -> Response {
    // The layer refuses anything but one visible-ASCII value before a 503 can happen.
    let key = request.headers().get(API_KEY).cloned();
    let mut response = next.run(request).await;
    let headers = response.headers();
    let is_over_capacity = response.status() == StatusCode::SERVICE_UNAVAILABLE
        && headers.contains_key(RETRY_AFTER)
        && ![X_RATELIMIT_LIMIT, X_RATELIMIT_USED, RATELIMIT]
            .iter()
            .any(|name| headers.contains_key(name));
    if !is_over_capacity {
        return response;
    }
    let Some(key) = key.as_ref().and_then(|value| value.to_str().ok()) else {
        return response;
    };
    if let Ok(peek) = over.limiter.peek(key).await {
        write_uncharged_headers(&peek, over.style, response.headers_mut());
    }
    response
}

/// The rate-limit headers of a request that was not charged, from a peek at its key (whose
/// `Retry-After`, if any, the layer has already set from the same window end).
///
/// A peek reports `remaining` (and `used`) as if the request had been charged; this one was
/// not, so an admissible request is given back. (A denying peek already reports what is left.)
fn write_uncharged_headers(peek: &Decision, style: HeaderStyle, headers: &mut HeaderMap) {
    let mut peeked = HeaderMap::new();
    write_headers(peek, style, &mut peeked);
    peeked.remove(RETRY_AFTER);
    if peek.is_allowed() {
        if style.has_x_ratelimit() {
            peeked.insert(
                X_RATELIMIT_REMAINING,
                HeaderValue::from(peek.remaining().saturating_add(1)),
            );
        }
        if style.has_github_extras() {
            let used = peek.binding().used().saturating_sub(1);
            peeked.insert(X_RATELIMIT_USED, HeaderValue::from(used));
        }
        if peeked.contains_key(RATELIMIT_POLICY) {
            // `"<policy>";r=<remaining>;t=<seconds to reset>` for each quota (draft 10).
            let now_ms = peek.decided_at_ms();
            let members: Vec<String> = peek
                .quotas()
                .iter()
                .zip(policy_names(peek))
                .map(|(quota, name)| {
                    let to_reset = quota.window_end_ms().saturating_sub(now_ms);
                    format!(
                        "\"{name}\";r={};t={}",
                        quota.remaining().saturating_add(1),
                        to_reset.div_ceil(1000).max(1)
                    )
                })
                .collect();
            if let Ok(value) = HeaderValue::from_str(&members.join(", ")) {
                peeked.insert(RATELIMIT, value);
            }
        }
    }
    for (name, value) in &peeked {
        headers.insert(name, value.clone());
    }
}

/// The caller's API key, for the handlers: the layer has already refused any request without
/// exactly one non-empty, visible-ASCII `X-API-Key`, and any key the limiter refuses (longer
/// than [`ratewindow::MAX_KEY_LEN`] bytes).
struct ApiKey(Arc<str>);

impl<S: Send + Sync> FromRequestParts<S> for ApiKey {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(API_KEY).iter();
        match (values.next().map(HeaderValue::to_str), values.next()) {
            (Some(Ok(key)), None) if !key.is_empty() => Ok(ApiKey(Arc::from(key))),
            // Only without the layer in front.
            _ => Err(error(
                StatusCode::UNAUTHORIZED,
                "missing_key",
                "Send exactly one X-API-Key header",
            )),
        }
    }
}

/// A JSON error in the seed API's shape, `{"error": {"code": ..., "message": ...}}`: the
/// handlers' and fallbacks' answers. (The rate limit's own are `application/problem+json`.)
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "error": { "code": code, "message": message } });
    (status, Json(body)).into_response()
}

async fn get_campaign(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return invalid_id();
    };
    let found = state.workspaces.with(&key, |workspace| {
        workspace.find(&id).map(|campaign| campaign.to_json())
    });
    match found {
        Some(campaign) => Json(json!({ "data": campaign })).into_response(),
        None => CampaignError::NotFound.into_response(),
    }
}

async fn start_campaign(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return invalid_id();
    };
    let now = utc_timestamp(unix_now_secs());
    match state
        .workspaces
        .with(&key, |workspace| workspace.start(&id, now))
    {
        Ok(campaign) => Json(json!({ "data": campaign })).into_response(),
        Err(err) => err.into_response(),
    }
}

fn invalid_id() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_campaign_id",
        "Invalid campaign id",
    )
}

/// Per-key workspaces, at most `max` of them; the least recently used is evicted for a new key.
///
/// Keys are held as received; the limiter has already refused any longer than
/// [`ratewindow::MAX_KEY_LEN`], so memory stays bounded by `max` workspaces of bounded size.
struct Workspaces {
    max: usize,
    lru: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    tick: u64,
    by_key: HashMap<Arc<str>, (u64, Workspace)>,
    by_use: BTreeMap<u64, Arc<str>>,
}

impl Workspaces {
    /// Room for `max` workspaces (at least 1).
    fn new(max: usize) -> Workspaces {
        Workspaces {
            max: max.max(1),
            lru: Mutex::default(),
        }
    }

    /// Runs `f` on `key`'s workspace, seeding it first if `key` has none.
    fn with<R>(&self, key: &Arc<str>, f: impl FnOnce(&mut Workspace) -> R) -> R {
        let mut guard = self.lock();
        let lru = &mut *guard;
        lru.tick += 1;
        let tick = lru.tick;
        if let Some((last_used, workspace)) = lru.by_key.get_mut(&**key) {
            lru.by_use.remove(last_used);
            *last_used = tick;
            lru.by_use.insert(tick, Arc::clone(key));
            return f(workspace);
        }
        if lru.by_key.len() >= self.max {
            if let Some((_, evicted)) = lru.by_use.pop_first() {
                lru.by_key.remove(&evicted);
            }
        }
        lru.by_use.insert(tick, Arc::clone(key));
        let (_, workspace) = lru
            .by_key
            .entry(Arc::clone(key))
            .or_insert_with(|| (tick, Workspace::seeded()));
        f(workspace)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // The critical sections cannot panic midway, so a poisoned lock still holds sound data.
        self.lru.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Draft,
    Paused,
    Active,
    Completed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Paused => "paused",
            Status::Active => "active",
            Status::Completed => "completed",
        }
    }
}

struct Campaign {
    id: &'static str,
    name: &'static str,
    status: Status,
    sequence_steps: u32,
    leads_enrolled: u32,
    email_accounts: u32,
    created_at: &'static str,
    started_at: Option<String>,
}

impl Campaign {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "status": self.status.as_str(),
            "sequenceSteps": self.sequence_steps,
            "leadsEnrolled": self.leads_enrolled,
            "emailAccounts": self.email_accounts,
            "createdAt": self.created_at,
            "startedAt": self.started_at,
        })
    }
}

struct Workspace {
    campaigns: Vec<Campaign>,
}

impl Workspace {
    fn seeded() -> Workspace {
        let campaign =
            |id, name, status, sequence_steps, leads_enrolled, email_accounts| Campaign {
                id,
                name,
                status,
                sequence_steps,
                leads_enrolled,
                email_accounts,
                created_at: "2025-01-10T14:30:00",
                started_at: match status {
                    Status::Paused | Status::Completed => Some("2025-01-12T09:00:00".to_owned()),
                    Status::Draft | Status::Active => None,
                },
            };
        Workspace {
            campaigns: vec![
                campaign("cmp_abc123", "Q1 Outreach", Status::Draft, 3, 250, 2),
                campaign("cmp_xyz789", "Partner Follow-up", Status::Paused, 2, 80, 1),
                campaign("cmp_done", "Holiday Promo", Status::Completed, 4, 500, 3),
                campaign("cmp_nosteps", "Untitled Draft", Status::Draft, 0, 40, 1),
            ],
        }
    }

    fn find(&self, id: &str) -> Option<&Campaign> {
        self.campaigns.iter().find(|c| c.id == id)
    }

    /// Moves a draft or paused campaign that meets the prerequisites to active.
    fn start(&mut self, id: &str, now: String) -> Result<Value, CampaignError> {
        let campaign = self
            .campaigns
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or(CampaignError::NotFound)?;
        match campaign.status {
            Status::Active => return Err(CampaignError::AlreadyActive),
            Status::Completed => return Err(CampaignError::Completed),
            Status::Draft | Status::Paused => {}
        }
        if campaign.sequence_steps == 0 {
            return Err(CampaignError::NoSequenceSteps);
        }
        if campaign.leads_enrolled == 0 {
            return Err(CampaignError::NoLeads);
        }
        if campaign.email_accounts == 0 {
            return Err(CampaignError::NoEmailAccounts);
        }
        campaign.status = Status::Active;
        campaign.started_at = Some(now);
        Ok(campaign.to_json())
    }
}

enum CampaignError {
    NotFound,
    AlreadyActive,
    Completed,
    NoSequenceSteps,
    NoLeads,
    NoEmailAccounts,
}

impl IntoResponse for CampaignError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            CampaignError::NotFound => (
                StatusCode::NOT_FOUND,
                "campaign_not_found",
                "Campaign not found",
            ),
            CampaignError::AlreadyActive => (
                StatusCode::BAD_REQUEST,
                "campaign_already_active",
                "Campaign is already active",
            ),
            CampaignError::Completed => (
                StatusCode::BAD_REQUEST,
                "campaign_completed",
                "Cannot start a completed campaign",
            ),
            CampaignError::NoSequenceSteps => (
                StatusCode::BAD_REQUEST,
                "no_sequence_steps",
                "Campaign must have at least one sequence step",
            ),
            CampaignError::NoLeads => (
                StatusCode::BAD_REQUEST,
                "no_leads",
                "Campaign must have leads enrolled",
            ),
            CampaignError::NoEmailAccounts => (
                StatusCode::BAD_REQUEST,
                "no_email_accounts",
                "Campaign must have at least one email account assigned",
            ),
        };
        error(status, code, message)
    }
}

fn unix_now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `unix_secs` as a UTC ISO-8601 date-time without offset, e.g. `2025-01-15T09:00:00`.
pub fn utc_timestamp(unix_secs: u64) -> String {
    let (year, month, day) = civil_from_days(unix_secs / 86_400);
    let secs = unix_secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, restricted to days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift to eras of 400 years starting on 0000-03-01, so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

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
    let rate_limit = env_or("RATE_LIMIT", DEFAULT_RATE_LIMIT)?;
    let bad_rate_limit = |err: Error| format!("RATE_LIMIT={rate_limit:?}: {err}");
    let quota: Quota = rate_limit.parse().map_err(bad_rate_limit)?;
    let bind = env_or("BIND", DEFAULT_BIND)?;
    let addrs: Vec<SocketAddr> = bind
        .to_socket_addrs()
        .map_err(|err| format!("BIND={bind:?}: {err} (expected host:port, e.g. {DEFAULT_BIND})"))?
        .collect();
    let headers = env_or("HEADERS", DEFAULT_HEADERS)?;
    let style: HeaderStyle = headers
        .parse()
        .map_err(|err| format!("HEADERS={headers:?}: {err}"))?;
    let backend = Backend::from_env()?;
    // Read (and so checked) whatever the backend, so that a typo never goes unnoticed.
    let redis = RedisSettings::from_env()?;
    let ignored = redis.ignored_with(&backend);
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
        // Before listening: a server that cannot reach Redis does not start.
        let (limiter, description) = match &backend {
            Backend::Memory => (
                memory_backend(quota).map_err(bad_rate_limit)?,
                "memory".to_owned(),
            ),
            Backend::Redis(target) => {
                let limiter = redis_backend(target, quota, &redis).await?;
                tokio::spawn(report_policy_decisions(redis.policy));
                (limiter, format!("{target}, {redis}"))
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
             (rate limit {quota} per API key, backend: {description}, headers: {style})"
        );
        axum::serve(listener, app(limiter, MAX_WORKSPACES, style))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|err| format!("server error: {err}"))
    })
}

/// The in-process backend.
fn memory_backend(quota: Quota) -> Result<Arc<dyn DynRateLimiter>, Error> {
    Ok(Arc::new(MemoryLimiter::new(quota)?))
}

/// A limiter on `target` configured by `settings`, once Redis has answered a first
/// (uncounted) decision.
#[cfg(feature = "redis")]
async fn redis_backend(
    target: &RedisTarget,
    quota: Quota,
    settings: &RedisSettings,
) -> Result<Arc<dyn DynRateLimiter>, String> {
    use ratewindow::{FailurePolicy, RedisConnection, RedisLimiter};

    let connect = async {
        match target {
            RedisTarget::Single(url) => RedisConnection::connect(url).await,
            RedisTarget::Cluster(urls) => {
                let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
                RedisConnection::connect_cluster_with_timeout(&urls, settings.timeout).await
            }
        }
    };
    // The messages name the target with its password masked (Redis errors do not repeat it).
    let at = target.addresses();
    eprintln!("server: connecting to {at}");
    // The connection retries by itself for a few seconds (Redis may be starting too).
    let connection = tokio::time::timeout(REDIS_STARTUP_TIMEOUT, connect)
        .await
        .map_err(|_| format!("cannot connect to {at}: no answer within {REDIS_STARTUP_TIMEOUT:?}"))?
        .map_err(|err| match err {
            // A URL that does not parse: say which variable holds it.
            Error::InvalidConfig { .. } => {
                format!("{}={:?}: {err}", target.variable(), target.urls())
            }
            _ => format!("cannot connect to {at}: {err}"),
        })?;

    let mut builder = RedisLimiter::builder(quota)
        .prefix(settings.prefix.as_str())
        .timeout(settings.timeout)
        .max_clock_skew(settings.max_clock_skew);
    if settings.redis_time {
        builder = builder.redis_time();
    }
    let invalid = |err: Error| match err {
        Error::InvalidConfig { .. } => format!("REDIS_PREFIX={:?}: {err}", settings.prefix),
        _ => format!("cannot configure the Redis limiter: {err}"),
    };
    // Connected is not yet usable (a cluster node given as REDIS_URL, a missing permission, no
    // TIME...): one peek, which counts nothing, must be decided by Redis itself, so this limiter
    // reports the error that the failure policy would otherwise hide.
    let probe = builder
        .clone()
        .timeout(REDIS_STARTUP_TIMEOUT)
        .failure_policy(FailurePolicy::ReturnError)
        .build(connection.clone())
        .map_err(invalid)?;
    probe
        .peek("ratewindow-demo-startup-probe")
        .await
        .map_err(|err| format!("cannot use {at}: {err}"))?;

    let policy = match settings.policy {
        Policy::Open => FailurePolicy::FailOpen,
        Policy::Closed => FailurePolicy::FailClosed,
        Policy::Fallback { instances } => FailurePolicy::Fallback { instances },
    };
    let limiter = builder
        .failure_policy(policy)
        .build(connection)
        .map_err(invalid)?;
    Ok(Arc::new(limiter))
}

/// Without the `redis` feature there is no Redis backend to build.
#[cfg(not(feature = "redis"))]
async fn redis_backend(
    target: &RedisTarget,
    _quota: Quota,
    _settings: &RedisSettings,
) -> Result<Arc<dyn DynRateLimiter>, String> {
    Err(format!(
        "{} is set, but this build has no Redis backend: rebuild with --features redis,tower, e.g. \
         `REDIS_URL=redis://127.0.0.1:6379 cargo run --release --features redis,tower --example server`",
        target.variable()
    ))
}

/// Logs, at most once a second, how many requests the failure policy decided since the last
/// report. Never a key: only the count.
async fn report_policy_decisions(policy: Policy) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let count = POLICY_DECISIONS.swap(0, Ordering::Relaxed);
        if count > 0 {
            let requests = if count == 1 { "request" } else { "requests" };
            eprintln!(
                "redis unavailable: {count} {requests} decided by the failure policy \
                 ({policy}) in the last second"
            );
        }
    }
}

/// Where the counters live.
enum Backend {
    Memory,
    Redis(RedisTarget),
}

/// Which Redis, from `REDIS_URL` or `REDIS_CLUSTER_URLS`.
enum RedisTarget {
    Single(String),
    Cluster(Vec<String>),
}

impl Backend {
    /// `REDIS_URL` or `REDIS_CLUSTER_URLS` (unset or empty: neither), at most one of them.
    fn from_env() -> Result<Backend, String> {
        let url = env_or("REDIS_URL", "")?;
        let cluster = env_or("REDIS_CLUSTER_URLS", "")?;
        match (url.trim(), cluster.trim()) {
            ("", "") => Ok(Backend::Memory),
            (url, "") => Ok(Backend::Redis(RedisTarget::Single(url.to_owned()))),
            ("", urls) => {
                let urls: Vec<String> = urls.split(',').map(|u| u.trim().to_owned()).collect();
                if urls.iter().any(String::is_empty) {
                    let shown: Vec<String> = urls.iter().map(|u| redacted(u)).collect();
                    return Err(format!(
                        "REDIS_CLUSTER_URLS={:?} has an empty entry (expected comma-separated \
                         node URLs, e.g. redis://127.0.0.1:7000,redis://127.0.0.1:7001)",
                        shown.join(",")
                    ));
                }
                Ok(Backend::Redis(RedisTarget::Cluster(urls)))
            }
            _ => Err("REDIS_URL and REDIS_CLUSTER_URLS are both set; set one of them".to_owned()),
        }
    }
}

impl RedisTarget {
    /// The variable it came from.
    fn variable(&self) -> &'static str {
        match self {
            RedisTarget::Single(_) => "REDIS_URL",
            RedisTarget::Cluster(_) => "REDIS_CLUSTER_URLS",
        }
    }
}

impl RedisTarget {
    /// The variable's value as it was read, passwords masked.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn urls(&self) -> String {
        match self {
            RedisTarget::Single(url) => redacted(url),
            RedisTarget::Cluster(urls) => {
                let shown: Vec<String> = urls.iter().map(|u| redacted(u)).collect();
                shown.join(",")
            }
        }
    }

    /// `Redis at <url>` or `the Redis Cluster at <urls>`, passwords masked.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn addresses(&self) -> String {
        match self {
            RedisTarget::Single(url) => format!("Redis at {}", redacted(url)),
            RedisTarget::Cluster(urls) => {
                let shown: Vec<String> = urls.iter().map(|u| redacted(u)).collect();
                format!("the Redis Cluster at {}", shown.join(", "))
            }
        }
    }
}

impl std::fmt::Display for RedisTarget {
    /// `redis <url>` or `redis cluster (<n> nodes: <urls>)`, passwords masked.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisTarget::Single(url) => write!(f, "redis {}", redacted(url)),
            RedisTarget::Cluster(urls) => {
                let shown: Vec<String> = urls.iter().map(|u| redacted(u)).collect();
                write!(
                    f,
                    "redis cluster ({} nodes: {})",
                    urls.len(),
                    shown.join(", ")
                )
            }
        }
    }
}

/// `url` with its password masked, for logs and messages: `redis://user:***@host:6379/0`. A
/// user part without a password is masked whole (it may be a misplaced password), and so is the
/// value of a `pass`/`password` query parameter (`redis+unix:///tmp/redis.sock?pass=...`).
pub fn redacted(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    // Everything up to the last `@` is user information, whatever it contains: a password with
    // an unescaped `/`, `?` or `#` (why such a URL fails to parse) must not end the user part
    // early and be shown as a host or path.
    let (userinfo, after) = match rest.rsplit_once('@') {
        Some((userinfo, after)) => (Some(userinfo), after),
        None => (None, rest),
    };
    let host_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (host, tail) = after.split_at(host_end);
    let mut out = String::with_capacity(url.len());
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push_str("://");
    }
    if let Some(userinfo) = userinfo {
        match userinfo.split_once(':') {
            Some((user, _password)) => out.push_str(&format!("{user}:***")),
            None => out.push_str("***"),
        }
        out.push('@');
    }
    out.push_str(host);
    let tail = tail.split('#').next().unwrap_or_default();
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((name, _)) if name.to_ascii_lowercase().contains("pass") => {
                        format!("{name}=***")
                    }
                    _ => param.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

/// The Redis backend's settings, from the environment.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
struct RedisSettings {
    policy: Policy,
    prefix: String,
    timeout: Duration,
    redis_time: bool,
    max_clock_skew: Duration,
    /// Which of the Redis-only variables are set.
    set: Vec<&'static str>,
}

/// `FAILURE_POLICY` (and `FALLBACK_INSTANCES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    Open,
    Closed,
    Fallback { instances: u64 },
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::Open => f.write_str("open"),
            Policy::Closed => f.write_str("closed"),
            Policy::Fallback { instances: 1 } => f.write_str("fallback, 1 instance"),
            Policy::Fallback { instances } => write!(f, "fallback, {instances} instances"),
        }
    }
}

/// Every environment variable the server reads: the first [`GENERAL_VARIABLES`] for every
/// backend, then the Redis settings.
pub const VARIABLES: [&str; 11] = [
    "BIND",
    "RATE_LIMIT",
    "HEADERS",
    "REDIS_URL",
    "REDIS_CLUSTER_URLS",
    "FAILURE_POLICY",
    "FALLBACK_INSTANCES",
    "REDIS_PREFIX",
    "REDIS_TIMEOUT_MS",
    "REDIS_TIME",
    "REDIS_MAX_CLOCK_SKEW_MS",
];

/// How many of [`VARIABLES`] apply to every backend.
const GENERAL_VARIABLES: usize = 5;

impl RedisSettings {
    /// The variables that only tune the Redis backend (ignored without it).
    const VARIABLES: &'static [&'static str] = VARIABLES.split_at(GENERAL_VARIABLES).1;

    fn from_env() -> Result<RedisSettings, String> {
        let policy = env_or("FAILURE_POLICY", "open")?;
        let instances = env_or("FALLBACK_INSTANCES", "1")?;
        let instances = match instances.trim().parse::<u64>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(format!(
                    "FALLBACK_INSTANCES={instances:?}: expected how many instances share the \
                     quota, a whole number of at least 1"
                ));
            }
        };
        let policy = match policy.trim().to_ascii_lowercase().as_str() {
            "open" => Policy::Open,
            "closed" => Policy::Closed,
            "fallback" => Policy::Fallback { instances },
            _ => {
                return Err(format!(
                    "FAILURE_POLICY={policy:?}: expected open, closed or fallback"
                ));
            }
        };
        let prefix = env_or("REDIS_PREFIX", DEFAULT_REDIS_PREFIX)?;
        let timeout = env_or("REDIS_TIMEOUT_MS", &DEFAULT_REDIS_TIMEOUT_MS.to_string())?;
        let timeout = match timeout.trim().parse::<u64>() {
            Ok(ms) if ms >= 1 => Duration::from_millis(ms),
            _ => {
                return Err(format!(
                    "REDIS_TIMEOUT_MS={timeout:?}: expected a whole number of milliseconds, at \
                     least 1 (default {DEFAULT_REDIS_TIMEOUT_MS})"
                ));
            }
        };
        let redis_time = env_or("REDIS_TIME", "0")?;
        let redis_time = match redis_time.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "" | "0" | "false" | "no" | "off" => false,
            _ => {
                return Err(format!(
                    "REDIS_TIME={redis_time:?}: expected 1 (windows by Redis's TIME) or 0"
                ));
            }
        };
        let skew = env_or(
            "REDIS_MAX_CLOCK_SKEW_MS",
            &DEFAULT_REDIS_MAX_CLOCK_SKEW_MS.to_string(),
        )?;
        let max_clock_skew = match skew.trim().parse::<u64>() {
            Ok(ms) if ms <= 86_400_000 => Duration::from_millis(ms),
            _ => {
                return Err(format!(
                    "REDIS_MAX_CLOCK_SKEW_MS={skew:?}: expected a whole number of milliseconds, \
                     at most a day (default {DEFAULT_REDIS_MAX_CLOCK_SKEW_MS})"
                ));
            }
        };
        let set = Self::VARIABLES
            .iter()
            .copied()
            .filter(|name| std::env::var_os(name).is_some())
            .collect();
        Ok(RedisSettings {
            policy,
            prefix,
            timeout,
            redis_time,
            max_clock_skew,
            set,
        })
    }

    /// The Redis variables that are set but have no effect with `backend`.
    fn ignored_with(&self, backend: &Backend) -> Vec<&'static str> {
        self.set
            .iter()
            .copied()
            .filter(|&name| match backend {
                Backend::Memory => true,
                Backend::Redis(_) => {
                    name == "FALLBACK_INSTANCES" && !matches!(self.policy, Policy::Fallback { .. })
                }
            })
            .collect()
    }
}

impl std::fmt::Display for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "failure policy: {}, prefix {:?}, timeout {} ms, windows by ",
            self.policy,
            self.prefix,
            self.timeout.as_millis(),
        )?;
        if self.redis_time {
            f.write_str("Redis's TIME")
        } else {
            write!(
                f,
                "the local clock (clocks at most {} ms apart)",
                self.max_clock_skew.as_millis()
            )
        }
    }
}

fn env_or(name: &str, default: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(value) => Ok(value),
        Err(std::env::VarError::NotPresent) => Ok(default.to_owned()),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8")),
    }
}

async fn shutdown_signal() {
    // A signal that cannot be listened for must not stop the server: wait forever instead.
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    eprintln!("shutting down");
}
