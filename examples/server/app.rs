//! The router: the campaigns API's routes and handlers behind the rate-limit layer, and
//! `GET /metrics` (the layer's decision counts, and on Redis its round trips) in front of it.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use ratewindow::DynRateLimiter;
use ratewindow::http::HeaderStyle;
use ratewindow::tower::{
    DecisionCounters, HeaderKey, Outcome, Plans, RateLimitLayer, ResponseHead,
};
use serde_json::json;

use super::backend::{Limiters, count_policy_decisions};
use super::campaigns::{CampaignError, Workspaces, unix_now_secs, utc_timestamp};
use super::config::Quotas;

const API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The router: the rate-limit layer in front of every route but `/metrics`, unknown ones
/// included, writing its headers in `style`, its own answers the layer's default
/// `application/problem+json` documents, and counting every decision (for `GET /metrics`) and,
/// for the log, those a failure policy makes. `GET /metrics` itself is outside the layer:
/// never rate limited, no key needed, not counted.
pub fn app(limiter: Arc<dyn DynRateLimiter>, max_workspaces: usize, style: HeaderStyle) -> Router {
    app_with_metrics(Limiters::single(limiter), max_workspaces, style, None)
}

/// Metrics of the backend's own, written by `GET /metrics` after the decision counts: the
/// Redis backend's round trips.
pub type BackendMetrics = Arc<dyn Fn(&mut String) + Send + Sync>;

/// [`app`] on `limiters`, whose `GET /metrics` also writes `backend_metrics`.
pub fn app_with_metrics(
    limiters: Limiters,
    max_workspaces: usize,
    style: HeaderStyle,
    backend_metrics: Option<BackendMetrics>,
) -> Router {
    let state = AppState {
        workspaces: Arc::new(Workspaces::new(max_workspaces)),
    };
    let counters = DecisionCounters::new();
    let counting = counters.clone();
    // The limiter of each request: `/start`'s for `POST .../start` if it has one, else the
    // plan `<name>` for a key starting with `<name>_`, else the default plan.
    let default: Arc<str> = Arc::from(Quotas::DEFAULT_PLAN);
    let start: Arc<str> = Arc::from(Quotas::START);
    let has_start = limiters.start.is_some();
    let mut plans = Plans::new(&*default, limiters.default);
    let mut prefixes: Vec<(String, Arc<str>)> = Vec::new();
    for (name, limiter) in limiters.plans {
        prefixes.push((format!("{name}_"), Arc::from(name.as_str())));
        plans = plans.plan(name, limiter);
    }
    if let Some(limiter) = limiters.start {
        plans = plans.plan(&*start, limiter);
    }
    let plans = plans.by_request(move |request: &Request<Body>, key: &str| {
        if has_start && request.method() == Method::POST && request.uri().path().ends_with("/start")
        {
            return Arc::clone(&start);
        }
        let plan = prefixes
            .iter()
            .find(|(prefix, _)| key.starts_with(prefix.as_str()));
        Arc::clone(plan.map_or(&default, |(_, name)| name))
    });
    let observe = move |outcome: &Outcome| {
        counting.observe(outcome);
        count_policy_decisions(outcome);
    };
    // Failed starts (a `4xx`: a campaign that cannot start) count against a quota of their
    // own, inside the rate limit: a start is charged to both, and released from this one
    // when it succeeds.
    let mut start_route = post(start_campaign);
    if let Some(failures) = limiters.start_failures {
        start_route = start_route.layer(
            RateLimitLayer::new(failures, HeaderKey::new(API_KEY))
                .header_style(style)
                .charge_if(|response: &ResponseHead<'_>| response.status().is_client_error())
                .on_decision(observe.clone()),
        );
    }
    let rate_limit = RateLimitLayer::new(plans, HeaderKey::new(API_KEY))
        .header_style(style)
        .on_decision(observe);
    let metrics_route =
        get(move || metrics(counters.clone(), backend_metrics.clone())).fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            )
        });
    let api = Router::new()
        .route("/api/v1/campaigns/{id}", get(get_campaign))
        .route("/api/v1/campaigns/{id}/start", start_route)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "Route not found") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            )
        })
        // `layer`, not `route_layer`: the fallbacks are rate limited too.
        .layer(rate_limit)
        .with_state(state);
    // Merged after the layer, so the layer is not in front of it.
    Router::new().route("/metrics", metrics_route).merge(api)
}

/// `GET /metrics`: the decision counts in the Prometheus text format, then the backend's.
async fn metrics(counters: DecisionCounters, backend_metrics: Option<BackendMetrics>) -> Response {
    let mut text = String::new();
    // Writing to a `String` cannot fail.
    let _ = counters.write_prometheus(&mut text);
    if let Some(write) = backend_metrics {
        write(&mut text);
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

#[derive(Clone)]
struct AppState {
    workspaces: Arc<Workspaces>,
}

/// The caller's API key, for the handlers: the layer has already refused any request without
/// exactly one non-empty `X-API-Key` of printable ASCII (spaces and tabs inside it included),
/// and any key the limiter refuses (longer than [`ratewindow::MAX_KEY_LEN`] bytes).
struct ApiKey(String);

impl<S: Send + Sync> FromRequestParts<S> for ApiKey {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(API_KEY).iter();
        match (values.next().map(HeaderValue::to_str), values.next()) {
            (Some(Ok(key)), None) if !key.is_empty() => Ok(ApiKey(key.to_owned())),
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
