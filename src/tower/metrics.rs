//! [`DecisionCounters`]: a ready-made [`on_decision`](super::RateLimitLayer::on_decision)
//! observer that counts outcomes, and their Prometheus text exposition.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::hooks::OnDecision;
use super::outcome::{Outcome, admits};
use crate::http::{PolicyName, policy_name_at};
use crate::name::MAX_NAMES;
use crate::{BackendErrorKind, DecidedBy, Decision, Error};

/// The most policies whose denials one [`DecisionCounters`] counts apart.
const MAX_POLICIES: usize = 32;

/// Counts the limiter's outcomes, as the layer's
/// [`on_decision`](super::RateLimitLayer::on_decision) observer: allowed and denied requests,
/// who decided when it was not the backend's own counters (the over-limit cache, the failure
/// policy), requests over the limiter's key capacity, errors by kind, and denials by the quota
/// that denied.
///
/// Cheap to clone: every clone counts into the same counters (an `Arc` of atomics), so keep
/// one clone for the layer and one to read. Counting costs one relaxed atomic increment for an
/// allowed request decided by the backend (two when the over-limit cache or a failure policy
/// decided); a denial costs two or three and finding its policy's counter (its name is made and
/// compared with those already seen, without a lock). Nothing allocates after a limiter's
/// first decision.
///
/// Give the layer a clone (it is an [`OnDecision`] observer), or call
/// [`observe`](Self::observe) from an observer of your own to count and do more. Read the counts with
/// [`snapshot`](Self::snapshot), or as Prometheus text with
/// [`write_prometheus`](Self::write_prometheus).
///
/// # Metrics
///
/// [`write_prometheus`](Self::write_prometheus) writes five counter families, every sample
/// always present (at 0 until counted), except `ratewindow_denied_total`, which has one sample
/// per policy of each limiter (each plan) that has decided a request, in the order they first
/// did:
///
/// | metric | labels | counts |
/// |---|---|---|
/// | `ratewindow_decisions_total` | `outcome="allowed"` | requests admitted: by the backend, a fail-open policy or a fallback limiter |
/// | | `outcome="denied"` | requests refused with a decision: over a quota (`429`), or by a fail-closed policy (`503`) |
/// | | `outcome="shadow_denied"` | requests denied by quotas in shadow alone, and let through ([`Shadow`](crate::Shadow)) |
/// | | `outcome="over_capacity"` | requests of a new key refused because the limiter tracks as many keys as it may (`503`) |
/// | | `outcome="error"` | requests the limiter could not decide: the sum of `ratewindow_errors_total` |
/// | `ratewindow_decided_by_total` | `decided_by="over_limit_cache"`, `"fail_open"`, `"fail_closed"`, `"fallback"` | decisions not made by the backend's own counters ([`DecidedBy`]); the rest were |
/// | `ratewindow_errors_total` | `kind="timeout"`, `"unavailable"`, `"protocol"` | backend failures no failure policy decided ([`BackendErrorKind`]) |
/// | | `kind="input"` | an empty or too long key, or a cost above a limit |
/// | | `kind="other"` | any other error (e.g. a clock out of range) |
/// | `ratewindow_denied_total` | `policy="per-minute"`, ... | denials over a quota, by the denying quota's [`PolicyName`] (the binding one when several denied); fail-closed denials are not counted here |
/// | `ratewindow_shadow_denied_total` | `policy="per-hour"`, ... | shadow denials, the same way; a policy's sample appears with its first shadow denial |
///
/// Each request the limiter was asked about is counted once in `ratewindow_decisions_total`.
/// Requests it was not asked about (no key, cost 0) are not counted at all.
///
/// Policies are told apart by name, so one `DecisionCounters` serves several layers or
/// [`Plans`](super::Plans): the policy names of named limiters start with their name
/// (`pro-per-minute`). Denials are counted by policy for the first 32 policy names; past
/// them, only in `ratewindow_decisions_total`.
///
/// # Example
///
/// ```
/// use axum::{Router, body::Body, routing::get};
/// use http::Request;
/// use ratewindow::tower::{DecisionCounters, HeaderKey, RateLimitLayer};
/// use ratewindow::{MemoryLimiter, Quota};
/// use tower::ServiceExt;
///
/// let counters = DecisionCounters::new();
/// let limiter = MemoryLimiter::new(Quota::per_minute(2)?)?;
/// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(
///     RateLimitLayer::new(limiter, HeaderKey::from_static("x-api-key"))
///         .on_decision(counters.clone()),
/// );
///
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async {
/// for _ in 0..3 {
///     let request = Request::get("/").header("x-api-key", "k").body(Body::empty())?;
///     app.clone().oneshot(request).await?;
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// let snapshot = counters.snapshot();
/// assert_eq!((snapshot.allowed, snapshot.denied), (2, 1));
///
/// let mut text = String::new();
/// counters.write_prometheus(&mut text).unwrap();
/// assert!(text.contains("# TYPE ratewindow_decisions_total counter\n"));
/// assert!(text.contains("ratewindow_decisions_total{outcome=\"allowed\"} 2\n"));
/// assert!(text.contains("ratewindow_denied_total{policy=\"per-minute\"} 1\n"));
/// # Ok::<(), ratewindow::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct DecisionCounters {
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    allowed: AtomicU64,
    denied: AtomicU64,
    over_capacity: AtomicU64,
    over_limit_cache: AtomicU64,
    fail_open: AtomicU64,
    fail_closed: AtomicU64,
    fallback: AtomicU64,
    timeout_errors: AtomicU64,
    unavailable_errors: AtomicU64,
    protocol_errors: AtomicU64,
    input_errors: AtomicU64,
    other_errors: AtomicU64,
    denied_by: DeniedByPolicy,
    shadow_denied: AtomicU64,
    shadow_denied_by: DeniedByPolicy,
    /// Bit `i`: the policies of the limiter with name id `i` have slots (at 0 until they deny).
    named: [AtomicU64; (MAX_NAMES + 1).div_ceil(64)],
}

/// Denials over a quota by the denying quota's policy name, in the order the names were first
/// seen: a fixed table that a denial searches without a lock (its name is nearly always among
/// the first few), and that a name new to it joins under a lock.
#[derive(Debug, Default)]
struct DeniedByPolicy {
    slots: [PolicySlot; MAX_POLICIES],
    /// How many slots are named; a slot is named before `len` counts it.
    len: AtomicUsize,
    joining: Mutex<()>,
}

#[derive(Debug, Default)]
struct PolicySlot {
    name: OnceLock<PolicyName>,
    count: AtomicU64,
}

impl DeniedByPolicy {
    fn count(&self, name: PolicyName) {
        if let Some(slot) = self.slot_of(name) {
            bump(&slot.count);
        }
    }

    /// The slot of the policy `name`, named now if it has none; `None` when every slot is
    /// taken by others.
    fn slot_of(&self, name: PolicyName) -> Option<&PolicySlot> {
        let seen = self.len.load(Ordering::Acquire);
        let found = self.find(&name, seen);
        // A full table takes no lock for a policy it has no room for.
        if found.is_some() || seen == MAX_POLICIES {
            return found;
        }
        self.join(name)
    }

    fn find(&self, name: &PolicyName, len: usize) -> Option<&PolicySlot> {
        self.slots[..len]
            .iter()
            .find(|slot| slot.name.get() == Some(name))
    }

    /// Names a slot for a policy not found among the named slots, unless another thread just
    /// did or every slot is taken.
    #[cold]
    fn join(&self, name: PolicyName) -> Option<&PolicySlot> {
        let _joining = self.joining.lock();
        let len = self.len.load(Ordering::Acquire);
        if let Some(slot) = self.find(&name, len) {
            return Some(slot);
        }
        let slot = self.slots.get(len)?;
        let _ = slot.name.set(name);
        self.len.store(len + 1, Ordering::Release);
        Some(slot)
    }

    fn snapshot(&self) -> Vec<(PolicyName, u64)> {
        let len = self.len.load(Ordering::Acquire);
        self.slots[..len]
            .iter()
            .filter_map(|slot| Some((*slot.name.get()?, slot.count.load(Ordering::Relaxed))))
            .collect()
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl DecisionCounters {
    /// Counters at 0.
    pub fn new() -> DecisionCounters {
        DecisionCounters::default()
    }

    /// Counts `outcome`: what the layer calls for each request, and what an observer of your
    /// own calls to count and do more.
    #[inline]
    pub fn observe(&self, outcome: &Outcome) {
        let counters = &*self.counters;
        match outcome {
            Outcome::Decided(decision) => counters.decided(decision),
            Outcome::Shadowed(decision) => {
                bump(&counters.shadow_denied);
                let binding = decision.binding_index();
                counters
                    .shadow_denied_by
                    .count(policy_name_at(decision, binding));
            }
            Outcome::OverCapacity(_) => bump(&counters.over_capacity),
            Outcome::Failed(err) => bump(match err {
                Error::Backend { kind, .. } => match kind {
                    BackendErrorKind::Timeout => &counters.timeout_errors,
                    BackendErrorKind::Unavailable => &counters.unavailable_errors,
                    BackendErrorKind::Protocol => &counters.protocol_errors,
                },
                Error::CapacityExhausted { .. } => &counters.over_capacity,
                Error::EmptyKey
                | Error::KeyTooLong { .. }
                | Error::ZeroCost
                | Error::CostExceedsLimit { .. } => &counters.input_errors,
                Error::ClockOutOfRange { .. } | Error::Config(_) => &counters.other_errors,
            }),
        }
    }

    /// The counts as they stand. Each is read on its own (relaxed), so a snapshot taken while
    /// requests are counted may be a request or so apart between counters.
    pub fn snapshot(&self) -> DecisionSnapshot {
        let c = &*self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        DecisionSnapshot {
            allowed: load(&c.allowed),
            denied: load(&c.denied),
            over_capacity: load(&c.over_capacity),
            over_limit_cache: load(&c.over_limit_cache),
            fail_open: load(&c.fail_open),
            fail_closed: load(&c.fail_closed),
            fallback: load(&c.fallback),
            timeout_errors: load(&c.timeout_errors),
            unavailable_errors: load(&c.unavailable_errors),
            protocol_errors: load(&c.protocol_errors),
            input_errors: load(&c.input_errors),
            other_errors: load(&c.other_errors),
            denied_by: c.denied_by.snapshot(),
            shadow_denied: load(&c.shadow_denied),
            shadow_denied_by: c.shadow_denied_by.snapshot(),
        }
    }

    /// Writes the counts in the Prometheus text exposition format (version 0.0.4, served as
    /// `text/plain; version=0.0.4`): see [Metrics](Self#metrics) for the names. Takes a
    /// [`snapshot`](Self::snapshot) and writes it.
    pub fn write_prometheus<W: fmt::Write + ?Sized>(&self, out: &mut W) -> fmt::Result {
        self.snapshot().write_prometheus(out)
    }
}

impl Counters {
    #[inline]
    fn decided(&self, decision: &Decision) {
        let (word, bit) = name_bit(decision);
        if self.named[word].load(Ordering::Relaxed) & bit == 0 {
            self.name_policies(decision);
        }
        let by = decision.decided_by();
        if admits(decision) {
            bump(&self.allowed);
        } else {
            bump(&self.denied);
            if by != DecidedBy::FailClosed {
                // The binding quota of a denial is one that denied.
                let binding = decision.binding_index();
                self.denied_by.count(policy_name_at(decision, binding));
            }
        }
        match by {
            DecidedBy::Backend => {}
            DecidedBy::OverLimitCache => bump(&self.over_limit_cache),
            DecidedBy::FailOpen => bump(&self.fail_open),
            DecidedBy::FailClosed => bump(&self.fail_closed),
            DecidedBy::Fallback => bump(&self.fallback),
        }
    }
}

impl Counters {
    /// Gives every policy of a limiter seen for the first time a slot, so its samples are
    /// there (at 0) before it denies anything.
    #[cold]
    fn name_policies(&self, decision: &Decision) {
        for index in 0..decision.quotas().len() {
            self.denied_by.slot_of(policy_name_at(decision, index));
        }
        let (word, bit) = name_bit(decision);
        self.named[word].fetch_or(bit, Ordering::Relaxed);
    }
}

/// Where the bit of `decision`'s limiter name is in [`Counters::named`].
#[inline]
fn name_bit(decision: &Decision) -> (usize, u64) {
    let index = decision.name_id().index();
    (index / 64, 1 << (index % 64))
}

impl OnDecision for DecisionCounters {
    fn observe(&self, outcome: &Outcome) {
        DecisionCounters::observe(self, outcome);
    }
}

/// The counts of a [`DecisionCounters`] at one moment: see
/// [`DecisionCounters::snapshot`], and [Metrics](DecisionCounters#metrics) for what each
/// counts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DecisionSnapshot {
    /// Requests admitted: `ratewindow_decisions_total{outcome="allowed"}`.
    pub allowed: u64,
    /// Requests refused with a decision (over a quota, or by a fail-closed policy):
    /// `ratewindow_decisions_total{outcome="denied"}`.
    pub denied: u64,
    /// Requests of a new key refused because the limiter was full:
    /// `ratewindow_decisions_total{outcome="over_capacity"}`.
    pub over_capacity: u64,
    /// Decisions of the over-limit cache ([`DecidedBy::OverLimitCache`]):
    /// `ratewindow_decided_by_total{decided_by="over_limit_cache"}`.
    pub over_limit_cache: u64,
    /// Decisions of a fail-open policy ([`DecidedBy::FailOpen`]):
    /// `ratewindow_decided_by_total{decided_by="fail_open"}`.
    pub fail_open: u64,
    /// Decisions of a fail-closed policy ([`DecidedBy::FailClosed`]):
    /// `ratewindow_decided_by_total{decided_by="fail_closed"}`.
    pub fail_closed: u64,
    /// Decisions of a fallback limiter ([`DecidedBy::Fallback`]):
    /// `ratewindow_decided_by_total{decided_by="fallback"}`.
    pub fallback: u64,
    /// Backend timeouts no policy decided: `ratewindow_errors_total{kind="timeout"}`.
    pub timeout_errors: u64,
    /// Backends unreachable and no policy decided:
    /// `ratewindow_errors_total{kind="unavailable"}`.
    pub unavailable_errors: u64,
    /// Backend replies not understood: `ratewindow_errors_total{kind="protocol"}`.
    pub protocol_errors: u64,
    /// Empty or too long keys, costs above a limit: `ratewindow_errors_total{kind="input"}`.
    pub input_errors: u64,
    /// Any other error: `ratewindow_errors_total{kind="other"}`.
    pub other_errors: u64,
    denied_by: Vec<(PolicyName, u64)>,
    /// Requests denied by quotas in shadow alone, and let through:
    /// `ratewindow_decisions_total{outcome="shadow_denied"}`.
    pub shadow_denied: u64,
    shadow_denied_by: Vec<(PolicyName, u64)>,
}

impl DecisionSnapshot {
    /// Requests the limiter could not decide, of every kind:
    /// `ratewindow_decisions_total{outcome="error"}`.
    pub fn errors(&self) -> u64 {
        self.timeout_errors
            + self.unavailable_errors
            + self.protocol_errors
            + self.input_errors
            + self.other_errors
    }

    /// Denials over a quota by the denying quota's policy name, in the order the policies
    /// first denied a request: `ratewindow_denied_total{policy="..."}`.
    pub fn denied_by_policy(&self) -> impl Iterator<Item = (PolicyName, u64)> + '_ {
        self.denied_by.iter().copied()
    }

    /// Shadow denials by the denying quota's policy name, in the order the policies first
    /// denied in shadow: `ratewindow_shadow_denied_total{policy="..."}`.
    pub fn shadow_denied_by_policy(&self) -> impl Iterator<Item = (PolicyName, u64)> + '_ {
        self.shadow_denied_by.iter().copied()
    }

    /// Writes these counts in the Prometheus text exposition format: see
    /// [`DecisionCounters::write_prometheus`].
    pub fn write_prometheus<W: fmt::Write + ?Sized>(&self, out: &mut W) -> fmt::Result {
        counter(
            out,
            "ratewindow_decisions_total",
            "Requests the rate limiter was asked about, by outcome.",
            "outcome",
            [
                ("allowed", self.allowed),
                ("denied", self.denied),
                ("shadow_denied", self.shadow_denied),
                ("over_capacity", self.over_capacity),
                ("error", self.errors()),
            ],
        )?;
        counter(
            out,
            "ratewindow_decided_by_total",
            "Decisions not made by the backend's own counters, by who made them.",
            "decided_by",
            [
                ("over_limit_cache", self.over_limit_cache),
                ("fail_open", self.fail_open),
                ("fail_closed", self.fail_closed),
                ("fallback", self.fallback),
            ],
        )?;
        counter(
            out,
            "ratewindow_errors_total",
            "Requests the rate limiter could not decide, by error kind.",
            "kind",
            [
                ("timeout", self.timeout_errors),
                ("unavailable", self.unavailable_errors),
                ("protocol", self.protocol_errors),
                ("input", self.input_errors),
                ("other", self.other_errors),
            ],
        )?;
        // Policy names are ASCII letters, digits, '-' and '_': nothing to escape.
        counter(
            out,
            "ratewindow_denied_total",
            "Requests denied over a quota, by the denying quota's policy name.",
            "policy",
            self.denied_by_policy(),
        )?;
        counter(
            out,
            "ratewindow_shadow_denied_total",
            "Requests denied by quotas in shadow alone and let through, by policy name.",
            "policy",
            self.shadow_denied_by_policy(),
        )
    }
}

/// One counter family in the text format: its `HELP` and `TYPE` lines, then a sample per
/// `(label value, count)`.
fn counter<W: fmt::Write + ?Sized, V: AsRef<str>>(
    out: &mut W,
    name: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (V, u64)>,
) -> fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} counter")?;
    for (value, count) in samples {
        writeln!(out, "{name}{{{label}=\"{}\"}} {count}", value.as_ref())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ManualClock, MemoryLimiter, Quota};

    fn limiter() -> MemoryLimiter<ManualClock> {
        MemoryLimiter::builder(Quota::per_second(1).unwrap())
            .quota(Quota::per_minute(2).unwrap())
            .quota(Quota::per_second(5).unwrap())
            .clock(ManualClock::at_millis(1_800_000_000_000))
            .build()
            .unwrap()
    }

    #[test]
    fn denials_are_counted_by_plan_and_policy() {
        let free = limiter()
            .plan("free", limiter().quotas().iter().copied())
            .unwrap();
        let pro = free
            .plan(
                "pro",
                [
                    Quota::per_second(2).unwrap(),
                    Quota::per_minute(2).unwrap(),
                    Quota::per_second(5).unwrap(),
                ],
            )
            .unwrap();
        let counters = DecisionCounters::new();
        let observe = |decision| counters.observe(&Outcome::Decided(decision));
        observe(free.check_sync("k").unwrap());
        // Denied by the first quota on the free plan, by the second on the pro plan.
        observe(free.check_sync("k").unwrap());
        observe(pro.check_sync("k").unwrap());
        observe(pro.check_sync("k").unwrap());
        let s = counters.snapshot();
        assert_eq!((s.allowed, s.denied), (2, 2));
        let by_policy: Vec<(String, u64)> = s
            .denied_by_policy()
            .map(|(name, count)| (name.to_string(), count))
            .collect();
        assert_eq!(
            by_policy,
            [
                ("free-per-second".to_string(), 1),
                ("free-per-minute".to_string(), 0),
                ("free-per-second-2".to_string(), 0),
                ("pro-per-second".to_string(), 0),
                ("pro-per-minute".to_string(), 1),
                ("pro-per-second-2".to_string(), 0),
            ]
        );
    }

    #[test]
    fn every_outcome_is_counted_once_under_its_kind() {
        let limiter = limiter();
        let counters = DecisionCounters::new();
        let observe = |outcome: &Outcome| counters.observe(outcome);
        let allowed = limiter.check_sync("k").unwrap();
        let denied = limiter.check_sync("k").unwrap();
        assert!(allowed.is_allowed() && !denied.is_allowed());
        assert_eq!(denied.binding_index(), 0);

        observe(&Outcome::Decided(allowed));
        observe(&Outcome::Decided(denied));
        observe(&Outcome::Decided(
            denied.attributed_to(DecidedBy::OverLimitCache),
        ));
        observe(&Outcome::Decided(
            allowed.attributed_to(DecidedBy::FailOpen),
        ));
        observe(&Outcome::Decided(
            denied.attributed_to(DecidedBy::FailClosed),
        ));
        observe(&Outcome::Decided(
            allowed.attributed_to(DecidedBy::Fallback),
        ));
        observe(&Outcome::Decided(denied.attributed_to(DecidedBy::Fallback)));
        observe(&Outcome::OverCapacity(None));
        observe(&Outcome::Failed(Error::CapacityExhausted { max_keys: 1 }));
        for kind in [
            BackendErrorKind::Timeout,
            BackendErrorKind::Timeout,
            BackendErrorKind::Unavailable,
            BackendErrorKind::Protocol,
        ] {
            observe(&Outcome::Failed(Error::Backend {
                kind,
                detail: String::new(),
            }));
        }
        observe(&Outcome::Failed(Error::EmptyKey));
        observe(&Outcome::Failed(Error::KeyTooLong { len: 9000 }));
        observe(&Outcome::Failed(Error::CostExceedsLimit {
            cost: 9,
            min_limit: 1,
        }));
        observe(&Outcome::Failed(Error::ClockOutOfRange {
            now_ms: u64::MAX,
        }));

        let s = counters.snapshot();
        assert_eq!(
            (s.allowed, s.denied, s.over_capacity, s.errors()),
            (3, 4, 2, 8)
        );
        assert_eq!(
            (s.over_limit_cache, s.fail_open, s.fail_closed, s.fallback),
            (1, 1, 1, 2)
        );
        assert_eq!(
            (
                s.timeout_errors,
                s.unavailable_errors,
                s.protocol_errors,
                s.input_errors,
                s.other_errors
            ),
            (2, 1, 1, 3, 1)
        );
        // The fail-closed denial is not a quota's.
        let by_policy: Vec<(String, u64)> = s
            .denied_by_policy()
            .map(|(name, count)| (name.to_string(), count))
            .collect();
        assert_eq!(
            by_policy,
            [
                ("per-second".to_owned(), 3),
                ("per-minute".to_owned(), 0),
                ("per-second-2".to_owned(), 0)
            ]
        );
    }

    #[test]
    fn a_denial_counts_against_the_quota_that_denied() {
        let limiter = MemoryLimiter::builder(Quota::per_second(5).unwrap())
            .quota(Quota::per_minute(2).unwrap())
            .build()
            .unwrap();
        let counters = DecisionCounters::new();
        for _ in 0..3 {
            counters.observe(&Outcome::Decided(limiter.check_sync("k").unwrap()));
        }
        let s = counters.snapshot();
        assert_eq!((s.allowed, s.denied), (2, 1));
        let by_policy: Vec<(String, u64)> = s
            .denied_by_policy()
            .map(|(name, count)| (name.to_string(), count))
            .collect();
        assert_eq!(
            by_policy,
            [("per-second".to_owned(), 0), ("per-minute".to_owned(), 1)]
        );
    }

    #[test]
    fn prometheus_text_lists_every_family_with_its_type_first() {
        let counters = DecisionCounters::new();
        let mut empty = String::new();
        counters.write_prometheus(&mut empty).unwrap();
        assert!(empty.contains("ratewindow_decisions_total{outcome=\"allowed\"} 0\n"));
        assert!(empty.contains("# TYPE ratewindow_denied_total counter\n"));
        assert!(!empty.contains("ratewindow_denied_total{"), "{empty}");

        let limiter = MemoryLimiter::new(Quota::per_minute(1).unwrap()).unwrap();
        counters.observe(&Outcome::Decided(limiter.check_sync("k").unwrap()));
        counters.observe(&Outcome::Decided(limiter.check_sync("k").unwrap()));
        counters.observe(&Outcome::Shadowed(limiter.check_sync("k").unwrap()));
        let mut text = String::new();
        counters.write_prometheus(&mut text).unwrap();
        let expected = "\
# HELP ratewindow_decisions_total Requests the rate limiter was asked about, by outcome.
# TYPE ratewindow_decisions_total counter
ratewindow_decisions_total{outcome=\"allowed\"} 1
ratewindow_decisions_total{outcome=\"denied\"} 1
ratewindow_decisions_total{outcome=\"shadow_denied\"} 1
ratewindow_decisions_total{outcome=\"over_capacity\"} 0
ratewindow_decisions_total{outcome=\"error\"} 0
# HELP ratewindow_decided_by_total Decisions not made by the backend's own counters, by who made them.
# TYPE ratewindow_decided_by_total counter
ratewindow_decided_by_total{decided_by=\"over_limit_cache\"} 0
ratewindow_decided_by_total{decided_by=\"fail_open\"} 0
ratewindow_decided_by_total{decided_by=\"fail_closed\"} 0
ratewindow_decided_by_total{decided_by=\"fallback\"} 0
# HELP ratewindow_errors_total Requests the rate limiter could not decide, by error kind.
# TYPE ratewindow_errors_total counter
ratewindow_errors_total{kind=\"timeout\"} 0
ratewindow_errors_total{kind=\"unavailable\"} 0
ratewindow_errors_total{kind=\"protocol\"} 0
ratewindow_errors_total{kind=\"input\"} 0
ratewindow_errors_total{kind=\"other\"} 0
# HELP ratewindow_denied_total Requests denied over a quota, by the denying quota's policy name.
# TYPE ratewindow_denied_total counter
ratewindow_denied_total{policy=\"per-minute\"} 1
# HELP ratewindow_shadow_denied_total Requests denied by quotas in shadow alone and let through, by policy name.
# TYPE ratewindow_shadow_denied_total counter
ratewindow_shadow_denied_total{policy=\"per-minute\"} 1
";
        assert_eq!(text, expected);
    }

    #[test]
    fn clones_count_into_the_same_counters() {
        let counters = DecisionCounters::new();
        let clone = counters.clone();
        OnDecision::observe(&clone, &Outcome::Failed(Error::EmptyKey));
        assert_eq!(counters.snapshot().input_errors, 1);
    }
}
