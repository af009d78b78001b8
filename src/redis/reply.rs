//! The scripts' replies, decoded: what a decision is made from.

use ::redis::Value;

use crate::{BackendErrorKind, Error, MAX_QUOTAS};

/// A script's reply, decoded: the time decided at, whether a check was denied, and each
/// counter's count as it stands after the operation.
pub(super) struct Reply {
    pub(super) now_ms: u64,
    pub(super) denied: bool,
    pub(super) counts: [u64; MAX_QUOTAS],
}

impl Reply {
    /// Decodes the reply of [`script::CHECK`](super::script::CHECK) (decided at `local_ms`) or,
    /// with `local_ms` `None`, of [`script::GENERAL`](super::script::GENERAL), over `counters` counters; `None` unless it has the shape
    /// the script returns.
    pub(super) fn parse(reply: &Value, counters: usize, local_ms: Option<u64>) -> Option<Reply> {
        let mut decoded = Reply {
            now_ms: local_ms.unwrap_or(0),
            denied: false,
            counts: [0; MAX_QUOTAS],
        };
        // A counter set below zero by hand counts as empty.
        let count = |value: &Value| match value {
            Value::Int(n) => Some((*n).max(0) as u64),
            _ => None,
        };
        match reply {
            // One counter, cost 1: the count charged to, or minus one more than the count that
            // denied.
            &Value::Int(n) if local_ms.is_some() && counters == 1 => {
                (decoded.denied, decoded.counts[0]) = if n > 0 {
                    (false, n as u64)
                } else {
                    (true, (-1 - n).max(0) as u64)
                };
            }
            // `{now, violated, counts...}` from GENERAL, `{violated, counts...}` from CHECK.
            Value::Array(items) => {
                let mut items = items.as_slice();
                if local_ms.is_none() {
                    let (now, rest) = items.split_first()?;
                    decoded.now_ms = count(now)?;
                    items = rest;
                }
                let (violated, counts) = items.split_first()?;
                if counts.len() != counters {
                    return None;
                }
                decoded.denied = count(violated)? != 0;
                for (slot, value) in decoded.counts.iter_mut().zip(counts) {
                    *slot = count(value)?;
                }
            }
            _ => return None,
        }
        Some(decoded)
    }
}

pub(super) fn unexpected_reply(reply: &Value) -> Error {
    let shape = match reply {
        Value::Array(items) => format!("an array of {}", items.len()),
        Value::Int(_) => "an integer".to_string(),
        _ => "a value of another type".to_string(),
    };
    Error::Backend {
        kind: BackendErrorKind::Protocol,
        detail: format!("unexpected script reply: {shape}"),
    }
}
