//! [`MemoryLimiter`]: the in-process backend, deciding on sharded counters with the fixed-window
//! rule in [`fixed_window`](crate::fixed_window).

use std::future::{Future, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::cell::{Cell, MultiCell};
use super::key_id::{KeyId, KeyIds};
use super::shards::{Missed, Shards};
use crate::decision::QuotaState;
use crate::fixed_window;
use crate::quota::QuotaSet;
use crate::window::{self, Counter, Packing, Window};
use crate::{
    Alignment, Clock, ConfigError, DecidedBy, Decision, DefaultClock, Error, MAX_QUOTAS, Quota,
    RateLimiter, Shadow, key,
};

/// The default cap on tracked keys: 2^20. A key takes a 24-byte slot (one quota; 48 bytes with
/// several) in tables kept between a quarter and three quarters full, so the cap bounds the
/// counters to about 50–100 MB (one quota).
const DEFAULT_MAX_KEYS: usize = 1 << 20;

/// An exact fixed-window rate limiter for one process.
///
/// Counters live in sharded open-addressing tables: deciding for a key that already has a
/// counter takes only its shard's read lock and one compare-and-swap on the key's packed
/// `(window, count)` word (with several quotas, a per-key lock so that they are charged all or
/// nothing). Decisions are exact under any concurrency: `n` threads racing on one key admit
/// exactly `limit` per window.
///
/// Memory stays bounded without a cleanup task: a shard sweeps out ended windows whenever its
/// table must grow and when it is full, and [`max_keys`](MemoryLimiterBuilder::max_keys) caps the keys
/// with open windows. When that cap is reached, existing keys are still decided exactly and a
/// *new* key gets [`Error::CapacityExhausted`] until windows end, rather than the limiter
/// forgetting someone's count (which would admit extra requests) or denying a key it never saw
/// (which would let a key spray lock out real clients). Servers choose what to answer then.
///
/// Clones share counters. The type is also a [`RateLimiter`] whose futures are ready at once,
/// so `limiter.check(key).await` means the same here as on every backend. Its own synchronous
/// methods carry a `_sync` suffix: `limiter.check_sync(key)?` decides without a future.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use ratewindow::{ManualClock, MemoryLimiter, Quota};
///
/// let clock = ManualClock::at_millis(1_699_999_980_000); // a minute boundary
/// let limiter = MemoryLimiter::builder(Quota::per_minute(100)?)
///     .quota(Quota::per_hour(1000)?) // both must admit; both are charged
///     .clock(clock.clone())
///     .build()?;
///
/// let decision = limiter.check_sync("api-key-1")?;
/// assert!(decision.is_allowed());
/// assert_eq!((decision.limit(), decision.remaining()), (100, 99));
/// assert_eq!(decision.reset_epoch_secs(), 1_700_000_040);
///
/// // A cost larger than a limit can never succeed: an error, not a denial.
/// assert!(limiter.check_n_sync("api-key-1", 101).is_err());
///
/// clock.advance(Duration::from_secs(60));
/// // A peek is the decision the next request would get, without consuming it.
/// let next = limiter.peek_sync("api-key-1")?;
/// assert_eq!(next.quotas()[0].remaining(), 99); // a new minute
/// assert_eq!(next.quotas()[1].remaining(), 998); // the same hour
/// # Ok::<(), ratewindow::Error>(())
/// ```
#[derive(Clone)]
pub struct MemoryLimiter<C = DefaultClock> {
    quotas: QuotaSet,
    packings: [Packing; MAX_QUOTAS],
    alignment: Alignment,
    clock: C,
    store: Arc<Store>,
}

/// Shared by clones. Read on every call and almost never written, so it is aligned to keep
/// whatever the allocator places next to it (often written) off its cache lines.
#[repr(align(128))]
struct Store {
    key_ids: KeyIds,
    /// Per quota, the index of the epoch-aligned window last seen: on most calls this replaces
    /// a 64-bit division with a load and a multiplication.
    epoch_windows: [AtomicU64; MAX_QUOTAS],
    max_keys: usize,
    counters: Counters,
}

enum Counters {
    One(Shards<AtomicU64>),
    Many(Shards<MultiCell>),
}

/// One call's view of time: the time it decides at and each quota's window for the key.
struct Frame {
    now_ms: u64,
    windows: [Window; MAX_QUOTAS],
    offsets: [u64; MAX_QUOTAS],
}

impl MemoryLimiter {
    /// A limiter enforcing one quota, with epoch-aligned windows, the default clock and the
    /// default key cap (2^20).
    ///
    /// # Errors
    ///
    /// [`ConfigError::LimitTooLarge`] if the limit cannot be counted exactly for that window.
    pub fn new(quota: Quota) -> Result<MemoryLimiter, ConfigError> {
        Self::builder(quota).build()
    }

    /// Starts configuring a limiter whose first quota is `quota`.
    pub fn builder(quota: Quota) -> MemoryLimiterBuilder {
        MemoryLimiterBuilder {
            quotas: vec![quota],
            alignment: Alignment::Epoch,
            max_keys: DEFAULT_MAX_KEYS,
            clock: DefaultClock::default(),
            name: None,
            shadow: Shadow::NONE,
        }
    }
}

/// Runs `$body` with `$shards` bound to whichever store the limiter has: the code is the same,
/// only the cell type differs.
macro_rules! with_shards {
    ($self:ident, $shards:ident => $body:expr) => {
        match &$self.store.counters {
            Counters::One($shards) => $body,
            Counters::Many($shards) => $body,
        }
    };
}

impl<C: Clock> MemoryLimiter<C> {
    /// Decides a request of `cost` units for `key` and, if every quota admits it, charges it to
    /// all of them.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyKey`], [`Error::KeyTooLong`], [`Error::ZeroCost`],
    /// [`Error::CostExceedsLimit`], [`Error::ClockOutOfRange`], and
    /// [`Error::CapacityExhausted`] for a new key when the key cap is reached.
    #[inline]
    pub fn check_n_sync(&self, key: &str, cost: u64) -> Result<Decision, Error> {
        // One comparison each for an empty or too long key and for a zero or too large cost;
        // which error it is, is worked out off the hot path.
        if key.len().wrapping_sub(1) >= key::MAX_KEY_LEN
            || cost.wrapping_sub(1) >= self.quotas.min_limit()
        {
            return Err(self.invalid_request(key, cost));
        }
        match &self.store.counters {
            Counters::One(cells) => self.charge_one(cells, key, cost),
            Counters::Many(cells) => self.charge_many(cells, key, cost),
        }
    }

    /// [`check_n_sync`](Self::check_n_sync) with a cost of 1.
    ///
    /// # Errors
    ///
    /// As [`check_n_sync`](Self::check_n_sync).
    #[inline]
    pub fn check_sync(&self, key: &str) -> Result<Decision, Error> {
        self.check_n_sync(key, 1)
    }

    /// The decision a request of cost 1 would get now. Consumes nothing and creates no state.
    /// Like that decision, it reports `remaining` as it would be after the request.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyKey`], [`Error::KeyTooLong`], [`Error::ClockOutOfRange`].
    pub fn peek_sync(&self, key: &str) -> Result<Decision, Error> {
        key::validate(key)?;
        with_shards!(self, shards => self.peek_in(shards, key))
    }

    /// Forgets the key's usage in its current windows.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyKey`], [`Error::KeyTooLong`].
    pub fn clear_sync(&self, key: &str) -> Result<(), Error> {
        key::validate(key)?;
        let id = self.store.key_ids.of(key);
        with_shards!(self, shards => shards.remove(id));
        Ok(())
    }

    /// Gives back `amount` units to each quota's current window, never going below zero.
    /// Units counted in windows that have ended stay ended.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyKey`], [`Error::KeyTooLong`], [`Error::ClockOutOfRange`].
    pub fn refund_sync(&self, key: &str, amount: u64) -> Result<(), Error> {
        key::validate(key)?;
        // Only a counter of the current (or, after a clock step back, a later) window.
        self.give_back(
            key,
            amount,
            self.clock.now_ms(),
            u8::MAX,
            |counter, window| counter >= window,
        )
    }

    /// Gives back `amount` of the units that `decision`, an allowed decision of this limiter
    /// for `key`, charged, in the windows it charged them to: see
    /// [`RateLimiter::release`]. A window that has ended since keeps its count.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratewindow::{ManualClock, MemoryLimiter, quota};
    ///
    /// let clock = ManualClock::at_millis(1_800_000_000_000);
    /// let limiter = MemoryLimiter::builder(quota!(2 per minute)).clock(clock.clone()).build()?;
    /// let reserved = limiter.check_sync("k")?;
    /// limiter.release_sync("k", 1, &reserved)?;
    /// assert_eq!(limiter.peek_sync("k")?.remaining(), 1); // as if never charged
    ///
    /// let late = limiter.check_sync("k")?;
    /// clock.advance(Duration::from_secs(60));
    /// limiter.check_sync("k")?;
    /// limiter.release_sync("k", 1, &late)?; // its minute has ended: nothing to give back
    /// assert_eq!(limiter.peek_sync("k")?.remaining(), 0);
    /// # Ok::<(), ratewindow::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::EmptyKey`], [`Error::KeyTooLong`], [`Error::ClockOutOfRange`].
    pub fn release_sync(&self, key: &str, amount: u64, decision: &Decision) -> Result<(), Error> {
        key::validate(key)?;
        if decision.decided_by() != DecidedBy::Backend {
            return Ok(());
        }
        self.release_charged(key, amount, decision)
    }

    /// [`release_sync`](Self::release_sync) for a decision known to have charged this
    /// limiter (a fallback limiter's, whatever it was attributed to).
    pub(crate) fn release_charged(
        &self,
        key: &str,
        amount: u64,
        decision: &Decision,
    ) -> Result<(), Error> {
        // Only the counters the decision charged (a shadow denial: the enforced quotas'; a
        // denial: none), of the windows it was made in.
        let charged = decision.charged_mask();
        if charged == 0 {
            return Ok(());
        }
        self.give_back(
            key,
            amount,
            decision.decided_at_ms(),
            charged,
            |counter, window| counter == window,
        )
    }

    /// Gives back `amount` units to each counter of `quotas` (bit `i`: quota `i`) whose window
    /// index `takes(counter, window)` given the window of `at_ms`, never going below zero.
    fn give_back(
        &self,
        key: &str,
        amount: u64,
        at_ms: u64,
        quotas: u8,
        takes: impl Fn(u64, u64) -> bool,
    ) -> Result<(), Error> {
        let frame = self.frame(key, at_ms)?;
        let id = self.store.key_ids.of(key);
        let give_back = |counters: &mut [Counter]| {
            let mut changed = false;
            for (i, (counter, window)) in counters.iter_mut().zip(&frame.windows).enumerate() {
                let chosen = quotas & (1 << i) != 0;
                if chosen && takes(counter.index, window.index) && counter.count > 0 && amount > 0 {
                    counter.count = counter.count.saturating_sub(amount);
                    changed = true;
                }
            }
            (changed, ())
        };
        // An absent key has nothing to give back.
        let _ = with_shards!(self, shards => shards.existing(id, |cell| cell.transact(self.packings(), give_back)));
        Ok(())
    }

    /// A limiter that shares this one's counters (and clock, alignment and key cap) but enforces
    /// new limits, e.g. after a configuration reload. Counts carry over: raising a limit
    /// mid-window admits up to the new limit at once; lowering one denies until the count falls
    /// under it in a later window. The limiter keeps its name.
    ///
    /// # Errors
    ///
    /// [`ConfigError::IncompatibleQuotas`] unless `quotas` has the same windows in the same order;
    /// [`ConfigError::LimitTooLarge`] as for [`MemoryLimiterBuilder::build`].
    pub fn with_quotas(&self, quotas: impl IntoIterator<Item = Quota>) -> Result<Self, ConfigError>
    where
        C: Clone,
    {
        let quotas: Vec<Quota> = quotas.into_iter().collect();
        let mut next = self.clone();
        next.quotas = self.quotas.with_limits(&quotas, max_limit)?;
        Ok(next)
    }

    /// A plan: a limiter named `name` that shares this one's counters but enforces its own
    /// limits, as [`with_quotas`](Self::with_quotas) makes. A key's count is the same under
    /// every plan of one limiter, so a key moved to another plan mid-window keeps its count:
    /// a larger limit admits the difference at once, a smaller one denies until the count
    /// falls under it. Its decisions carry `name` ([`Decision::name`]).
    ///
    /// # Example
    ///
    /// ```
    /// use ratewindow::{ManualClock, MemoryLimiter, quota};
    ///
    /// let clock = ManualClock::at_millis(1_800_000_000_000);
    /// let free = MemoryLimiter::builder(quota!(2 per minute))
    ///     .quota(quota!(100 per hour))
    ///     .name("free")
    ///     .clock(clock)
    ///     .build()?;
    /// let pro = free.plan("pro", [quota!(5 per minute), quota!(1000 per hour)])?;
    ///
    /// free.check_sync("k")?;
    /// assert!(!free.check_n_sync("k", 2)?.is_allowed());
    /// // Upgraded mid-window: the count carries over.
    /// let decision = pro.check_n_sync("k", 2)?;
    /// assert_eq!((decision.name(), decision.remaining()), (Some("pro"), 2));
    /// # Ok::<(), ratewindow::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`with_quotas`](Self::with_quotas), and [`ConfigError::InvalidSetting`] for a name
    /// that is not 1 to 32 ASCII letters, digits, `-` or `_`.
    pub fn plan(
        &self,
        name: &str,
        quotas: impl IntoIterator<Item = Quota>,
    ) -> Result<Self, ConfigError>
    where
        C: Clone,
    {
        let mut plan = self.with_quotas(quotas)?;
        plan.quotas = plan.quotas.named(name)?;
        Ok(plan)
    }

    /// A limiter that shares this one's counters (and everything else) with the quotas of
    /// `shadow` in shadow instead: see [`Shadow`]. E.g. `with_shadow(Shadow::ALL)` for a dry
    /// run of the whole limiter.
    pub fn with_shadow(&self, shadow: Shadow) -> Self
    where
        C: Clone,
    {
        let mut next = self.clone();
        next.quotas = next.quotas.shadowed(shadow);
        next
    }

    /// The quotas this limiter enforces, in order.
    pub fn quotas(&self) -> &[Quota] {
        self.quotas.as_slice()
    }

    /// The smallest limit: no larger cost is ever admitted.
    #[cfg(feature = "redis")]
    pub(crate) fn min_limit(&self) -> u64 {
        self.quotas.min_limit()
    }

    /// How many keys currently hold state, including ones whose windows ended but were not yet
    /// swept. Takes every shard's read lock in turn: for tests and metrics, not the hot path.
    pub fn tracked_keys(&self) -> usize {
        with_shards!(self, shards => shards.len())
    }

    #[inline]
    fn packings(&self) -> &[Packing] {
        &self.packings[..self.quotas.len()]
    }

    /// Finds each quota's window for `key` at `now_ms`.
    #[inline(always)]
    fn frame(&self, key: &str, now_ms: u64) -> Result<Frame, Error> {
        let mut frame = Frame {
            now_ms,
            windows: [Window {
                index: 0,
                end_ms: 0,
            }; MAX_QUOTAS],
            offsets: [0; MAX_QUOTAS],
        };
        let phases = self.alignment.phases(key);
        for (i, quota) in self.quotas().iter().enumerate() {
            let window_ms = quota.window_ms();
            if !phases.is_epoch() {
                frame.offsets[i] = phases.of(window_ms);
                frame.windows[i] = window::locate(now_ms, window_ms, frame.offsets[i])?;
                continue;
            }
            let cache = &self.store.epoch_windows[i];
            frame.windows[i] =
                match window::cached(cache.load(Ordering::Relaxed), now_ms, window_ms) {
                    Some(window) => window,
                    None => refresh(cache, now_ms, window_ms)?,
                };
        }
        Ok(frame)
    }

    /// The decision on `cost` over one key's counters, each rolled into its current window
    /// first; when `charge` and admitted, the counters take the cost (a peek stores nothing).
    #[inline]
    fn decide(&self, frame: &Frame, counters: &mut [Counter], cost: u64, charge: bool) -> Decision {
        let mut found = [QuotaState::default(); MAX_QUOTAS];
        for (i, (counter, quota)) in counters.iter_mut().zip(self.quotas()).enumerate() {
            *counter = counter.rolled_to(frame.windows[i].index);
            found[i] = self.state(*quota, *counter, frame.offsets[i]);
        }
        let shadow = self.quotas.shadow();
        let decision =
            fixed_window::decide_with_shadow(frame.now_ms, &found[..counters.len()], cost, shadow)
                .marked(self.quotas.name(), shadow);
        // Admitted, or denied by quotas in shadow alone: each quota's state has the count it
        // now holds (the cost in it where charged).
        if charge && (decision.is_allowed() || decision.is_shadow_denied()) {
            for (counter, state) in counters.iter_mut().zip(decision.quotas()) {
                counter.count = state.used();
            }
        }
        decision
    }

    /// `quota`'s state as `counter` holds it, in windows of phase `offset_ms`.
    #[inline(always)]
    fn state(&self, quota: Quota, counter: Counter, offset_ms: u64) -> QuotaState {
        let window_ms = quota.window_ms();
        let end_ms = window::end_of(counter.index, window_ms, offset_ms);
        QuotaState::new(quota.limit(), counter.count, window_ms, end_ms)
    }

    /// Why `check_n` refused a request before deciding it.
    #[cold]
    #[inline(never)]
    fn invalid_request(&self, key: &str, cost: u64) -> Error {
        match key::validate_request(key, cost, self.quotas.min_limit()) {
            Err(error) => error,
            Ok(()) => unreachable!("check_n refuses only invalid requests"),
        }
    }

    /// `check_n` for a valid key and cost with one quota: the hot path. It does only what one
    /// quota needs (one window, one compare-and-swap, the decision built in place) and is
    /// inlined whole into `check_n`, so its speed does not depend on what the compiler chooses to
    /// inline into the caller. Anything rare (a new key, a new window, an error) is a call.
    #[inline(always)]
    fn charge_one(
        &self,
        cells: &Shards<AtomicU64>,
        key: &str,
        cost: u64,
    ) -> Result<Decision, Error> {
        let now_ms = self.clock.now_ms();
        let quota = self.quotas.first();
        let (window, offset_ms) = self.first_window(key, now_ms)?;
        let id = self.store.key_ids.of(key);
        // The cell's own compare-and-swap loop: the counter as the request found it, charged
        // when the cost fits.
        let found = cells.existing(id, |cell| {
            cell.transact(&self.packings[..1], |counters| {
                let found = counters[0].rolled_to(window.index);
                if !fixed_window::fits(found.count, cost, quota.limit()) {
                    return (false, found);
                }
                counters[0] = Counter {
                    index: found.index,
                    count: found.count + cost,
                };
                (true, found)
            })
        });
        match found {
            Ok(found) => {
                let found = self.state(quota, found, offset_ms);
                let decision = fixed_window::decide_one(now_ms, found, cost);
                Ok(decision.marked(self.quotas.name(), self.quotas.shadow()))
            }
            Err(_) => self.charge_new(cells, id, key, cost, self.frame(key, now_ms)?),
        }
    }

    /// The first quota's window for `key` at `now_ms`, and its phase.
    #[inline(always)]
    fn first_window(&self, key: &str, now_ms: u64) -> Result<(Window, u64), Error> {
        let window_ms = self.quotas.first().window_ms();
        if self.alignment == Alignment::Epoch {
            let cache = &self.store.epoch_windows[0];
            if let Some(window) = window::cached(cache.load(Ordering::Relaxed), now_ms, window_ms) {
                return Ok((window, 0));
            }
        }
        self.locate_first(key, now_ms)
    }

    /// [`first_window`](Self::first_window) when the cached window does not hold `now_ms`, or
    /// windows are staggered (every call then: not cold, only out of line).
    #[inline(never)]
    fn locate_first(&self, key: &str, now_ms: u64) -> Result<(Window, u64), Error> {
        let frame = self.frame(key, now_ms)?;
        Ok((frame.windows[0], frame.offsets[0]))
    }

    /// `check_n` for a valid key and cost with several quotas.
    #[inline(never)]
    fn charge_many(
        &self,
        cells: &Shards<MultiCell>,
        key: &str,
        cost: u64,
    ) -> Result<Decision, Error> {
        let id = self.store.key_ids.of(key);
        let frame = self.frame(key, self.clock.now_ms())?;
        // The common path: the key exists, and its shard's read lock is all it takes.
        match cells.existing(id, |cell| self.charge_cell(cell, &frame, cost)) {
            Ok(decision) => Ok(decision),
            Err(_) => self.charge_new(cells, id, key, cost, frame),
        }
    }

    /// Charges one cell: the compare-and-swap (or per-key lock) around [`decide`](Self::decide).
    #[inline(always)]
    fn charge_cell<V: Cell>(&self, cell: &V, frame: &Frame, cost: u64) -> Decision {
        cell.transact(self.packings(), |counters| {
            let decision = self.decide(frame, counters, cost, true);
            (
                decision.is_allowed() || decision.is_shadow_denied(),
                decision,
            )
        })
    }

    /// `charge` for a key that was absent a moment ago: create its cell under the shard's write
    /// lock, unless the key cap forbids it.
    #[cold]
    #[inline(never)]
    fn charge_new<V: Cell>(
        &self,
        shards: &Shards<V>,
        id: KeyId,
        key: &str,
        cost: u64,
        mut frame: Frame,
    ) -> Result<Decision, Error> {
        loop {
            let now_ms = frame.now_ms;
            let ended = |cell: &V| self.ended(cell, now_ms);
            let next_end = || self.next_end_ms(now_ms);
            match shards.insert(id, ended, next_end, now_ms, |cell| {
                self.charge_cell(cell, &frame, cost)
            }) {
                Ok(decision) => return Ok(decision),
                Err(Missed::Full) => {
                    return Err(Error::CapacityExhausted {
                        max_keys: self.store.max_keys,
                    });
                }
                // The key's shard swept after our clock reading, possibly dropping this key's
                // count for our window; charge the request as of the sweep instead, as time
                // never moves a counter back.
                Err(Missed::Stale { swept_at_ms }) => frame = self.frame(key, swept_at_ms)?,
            }
        }
    }

    /// `peek` for a valid key.
    fn peek_in<V: Cell>(&self, shards: &Shards<V>, key: &str) -> Result<Decision, Error> {
        let id = self.store.key_ids.of(key);
        let frame = self.frame(key, self.clock.now_ms())?;
        let peek = |counters: &mut [Counter]| (false, self.decide(&frame, counters, 1, false));
        match shards.existing(id, |cell| cell.transact(self.packings(), peek)) {
            Ok(decision) => Ok(decision),
            Err(swept_at_ms) => {
                // Absent: what a first request would get, as of the shard's last sweep if our
                // clock reading is older (see `charge`).
                let frame = if swept_at_ms > frame.now_ms {
                    self.frame(key, swept_at_ms)?
                } else {
                    frame
                };
                let mut fresh = [Counter::default(); MAX_QUOTAS];
                Ok(self.decide(&frame, &mut fresh[..self.quotas.len()], 1, false))
            }
        }
    }

    /// Whether every window a cell counts in has ended, so that dropping it changes nothing.
    fn ended<V: Cell>(&self, cell: &V, now_ms: u64) -> bool {
        let len = self.quotas.len();
        let mut counters = [Counter::default(); MAX_QUOTAS];
        cell.load(self.packings(), &mut counters[..len]);
        counters[..len]
            .iter()
            .zip(self.quotas())
            .all(|(counter, quota)| {
                let window_ms = quota.window_ms();
                window::certainly_ended(
                    counter.index,
                    window_ms,
                    self.alignment.max_offset_ms(window_ms),
                    now_ms,
                )
            })
    }

    /// The next time after `now_ms` at which some counter could end: the next boundary of the
    /// shortest window.
    fn next_end_ms(&self, now_ms: u64) -> u64 {
        let shortest = self
            .quotas()
            .iter()
            .map(|q| q.window_ms())
            .min()
            .unwrap_or(1);
        window::next_boundary(now_ms, shortest)
    }
}

impl<C: Clock> RateLimiter for MemoryLimiter<C> {
    fn check_n(
        &self,
        key: &str,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, Error>> + Send {
        ready(MemoryLimiter::check_n_sync(self, key, cost))
    }

    fn peek(&self, key: &str) -> impl Future<Output = Result<Decision, Error>> + Send {
        ready(MemoryLimiter::peek_sync(self, key))
    }

    fn clear(&self, key: &str) -> impl Future<Output = Result<(), Error>> + Send {
        ready(MemoryLimiter::clear_sync(self, key))
    }

    fn refund(&self, key: &str, amount: u64) -> impl Future<Output = Result<(), Error>> + Send {
        ready(MemoryLimiter::refund_sync(self, key, amount))
    }

    fn release(
        &self,
        key: &str,
        amount: u64,
        decision: &Decision,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        ready(MemoryLimiter::release_sync(self, key, amount, decision))
    }

    /// Always `Some`: the in-memory decision never waits.
    fn check_now(&self, key: &str, cost: u64) -> Option<Result<Decision, Error>> {
        Some(MemoryLimiter::check_n_sync(self, key, cost))
    }
}

impl<C> std::fmt::Debug for MemoryLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLimiter")
            .field("quotas", &self.quotas.as_slice())
            .field("alignment", &self.alignment)
            .field("max_keys", &self.store.max_keys)
            .finish_non_exhaustive()
    }
}

/// Configures a [`MemoryLimiter`]; made by [`MemoryLimiter::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryLimiterBuilder<C = DefaultClock> {
    quotas: Vec<Quota>,
    alignment: Alignment,
    max_keys: usize,
    clock: C,
    name: Option<String>,
    shadow: Shadow,
}

impl<C: Clock> MemoryLimiterBuilder<C> {
    /// Adds a quota; a request must fit every quota (up to [`MAX_QUOTAS`]).
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quotas.push(quota);
        self
    }

    /// Where windows start (default: [`Alignment::Epoch`]).
    pub fn alignment(mut self, alignment: Alignment) -> Self {
        self.alignment = alignment;
        self
    }

    /// The most keys with open windows the limiter holds (default 2^20; at least 1). The cap is
    /// split evenly over the shards, so a new key can be refused slightly before the total is
    /// reached when keys spread unevenly; memory never exceeds the cap.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(1);
        self
    }

    /// The clock to read (default: [`CoarseClock`](crate::CoarseClock)).
    pub fn clock<C2: Clock>(self, clock: C2) -> MemoryLimiterBuilder<C2> {
        MemoryLimiterBuilder {
            quotas: self.quotas,
            alignment: self.alignment,
            max_keys: self.max_keys,
            clock,
            name: self.name,
            shadow: self.shadow,
        }
    }

    /// Puts the quotas of `shadow` in shadow (a dry run): a request only they deny is served,
    /// its decision saying it would have been denied ([`Decision::is_shadow_denied`]), and is
    /// charged to the enforced quotas only. See [`Shadow`]. None by default.
    pub fn shadow(mut self, shadow: Shadow) -> Self {
        self.shadow = shadow;
        self
    }

    /// Names the limiter, e.g. after the route or plan it serves: its decisions carry the name
    /// ([`Decision::name`]), and the policy names in their headers start with it
    /// (`search-per-minute`). 1 to 32 ASCII letters, digits, `-` or `_`; none by default.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Builds the limiter.
    ///
    /// # Errors
    ///
    /// [`ConfigError::TooManyQuotas`] past [`MAX_QUOTAS`]; [`ConfigError::LimitTooLarge`] when a limit is
    /// larger than one word can count next to its window index (2^17 − 1 for 1 ms windows,
    /// 2^27 − 1 per second, 2^33 − 1 per minute); [`ConfigError::InvalidSetting`] for a
    /// [`name`](Self::name) that is not 1 to 32 ASCII letters, digits, `-` or `_`.
    pub fn build(self) -> Result<MemoryLimiter<C>, ConfigError> {
        let mut quotas = QuotaSet::new(&self.quotas, max_limit)?.shadowed(self.shadow);
        if let Some(name) = &self.name {
            quotas = quotas.named(name)?;
        }
        let mut packings = [Packing::default(); MAX_QUOTAS];
        for (packing, quota) in packings.iter_mut().zip(quotas.iter()) {
            *packing = Packing::for_window(quota.window_ms());
        }
        let counters = match quotas.len() {
            1 => Counters::One(Shards::new(self.max_keys)),
            _ => Counters::Many(Shards::new(self.max_keys)),
        };
        Ok(MemoryLimiter {
            quotas,
            packings,
            alignment: self.alignment,
            clock: self.clock,
            store: Arc::new(Store {
                key_ids: KeyIds::random(),
                epoch_windows: Default::default(),
                max_keys: self.max_keys,
                counters,
            }),
        })
    }
}

/// Locates the epoch-aligned window holding `now_ms` and caches its index: once per window and
/// quota, off the hot path.
#[cold]
#[inline(never)]
fn refresh(cache: &AtomicU64, now_ms: u64, window_ms: u64) -> Result<Window, Error> {
    let window = window::locate(now_ms, window_ms, 0)?;
    cache.store(window.index, Ordering::Relaxed);
    Ok(window)
}

/// The largest limit one word counts next to the index of `quota`'s window.
fn max_limit(quota: Quota) -> u64 {
    Packing::for_window(quota.window_ms()).max_count()
}
