//! Property tests: random sequences of operations over several keys and quotas, every backend
//! against the naive model in `support::model`, decision for decision; and, where the model
//! cannot follow (sweeps while the clock steps back), the invariants that must hold anyway.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use ratewindow::{Alignment, Error, ManualClock, Quota, RateLimiter};

use crate::support::model::{Expected, Model};
use crate::support::{Backend, Memory, SmallMemory, block_on};

const KEYS: [&str; 3] = ["a", "b", "{a}:b\n"];
const WINDOWS_MS: [u64; 4] = [1_000, 1_500, 3_000, 60_000];

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    StepBack(u64),
    Check(usize, u64),
    Peek(usize),
    Clear(usize),
    Refund(usize, u64),
    /// New limits, one per quota, same windows.
    Requota(Vec<u64>),
    /// Checks this many keys never seen before, enough to make a small limiter sweep.
    Spray(usize),
}

#[derive(Debug, Clone)]
pub(crate) struct Case {
    quotas: Vec<Quota>,
    alignment: Alignment,
    start_ms: u64,
    ops: Vec<Op>,
}

/// Which operations a case may contain.
#[derive(Clone, Copy)]
struct Shape {
    step_back: bool,
    /// Reset and refund: they make a window admit more than its limit, on purpose.
    give_back: bool,
    requota: bool,
    spray: bool,
}

fn case(shape: Shape) -> impl Strategy<Value = Case> {
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
    (quotas, alignment, start).prop_flat_map(move |(quotas, alignment, start_ms)| {
        let n = quotas.len();
        let key = 0..KEYS.len();
        let op = prop_oneof![
            3 => (0..2_000u64).prop_map(Op::Advance),
            u32::from(shape.step_back) => (0..3_000u64).prop_map(Op::StepBack),
            8 => (key.clone(), 0..=7u64).prop_map(|(k, c)| Op::Check(k, c)),
            2 => key.clone().prop_map(Op::Peek),
            u32::from(shape.give_back) => key.clone().prop_map(Op::Clear),
            2 * u32::from(shape.give_back) => (key, 0..=4u64).prop_map(|(k, n)| Op::Refund(k, n)),
            u32::from(shape.requota) => prop::collection::vec(1..=6u64, n).prop_map(Op::Requota),
            2 * u32::from(shape.spray) => (1..=90usize).prop_map(Op::Spray),
        ];
        // At most 450 sprayed keys, so a 511-key limiter never runs out of room.
        let ops = prop::collection::vec(op, 1..80).prop_filter("sprays fit the key cap", |ops| {
            ops.iter()
                .map(|op| if let Op::Spray(n) = op { *n } else { 0 })
                .sum::<usize>()
                <= 450
        });
        ops.prop_map(move |ops| Case {
            quotas: quotas.clone(),
            alignment,
            start_ms,
            ops,
        })
    })
}

/// The general case: every operation, clock steps back included, no sprays.
pub(crate) fn any_case() -> impl Strategy<Value = Case> {
    case(Shape {
        step_back: true,
        give_back: true,
        requota: true,
        spray: false,
    })
}

/// One operation's result, in a form both the backend and the model produce.
type Outcome = Result<Option<Expected>, Error>;

/// Plays `case` on the backend, handing each result to `observe` with the model's result (the
/// model stays exact only while the clock never steps back after a sweep; `observe` decides
/// what to compare).
fn play<B: Backend>(
    backend: &B,
    case: &Case,
    mut observe: impl FnMut(&Op, u64, &str, &Outcome, Outcome) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let clock = ManualClock::at_millis(case.start_ms);
    let mut limiter = backend.limiter(&case.quotas, case.alignment, clock.clone());
    let mut model = Model::new(case.quotas.clone(), case.alignment, B::STEP_BACK);
    let mut quotas = case.quotas.clone();
    let mut now = case.start_ms;
    let mut sprayed = 0;
    block_on(async {
        for op in &case.ops {
            match op {
                Op::Advance(ms) => {
                    now += ms;
                    clock.advance(Duration::from_millis(*ms));
                }
                Op::StepBack(ms) => {
                    now = now.saturating_sub(*ms);
                    clock.set_millis(now);
                }
                Op::Check(k, cost) => {
                    let got = limiter
                        .check_n(KEYS[*k], *cost)
                        .await
                        .map(|d| Some(Expected::of(&d)));
                    observe(
                        op,
                        now,
                        KEYS[*k],
                        &got,
                        model.check_n(KEYS[*k], now, *cost).map(Some),
                    )?;
                }
                Op::Peek(k) => {
                    let got = limiter.peek(KEYS[*k]).await.map(|d| Some(Expected::of(&d)));
                    observe(op, now, KEYS[*k], &got, model.peek(KEYS[*k], now).map(Some))?;
                }
                Op::Clear(k) => {
                    let got = limiter.clear(KEYS[*k]).await.map(|()| None);
                    observe(
                        op,
                        now,
                        KEYS[*k],
                        &got,
                        model.clear(KEYS[*k], now).map(|()| None),
                    )?;
                }
                Op::Refund(k, n) => {
                    let got = limiter.refund(KEYS[*k], *n).await.map(|()| None);
                    observe(
                        op,
                        now,
                        KEYS[*k],
                        &got,
                        model.refund(KEYS[*k], now, *n).map(|()| None),
                    )?;
                }
                Op::Requota(limits) => {
                    for (quota, &limit) in quotas.iter_mut().zip(limits) {
                        *quota = Quota::from_millis(limit, quota.window_ms()).unwrap();
                    }
                    limiter = backend.requota(&limiter, &quotas);
                    model.set_quotas(quotas.clone());
                }
                Op::Spray(n) => {
                    for _ in 0..*n {
                        sprayed += 1;
                        let key = format!("spray:{sprayed}");
                        let got = limiter.check(&key).await.map(|d| Some(Expected::of(&d)));
                        observe(op, now, &key, &got, model.check_n(&key, now, 1).map(Some))?;
                    }
                }
            }
        }
        Ok(())
    })
}

/// Decisions must equal the model's.
pub(crate) fn same_as_model<B: Backend>(backend: &B, case: &Case) -> Result<(), TestCaseError> {
    play(backend, case, |op, now, key, got, want| {
        prop_assert_eq!(got, &want, "{:?} on {:?} at {} ms", op, key, now);
        Ok(())
    })
}

/// End of the window of `window_ms` holding `now`, for `key` under `alignment`.
fn clock_window_end(key: &str, alignment: Alignment, window_ms: u64, now: u64) -> u64 {
    let phase = match alignment {
        Alignment::Staggered => {
            let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
            hash % window_ms
        }
        _ => 0,
    };
    ((now + window_ms - phase) / window_ms) * window_ms + phase
}

proptest! {
    // PROPTEST_CASES overrides the count for a longer search.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512)
    ))]

    #[test]
    fn memory_limiter_matches_the_model(
        case in any_case()
    ) {
        same_as_model(&Memory, &case)?;
    }

    /// Sweeping ended windows and the key cap change nothing while time moves forward.
    #[test]
    fn memory_limiter_matches_the_model_while_sweeping(
        case in case(Shape { step_back: false, give_back: true, requota: true, spray: true })
    ) {
        same_as_model(&SmallMemory, &case)?;
    }

    /// With sweeps and a clock stepping back the model no longer applies (a swept key is charged
    /// as of the sweep), but no window of any key ever admits more than its limit, and no
    /// request is charged to a window that ended before its clock reading.
    #[test]
    fn time_never_moves_a_counter_back(
        case in case(Shape { step_back: true, give_back: false, requota: false, spray: true })
    ) {
        let mut admitted: HashMap<(String, usize, u64), u64> = HashMap::new();
        let (quotas, alignment) = (case.quotas.clone(), case.alignment);
        play(&SmallMemory, &case, |op, now, key, got, _| {
            let cost = match op {
                Op::Check(_, cost) => *cost,
                Op::Spray(_) => 1,
                _ => return Ok(()),
            };
            let Ok(Some(decision)) = got else {
                return Ok(());
            };
            for (i, (&(limit, remaining, end), quota)) in decision.quotas.iter().zip(&quotas).enumerate() {
                let clock_end = clock_window_end(key, alignment, quota.window_ms(), now);
                prop_assert!(end >= clock_end, "{op:?} on {key:?} at {now}: window {end} before {clock_end}");
                if decision.allowed {
                    let used = admitted.entry((key.to_string(), i, end)).or_default();
                    *used += cost;
                    prop_assert!(*used <= limit, "{op:?} on {key:?}: {used} admitted in window {end}");
                    prop_assert_eq!(remaining, limit - *used);
                }
            }
            Ok(())
        })?;
    }
}
