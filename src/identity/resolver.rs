//! The identity resolver: DID documents and handles, cached (ATPROTO-AUTH.md §11, §14).
//!
//! DID documents are served from cache while fresh; past `fresh` and up to `max_stale`
//! they are still served while one background task refetches them (stale while
//! revalidate), and kept when that refetch fails (stale if error). Not-found answers are
//! remembered for `not_found_ttl`, transport failures for `error_ttl`. Concurrent misses
//! for one DID share one fetch. A forced refetch (after a signature failure, for key
//! rotation) is allowed once per DID per `refresh_interval`, so forged tokens cannot make
//! atgate hammer a PLC directory or a `did:web` host.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;

use super::did::{self, DidError};
use super::doc::DidDoc;
use super::handle;
use crate::config::IdentityConfig;
use crate::net::{NetError, Outbound};

/// Why an identity could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not a DID, or a method atgate does not resolve.
    #[error("{0}")]
    Did(#[from] DidError),
    /// The directory or host says there is no such DID (or refuses it).
    #[error("DID not found")]
    NotFound,
    /// The document is unusable.
    #[error("unusable DID document: {0}")]
    Document(String),
    /// The directory or host could not be reached: atgate's problem, a 503.
    #[error("identity resolution unavailable: {0}")]
    Unavailable(NetError),
}

impl IdentityError {
    /// Whether this is an infrastructure failure (answered 503), not a verdict.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, IdentityError::Unavailable(_))
    }
}

#[derive(Clone)]
struct Slot {
    result: Result<Arc<DidDoc>, IdentityError>,
    fetched: Instant,
}

/// How long each cached answer lives.
struct SlotExpiry {
    max_stale: Duration,
    not_found: Duration,
    error: Duration,
}

impl moka::Expiry<String, Slot> for SlotExpiry {
    fn expire_after_create(&self, _: &String, slot: &Slot, _: Instant) -> Option<Duration> {
        Some(match &slot.result {
            Ok(_) => self.max_stale,
            Err(IdentityError::Unavailable(_)) => self.error,
            Err(_) => self.not_found,
        })
    }
    fn expire_after_update(&self, key: &String, slot: &Slot, now: Instant, _: Option<Duration>) -> Option<Duration> {
        self.expire_after_create(key, slot, now)
    }
}

#[derive(Clone)]
struct HandleSlot {
    did: Option<String>,
    failed: bool,
}

struct HandleExpiry {
    fresh: Duration,
    not_found: Duration,
    error: Duration,
}

impl moka::Expiry<String, HandleSlot> for HandleExpiry {
    fn expire_after_create(&self, _: &String, slot: &HandleSlot, _: Instant) -> Option<Duration> {
        Some(match slot {
            HandleSlot { did: Some(_), .. } => self.fresh,
            HandleSlot { failed: true, .. } => self.error,
            HandleSlot { .. } => self.not_found,
        })
    }
}

/// A resolvable DID in its canonical spelling, or why not.
fn require_canonical(did: &str) -> Result<(), IdentityError> {
    did::method(did)?;
    if !did::is_canonical(did) {
        return Err(DidError::NotCanonical.into());
    }
    Ok(())
}

/// Resolves and caches DID documents and handles. Cheap to share behind an `Arc`.
pub struct Resolver {
    net: Outbound,
    config: IdentityConfig,
    docs: moka::future::Cache<String, Slot>,
    handles: moka::future::Cache<String, HandleSlot>,
    /// DIDs refetched on demand recently (rate limit of forced refreshes).
    forced: moka::sync::Cache<String, ()>,
    /// DIDs with a background refresh under way.
    refreshing: moka::sync::Cache<String, ()>,
    dns: Option<TokioResolver>,
    fetches: AtomicU64,
    /// Document lookups.
    pub doc_stats: crate::metrics::CacheStats,
    /// Handle lookups.
    pub handle_stats: crate::metrics::CacheStats,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").field("plc_url", &self.config.plc_url.as_str()).finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver fetching through `net`.
    pub fn new(config: &IdentityConfig, net: Outbound) -> Arc<Resolver> {
        let docs = moka::future::Cache::builder()
            .max_capacity(config.cache_capacity)
            .expire_after(SlotExpiry {
                max_stale: config.max_stale,
                not_found: config.not_found_ttl,
                error: config.error_ttl,
            })
            .build();
        let handles = moka::future::Cache::builder()
            .max_capacity(config.cache_capacity)
            .expire_after(HandleExpiry {
                fresh: config.fresh,
                not_found: config.not_found_ttl,
                error: config.error_ttl,
            })
            .build();
        let short =
            |ttl: Duration| moka::sync::Cache::builder().max_capacity(config.cache_capacity).time_to_live(ttl).build();
        Arc::new(Resolver {
            dns: handle::dns_resolver(&config.dns_servers, config.timeout),
            forced: short(config.refresh_interval),
            refreshing: short(config.timeout + Duration::from_secs(1)),
            net,
            docs,
            handles,
            config: config.clone(),
            fetches: AtomicU64::new(0),
            doc_stats: Default::default(),
            handle_stats: Default::default(),
        })
    }

    /// `(documents, handles)` cached now (approximate).
    pub fn cached(&self) -> (u64, u64) {
        (self.docs.entry_count(), self.handles.entry_count())
    }

    /// DID documents fetched so far (for tests and metrics).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The document of `did`, from cache when possible. `did` must be canonical
    /// ([`did::canonical`]): callers canonicalize where a DID enters, and a spelling that
    /// slipped past them is refused here rather than made a second identity.
    pub async fn resolve(self: &Arc<Self>, did: &str) -> Result<Arc<DidDoc>, IdentityError> {
        require_canonical(did)?;
        if let Some(slot) = self.docs.get(did).await {
            self.doc_stats.record(true);
            if slot.result.is_ok() && slot.fetched.elapsed() >= self.config.fresh {
                self.revalidate(did);
            }
            return slot.result;
        }
        let this = self.clone();
        let key = did.to_owned();
        let slot = self.docs.get_with_by_ref(did, async move { this.fetch_slot(&key).await }).await;
        self.doc_stats.record(false);
        if slot.result.is_err() {
            self.doc_stats.error();
        }
        slot.result
    }

    /// Refetches `did` bypassing the cache, at most once per `refresh_interval` per DID.
    /// `None` when rate-limited or when the refetch failed (the cached entry stays).
    pub async fn refresh(&self, did: &str) -> Option<Arc<DidDoc>> {
        require_canonical(did).ok()?;
        if !self.forced.entry(did.to_owned()).or_insert(()).is_fresh() {
            return None;
        }
        let slot = self.fetch_slot(did).await;
        match &slot.result {
            Ok(doc) => {
                let doc = doc.clone();
                self.docs.insert(did.to_owned(), slot).await;
                Some(doc)
            }
            Err(e) if !e.is_unavailable() => {
                self.docs.insert(did.to_owned(), slot).await;
                None
            }
            Err(_) => None,
        }
    }

    fn revalidate(self: &Arc<Self>, did: &str) {
        if !self.refreshing.entry(did.to_owned()).or_insert(()).is_fresh() {
            return;
        }
        let this = self.clone();
        let did = did.to_owned();
        tokio::spawn(async move {
            let slot = this.fetch_slot(&did).await;
            // A failed refetch keeps the stale document (stale if error).
            if !matches!(slot.result, Err(IdentityError::Unavailable(_))) {
                this.docs.insert(did.clone(), slot).await;
            }
            this.refreshing.invalidate(&did);
        });
    }

    async fn fetch_slot(&self, did: &str) -> Slot {
        let result = self.fetch(did).await;
        if let Err(e) = &result {
            tracing::info!(did, error = %e, "DID resolution failed");
        }
        Slot { result, fetched: Instant::now() }
    }

    async fn fetch(&self, did: &str) -> Result<Arc<DidDoc>, IdentityError> {
        let url = did::document_url(did, &self.config.plc_url)?;
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let fetch = self.net.get_json_as(&url, "application/did+ld+json, application/json");
        let value = match tokio::time::timeout(self.config.timeout, fetch).await {
            Err(_) => return Err(IdentityError::Unavailable(NetError::Timeout)),
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                return Err(match e {
                    NetError::Status(s) if (400..500).contains(&s) => IdentityError::NotFound,
                    NetError::Url(_) | NetError::Blocked(_) => IdentityError::NotFound,
                    NetError::NotJson | NetError::TooLarge => IdentityError::Document(e.to_string()),
                    e => IdentityError::Unavailable(e),
                });
            }
        };
        DidDoc::parse(did, &value).map(Arc::new).map_err(|e| IdentityError::Document(e.to_string()))
    }

    /// The one `did=` value of the TXT records at `name` (`_lexicon.<authority>` for
    /// permission sets): `Ok(None)` when there is none or more than one, `Err` when DNS
    /// could not answer (or no DNS resolver is configured).
    pub async fn did_from_dns(&self, name: &str) -> Result<Option<String>, IdentityError> {
        let unavailable = |m: &str| IdentityError::Unavailable(NetError::Transport(m.to_owned()));
        let dns = self.dns.as_ref().ok_or_else(|| unavailable("no DNS resolver"))?;
        match tokio::time::timeout(self.config.timeout, dns.txt_lookup(format!("{name}."))).await {
            Ok(Ok(answer)) => Ok(handle::did_from_txt(answer.iter().map(|txt| txt.txt_data()))),
            Ok(Err(e)) if e.is_no_records_found() || e.is_nx_domain() => Ok(None),
            Ok(Err(e)) => Err(unavailable(&e.to_string())),
            Err(_) => Err(IdentityError::Unavailable(NetError::Timeout)),
        }
    }

    /// The outbound client (for fetches that follow a resolution).
    pub fn net(&self) -> &Outbound {
        &self.net
    }

    /// The DID a handle points to (DNS TXT `_atproto.<handle>`, else HTTPS
    /// `/.well-known/atproto-did`), cached; `None` when it does not resolve.
    pub async fn resolve_handle(&self, handle: &str) -> Option<String> {
        let handle = handle.to_ascii_lowercase();
        if !handle::is_valid(&handle, self.config.allow_test_handles) {
            return None;
        }
        let entry = self
            .handles
            .entry_by_ref(&handle)
            .or_insert_with(async {
                match handle::resolve(&handle, self.dns.as_ref(), &self.net, self.config.timeout).await {
                    Ok(did) => HandleSlot { did, failed: false },
                    Err(()) => HandleSlot { did: None, failed: true },
                }
            })
            .await;
        self.handle_stats.record(!entry.is_fresh());
        if entry.is_fresh() && entry.value().failed {
            self.handle_stats.error();
        }
        entry.into_value().did
    }

    /// The handle of `did`, only if it is bidirectionally verified: the document claims
    /// it and it resolves back to `did`.
    pub async fn verified_handle(self: &Arc<Self>, did: &str) -> Option<String> {
        let doc = self.resolve(did).await.ok()?;
        let handle = doc.handle.as_deref()?;
        (self.resolve_handle(handle).await.as_deref() == Some(did)).then(|| handle.to_owned())
    }
}
