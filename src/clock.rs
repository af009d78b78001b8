//! Where limiters read the time: the [`Clock`] trait and its implementations.
//!
//! Windows are aligned to unix time, so a clock reads unix milliseconds. [`CoarseClock`] (the
//! default) is the fast one for servers, [`SystemClock`] the precise one, and [`ManualClock`]
//! the one tests drive by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of unix time in milliseconds.
///
/// Implementations must be cheap: every decision reads the clock once. A clock may step
/// backwards (NTP, a manual set); limiters never panic on it, never admit extra requests
/// because of it, and never lose counted units (a count recorded in a later window is kept).
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the unix epoch. Times before the epoch read as 0.
    fn now_ms(&self) -> u64;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

impl<C: Clock + ?Sized> Clock for Box<C> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

/// The wall clock through [`SystemTime::now`]: precise to the millisecond, but each read costs a
/// full `clock_gettime(CLOCK_REALTIME)` (about 25 ns on a virtual machine).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        system_now_ms()
    }
}

fn system_now_ms() -> u64 {
    // Seconds and milliseconds in u64: `Duration::as_millis` would go through u128.
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        d.as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(d.subsec_millis()))
    })
}

/// The wall clock as the kernel last stored it, through `CLOCK_REALTIME_COARSE` on Linux: a read
/// costs a few nanoseconds instead of tens.
///
/// Precision: it lags real time by up to one kernel tick (`clock_getres(CLOCK_REALTIME_COARSE)`:
/// 4 ms at the common HZ=250, 10 ms at HZ=100). Decisions stay exact against the time this clock
/// reads, so each window still admits its limit; it is the window boundaries that are seen up
/// to one tick late, like a clock skewed by that much. On other systems it is [`SystemClock`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CoarseClock;

impl Clock for CoarseClock {
    #[cfg(target_os = "linux")]
    #[inline]
    fn now_ms(&self) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the call, and
        // CLOCK_REALTIME_COARSE exists on every Linux since 2.6.32.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
        if rc != 0 || ts.tv_sec < 0 {
            return system_now_ms();
        }
        (ts.tv_sec as u64)
            .saturating_mul(1000)
            .saturating_add(ts.tv_nsec as u64 / 1_000_000)
    }

    #[cfg(not(target_os = "linux"))]
    fn now_ms(&self) -> u64 {
        system_now_ms()
    }
}

/// The clock limiters use unless told otherwise.
pub type DefaultClock = CoarseClock;

/// A clock that only moves when told to. Clones share one time, so a test can hold a clone,
/// hand another to the limiter, and move both at once.
///
/// Public so that servers can test their own rate limiting without sleeping.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use ratewindow::{Clock, ManualClock};
///
/// let clock = ManualClock::at_millis(1_000);
/// let limiter_side = clock.clone();
/// clock.advance(Duration::from_secs(59));
/// assert_eq!(limiter_side.now_ms(), 60_000);
/// clock.set_millis(10); // may step backwards
/// assert_eq!(limiter_side.now_ms(), 10);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now_ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `now_ms` unix milliseconds.
    pub fn at_millis(now_ms: u64) -> ManualClock {
        ManualClock {
            now_ms: Arc::new(AtomicU64::new(now_ms)),
        }
    }

    /// A clock reading the given time.
    pub fn at(time: SystemTime) -> ManualClock {
        let ms = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        ManualClock::at_millis(ms)
    }

    /// Moves the time forward by `by` (whole milliseconds; saturates at `u64::MAX`).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .now_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(by))
            });
    }

    /// Sets the time to `now_ms`, forwards or backwards.
    pub fn set_millis(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_clock_is_close_to_system_clock() {
        // Not a timing test: both read the same kernel time, the coarse one at most a tick
        // behind. 1 s of slack covers a descheduled thread.
        let before = SystemClock.now_ms();
        let coarse = CoarseClock.now_ms();
        let after = SystemClock.now_ms();
        assert!(
            coarse + 1000 >= before && coarse <= after + 1000,
            "{before} {coarse} {after}"
        );
    }

    #[test]
    fn manual_clock_saturates() {
        let clock = ManualClock::at_millis(u64::MAX - 1);
        clock.advance(Duration::MAX);
        assert_eq!(clock.now_ms(), u64::MAX);
        let boxed: Box<dyn Clock> = Box::new(clock.clone());
        assert_eq!(boxed.now_ms(), u64::MAX);
        assert_eq!(ManualClock::at(UNIX_EPOCH).now_ms(), 0);
    }
}
