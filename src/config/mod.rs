//! Typed configuration: parsed from YAML, validated whole, with every error reported as
//! `FILE:LINE:COL: path.to.field: message`.
//!
//! `Config::parse(text, origin)` is pure (no files, no network) and is what `atgate check`,
//! the loader and the tests all call. File references (TLS certificates, CA bundles) are
//! read when the runtime is built, not here.

mod error;
mod raw;
pub mod units;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::time::Duration;

pub use error::{ConfigError, ConfigErrors, Place};

use crate::router::pattern::MatchKey;

/// The example configuration shipped in the repository, also used by tests.
pub const EXAMPLE: &str = include_str!("../../config/atgate.yaml");

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Public listener addresses.
    pub listen: Vec<SocketAddr>,
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`). Defaults to `127.0.0.1:9090`.
    pub admin_listen: Option<SocketAddr>,
    /// External origin of the gateway (scheme, host, port), when set.
    pub public_url: Option<url::Url>,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// TLS for the public listeners.
    pub tls: Option<TlsFiles>,
    /// Resource limits.
    pub limits: Limits,
    /// Whether to append `Via: 1.1 atgate` to forwarded requests and responses.
    pub via: bool,
    /// Log settings.
    pub log: LogConfig,
    /// Named upstreams, in file order.
    pub upstreams: Vec<UpstreamConfig>,
    /// Routes, in file order (the router sorts them by specificity).
    pub routes: Vec<RouteConfig>,
}

/// A file the config names, read when the runtime is built.
#[derive(Debug, Clone)]
pub struct FileRef {
    /// The path as written.
    pub path: PathBuf,
    /// The config file it was written in.
    pub origin: String,
    /// Where.
    pub place: Place,
    /// Which field.
    pub field: String,
}

impl FileRef {
    /// Reads the file, or says why not in config-error form.
    pub fn read(&self) -> Result<Vec<u8>, ConfigError> {
        std::fs::read(&self.path)
            .map_err(|e| self.error(format!("cannot read {}: {e}", self.path.display())))
    }

    /// An error about this file's contents, placed at the field that names it.
    pub fn error(&self, message: String) -> ConfigError {
        ConfigError {
            origin: self.origin.clone(),
            place: self.place,
            field: self.field.clone(),
            message,
        }
    }
}

/// PEM files for a TLS listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: FileRef,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: FileRef,
}

/// `limits:`; every field has a default.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body accepted; larger gets 413. Default 10 MiB.
    pub max_body: u64,
    /// Largest request head (HTTP/1 buffer, HTTP/2 header list). Default 64 KiB.
    pub max_header_bytes: u64,
    /// Time allowed for a client to send a request head (HTTP/1). Default 10s.
    pub header_timeout: Duration,
    /// Time from request to response head, across all stages. Default 60s.
    pub request_timeout: Duration,
    /// Requests served at once; past it, 503. Default 4096.
    pub max_concurrent_requests: usize,
    /// How long a graceful shutdown waits for in-flight requests. Default 30s.
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 10 << 20,
            max_header_bytes: 64 << 10,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_concurrent_requests: 4096,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// Log output.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `atgate=debug`. Default `info`.
    pub level: String,
    /// `json` (default) or `text`.
    pub json: bool,
}

/// One upstream service.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The key under `upstreams:`.
    pub name: String,
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    /// Host and port.
    pub authority: http::uri::Authority,
    /// Path prefixed to every forwarded path (`""` when the URL has none).
    pub base_path: String,
    /// Time allowed for the upstream's response head. Default 30s.
    pub timeout: Duration,
    /// Time allowed to connect. Default 5s.
    pub connect_timeout: Duration,
    /// Send the client's `Host` rather than the upstream's. Default false.
    pub preserve_host: bool,
    /// Extra CA certificates (PEM) for an `https` upstream, instead of the web PKI roots.
    pub ca_file: Option<FileRef>,
}

/// How a route authenticates requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// Public: no credentials are read.
    None,
}

/// How the path is changed before forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Remove this literal prefix (an empty rest becomes `/`).
    StripPrefix(String),
    /// Replace the route's literal path (exact routes) or prefix (prefix routes) with this.
    Replace {
        /// What the route matched literally.
        matched: String,
        /// What to put instead.
        with: String,
    },
}

/// One route.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Unique name, used in logs and metric labels.
    pub name: String,
    /// What requests it takes.
    pub key: MatchKey,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    /// Credential kind.
    pub auth: AuthMethod,
    /// Forward `Authorization` and `DPoP` to the upstream. Default false.
    pub forward_credentials: bool,
    /// Path change before forwarding.
    pub rewrite: Option<Rewrite>,
}

impl Config {
    /// Parses and validates config text. `origin` names the text in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
        validate::parse(text, origin)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &origin),
            Err(e) => Err(ConfigErrors(vec![ConfigError {
                origin,
                place: Place::default(),
                field: String::new(),
                message: format!("cannot read config file: {e}"),
            }])),
        }
    }

    /// The upstream a route forwards to.
    pub fn upstream_of(&self, route: &RouteConfig) -> &UpstreamConfig {
        &self.upstreams[route.upstream]
    }
}

#[cfg(test)]
mod tests;
