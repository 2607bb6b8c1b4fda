//! State shared by every stage: the swappable runtime, metrics, readiness, limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use crate::auth::dpop::nonce::Nonces;
use crate::auth::dpop::replay::{MemoryReplayStore, ReplayStore};
use crate::auth::issuer::Issuers;
use crate::auth::service::ServiceVerifier;
use crate::auth::token::TokenCache;
use crate::config::{Config, ConfigError, ConfigErrors, DpopConfig};
use crate::identity::Resolver;
use crate::metrics::Metrics;
use crate::net::Outbound;
use crate::proxy::Upstream;
use crate::router::{Route, RouteTable};
use crate::scope::permission_set::PermissionSets;
use crate::scope::resolve::SetResolver;

/// Everything compiled from one config: swapped whole, read once per request.
#[derive(Debug)]
pub struct Runtime {
    /// The config it was built from.
    pub config: Arc<Config>,
    /// Routes in match order.
    pub routes: RouteTable,
    /// Upstreams with their connection pools, in config order.
    pub upstreams: Vec<Arc<Upstream>>,
    /// The outbound client for JWKS and metadata.
    pub outbound: Outbound,
    /// DPoP state, when any route uses `auth: dpop`.
    pub dpop: Option<DpopState>,
    /// DID and handle resolution, when any route needs it.
    pub resolver: Option<Arc<Resolver>>,
    /// Service-JWT verification, when any route uses `auth: service_auth`.
    pub service: Option<ServiceVerifier>,
    /// atgate's service DID document, when it serves one.
    pub did_document: Option<bytes::Bytes>,
    /// Permission sets: pinned (`permission_sets.pinned_dir`), else resolved and cached.
    pub sets: Arc<SetResolver>,
    /// App-password sessions, when any route uses `auth: app_password`.
    pub sessions: Option<crate::auth::app_password::Sessions>,
}

/// Reads the pinned permission sets (`permission_sets.pinned_dir`).
fn load_permission_sets(config: &Config) -> Result<PermissionSets, ConfigErrors> {
    match &config.permission_sets {
        Some(dir) => PermissionSets::load_dir(&dir.path).map_err(|e| ConfigErrors(vec![dir.error(e)])),
        None => Ok(PermissionSets::default()),
    }
}

/// The DID document of atgate's `did:web` service identity: the service entry PDSes
/// look up to route `atproto-proxy: <did>#<service_id>` requests here.
pub fn service_did_document(config: &Config) -> Option<bytes::Bytes> {
    let sa = &config.service_auth;
    let (true, Some(did), Some(url)) = (sa.serve_did_document, &sa.did, &config.public_url) else {
        return None;
    };
    let doc = serde_json::json!({
        "@context": ["https://www.w3.org/ns/did/v1"],
        "id": did,
        "service": [{
            "id": format!("#{}", sa.service_id),
            "type": sa.service_type,
            "serviceEndpoint": url.origin().ascii_serialization(),
        }],
    });
    Some(doc.to_string().into())
}

/// What the DPoP path needs: nonces, trusted issuers and their keys, verified tokens.
#[derive(Debug)]
pub struct DpopState {
    /// Nonce source.
    pub nonces: Nonces,
    /// Trusted issuers.
    pub issuers: Issuers,
    /// Verified tokens by SHA-256.
    pub tokens: TokenCache,
    /// Largest `DPoP` header accepted.
    pub max_proof_bytes: usize,
    /// Parsed proof keys by thumbprint.
    pub proof_keys: crate::auth::dpop::verify::KeyCache,
}

impl DpopState {
    fn build(config: &DpopConfig, issuers: Issuers) -> Result<DpopState, ConfigError> {
        let secret = match &config.nonce_secret {
            Some(secret) => {
                let text = secret.read()?;
                let bytes = std::str::from_utf8(&text).ok().and_then(crate::config::decode_hex);
                match bytes.and_then(|b| <[u8; 32]>::try_from(b).ok()) {
                    Some(b) => b,
                    None => {
                        return Err(secret.origin().error("nonce secret must be 64 hex characters (32 bytes)".into()));
                    }
                }
            }
            None => {
                tracing::warn!(
                    "dpop.nonce_secret_env/_file not set: using a random per-process nonce secret; replicas will disagree on nonces"
                );
                let mut b = [0u8; 32];
                aws_lc_rs::rand::fill(&mut b).map_err(|_| ConfigError {
                    origin: String::new(),
                    place: Default::default(),
                    field: "dpop".into(),
                    message: "no randomness for the nonce secret".into(),
                })?;
                b
            }
        };
        Ok(DpopState {
            nonces: Nonces::new(&secret, config.nonce_rotation),
            issuers,
            tokens: TokenCache::new(config.token_cache_capacity),
            max_proof_bytes: config.max_proof_bytes,
            proof_keys: crate::auth::dpop::verify::KeyCache::new(10_000),
        })
    }
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
        let outbound = Outbound::new(config.outbound.clone());
        let pinned = load_permission_sets(&config)?;
        let uses_sets = config.issuers.iter().any(|i| i.expand_include)
            || config
                .routes
                .iter()
                .any(|r| r.require.iter().any(|q| matches!(q, crate::config::Requirement::Include { .. })));
        let needs_identity =
            uses_sets || config.routes.iter().any(|r| r.auth.service_auth || r.auth.app_password || r.inject_handle);
        let resolver = needs_identity.then(|| Resolver::new(&config.identity, outbound.clone()));
        let sets = Arc::new(SetResolver::new(pinned, resolver.clone().filter(|_| uses_sets)));
        let dpop = if config.routes.iter().any(|r| r.auth.dpop) {
            let built = Issuers::new(&config.issuers, &outbound)
                .map(|issuers| issuers.with_permission_sets(sets.clone()))
                .and_then(|issuers| DpopState::build(&config.dpop, issuers));
            match built {
                Ok(d) => Some(d),
                Err(e) => return Err(ConfigErrors(vec![e])),
            }
        } else {
            None
        };
        let service = match &resolver {
            Some(r) if config.routes.iter().any(|r| r.auth.service_auth) => {
                Some(ServiceVerifier::new(config.service_auth.clone(), r.clone()))
            }
            _ => None,
        };
        let identity = Arc::new(config.identity_headers.clone());
        let routes = config
            .routes
            .iter()
            .map(|r| Arc::new(Route::new(r, upstreams[r.upstream].clone(), identity.clone())))
            .collect();
        let sessions = resolver
            .as_ref()
            .filter(|_| config.routes.iter().any(|r| r.auth.app_password))
            .map(|r| crate::auth::app_password::Sessions::new(&config.app_password, r.clone()));
        Ok(Runtime {
            routes: RouteTable::new(routes),
            upstreams,
            outbound,
            dpop,
            resolver,
            service,
            did_document: service_did_document(&config),
            sets,
            sessions,
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
    /// Seen DPoP proofs (and later service-JWT ids); outlives config reloads.
    pub replay: Arc<dyn ReplayStore>,
    ready: AtomicBool,
}

impl Shared {
    /// Wraps a runtime, with the in-memory replay store.
    pub fn new(runtime: Runtime) -> Arc<Shared> {
        let replay = Arc::new(MemoryReplayStore::new(runtime.config.dpop.replay_capacity));
        Shared::with_replay(runtime, replay)
    }

    /// Wraps a runtime, with this replay store.
    pub fn with_replay(runtime: Runtime, replay: Arc<dyn ReplayStore>) -> Arc<Shared> {
        let permits = runtime.config.limits.max_concurrent_requests;
        Arc::new(Shared {
            runtime: ArcSwap::from_pointee(runtime),
            metrics: Metrics::new(),
            concurrency: Arc::new(Semaphore::new(permits)),
            replay,
            ready: AtomicBool::new(false),
        })
    }

    /// Whether `/readyz` says ready: serving, and every issuer's keys fetched once.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.runtime.load().dpop.as_ref().is_none_or(|d| d.issuers.all_loaded())
    }

    /// Marks ready (listeners bound) or not (draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}
