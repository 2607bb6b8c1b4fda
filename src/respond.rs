//! The one place where a rejection becomes an HTTP response.
//!
//! Every stage's error type implements [`Reject`]; [`reject`] renders it as an XRPC-style
//! JSON body `{"error": "...", "message": "..."}` with the stage's status and headers, and
//! tags the response with an [`Outcome`] that the metrics and access-log stages read.

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::body::{self, Body};

/// An error that knows how to answer a request.
pub trait Reject {
    /// The HTTP status.
    fn status(&self) -> StatusCode;
    /// The XRPC `error` name in the body, e.g. `UpstreamFailure`.
    fn error_name(&self) -> &'static str;
    /// A short, stable, secret-free description for the body.
    fn message(&self) -> String;
    /// A bounded snake_case reason, used as a metric label and in the access log.
    fn reason(&self) -> &'static str;
    /// Extra response headers (e.g. `WWW-Authenticate`, `Allow`).
    fn headers(&self, _headers: &mut HeaderMap) {}
}

/// Why a request ended the way it did; a response extension. Absent means `ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome(pub &'static str);

/// Renders a rejection.
pub fn reject(error: &impl Reject) -> Response<Body> {
    let json = serde_json::json!({ "error": error.error_name(), "message": error.message() });
    let mut res = Response::new(body::full(json.to_string()));
    *res.status_mut() = error.status();
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    error.headers(headers);
    res.extensions_mut().insert(Outcome(error.reason()));
    res
}
