//! Trusted authorization servers and their token-signing keys.
//!
//! Static sources (inline key, JWKS file, HS256 secret) load at start. Remote ones
//! (`jwks_uri`, or discovery through `/.well-known/oauth-authorization-server`) are fetched
//! through the outbound client, held in an `ArcSwap`, refreshed in the background every
//! `jwks_refresh` (retrying from 1 s after a failure), refetched on demand for an unknown
//! `kid` at most once per 30 s per issuer (concurrent askers share that one fetch), and
//! served stale while the issuer is down, up to `max_stale`.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use aws_lc_rs::hmac;
use parking_lot::Mutex;
use serde_json::Value;

use crate::config::{ConfigError, IssuerConfig, KeySource};
use crate::jose::{Alg, Jwk, PublicKey};
use crate::net::{NetError, Outbound};

/// How often an unknown `kid` may trigger a refetch, per issuer.
pub const UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(30);

/// A token-verification key.
#[derive(Debug, Clone)]
pub enum VerifyKey {
    /// An EC public key, with its `kid` if it had one.
    Ec {
        /// `kid` from the JWKS.
        kid: Option<String>,
        /// The key.
        key: PublicKey,
    },
    /// An HS256 shared secret.
    Hmac(Box<hmac::Key>),
}

impl VerifyKey {
    /// Whether `other` is this key (a refetched JWKS parses into new values).
    pub fn same_as(&self, other: &VerifyKey) -> bool {
        match (self, other) {
            (VerifyKey::Ec { kid: a, key: ka }, VerifyKey::Ec { kid: b, key: kb }) => {
                a == b
                    && match (ka, kb) {
                        (PublicKey::P256(x), PublicKey::P256(y)) => x.as_ref() == y.as_ref(),
                        (PublicKey::K256(x), PublicKey::K256(y)) => x == y,
                        _ => false,
                    }
            }
            // Secrets are static: their key set never changes without a reload, which
            // starts a new cache. Compared by identity.
            (VerifyKey::Hmac(a), VerifyKey::Hmac(b)) => std::ptr::eq(&**a, &**b),
            _ => false,
        }
    }
}

/// Keys of one issuer at one moment.
#[derive(Debug)]
pub struct KeySet {
    /// The keys.
    pub keys: Vec<VerifyKey>,
    /// When they were fetched (`None` for static keys, which never go stale).
    pub fetched_at: Option<Instant>,
}

/// One trusted issuer.
#[derive(Debug)]
pub struct Issuer {
    /// Its config.
    pub config: IssuerConfig,
    keys: ArcSwapOption<KeySet>,
    remote: Option<Remote>,
}

#[derive(Debug)]
struct Remote {
    net: Outbound,
    /// The JWKS URL, configured or discovered.
    jwks_uri: Mutex<Option<url::Url>>,
    /// Last on-demand refetch; the async lock coalesces concurrent unknown-kid misses.
    on_demand: tokio::sync::Mutex<Option<Instant>>,
    last_error: Mutex<Option<NetError>>,
    /// Whether a background refresher runs.
    refreshing: std::sync::atomic::AtomicBool,
}

impl Issuer {
    /// Builds an issuer; static keys are loaded now, remote ones by [`Issuer::refresh`].
    pub fn new(config: IssuerConfig, net: &Outbound) -> Result<Arc<Issuer>, ConfigError> {
        let (keys, remote) = match &config.keys {
            KeySource::PublicKey(jwk) => {
                let key = jwk.public_key().map_err(|e| ConfigError {
                    origin: String::new(),
                    place: Default::default(),
                    field: "issuers.public_key".into(),
                    message: e.to_string(),
                })?;
                (Some(KeySet { keys: vec![VerifyKey::Ec { kid: jwk.kid.clone(), key }], fetched_at: None }), None)
            }
            KeySource::JwksFile(file) => {
                let bytes = file.read()?;
                let json: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| file.error(format!("invalid JSON in {}: {e}", file.path.display())))?;
                let keys = parse_jwks(&json, &config.algs);
                if keys.is_empty() {
                    return Err(file.error(format!("no usable signing keys in {}", file.path.display())));
                }
                (Some(KeySet { keys, fetched_at: None }), None)
            }
            KeySource::Hs256(secret) => {
                let bytes = secret.read()?;
                if bytes.len() < 32 {
                    return Err(secret.origin().error("HS256 secret must be at least 32 bytes".into()));
                }
                (
                    Some(KeySet {
                        keys: vec![VerifyKey::Hmac(Box::new(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))],
                        fetched_at: None,
                    }),
                    None,
                )
            }
            KeySource::JwksUri(url) => (None, Some(Remote::new(net, Some(url.clone())))),
            KeySource::Discovery => (None, Some(Remote::new(net, None))),
        };
        Ok(Arc::new(Issuer { config, keys: ArcSwapOption::new(keys.map(Arc::new)), remote }))
    }

    /// Whether keys have been loaded at least once (readiness).
    pub fn is_loaded(&self) -> bool {
        self.keys.load().is_some()
    }

    /// Whether keys come from the network.
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// The current keys, unless never loaded or stale past `max_stale`.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        let keys = self.keys.load_full()?;
        match keys.fetched_at {
            Some(at) if at.elapsed() > self.config.max_stale => None,
            _ => Some(keys),
        }
    }

    /// The last fetch error, if the last fetch failed.
    pub fn last_error(&self) -> Option<NetError> {
        self.remote.as_ref().and_then(|r| r.last_error.lock().clone())
    }

    /// Fetches the keys now.
    pub async fn refresh(&self) -> Result<(), NetError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let result = remote.fetch(&self.config).await;
        match result {
            Ok(keys) => {
                self.keys.store(Some(Arc::new(KeySet { keys, fetched_at: Some(Instant::now()) })));
                *remote.last_error.lock() = None;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(issuer = %self.config.issuer, error = %e, "fetching token keys failed");
                *remote.last_error.lock() = Some(e.clone());
                Err(e)
            }
        }
    }

    /// For a token whose `kid` is unknown: refetch, at most once per
    /// [`UNKNOWN_KID_INTERVAL`]; concurrent callers wait for the same fetch. Returns whether
    /// a fetch happened (so the caller should look again).
    pub async fn refetch_for_unknown_kid(&self) -> bool {
        let Some(remote) = &self.remote else {
            return false;
        };
        let before = self.keys.load().as_ref().and_then(|k| k.fetched_at);
        let mut last = remote.on_demand.lock().await;
        // Someone else refreshed while we waited: look again without fetching.
        let after = self.keys.load().as_ref().and_then(|k| k.fetched_at);
        if after != before {
            return true;
        }
        if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        self.refresh().await.is_ok()
    }

    /// Keeps remote keys fresh until the issuer is dropped; once per issuer.
    pub fn spawn_refresher(self: &Arc<Self>) {
        let Some(remote) = &self.remote else { return };
        if remote.refreshing.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Issuer> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut retry = Duration::from_secs(1);
            loop {
                let Some(issuer) = weak.upgrade() else { return };
                let wait = match issuer.refresh().await {
                    Ok(()) => {
                        retry = Duration::from_secs(1);
                        issuer.config.jwks_refresh
                    }
                    Err(_) => {
                        let wait = retry;
                        retry = (retry * 2).min(Duration::from_secs(60)).min(issuer.config.jwks_refresh);
                        wait
                    }
                };
                drop(issuer);
                tokio::time::sleep(wait).await;
            }
        });
    }
}

impl Remote {
    fn new(net: &Outbound, jwks_uri: Option<url::Url>) -> Remote {
        Remote {
            net: net.clone(),
            jwks_uri: Mutex::new(jwks_uri),
            on_demand: tokio::sync::Mutex::new(None),
            last_error: Mutex::new(None),
            refreshing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    async fn fetch(&self, config: &IssuerConfig) -> Result<Vec<VerifyKey>, NetError> {
        let known = self.jwks_uri.lock().clone();
        let uri = match known {
            Some(u) => u,
            None => {
                let uri = self.discover(&config.issuer).await?;
                *self.jwks_uri.lock() = Some(uri.clone());
                uri
            }
        };
        let jwks = self.net.get_json(&uri).await?;
        let keys = parse_jwks(&jwks, &config.algs);
        if keys.is_empty() && jwks.get("keys").is_none_or(|k| !k.is_array()) {
            return Err(NetError::NotJson);
        }
        Ok(keys)
    }

    /// RFC 8414: the metadata's `issuer` must equal the configured one exactly.
    async fn discover(&self, issuer: &str) -> Result<url::Url, NetError> {
        let url = url::Url::parse(&format!("{issuer}/.well-known/oauth-authorization-server"))
            .map_err(|_| NetError::Url(issuer.to_owned()))?;
        let meta = self.net.get_json(&url).await?;
        if meta.get("issuer").and_then(Value::as_str) != Some(issuer) {
            return Err(NetError::Url("metadata issuer does not match".into()));
        }
        meta.get("jwks_uri")
            .and_then(Value::as_str)
            .and_then(|u| url::Url::parse(u).ok())
            .ok_or_else(|| NetError::Url("metadata has no jwks_uri".into()))
    }
}

/// The usable signing keys of a JWKS: EC, public, meant for verification, of an allowed alg.
pub fn parse_jwks(jwks: &Value, algs: &[String]) -> Vec<VerifyKey> {
    let Some(list) = jwks.get("keys").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|v| Jwk::from_value(v).ok())
        .filter(Jwk::is_for_verification)
        .filter_map(|jwk| {
            let key = jwk.public_key().ok()?;
            algs.iter().any(|a| Alg::from_name(a) == Some(key.alg())).then_some(VerifyKey::Ec { kid: jwk.kid, key })
        })
        .collect()
}

/// The configured issuers.
#[derive(Debug, Default)]
pub struct Issuers {
    list: Vec<Arc<Issuer>>,
    /// Permission sets for issuers with `expand_include`.
    pub sets: Arc<crate::scope::resolve::SetResolver>,
}

impl Issuers {
    /// Builds every issuer (static keys load now).
    pub fn new(configs: &[IssuerConfig], net: &Outbound) -> Result<Issuers, ConfigError> {
        Issuers::build(configs, net, None)
    }

    /// Builds the issuers for a reload: a remote issuer configured exactly as in
    /// `previous` (which used the same outbound client) keeps its fetched keys and its
    /// refresher; static keys and secrets are read again.
    pub fn build(configs: &[IssuerConfig], net: &Outbound, previous: Option<&Issuers>) -> Result<Issuers, ConfigError> {
        let list = configs
            .iter()
            .map(|c| {
                let kept = previous.and_then(|p| p.list.iter().find(|i| i.is_remote() && i.config == *c));
                match kept {
                    Some(issuer) => Ok(issuer.clone()),
                    None => Issuer::new(c.clone(), net),
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Issuers { list, sets: Default::default() })
    }

    /// Uses these permission sets to expand `include:` scopes of `expand_include` issuers.
    pub fn with_permission_sets(self, sets: Arc<crate::scope::resolve::SetResolver>) -> Issuers {
        Issuers { sets, ..self }
    }

    /// The issuer with this exact `iss`.
    pub fn get(&self, iss: &str) -> Option<&Arc<Issuer>> {
        self.list.iter().find(|i| i.config.issuer == iss)
    }

    /// Starts background refreshes of remote keys.
    pub fn spawn_refreshers(&self) {
        for issuer in &self.list {
            issuer.spawn_refresher();
        }
    }

    /// Whether every issuer has keys (readiness).
    pub fn all_loaded(&self) -> bool {
        self.list.iter().all(|i| i.is_loaded())
    }

    /// All issuers.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Issuer>> {
        self.list.iter()
    }
}
