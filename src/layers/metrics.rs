//! Metrics stage: in-flight gauge, and per request the count and latency by route,
//! method class, status class and outcome (read from response extensions).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use tower::{Layer, Service};

use crate::body::{Body, HttpFuture};
use crate::metrics::{Name, RequestLabels, method_class, status_class};
use crate::respond::Outcome;
use crate::router::RouteName;
use crate::state::Shared;

/// Layer for [`Measure`].
#[derive(Clone)]
pub struct MetricsLayer {
    shared: Arc<Shared>,
}

/// Builds the metrics stage.
pub fn layer(shared: &Arc<Shared>) -> MetricsLayer {
    MetricsLayer { shared: shared.clone() }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Measure<S>;
    fn layer(&self, inner: S) -> Measure<S> {
        Measure { inner, shared: self.shared.clone() }
    }
}

/// Counts and times requests.
#[derive(Clone)]
pub struct Measure<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Decrements the in-flight gauge even if the request future is dropped.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.in_flight().dec();
    }
}

impl<S> Service<Request<Body>> for Measure<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = HttpFuture>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = HttpFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let started = Instant::now();
        let method = method_class(req.method());
        self.shared.metrics.in_flight().inc();
        let guard = InFlight(self.shared.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            let labels = RequestLabels {
                route: res.extensions().get::<RouteName>().cloned().unwrap_or_else(|| Name("none".into())),
                method,
                status: status_class(res.status()),
                outcome: res.extensions().get::<Outcome>().map_or("ok", |o| o.0),
            };
            guard.0.metrics.observe_request(&labels, started.elapsed());
            drop(guard);
            Ok(res)
        })
    }
}
