//! Limiter names (a plan's, a route's): what the header policy names start with.
//!
//! A [`Decision`](crate::Decision) carries its limiter's name as a one-byte id into a table
//! of names interned for the life of the process. The id fits in the decision's padding, so a
//! decision stays 112 bytes and returning one costs the same with a name as without; a
//! process holds at most [`MAX_NAMES`] distinct names, each stored once however many limiters
//! (or reloads of a configuration) use it.

use std::sync::OnceLock;

use parking_lot::Mutex;

use crate::ConfigError;

/// The most distinct names one process interns.
pub(crate) const MAX_NAMES: usize = 255;

/// The longest name, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 32;

/// Entry `i` is the name of id `i + 1`; written once, under `INTERNED`, and read without a lock.
static NAMES: [OnceLock<Box<str>>; MAX_NAMES] = [const { OnceLock::new() }; MAX_NAMES];

/// How many entries of `NAMES` are written.
static INTERNED: Mutex<usize> = Mutex::new(0);

/// A limiter's name as a decision carries it; `NameId::NONE` for a limiter without one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct NameId(u8);

impl NameId {
    /// No name: policy names are the quota's alone (`per-minute`).
    pub(crate) const NONE: NameId = NameId(0);

    /// The id of `name`, interning it the first time it is seen.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidSetting`] for a name that is empty, longer than 32 bytes or has
    /// other bytes than ASCII letters, digits, `-` and `_` (it becomes part of header values),
    /// or when [`MAX_NAMES`] distinct names are already interned.
    pub(crate) fn intern(name: &str) -> Result<NameId, ConfigError> {
        let valid = (1..=MAX_NAME_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(ConfigError::InvalidSetting {
                reason: "a limiter name is 1 to 32 ASCII letters, digits, '-' or '_'",
            });
        }
        let mut interned = INTERNED.lock();
        if let Some(at) = NAMES[..*interned]
            .iter()
            .position(|slot| slot.get().is_some_and(|known| **known == *name))
        {
            return Ok(NameId(at as u8 + 1));
        }
        if *interned == MAX_NAMES {
            return Err(ConfigError::InvalidSetting {
                reason: "more than 255 distinct limiter names in one process",
            });
        }
        let _ = NAMES[*interned].set(name.into());
        *interned += 1;
        Ok(NameId(*interned as u8))
    }

    /// The id as an index, from 0 ([`NameId::NONE`]) to [`MAX_NAMES`].
    #[cfg(feature = "tower")]
    #[inline]
    pub(crate) fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The name, or `None` for [`NameId::NONE`].
    #[inline]
    pub(crate) fn as_str(self) -> Option<&'static str> {
        let index = usize::from(self.0).checked_sub(1)?;
        NAMES[index].get().map(|name| &**name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_interned_once_and_read_back() {
        let pro = NameId::intern("pro-test").unwrap();
        assert_eq!(NameId::intern("pro-test").unwrap(), pro);
        assert_eq!(pro.as_str(), Some("pro-test"));
        let other = NameId::intern("free_test-2").unwrap();
        assert_ne!(other, pro);
        assert_eq!(other.as_str(), Some("free_test-2"));
        assert_eq!(NameId::NONE.as_str(), None);
    }

    #[test]
    fn names_that_could_break_a_header_are_refused() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in ["", "pro plan", "pro\"", "pro,x", "é", "a;b", long.as_str()] {
            assert!(
                matches!(NameId::intern(bad), Err(ConfigError::InvalidSetting { .. })),
                "{bad:?}"
            );
        }
        assert!(NameId::intern(&"a".repeat(MAX_NAME_LEN)).is_ok());
    }
}
