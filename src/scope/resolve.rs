//! Resolving permission sets over the network (ATPROTO-AUTH.md §9.2): DNS TXT
//! `_lexicon.<authority>` -> DID -> DID document (PDS and `#atproto` key) ->
//! `com.atproto.sync.getRecord` -> a CAR whose commit signature, MST path, record type and
//! `id` are all verified, and whose record must pass the lexicon schema whole
//! (`lexicon.rs`); any failure makes the set unavailable (503 on `require.include`, nothing
//! granted through `include:`), logged with its reason. Pinned sets override resolution. Results are cached: fresh for
//! `FRESH`, then served while refetched in the background; a failed refetch keeps serving
//! the cached copy up to `MAX_STALE`; failures with nothing cached are remembered for
//! `NEGATIVE` so they are not retried per request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::permission_set::{PermissionSet, PermissionSets, SetError};
use super::repo::{Car, verify_record};
use crate::identity::{IdentityError, Resolver};

const FRESH: Duration = Duration::from_secs(300);
const MAX_STALE: Duration = Duration::from_secs(86_400);
const NEGATIVE: Duration = Duration::from_secs(60);
const LEXICON_COLLECTION: &str = "com.atproto.lexicon.schema";

/// Why a set could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No (or more than one) `did=` record at `_lexicon.<authority>`.
    #[error("No DID found for the lexicon authority")]
    NoDid,
    /// The authority's identity could not be resolved.
    #[error("{0}")]
    Identity(IdentityError),
    /// The authority's DID document lacks a PDS or an `#atproto` key.
    #[error("the authority's DID document has no PDS or no #atproto key")]
    Incomplete,
    /// Fetching the record failed.
    #[error("fetching the lexicon record failed: {0}")]
    Fetch(String),
    /// The record proof did not verify.
    #[error("the lexicon record did not verify: {0}")]
    Invalid(String),
    /// The record is not a valid permission-set lexicon document (§9.2 steps 3-4): it is
    /// rejected whole, so none of its permissions is granted.
    #[error("{0}")]
    Document(SetError),
    /// Network resolution is off (no identity resolver).
    #[error("permission set not pinned and network resolution is off")]
    Off,
}

#[derive(Clone)]
struct Entry {
    result: Result<Arc<PermissionSet>, ResolveError>,
    fetched: Instant,
}

struct EntryExpiry;

impl moka::Expiry<String, Entry> for EntryExpiry {
    fn expire_after_create(&self, _: &String, e: &Entry, _: Instant) -> Option<Duration> {
        Some(if e.result.is_ok() { MAX_STALE } else { NEGATIVE })
    }
    fn expire_after_update(&self, k: &String, e: &Entry, now: Instant, _: Option<Duration>) -> Option<Duration> {
        self.expire_after_create(k, e, now)
    }
}

/// Permission sets: pinned first, then resolved and cached.
pub struct SetResolver {
    pinned: PermissionSets,
    identity: Option<Arc<Resolver>>,
    cache: moka::future::Cache<String, Entry>,
    /// Sets with a background refresh under way.
    refreshing: moka::sync::Cache<String, ()>,
    /// Lookups of sets that are not pinned.
    pub stats: crate::metrics::CacheStats,
}

impl std::fmt::Debug for SetResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetResolver").field("pinned", &self.pinned.len()).finish_non_exhaustive()
    }
}

impl Default for SetResolver {
    fn default() -> Self {
        SetResolver::new(PermissionSets::default(), None)
    }
}

impl SetResolver {
    /// Pinned sets, and network resolution through `identity` when given.
    pub fn new(pinned: PermissionSets, identity: Option<Arc<Resolver>>) -> SetResolver {
        SetResolver {
            pinned,
            identity,
            cache: moka::future::Cache::builder().max_capacity(10_000).expire_after(EntryExpiry).build(),
            refreshing: moka::sync::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(30)).build(),
            stats: Default::default(),
        }
    }

    /// Resolved sets cached now (approximate).
    pub fn cached(&self) -> u64 {
        self.cache.entry_count()
    }

    /// The pinned sets.
    pub fn pinned(&self) -> &PermissionSets {
        &self.pinned
    }

    /// Whether sets that are not pinned can be resolved.
    pub fn resolves(&self) -> bool {
        self.identity.is_some()
    }

    /// The set named `nsid`: pinned, cached, or resolved now. A cached set older than
    /// `FRESH` is served while one background task refetches it; a failed refetch keeps
    /// the old copy (up to `MAX_STALE`).
    pub async fn get(&self, nsid: &str) -> Result<Arc<PermissionSet>, ResolveError> {
        if let Some(set) = self.pinned.get(nsid) {
            return Ok(Arc::new(set.clone()));
        }
        let identity = self.identity.as_ref().ok_or(ResolveError::Off)?;
        let entry = self
            .cache
            .entry_by_ref(nsid)
            .or_insert_with(async {
                Entry { result: resolve(identity, nsid).await.map(Arc::new), fetched: Instant::now() }
            })
            .await;
        self.stats.record(!entry.is_fresh());
        if entry.is_fresh() && entry.value().result.is_err() {
            self.stats.error();
        }
        let entry = entry.into_value();
        match entry.result {
            Ok(set) => {
                if entry.fetched.elapsed() >= FRESH && self.refreshing.entry(nsid.to_owned()).or_insert(()).is_fresh() {
                    let (identity, cache, refreshing, nsid) =
                        (identity.clone(), self.cache.clone(), self.refreshing.clone(), nsid.to_owned());
                    tokio::spawn(async move {
                        match resolve(&identity, &nsid).await {
                            Ok(fresh) => {
                                cache
                                    .insert(
                                        nsid.clone(),
                                        Entry { result: Ok(Arc::new(fresh)), fetched: Instant::now() },
                                    )
                                    .await;
                            }
                            Err(e) => {
                                tracing::warn!(set = %nsid, error = %e, "permission set refresh failed; keeping the cached copy")
                            }
                        }
                        refreshing.invalidate(&nsid);
                    });
                }
                Ok(set)
            }
            Err(e) => {
                tracing::error!(set = nsid, error = %e, "permission set unavailable");
                Err(e)
            }
        }
    }
}

/// `app.example.authBasic` -> `example.app`.
pub fn authority(nsid: &str) -> String {
    let mut segments: Vec<&str> = nsid.split('.').collect();
    segments.pop();
    segments.reverse();
    segments.join(".")
}

async fn resolve(identity: &Arc<Resolver>, nsid: &str) -> Result<PermissionSet, ResolveError> {
    let did = identity
        .did_from_dns(&format!("_lexicon.{}", authority(nsid)))
        .await
        .map_err(ResolveError::Identity)?
        .ok_or(ResolveError::NoDid)?;
    let doc = identity.resolve(&did).await.map_err(ResolveError::Identity)?;
    let (Some(pds), Some(key)) = (doc.pds.as_ref(), doc.key("atproto")) else {
        return Err(ResolveError::Incomplete);
    };
    let mut url = pds.join("/xrpc/com.atproto.sync.getRecord").map_err(|e| ResolveError::Fetch(e.to_string()))?;
    url.query_pairs_mut()
        .append_pair("did", &did)
        .append_pair("collection", LEXICON_COLLECTION)
        .append_pair("rkey", nsid);
    let bytes = identity.net().get_bytes(&url).await.map_err(|e| ResolveError::Fetch(e.to_string()))?;
    let car = Car::parse(&bytes).map_err(|e| ResolveError::Invalid(e.to_string()))?;
    let record = verify_record(&car, &did, key, &format!("{LEXICON_COLLECTION}/{nsid}"))
        .map_err(|e| ResolveError::Invalid(e.to_string()))?;
    if record.get("$type").and_then(serde_json::Value::as_str) != Some(LEXICON_COLLECTION) {
        return Err(ResolveError::Invalid("record is not a com.atproto.lexicon.schema".into()));
    }
    let set = PermissionSet::from_lexicon(&record).map_err(ResolveError::Document)?;
    if set.nsid != nsid {
        return Err(ResolveError::Invalid(format!("record id {} is not {nsid}", set.nsid)));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::lexicon::{LexiconError, LexiconReason};

    #[test]
    fn an_invalid_document_is_logged_with_its_place() {
        let path = "defs.main.permissions[6].type".to_owned();
        let e = ResolveError::Document(SetError::Invalid(LexiconError { path, reason: LexiconReason::NotPermission }));
        assert_eq!(e.to_string(), "invalid lexicon document: defs.main.permissions[6].type: not a permission");
    }

    #[test]
    fn authorities() {
        assert_eq!(super::authority("app.example.authBasic"), "example.app");
        assert_eq!(super::authority("com.example.sub.perms"), "sub.example.com");
    }
}
