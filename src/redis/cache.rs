//! The local over-limit cache: keys Redis has found over a quota, denied here until that
//! quota's window ends, without a round trip.
//!
//! It is exact, not a heuristic: a denied request consumes nothing and counts only grow within a
//! window, so once a quota is used up, every request of the key is denied until the window ends
//! (unless a refund or clear comes, which through this limiter clears the entry). Under abuse,
//! one key hammering far over its limit costs Redis about one call per window.
//!
//! "Until the window ends" is by this process's clock. Where that clock and the one that
//! decides windows differ (local clocks skewed between processes, or Redis's `TIME` against a
//! local clock up to one coarse tick behind), a cached denial can outlast the window by that
//! difference: the cache only ever denies longer, never admits more.
//!
//! An entry answers only while every quota's window is the one Redis reported: when the
//! shortest window ends, the next call goes to Redis, since the next window may already have a
//! count (another process's clock ahead, or this one's before it stepped back). So a key far
//! over a per-minute quota that also has a per-second one costs one call per second.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::fixed_window;
use crate::{DecidedBy, Decision, Shadow};

/// What Redis would answer at `now_ms` for a key it last answered with `last`, as far as this
/// process can tell: while every quota's window is still the one `last` saw, each keeps its
/// count (a used-up one stays used up, since counts only grow within a window). `None` once a
/// window has ended: the next window's count is Redis's to tell (another process, or this one
/// before its clock stepped back, may have counted in it already).
fn replay(last: &Decision, now_ms: u64, cost: u64) -> Option<Decision> {
    // A clock that stepped back (or is out of range) goes to Redis, which keeps every window's
    // counter; the snapshot cannot tell which of them to use.
    if now_ms < last.decided_at_ms() || now_ms > crate::window::MAX_TIME_MS {
        return None;
    }
    if last
        .quotas()
        .iter()
        .any(|state| now_ms >= state.window_end_ms())
    {
        return None;
    }
    // Only a used-up quota makes the denial certain for every cost.
    if !last
        .quotas()
        .iter()
        .any(|state| state.used() >= state.limit())
    {
        return None;
    }
    let decision = fixed_window::decide(now_ms, last.quotas(), cost);
    Some(decision.attributed_to(DecidedBy::OverLimitCache))
}

struct Entry {
    /// The last decision Redis made for the key, which found a quota used up.
    decision: Decision,
    /// The decision's time minus the local clock's at that moment: maps local readings to the
    /// decision's time (which may be Redis's).
    offset_ms: i64,
}

/// Bounded: when full, ended entries are dropped, and if none had ended the new one is not kept.
pub(crate) struct OverLimitCache {
    capacity: usize,
    entries: Mutex<HashMap<String, Entry>>,
}

impl OverLimitCache {
    pub(crate) fn new(capacity: usize) -> OverLimitCache {
        OverLimitCache {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The denial of a request of `cost` for `key` at local time `now_ms`, if the key is known to
    /// be over a quota.
    pub(crate) fn get(&self, key: &str, now_ms: u64, cost: u64) -> Option<Decision> {
        if self.capacity == 0 {
            return None;
        }
        let mut entries = self.entries.lock();
        let entry = entries.get(key)?;
        let now_ms = now_ms.saturating_add_signed(entry.offset_ms);
        match replay(&entry.decision, now_ms, cost) {
            Some(denied) => Some(denied),
            None => {
                entries.remove(key);
                None
            }
        }
    }

    /// Remembers `decision` (made by Redis at local time `now_ms`) if it shows a used-up quota
    /// that is enforced (not in `shadow`): a quota in shadow denies nothing, and the requests
    /// it lets through change the other quotas' counts, which a replay would not show.
    pub(crate) fn remember(&self, key: &str, decision: &Decision, now_ms: u64, shadow: Shadow) {
        let used_up = decision
            .quotas()
            .iter()
            .enumerate()
            .any(|(i, q)| !shadow.contains(i) && q.used() >= q.limit());
        if self.capacity == 0 || !used_up {
            return;
        }
        let offset_ms = decision.decided_at_ms() as i64 - now_ms as i64;
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity && !entries.contains_key(key) {
            entries.retain(|_, entry| {
                let at = now_ms.saturating_add_signed(entry.offset_ms);
                replay(&entry.decision, at, 1).is_some()
            });
            if entries.len() >= self.capacity {
                return;
            }
        }
        entries.insert(
            key.to_owned(),
            Entry {
                decision: *decision,
                offset_ms,
            },
        );
    }

    /// Forgets `key`, after a clear or a refund.
    pub(crate) fn forget(&self, key: &str) {
        if self.capacity != 0 {
            self.entries.lock().remove(key);
        }
    }
}
