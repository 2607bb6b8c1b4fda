//! The one outbound HTTP client, for JWKS and authorization-server metadata now and DID
//! documents, handles and PDS sessions later.
//!
//! SSRF guard: host names are resolved by atgate and every address must be globally
//! routable (no loopback, private, link-local, CGNAT, ULA, multicast, documentation or
//! metadata ranges) unless `outbound.allow_private_addresses`; literal IPs are checked the
//! same way; the connection goes to a checked address (no second lookup). Only `https`
//! unless `outbound.allow_http`. Redirects are never followed. Responses are capped in
//! size and time and must be JSON.

mod guard;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{self, Body};
use crate::config::OutboundConfig;
pub use guard::{GuardedResolver, is_global};

/// Why an outbound fetch failed. These are atgate's (or the remote's) problems: they map
/// to 503/502, never to 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// The URL is unusable (scheme, credentials, no host).
    #[error("refused URL: {0}")]
    Url(String),
    /// The host resolves only to addresses the SSRF guard refuses.
    #[error("refused address for {0}")]
    Blocked(String),
    /// Connecting or exchanging failed.
    #[error("fetch failed: {0}")]
    Transport(String),
    /// No full answer in time.
    #[error("fetch timed out")]
    Timeout,
    /// A status other than 200 (redirects included).
    #[error("unexpected status {0}")]
    Status(u16),
    /// Larger than `outbound.max_response_bytes`.
    #[error("response too large")]
    TooLarge,
    /// Not the expected content type, or not valid JSON.
    #[error("response is not the expected JSON")]
    NotJson,
}

/// A whole answer from [`Outbound::exchange`].
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body, at most `outbound.max_response_bytes`.
    pub body: Bytes,
}

/// The outbound client with its policy.
#[derive(Clone)]
pub struct Outbound {
    client: Client<HttpsConnector<HttpConnector<GuardedResolver>>, Body>,
    policy: Arc<OutboundConfig>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl Outbound {
    /// Builds the client for a policy.
    pub fn new(policy: OutboundConfig) -> Outbound {
        let resolver = GuardedResolver::new(policy.allow_private_addresses);
        let mut http = HttpConnector::new_with_resolver(resolver);
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let tls = client_tls(web_roots());
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Outbound { client, policy: Arc::new(policy) }
    }

    /// Checks a URL against the policy before any connection.
    pub fn check_url(&self, url: &url::Url) -> Result<(), NetError> {
        match url.scheme() {
            "https" => {}
            "http" if self.policy.allow_http => {}
            s => return Err(NetError::Url(format!("scheme {s} not allowed"))),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(NetError::Url("credentials in URL".into()));
        }
        let host = url.host().ok_or_else(|| NetError::Url("no host".into()))?;
        if self.policy.allow_private_addresses {
            return Ok(());
        }
        match host {
            url::Host::Ipv4(ip) if !is_global(ip.into()) => Err(NetError::Blocked(ip.to_string())),
            url::Host::Ipv6(ip) if !is_global(ip.into()) => Err(NetError::Blocked(ip.to_string())),
            url::Host::Domain(d) if !guard::is_public_name(d) => Err(NetError::Blocked(d.to_owned())),
            _ => Ok(()),
        }
    }

    /// `GET url`, expecting 200 and a JSON body (`application/json` or `+json`).
    pub async fn get_json(&self, url: &url::Url) -> Result<serde_json::Value, NetError> {
        self.get_json_as(url, "application/json").await
    }

    /// `GET url` with this `Accept`, expecting 200 and a JSON body.
    pub async fn get_json_as(&self, url: &url::Url, accept: &'static str) -> Result<serde_json::Value, NetError> {
        let bytes = self.get(url, accept, true).await?;
        serde_json::from_slice(&bytes).map_err(|_| NetError::NotJson)
    }

    /// `GET url`, expecting 200 and a body of any type (a handle's `atproto-did` file).
    pub async fn get_bytes(&self, url: &url::Url) -> Result<Bytes, NetError> {
        self.get(url, "text/plain, */*", false).await
    }

    /// `POST url` with a JSON body (and a bearer token), for XRPC procedures at a PDS: the
    /// status, `Retry-After` in seconds if any, and the body as JSON (`Null` if not JSON).
    /// Non-2xx answers are returned, not errors, so that callers can read XRPC errors.
    pub async fn post_json(
        &self,
        url: &url::Url,
        body: Option<&serde_json::Value>,
        bearer: Option<&str>,
    ) -> Result<(StatusCode, Option<u64>, serde_json::Value), NetError> {
        self.check_url(url)?;
        let uri: http::Uri = url.as_str().parse().map_err(|_| NetError::Url("unparseable".into()))?;
        let mut req = Request::post(uri)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, concat!("atgate/", env!("CARGO_PKG_VERSION")));
        if let Some(token) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = match body {
            Some(json) => req.header(header::CONTENT_TYPE, "application/json").body(body::full(json.to_string())),
            None => req.body(body::empty()),
        }
        .map_err(|_| NetError::Url("unparseable".into()))?;
        let max = self.policy.max_response_bytes as usize;
        let fetch = async {
            let res = self.client.request(req).await.map_err(|e| classify(&e))?;
            let status = res.status();
            let retry_after = res
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let bytes = read_limited(res.into_body(), max).await?;
            let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            Ok((status, retry_after, json))
        };
        tokio::time::timeout(self.policy.timeout, fetch).await.map_err(|_| NetError::Timeout)?
    }

    /// Sends one request (method, headers, body) and reads the whole answer, whatever its
    /// status: the OAuth client's PAR, token and revocation calls and its PDS proxy.
    pub async fn exchange(
        &self,
        method: http::Method,
        url: &url::Url,
        headers: http::HeaderMap,
        body: Bytes,
    ) -> Result<Reply, NetError> {
        self.check_url(url)?;
        let uri: http::Uri = url.as_str().parse().map_err(|_| NetError::Url("unparseable".into()))?;
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(h) = req.headers_mut() {
            *h = headers;
            h.insert(header::USER_AGENT, http::HeaderValue::from_static(concat!("atgate/", env!("CARGO_PKG_VERSION"))));
        }
        let req = req.body(body::full(body)).map_err(|_| NetError::Url("unparseable".into()))?;
        let max = self.policy.max_response_bytes as usize;
        let fetch = async {
            let res = self.client.request(req).await.map_err(|e| classify(&e))?;
            let (parts, incoming) = res.into_parts();
            let body = read_limited(incoming, max).await?;
            Ok(Reply { status: parts.status, headers: parts.headers, body })
        };
        tokio::time::timeout(self.policy.timeout, fetch).await.map_err(|_| NetError::Timeout)?
    }

    async fn get(&self, url: &url::Url, accept: &'static str, json: bool) -> Result<Bytes, NetError> {
        self.check_url(url)?;
        let uri: http::Uri = url.as_str().parse().map_err(|_| NetError::Url("unparseable".into()))?;
        let req = Request::get(uri)
            .header(header::ACCEPT, accept)
            .header(header::USER_AGENT, concat!("atgate/", env!("CARGO_PKG_VERSION")))
            .body(body::empty())
            .map_err(|_| NetError::Url("unparseable".into()))?;
        let max = self.policy.max_response_bytes as usize;
        let fetch = async {
            let res = self.client.request(req).await.map_err(|e| classify(&e))?;
            if res.status() != StatusCode::OK {
                return Err(NetError::Status(res.status().as_u16()));
            }
            let is_json = res
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
                .is_some_and(|ct| ct == "application/json" || ct.ends_with("+json"));
            if json && !is_json {
                return Err(NetError::NotJson);
            }
            read_limited(res.into_body(), max).await
        };
        tokio::time::timeout(self.policy.timeout, fetch).await.map_err(|_| NetError::Timeout)?
    }
}

/// The whole body, refused past `max` bytes.
async fn read_limited(body: hyper::body::Incoming, max: usize) -> Result<Bytes, NetError> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(NetError::TooLarge),
        Err(e) => Err(NetError::Transport(e.to_string())),
    }
}

/// A rustls client config (aws-lc-rs, safe default versions) trusting `roots`; the one
/// used by every outbound TLS connection: upstreams, fetches and `atgate curl`.
pub fn client_tls(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The web PKI roots (webpki-roots), the same on every machine.
pub fn web_roots() -> rustls::RootCertStore {
    rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }
}

fn classify(e: &hyper_util::client::legacy::Error) -> NetError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::PermissionDenied
        {
            return NetError::Blocked(io.to_string());
        }
        source = err.source();
    }
    let mut text = e.to_string();
    if let Some(s) = std::error::Error::source(e) {
        text = format!("{text}: {s}");
    }
    NetError::Transport(text)
}
