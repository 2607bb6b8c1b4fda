//! Tools for operators and tests: key generation, a DPoP-aware client (`atgate curl`),
//! and a development authorization server (used by `atgate demo` and the tests).

pub mod curl;
pub mod dev_dns;
pub mod dev_identity;
pub mod dev_issuer;
pub mod dev_oauth;
pub mod dev_repo;
pub mod explain;

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use crate::body::Body;
use crate::jose::sign::{SigningKey, random_id};

/// Serves HTTP/1.1 on `listener` forever, answering each request with `handle(state, req)`:
/// the loop behind the development servers.
pub(crate) fn serve_http1<S, F, Fut>(listener: TcpListener, state: Arc<S>, handle: F)
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let res = handle(state.clone(), req);
                    async move { Ok::<_, std::convert::Infallible>(res.await) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
}

/// Signs DPoP proofs with one key.
#[derive(Debug)]
pub struct DpopSigner {
    /// The proof key.
    pub key: SigningKey,
}

impl DpopSigner {
    /// A proof for `method url`, bound to `token` (its `ath`) and carrying `nonce`.
    pub fn proof(&self, method: &str, url: &str, token: Option<&str>, nonce: Option<&str>, iat: u64) -> String {
        dpop_proof(&self.key, method, url, token, nonce, iat)
    }
}

/// A DPoP proof signed with `key` for `method url`, bound to `token` (its `ath`) and
/// carrying `nonce`: what clients send, and what atgate sends as an OAuth client.
pub fn dpop_proof(
    key: &SigningKey,
    method: &str,
    url: &str,
    token: Option<&str>,
    nonce: Option<&str>,
    iat: u64,
) -> String {
    let htu = url.split(['?', '#']).next().unwrap_or(url);
    let mut claims = json!({"jti": random_id(), "htm": method, "htu": htu, "iat": iat});
    if let Some(n) = nonce {
        claims["nonce"] = json!(n);
    }
    if let Some(t) = token {
        claims["ath"] = json!(crate::jose::sha256_b64url(t.as_bytes()));
    }
    key.sign_jwt(json!({"typ": "dpop+jwt", "jwk": key.public_jwk()}), &claims)
}
