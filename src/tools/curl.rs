//! `atgate curl`: one DPoP request the way an atproto client makes it: sign a proof for
//! the URL with the key, send the token, and when the server asks for a nonce
//! (`401` + `WWW-Authenticate: DPoP error="use_dpop_nonce"` + `DPoP-Nonce`), retry once
//! with it.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::DpopSigner;
use crate::body::{self, Body};

/// What to send.
#[derive(Debug)]
pub struct CurlRequest {
    /// Method.
    pub method: Method,
    /// Absolute URL.
    pub url: String,
    /// The access token.
    pub token: String,
    /// The proof signer.
    pub signer: DpopSigner,
    /// Request body.
    pub body: Option<Bytes>,
    /// Extra headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// What came back.
#[derive(Debug)]
pub struct CurlResponse {
    /// Status of the last attempt.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
    /// 1, or 2 when a nonce retry happened.
    pub attempts: u32,
}

/// Why the request could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CurlError {
    /// Bad URL or header.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Transport failure.
    #[error("request failed: {0}")]
    Transport(String),
}

/// Whether a response is a resource server's nonce challenge.
pub fn asks_for_nonce(status: StatusCode, headers: &HeaderMap) -> Option<String> {
    let challenge = headers.get(header::WWW_AUTHENTICATE)?.to_str().ok()?;
    if status != StatusCode::UNAUTHORIZED
        || !challenge.starts_with("DPoP")
        || !challenge.contains(r#"error="use_dpop_nonce""#)
    {
        return None;
    }
    headers.get("dpop-nonce")?.to_str().ok().map(str::to_owned)
}

/// Sends the request, retrying once for a nonce.
pub async fn send(req: &CurlRequest) -> Result<CurlResponse, CurlError> {
    let tls = crate::net::client_tls(crate::net::web_roots());
    let connector =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_all_versions().build();
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build(connector);
    let mut nonce: Option<String> = None;
    let mut attempt = 1;
    loop {
        let iat = crate::auth::now_ms() / 1000;
        let proof = req.signer.proof(req.method.as_str(), &req.url, Some(&req.token), nonce.as_deref(), iat);
        let mut builder = http::Request::builder()
            .method(req.method.clone())
            .uri(&req.url)
            .header(header::AUTHORIZATION, format!("DPoP {}", req.token))
            .header("dpop", proof);
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        let body = req.body.clone().map_or_else(body::empty, body::full);
        let http_req = builder.body(body).map_err(|e| CurlError::Invalid(e.to_string()))?;
        let res = client
            .request(http_req)
            .await
            .map_err(|e| CurlError::Transport(format!("{e}: {:?}", std::error::Error::source(&e))))?;
        let (parts, incoming) = res.into_parts();
        let bytes = incoming.collect().await.map_err(|e| CurlError::Transport(e.to_string()))?.to_bytes();
        match asks_for_nonce(parts.status, &parts.headers) {
            Some(n) if attempt == 1 => {
                nonce = Some(n);
                attempt += 1;
            }
            _ => {
                return Ok(CurlResponse {
                    status: parts.status,
                    headers: parts.headers,
                    body: bytes,
                    attempts: attempt,
                });
            }
        }
    }
}
