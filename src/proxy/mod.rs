//! Forwarding to upstreams: the pooled client, header hygiene, `X-Forwarded-*`,
//! WebSocket upgrades, and the errors an upstream can cause.

mod error;
pub mod forward;
pub mod forwarded;
pub mod headers;
mod upgrade;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::{CertificateDer, pem::PemObject};

pub use error::ProxyError;
pub use forward::Forward;

use crate::body::Body;
use crate::config::{ConfigError, UpstreamConfig};
use crate::metrics::{Name, UpstreamLabels};

/// The HTTP client for one upstream.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

/// An upstream with its connection pool.
#[derive(Debug)]
pub struct Upstream {
    /// Its config.
    pub config: UpstreamConfig,
    /// Its pooled client (HTTP/1.1; TLS by rustls for `https`).
    pub client: UpstreamClient,
    /// Its metric labels.
    pub labels: UpstreamLabels,
}

impl Upstream {
    /// Builds the client; reads the CA file when one is configured.
    pub fn new(config: UpstreamConfig) -> Result<Upstream, ConfigError> {
        let mut roots = rustls::RootCertStore::empty();
        match &config.ca_file {
            Some(file) => {
                let pem = file.read()?;
                let mut n = 0;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| file.error(format!("invalid PEM in {}: {e}", file.path.display())))?;
                    roots
                        .add(cert)
                        .map_err(|e| file.error(format!("invalid CA certificate in {}: {e}", file.path.display())))?;
                    n += 1;
                }
                if n == 0 {
                    return Err(file.error(format!("no certificates in {}", file.path.display())));
                }
            }
            None => roots = crate::net::web_roots(),
        }
        let tls = crate::net::client_tls(roots);
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        let labels = UpstreamLabels { upstream: Name(config.name.as_str().into()) };
        Ok(Upstream { config, client, labels })
    }
}
