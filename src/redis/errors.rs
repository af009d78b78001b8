//! Failed calls to Redis: what failed (the master of the call's slot, or the call alone), and
//! what the caller sees of it, redis-rs's errors as the crate's [`Error`] (with a
//! [`BackendErrorKind`]) scrubbed of keys.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::redis::{ErrorKind, RedisError, RedisResult, ServerErrorKind};

use crate::{BackendErrorKind, ConfigError, Error};

/// A call to Redis that got no reply, by what failed. On a Cluster the difference decides how
/// much the failure breaker shuts: a failed master fails all its slots, a failed call only its
/// own.
pub(super) enum Failure {
    /// The server, or on a Cluster the master of the call's slot, failed before it had answered
    /// anything: no answer within the timeout, a broken or refused connection, the cluster down.
    Master(Cause),
    /// The call failed, not its master: an error about the call's key or command, or whatever
    /// went wrong after the master had answered (a redirect not followed, `TRYAGAIN` retried
    /// until the timeout).
    Call(Cause),
}

/// What went wrong with a call.
pub(super) enum Cause {
    /// An error from Redis or from the connection.
    Redis(RedisError),
    /// No answer within the call's timeout, given here for the error's message.
    TimedOut(Duration),
}

impl Failure {
    /// The failure that `cause` is, for a call that had (`master_answered`) or had not had an
    /// answer from the master of its slot before it: once the master has answered (a redirect,
    /// `TRYAGAIN`), what follows is not the master's failure.
    pub(super) fn new(cause: Cause, master_answered: bool) -> Failure {
        let master_failed = !master_answered
            && match &cause {
                Cause::Redis(error) => fails_master(error),
                Cause::TimedOut(_) => true,
            };
        if master_failed {
            Failure::Master(cause)
        } else {
            Failure::Call(cause)
        }
    }

    /// What went wrong.
    pub(super) fn cause(&self) -> &Cause {
        match self {
            Failure::Master(cause) | Failure::Call(cause) => cause,
        }
    }

    /// The error the caller sees.
    pub(super) fn into_error(self) -> Error {
        match self {
            Failure::Master(cause) | Failure::Call(cause) => cause.into_error(),
        }
    }
}

impl Cause {
    /// The error the caller sees.
    pub(super) fn into_error(self) -> Error {
        match self {
            Cause::Redis(error) => backend_error(error),
            Cause::TimedOut(timeout) => Error::Backend {
                kind: BackendErrorKind::Timeout,
                detail: format!("no answer from Redis within {timeout:?}"),
            },
        }
    }
}

/// `call`'s reply, or why there is none past `timeout`: the bound on every call to Redis.
pub(super) async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = RedisResult<T>>,
) -> Result<T, Cause> {
    match tokio::time::timeout(timeout, call).await {
        Ok(reply) => reply.map_err(Cause::Redis),
        Err(_) => Err(Cause::TimedOut(timeout)),
    }
}

/// `error` with every occurrence of `secrets` (the Redis key, the API key) in its text
/// replaced by `<key>`: whatever Redis or the client put into a message, an error that reaches
/// a log never carries a key. One pass, longest secret first at each place, so a short key
/// never rewrites a replacement already made.
pub(super) fn scrubbed(error: Error, secrets: &[&str]) -> Error {
    match error {
        Error::Backend { kind, detail } => Error::Backend {
            kind,
            detail: without(&detail, secrets),
        },
        other => other,
    }
}

fn without(text: &str, secrets: &[&str]) -> String {
    let mut secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    if !secrets.iter().any(|secret| text.contains(secret)) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        match secrets.iter().find(|secret| rest.starts_with(**secret)) {
            Some(secret) => {
                out.push_str("<key>");
                rest = &rest[secret.len()..];
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// A client configuration redis-rs refuses (a URL that does not parse, `rediss://` without
/// TLS support, ...) is the caller's to fix, not the backend failing. The reasons are static,
/// chosen from redis-rs's own static descriptions, so that no part of the URL (a password)
/// reaches a log.
pub(super) fn url_error(error: RedisError) -> Error {
    if error.kind() != ErrorKind::InvalidClientConfig {
        return backend_error(error);
    }
    let text = error.to_string();
    let reason = if text.contains("rediss://") {
        "a TLS connection with a CA needs a rediss:// URL"
    } else if text.contains("TLS") && text.contains("feature") {
        "a rediss:// URL needs the tls feature"
    } else if text.contains("TLS") {
        "the TLS settings (e.g. the CA certificate) are not usable"
    } else {
        "the Redis URL does not parse (expected e.g. redis://[user:password@]host[:port][/db])"
    };
    Error::Config(ConfigError::InvalidSetting { reason })
}

/// Whether connecting failed in a way that trying again cannot mend: the credentials were
/// refused, or the server sent what a client cannot accept (a certificate it does not trust,
/// plain text on a TLS connection or the reverse), which the I/O layer reports as invalid data.
pub(super) fn refused_for_good(error: &RedisError) -> bool {
    use std::error::Error as StdError;
    // redis-rs keeps the I/O error behind an `Arc`; another layout just means "try again".
    let io = error.source().and_then(|source| {
        source.downcast_ref::<std::io::Error>().or_else(|| {
            source
                .downcast_ref::<Arc<dyn StdError + Send + Sync>>()
                .and_then(|inner| inner.downcast_ref::<std::io::Error>())
        })
    });
    error.kind() == ErrorKind::AuthenticationFailed
        || io.is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
}

/// Whether `error` says that the master of a Cluster call's slot failed (so every slot of it
/// will), rather than the call for its slot or key alone.
fn fails_master(error: &RedisError) -> bool {
    error.is_timeout()
        || error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(
            error.kind(),
            ErrorKind::Io | ErrorKind::Server(ServerErrorKind::ClusterDown)
        )
}

pub(super) fn backend_error(error: RedisError) -> Error {
    let kind = if error.is_timeout() {
        BackendErrorKind::Timeout
    } else if error.is_io_error()
        || error.is_cluster_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(error.kind(), ErrorKind::Io | ErrorKind::Client)
    {
        BackendErrorKind::Unavailable
    } else {
        BackendErrorKind::Protocol
    };
    Error::Backend {
        kind,
        detail: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbed_errors_carry_no_key() {
        let error = Error::Backend {
            kind: BackendErrorKind::Protocol,
            detail: "WRONGTYPE at app:{sk_live_1}:60000 for sk_live_1".into(),
        };
        let scrubbed = scrubbed(error, &["sk_live_1", "app:{sk_live_1}:"]);
        assert_eq!(
            scrubbed.to_string(),
            "backend protocol error: WRONGTYPE at <key>60000 for <key>"
        );
        // A short key never rewrites a replacement, and text around it stays readable.
        assert_eq!(
            without("key e at {e}: e", &["e", "{e}"]),
            "k<key>y <key> at <key>: <key>"
        );
        assert_eq!(without("é{é}é", &["é"]), "<key>{<key>}<key>");
        // Other errors, and empty secrets, are left alone.
        assert_eq!(
            scrubbed_text(Error::EmptyKey, &["k"]),
            Error::EmptyKey.to_string()
        );
    }

    fn scrubbed_text(error: Error, secrets: &[&str]) -> String {
        scrubbed(error, secrets).to_string()
    }
}
