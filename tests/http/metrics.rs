//! The demo server's `GET /metrics`: the rate-limit layer's decisions in the Prometheus text
//! format, counted exactly, and served outside the rate limit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use ratewindow::http::HeaderStyle;
use ratewindow::{DynRateLimiter, ManualClock, MemoryLimiter, Quota};
use tower::ServiceExt;

use super::demo_server::app;

const NOW_MS: u64 = 1_700_000_000_000;
const ABC: &str = "/api/v1/campaigns/cmp_abc123";
const ABC_START: &str = "/api/v1/campaigns/cmp_abc123/start";

/// The headers no answer of `/metrics` may carry: every style's rate-limit headers.
const RATE_LIMIT_HEADERS: [&str; 8] = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-used",
    "x-ratelimit-resource",
    "ratelimit",
    "ratelimit-policy",
    "retry-after",
];

fn demo(quota: &str) -> Router {
    let clock = ManualClock::at_millis(NOW_MS);
    let limiter: Arc<dyn DynRateLimiter> = Arc::new(
        MemoryLimiter::builder(quota.parse::<Quota>().unwrap())
            .clock(clock)
            .build()
            .unwrap(),
    );
    let style = HeaderStyle::x_ratelimit()
        .with_ietf(ratewindow::http::IetfDraft::Draft10)
        .with_github_extras();
    app(limiter, 10, style)
}

async fn send(
    app: &Router,
    method: Method,
    path: &str,
    key: Option<&str>,
) -> (StatusCode, HeaderMap, String) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

/// `GET /metrics`, checked to be a plain `200` without any rate-limit header.
async fn scrape(app: &Router, key: Option<&str>) -> String {
    let (status, headers, text) = send(app, Method::GET, "/metrics", key).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    for name in RATE_LIMIT_HEADERS {
        assert!(!headers.contains_key(name), "/metrics carries {name}");
    }
    text
}

/// The samples of a Prometheus text exposition, `"name{labels}"` → value, checking the format
/// on the way: every line a `# HELP`, a `# TYPE <name> counter` or a sample
/// `name{label="value"} <integer>` whose family's `# TYPE` came before it, each sample once.
fn parse(text: &str) -> BTreeMap<String, u64> {
    assert!(text.ends_with('\n'), "no final newline");
    let mut typed = BTreeSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            let (name, text) = help.split_once(' ').expect("HELP has a text");
            assert!(
                name.starts_with("ratewindow_") && !text.is_empty(),
                "{line}"
            );
            continue;
        }
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let (name, kind) = declared.split_once(' ').expect("TYPE has a kind");
            assert_eq!(kind, "counter", "{line}");
            assert!(typed.insert(name.to_owned()), "{name} declared twice");
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: u64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not an integer: {line}"));
        let (name, labels) = series.split_once('{').expect("a sample has labels");
        let labels = labels.strip_suffix('}').expect("labels are closed");
        let (label, quoted) = labels.split_once('=').expect("label=value");
        assert!(
            label.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{line}"
        );
        assert!(
            quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'),
            "{line}"
        );
        assert!(typed.contains(name), "{name} sampled before its # TYPE");
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "{series} twice"
        );
    }
    samples
}

#[tokio::test]
async fn metrics_count_the_layers_decisions_exactly() {
    let app = demo("3/1m");

    // Before any request: every series at 0, no policy named yet.
    let before = parse(&scrape(&app, None).await);
    assert_eq!(before["ratewindow_decisions_total{outcome=\"allowed\"}"], 0);
    assert!(before.values().all(|&count| count == 0), "{before:?}");
    assert!(
        !before
            .keys()
            .any(|k| k.starts_with("ratewindow_denied_total"))
    );

    // Key a: three allowed (whatever the handler answers), then two denied.
    for path in [ABC, ABC_START, "/no/such/route", ABC, ABC] {
        send(&app, Method::GET, path, Some("key-a")).await;
    }
    let (status, ..) = send(&app, Method::GET, ABC, Some("key-a")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Key b: one allowed.
    let (status, ..) = send(&app, Method::POST, ABC_START, Some("key-b")).await;
    assert_eq!(status, StatusCode::OK);
    // A key the limiter refuses (an input error), and no key at all (not asked: not counted).
    let long_key = "k".repeat(ratewindow::MAX_KEY_LEN + 1);
    let (status, ..) = send(&app, Method::GET, ABC, Some(&long_key)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, ..) = send(&app, Method::GET, ABC, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Scraping is not rate limited, even with a key that is over its quota, and not counted.
    for _ in 0..5 {
        scrape(&app, Some("key-a")).await;
    }
    let samples = parse(&scrape(&app, None).await);
    let expected: BTreeMap<String, u64> = [
        ("ratewindow_decisions_total{outcome=\"allowed\"}", 4),
        ("ratewindow_decisions_total{outcome=\"denied\"}", 3),
        ("ratewindow_decisions_total{outcome=\"shadow_denied\"}", 0),
        ("ratewindow_decisions_total{outcome=\"over_capacity\"}", 0),
        ("ratewindow_decisions_total{outcome=\"error\"}", 1),
        (
            "ratewindow_decided_by_total{decided_by=\"over_limit_cache\"}",
            0,
        ),
        ("ratewindow_decided_by_total{decided_by=\"fail_open\"}", 0),
        ("ratewindow_decided_by_total{decided_by=\"fail_closed\"}", 0),
        ("ratewindow_decided_by_total{decided_by=\"fallback\"}", 0),
        ("ratewindow_errors_total{kind=\"timeout\"}", 0),
        ("ratewindow_errors_total{kind=\"unavailable\"}", 0),
        ("ratewindow_errors_total{kind=\"protocol\"}", 0),
        ("ratewindow_errors_total{kind=\"input\"}", 1),
        ("ratewindow_errors_total{kind=\"other\"}", 0),
        ("ratewindow_denied_total{policy=\"per-minute\"}", 3),
    ]
    .into_iter()
    .map(|(series, count)| (series.to_owned(), count))
    .collect();
    assert_eq!(samples, expected);

    // Key a is still over its quota: the scrapes charged nothing, and the API stays limited.
    let (status, headers, _) = send(&app, Method::GET, ABC, Some("key-a")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    let (status, headers, _) = send(&app, Method::GET, ABC, Some("key-b")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-ratelimit-remaining"], "1");
}

#[tokio::test]
async fn metrics_answers_other_methods_with_405_outside_the_rate_limit() {
    let app = demo("1/1m");
    for _ in 0..3 {
        let (status, headers, body) = send(&app, Method::POST, "/metrics", Some("k")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
        assert!(body.contains("method_not_allowed"), "{body}");
        for name in RATE_LIMIT_HEADERS {
            assert!(!headers.contains_key(name), "POST /metrics carries {name}");
        }
    }
    let samples = parse(&scrape(&app, None).await);
    assert_eq!(
        samples["ratewindow_decisions_total{outcome=\"allowed\"}"],
        0
    );
    assert_eq!(samples["ratewindow_decisions_total{outcome=\"denied\"}"], 0);
}
