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
use super::service::LayerAnswer;
use super::settle::Settle;
use crate::{BoxFuture, Decision};

/// What the limiter's boxed future ends with: the request back with what its response needs,
/// for the inner service, or the layer's own answer. (Moved once, out of the future: boxing the
/// request would cost an allocation per request.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Checked<ReqBody, Answer> {
    Admitted(Request<ReqBody>, Charged<Answer>),
    Answered(Answer),
}

/// What an admitted request's response gets: the decision's headers (`None`: none), and the
/// settling of the request by its response, if it is settled so.
pub(crate) struct Charged<Res> {
    pub(crate) headers: Option<(Decision, ResponseHeaders)>,
    pub(crate) settle: Option<Settle<Res>>,
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
            // No headers when nothing was charged (cost 0), or for a shadow denial without.
            charged: Charged<S::Response>,
        },
        // The response waits for its request's release (it did not count). Boxed: a rare
        // state, which must not make every response future larger.
        Releasing {
            release: BoxFuture<'static, ()>,
            response: Option<Box<S::Response>>,
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

    /// The limiter has already admitted the request (without waiting) and the inner service
    /// has been called.
    pub(crate) fn calling(future: S::Future, charged: Charged<S::Response>) -> Self {
        ResponseFuture {
            state: State::Calling { future, charged },
        }
    }

    /// The inner service has been called for a request that was not charged.
    pub(crate) fn uncharged(future: S::Future) -> Self {
        ResponseFuture {
            state: State::Calling {
                future,
                charged: Charged {
                    headers: None,
                    settle: None,
                },
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

/// What settling a request by `response` leads to: the release to wait for, if it does not
/// count. Out of line: most requests are not settled so.
#[cold]
#[inline(never)]
fn settled<Res>(settle: Settle<Res>, response: &Res) -> Option<BoxFuture<'static, ()>> {
    settle(response)
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
                    Checked::Admitted(request, charged) => {
                        let mut inner = inner
                            .take()
                            .expect("only a check given the inner service admits");
                        let future = inner.call(request);
                        this.state.set(State::Calling { future, charged });
                    }
                    Checked::Answered(response) => {
                        this.state.set(State::Answered { response: None });
                        return Poll::Ready(Ok(response));
                    }
                },
                StateProj::Calling { future, charged } => {
                    let mut response = ready!(future.poll(cx))?;
                    // An inner rate-limit layer's own answer keeps its headers: its denial is
                    // what the client must wait for.
                    if let Some((decision, headers)) = charged.headers.as_ref() {
                        if response.extensions().get::<LayerAnswer>().is_none() {
                            headers.write(decision, response.headers_mut());
                        }
                    }
                    // Settled by the response: a request that does not count is released
                    // before its response goes out.
                    if let Some(settle) = charged.settle.take() {
                        if let Some(release) = settled(settle, &response) {
                            this.state.set(State::Releasing {
                                release,
                                response: Some(Box::new(response)),
                            });
                            continue;
                        }
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Releasing { release, response } => {
                    ready!(release.as_mut().poll(cx));
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(*response));
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
            State::Releasing { .. } => "releasing",
            State::Answered { .. } => "answered",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
