//! [`Alignment`]: where each key's windows start.

/// Where windows start.
///
/// # Example
///
/// ```
/// use ratewindow::{Alignment, ManualClock, MemoryLimiter, Quota};
///
/// let clock = ManualClock::at_millis(1_700_000_000_000);
/// let limiter = MemoryLimiter::builder(Quota::per_minute(10)?)
///     .alignment(Alignment::Staggered)
///     .clock(clock)
///     .build()?;
/// let a = limiter.check_sync("tenant-a")?;
/// let b = limiter.check_sync("tenant-b")?;
/// // Each key's minute starts at its own second, the same in every process.
/// assert_ne!(a.window_end_ms(), b.window_end_ms());
/// # Ok::<(), ratewindow::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Alignment {
    /// Windows start at whole multiples of the window since the unix epoch (a minute window
    /// starts at :00 of every minute), the same for every key, process and backend.
    #[default]
    Epoch,
    /// Each key's windows are shifted by a phase in `[0, window)` derived from a fixed hash
    /// (FNV-1a, 64-bit) of the key, identical in every process, so that keys' resets spread
    /// across the window instead of all clients returning at :00.
    Staggered,
}

impl Alignment {
    /// The phases of `key`'s windows: computes the key's hash once for all its quotas.
    pub(crate) fn phases(self, key: &str) -> Phases {
        Phases(match self {
            Alignment::Epoch => None,
            Alignment::Staggered => Some(crate::window::stagger_hash(key)),
        })
    }

    /// The largest phase any key can have: what state cleanup must assume when it no longer
    /// knows the key.
    pub(crate) fn max_offset_ms(self, window_ms: u64) -> u64 {
        match self {
            Alignment::Epoch => 0,
            Alignment::Staggered => window_ms - 1,
        }
    }
}

/// One key's window phases, from [`Alignment::phases`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phases(Option<u64>);

impl Phases {
    /// The phase of the key's windows of `window_ms`: 0 for epoch-aligned windows.
    pub(crate) fn of(self, window_ms: u64) -> u64 {
        self.0.map_or(0, |hash| hash % window_ms)
    }

    /// Whether windows are epoch-aligned (all phases 0).
    pub(crate) fn is_epoch(self) -> bool {
        self.0.is_none()
    }
}
