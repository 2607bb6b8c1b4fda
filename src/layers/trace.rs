//! Access log and request span. Works out the client (`ClientInfo`, honouring trusted
//! proxies) and inserts it for later stages.
//!
//! One structured line per request on target `atgate::access`. Never logged: request
//! or response headers (so no `Authorization`, `DPoP`, cookies or passwords), query
//! strings, bodies.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use tower::{Layer, Service};
use tracing::Instrument;

use super::request_id::RequestId;
use crate::body::{Body, HttpFuture};
use crate::proxy::forwarded::{ConnInfo, client_info};
use crate::respond::Outcome;
use crate::router::RouteName;
use crate::state::Shared;

/// Layer for [`Trace`].
#[derive(Clone)]
pub struct TraceLayer {
    shared: Arc<Shared>,
}

/// Builds the trace stage.
pub fn layer(shared: &Arc<Shared>) -> TraceLayer {
    TraceLayer { shared: shared.clone() }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;
    fn layer(&self, inner: S) -> Trace<S> {
        Trace { inner, shared: self.shared.clone() }
    }
}

/// Logs each request once it has its response head.
#[derive(Clone)]
pub struct Trace<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request<Body>> for Trace<S>
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
        let started = Instant::now();
        // The request runs on this runtime to the end, whatever reloads meanwhile.
        let runtime = self.shared.runtime.load_full();
        let conn = req.extensions().get::<ConnInfo>().copied();
        let client = conn.map(|conn| client_info(&conn, req.uri(), req.headers(), &runtime.config.trusted_proxies));
        req.extensions_mut().insert(crate::state::Pinned(runtime));
        let client_ip = client.as_ref().map(|c| c.ip);
        if let Some(client) = client {
            req.extensions_mut().insert(client);
        }
        let id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
        let id = id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let version = req.version();
        let span = tracing::info_span!("request", request_id = %id);
        crate::telemetry::start_request(&span, &req);
        let fut = self.inner.call(req);
        Box::pin(
            async move {
                let res = fut.await?;
                let route = res.extensions().get::<RouteName>().map(|r| r.0.clone());
                let outcome = res.extensions().get::<Outcome>().map_or("ok", |o| o.0);
                crate::telemetry::end_request(&tracing::Span::current(), res.status(), route.as_deref());
                tracing::info!(
                    target: "atgate::access",
                    method = %method,
                    path = %path,
                    version = ?version,
                    status = res.status().as_u16(),
                    route = route.as_deref().unwrap_or("-"),
                    outcome,
                    client_ip = ?client_ip,
                    duration_us = started.elapsed().as_micros() as u64,
                );
                Ok(res)
            }
            .instrument(span),
        )
    }
}
