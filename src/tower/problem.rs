//! The layer's own answers: `application/problem+json` (RFC 9457) with the status that fits.

use std::fmt::Write;

use ::http::header::CONTENT_TYPE;
use ::http::{HeaderMap, HeaderValue, Response, StatusCode};

use super::future::Outcome;
use super::headers::ResponseHeaders;
use crate::http::{RETRY_AFTER, policy_names};
use crate::{DecidedBy, Decision, Error};

/// `Retry-After` of a fail-closed `503`: a networked limiter tries its backend again within a
/// second, so a retry then may well be decided normally.
const FAIL_CLOSED_RETRY_AFTER_SECS: u64 = 1;

/// A response the layer answers itself, built into the inner service's body type at the end.
#[derive(Debug)]
pub(crate) struct Rejection {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Rejection {
    pub(crate) fn into_response<B: From<String>>(self) -> Response<B> {
        let mut response = Response::new(B::from(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}

/// No key: nothing was charged, so there are no rate-limit headers.
pub(crate) fn missing_key() -> Rejection {
    problem(
        StatusCode::UNAUTHORIZED,
        HeaderMap::new(),
        "missing_key",
        "The request carries no rate-limit key",
        None,
    )
}

/// The answer to anything but an allowed decision.
pub(crate) fn reject(outcome: Outcome, spec: &ResponseHeaders) -> Rejection {
    match outcome {
        Outcome::Decided(decision) => {
            let mut headers = HeaderMap::new();
            spec.write(&decision, &mut headers);
            if decision.decided_by() == DecidedBy::FailClosed {
                // Not the window's end: the limiter tries its backend again within a second.
                headers.insert(RETRY_AFTER, HeaderValue::from(FAIL_CLOSED_RETRY_AFTER_SECS));
                problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    headers,
                    "rate_limiter_unavailable",
                    &format!(
                        "Rate limiting is temporarily unavailable; retry in {FAIL_CLOSED_RETRY_AFTER_SECS} s"
                    ),
                    None,
                )
            } else {
                rate_limited(&decision, headers)
            }
        }
        Outcome::OverCapacity(peek) => {
            // Nothing was charged, so no rate-limit headers; the key's window end is when the
            // limiter can next forget keys (for epoch-aligned windows, every key's).
            let mut headers = HeaderMap::new();
            let mut detail = String::from("Too many keys are active");
            if let Some(peek) = peek {
                let to_reset = peek.time_to_reset();
                let secs = (to_reset.as_secs() + u64::from(to_reset.subsec_nanos() > 0)).max(1);
                headers.insert(RETRY_AFTER, HeaderValue::from(secs));
                let _ = write!(detail, "; retry in {secs} s");
            }
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                headers,
                "over_capacity",
                &detail,
                None,
            )
        }
        Outcome::Failed(err) => limiter_error(&err),
    }
}

fn rate_limited(decision: &Decision, headers: HeaderMap) -> Rejection {
    let binding = decision.binding();
    let binding_name = policy_names(decision).nth(decision.binding_index());
    let retry = decision.retry_after_secs().unwrap_or(1);
    let detail = match binding_name {
        Some(name) => format!(
            "Quota {name} of {} exceeded; retry in {retry} s",
            binding.limit()
        ),
        None => format!("Rate limit exceeded; retry in {retry} s"),
    };
    problem(
        StatusCode::TOO_MANY_REQUESTS,
        headers,
        "rate_limited",
        &detail,
        Some(decision),
    )
}

/// A limiter error: nothing was decided for the key, so there are no rate-limit headers.
fn limiter_error(err: &Error) -> Rejection {
    let (status, code) = match err {
        // The message names the problem (e.g. the key's length), never the key.
        Error::EmptyKey | Error::KeyTooLong { .. } => (StatusCode::BAD_REQUEST, "invalid_key"),
        // It could never be admitted, so not a 429 (which promises success after Retry-After):
        // 413 tells the client the request itself is too large for the quota.
        Error::CostExceedsLimit { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "cost_exceeds_limit"),
        Error::Backend { .. } => (StatusCode::SERVICE_UNAVAILABLE, "rate_limiter_unavailable"),
        Error::CapacityExhausted { .. } => (StatusCode::SERVICE_UNAVAILABLE, "over_capacity"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
    };
    let detail = match err {
        // A backend's own text is for logs, not clients.
        Error::Backend { kind, .. } => format!("Rate limiting is unavailable: backend {kind}"),
        Error::EmptyKey | Error::KeyTooLong { .. } | Error::CostExceedsLimit { .. } => {
            let mut text = err.to_string();
            if let Some(first) = text.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            text
        }
        _ => String::from("Rate limiting failed"),
    };
    problem(status, HeaderMap::new(), code, &detail, None)
}

/// An `application/problem+json` answer; with `denied`, the names of the quotas that denied it
/// as `violated-policies`.
fn problem(
    status: StatusCode,
    mut headers: HeaderMap,
    code: &str,
    detail: &str,
    denied: Option<&Decision>,
) -> Rejection {
    let title = status.canonical_reason().unwrap_or("Error");
    let mut body = String::with_capacity(160);
    body.push_str(r#"{"type":"about:blank","title":"#);
    push_json_string(&mut body, title);
    let _ = write!(body, r#","status":{},"detail":"#, status.as_u16());
    push_json_string(&mut body, detail);
    body.push_str(r#","code":"#);
    push_json_string(&mut body, code);
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
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    Rejection {
        status,
        headers,
        body,
    }
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
