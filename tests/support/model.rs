//! The naive reference: a fixed-window limiter written as plainly as possible, for the property
//! tests to compare every backend against.

use std::collections::HashMap;

use ratewindow::{Alignment, Error, MAX_KEY_LEN, Quota};

use super::StepBack;

/// What the model expects a decision to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expected {
    pub(crate) allowed: bool,
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    pub(crate) reset_epoch_secs: u64,
    pub(crate) retry_after_secs: Option<u64>,
    pub(crate) window_end_ms: u64,
    /// Every quota: (limit, remaining, window end ms).
    pub(crate) quotas: Vec<(u64, u64, u64)>,
}

impl Expected {
    pub(crate) fn of(decision: &ratewindow::Decision) -> Expected {
        Expected {
            allowed: decision.is_allowed(),
            limit: decision.limit(),
            remaining: decision.remaining(),
            reset_epoch_secs: decision.reset_epoch_secs(),
            retry_after_secs: decision.retry_after_secs(),
            window_end_ms: decision.window_end_ms(),
            quotas: decision
                .quotas()
                .iter()
                .map(|q| (q.limit(), q.remaining(), q.window_end_ms()))
                .collect(),
        }
    }
}

/// Per key, per quota and window end: the count. With [`StepBack::LatestWindow`] only the
/// latest window counted in is kept, and it is charged while the clock reads an earlier one.
pub(crate) struct Model {
    quotas: Vec<Quota>,
    alignment: Alignment,
    step_back: StepBack,
    counts: HashMap<(String, usize, i128), u64>,
}

impl Model {
    pub(crate) fn new(quotas: Vec<Quota>, alignment: Alignment, step_back: StepBack) -> Model {
        Model {
            quotas,
            alignment,
            step_back,
            counts: HashMap::new(),
        }
    }

    pub(crate) fn set_quotas(&mut self, quotas: Vec<Quota>) {
        self.quotas = quotas;
    }

    fn validate(key: &str) -> Result<(), Error> {
        if key.is_empty() {
            Err(Error::EmptyKey)
        } else if key.len() > MAX_KEY_LEN {
            Err(Error::KeyTooLong { len: key.len() })
        } else {
            Ok(())
        }
    }

    /// FNV-1a, 64-bit, straight from its definition.
    fn phase(&self, key: &str, window: i128) -> i128 {
        match self.alignment {
            Alignment::Staggered => {
                let mut hash: u64 = 0xcbf29ce484222325;
                for byte in key.bytes() {
                    hash ^= u64::from(byte);
                    hash = hash.wrapping_mul(0x100000001b3);
                }
                i128::from(hash) % window
            }
            _ => 0,
        }
    }

    /// End of the window holding `now`: the smallest `phase + k * window` above `now`.
    fn window_end(&self, key: &str, quota: &Quota, now: u64) -> i128 {
        let window = i128::from(quota.window_ms());
        let phase = self.phase(key, window);
        let start = phase + (i128::from(now) - phase).div_euclid(window) * window;
        start + window
    }

    /// The key's counts as they stand at `now`: (the window end charged, its count) per quota.
    /// An earlier window is empty, or with `LatestWindow`, forgotten; a later window (the clock
    /// went back) keeps its count and is the one charged with `LatestWindow`.
    fn current(&self, key: &str, now: u64) -> Vec<(i128, u64)> {
        (0..self.quotas.len())
            .map(|i| {
                let end = self.window_end(key, &self.quotas[i], now);
                let count = |end| self.counts.get(&(key.to_string(), i, end)).copied();
                match self.step_back {
                    StepBack::OwnWindow => (end, count(end).unwrap_or(0)),
                    StepBack::LatestWindow => self
                        .latest(key, i)
                        .filter(|&latest| latest >= end)
                        .map_or((end, 0), |latest| (latest, count(latest).unwrap_or(0))),
                }
            })
            .collect()
    }

    /// The latest window end counted for `key`'s quota `i`.
    fn latest(&self, key: &str, i: usize) -> Option<i128> {
        self.counts
            .keys()
            .filter(|(k, q, _)| k == key && *q == i)
            .map(|&(_, _, end)| end)
            .max()
    }

    fn store(&mut self, key: &str, counts: &[(i128, u64)]) {
        for (i, &(end, count)) in counts.iter().enumerate() {
            if self.step_back == StepBack::LatestWindow {
                self.counts.retain(|(k, q, _), _| !(k == key && *q == i));
            }
            self.counts.insert((key.to_string(), i, end), count);
        }
    }

    fn decide(&mut self, key: &str, now: u64, cost: u64, charge: bool) -> Result<Expected, Error> {
        Self::validate(key)?;
        if now > 1 << 46 {
            return Err(Error::ClockOutOfRange { now_ms: now });
        }
        let mut current = self.current(key, now);
        let fits: Vec<bool> = current
            .iter()
            .zip(&self.quotas)
            .map(|((_, count), quota)| count + cost <= quota.limit())
            .collect();
        let allowed = fits.iter().all(|&f| f);
        // A peek reports what the request would get: counts after it, if it fits.
        if allowed {
            for (_, count) in &mut current {
                *count += cost;
            }
            if charge {
                self.store(key, &current);
            }
        }
        let quotas: Vec<(u64, u64, u64)> = current
            .iter()
            .zip(&self.quotas)
            .map(|(&(end, count), quota)| {
                (
                    quota.limit(),
                    quota.limit().saturating_sub(count),
                    end as u64,
                )
            })
            .collect();
        // Binding: denied, the denying quota that ends last (first on ties); allowed, the fewest
        // remaining (the latest end on ties, then the first).
        let binding = if allowed {
            let mut best = 0;
            for i in 1..quotas.len() {
                let (a, b) = (quotas[i], quotas[best]);
                if a.1 < b.1 || (a.1 == b.1 && a.2 > b.2) {
                    best = i;
                }
            }
            best
        } else {
            let mut best = None::<usize>;
            for i in (0..quotas.len()).filter(|&i| !fits[i]) {
                if best.is_none_or(|b| quotas[i].2 > quotas[b].2) {
                    best = Some(i);
                }
            }
            best.unwrap()
        };
        let (limit, remaining, end) = quotas[binding];
        Ok(Expected {
            allowed,
            limit,
            remaining,
            reset_epoch_secs: end.div_ceil(1000),
            retry_after_secs: (!allowed).then(|| (end.saturating_sub(now)).div_ceil(1000).max(1)),
            window_end_ms: end,
            quotas,
        })
    }

    pub(crate) fn check_n(&mut self, key: &str, now: u64, cost: u64) -> Result<Expected, Error> {
        Self::validate(key)?;
        if cost == 0 {
            return Err(Error::ZeroCost);
        }
        let min = self.quotas.iter().map(Quota::limit).min().unwrap();
        if cost > min {
            return Err(Error::CostExceedsLimit {
                cost,
                min_limit: min,
            });
        }
        self.decide(key, now, cost, true)
    }

    pub(crate) fn peek(&mut self, key: &str, now: u64) -> Result<Expected, Error> {
        self.decide(key, now, 1, false)
    }

    /// Forgets the key: with `OwnWindow`, the counters of the windows `now` is in (earlier and
    /// later windows keep theirs); with `LatestWindow`, everything.
    pub(crate) fn clear(&mut self, key: &str, now: u64) -> Result<(), Error> {
        Self::validate(key)?;
        match self.step_back {
            StepBack::LatestWindow => self.counts.retain(|(k, _, _), _| k != key),
            StepBack::OwnWindow => {
                for (i, quota) in self.quotas.clone().iter().enumerate() {
                    let end = self.window_end(key, quota, now);
                    self.counts.remove(&(key.to_string(), i, end));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn refund(&mut self, key: &str, now: u64, amount: u64) -> Result<(), Error> {
        Self::validate(key)?;
        if now > 1 << 46 {
            return Err(Error::ClockOutOfRange { now_ms: now });
        }
        // Only the counts charged at `now` are given back (the current window's, or with
        // `LatestWindow` a later one, after the clock stepped back); an ended window stays.
        let current = self.current(key, now);
        for (i, (end, _)) in current.into_iter().enumerate() {
            if let Some(count) = self.counts.get_mut(&(key.to_string(), i, end)) {
                *count = count.saturating_sub(amount);
            }
        }
        Ok(())
    }
}
