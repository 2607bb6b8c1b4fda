//! State shared by every stage: the swappable runtime, metrics, readiness, limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use crate::config::{Config, ConfigErrors};
use crate::metrics::Metrics;
use crate::proxy::Upstream;
use crate::router::{Route, RouteTable};

/// Everything compiled from one config: swapped whole, read once per request.
#[derive(Debug)]
pub struct Runtime {
    /// The config it was built from.
    pub config: Arc<Config>,
    /// Routes in match order.
    pub routes: RouteTable,
    /// Upstreams with their connection pools, in config order.
    pub upstreams: Vec<Arc<Upstream>>,
}

impl Runtime {
    /// Compiles a config: builds upstream clients (reading CA files) and the route table.
    pub fn build(config: Config) -> Result<Runtime, ConfigErrors> {
        let mut errors = Vec::new();
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for u in &config.upstreams {
            match Upstream::new(u.clone()) {
                Ok(up) => upstreams.push(Arc::new(up)),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let routes = config
            .routes
            .iter()
            .map(|r| Arc::new(Route::new(r, upstreams[r.upstream].clone())))
            .collect();
        Ok(Runtime {
            routes: RouteTable::new(routes),
            upstreams,
            config: Arc::new(config),
        })
    }
}

/// Shared by all stages and listeners.
#[derive(Debug)]
pub struct Shared {
    /// The current runtime; the router loads it once per request.
    pub runtime: ArcSwap<Runtime>,
    /// Metric families.
    pub metrics: Metrics,
    /// Requests served at once (`limits.max_concurrent_requests`).
    pub concurrency: Arc<Semaphore>,
    ready: AtomicBool,
}

impl Shared {
    /// Wraps a runtime.
    pub fn new(runtime: Runtime) -> Arc<Shared> {
        let permits = runtime.config.limits.max_concurrent_requests;
        Arc::new(Shared {
            runtime: ArcSwap::from_pointee(runtime),
            metrics: Metrics::new(),
            concurrency: Arc::new(Semaphore::new(permits)),
            ready: AtomicBool::new(false),
        })
    }

    /// Whether `/readyz` says ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks ready (listeners bound) or not (draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}
