//! Transport-level stages that every request passes: request id, access log, metrics,
//! limits. Nothing here knows about atproto.

pub mod limits;
pub mod metrics;
pub mod request_id;
pub mod trace;

/// Swaps a ready clone of `inner` out for use in a future (tower's "take the ready one").
pub(crate) fn take<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use crate::body::{Body, HttpFuture};
use crate::state::Shared;

/// The rest of the pipeline, as a stage sees it.
pub trait Next:
    Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = HttpFuture> + Clone + Send + 'static
{
}

impl<S> Next for S where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = HttpFuture>
        + Clone
        + Send
        + 'static
{
}

/// A pipeline stage that reads the shared state and the request and calls the rest of the
/// pipeline (or answers itself). [`StageLayer`] makes it a tower layer.
pub trait Stage: 'static {
    /// Handles one request; `next` is a ready clone of the rest of the pipeline.
    fn call<S: Next>(shared: &Arc<Shared>, req: Request<Body>, next: S) -> HttpFuture;
}

/// The tower layer of a [`Stage`].
pub struct StageLayer<T> {
    shared: Arc<Shared>,
    stage: PhantomData<fn() -> T>,
}

impl<T> StageLayer<T> {
    /// The stage over `shared`.
    pub fn new(shared: &Arc<Shared>) -> StageLayer<T> {
        StageLayer { shared: shared.clone(), stage: PhantomData }
    }
}

impl<T> Clone for StageLayer<T> {
    fn clone(&self) -> Self {
        StageLayer::new(&self.shared)
    }
}

impl<T: Stage, S> Layer<S> for StageLayer<T> {
    type Service = StageService<T, S>;
    fn layer(&self, inner: S) -> StageService<T, S> {
        StageService { inner, shared: self.shared.clone(), stage: PhantomData }
    }
}

/// The tower service of a [`Stage`] in front of `S`.
pub struct StageService<T, S> {
    inner: S,
    shared: Arc<Shared>,
    stage: PhantomData<fn() -> T>,
}

impl<T, S: Clone> Clone for StageService<T, S> {
    fn clone(&self) -> Self {
        StageService { inner: self.inner.clone(), shared: self.shared.clone(), stage: PhantomData }
    }
}

impl<T: Stage, S: Next> Service<Request<Body>> for StageService<T, S> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = HttpFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> HttpFuture {
        T::call(&self.shared, req, take(&mut self.inner))
    }
}
