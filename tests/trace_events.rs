//! The `tracing` feature's events, caught by a subscriber of the test's own: what each says,
//! at which level, and that no event ever carries the key.

use std::fmt::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Every event it sees, as its level and `target: message field=value ...`.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<(Level, String)>>>);

impl Events {
    /// Runs `f` with this subscriber as the thread's, and returns what it recorded.
    fn during(f: impl FnOnce()) -> Vec<(Level, String)> {
        let events = Events::default();
        tracing::subscriber::with_default(events.clone(), f);
        let recorded = events.0.lock().unwrap_or_else(PoisonError::into_inner);
        recorded.clone()
    }
}

impl Subscriber for Events {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        struct Text(String);
        impl Visit for Text {
            fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
                let _ = write!(self.0, " {}={value:?}", field.name());
            }
        }
        let mut text = Text(format!("{}:", event.metadata().target()));
        event.record(&mut text);
        let mut events = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        events.push((*event.metadata().level(), text.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[cfg(feature = "tower")]
mod layer {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use ratewindow::tower::{HeaderKey, RateLimitLayer};
    use ratewindow::{ManualClock, MemoryLimiter, Quota};
    use tower::{Layer, ServiceExt, service_fn};
    use tracing::Level;

    use super::Events;
    use crate::support::block_on;

    const KEY: &str = "secret-api-key-4711";

    #[test]
    fn a_denied_request_is_one_debug_event_without_its_key() {
        let limiter = MemoryLimiter::builder(Quota::per_minute(1).unwrap())
            .clock(ManualClock::at_millis(1_800_000_037_000))
            .build()
            .unwrap();
        let service = RateLimitLayer::new(limiter, HeaderKey::from_static("x-api-key")).layer(
            service_fn(|_: Request<Body>| async {
                Ok::<_, std::convert::Infallible>(axum::http::Response::new(Body::empty()))
            }),
        );
        let mut statuses = Vec::new();
        let events = Events::during(|| {
            for _ in 0..2 {
                let request = Request::get("/")
                    .header("x-api-key", KEY)
                    .body(Body::empty());
                let response = block_on(service.clone().oneshot(request.unwrap())).unwrap();
                statuses.push(response.status());
            }
        });
        assert_eq!(statuses, [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
        let ours: Vec<_> = events
            .iter()
            .filter(|(_, text)| text.starts_with("ratewindow:"))
            .collect();
        assert_eq!(ours.len(), 1, "{events:?}");
        let (level, text) = ours[0];
        assert_eq!(*level, Level::DEBUG);
        for part in ["request rate limited", "status=429", "retry_after_secs=23"] {
            assert!(text.contains(part), "{text}");
        }
        assert!(
            events.iter().all(|(_, text)| !text.contains(KEY)),
            "{events:?}"
        );
    }
}

#[cfg(feature = "redis")]
mod redis {
    use std::time::Duration;

    use ratewindow::{
        DecidedBy, FailurePolicy, ManualClock, Quota, RateLimiter, RedisConnection, RedisLimiter,
    };
    use tracing::Level;

    use super::Events;
    use crate::support::block_on;
    use crate::support::redis_server::RedisServer;

    const KEY: &str = "secret-api-key-4712";

    #[test]
    fn redis_failing_to_decide_is_one_warning_per_failed_call_without_the_key() {
        let mut server = RedisServer::new();
        let connection = block_on(RedisConnection::connect(&server.url())).unwrap();
        let limiter = RedisLimiter::builder(Quota::per_minute(5).unwrap())
            .timeout(Duration::from_millis(200))
            .failure_policy(FailurePolicy::FailOpen)
            .clock(ManualClock::at_millis(1_800_000_037_000))
            .build(connection)
            .unwrap();
        assert_eq!(
            block_on(limiter.check(KEY)).unwrap().decided_by(),
            DecidedBy::Backend
        );
        server.stop();
        let mut answers = Vec::new();
        let events = Events::during(|| {
            // The first call fails at Redis; the breaker answers the next two without it.
            for _ in 0..3 {
                answers.push(block_on(limiter.check(KEY)).unwrap().decided_by());
            }
        });
        assert_eq!(answers, [DecidedBy::FailOpen; 3]);
        let warnings: Vec<_> = events
            .iter()
            .filter(|(level, text)| *level == Level::WARN && text.starts_with("ratewindow:"))
            .collect();
        assert_eq!(warnings.len(), 1, "{events:?}");
        assert!(
            warnings[0].1.contains("the failure policy answers"),
            "{warnings:?}"
        );
        assert!(warnings[0].1.contains("FailOpen"), "{warnings:?}");
        assert!(
            events.iter().all(|(_, text)| !text.contains(KEY)),
            "{events:?}"
        );
    }
}
