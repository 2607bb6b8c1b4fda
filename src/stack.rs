//! THE pipeline: one stage per line, outermost first, in the order a request meets them.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use tower::ServiceBuilder;
use tower::util::BoxCloneService;

use crate::body::Body;
use crate::layers::{limits, metrics, request_id, trace};
use crate::proxy::{self, headers};
use crate::state::Shared;
use crate::{auth, ratelimit, router, scope};

/// The whole request pipeline as one service.
pub type HttpService = BoxCloneService<Request<Body>, Response<Body>, Infallible>;

/// Builds the pipeline in front of the forwarding service.
pub fn build(shared: &Arc<Shared>) -> HttpService {
    let stack = ServiceBuilder::new()
        .layer(request_id::layer()) // set or propagate x-request-id
        .layer(trace::layer(shared)) // span + access log; ClientInfo from trusted proxies
        .layer(metrics::layer(shared)) // in flight, latency, outcome by route
        .layer(limits::layer(shared)) // concurrency 503, body 413, timeout 504
        .layer(headers::strip_layer(shared)) // spoofed x-atproto-* gone before anyone reads them
        .layer(router::layer(shared)) // inserts Arc<Route>       | 400 / 404 / 405
        .layer(ratelimit::by_client_layer(shared)) // per client IP  | 429
        .layer(auth::layer(shared)) // inserts Principal          | 401 / 503
        .layer(ratelimit::by_principal_layer(shared)) // per DID, client_id | 429
        .layer(scope::stage::layer(shared)) // route requirements  | 403 / 400
        .map_request(headers::inject_identity) // Principal -> upstream headers
        .service(proxy::Forward::new(shared));
    BoxCloneService::new(stack)
}
