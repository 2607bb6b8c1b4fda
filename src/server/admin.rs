//! The admin listener: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz`
//! (ready to serve: listeners bound, not draining), `/jwks.json` (the identity-assertion
//! keys, when configured). Plain HTTP/1.1, separate port.

use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::stopped;
use crate::body::{self, Body};
use crate::state::Shared;

/// Answers one admin request.
pub fn handle(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    let jwks = shared.runtime.load().assertion.as_ref().map(|a| a.keys.jwks.clone());
    let (status, content_type, text) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            (StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", shared.metrics.encode())
        }
        (&Method::GET, "/healthz") => (StatusCode::OK, "application/json", r#"{"status":"ok"}"#.to_owned()),
        (&Method::GET, "/readyz") if shared.is_ready() => {
            (StatusCode::OK, "application/json", r#"{"status":"ready"}"#.to_owned())
        }
        (&Method::GET, "/readyz") => {
            (StatusCode::SERVICE_UNAVAILABLE, "application/json", r#"{"status":"not ready"}"#.to_owned())
        }
        (&Method::GET, "/jwks.json") if jwks.is_some() => (
            StatusCode::OK,
            "application/jwk-set+json",
            String::from_utf8_lossy(jwks.as_deref().unwrap_or_default()).into_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "application/json",
            r#"{"error":"NotFound","message":"no such admin endpoint"}"#.to_owned(),
        ),
    };
    let mut res = Response::new(body::full(text));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// Serves the admin endpoints until `stop` turns true.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let res = handle(&shared, &req);
                async move { Ok::<_, Infallible>(res) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
