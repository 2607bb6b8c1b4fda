//! `x-request-id`: propagated when the client sent a sane one, else generated; sent to
//! the upstream and echoed on the response.

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};

use crate::body::{Body, HttpFuture};

/// The header name.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id; a request extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

/// Keeps a client's id only if it is short and plain (it ends up in logs).
fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
}

/// Layer for [`SetRequestId`].
#[derive(Clone, Copy, Default)]
pub struct RequestIdLayer;

/// Builds the request-id stage.
pub fn layer() -> RequestIdLayer {
    RequestIdLayer
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = SetRequestId<S>;
    fn layer(&self, inner: S) -> SetRequestId<S> {
        SetRequestId { inner }
    }
}

/// Sets or propagates `x-request-id`.
#[derive(Clone)]
pub struct SetRequestId<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for SetRequestId<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = HttpFuture>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = HttpFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let id = match req.headers().get(&X_REQUEST_ID) {
            Some(v) if acceptable(v) => v.clone(),
            _ => {
                let id = uuid::Uuid::new_v4();
                let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
                HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf)).expect("a uuid is a valid header value")
            }
        };
        req.headers_mut().insert(X_REQUEST_ID.clone(), id.clone());
        req.extensions_mut().insert(RequestId(id.clone()));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut res = fut.await?;
            res.headers_mut().insert(X_REQUEST_ID.clone(), id);
            Ok(res)
        })
    }
}
