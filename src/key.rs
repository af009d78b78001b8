//! What a key (and a request's cost) may be.

use crate::Error;

/// The longest key, in bytes, that limiters accept: long enough for any API key, tenant path or
/// hashed token, short enough that a hostile key cannot make one call expensive.
pub const MAX_KEY_LEN: usize = 8192;

/// Checks a key: any UTF-8 of 1 to [`MAX_KEY_LEN`] bytes.
pub(crate) fn validate(key: &str) -> Result<(), Error> {
    match key.len() {
        0 => Err(Error::EmptyKey),
        len if len > MAX_KEY_LEN => Err(Error::KeyTooLong { len }),
        _ => Ok(()),
    }
}

/// Checks a request: a valid key and a cost of 1 up to the smallest limit (a larger cost could
/// never be admitted, which is an error rather than a denial).
pub(crate) fn validate_request(key: &str, cost: u64, min_limit: u64) -> Result<(), Error> {
    validate(key)?;
    if cost == 0 {
        return Err(Error::ZeroCost);
    }
    if cost > min_limit {
        return Err(Error::CostExceedsLimit { cost, min_limit });
    }
    Ok(())
}
