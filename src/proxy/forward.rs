//! The innermost service: sends the request to the route's upstream and streams the
//! answer back.
//!
//! Reads `Arc<Route>`, `NormalPath`, `NormalHost`, `ClientInfo`, `ConnInfo` and
//! `UpgradeRequest` from the request extensions. Bodies stream both ways without buffering;
//! an `Upgrade` to a protocol the route allows (`upgrades`, default WebSocket) that the
//! upstream accepts with 101 becomes a byte tunnel. atgate's own cookies never go upstream.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};

use super::forwarded::ClientInfo;
use super::headers::{UpgradeRequest, allowed_upgrade, remove_hop_by_hop, strip_own_cookies};
use super::{ProxyError, upgrade};
use crate::body::{self, Body, HttpFuture};
use crate::respond::reject;
use crate::router::{NormalHost, NormalPath, Route};
use crate::state::Shared;

/// Sends requests upstream.
#[derive(Clone)]
pub struct Forward {
    shared: Arc<Shared>,
}

impl Forward {
    /// The forwarding service.
    pub fn new(shared: &Arc<Shared>) -> Forward {
        Forward { shared: shared.clone() }
    }
}

impl tower::Service<Request<Body>> for Forward {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = HttpFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { Ok(forward(&shared, req).await.unwrap_or_else(|e| reject(&e))) })
    }
}

async fn forward(shared: &Shared, mut req: Request<Body>) -> Result<Response<Body>, ProxyError> {
    let route = req.extensions_mut().remove::<Arc<Route>>().ok_or(ProxyError::BadRequest)?;
    let runtime = shared.runtime_of(req.extensions());
    let via = runtime.config.via;
    let upstream = &route.upstream;
    let path = req.extensions_mut().remove::<NormalPath>().map(|p| p.0);
    let path = path.as_deref().unwrap_or(req.uri().path());

    // Upstream URI: scheme + authority of the upstream, its base path, the (rewritten)
    // normalized path, and the query as received.
    let mut pq = String::with_capacity(upstream.config.base_path.len() + path.len() + 32);
    pq.push_str(&upstream.config.base_path);
    pq.push_str(&route.upstream_path(path));
    if let Some(q) = req.uri().query() {
        pq.push('?');
        pq.push_str(q);
    }
    let pq = PathAndQuery::try_from(pq).map_err(|_| ProxyError::BadRequest)?;
    let normal_host = req.extensions_mut().remove::<NormalHost>();
    *req.uri_mut() = Uri::builder()
        .scheme(upstream.config.scheme.clone())
        .authority(upstream.config.authority.clone())
        .path_and_query(pq)
        .build()
        .map_err(|_| ProxyError::BadRequest)?;

    // Hop-by-hop headers went at ingress; an upgrade the route allows is asked for again.
    let upgrade = req.extensions_mut().remove::<UpgradeRequest>().and_then(|u| allowed_upgrade(&u.0, &route.upgrades));
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let client = req.extensions_mut().remove::<ClientInfo>();
    let conn = req.extensions().get::<super::forwarded::ConnInfo>().copied();
    let own_authorization = req.extensions_mut().remove::<super::headers::UpstreamAuthorization>();

    let headers = req.headers_mut();
    if let Some(protocols) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocols);
    }
    strip_own_cookies(headers, runtime.config.oauth_client.as_ref().map(|o| o.cookie_name.as_str()));
    if !route.forward_credentials {
        headers.remove(header::AUTHORIZATION);
        headers.remove("dpop");
    }
    if let Some(auth) = own_authorization {
        headers.insert(header::AUTHORIZATION, auth.0);
    }
    if let Some(client) = &client {
        set_forwarded(headers, client, conn.map(|c| c.peer.ip()));
    }
    // The client sets Host from the upstream URI, unless the upstream wants the request's
    // host: then the one canonical host the route was chosen on, never the client's
    // spelling of it (a `Host` that disagreed with the target was refused by the router).
    headers.remove(header::HOST);
    if upstream.config.preserve_host
        && let Some(host) = normal_host
    {
        headers.insert(header::HOST, host.0);
    }
    crate::telemetry::inject(headers);
    if via {
        headers.append(header::VIA, HeaderValue::from_static("1.1 atgate"));
    }
    *req.version_mut() = Version::HTTP_11;

    let started = Instant::now();
    let sent = tokio::time::timeout(upstream.config.timeout, upstream.client.request(req)).await;
    shared.metrics.observe_upstream(&upstream.labels, started.elapsed());
    let mut res = match sent {
        Err(_elapsed) => return Err(ProxyError::Timeout),
        Ok(Err(e)) => {
            let err = ProxyError::from_client(e);
            tracing::warn!(upstream = %upstream.config.name, error = %err, cause = ?std::error::Error::source(&err), "upstream request failed");
            return Err(err);
        }
        Ok(Ok(res)) => res,
    };

    let switching = res.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        // RFC 9110 §15.2.2: a 101 names the protocol switched to, one the request offered;
        // a 101 to a request that did not ask for it, or to another protocol, is a
        // protocol violation.
        let chosen = res.headers().get(header::UPGRADE).and_then(|p| allowed_upgrade(p, &route.upgrades));
        match (client_upgrade, chosen) {
            (Some(client_upgrade), Some(_)) => upgrade::tunnel(client_upgrade, hyper::upgrade::on(&mut res)),
            _ => return Err(ProxyError::Protocol),
        }
    }
    remove_hop_by_hop(res.headers_mut(), switching);
    if via {
        res.headers_mut().append(header::VIA, HeaderValue::from_static("1.1 atgate"));
    }
    Ok(res.map(body::boxed))
}

/// Sets `X-Forwarded-For/-Proto/-Host`: appended to what a trusted proxy sent, replacing
/// whatever an untrusted client sent.
fn set_forwarded(headers: &mut http::HeaderMap, client: &ClientInfo, peer: Option<std::net::IpAddr>) {
    let peer = peer.unwrap_or(client.ip);
    let prior: Option<String> = client.peer_trusted.then(|| {
        let parts: Vec<&str> = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
        parts.join(", ")
    });
    let xff = match prior.filter(|p| !p.is_empty()) {
        Some(p) => format!("{p}, {peer}"),
        None => peer.to_string(),
    };
    headers.remove("x-forwarded-for");
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(client.proto));
    headers.remove("x-forwarded-host");
    if let Some(v) = client.host.as_deref().and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert("x-forwarded-host", v);
    }
    if !client.peer_trusted {
        headers.remove(header::FORWARDED);
    }
}
