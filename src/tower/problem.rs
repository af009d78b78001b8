//! [`ProblemDetails`]: the layer's default answers, `application/problem+json` (RFC 9457) with
//! the status that fits.

use std::fmt::Write;

use ::http::header::CONTENT_TYPE;
use ::http::{HeaderValue, Response};

use super::headers::{FAIL_CLOSED_RETRY_AFTER_SECS, over_capacity_retry_secs};
use super::hooks::{OnRejection, Rejection, RejectionKind};
use super::outcome::Outcome;
use crate::http::policy_names;
use crate::{Decision, Error};

/// The layer's default answers: an `application/problem+json` document (RFC 9457) with the
/// [`RejectionKind`]'s status and members `type` (`about:blank`: the status says what
/// happened), `title` (the status's reason phrase), `status`, `detail` (a sentence for people;
/// never the key), `code` ([`RejectionKind::code`], for programs) and, on a `429`,
/// `violated-policies`: the [policy names](crate::http::policy_names) of the quotas that denied
/// the request, e.g. `["per-minute"]`.
///
/// The body is built with `From<String>`: axum's `Body`, `String` and
/// `http_body_util::Full<Bytes>` all have it. A custom
/// [`on_rejection`](super::RateLimitLayer::on_rejection) hook can answer some kinds itself and
/// hand the rest to this one.
///
/// # Example
///
/// ```
/// use http::{Response, StatusCode};
/// use ratewindow::tower::{HeaderKey, OnRejection, ProblemDetails, RateLimitLayer, Rejection, RejectionKind};
/// use ratewindow::{MemoryLimiter, Quota};
///
/// let layer = RateLimitLayer::new(MemoryLimiter::new(Quota::per_minute(100)?)?, HeaderKey::from_static("x-api-key"))
///     .on_rejection(|rejection: &Rejection<'_>| match rejection.kind() {
///         // A page of its own for people without a key; the rest as usual.
///         RejectionKind::MissingKey => {
///             let mut response = Response::new(String::from("Sign up for a key at https://example.com/keys"));
///             *response.status_mut() = StatusCode::UNAUTHORIZED;
///             response
///         }
///         _ => ProblemDetails.respond(rejection),
///     });
/// # let _ = layer;
/// # Ok::<(), ratewindow::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProblemDetails;

impl<B: From<String>> OnRejection<B> for ProblemDetails {
    fn respond(&self, rejection: &Rejection<'_>) -> Response<B> {
        let kind = rejection.kind();
        let denied = match (kind, rejection.outcome()) {
            (RejectionKind::RateLimited, Some(Outcome::Decided(decision))) => Some(decision),
            _ => None,
        };
        let body = document(kind, &detail(rejection), denied);
        let mut response = Response::new(B::from(body));
        *response.status_mut() = kind.status();
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

/// The `detail` member: what happened, for people. Never the key, nor a backend's own text.
fn detail(rejection: &Rejection<'_>) -> String {
    match (rejection.kind(), rejection.outcome()) {
        (RejectionKind::RateLimited, Some(Outcome::Decided(decision))) => rate_limited(decision),
        (RejectionKind::Unavailable, Some(Outcome::Decided(_))) => format!(
            "Rate limiting is temporarily unavailable; retry in {FAIL_CLOSED_RETRY_AFTER_SECS} s"
        ),
        (RejectionKind::OverCapacity, outcome) => {
            let mut detail = String::from("Too many keys are active");
            if let Some(secs) = outcome.and_then(over_capacity_retry_secs) {
                let _ = write!(detail, "; retry in {secs} s");
            }
            detail
        }
        (RejectionKind::MissingKey, _) => String::from("The request carries no rate-limit key"),
        (_, Some(Outcome::Failed(err))) => limiter_error(err),
        _ => String::from("Rate limiting failed"),
    }
}

fn rate_limited(decision: &Decision) -> String {
    let binding = decision.binding();
    let binding_name = policy_names(decision).nth(decision.binding_index());
    let retry = decision.retry_after_secs().unwrap_or(1);
    match binding_name {
        Some(name) => format!(
            "Quota {name} of {} exceeded; retry in {retry} s",
            binding.limit()
        ),
        None => format!("Rate limit exceeded; retry in {retry} s"),
    }
}

/// A limiter error, for people: the message names the problem (e.g. the key's length), never
/// the key; a backend's own text is for logs, not clients.
fn limiter_error(err: &Error) -> String {
    match err {
        Error::Backend { kind, .. } => format!("Rate limiting is unavailable: backend {kind}"),
        Error::EmptyKey | Error::KeyTooLong { .. } | Error::CostExceedsLimit { .. } => {
            let mut text = err.to_string();
            if let Some(first) = text.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            text
        }
        _ => String::from("Rate limiting failed"),
    }
}

/// The `application/problem+json` document; with `denied`, the names of the quotas that denied
/// it as `violated-policies`.
fn document(kind: RejectionKind, detail: &str, denied: Option<&Decision>) -> String {
    let status = kind.status();
    let title = status.canonical_reason().unwrap_or("Error");
    let mut body = String::with_capacity(160);
    body.push_str(r#"{"type":"about:blank","title":"#);
    push_json_string(&mut body, title);
    let _ = write!(body, r#","status":{},"detail":"#, status.as_u16());
    push_json_string(&mut body, detail);
    body.push_str(r#","code":"#);
    push_json_string(&mut body, kind.code());
    if let Some(decision) = denied {
        body.push_str(r#","violated-policies":["#);
        let violated = policy_names(decision)
            .enumerate()
            .filter(|(index, _)| decision.denied_by(*index));
        for (i, (_, name)) in violated.enumerate() {
            if i > 0 {
                body.push(',');
            }
            push_json_string(&mut body, &name);
        }
        body.push(']');
    }
    body.push('}');
    body
}

/// `text` as a JSON string, quoted and escaped.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#.replace("\\n", "\\u000a"));
    }
}
