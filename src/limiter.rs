//! The [`RateLimiter`] trait that every backend implements, and its object-safe twin
//! [`DynRateLimiter`] for backends chosen at run time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{Decision, Error};

/// A fixed-window rate limiter: one interface for every backend.
///
/// Methods return futures so that networked backends fit; the in-memory backend's futures are
/// ready at once. Keys are any UTF-8 of 1 to [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes.
///
/// Semantics every backend shares (and the conformance suite checks):
/// - a request is admitted only if **every** quota admits it, and only then is it charged to all;
/// - a denied request consumes nothing: later decisions are exactly as if it never came;
/// - a cost above a limit is [`Error::CostExceedsLimit`], not a denial (it could never succeed).
///
/// # Example: generic over the backend
///
/// ```
/// use ratewindow::{MemoryLimiter, Quota, RateLimiter};
///
/// async fn handle<L: RateLimiter>(limiter: &L, api_key: &str) -> u16 {
///     match limiter.check(api_key).await {
///         Ok(decision) if decision.is_allowed() => 200,
///         Ok(_) => 429,
///         Err(_) => 400,
///     }
/// }
///
/// let limiter = MemoryLimiter::new(Quota::per_minute(1)?)?;
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async {
/// assert_eq!(handle(&limiter, "key").await, 200);
/// assert_eq!(handle(&limiter, "key").await, 429);
/// assert_eq!(handle(&limiter, "").await, 400);
/// # });
/// # Ok::<(), ratewindow::Error>(())
/// ```
pub trait RateLimiter: Send + Sync {
    /// Decides a request of `cost` units and, if it is allowed, charges it to every quota.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyKey`], [`Error::KeyTooLong`], [`Error::ZeroCost`],
    /// [`Error::CostExceedsLimit`], or a backend's own failure.
    fn check_n(&self, key: &str, cost: u64)
    -> impl Future<Output = Result<Decision, Error>> + Send;

    /// [`check_n`](RateLimiter::check_n) with a cost of 1.
    ///
    /// # Errors
    ///
    /// As [`check_n`](RateLimiter::check_n).
    fn check(&self, key: &str) -> impl Future<Output = Result<Decision, Error>> + Send {
        self.check_n(key, 1)
    }

    /// The decision a request of cost 1 would get now, consuming nothing.
    /// Like that decision, it reports `remaining` as it would be after the request.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyKey`], [`Error::KeyTooLong`], or a backend's own failure.
    fn peek(&self, key: &str) -> impl Future<Output = Result<Decision, Error>> + Send;

    /// Forgets the key's usage in its current windows.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyKey`], [`Error::KeyTooLong`], or a backend's own failure.
    fn clear(&self, key: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// Gives back `amount` units to every quota's current window (never below zero), e.g. for a
    /// request that turned out not to count.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyKey`], [`Error::KeyTooLong`], or a backend's own failure.
    fn refund(&self, key: &str, amount: u64) -> impl Future<Output = Result<(), Error>> + Send;

    /// Gives back `amount` of the units that `decision` (an allowed decision of this limiter
    /// for `key`, or a shadow denial, which charged the enforced quotas alone) charged, to the
    /// quotas and windows it charged them to: what settling a request by its
    /// response needs (reserve with [`check_n`](RateLimiter::check_n), release if it turns out
    /// not to count). A window that has ended since keeps its count, and a decision that
    /// charged nothing (a denial, a failure policy's admission without a count) gives nothing
    /// back. Never below zero.
    ///
    /// Unlike [`refund`](RateLimiter::refund), a release never reaches a window the decision
    /// was not made in: releasing in the next window must not hand out a unit of it.
    ///
    /// The default gives nothing back: a limiter that cannot tell windows apart keeps the
    /// units counted, which never admits more than a limit. Both backends of this crate give
    /// them back.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyKey`], [`Error::KeyTooLong`], or a backend's own failure (the units then
    /// stay counted).
    fn release(
        &self,
        key: &str,
        amount: u64,
        decision: &Decision,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = (key, amount, decision);
        std::future::ready(Ok(()))
    }

    /// The decision [`check_n`](RateLimiter::check_n) would give, made and charged now, if
    /// this limiter can make it without waiting; `None` (the default) if it cannot, and then
    /// nothing was charged. In-memory limiters can; networked ones cannot.
    ///
    /// Callers that can use an answer at once (e.g. the tower layer) try this first, and await
    /// `check_n` only when it returns `None`.
    ///
    /// # Errors
    ///
    /// As [`check_n`](RateLimiter::check_n).
    fn check_now(&self, key: &str, cost: u64) -> Option<Result<Decision, Error>> {
        let _ = (key, cost);
        None
    }
}

/// A boxed future, as [`DynRateLimiter`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe form of [`RateLimiter`], implemented for every `RateLimiter`, so a backend can
/// be chosen at run time (from configuration) and held as `Arc<dyn DynRateLimiter>`, which is
/// itself a `RateLimiter`. Each call boxes its future: one small allocation, which the static
/// form avoids.
///
/// # Example: backend chosen at run time
///
/// ```
/// use std::sync::Arc;
/// use ratewindow::{DynRateLimiter, MemoryLimiter, Quota, RateLimiter};
///
/// fn from_config(spec: &str) -> Result<Arc<dyn DynRateLimiter>, ratewindow::Error> {
///     Ok(Arc::new(MemoryLimiter::new(spec.parse::<Quota>()?)?))
/// }
///
/// let limiter = from_config("2/1m")?;
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async {
/// assert!(limiter.check("key").await?.is_allowed());
/// // A peek shows what the next request would get: the last unit.
/// assert_eq!(limiter.peek("key").await?.remaining(), 0);
/// # Ok::<(), ratewindow::Error>(())
/// # })?;
/// # Ok::<(), ratewindow::Error>(())
/// ```
pub trait DynRateLimiter: Send + Sync {
    /// [`RateLimiter::check_n`], boxed.
    ///
    /// # Errors
    ///
    /// As [`RateLimiter::check_n`].
    fn check_n_boxed<'a>(
        &'a self,
        key: &'a str,
        cost: u64,
    ) -> BoxFuture<'a, Result<Decision, Error>>;
    /// [`RateLimiter::peek`], boxed.
    ///
    /// # Errors
    ///
    /// As [`RateLimiter::peek`].
    fn peek_boxed<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Decision, Error>>;
    /// [`RateLimiter::clear`], boxed.
    ///
    /// # Errors
    ///
    /// As [`RateLimiter::clear`].
    fn clear_boxed<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>>;
    /// [`RateLimiter::refund`], boxed.
    ///
    /// # Errors
    ///
    /// As [`RateLimiter::refund`].
    fn refund_boxed<'a>(&'a self, key: &'a str, amount: u64) -> BoxFuture<'a, Result<(), Error>>;
    /// [`RateLimiter::release`], boxed.
    ///
    /// # Errors
    ///
    /// As [`RateLimiter::release`].
    fn release_boxed<'a>(
        &'a self,
        key: &'a str,
        amount: u64,
        decision: &'a Decision,
    ) -> BoxFuture<'a, Result<(), Error>>;
    /// [`RateLimiter::check_now`]: nothing to box.
    ///
    /// # Errors
    ///
    /// As [`RateLimiter::check_now`].
    fn check_now_dyn(&self, key: &str, cost: u64) -> Option<Result<Decision, Error>>;
}

impl<L: RateLimiter> DynRateLimiter for L {
    fn check_n_boxed<'a>(
        &'a self,
        key: &'a str,
        cost: u64,
    ) -> BoxFuture<'a, Result<Decision, Error>> {
        Box::pin(self.check_n(key, cost))
    }
    fn peek_boxed<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Decision, Error>> {
        Box::pin(self.peek(key))
    }
    fn clear_boxed<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.clear(key))
    }
    fn refund_boxed<'a>(&'a self, key: &'a str, amount: u64) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.refund(key, amount))
    }
    fn release_boxed<'a>(
        &'a self,
        key: &'a str,
        amount: u64,
        decision: &'a Decision,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.release(key, amount, decision))
    }
    fn check_now_dyn(&self, key: &str, cost: u64) -> Option<Result<Decision, Error>> {
        self.check_now(key, cost)
    }
}

// `async fn` names both borrowed lifetimes, which the boxed future's single one cannot.
impl RateLimiter for dyn DynRateLimiter {
    async fn check_n(&self, key: &str, cost: u64) -> Result<Decision, Error> {
        self.check_n_boxed(key, cost).await
    }
    async fn peek(&self, key: &str) -> Result<Decision, Error> {
        self.peek_boxed(key).await
    }
    async fn clear(&self, key: &str) -> Result<(), Error> {
        self.clear_boxed(key).await
    }
    async fn refund(&self, key: &str, amount: u64) -> Result<(), Error> {
        self.refund_boxed(key, amount).await
    }
    async fn release(&self, key: &str, amount: u64, decision: &Decision) -> Result<(), Error> {
        self.release_boxed(key, amount, decision).await
    }
    fn check_now(&self, key: &str, cost: u64) -> Option<Result<Decision, Error>> {
        self.check_now_dyn(key, cost)
    }
}

/// Forwards to the limiter behind a pointer, so `Arc<dyn DynRateLimiter>`,
/// `Box<dyn DynRateLimiter>`, `Arc<MemoryLimiter>` and `&MemoryLimiter` are limiters too.
macro_rules! forward {
    ($($pointer:ty),*) => {$(
        impl<L: RateLimiter + ?Sized> RateLimiter for $pointer {
            fn check_n(&self, key: &str, cost: u64) -> impl Future<Output = Result<Decision, Error>> + Send {
                (**self).check_n(key, cost)
            }
            fn peek(&self, key: &str) -> impl Future<Output = Result<Decision, Error>> + Send {
                (**self).peek(key)
            }
            fn clear(&self, key: &str) -> impl Future<Output = Result<(), Error>> + Send {
                (**self).clear(key)
            }
            fn refund(&self, key: &str, amount: u64) -> impl Future<Output = Result<(), Error>> + Send {
                (**self).refund(key, amount)
            }
            fn release(&self, key: &str, amount: u64, decision: &Decision) -> impl Future<Output = Result<(), Error>> + Send {
                (**self).release(key, amount, decision)
            }
            fn check_now(&self, key: &str, cost: u64) -> Option<Result<Decision, Error>> {
                (**self).check_now(key, cost)
            }
        }
    )*};
}

forward!(Arc<L>, Box<L>, &L);
