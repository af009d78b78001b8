//! Building limiters: too many quotas, a limit too large for its window, and quotas that do
//! not match the limiter's windows are typed errors.

use ratewindow::{ConfigError, MemoryLimiter, Quota};

#[test]
fn configuration_errors_are_typed() {
    let minute = Quota::per_minute(10).unwrap();
    let too_many =
        (0..ratewindow::MAX_QUOTAS).fold(MemoryLimiter::builder(minute), |b, _| b.quota(minute));
    assert_eq!(
        too_many.build().unwrap_err(),
        ConfigError::TooManyQuotas {
            count: ratewindow::MAX_QUOTAS + 1
        }
    );
    assert_eq!(
        MemoryLimiter::new(Quota::from_millis(1 << 17, 1).unwrap()).unwrap_err(),
        ConfigError::LimitTooLarge {
            limit: 1 << 17,
            max: (1 << 17) - 1
        }
    );
    assert!(MemoryLimiter::new(Quota::from_millis((1 << 17) - 1, 1).unwrap()).is_ok());
    assert!(MemoryLimiter::new(Quota::per_minute((1 << 33) - 1).unwrap()).is_ok());

    let limiter = MemoryLimiter::builder(minute)
        .quota(Quota::per_hour(100).unwrap())
        .build()
        .unwrap();
    assert_eq!(
        limiter.with_quotas([minute]).unwrap_err(),
        ConfigError::IncompatibleQuotas
    );
    assert_eq!(
        limiter
            .with_quotas([Quota::per_hour(100).unwrap(), minute])
            .unwrap_err(),
        ConfigError::IncompatibleQuotas
    );
    let raised = limiter
        .with_quotas([
            Quota::per_minute(20).unwrap(),
            Quota::per_hour(200).unwrap(),
        ])
        .unwrap();
    assert_eq!(raised.quotas()[1].limit(), 200);
}
