//! Skipped routes and allow lists through `RateLimitLayer`: a request the layer lets through
//! never touches a counter (no key extracted for a skipped route, no limiter call, no script run
//! on Redis), a forged forwarding header gets nobody into an allowed network; and the decision
//! handed to the handler in the request's extensions.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use axum::routing::get;
use axum::{Extension, Router};
use http_body_util::BodyExt;
use ratewindow::tower::{
    AllowList, ClientAddr, ClientIpKey, Outcome, ProxyHeader, RateLimitLayer, SkipRoutes,
};
use ratewindow::{Decision, ManualClock, MemoryLimiter, Quota, RateLimiter};
use tower::ServiceExt;

const T0_MS: u64 = 1_800_000_037_000;
const LIMIT: u64 = 3;
/// Requests of each kind the layer must let through untouched.
const MANY: usize = 25;

fn memory_limiter() -> MemoryLimiter<ManualClock> {
    MemoryLimiter::builder(Quota::per_minute(LIMIT).unwrap())
        .clock(ManualClock::at_millis(T0_MS))
        .build()
        .unwrap()
}

/// What the layer did besides asking the limiter: key extractions, costs asked, outcomes
/// observed, inner calls.
#[derive(Clone, Default)]
struct Counts {
    keys: Arc<AtomicU64>,
    costs: Arc<AtomicU64>,
    decisions: Arc<AtomicU64>,
    inner: Arc<AtomicU64>,
}

impl Counts {
    fn get(&self) -> [u64; 4] {
        [&self.keys, &self.costs, &self.decisions, &self.inner].map(|n| n.load(Ordering::SeqCst))
    }
}

/// `/` echoes the decision the handler got, `/healthz` and `/static/{*rest}` answer `ok`.
fn routes(counts: &Counts) -> Router {
    let (a, b, c) = (counts.clone(), counts.clone(), counts.clone());
    Router::new()
        .route(
            "/",
            get(move |decision: Option<Extension<Decision>>| async move {
                a.inner.fetch_add(1, Ordering::SeqCst);
                match decision {
                    Some(Extension(decision)) => format!("remaining {}", decision.remaining()),
                    None => "none".to_owned(),
                }
            })
            .post(|| async { "posted" }),
        )
        .route(
            "/healthz",
            get(move || async move {
                b.inner.fetch_add(1, Ordering::SeqCst);
                "ok"
            })
            .post(|| async { "posted" }),
        )
        .route(
            "/static/{*rest}",
            get(move || async move {
                c.inner.fetch_add(1, Ordering::SeqCst);
                "ok"
            }),
        )
}

/// Keyed by `x-api-key`; `GET /healthz` and `/static` skipped; the key `internal` and the
/// networks `10.0.0.0/8` and `fd00::/8` (peers) allowed; the decision in the extensions.
fn app<L>(limiter: L, counts: &Counts) -> Router
where
    L: RateLimiter + Clone + 'static,
{
    let (keys, costs, decisions) = (counts.clone(), counts.clone(), counts.clone());
    let layer = RateLimitLayer::new(limiter, move |request: &Request<Body>| {
        keys.keys.fetch_add(1, Ordering::SeqCst);
        let value = request.headers().get("x-api-key")?;
        Some(value.to_str().ok()?.to_owned())
    })
    .cost(move |_: &Request<Body>| {
        costs.costs.fetch_add(1, Ordering::SeqCst);
        1
    })
    .on_decision(move |_: &Outcome| {
        decisions.decisions.fetch_add(1, Ordering::SeqCst);
    })
    .skip(
        SkipRoutes::new()
            .route(Method::GET, "/healthz")
            .prefix("/static"),
    )
    .allow(
        AllowList::new()
            .keys(["internal", "internal-2"])
            .networks(["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]),
    )
    .decision_in_extensions(true);
    routes(counts).layer(layer)
}

struct Reply {
    status: StatusCode,
    remaining: Option<u64>,
    body: String,
}

/// A request from `peer` (a `ClientAddr`), with the `x-api-key` `key` and the other `headers`.
async fn send(
    app: &Router,
    method: Method,
    path: &str,
    peer: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(Body::empty()).unwrap();
    let peer: IpAddr = peer.parse().unwrap();
    request
        .extensions_mut()
        .insert(ClientAddr(SocketAddr::new(peer, 41000)));
    let response = app.clone().oneshot(request).await.unwrap();
    let remaining = response
        .headers()
        .get("x-ratelimit-remaining")
        .map(|value| value.to_str().unwrap().parse().unwrap());
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        remaining,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// The same scenario on any backend; `touched` reads what the backend shows of its counters
/// being touched so far (in memory: the counts; on Redis: the scripts and commands run).
async fn skipped_and_allowed_requests_touch_no_counter<L, T, F, V>(limiter: L, touched: T)
where
    L: RateLimiter + Clone + 'static,
    T: Fn() -> F,
    F: Future<Output = V>,
    V: PartialEq + std::fmt::Debug,
{
    let counts = Counts::default();
    let app = app(limiter, &counts);
    let outside = "203.0.113.7";
    let untouched = touched().await;

    // Skipped: asked before anything else, so not even the key is extracted (no key, no 401).
    for i in 0..MANY {
        let key = (i % 2 == 0).then_some("k");
        let health = send(&app, Method::GET, "/healthz", outside, key, &[]).await;
        let asset = send(&app, Method::GET, "/static/app.js", outside, key, &[]).await;
        for reply in [health, asset] {
            assert_eq!((reply.status, reply.remaining), (StatusCode::OK, None));
            assert_eq!(reply.body, "ok");
        }
    }
    assert_eq!(counts.get(), [0, 0, 0, 2 * MANY as u64]);
    assert_eq!(
        touched().await,
        untouched,
        "a skipped request touched a counter"
    );
    // Only `GET /healthz` is skipped: `POST /healthz` is limited (here: no key, 401).
    let post = send(&app, Method::POST, "/healthz", outside, None, &[]).await;
    assert_eq!(post.status, StatusCode::UNAUTHORIZED);
    assert_eq!(counts.get(), [1, 1, 0, 2 * MANY as u64]);

    // Allowed keys: the key is extracted, the limiter never asked, the handler gets no decision.
    for i in 0..MANY {
        let key = ["internal", "internal-2"][i % 2];
        let reply = send(&app, Method::GET, "/", outside, Some(key), &[]).await;
        assert_eq!((reply.status, reply.remaining), (StatusCode::OK, None));
        assert_eq!(reply.body, "none");
    }
    let many = MANY as u64;
    assert_eq!(counts.get(), [1 + many, 1 + many, 0, 3 * many]);
    assert_eq!(
        touched().await,
        untouched,
        "an allowed key touched a counter"
    );

    // Allowed networks: before the key, so a client there needs none.
    for i in 0..MANY {
        let peer = ["10.1.2.3", "fd00::7", "::ffff:10.9.9.9"][i % 3];
        let key = (i % 2 == 0).then_some("k");
        let reply = send(&app, Method::GET, "/", peer, key, &[]).await;
        assert_eq!(
            (reply.status, reply.remaining),
            (StatusCode::OK, None),
            "{peer}"
        );
        assert_eq!(reply.body, "none");
    }
    assert_eq!(counts.get(), [1 + many, 1 + many, 0, 4 * many]);
    assert_eq!(
        touched().await,
        untouched,
        "an allowed network touched a counter"
    );

    // A forged forwarding header is not a peer address: charged like any request.
    for forged in [
        ("x-forwarded-for", "10.0.0.1"),
        ("x-real-ip", "10.0.0.1"),
        ("forwarded", "for=10.0.0.1"),
    ] {
        let reply = send(&app, Method::GET, "/", outside, Some("k"), &[forged]).await;
        assert_eq!(reply.status, StatusCode::OK);
        let remaining = reply.remaining.expect("charged, with headers");
        assert_eq!(reply.body, format!("remaining {remaining}"));
    }
    assert_ne!(
        touched().await,
        untouched,
        "the charged requests touched nothing"
    );
    assert_eq!(counts.get()[2], LIMIT, "each charged request observed");

    // The key's quota is spent; skipped and allowed requests still go through untouched.
    let denied = send(&app, Method::GET, "/", outside, Some("k"), &[]).await;
    assert_eq!(
        (denied.status, denied.remaining),
        (StatusCode::TOO_MANY_REQUESTS, Some(0))
    );
    let after_denial = touched().await;
    let health = send(&app, Method::GET, "/healthz", outside, Some("k"), &[]).await;
    let internal = send(&app, Method::GET, "/", outside, Some("internal"), &[]).await;
    let monitored = send(&app, Method::GET, "/", "10.0.0.9", Some("k"), &[]).await;
    for reply in [health, internal, monitored] {
        assert_eq!((reply.status, reply.remaining), (StatusCode::OK, None));
    }
    assert_eq!(touched().await, after_denial);
}

#[tokio::test]
async fn skipped_and_allowed_requests_touch_no_counter_in_memory() {
    let limiter = memory_limiter();
    let used = |limiter: MemoryLimiter<ManualClock>| async move {
        let mut used = 0;
        for key in ["k", "internal", "internal-2"] {
            used += LIMIT - limiter.peek(key).await.unwrap().remaining();
        }
        used
    };
    let probe = limiter.clone();
    skipped_and_allowed_requests_touch_no_counter(limiter, || used(probe.clone())).await;
    // The allowed keys' counters are as fresh as a key never seen.
    let fresh = probe.peek("never-seen").await.unwrap();
    for key in ["internal", "internal-2"] {
        assert_eq!(probe.peek(key).await.unwrap(), fresh, "{key}");
    }
}

/// Networks are matched against the client address the allow list finds: the peer, or the
/// client a trusted proxy forwarded for under `ClientIpKey`'s rule.
#[tokio::test]
async fn allowed_networks_follow_the_client_ip_rule() {
    let counts = Counts::default();
    let proxies = ["192.168.0.0/16".parse().unwrap()];
    let client = ClientIpKey::behind_proxies(proxies, ProxyHeader::XForwardedFor);
    let layer = RateLimitLayer::new(memory_limiter(), client.clone())
        .allow(
            AllowList::new()
                .networks(["10.0.0.0/8".parse().unwrap()])
                .client_ip(client),
        )
        .decision_in_extensions(true);
    let app = routes(&counts).layer(layer);
    let xff = |value| [("x-forwarded-for", value)];
    let proxy = "192.168.1.1";

    // Through the trusted proxy, for a client in the network: allowed.
    let allowed = send(&app, Method::GET, "/", proxy, None, &xff("10.1.1.1")).await;
    assert_eq!((allowed.status, allowed.remaining), (StatusCode::OK, None));
    // A client that prepends an allowed address is still the one its proxy appended.
    let prepended = send(
        &app,
        Method::GET,
        "/",
        proxy,
        None,
        &xff("10.1.1.1, 203.0.113.7"),
    )
    .await;
    assert_eq!(prepended.remaining, Some(LIMIT - 1));
    // A client that connects directly is its own address, whatever it forwards.
    let direct = send(
        &app,
        Method::GET,
        "/",
        "203.0.113.7",
        None,
        &xff("10.1.1.1"),
    )
    .await;
    assert_eq!(direct.remaining, Some(LIMIT - 2));
    assert_eq!(direct.body, format!("remaining {}", LIMIT - 2));

    // The peer alone (the default), read from axum's `ConnectInfo`: no header is believed.
    let peers = AllowList::new()
        .networks(["10.0.0.0/8".parse().unwrap()])
        .peer_addr(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip()));
    let app = routes(&counts).layer(
        RateLimitLayer::new(
            memory_limiter(),
            ClientIpKey::peer()
                .peer_addr(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip())),
        )
        .allow(peers),
    );
    let connect = |peer: [u8; 4], forwarded: &str| {
        let mut request = Request::get("/")
            .header("x-forwarded-for", forwarded)
            .body(Body::empty())
            .unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((peer, 41000))));
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.unwrap();
            response.headers().contains_key("x-ratelimit-remaining")
        }
    };
    assert!(!connect([10, 2, 3, 4], "203.0.113.7").await, "allowed peer");
    assert!(connect([203, 0, 113, 7], "10.2.3.4").await, "forged header");
}

/// Handlers read the decision with axum's `Extension<Decision>` when the layer is asked to put
/// it there, and get none by default.
#[tokio::test]
async fn a_handler_reads_the_decision_from_the_extensions() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Decision>();

    let echo = Router::new().route(
        "/",
        get(|Extension(decision): Extension<Decision>| async move {
            format!("{} of {} left", decision.remaining(), decision.limit())
        }),
    );
    let key = ratewindow::tower::FixedKey::new("k");
    let app = echo
        .clone()
        .layer(RateLimitLayer::new(memory_limiter(), key.clone()).decision_in_extensions(true));
    for left in (0..LIMIT).rev() {
        let reply = send(&app, Method::GET, "/", "203.0.113.7", None, &[]).await;
        assert_eq!(reply.body, format!("{left} of {LIMIT} left"));
        assert_eq!(reply.remaining, Some(left));
    }
    // Denied: the handler is not called.
    let denied = send(&app, Method::GET, "/", "203.0.113.7", None, &[]).await;
    assert_eq!(denied.status, StatusCode::TOO_MANY_REQUESTS);

    // Off by default: the handler's `Option<Extension<Decision>>` is `None`.
    let counts = Counts::default();
    let app = routes(&counts).layer(RateLimitLayer::new(memory_limiter(), key));
    let reply = send(&app, Method::GET, "/", "203.0.113.7", None, &[]).await;
    assert_eq!(
        (reply.body.as_str(), reply.remaining),
        ("none", Some(LIMIT - 1))
    );
}

/// Through the layer on a real `redis-server`: skipped and allowed requests run no script
/// (`INFO commandstats`), charged ones do, and the decision reaches the handler on the
/// waiting path.
#[cfg(feature = "redis")]
mod on_redis {
    use std::time::Duration;

    use ratewindow::{RedisConnection, RedisLimiter};

    use super::*;
    use crate::support::redis_server::RedisServer;

    /// `(scripts, commands)`: the script calls (`EVAL`, `EVALSHA` and their `_RO` forms), and
    /// all commands, scripts included, less the `INFO` that reads them and the limiter's own
    /// eviction checks (`CONFIG GET`, `INFO`), which run by the limiter's clock, not per
    /// request.
    fn commandstats(server: &RedisServer) -> (u64, u64) {
        let stats = server.command(&["INFO", "commandstats"]);
        let (mut scripts, mut commands) = (0, 0);
        for line in stats.lines() {
            let Some((name, rest)) = line.split_once(":calls=") else {
                continue;
            };
            let calls: u64 = rest.split(',').next().unwrap().parse().unwrap();
            let name = name.trim_start_matches("cmdstat_");
            if name.starts_with("eval") {
                scripts += calls;
            }
            if name != "info" && !name.starts_with("config") {
                commands += calls;
            }
        }
        (scripts, commands)
    }

    async fn limiter(server: &RedisServer) -> RedisLimiter<ManualClock> {
        let connection = RedisConnection::connect(&server.url()).await.unwrap();
        RedisLimiter::builder(Quota::per_minute(LIMIT).unwrap())
            .timeout(Duration::from_secs(5))
            .clock(ManualClock::at_millis(T0_MS))
            .build(connection)
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn skipped_and_allowed_requests_run_no_script_on_redis() {
        let server = Arc::new(RedisServer::new());
        let limiter = limiter(&server).await;
        let (scripts_before, _) = commandstats(&server);
        let stats = Arc::clone(&server);
        // Touched: a script run, or any other command.
        skipped_and_allowed_requests_touch_no_counter(limiter, move || {
            let stats = commandstats(&stats);
            async move { stats }
        })
        .await;
        let (scripts, _) = commandstats(&server);
        // The charged requests ran their scripts (the denial may be decided locally).
        assert!(
            scripts - scripts_before >= LIMIT,
            "{scripts} after {scripts_before}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_handler_gets_the_decision_on_the_waiting_path() {
        let server = RedisServer::new();
        let echo = Router::new().route(
            "/",
            get(|Extension(decision): Extension<Decision>| async move {
                format!("remaining {}", decision.remaining())
            }),
        );
        let key = ratewindow::tower::FixedKey::new("k");
        let app = echo
            .layer(RateLimitLayer::new(limiter(&server).await, key).decision_in_extensions(true));
        for left in (0..LIMIT).rev() {
            let reply = send(&app, Method::GET, "/", "203.0.113.7", None, &[]).await;
            assert_eq!(
                (reply.status, reply.remaining),
                (StatusCode::OK, Some(left))
            );
            assert_eq!(reply.body, format!("remaining {left}"));
        }
    }
}
