//! Property tests: random sequences of operations over several keys and quotas, every backend
//! against the naive model in `support::model`, decision for decision.

use std::time::Duration;

use proptest::prelude::*;
use ratewindow::{Alignment, Error, ManualClock, Quota, RateLimiter};

use crate::support::model::{Expected, Model};
use crate::support::{Backend, Memory, block_on};

const KEYS: [&str; 3] = ["a", "b", "{a}:b\n"];
const WINDOWS_MS: [u64; 4] = [1_000, 1_500, 3_000, 60_000];

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    StepBack(u64),
    Check(usize, u64),
    Peek(usize),
    Reset(usize),
    Refund(usize, u64),
    /// New limits, one per quota, same windows.
    Requota(Vec<u64>),
}

#[derive(Debug, Clone)]
struct Case {
    quotas: Vec<Quota>,
    alignment: Alignment,
    start_ms: u64,
    ops: Vec<Op>,
}

fn case() -> impl Strategy<Value = Case> {
    let quotas =
        prop::collection::vec((1..=6u64, prop::sample::select(WINDOWS_MS.to_vec())), 1..=3)
            .prop_map(|qs| {
                qs.into_iter()
                    .map(|(l, w)| Quota::from_millis(l, w).unwrap())
                    .collect::<Vec<_>>()
            });
    let alignment = prop_oneof![Just(Alignment::Epoch), Just(Alignment::Staggered)];
    // Around now, and around the epoch.
    let start = prop_oneof![1_700_000_000_000..1_700_000_200_000u64, 0..5_000u64];
    (quotas, alignment, start).prop_flat_map(|(quotas, alignment, start_ms)| {
        let n = quotas.len();
        let key = 0..KEYS.len();
        let op = prop_oneof![
            3 => (0..2_000u64).prop_map(Op::Advance),
            1 => (0..3_000u64).prop_map(Op::StepBack),
            8 => (key.clone(), 0..=7u64).prop_map(|(k, c)| Op::Check(k, c)),
            2 => key.clone().prop_map(Op::Peek),
            1 => key.clone().prop_map(Op::Reset),
            2 => (key, 0..=4u64).prop_map(|(k, n)| Op::Refund(k, n)),
            1 => prop::collection::vec(1..=6u64, n).prop_map(Op::Requota),
        ];
        prop::collection::vec(op, 1..80).prop_map(move |ops| Case {
            quotas: quotas.clone(),
            alignment,
            start_ms,
            ops,
        })
    })
}

/// Plays `case` on the backend and the model; returns the first divergence.
fn replay<B: Backend>(backend: &B, case: &Case) -> Result<(), TestCaseError> {
    let clock = ManualClock::at_millis(case.start_ms);
    let mut limiter = backend.limiter(&case.quotas, case.alignment, clock.clone());
    let mut model = Model::new(case.quotas.clone(), case.alignment);
    let mut quotas = case.quotas.clone();
    let mut now = case.start_ms;
    block_on(async {
        for (i, op) in case.ops.iter().enumerate() {
            let got: Result<Option<Expected>, Error>;
            let want: Result<Option<Expected>, Error>;
            match op {
                Op::Advance(ms) => {
                    now += ms;
                    clock.advance(Duration::from_millis(*ms));
                    continue;
                }
                Op::StepBack(ms) => {
                    now = now.saturating_sub(*ms);
                    clock.set_millis(now);
                    continue;
                }
                Op::Check(k, cost) => {
                    got = limiter
                        .check_n(KEYS[*k], *cost)
                        .await
                        .map(|d| Some(Expected::of(&d)));
                    want = model.check_n(KEYS[*k], now, *cost).map(Some);
                }
                Op::Peek(k) => {
                    got = limiter.peek(KEYS[*k]).await.map(|d| Some(Expected::of(&d)));
                    want = model.peek(KEYS[*k], now).map(Some);
                }
                Op::Reset(k) => {
                    got = limiter.reset(KEYS[*k]).await.map(|()| None);
                    want = model.reset(KEYS[*k]).map(|()| None);
                }
                Op::Refund(k, n) => {
                    got = limiter.refund(KEYS[*k], *n).await.map(|()| None);
                    want = model.refund(KEYS[*k], now, *n).map(|()| None);
                }
                Op::Requota(limits) => {
                    for (quota, &limit) in quotas.iter_mut().zip(limits) {
                        *quota = Quota::from_millis(limit, quota.window_ms()).unwrap();
                    }
                    limiter = backend.requota(&limiter, &quotas);
                    model.set_quotas(quotas.clone());
                    continue;
                }
            }
            prop_assert_eq!(got, want, "op {} ({:?}) at {} ms", i, op, now);
        }
        Ok(())
    })
}

proptest! {
    // PROPTEST_CASES overrides the count for a longer search.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512)
    ))]

    #[test]
    fn memory_limiter_matches_the_model(case in case()) {
        replay(&Memory, &case)?;
    }
}
