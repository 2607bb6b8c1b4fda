//! Limits stage: concurrency (503 past the limit, no queue), body size (413), and the
//! overall time to a response head (504).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use tower::{Layer, Service};

use crate::body::{Body, HttpFuture};
use crate::respond::{Reject, reject};
use crate::state::Shared;

/// A limit was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// `limits.max_concurrent_requests` requests are already being served.
    #[error("too many requests in flight")]
    Overloaded,
    /// `Content-Length` is over `limits.max_body`.
    #[error("request body too large")]
    BodyTooLarge,
    /// No response head within `limits.request_timeout`.
    #[error("request timed out")]
    Timeout,
}

impl Reject for LimitError {
    fn status(&self) -> StatusCode {
        match self {
            LimitError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            LimitError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            LimitError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
    fn error_name(&self) -> &'static str {
        match self {
            LimitError::Overloaded => "Overloaded",
            LimitError::BodyTooLarge => "PayloadTooLarge",
            LimitError::Timeout => "RequestTimeout",
        }
    }
    fn message(&self) -> String {
        self.to_string()
    }
    fn reason(&self) -> &'static str {
        match self {
            LimitError::Overloaded => "overloaded",
            LimitError::BodyTooLarge => "body_too_large",
            LimitError::Timeout => "request_timeout",
        }
    }
    fn headers(&self, headers: &mut HeaderMap) {
        if *self == LimitError::Overloaded {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
    }
}

/// Layer for [`Limit`].
#[derive(Clone)]
pub struct LimitsLayer {
    shared: Arc<Shared>,
}

/// Builds the limits stage.
pub fn layer(shared: &Arc<Shared>) -> LimitsLayer {
    LimitsLayer { shared: shared.clone() }
}

impl<S> Layer<S> for LimitsLayer {
    type Service = Limit<S>;
    fn layer(&self, inner: S) -> Limit<S> {
        Limit { inner, shared: self.shared.clone() }
    }
}

/// Enforces the limits.
#[derive(Clone)]
pub struct Limit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request<Body>> for Limit<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = HttpFuture>
        + Clone
        + Send
        + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = HttpFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let Ok(permit) = self.shared.concurrency.clone().try_acquire_owned() else {
            return answer(LimitError::Overloaded);
        };
        let (max_body, timeout) = {
            let limits = &self.shared.runtime_of(req.extensions()).config.limits;
            (limits.max_body, limits.request_timeout)
        };
        let declared =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body) {
            return answer(LimitError::BodyTooLarge);
        }
        // Chunked or lying bodies are cut off as they stream; the forward stage turns
        // the resulting body error into 413.
        let req = req.map(|b| Limited::new(b, max_body as usize).map_err(Into::into).boxed_unsync());
        let mut inner = super::take(&mut self.inner);
        Box::pin(async move {
            let res = match tokio::time::timeout(timeout, inner.call(req)).await {
                Ok(res) => res,
                Err(_) => Ok(reject(&LimitError::Timeout)),
            };
            drop(permit);
            res
        })
    }
}

fn answer(e: LimitError) -> HttpFuture {
    let res = reject(&e);
    Box::pin(async move { Ok(res) })
}
