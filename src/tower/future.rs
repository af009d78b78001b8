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
use super::problem::{self, Rejection};
use crate::{BoxFuture, DecidedBy, Decision, Error};

/// What the limiter said about a request.
pub(crate) enum Outcome {
    Decided(Decision),
    /// [`Error::CapacityExhausted`], with a peek at the key's quota if the peek succeeded.
    OverCapacity(Option<Decision>),
    Failed(Error),
}

pin_project! {
    /// The response future of [`RateLimit`](super::RateLimit): waits for the limiter's decision,
    /// then for the inner service's response (whose headers it completes) or answers itself.
    ///
    /// A limiter that decides without waiting ([`RateLimiter::check_now`](crate::RateLimiter::check_now),
    /// e.g. the in-memory one) is asked in `call`, so the future starts with the inner
    /// service's call or the layer's answer. Otherwise the limiter's future is boxed (one
    /// allocation per request) because it borrows the key and the limiter it is given; the
    /// inner service's future is not.
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
        headers: ResponseHeaders,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Checking {
            check: BoxFuture<'static, Outcome>,
            call: Option<(S, Request<ReqBody>)>,
        },
        Calling {
            #[pin]
            future: S::Future,
            decision: Option<Decision>,
        },
        Rejected {
            rejection: Option<Rejection>,
        },
    }
}

impl<S: Service<Request<ReqBody>>, ReqBody> ResponseFuture<S, ReqBody> {
    pub(crate) fn checking(
        check: BoxFuture<'static, Outcome>,
        inner: S,
        request: Request<ReqBody>,
        headers: ResponseHeaders,
    ) -> Self {
        ResponseFuture {
            state: State::Checking {
                check,
                call: Some((inner, request)),
            },
            headers,
        }
    }

    /// The limiter has already allowed the request (without waiting) and the inner service has
    /// been called.
    pub(crate) fn calling(future: S::Future, decision: Decision, headers: ResponseHeaders) -> Self {
        ResponseFuture {
            state: State::Calling {
                future,
                decision: Some(decision),
            },
            headers,
        }
    }

    /// Waits for an outcome that is never an allowed decision, then answers it.
    pub(crate) fn rejecting(check: BoxFuture<'static, Outcome>, headers: ResponseHeaders) -> Self {
        ResponseFuture {
            state: State::Checking { check, call: None },
            headers,
        }
    }

    pub(crate) fn uncharged(future: S::Future) -> Self {
        ResponseFuture {
            state: State::Calling {
                future,
                decision: None,
            },
            headers: ResponseHeaders::plain(Default::default()),
        }
    }

    pub(crate) fn rejected(rejection: Rejection) -> Self {
        ResponseFuture {
            state: State::Rejected {
                rejection: Some(rejection),
            },
            headers: ResponseHeaders::plain(Default::default()),
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<String>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Checking { check, call } => {
                    let outcome = ready!(check.as_mut().poll(cx));
                    match outcome {
                        Outcome::Decided(decision)
                            if decision.is_allowed()
                                && decision.decided_by() != DecidedBy::FailClosed =>
                        {
                            let (mut inner, request) =
                                call.take().expect("ResponseFuture polled after completion");
                            let future = inner.call(request);
                            this.state.set(State::Calling {
                                future,
                                decision: Some(decision),
                            });
                        }
                        outcome => {
                            let rejection = problem::reject(outcome, this.headers);
                            this.state.set(State::Rejected { rejection: None });
                            return Poll::Ready(Ok(rejection.into_response()));
                        }
                    }
                }
                StateProj::Calling { future, decision } => {
                    let mut response = ready!(future.poll(cx))?;
                    if let Some(decision) = decision {
                        this.headers.write(decision, response.headers_mut());
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Rejected { rejection } => {
                    let rejection = rejection
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(rejection.into_response()));
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
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
