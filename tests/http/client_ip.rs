//! `ClientIpKey` through `RateLimitLayer`: which counter a request is charged to, with and
//! without trusted proxies, and that no forged or malformed forwarding header buys a fresh
//! quota.

use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use ratewindow::tower::{ClientAddr, ClientIpKey, IpNet, IpNetError, ProxyHeader, RateLimitLayer};
use ratewindow::{ManualClock, MemoryLimiter, Quota};
use tower::ServiceExt;

use crate::support::block_on;

const T0_MS: u64 = 1_800_000_037_000;
const LIMIT: u64 = 3;
const PROXY: &str = "10.0.0.2";

fn limiter() -> MemoryLimiter<ManualClock> {
    MemoryLimiter::builder(Quota::per_minute(LIMIT).unwrap())
        .clock(ManualClock::at_millis(T0_MS))
        .build()
        .unwrap()
}

fn app(key: ClientIpKey) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(RateLimitLayer::new(limiter(), key))
}

fn behind_proxy(header: ProxyHeader) -> ClientIpKey {
    ClientIpKey::behind_proxies(["10.0.0.0/8".parse().unwrap()], header)
}

/// A request from `peer` with `headers` (repeated names are separate lines).
fn request(peer: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::get("/");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(Body::empty()).unwrap();
    let peer: IpAddr = peer.parse().unwrap();
    request
        .extensions_mut()
        .insert(ClientAddr(SocketAddr::new(peer, 41000)));
    request
}

/// The status and `x-ratelimit-remaining` of `request`.
fn send(app: &Router, request: Request<Body>) -> (StatusCode, Option<u32>) {
    block_on(async {
        let response = app.clone().oneshot(request).await.unwrap();
        let remaining = response
            .headers()
            .get("x-ratelimit-remaining")
            .map(|value| value.to_str().unwrap().parse().unwrap());
        (response.status(), remaining)
    })
}

fn remaining(app: &Router, peer: &str, headers: &[(&str, &str)]) -> u32 {
    let (status, remaining) = send(app, request(peer, headers));
    assert_eq!(status, StatusCode::OK, "{peer} {headers:?}");
    remaining.unwrap()
}

#[test]
fn a_direct_client_is_keyed_by_its_peer_whatever_it_forwards() {
    for key in [
        ClientIpKey::peer(),
        behind_proxy(ProxyHeader::XForwardedFor),
    ] {
        let app = app(key);
        let peer = "203.0.113.7";
        assert_eq!(remaining(&app, peer, &[]), 2);
        assert_eq!(
            remaining(&app, peer, &[("x-forwarded-for", "198.51.100.1")]),
            1
        );
        assert_eq!(
            remaining(&app, peer, &[("forwarded", "for=198.51.100.2")]),
            0
        );
        let forged = request(
            peer,
            &[
                ("x-forwarded-for", "198.51.100.3"),
                ("x-real-ip", "1.1.1.1"),
            ],
        );
        assert_eq!(send(&app, forged), (StatusCode::TOO_MANY_REQUESTS, Some(0)));
        // The forged addresses were never charged.
        assert_eq!(remaining(&app, "198.51.100.1", &[]), 2);
    }
}

#[test]
fn behind_a_trusted_proxy_the_client_is_read_from_its_header() {
    for (header, name, value) in [
        (
            ProxyHeader::XForwardedFor,
            "x-forwarded-for",
            "198.51.100.1",
        ),
        (
            ProxyHeader::Forwarded,
            "forwarded",
            "for=198.51.100.1;proto=https",
        ),
        (ProxyHeader::XRealIp, "x-real-ip", "198.51.100.1"),
    ] {
        let app = app(behind_proxy(header));
        assert_eq!(remaining(&app, PROXY, &[(name, value)]), 2, "{name}");
        // Another proxy of the same network, the same client: the same counter.
        assert_eq!(remaining(&app, "10.9.9.9", &[(name, value)]), 1, "{name}");
        // The client connecting directly: the same counter again.
        assert_eq!(remaining(&app, "198.51.100.1", &[]), 0, "{name}");
        // The proxy itself, and another client behind it, have counters of their own.
        assert_eq!(remaining(&app, PROXY, &[]), 2, "{name}");
        let other = value.replace("198.51.100.1", "198.51.100.2");
        assert_eq!(remaining(&app, PROXY, &[(name, &other)]), 2, "{name}");
    }
}

#[test]
fn forged_entries_before_the_proxys_own_buy_no_fresh_quota() {
    let app = app(behind_proxy(ProxyHeader::XForwardedFor));
    let client = "198.51.100.1";
    assert_eq!(remaining(&app, PROXY, &[("x-forwarded-for", client)]), 2);
    let forged = format!("1.1.1.1, {client}");
    assert_eq!(remaining(&app, PROXY, &[("x-forwarded-for", &forged)]), 1);
    // A forged line before the proxy's own, and a chain through a second trusted proxy.
    assert_eq!(
        remaining(
            &app,
            PROXY,
            &[("x-forwarded-for", "2.2.2.2"), ("x-forwarded-for", client)]
        ),
        0
    );
    let chain = format!("3.3.3.3, {client}, 10.1.1.1");
    let (status, remaining) = send(&app, request(PROXY, &[("x-forwarded-for", &chain)]));
    assert_eq!(
        (status, remaining),
        (StatusCode::TOO_MANY_REQUESTS, Some(0))
    );

    let app = self::app(behind_proxy(ProxyHeader::Forwarded));
    let element = format!("for={client}");
    let lines = [
        element.clone(),
        format!("for=1.1.1.1, {element}"),
        format!("for=\"[2001:db8::1]:443\";proto=https, {element};by=10.0.0.2"),
    ];
    for (line, expected) in lines.iter().zip([2, 1, 0]) {
        assert_eq!(
            self::remaining(&app, PROXY, &[("forwarded", line)]),
            expected,
            "{line}"
        );
    }
}

#[test]
fn one_ipv6_slash_64_shares_a_counter_and_ipv4_mapped_is_ipv4() {
    let app = app(ClientIpKey::peer());
    assert_eq!(remaining(&app, "2001:db8:1:2::1", &[]), 2);
    assert_eq!(remaining(&app, "2001:db8:1:2:ffff:ffff:ffff:fffe", &[]), 1);
    assert_eq!(remaining(&app, "2001:db8:1:3::1", &[]), 2);
    assert_eq!(remaining(&app, "2001:db8:1:1:ffff::1", &[]), 2);

    assert_eq!(remaining(&app, "192.0.2.7", &[]), 2);
    assert_eq!(remaining(&app, "::ffff:192.0.2.7", &[]), 1);
    assert_eq!(remaining(&app, "192.0.2.8", &[]), 2);

    // The same through a proxy, the proxy an IPv4-mapped peer itself.
    let app = self::app(behind_proxy(ProxyHeader::XForwardedFor));
    let mapped_proxy = "::ffff:10.0.0.2";
    assert_eq!(
        remaining(
            &app,
            mapped_proxy,
            &[("x-forwarded-for", "[2001:db8:1:2::1]:443")]
        ),
        2
    );
    assert_eq!(
        remaining(&app, PROXY, &[("x-forwarded-for", "2001:db8:1:2::99")]),
        1
    );
    assert_eq!(
        remaining(
            &app,
            mapped_proxy,
            &[("x-forwarded-for", "::ffff:192.0.2.7")]
        ),
        2
    );
    assert_eq!(
        remaining(&app, PROXY, &[("x-forwarded-for", "192.0.2.7:5555")]),
        1
    );

    // Grouping is configurable: one key per IPv6 address, per IPv4 /24.
    let app = self::app(ClientIpKey::peer().ipv6_prefix(128).ipv4_prefix(24));
    assert_eq!(remaining(&app, "2001:db8:1:2::1", &[]), 2);
    assert_eq!(remaining(&app, "2001:db8:1:2::2", &[]), 2);
    assert_eq!(remaining(&app, "192.0.2.7", &[]), 2);
    assert_eq!(remaining(&app, "192.0.2.200", &[]), 1);
}

/// xorshift64*: junk that differs per request, reproducibly.
struct Junk(u64);

impl Junk {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A header value: random visible ASCII, or a near-address that is not one.
    fn value(&mut self) -> String {
        let n = self.next();
        match n % 8 {
            0 => "unknown".to_owned(),
            1 => format!("_hidden{n:x}"),
            2 => format!("[2001:db8::{:x}", n & 0xffff),
            3 => format!(
                "{}.{}.{}.{}.{}",
                n & 255,
                n >> 8 & 255,
                n >> 16 & 255,
                n >> 24 & 255,
                1
            ),
            4 => format!("\"for={}\"", n & 255),
            5 => format!("{}.0.0.1:{}", n & 255, 65536 + (n >> 8 & 1023)),
            6 => String::new(),
            _ => {
                let len = 1 + (n % 40) as usize;
                (0..len)
                    .map(|_| (b' ' + (self.next() % 95) as u8) as char)
                    .collect()
            }
        }
    }
}

#[test]
fn malformed_headers_never_make_a_fresh_key() {
    for header in [
        ProxyHeader::XForwardedFor,
        ProxyHeader::Forwarded,
        ProxyHeader::XRealIp,
    ] {
        let app = app(behind_proxy(header));
        let name = header.name();
        let mut junk = Junk(0x9e37_79b9_7f4a_7c15);
        let mut admitted = 0;
        for i in 0..100 {
            // Junk on its own, or appended after a forged address (the walk reads it first).
            let value = match i % 3 {
                0 => junk.value(),
                1 => format!("{}.{}.{}.{}, {}", i, i, i, i, junk.value()),
                _ => format!("for={}", junk.value()),
            };
            let mut request = request(PROXY, &[]);
            let Ok(value) = value.parse() else { continue };
            request.headers_mut().append(&name, value);
            if send(&app, request).0 == StatusCode::OK {
                admitted += 1;
            }
        }
        assert!(admitted <= LIMIT, "{name}: {admitted} admitted");
        // They were all the proxy's: its quota is spent.
        assert_eq!(
            send(&app, request(PROXY, &[])).0,
            StatusCode::TOO_MANY_REQUESTS,
            "{name}"
        );
    }
}

#[test]
fn axum_connect_info_is_read_with_peer_addr() {
    let key = ClientIpKey::peer()
        .peer_addr(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip()));
    let app = app(key);
    let mut request = Request::get("/").body(Body::empty()).unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 4000))));
    assert_eq!(send(&app, request), (StatusCode::OK, Some(2)));
    // `ClientAddr` is not read any more, and without a peer address there is no key.
    let (status, _) = send(&app, self::request("192.0.2.7", &[]));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[test]
fn trusted_networks_parse_with_typed_errors() {
    let nets: Vec<IpNet> = ["10.0.0.0/8", "172.16.0.0/12", "fd00::/8", "192.0.2.1"]
        .iter()
        .map(|net| net.parse().unwrap())
        .collect();
    assert_eq!(nets[3].prefix(), 32);
    assert_eq!(
        "10.0.0.0/40".parse::<IpNet>(),
        Err(IpNetError::InvalidPrefix)
    );
    assert_eq!(
        "10.0.0.0/x".parse::<IpNet>(),
        Err(IpNetError::InvalidPrefix)
    );
    assert_eq!("10.0.0/8".parse::<IpNet>(), Err(IpNetError::InvalidAddress));
    assert_eq!("fd00::1/8".parse::<IpNet>(), Err(IpNetError::HostBitsSet));
    let error = "proxy".parse::<IpNet>().unwrap_err();
    assert!(matches!(error, IpNetError::InvalidAddress));
    let _: &dyn std::error::Error = &error;
}
