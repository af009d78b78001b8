//! The IETF `RateLimit` and `RateLimit-Policy` fields: one writer per draft, so a new draft is a
//! new function and a new [`IetfDraft`](super::IetfDraft) variant, never a change to this one.

use ::http::{HeaderMap, HeaderName};

use super::int;
use super::names::{RATELIMIT, RATELIMIT_POLICY};
use super::partition::{self, PartitionKey};
use super::policy::{PolicyName, policy_names};
use super::sf::SfBuf;
use crate::{Decision, MAX_QUOTAS, QuotaState, window};

/// The longest sf-integer, in bytes.
const INTEGER_MAX_LEN: usize = 15;
/// The longest list member: the quoted name, two integer parameters (`;q=`/`;w=` or
/// `;r=`/`;t=`) and a `;pk=:…:` byte sequence.
const ITEM_MAX_LEN: usize =
    2 + PolicyName::MAX_LEN + 2 * (3 + INTEGER_MAX_LEN) + 6 + partition::MAX_ENCODED;
/// The longest field value: every quota's member, separated by `, `.
const FIELD_MAX_LEN: usize = MAX_QUOTAS * ITEM_MAX_LEN + (MAX_QUOTAS - 1) * 2;

/// Writes draft 10's `RateLimit-Policy` (`"name";q=<limit>;w=<window s>`) and `RateLimit`
/// (`"name";r=<remaining>;t=<s to reset>`) for every quota, in configuration order, each member
/// with `;pk=:<base64>:` when a partition key is given.
pub(crate) fn write_draft10(
    decision: &Decision,
    partition: Option<&PartitionKey>,
    headers: &mut HeaderMap,
) {
    let now_ms = decision.decided_at_ms();
    let mut policy = SfBuf::<FIELD_MAX_LEN>::new();
    let mut limits = SfBuf::<FIELD_MAX_LEN>::new();
    for (i, (quota, name)) in decision
        .quotas()
        .iter()
        .zip(policy_names(decision))
        .enumerate()
    {
        if i > 0 {
            policy.push(b", ");
            limits.push(b", ");
        }
        let q = (b'q', quota.limit());
        let w = (b'w', window_secs(quota));
        push_member(&mut policy, &name, [q, w], partition);
        let r = (b'r', quota.remaining());
        let t = (b't', reset_secs(quota, now_ms));
        push_member(&mut limits, &name, [r, t], partition);
    }
    insert(headers, RATELIMIT_POLICY, &policy);
    insert(headers, RATELIMIT, &limits);
}

/// `t`: seconds until the quota's window ends, rounded up and at least 1. The same rounding as
/// [`Decision::retry_after_secs`], so `Retry-After` is never below the `t` of a quota that
/// denied the request.
pub(crate) fn reset_secs(quota: &QuotaState, now_ms: u64) -> u64 {
    window::retry_after_secs(quota.window_end_ms(), now_ms)
}

/// `w`: the window in whole seconds, rounded up (a 1500 ms window is `w=2`): a client pacing
/// itself to `q` per `w` then never exceeds the real quota. The policy name keeps the exact
/// window (`per-1500ms`).
fn window_secs(quota: &QuotaState) -> u64 {
    u64::try_from(quota.window().as_millis())
        .unwrap_or(u64::MAX)
        .div_ceil(1000)
}

/// Appends `"name";a=1;b=2` and, with a partition key, `;pk=:<base64>:`.
fn push_member<const N: usize>(
    field: &mut SfBuf<N>,
    name: &PolicyName,
    params: [(u8, u64); 2],
    partition: Option<&PartitionKey>,
) {
    field.push(b"\"");
    field.push(name.as_bytes());
    field.push(b"\"");
    for (key, value) in params {
        field.push(&[b';', key, b'=']);
        field.push_integer(value);
    }
    if let Some(pk) = partition {
        field.push(b";pk=:");
        field.push(pk.base64_bytes());
        field.push(b":");
    }
}

fn insert<const N: usize>(headers: &mut HeaderMap, name: HeaderName, value: &SfBuf<N>) {
    // Names, digits, `"`, `;`, `=`, `,`, ` `, `:` and base64: always a valid header value.
    if let Some(value) = value.as_bytes().and_then(int::chunked) {
        headers.insert(name, value);
    }
}
