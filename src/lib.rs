//! Exact fixed-window rate limiting.
//!
//! todo
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![deny(unsafe_code)]

mod alignment;
mod clock;
mod decision;
mod error;
mod key;
mod limiter;
mod memory;
mod quota;
mod window;

pub use alignment::Alignment;
pub use clock::{Clock, CoarseClock, DefaultClock, ManualClock, SystemClock};
pub use decision::{
    Decision, HeaderInt, Headers, MAX_QUOTAS, QuotaState, RETRY_AFTER, X_RATELIMIT_LIMIT,
    X_RATELIMIT_REMAINING, X_RATELIMIT_RESET,
};
pub use error::Error;
pub use key::MAX_KEY_LEN;
pub use limiter::{BoxFuture, DynRateLimiter, RateLimiter};
pub use memory::{MemoryLimiter, MemoryLimiterBuilder};
pub use quota::Quota;
