//! What a key may be.

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
