//! A fixed-capacity byte buffer that Structured Field Values (RFC 9651) are serialized into, so
//! a header value is built on the stack and copied once into its `HeaderValue`.

use crate::headers::HeaderInt;

/// The largest Integer a structured field may carry (RFC 9651, section 3.3.1): 15 digits.
/// Larger values (a limit near `u64::MAX`) are written as this, which no client can exhaust.
pub(crate) const MAX_INTEGER: u64 = 999_999_999_999_999;

/// Serialized bytes, at most `N` of them.
pub(crate) struct SfBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflowed: bool,
}

impl<const N: usize> SfBuf<N> {
    pub(crate) fn new() -> Self {
        SfBuf {
            buf: [0; N],
            len: 0,
            overflowed: false,
        }
    }

    /// Appends `bytes`, or marks the buffer as overflowed if they do not fit. Callers size `N`
    /// for the longest value they write, so an overflow is a bug, never a panic.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        match self.buf.get_mut(self.len..end) {
            Some(slot) => {
                slot.copy_from_slice(bytes);
                self.len = end;
            }
            None => self.overflowed = true,
        }
    }

    /// Appends a non-negative sf-integer, clamped to [`MAX_INTEGER`].
    pub(crate) fn push_integer(&mut self, value: u64) {
        self.push(HeaderInt::new(value.min(MAX_INTEGER)).as_bytes());
    }

    /// The bytes written, or `None` after an overflow.
    pub(crate) fn as_bytes(&self) -> Option<&[u8]> {
        debug_assert!(!self.overflowed, "SfBuf<{N}> is too small");
        (!self.overflowed).then(|| &self.buf[..self.len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_clamped_to_fifteen_digits() {
        let mut buf = SfBuf::<64>::new();
        buf.push_integer(0);
        buf.push(b",");
        buf.push_integer(MAX_INTEGER);
        buf.push(b",");
        buf.push_integer(u64::MAX);
        assert_eq!(
            buf.as_bytes(),
            Some(&b"0,999999999999999,999999999999999"[..])
        );
    }

    #[test]
    fn overflow_is_reported_not_truncated() {
        let mut buf = SfBuf::<4>::new();
        buf.push(b"abc");
        buf.push(b"de");
        assert!(buf.overflowed);
        assert_eq!(buf.len, 3);
    }
}
