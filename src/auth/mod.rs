//! Authentication stage: credentials -> [`Principal`].
//!
//! Reads the `Arc<Route>` the router inserted and runs the route's verifier; inserts a
//! `Principal` into the request extensions, or answers with the verifier's error.
//! Verifiers are plain `async fn`s, testable without tower.

use std::convert::Infallible;
pub mod dpop;

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response, StatusCode};
use tower::{Layer, Service};

use crate::body::{Body, HttpFuture};
use crate::config::AuthMethod;
use crate::respond::{Reject, reject};
use crate::router::Route;
use crate::state::Shared;

/// Who is making the request, as far as atgate has verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A public route: nobody was authenticated.
    Anonymous,
}

impl Principal {
    /// Writes the identity headers the upstream receives for this principal.
    pub fn write_headers(&self, _headers: &mut HeaderMap) {
        match self {
            Principal::Anonymous => {}
        }
    }
}

/// Why a request was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request reached the auth stage without a route (a pipeline bug).
    #[error("request was not routed")]
    NotRouted,
}

impl Reject for AuthError {
    fn status(&self) -> StatusCode {
        match self {
            AuthError::NotRouted => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
    fn error_name(&self) -> &'static str {
        match self {
            AuthError::NotRouted => "InternalServerError",
        }
    }
    fn message(&self) -> String {
        self.to_string()
    }
    fn reason(&self) -> &'static str {
        match self {
            AuthError::NotRouted => "not_routed",
        }
    }
}

/// Runs the route's verifier.
pub async fn authenticate(
    _shared: &Shared,
    route: &Route,
    _req: &http::request::Parts,
) -> Result<Principal, AuthError> {
    match route.auth {
        AuthMethod::None => Ok(Principal::Anonymous),
    }
}

/// Layer for [`Auth`].
#[derive(Clone)]
pub struct AuthLayer {
    shared: Arc<Shared>,
}

/// Builds the authentication stage.
pub fn layer(shared: &Arc<Shared>) -> AuthLayer {
    AuthLayer {
        shared: shared.clone(),
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Inserts a `Principal` or answers the verifier's error.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request<Body>> for Auth<S>
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
        let mut inner = crate::layers::take(&mut self.inner);
        let shared = self.shared.clone();
        Box::pin(async move {
            // Verifiers see the request head only; the body streams on untouched.
            let (mut parts, body) = req.into_parts();
            let Some(route) = parts.extensions.get::<Arc<Route>>().cloned() else {
                return Ok(reject(&AuthError::NotRouted));
            };
            match authenticate(&shared, &route, &parts).await {
                Ok(principal) => {
                    parts.extensions.insert(principal);
                    inner.call(Request::from_parts(parts, body)).await
                }
                Err(e) => Ok(reject(&e)),
            }
        })
    }
}
