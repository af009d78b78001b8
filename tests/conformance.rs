//! The conformance table: scenarios × expected decisions, run against every backend.
//!
//! Each scenario starts on fresh state with a manual clock at `T0`, a minute and hour boundary
//! (2027-01-15T08:00:00Z). Expected resets are written as seconds after `T0`.

use std::time::Duration;

use ratewindow::{Alignment, Error, MAX_KEY_LEN, ManualClock, Quota, RateLimiter};

use crate::support::{Backend, Memory, StepBack, block_on};

const T0_MS: u64 = 1_800_000_000_000;
const T0_S: u64 = T0_MS / 1000;

#[derive(Debug, Clone)]
enum Expect {
    Allowed {
        limit: u64,
        remaining: u64,
        reset: u64,
    },
    Denied {
        limit: u64,
        remaining: u64,
        reset: u64,
        retry_after: u64,
    },
    Fails(Error),
}

#[derive(Debug, Clone)]
enum Step {
    Check(String, u64, Expect),
    Peek(String, Expect),
    /// Every quota's (limit, remaining, reset seconds after T0), via peek.
    Quotas(String, Vec<(u64, u64, u64)>),
    Advance(u64),
    SetClock(u64),
    Clear(String),
    Refund(String, u64),
    /// New limits for the same windows, sharing counters.
    Requota(Vec<Quota>),
    /// A plan: a named limiter with new limits for the same windows, sharing counters.
    Plan(&'static str, Vec<Quota>),
    /// The name the next decisions carry (`Decision::name`), via peek.
    Named(String, Option<&'static str>),
    /// Steps that depend on what a clock stepping back meets: the latest window's count, or the
    /// earlier window's own counter.
    ByStepBack {
        latest: Vec<Step>,
        own: Vec<Step>,
    },
}

struct Scenario {
    name: &'static str,
    quotas: Vec<Quota>,
    alignment: Alignment,
    /// Milliseconds after T0 at which the clock starts.
    start_ms: u64,
    steps: Vec<Step>,
}

fn allowed(limit: u64, remaining: u64, reset: u64) -> Expect {
    Expect::Allowed {
        limit,
        remaining,
        reset: T0_S + reset,
    }
}
fn denied(limit: u64, remaining: u64, reset: u64, retry_after: u64) -> Expect {
    Expect::Denied {
        limit,
        remaining,
        reset: T0_S + reset,
        retry_after,
    }
}
fn check(key: &str, expect: Expect) -> Step {
    Step::Check(key.into(), 1, expect)
}
fn check_n(key: &str, cost: u64, expect: Expect) -> Step {
    Step::Check(key.into(), cost, expect)
}
fn peek(key: &str, expect: Expect) -> Step {
    Step::Peek(key.into(), expect)
}
fn per_minute(limit: u64) -> Quota {
    Quota::per_minute(limit).unwrap()
}
fn per_second(limit: u64) -> Quota {
    Quota::per_second(limit).unwrap()
}
fn per_hour(limit: u64) -> Quota {
    Quota::per_hour(limit).unwrap()
}

fn scenario(name: &'static str, quotas: Vec<Quota>, start_ms: u64, steps: Vec<Step>) -> Scenario {
    Scenario {
        name,
        quotas,
        alignment: Alignment::Epoch,
        start_ms,
        steps,
    }
}

fn scenarios() -> Vec<Scenario> {
    use Step::*;
    vec![
        scenario(
            "the contract: limit, remaining counting down, reset, then 429 with Retry-After",
            vec![per_minute(3)],
            20_000,
            vec![
                check("k", allowed(3, 2, 60)),
                check("k", allowed(3, 1, 60)),
                check("k", allowed(3, 0, 60)),
                check("k", denied(3, 0, 60, 40)),
                Advance(39_999),
                check("k", denied(3, 0, 60, 1)),
                Advance(1),
                check("k", allowed(3, 2, 120)),
            ],
        ),
        scenario(
            "a denied request consumes nothing",
            vec![per_minute(5)],
            0,
            vec![
                check_n("k", 4, allowed(5, 1, 60)),
                check_n("k", 3, denied(5, 1, 60, 60)),
                check_n("k", 2, denied(5, 1, 60, 60)),
                check_n("k", 1, allowed(5, 0, 60)),
                check("k", denied(5, 0, 60, 60)),
            ],
        ),
        scenario(
            "a cost above the limit is an error, not a denial, and consumes nothing",
            vec![per_minute(5), per_hour(10)],
            0,
            vec![
                check_n(
                    "k",
                    6,
                    Expect::Fails(Error::CostExceedsLimit {
                        cost: 6,
                        min_limit: 5,
                    }),
                ),
                check_n("k", 0, Expect::Fails(Error::ZeroCost)),
                check_n("k", 5, allowed(5, 0, 60)),
            ],
        ),
        scenario(
            "several quotas: all or nothing, and the binding quota is reported",
            vec![per_second(2), per_minute(3)],
            0,
            vec![
                // Allowed: the quota with the fewest remaining binds.
                check("k", allowed(2, 1, 1)),
                check("k", allowed(2, 0, 1)),
                // Denied by the second only; the minute quota is not charged.
                check("k", denied(2, 0, 1, 1)),
                Quotas("k".into(), vec![(2, 0, 1), (3, 1, 60)]),
                Advance(1_000),
                check("k", allowed(3, 0, 60)),
                Quotas("k".into(), vec![(2, 1, 2), (3, 0, 60)]),
                // Denied by the minute quota while the second quota admits: nothing is charged.
                Advance(1_000),
                check("k", denied(3, 0, 60, 58)),
                Quotas("k".into(), vec![(2, 2, 3), (3, 0, 60)]),
            ],
        ),
        scenario(
            "denied by two quotas: the one that blocks longest binds",
            vec![per_second(1), per_hour(1)],
            30_500,
            vec![
                check("k", allowed(1, 0, 3600)),
                check("k", denied(1, 0, 3600, 3570)),
            ],
        ),
        scenario(
            "peek consumes nothing and creates nothing",
            vec![per_minute(2)],
            15_000,
            vec![
                peek("k", allowed(2, 1, 60)),
                peek("k", allowed(2, 1, 60)),
                check("k", allowed(2, 1, 60)),
                check("k", allowed(2, 0, 60)),
                peek("k", denied(2, 0, 60, 45)),
                peek("other", allowed(2, 1, 60)),
            ],
        ),
        scenario(
            "clear forgets the current window",
            vec![per_minute(2)],
            0,
            vec![
                check("k", allowed(2, 1, 60)),
                check("k", allowed(2, 0, 60)),
                Clear("k".into()),
                check("k", allowed(2, 1, 60)),
                Clear("never-seen".into()),
            ],
        ),
        scenario(
            "refund gives back units, never below zero, and only in the current window",
            vec![per_minute(5)],
            0,
            vec![
                check_n("k", 3, allowed(5, 2, 60)),
                Refund("k".into(), 2),
                peek("k", allowed(5, 3, 60)),
                Refund("k".into(), 100),
                check_n("k", 5, allowed(5, 0, 60)),
                Advance(60_000),
                check("k", allowed(5, 4, 120)),
                Refund("never-seen".into(), 3),
                peek("never-seen", allowed(5, 4, 120)),
            ],
        ),
        scenario(
            // Limiters that count denied requests (INCR first, compare after) keep blocking here.
            "a limit raised mid-window takes effect at once",
            vec![per_minute(2)],
            0,
            vec![
                check("k", allowed(2, 1, 60)),
                check("k", allowed(2, 0, 60)),
                check("k", denied(2, 0, 60, 60)),
                check("k", denied(2, 0, 60, 60)),
                Requota(vec![per_minute(4)]),
                check("k", allowed(4, 1, 60)),
                check("k", allowed(4, 0, 60)),
                check("k", denied(4, 0, 60, 60)),
                Requota(vec![per_minute(1)]),
                check("k", denied(1, 0, 60, 60)),
            ],
        ),
        scenario(
            "a key moved to another plan mid-window keeps its count in every window",
            vec![per_minute(2), per_hour(10)],
            0,
            vec![
                Named("k".into(), None),
                check("k", allowed(2, 1, 60)),
                check("k", allowed(2, 0, 60)),
                check("k", denied(2, 0, 60, 60)),
                Plan("pro", vec![per_minute(5), per_hour(100)]),
                Named("k".into(), Some("pro")),
                Quotas("k".into(), vec![(5, 2, 60), (100, 97, 3600)]),
                check_n("k", 3, allowed(5, 0, 60)),
                check("k", denied(5, 0, 60, 60)),
                // Back on the smaller plan: over its limit until the window ends.
                Plan("free", vec![per_minute(2), per_hour(10)]),
                Named("k".into(), Some("free")),
                check("k", denied(2, 0, 60, 60)),
                Advance(60_000),
                Quotas("k".into(), vec![(2, 1, 120), (10, 4, 3600)]),
                check("k", allowed(2, 1, 120)),
                // The hour counted every plan's requests: 6 of them.
                Plan("tight", vec![per_minute(5), per_hour(7)]),
                check_n("k", 2, denied(7, 1, 3600, 3540)),
                check("k", allowed(7, 0, 3600)),
            ],
        ),
        scenario(
            "windows are aligned to the epoch: every key resets together",
            vec![per_minute(10)],
            59_999,
            vec![
                check("a", allowed(10, 9, 60)),
                Advance(1),
                check("b", allowed(10, 9, 120)),
                check("a", allowed(10, 9, 120)),
            ],
        ),
        Scenario {
            name: "staggered windows: each key's phase is FNV-1a of the key, the same everywhere",
            quotas: vec![per_minute(1)],
            alignment: Alignment::Staggered,
            start_ms: 0,
            // Phases: alpha 47.115 s, beta 58.247 s, gamma 40.874 s into the minute.
            steps: vec![
                Step::Check("alpha".into(), 1, allowed(1, 0, 48)),
                Step::Check("alpha".into(), 1, denied(1, 0, 48, 48)),
                Step::Check("beta".into(), 1, allowed(1, 0, 59)),
                Step::Check("gamma".into(), 1, allowed(1, 0, 41)),
                Step::Advance(47_114),
                Step::Check("alpha".into(), 1, denied(1, 0, 48, 1)),
                Step::Advance(1),
                Step::Check("alpha".into(), 1, allowed(1, 0, 108)),
                Step::Check("beta".into(), 1, denied(1, 0, 59, 12)),
            ],
        },
        scenario(
            "a clock stepping backwards admits nothing extra and loses no count",
            vec![per_minute(2)],
            61_000,
            vec![
                check("k", allowed(2, 1, 120)),
                check("k", allowed(2, 0, 120)),
                SetClock(T0_MS + 30_000),
                ByStepBack {
                    // The later window keeps its count and is charged.
                    latest: vec![check("k", denied(2, 0, 120, 90))],
                    // The earlier window is counted in its own counter, up to its own limit.
                    own: vec![
                        check("k", allowed(2, 1, 60)),
                        check("k", allowed(2, 0, 60)),
                        check("k", denied(2, 0, 60, 30)),
                    ],
                },
                // A key first seen while the clock is behind uses the clock's window.
                check("fresh", allowed(2, 1, 60)),
                SetClock(T0_MS + 119_999),
                check("k", denied(2, 0, 120, 1)),
                Advance(1),
                check("k", allowed(2, 1, 180)),
            ],
        ),
        scenario(
            "window ends that are not whole seconds round the reset up",
            vec![Quota::from_millis(1, 1_500).unwrap()],
            0,
            vec![
                // T0 is a multiple of 1.5 s; the window ends at T0 + 1.5 s.
                check("k", allowed(1, 0, 2)),
                Advance(1_499),
                check("k", denied(1, 0, 2, 1)),
                Advance(1),
                check("k", allowed(1, 0, 3)),
            ],
        ),
        scenario(
            "keys are validated; hostile keys are distinct keys",
            vec![per_minute(1)],
            0,
            vec![
                check("", Expect::Fails(Error::EmptyKey)),
                peek("", Expect::Fails(Error::EmptyKey)),
                check(
                    &"k".repeat(MAX_KEY_LEN + 1),
                    Expect::Fails(Error::KeyTooLong {
                        len: MAX_KEY_LEN + 1,
                    }),
                ),
                check(&"k".repeat(MAX_KEY_LEN), allowed(1, 0, 60)),
                check("{a}:b\n", allowed(1, 0, 60)),
                check("{a}:b", allowed(1, 0, 60)),
                check("{a}:b\n", denied(1, 0, 60, 60)),
                check("ключ 🔑", allowed(1, 0, 60)),
                check("ключ 🔑 ", allowed(1, 0, 60)),
            ],
        ),
    ]
}

/// A scenario with a clock at the epoch and one far in the future, which the T0-relative table
/// cannot express.
fn clock_extremes<B: Backend>(backend: &B) {
    let clock = ManualClock::at_millis(0);
    let limiter = backend.limiter(&[per_minute(1)], Alignment::Epoch, clock.clone());
    block_on(async {
        let at_epoch = limiter.check("k").await.expect("the epoch is a valid time");
        assert!(at_epoch.is_allowed());
        assert_eq!(at_epoch.reset_epoch_secs(), 60);
        assert_eq!(at_epoch.time_to_reset(), Duration::from_secs(60));
        clock.set_millis(u64::MAX);
        let far = limiter.check("k").await;
        assert_eq!(
            far.unwrap_err(),
            Error::ClockOutOfRange { now_ms: u64::MAX }
        );
    });
}

/// A release gives back only what an allowed decision charged, only in the windows it charged,
/// which the T0-relative table cannot express (a step needs an earlier step's decision).
fn releases<B: Backend>(backend: &B) {
    let clock = ManualClock::at_millis(T0_MS + 30_000);
    let limiter = backend.limiter(
        &[per_minute(3), per_hour(10)],
        Alignment::Epoch,
        clock.clone(),
    );
    let remaining = |decision: ratewindow::Decision| -> Vec<u64> {
        decision.quotas().iter().map(|q| q.remaining()).collect()
    };
    block_on(async {
        let first = limiter.check_n("k", 2).await.unwrap();
        limiter.release("k", 2, &first).await.unwrap();
        assert_eq!(remaining(limiter.peek("k").await.unwrap()), [2, 9]);

        // A denial charged nothing: releasing it gives nothing back.
        let kept = limiter.check_n("k", 3).await.unwrap();
        let denied = limiter.check("k").await.unwrap();
        assert!(kept.is_allowed() && !denied.is_allowed());
        limiter.release("k", 1, &denied).await.unwrap();
        // (A peek that would be denied reports the counts as they stand.)
        assert_eq!(remaining(limiter.peek("k").await.unwrap()), [0, 7]);

        // The next minute: the released units leave the new minute alone, and come back to
        // the hour, which the decision was made in too.
        clock.advance(Duration::from_secs(60));
        let next = limiter.check("k").await.unwrap();
        assert_eq!(remaining(next), [2, 6]);
        limiter.release("k", 3, &kept).await.unwrap();
        assert_eq!(remaining(limiter.peek("k").await.unwrap()), [1, 8]);
        // Never below zero.
        limiter.release("k", 5, &next).await.unwrap();
        assert_eq!(remaining(limiter.peek("k").await.unwrap()), [2, 9]);
    });
}

/// Runs every scenario against `backend`, naming the scenario and step that fails.
pub(crate) fn run<B: Backend>(backend: &B) {
    for scenario in scenarios() {
        let clock = ManualClock::at_millis(T0_MS + scenario.start_ms);
        let mut limiter = backend.limiter(&scenario.quotas, scenario.alignment, clock.clone());
        let steps = scenario.steps.iter().flat_map(|step| match step {
            Step::ByStepBack { latest, own } => match B::STEP_BACK {
                StepBack::LatestWindow => latest.iter().collect::<Vec<_>>(),
                StepBack::OwnWindow => own.iter().collect(),
            },
            step => vec![step],
        });
        block_on(async {
            for (i, step) in steps.enumerate() {
                let at = format!("scenario {:?}, step {i} ({step:?})", scenario.name);
                match step {
                    Step::Check(key, cost, expect) => {
                        assert_matches(&limiter.check_n(key, *cost).await, expect, &at)
                    }
                    Step::Peek(key, expect) => {
                        assert_matches(&limiter.peek(key).await, expect, &at)
                    }
                    Step::Quotas(key, expected) => {
                        let decision = limiter.peek(key).await.expect(&at);
                        let actual: Vec<_> = decision
                            .quotas()
                            .iter()
                            .map(|q| (q.limit(), q.remaining(), q.reset_epoch_secs() - T0_S))
                            .collect();
                        assert_eq!(&actual, expected, "{at}");
                    }
                    Step::Advance(ms) => clock.advance(Duration::from_millis(*ms)),
                    Step::SetClock(ms) => clock.set_millis(*ms),
                    Step::Clear(key) => limiter.clear(key).await.expect(&at),
                    Step::Refund(key, amount) => limiter.refund(key, *amount).await.expect(&at),
                    Step::Requota(quotas) => limiter = backend.requota(&limiter, quotas),
                    Step::Plan(name, quotas) => limiter = backend.plan(&limiter, name, quotas),
                    Step::Named(key, name) => {
                        let decision = limiter.peek(key).await.expect(&at);
                        assert_eq!(decision.name(), *name, "{at}");
                    }
                    Step::ByStepBack { .. } => unreachable!("flattened above"),
                }
            }
        });
    }
    clock_extremes(backend);
    releases(backend);
}

fn assert_matches(actual: &Result<ratewindow::Decision, Error>, expect: &Expect, at: &str) {
    match (actual, expect) {
        (
            Ok(d),
            Expect::Allowed {
                limit,
                remaining,
                reset,
            },
        ) => {
            assert!(d.is_allowed(), "{at}: expected allowed, got {d:?}");
            assert_eq!(
                (d.limit(), d.remaining(), d.reset_epoch_secs()),
                (*limit, *remaining, *reset),
                "{at}: {d:?}"
            );
            assert_eq!(d.retry_after_secs(), None, "{at}");
            assert_eq!(d.headers().len(), 3, "{at}");
        }
        (
            Ok(d),
            Expect::Denied {
                limit,
                remaining,
                reset,
                retry_after,
            },
        ) => {
            assert!(!d.is_allowed(), "{at}: expected denied, got {d:?}");
            assert_eq!(
                (
                    d.limit(),
                    d.remaining(),
                    d.reset_epoch_secs(),
                    d.retry_after_secs()
                ),
                (*limit, *remaining, *reset, Some(*retry_after)),
                "{at}: {d:?}"
            );
            assert_eq!(d.headers().len(), 4, "{at}");
        }
        (Err(e), Expect::Fails(expected)) => assert_eq!(e, expected, "{at}"),
        (actual, expect) => panic!("{at}: expected {expect:?}, got {actual:?}"),
    }
}

#[test]
fn memory_backend_passes_the_conformance_table() {
    run(&Memory);
}
