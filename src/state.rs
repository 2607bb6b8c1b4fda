//! State shared by every stage: the swappable runtime, metrics, readiness, limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use crate::auth::dpop::nonce::Nonces;
use crate::auth::dpop::replay::{Measured, MemoryReplayStore, ReplayStore};
use crate::auth::issuer::Issuers;
use crate::auth::service::ServiceVerifier;
use crate::auth::token::TokenCache;
use crate::config::{Config, ConfigError, ConfigErrors, DpopConfig};
use crate::identity::Resolver;
use crate::metrics::{CacheStats, Metrics};
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
    pub sessions: Option<Arc<crate::auth::app_password::Sessions>>,
    /// Identity-assertion signing, when a route asks for it or keys are configured.
    pub assertion: Option<Arc<crate::assertion::Asserter>>,
    /// atgate as an OAuth client (`oauth_client:`), for `oauth_session` routes.
    pub oauth: Option<Arc<crate::oauth::OAuthClient>>,
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
    fn build(config: &DpopConfig, issuers: Issuers, previous: Option<&DpopState>) -> Result<DpopState, ConfigError> {
        let nonces = match &config.nonce_secret {
            Some(secret) => {
                // One secret, or several separated by whitespace: the first issues, the
                // rest are still accepted (rotation).
                let text = secret.read()?;
                let parsed: Option<Vec<[u8; 32]>> = std::str::from_utf8(&text).ok().and_then(|t| {
                    t.split_whitespace()
                        .map(|s| crate::config::decode_hex(s).and_then(|b| <[u8; 32]>::try_from(b).ok()))
                        .collect()
                });
                match parsed {
                    Some(list) if !list.is_empty() => Nonces::with_older(&list[0], &list[1..], config.nonce_rotation),
                    _ => {
                        return Err(secret.origin().error(
                            "nonce secret must be 64 hex characters (32 bytes), or several separated by whitespace"
                                .into(),
                        ));
                    }
                }
            }
            None => {
                // Kept across reloads: a new one would void every nonce handed out.
                let previous = previous.map(|p| &p.nonces).filter(|n| n.is_generated());
                if previous.is_none() {
                    tracing::warn!(
                        "dpop.nonce_secret_env/_file not set: using a random per-process nonce secret; replicas will disagree on nonces"
                    );
                }
                Nonces::generated(previous, config.nonce_rotation).map_err(|_| ConfigError {
                    origin: String::new(),
                    place: Default::default(),
                    field: "dpop".into(),
                    message: "no randomness for the nonce secret".into(),
                })?
            }
        };
        Ok(DpopState {
            nonces,
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
        Runtime::build_from(config, None)
    }

    /// Compiles a config for a reload: what holds network state and is configured the
    /// same as in `previous` is carried over (upstream connection pools, the outbound
    /// client, fetched issuer keys, DID documents, app-password sessions, resolved
    /// permission sets, rate-limit buckets). Everything read from files and secrets is
    /// read again, so a reload is also how they rotate.
    pub fn build_from(config: Config, previous: Option<&Runtime>) -> Result<Runtime, ConfigErrors> {
        let mut errors = Vec::new();
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for u in &config.upstreams {
            // One with a CA file is rebuilt, so that a rotated bundle takes effect.
            let kept =
                previous.filter(|_| u.ca_file.is_none()).and_then(|p| p.upstreams.iter().find(|old| old.config == *u));
            match kept {
                Some(old) => upstreams.push(old.clone()),
                None => match Upstream::new(u.clone()) {
                    Ok(up) => upstreams.push(Arc::new(up)),
                    Err(e) => errors.push(e),
                },
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let outbound_kept = previous.filter(|p| p.config.outbound == config.outbound);
        let outbound = match outbound_kept {
            Some(p) => p.outbound.clone(),
            None => Outbound::new(config.outbound.clone()),
        };
        let pinned = load_permission_sets(&config)?;
        let uses_sets = config.issuers.iter().any(|i| i.expand_include)
            || config
                .routes
                .iter()
                .any(|r| r.require.iter().any(|q| matches!(q, crate::config::Requirement::Include { .. })));
        let needs_identity = uses_sets
            || config.oauth_client.is_some()
            || config.routes.iter().any(|r| r.auth.service_auth || r.auth.app_password || r.inject_handle);
        let resolver = needs_identity.then(|| {
            let kept = outbound_kept.filter(|p| p.config.identity == config.identity).and_then(|p| p.resolver.clone());
            kept.unwrap_or_else(|| Resolver::new(&config.identity, outbound.clone()))
        });
        let same_resolver = |p: &Runtime| match (&p.resolver, &resolver) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        let set_identity = resolver.clone().filter(|_| uses_sets);
        let sets = match previous {
            // Network-resolved sets stay cached; pinned directories are read again.
            Some(p)
                if pinned.is_empty()
                    && p.sets.pinned().is_empty()
                    && p.sets.resolves()
                    && same_resolver(p)
                    && set_identity.is_some() =>
            {
                p.sets.clone()
            }
            _ => Arc::new(SetResolver::new(pinned, set_identity)),
        };
        let dpop = if config.routes.iter().any(|r| r.auth.dpop) {
            let kept = outbound_kept.and_then(|p| p.dpop.as_ref()).map(|d| &d.issuers);
            let built = Issuers::build(&config.issuers, &outbound, kept)
                .map(|issuers| issuers.with_permission_sets(sets.clone()))
                .and_then(|issuers| DpopState::build(&config.dpop, issuers, previous.and_then(|p| p.dpop.as_ref())));
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
            .map(|r| {
                let old = previous.and_then(|p| p.routes.named(&r.name));
                Arc::new(Route::new(r, upstreams[r.upstream].clone(), identity.clone(), old.map(|o| &**o)))
            })
            .collect();
        let sessions = resolver.as_ref().filter(|_| config.routes.iter().any(|r| r.auth.app_password)).map(|r| {
            let kept = previous
                .filter(|p| same_resolver(p) && p.config.app_password == config.app_password)
                .and_then(|p| p.sessions.clone());
            kept.unwrap_or_else(|| Arc::new(crate::auth::app_password::Sessions::new(&config.app_password, r.clone())))
        });
        let assertion = crate::assertion::Asserter::build(&config, previous.and_then(|p| p.assertion.as_ref()))
            .map_err(|e| ConfigErrors(vec![e]))?;
        let oauth = match (&config.oauth_client, &config.public_url, &resolver) {
            (Some(c), Some(url), Some(r)) => {
                let old = previous.and_then(|p| p.oauth.as_deref());
                let client = crate::oauth::OAuthClient::build(c, url, r.clone(), outbound.clone(), old)
                    .map_err(|e| ConfigErrors(vec![e]))?;
                Some(Arc::new(client))
            }
            _ => None,
        };
        Ok(Runtime {
            oauth,
            assertion,
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

/// The runtime a request started on; a request extension (see [`Shared::runtime_of`]).
#[derive(Debug, Clone)]
pub struct Pinned(pub Arc<Runtime>);

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
    /// Held while a reload builds and swaps a runtime, so that reloads never interleave.
    pub reloading: tokio::sync::Mutex<()>,
    /// Browser sessions and sign-ins in progress (`oauth_session`); outlives reloads.
    pub sessions: Arc<dyn crate::oauth::store::SessionStore>,
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
        Shared::with_stores(runtime, replay, crate::oauth::store::for_gateway(None, ""))
    }

    /// Wraps a runtime, with these replay and session stores.
    pub fn with_stores(
        runtime: Runtime,
        replay: Arc<dyn ReplayStore>,
        sessions: Arc<dyn crate::oauth::store::SessionStore>,
    ) -> Arc<Shared> {
        let permits = runtime.config.limits.max_concurrent_requests;
        Arc::new_cyclic(|shared| {
            let metrics = Metrics::new(Some(Box::new(RuntimeCollector(shared.clone()))));
            let replay = Arc::new(Measured::new(replay, metrics.replay.clone()));
            Shared {
                runtime: ArcSwap::from_pointee(runtime),
                metrics,
                concurrency: Arc::new(Semaphore::new(permits)),
                replay,
                reloading: tokio::sync::Mutex::new(()),
                sessions,
                ready: AtomicBool::new(false),
            }
        })
    }

    /// Whether `/readyz` says ready: serving, and every issuer's keys fetched once.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.runtime.load().dpop.as_ref().is_none_or(|d| d.issuers.all_loaded())
    }

    /// The runtime `req` started on: pinned by the first stage that read it, so a reload
    /// landing mid-request does not mix two configs. Outside a request, the current one.
    pub fn runtime_of(&self, extensions: &http::Extensions) -> Arc<Runtime> {
        match extensions.get::<Pinned>() {
            Some(p) => p.0.clone(),
            None => self.runtime.load_full(),
        }
    }

    /// Marks ready (listeners bound) or not (draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

/// One cache as the metrics report it.
#[derive(Debug)]
pub struct CacheReport<'a> {
    /// The `cache` label.
    pub name: &'static str,
    /// Entries held now (approximate).
    pub entries: u64,
    /// Its lookups, when counted.
    pub stats: Option<&'a CacheStats>,
}

impl Runtime {
    /// Every cache of this runtime, for `atgate_cache_*`.
    pub fn caches(&self) -> Vec<CacheReport<'_>> {
        let mut out = Vec::with_capacity(8);
        let mut add = |name, entries, stats| out.push(CacheReport { name, entries, stats });
        if let Some(d) = &self.dpop {
            add("dpop_tokens", d.tokens.len(), Some(&d.tokens.stats));
            add("dpop_proof_keys", d.proof_keys.len(), Some(&d.proof_keys.stats));
        }
        if let Some(r) = &self.resolver {
            let (docs, handles) = r.cached();
            add("did_documents", docs, Some(&r.doc_stats));
            add("handles", handles, Some(&r.handle_stats));
        }
        if self.sets.resolves() {
            add("permission_sets", self.sets.cached(), Some(&self.sets.stats));
        }
        if let Some(s) = &self.sessions {
            add("app_password_sessions", s.cached(), Some(&s.stats));
        }
        let buckets = self.routes.iter().flat_map(|r| r.rate_limits.iter()).map(|l| l.keys() as u64).sum();
        add("rate_limit_buckets", buckets, None);
        out
    }
}

/// Values read at scrape time from the current runtime and the replay store: cache
/// sizes and lookups, issuer keys, replay fallbacks.
#[derive(Debug)]
struct RuntimeCollector(std::sync::Weak<Shared>);

impl prometheus_client::collector::Collector for RuntimeCollector {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;

        let Some(shared) = self.0.upgrade() else { return Ok(()) };
        let runtime = shared.runtime.load();
        let caches = runtime.caches();

        let mut e = encoder.encode_descriptor("cache_entries", "Entries held, by cache", None, MetricType::Gauge)?;
        for c in &caches {
            ConstGauge::new(c.entries as i64).encode(e.encode_family(&[("cache", c.name)])?)?;
        }
        let mut e = encoder.encode_descriptor(
            "cache_lookups",
            "Cache lookups by result (hit, miss; error: a miss whose fetch failed)",
            None,
            MetricType::Counter,
        )?;
        for c in &caches {
            for (result, n) in c.stats.map(CacheStats::counts).into_iter().flatten() {
                ConstCounter::new(n).encode(e.encode_family(&[("cache", c.name), ("result", result)])?)?;
            }
        }
        if let Some(d) = &runtime.dpop {
            let mut e = encoder.encode_descriptor(
                "issuer_keys",
                "Usable token-signing keys, by issuer (0: never fetched or stale past max_stale)",
                None,
                MetricType::Gauge,
            )?;
            for i in d.issuers.iter() {
                let keys = i.current().map_or(0, |k| k.keys.len() as i64);
                ConstGauge::new(keys).encode(e.encode_family(&[("issuer", i.config.issuer.as_str())])?)?;
            }
            let mut e = encoder.encode_descriptor(
                "issuer_keys_age_seconds",
                "Time since the issuer's keys were last fetched (remote issuers)",
                None,
                MetricType::Gauge,
            )?;
            for i in d.issuers.iter() {
                if let Some(at) = i.current().and_then(|k| k.fetched_at) {
                    let age = ConstGauge::new(at.elapsed().as_secs_f64());
                    age.encode(e.encode_family(&[("issuer", i.config.issuer.as_str())])?)?;
                }
            }
        }
        if let Some(client) = &runtime.oauth {
            let mut e = encoder.encode_descriptor(
                "oauth_events",
                "Browser session events: sign_in, sign_out, refresh, refresh_failure, session_ended",
                None,
                MetricType::Counter,
            )?;
            for (event, n) in client.events.counts() {
                ConstCounter::new(n).encode(e.encode_family(&[("event", event)])?)?;
            }
            if let Some(n) = shared.sessions.local_entries() {
                let e = encoder.encode_descriptor(
                    "oauth_store_local_entries",
                    "Browser sessions and sign-ins in progress held in this process (memory store)",
                    None,
                    MetricType::Gauge,
                )?;
                ConstGauge::new(n as i64).encode(e)?;
            }
        }
        if let Some(n) = shared.replay.local_entries() {
            let e = encoder.encode_descriptor(
                "replay_local_entries",
                "Replay keys held in this process",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(n as i64).encode(e)?;
        }
        let e = encoder.encode_descriptor(
            "replay_fallbacks",
            "Replay checks answered from local memory because Redis failed (fail_open_local)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(shared.replay.fallbacks()).encode(e)?;
        Ok(())
    }
}
