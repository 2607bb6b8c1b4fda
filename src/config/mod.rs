//! Typed configuration: parsed from YAML, validated whole, with every error reported as
//! `FILE:LINE:COL: path.to.field: message`.
//!
//! `Config::parse(text, origin)` is pure (no files, no network) and is what `atgate check`,
//! the loader and the tests all call. File references (TLS certificates, CA bundles) are
//! read when the runtime is built, not here.

mod auth;
mod error;
mod rate;
mod raw;
mod require;
mod service;
pub mod units;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::time::Duration;

pub(crate) use auth::decode_hex;
pub use error::{ConfigError, ConfigErrors, Place};
pub use service::is_nsid;

use crate::router::pattern::MatchKey;

/// Proxy-trust headers besides `X-Forwarded-For/-Proto/-Host` and `Forwarded` (which
/// atgate always replaces): upstream frameworks read them as the client's address or the
/// URL it asked for, so only a trusted proxy may send them.
pub const DEFAULT_TRUSTED_PROXY_HEADERS: [&str; 7] = [
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-port",
    "x-forwarded-prefix",
];

/// The example configuration shipped in the repository, also used by tests.
pub const EXAMPLE: &str = include_str!("../../config/atgate.yaml");

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Public listener addresses.
    pub listen: Vec<SocketAddr>,
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`). Defaults to `127.0.0.1:9090`.
    pub admin_listen: Option<SocketAddr>,
    /// External origin of the gateway (scheme, host, port), when set.
    pub public_url: Option<url::Url>,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Headers only a trusted proxy may set: removed from requests whose peer is not in
    /// `trusted_proxies`. Default [`DEFAULT_TRUSTED_PROXY_HEADERS`].
    pub trusted_proxy_headers: Vec<http::HeaderName>,
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
    /// DPoP settings.
    pub dpop: DpopConfig,
    /// Trusted OAuth authorization servers.
    pub issuers: Vec<IssuerConfig>,
    /// Outbound fetch policy.
    pub outbound: OutboundConfig,
    /// Names of the injected identity headers.
    pub identity_headers: IdentityHeaders,
    /// DID and handle resolution.
    pub identity: IdentityConfig,
    /// Service-auth rules and atgate's service identity.
    pub service_auth: ServiceAuthConfig,
    /// A directory of pinned permission-set lexicons (`*.json`), read at start.
    pub permission_sets: Option<FileRef>,
    /// Per-request app-password credentials.
    pub app_password: AppPasswordConfig,
    /// The replay store.
    pub replay: ReplayConfig,
    /// Watching the config file.
    pub reload: ReloadConfig,
    /// The signed identity assertion sent to upstreams of routes with `assertion: true`.
    pub assertion: AssertionConfig,
    /// atgate as the atproto OAuth client of `oauth_session` routes.
    pub oauth_client: Option<OAuthClientConfig>,
}

/// `oauth_client:`: atgate signs browsers in with their atproto account (a confidential
/// client, backend-for-frontend). Its `client_id` is `public_url` + `path_prefix` +
/// `/client-metadata.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct OAuthClientConfig {
    /// `client_name` in the client metadata and the sign-in page's title.
    pub client_name: String,
    /// Private ES256 JWKs (a JWKS, or one JWK): the first signs client assertions, all are
    /// published. Without them a random per-process key is used and a warning logged.
    pub keys: Option<SecretRef>,
    /// The scope requested: `atproto` plus granular scopes or `include:` sets.
    pub scope: String,
    /// Where the client endpoints live. Default `/oauth`.
    pub path_prefix: String,
    /// `client_uri`, `logo_uri`, `tos_uri`, `policy_uri` of the metadata.
    pub client_uri: Option<String>,
    /// See `client_uri`.
    pub logo_uri: Option<String>,
    /// See `client_uri`.
    pub tos_uri: Option<String>,
    /// See `client_uri`.
    pub policy_uri: Option<String>,
    /// The session cookie's name. Default `atgate_session`.
    pub cookie_name: String,
    /// The key that signs cookies (at least 32 bytes). Without it a random per-process key
    /// is used and a warning logged.
    pub cookie_secret: Option<SecretRef>,
    /// A session ends after this long without a request (sliding). Default 7d.
    pub session_ttl: Duration,
    /// Access tokens are refreshed this long before they expire. Default 60s.
    pub refresh_before: Duration,
    /// A path prefix (e.g. `/xrpc`) whose requests atgate forwards to the signed-in user's
    /// PDS with the session's DPoP-bound token, as `/xrpc/<rest>`.
    pub pds_proxy: Option<String>,
    /// Sign-ins a client address may start (each costs resolutions and a PAR request).
    /// Default 30/m, burst 30.
    pub sign_in_rate: RateLimit,
}

impl OAuthClientConfig {
    /// The defaults, with the given scope.
    pub fn with_scope(scope: &str) -> OAuthClientConfig {
        OAuthClientConfig {
            client_name: "atgate".into(),
            keys: None,
            scope: scope.into(),
            path_prefix: "/oauth".into(),
            client_uri: None,
            logo_uri: None,
            tos_uri: None,
            policy_uri: None,
            cookie_name: "atgate_session".into(),
            cookie_secret: None,
            session_ttl: Duration::from_secs(7 * 86_400),
            refresh_before: Duration::from_secs(60),
            pds_proxy: None,
            sign_in_rate: RateLimit { by: LimitBy::Ip, requests: 30, period: Duration::from_secs(60), burst: 30 },
        }
    }
}

/// `assertion:`; every field has a default.
#[derive(Debug, Clone, PartialEq)]
pub struct AssertionConfig {
    /// Private ES256 JWKs (a JWKS, or one JWK): the first signs, all are published.
    /// Without them a random per-process key is used and a warning logged.
    pub keys: Option<SecretRef>,
    /// `iss`. Default `service_auth.did`, else `public_url`, else `atgate`.
    pub issuer: Option<String>,
    /// Lifetime. Default 60s.
    pub ttl: Duration,
    /// Header name. Default `x-atgate-assertion`.
    pub header: http::HeaderName,
}

impl Default for AssertionConfig {
    fn default() -> Self {
        AssertionConfig {
            keys: None,
            issuer: None,
            ttl: Duration::from_secs(60),
            header: http::HeaderName::from_static("x-atgate-assertion"),
        }
    }
}

/// `reload:`: the config file is polled and applied when its contents change.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadConfig {
    /// Poll the file (`atgate run`). Default true. SIGHUP reloads either way.
    pub watch: bool,
    /// How often. Default 2s.
    pub interval: Duration,
}

/// Names of the identity headers sent upstream. Each must start with `x-atproto-` or
/// `x-atgate-`, so that the ingress strip removes client-sent copies of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    /// The principal's DID. Default `x-atproto-did`.
    pub did: http::HeaderName,
    /// `oauth` or `service` (later `app-password`). Default `x-atproto-auth`.
    pub auth: http::HeaderName,
    /// The OAuth `client_id`. Default `x-atproto-client-id`.
    pub client_id: http::HeaderName,
    /// The granted scope. Default `x-atproto-scope`.
    pub scope: http::HeaderName,
    /// The DPoP key thumbprint. Default `x-atproto-jkt`.
    pub jkt: http::HeaderName,
    /// A service JWT's `lxm`. Default `x-atproto-lxm`.
    pub lxm: http::HeaderName,
    /// A service JWT's `aud`. Default `x-atproto-aud`.
    pub aud: http::HeaderName,
    /// The verified handle. Default `x-atproto-handle`.
    pub handle: http::HeaderName,
    /// An app-password session's PDS (`forward_pds_session`). Default `x-atproto-pds`.
    pub pds: http::HeaderName,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        IdentityHeaders {
            did: http::HeaderName::from_static("x-atproto-did"),
            auth: http::HeaderName::from_static("x-atproto-auth"),
            client_id: http::HeaderName::from_static("x-atproto-client-id"),
            scope: http::HeaderName::from_static("x-atproto-scope"),
            jkt: http::HeaderName::from_static("x-atproto-jkt"),
            lxm: http::HeaderName::from_static("x-atproto-lxm"),
            aud: http::HeaderName::from_static("x-atproto-aud"),
            handle: http::HeaderName::from_static("x-atproto-handle"),
            pds: http::HeaderName::from_static("x-atproto-pds"),
        }
    }
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

/// Two references are the same file when their paths are: where the config names it
/// does not matter (reloads compare configs to keep what did not change).
impl PartialEq for FileRef {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl FileRef {
    /// Reads the file, or says why not in config-error form.
    pub fn read(&self) -> Result<Vec<u8>, ConfigError> {
        std::fs::read(&self.path).map_err(|e| self.error(format!("cannot read {}: {e}", self.path.display())))
    }

    /// An error about this file's contents, placed at the field that names it.
    pub fn error(&self, message: String) -> ConfigError {
        ConfigError { origin: self.origin.clone(), place: self.place, field: self.field.clone(), message }
    }
}

/// PEM files for a TLS listener.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: FileRef,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: FileRef,
}

/// `limits:`; every field has a default.
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `atgate=debug`. Default `info`.
    pub level: String,
    /// `json` (default) or `text`.
    pub json: bool,
    /// OpenTelemetry trace export (builds with the `otlp` feature).
    pub otlp: Option<OtlpConfig>,
}

/// `log.otlp:`: spans exported over OTLP/HTTP (protobuf).
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// The collector's traces URL, e.g. `http://otel-collector:4318/v1/traces`.
    pub endpoint: url::Url,
    /// `service.name`. Default `atgate`.
    pub service_name: String,
    /// Share of new traces sampled, 0 to 1; a sampled parent (`traceparent`) is always
    /// followed. Default 1.
    pub sample_ratio: f64,
}

/// One upstream service.
#[derive(Debug, Clone, PartialEq)]
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

/// The credential kinds a route accepts (`auth: none | dpop | service_auth`, or a list);
/// none at all means a public route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuthMethods {
    /// `Authorization: DPoP <token>` + `DPoP: <proof>` from a trusted issuer.
    pub dpop: bool,
    /// `Authorization: Bearer <service JWT>` signed by the user's DID key.
    pub service_auth: bool,
    /// A handle (or DID) and an app password in headers, exchanged for a PDS session.
    pub app_password: bool,
    /// A browser session cookie from atgate's own atproto OAuth sign-in.
    pub oauth_session: bool,
}

impl AuthMethods {
    /// Whether the route is public.
    pub fn is_public(self) -> bool {
        !self.dpop && !self.service_auth && !self.app_password && !self.oauth_session
    }
}

/// Where seen proof and token ids are kept (`replay:`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayConfig {
    /// `redis` with the environment variable holding the URL; `None` for memory.
    pub redis_url: Option<SecretRef>,
    /// On a Redis failure use this replica's memory (`fail_open_local`) rather than answer
    /// 503 (`fail_closed`, the default).
    pub fail_open_local: bool,
    /// Time allowed for one Redis round trip. Default 250ms.
    pub timeout: Option<Duration>,
    /// Key prefix. Default `atgate:replay:`.
    pub key_prefix: Option<String>,
}

/// `app_password:`: per-request app-password credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct AppPasswordConfig {
    /// Header carrying the handle or DID. Default `x-atproto-handle`.
    pub handle_header: http::HeaderName,
    /// Header carrying the app password. Default `x-atproto-password`.
    pub password_header: http::HeaderName,
    /// Require the `xxxx-xxxx-xxxx-xxxx` app-password format. Default true.
    pub require_format: bool,
    /// Accept main-password sessions (`com.atproto.access`). Default false.
    pub allow_main_password: bool,
    /// Accept taken-down accounts. Default false.
    pub allow_takendown: bool,
    /// How long a failed login is remembered. Default 60s.
    pub failure_ttl: Duration,
    /// Most sessions cached. Default 100,000.
    pub cache_capacity: u64,
}

impl Default for AppPasswordConfig {
    fn default() -> Self {
        AppPasswordConfig {
            handle_header: http::HeaderName::from_static("x-atproto-handle"),
            password_header: http::HeaderName::from_static("x-atproto-password"),
            require_format: true,
            allow_main_password: false,
            allow_takendown: false,
            failure_ttl: Duration::from_secs(60),
            cache_capacity: 100_000,
        }
    }
}

/// Which XRPC method a service JWT's `lxm` must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lxm {
    /// The NSID in the request path `/xrpc/<nsid>`.
    FromPath,
    /// This NSID.
    Fixed(String),
}

/// Where a required value comes from: the request, or fixed in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source<T> {
    /// Derived from the request (the XRPC method, its JSON body, `Content-Type`).
    Request,
    /// This value.
    Fixed(T),
}

/// One permission a route requires (`routes[i].require`); all must pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `rpc`: call `lxm` at `aud` (`None` = atgate's own `did#service_id`).
    Rpc {
        /// The method.
        lxm: Lxm,
        /// The service reference; `None` for `self`.
        aud: Option<String>,
    },
    /// `repo`: write into a collection; from the request means from the XRPC write call
    /// (`createRecord`, `putRecord`, `deleteRecord`, `applyWrites`) and its JSON body.
    Repo {
        /// The collection.
        collection: Source<String>,
        /// The action.
        action: Source<crate::scope::RepoAction>,
    },
    /// `blob`: upload this MIME type (from `Content-Type`, or fixed).
    Blob {
        /// The MIME type.
        mime: Source<String>,
    },
    /// `account`.
    Account {
        /// `email`, `repo` or `status`.
        attr: String,
        /// `manage` rather than `read`.
        manage: bool,
    },
    /// `identity`.
    Identity {
        /// `handle` or `*`.
        attr: String,
    },
    /// A plain scope string the principal's scopes must cover.
    Scope(crate::scope::Scope),
    /// `include:NSID[?aud=]`: every permission the set grants.
    Include {
        /// The set.
        nsid: String,
        /// The audience its rpc permissions inherit.
        aud: Option<String>,
    },
}

/// Who may use a route, by DID and, for service auth, by PDS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrincipalPolicy {
    /// When set, only these DIDs.
    pub allow_dids: Option<Vec<String>>,
    /// Never these DIDs.
    pub deny_dids: Vec<String>,
    /// When set, only DIDs whose document names one of these PDS origins.
    pub allow_pds: Option<Vec<String>>,
}

impl PrincipalPolicy {
    /// Whether a DID passes the allow and deny lists.
    pub fn admits(&self, did: &str) -> bool {
        !self.deny_dids.iter().any(|d| d == did) && self.allow_dids.as_ref().is_none_or(|a| a.iter().any(|d| d == did))
    }

    /// Whether a PDS endpoint passes `allow_pds`.
    pub fn admits_pds(&self, pds: Option<&url::Url>) -> bool {
        match &self.allow_pds {
            None => true,
            Some(list) => pds.is_some_and(|p| list.iter().any(|o| *o == p.origin().ascii_serialization())),
        }
    }
}

/// `identity:`: DID and handle resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityConfig {
    /// The PLC directory. Default `https://plc.directory`.
    pub plc_url: url::Url,
    /// DNS servers for handle TXT lookups; empty uses the system's.
    pub dns_servers: Vec<SocketAddr>,
    /// Time allowed for one resolution. Default 3s.
    pub timeout: Duration,
    /// How long a DID document is used without refetching. Default 10m.
    pub fresh: Duration,
    /// How long a document keeps serving (refetched in the background, kept if the
    /// refetch fails). Default 24h.
    pub max_stale: Duration,
    /// How long "no such DID" is remembered. Default 60s.
    pub not_found_ttl: Duration,
    /// How long a transport failure is remembered. Default 10s.
    pub error_ttl: Duration,
    /// Least time between forced refetches of one DID (after a signature failure). Default 30s.
    pub refresh_interval: Duration,
    /// Most DID documents (and handles) cached. Default 100,000.
    pub cache_capacity: u64,
    /// Let handles under `.test` resolve (development). Default false.
    pub allow_test_handles: bool,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            plc_url: url::Url::parse("https://plc.directory").expect("valid URL"),
            dns_servers: Vec::new(),
            timeout: Duration::from_secs(3),
            fresh: Duration::from_secs(600),
            max_stale: Duration::from_secs(86_400),
            not_found_ttl: Duration::from_secs(60),
            error_ttl: Duration::from_secs(10),
            refresh_interval: Duration::from_secs(30),
            cache_capacity: 100_000,
            allow_test_handles: false,
        }
    }
}

/// `service_auth:`: atgate's service identity and the rules for service JWTs.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceAuthConfig {
    /// atgate's service DID, the `aud` service JWTs must name.
    pub did: Option<String>,
    /// The service id: `aud` is `<did>#<service_id>`. Default `atgate`.
    pub service_id: String,
    /// The `type` of the service entry in the served DID document. Default `AtgateService`.
    pub service_type: String,
    /// Serve `/.well-known/did.json` for a `did:web` service DID. Default false.
    pub serve_did_document: bool,
    /// Also accept the bare DID as `aud` (PDSes still send it). Default true.
    pub accept_bare_did_audience: bool,
    /// Refuse high-S and DER signatures. Default false (the reference accepts them).
    pub strict_low_s: bool,
    /// Longest `exp - iat` with `lxm`. Default 1h.
    pub max_lifetime: Duration,
    /// Longest `exp - iat` without `lxm`. Default 60s.
    pub max_lifetime_without_lxm: Duration,
    /// How far in the future `iat` may be. Default 60s.
    pub iat_skew: Duration,
    /// Verification method ids a `kid` header may name. Default `[atproto]`.
    pub key_ids: Vec<String>,
}

impl ServiceAuthConfig {
    /// atgate's service reference `<did>#<service_id>`, when a service DID is configured.
    pub fn audience(&self) -> Option<String> {
        self.did.as_ref().map(|did| format!("{did}#{}", self.service_id))
    }
}

impl Default for ServiceAuthConfig {
    fn default() -> Self {
        ServiceAuthConfig {
            did: None,
            service_id: "atgate".into(),
            service_type: "AtgateService".into(),
            serve_did_document: false,
            accept_bare_did_audience: true,
            strict_low_s: false,
            max_lifetime: Duration::from_secs(3600),
            max_lifetime_without_lxm: Duration::from_secs(60),
            iat_skew: Duration::from_secs(60),
            key_ids: vec!["atproto".into()],
        }
    }
}

/// A secret named by the config, read from the environment or a file at build time.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretRef {
    /// An environment variable.
    Env {
        /// Its name.
        name: String,
        /// Where the config names it.
        at: FileRef,
    },
    /// A file (trailing whitespace trimmed).
    File(FileRef),
}

impl SecretRef {
    /// Reads the secret.
    pub fn read(&self) -> Result<Vec<u8>, ConfigError> {
        match self {
            SecretRef::Env { name, at } => std::env::var(name)
                .map(String::into_bytes)
                .map_err(|_| at.error(format!("environment variable {name} is not set"))),
            SecretRef::File(file) => {
                let mut bytes = file.read()?;
                while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                    bytes.pop();
                }
                Ok(bytes)
            }
        }
    }

    /// Where the config names it (for errors about its value).
    pub fn origin(&self) -> &FileRef {
        match self {
            SecretRef::Env { at, .. } => at,
            SecretRef::File(file) => file,
        }
    }
}

/// `dpop:`; every field has a default.
#[derive(Debug, Clone, PartialEq)]
pub struct DpopConfig {
    /// The nonce secret (64 hex characters). Without it a random per-process secret is
    /// used, and replicas then disagree on nonces.
    pub nonce_secret: Option<SecretRef>,
    /// Nonce rotation interval, 1s to 60s. Default 60s.
    pub nonce_rotation: Duration,
    /// Largest `DPoP` header accepted. Default 8 KiB.
    pub max_proof_bytes: usize,
    /// Most proof `jti`s remembered at once by the in-memory replay store. Default 1,000,000.
    pub replay_capacity: u64,
    /// Most verified access tokens cached. Default 100,000.
    pub token_cache_capacity: u64,
}

impl Default for DpopConfig {
    fn default() -> Self {
        DpopConfig {
            nonce_secret: None,
            nonce_rotation: Duration::from_secs(60),
            max_proof_bytes: 8 << 10,
            replay_capacity: 1_000_000,
            token_cache_capacity: 100_000,
        }
    }
}

/// Where a trusted issuer's token-signing keys come from.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    /// `/.well-known/oauth-authorization-server` of the issuer, then its `jwks_uri`.
    Discovery,
    /// This JWKS URL.
    JwksUri(url::Url),
    /// A JWKS file, read at start.
    JwksFile(FileRef),
    /// One public key, given inline.
    PublicKey(crate::jose::Jwk),
    /// An HS256 shared secret.
    Hs256(SecretRef),
}

/// One trusted authorization server.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuerConfig {
    /// The exact `iss` value.
    pub issuer: String,
    /// Key source.
    pub keys: KeySource,
    /// Accepted `aud` values; empty accepts any.
    pub audiences: Vec<String>,
    /// Accepted token algorithms: `ES256`, `ES256K`, `HS256`.
    pub algs: Vec<String>,
    /// Tolerance for `exp` and `nbf`. Default 0s.
    pub clock_skew: Duration,
    /// How often remote keys are refetched. Default 5m.
    pub jwks_refresh: Duration,
    /// How long fetched keys keep serving while the issuer is unreachable. Default 24h.
    pub max_stale: Duration,
    /// Expand `include:` scopes in this issuer's tokens with the pinned permission sets
    /// (for issuers that leave them unexpanded). Default false: `include:` grants nothing.
    pub expand_include: bool,
}

/// `outbound:`: the client that fetches JWKS and metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundConfig {
    /// Allow loopback, private, link-local and other non-global addresses. Default false.
    pub allow_private_addresses: bool,
    /// Allow `http://` URLs. Default false.
    pub allow_http: bool,
    /// Whole-request timeout. Default 10s.
    pub timeout: Duration,
    /// Largest response body read. Default 512 KiB.
    pub max_response_bytes: u64,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            allow_private_addresses: false,
            allow_http: false,
            timeout: Duration::from_secs(10),
            max_response_bytes: 512 << 10,
        }
    }
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
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Unique name, used in logs and metric labels.
    pub name: String,
    /// What requests it takes.
    pub key: MatchKey,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    /// Credential kinds.
    pub auth: AuthMethods,
    /// Forward `Authorization` and `DPoP` to the upstream. Default false.
    pub forward_credentials: bool,
    /// The method a service JWT's `lxm` must name (service-auth routes; default from the path).
    pub lxm: Lxm,
    /// Accept a service JWT more than once (clients reusing a `getServiceAuth` token).
    /// Default false.
    pub allow_token_reuse: bool,
    /// Inject the principal's bidirectionally verified handle. Default false.
    pub inject_handle: bool,
    /// Who may use the route.
    pub policy: PrincipalPolicy,
    /// Permissions every request needs.
    pub require: Vec<Requirement>,
    /// App-password routes: send the user's PDS and `Authorization: Bearer <accessJwt>`
    /// upstream. Default false.
    pub forward_pds_session: bool,
    /// Path change before forwarding.
    pub rewrite: Option<Rewrite>,
    /// Request rate limits; a request must pass every one.
    pub rate_limits: Vec<RateLimit>,
    /// Send a signed identity assertion (`assertion.header`). Default false.
    pub assertion: bool,
    /// Protocols an HTTP/1.1 `Upgrade` may switch to (lower case). Default `[websocket]`;
    /// never `h2c`.
    pub upgrades: Vec<String>,
}

/// What a rate limit counts requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitBy {
    /// The client address (after trusted proxies); IPv6 by its /64. Checked before auth.
    Ip,
    /// The authenticated principal's DID. Checked after auth.
    Did,
    /// The OAuth `client_id` of a DPoP token. Checked after auth.
    ClientId,
}

impl LimitBy {
    /// The config spelling, also the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitBy::Ip => "ip",
            LimitBy::Did => "did",
            LimitBy::ClientId => "client_id",
        }
    }
}

/// One rate limit: `requests` per `period` on average, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// The key.
    pub by: LimitBy,
    /// Requests per period.
    pub requests: u32,
    /// The period.
    pub period: Duration,
    /// Most requests at once. Default `requests`.
    pub burst: u32,
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

    /// Files the runtime reads (secrets, keys, CA bundles): the reload watcher polls them
    /// with the config file, so a rotated Secret takes effect without a restart.
    pub fn watched_files(&self) -> Vec<&Path> {
        fn file(s: &SecretRef) -> Option<&Path> {
            match s {
                SecretRef::File(f) => Some(f.path.as_path()),
                SecretRef::Env { .. } => None,
            }
        }
        let mut files: Vec<&Path> = Vec::new();
        files.extend(self.dpop.nonce_secret.as_ref().and_then(file));
        files.extend(self.assertion.keys.as_ref().and_then(file));
        if let Some(o) = &self.oauth_client {
            files.extend(o.keys.as_ref().and_then(file));
            files.extend(o.cookie_secret.as_ref().and_then(file));
        }
        for issuer in &self.issuers {
            match &issuer.keys {
                KeySource::JwksFile(f) => files.push(&f.path),
                KeySource::Hs256(s) => files.extend(file(s)),
                _ => {}
            }
        }
        files.extend(self.upstreams.iter().filter_map(|u| u.ca_file.as_ref()).map(|f| f.path.as_path()));
        files
    }

    /// The upstream a route forwards to.
    pub fn upstream_of(&self, route: &RouteConfig) -> &UpstreamConfig {
        &self.upstreams[route.upstream]
    }
}

#[cfg(test)]
mod tests;
