//! [`ResponseFuture`]: the limiter's decision, then the inner service's response or the
//! layer's own.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use ::http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::headers::ResponseHeaders;
use crate::{BoxFuture, Decision};

/// What the limiter's boxed future ends with: the request back with its decision, for the inner
/// service, or the layer's own answer. (Moved once, out of the future: boxing the request would
/// cost an allocation per request.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Checked<ReqBody, Answer> {
    Admitted(Decision, Request<ReqBody>, ResponseHeaders),
    Answered(Answer),
}

pin_project! {
    /// The response future of [`RateLimit`](super::RateLimit): waits for the limiter's decision,
    /// then for the inner service's response (whose headers it completes) or answers itself.
    ///
    /// A limiter that decides without waiting ([`RateLimiter::check_now`](crate::RateLimiter::check_now),
    /// e.g. the in-memory one) is asked in `call`, so the future starts with the inner
    /// service's call or the layer's answer. Otherwise the limiter's future is boxed (one
    /// allocation per request) together with the request, because it borrows the key and the
    /// limiter it is given; the inner service's future is not boxed.
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Checking {
            check: BoxFuture<'static, Checked<ReqBody, S::Response>>,
            // `None` when the check can only end in the layer's own answer.
            inner: Option<S>,
        },
        Calling {
            #[pin]
            future: S::Future,
            // `None` when nothing was charged (cost 0): no rate-limit headers.
            charged: Option<(Decision, ResponseHeaders)>,
        },
        Answered {
            response: Option<S::Response>,
        },
    }
}

impl<S: Service<Request<ReqBody>>, ReqBody> ResponseFuture<S, ReqBody> {
    /// Waits for `check`, then calls `inner` if it admits the request.
    pub(crate) fn checking(
        check: BoxFuture<'static, Checked<ReqBody, S::Response>>,
        inner: S,
    ) -> Self {
        ResponseFuture {
            state: State::Checking {
                check,
                inner: Some(inner),
            },
        }
    }

    /// Waits for `check`, which never admits the request, for the layer's answer.
    pub(crate) fn rejecting(check: BoxFuture<'static, Checked<ReqBody, S::Response>>) -> Self {
        ResponseFuture {
            state: State::Checking { check, inner: None },
        }
    }

    /// The limiter has already allowed the request (without waiting) and the inner service has
    /// been called.
    pub(crate) fn calling(future: S::Future, decision: Decision, headers: ResponseHeaders) -> Self {
        ResponseFuture {
            state: State::Calling {
                future,
                charged: Some((decision, headers)),
            },
        }
    }

    /// The inner service has been called for a request that was not charged.
    pub(crate) fn uncharged(future: S::Future) -> Self {
        ResponseFuture {
            state: State::Calling {
                future,
                charged: None,
            },
        }
    }

    /// The layer's own answer, already made.
    pub(crate) fn answered(response: S::Response) -> Self {
        ResponseFuture {
            state: State::Answered {
                response: Some(response),
            },
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Checking { check, inner } => match ready!(check.as_mut().poll(cx)) {
                    Checked::Admitted(decision, request, headers) => {
                        let mut inner = inner
                            .take()
                            .expect("only a check given the inner service admits");
                        let future = inner.call(request);
                        this.state.set(State::Calling {
                            future,
                            charged: Some((decision, headers)),
                        });
                    }
                    Checked::Answered(response) => {
                        this.state.set(State::Answered { response: None });
                        return Poll::Ready(Ok(response));
                    }
                },
                StateProj::Calling { future, charged } => {
                    let mut response = ready!(future.poll(cx))?;
                    if let Some((decision, headers)) = charged.as_ref() {
                        headers.write(decision, response.headers_mut());
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Answered { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}

impl<S: Service<Request<ReqBody>>, ReqBody> fmt::Debug for ResponseFuture<S, ReqBody> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Checking { .. } => "checking",
            State::Calling { .. } => "calling",
            State::Answered { .. } => "answered",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
