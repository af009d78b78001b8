//! The naive reference: a fixed-window limiter written as plainly as possible, for the property
//! tests to compare every backend against.

use std::collections::HashMap;

use ratewindow::{Alignment, Error, MAX_KEY_LEN, Quota};

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

/// Per key, per quota: (end of the window the count belongs to, count).
pub(crate) struct Model {
    quotas: Vec<Quota>,
    alignment: Alignment,
    counts: HashMap<String, Vec<(i128, u64)>>,
}

impl Model {
    pub(crate) fn new(quotas: Vec<Quota>, alignment: Alignment) -> Model {
        Model {
            quotas,
            alignment,
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

    /// The key's counts as they stand at `now`: older windows are empty; a later window (the
    /// clock went back) keeps its count.
    fn current(&self, key: &str, now: u64) -> Vec<(i128, u64)> {
        let stored = self.counts.get(key);
        self.quotas
            .iter()
            .enumerate()
            .map(|(i, quota)| {
                let end = self.window_end(key, quota, now);
                match stored.map(|s| s[i]) {
                    Some((stored_end, count)) if stored_end >= end => (stored_end, count),
                    _ => (end, 0),
                }
            })
            .collect()
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
                self.counts.insert(key.to_string(), current.clone());
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
            return Err(Error::CostExceedsLimit { cost, limit: min });
        }
        self.decide(key, now, cost, true)
    }

    pub(crate) fn peek(&mut self, key: &str, now: u64) -> Result<Expected, Error> {
        self.decide(key, now, 1, false)
    }

    pub(crate) fn reset(&mut self, key: &str) -> Result<(), Error> {
        Self::validate(key)?;
        self.counts.remove(key);
        Ok(())
    }

    pub(crate) fn refund(&mut self, key: &str, now: u64, amount: u64) -> Result<(), Error> {
        Self::validate(key)?;
        if now > 1 << 46 {
            return Err(Error::ClockOutOfRange { now_ms: now });
        }
        // Only counts of the current window (or a later one, after the clock stepped back)
        // are given back; an ended window stays as it was.
        let ends: Vec<i128> = self
            .quotas
            .iter()
            .map(|q| self.window_end(key, q, now))
            .collect();
        if let Some(stored) = self.counts.get_mut(key) {
            for ((end, count), current_end) in stored.iter_mut().zip(ends) {
                if *end >= current_end {
                    *count = count.saturating_sub(amount);
                }
            }
        }
        Ok(())
    }
}
