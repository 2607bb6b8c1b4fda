//! The one body type that flows through the pipeline, in both directions.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};

/// Errors carried by bodies and IO.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A streaming body: request bodies from clients, response bodies from upstreams, and
/// the small bodies atgate writes itself.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The future every pipeline stage returns: rejections are `Ok` responses, so the
/// error type is `Infallible`.
pub type HttpFuture = futures_util::future::BoxFuture<'static, Result<http::Response<Body>, std::convert::Infallible>>;

/// A body of known bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Boxes any body whose errors convert into [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}
