//! Security on the Redis side, against real servers: passwords and ACL users through the URL,
//! a wrong or missing password as a typed error that never repeats the secret, the demo
//! server's log with the password masked, and TLS (`rediss://`) to a server and to a cluster
//! with a private CA (made by `support::tls`).

use std::time::{Duration, Instant};

#[cfg(feature = "tls")]
use ratewindow::ConfigError;
use ratewindow::{
    BackendErrorKind, DecidedBy, Error, FailurePolicy, Quota, RateLimiter, RedisConnection,
    RedisLimiter,
};
use tokio::runtime::Runtime;

#[cfg(feature = "tls")]
use super::{HOUR_MS, redis_count};
use crate::support::redis_server::RedisServer;
use crate::support::{Elapsed, runtime};
#[cfg(feature = "tls")]
use crate::support::{redis_server::RedisCluster, tls};

/// A limiter that reports every failure (no policy hides it), on `connection` and `prefix`.
fn strict(connection: RedisConnection, prefix: &str) -> RedisLimiter<Elapsed> {
    RedisLimiter::builder(Quota::per_hour(10).unwrap())
        .prefix(prefix)
        .timeout(Duration::from_secs(2))
        .failure_policy(FailurePolicy::ReturnError)
        .clock(Elapsed::new())
        .build(connection)
        .unwrap()
}

/// Connecting must fail with a typed error, soon, and without repeating `secret`.
fn assert_refused(runtime: &Runtime, url: &str, secret: &str) -> Error {
    let started = Instant::now();
    let error = runtime
        .block_on(RedisConnection::connect(url))
        .expect_err("connecting must fail");
    let took = started.elapsed();
    println!("security: {url:?} refused in {took:?}: {error}");
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    assert!(!error.to_string().contains(secret), "{error}");
    // redis-rs's connection manager tries a few times with backoff before it gives up.
    assert!(
        took < Duration::from_secs(15),
        "{url}: refused after {took:?}"
    );
    error
}

#[test]
fn security_password_and_acl_user_through_the_url() {
    let runtime = runtime();
    let server = RedisServer::with_args(&["--requirepass", "pw-s3cret"]);
    // A user that may touch only its own prefix's keys.
    let acl = [
        "ACL", "SETUSER", "limiter", "on", ">us3r-pw", "~acl:*", "+@all",
    ];
    assert!(server.command(&acl).contains("OK"));
    let port = server.port();

    let url = format!("redis://:pw-s3cret@127.0.0.1:{port}/");
    let connection = runtime.block_on(RedisConnection::connect(&url)).unwrap();
    let d = runtime
        .block_on(strict(connection, "pw").check("k"))
        .unwrap();
    assert_eq!((d.decided_by(), d.remaining()), (DecidedBy::Backend, 9));

    let url = format!("redis://limiter:us3r-pw@127.0.0.1:{port}/");
    let connection = runtime.block_on(RedisConnection::connect(&url)).unwrap();
    let d = runtime
        .block_on(strict(connection.clone(), "acl").check("k"))
        .unwrap();
    assert_eq!((d.decided_by(), d.remaining()), (DecidedBy::Backend, 9));
    // Outside its key pattern the user is refused by Redis: a typed error, not a count.
    let error = runtime
        .block_on(strict(connection, "other").check("k"))
        .unwrap_err();
    assert!(
        matches!(&error, Error::Backend { kind: BackendErrorKind::Protocol, detail } if detail.to_lowercase().contains("noperm")),
        "{error:?}"
    );
    assert_eq!(server.command(&["KEYS", "other:*"]), "*0\r\n");
}

#[test]
fn security_wrong_or_missing_password_is_a_typed_error() {
    let runtime = runtime();
    let server = RedisServer::with_args(&["--requirepass", "pw-s3cret"]);
    let port = server.port();
    assert_refused(
        &runtime,
        &format!("redis://:wr0ng-pw@127.0.0.1:{port}/"),
        "wr0ng-pw",
    );
    assert_refused(
        &runtime,
        &format!("redis://nobody:wr0ng-pw@127.0.0.1:{port}/"),
        "wr0ng-pw",
    );
    // Without a password redis-rs connects (nothing is asked until the first command), and
    // Redis refuses every decision (NOAUTH, or a protocol error for an unauthenticated
    // command this long): a typed error, or the policy's answer.
    let url = format!("redis://127.0.0.1:{port}/");
    match runtime.block_on(RedisConnection::connect(&url)) {
        Err(error) => assert!(matches!(error, Error::Backend { .. }), "{error:?}"),
        Ok(connection) => {
            let error = runtime
                .block_on(strict(connection.clone(), "noauth").check("k"))
                .unwrap_err();
            assert!(
                matches!(
                    error,
                    Error::Backend {
                        kind: BackendErrorKind::Protocol,
                        ..
                    }
                ),
                "{error:?}"
            );
            let closed = RedisLimiter::builder(Quota::per_hour(10).unwrap())
                .failure_policy(FailurePolicy::FailClosed)
                .clock(Elapsed::new())
                .build(connection)
                .unwrap();
            let d = runtime.block_on(closed.check("k")).unwrap();
            assert_eq!(d.decided_by(), DecidedBy::FailClosed);
        }
    }
}

/// The demo server names its Redis in its start-up log and errors, with the password masked.
#[cfg(feature = "tower")]
#[test]
fn security_the_demo_server_never_logs_the_password() {
    use crate::http::server_redis::Example;

    let server = RedisServer::with_args(&["--requirepass", "pw-s3cret"]);
    let port = server.port();
    for url in [
        format!("redis://:pw-s3cret@127.0.0.1:{port}/"),
        format!("redis://default:pw-s3cret@127.0.0.1:{port}/"),
    ] {
        let mut example = Example::spawn(&[("BIND", "127.0.0.1:0"), ("REDIS_URL", &url)]);
        example.wait_until_listening(Duration::from_secs(30));
        let log = example.stderr();
        assert!(!log.contains("pw-s3cret"), "{log}");
        assert!(log.contains(":***@127.0.0.1"), "{log}");
    }
    let url = format!("redis://:wr0ng-pw@127.0.0.1:{port}/");
    let mut example = Example::spawn(&[("BIND", "127.0.0.1:0"), ("REDIS_URL", &url)]);
    let status = example.wait_for_exit(Duration::from_secs(30));
    let log = example.stderr();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    assert!(!log.contains("wr0ng-pw"), "{log}");
    assert!(log.contains(":***@127.0.0.1"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// `rediss://` to a real TLS redis-server, trusting the test's private CA; without it the
/// server's certificate is refused with a typed error.
#[cfg(feature = "tls")]
#[test]
fn security_tls_with_a_private_ca() {
    let runtime = runtime();
    let dir = tls::certificates();
    let tls_port = crate::support::redis_server::free_port(false);
    let args = crate::support::redis_server::tls_args(&dir, tls_port);
    let server = RedisServer::with_args(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let ca = std::fs::read(dir.join("ca.crt")).unwrap();
    let url = format!("rediss://127.0.0.1:{tls_port}/");

    let connection = runtime
        .block_on(RedisConnection::connect_with_ca(&url, &ca))
        .expect("a TLS connection trusting the private CA");
    let limiter = strict(connection, "tls");
    for remaining in [9, 8] {
        let d = runtime.block_on(limiter.check("k")).unwrap();
        assert_eq!(
            (d.decided_by(), d.remaining()),
            (DecidedBy::Backend, remaining)
        );
    }
    // The counts are this server's, reached through its TLS port.
    assert_eq!(redis_count(&server, &format!("tls:{{k}}:{HOUR_MS}")), 2);
    let clients = server.command(&["INFO", "stats"]);
    assert!(
        !clients.contains("total_connections_received:0"),
        "{clients}"
    );

    // The system's roots do not know the private CA.
    let started = Instant::now();
    let error = runtime
        .block_on(RedisConnection::connect(&url))
        .expect_err("an untrusted certificate");
    let took = started.elapsed();
    println!("security: TLS without the CA refused in {took:?}: {error}");
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    // Regression: an untrusted certificate, like a wrong password, was retried by the
    // connection manager with backoff for about ten seconds before connecting failed.
    assert!(took < Duration::from_secs(2), "refused after {took:?}");
    // A CA that is not PEM trusts nothing: the server's certificate is refused.
    let error = runtime
        .block_on(RedisConnection::connect_with_ca(&url, b"not a certificate"))
        .expect_err("no certificate");
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    // A plain URL is the caller's configuration: refused before any connection.
    let plain = url.replacen("rediss://", "redis://", 1);
    let error = runtime
        .block_on(RedisConnection::connect_with_ca(&plain, &ca))
        .expect_err("not rediss://");
    assert_eq!(
        error,
        Error::Config(ConfigError::InvalidSetting {
            reason: "a TLS connection with a CA needs a rediss:// URL"
        })
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A cluster reached over TLS only, with a private CA: the router connects to every master at
/// the address and TLS port `CLUSTER SLOTS` names (an IP address, which the test certificate
/// carries as `subjectAltName=IP:127.0.0.1`), with the seed's CA, and every key is decided by
/// its own master. Without the CA, the system's roots refuse the nodes.
#[cfg(feature = "tls")]
#[test]
fn security_tls_to_a_cluster_with_a_private_ca() {
    let runtime = runtime();
    let dir = tls::certificates();
    let cluster = RedisCluster::with_tls(&dir);
    let ca = std::fs::read(dir.join("ca.crt")).unwrap();
    let urls = cluster.tls_urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let connection = runtime
        .block_on(RedisConnection::connect_cluster_with_ca(&urls, &ca))
        .expect("a TLS cluster connection trusting the private CA");
    let limiter = strict(connection, "tlsc");
    // Keys until every master has served one.
    let mut served = [0u64; 3];
    for i in 0.. {
        if served.iter().all(|&n| n > 0) {
            break;
        }
        assert!(i < 1_000, "three masters never all served: {served:?}");
        let name = format!("tenant-{i}");
        let redis_key = format!("tlsc:{{{name}}}:{HOUR_MS}");
        let master = cluster.owner(&redis_key);
        for remaining in [9, 8] {
            let d = runtime.block_on(limiter.check(&name)).unwrap();
            assert_eq!(
                (d.decided_by(), d.remaining()),
                (DecidedBy::Backend, remaining)
            );
        }
        assert_eq!(redis_count(&cluster.nodes()[master], &redis_key), 2);
        served[master] += 1;
    }
    // The system's roots do not know the private CA.
    let error = runtime
        .block_on(RedisConnection::connect_cluster(&urls))
        .expect_err("an untrusted certificate");
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    // A CA goes with TLS only.
    let plain: Vec<String> = cluster.urls();
    let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
    let error = runtime
        .block_on(RedisConnection::connect_cluster_with_ca(&plain, &ca))
        .expect_err("a plain URL with a CA");
    assert!(
        matches!(error, Error::Config(ConfigError::InvalidSetting { .. })),
        "{error:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
