//! Replay protection: remembers proof `jti`s (and later service-JWT `(iss, jti)`s) until
//! they could no longer be accepted anyway. Insert-if-absent is the whole check.
//!
//! Keys are SHA-256 digests built by the caller from a namespace and the identifying
//! values, so attacker input is never stored raw. A Redis implementation shares the state
//! across replicas (`SET key 1 NX PX ttl`); the in-memory one serves a single replica.

use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

/// The replay store could not answer (Redis down, say): a 503, never an accept.
#[derive(Debug, Clone, thiserror::Error)]
#[error("replay store unavailable: {0}")]
pub struct ReplayError(pub String);

/// A set of recently seen keys.
pub trait ReplayStore: Send + Sync + std::fmt::Debug {
    /// Records `key` for `ttl`. `Ok(true)` if it was new, `Ok(false)` if it was already
    /// there (a replay). Must be atomic: of two concurrent inserts, one sees `false`.
    fn insert_if_absent(&self, key: [u8; 32], ttl: Duration) -> BoxFuture<'_, Result<bool, ReplayError>>;

    /// Entries held in this process, when the store keeps any.
    fn local_entries(&self) -> Option<u64> {
        None
    }

    /// Checks answered from this replica's memory because the shared store failed
    /// (`fail_open_local`).
    fn fallbacks(&self) -> u64 {
        0
    }
}

/// A store with its latency and results recorded (`atgate_replay_*`).
#[derive(Debug)]
pub struct Measured {
    inner: std::sync::Arc<dyn ReplayStore>,
    metrics: crate::metrics::ReplayMetrics,
}

impl Measured {
    /// Wraps `inner`.
    pub fn new(inner: std::sync::Arc<dyn ReplayStore>, metrics: crate::metrics::ReplayMetrics) -> Measured {
        Measured { inner, metrics }
    }
}

impl ReplayStore for Measured {
    fn insert_if_absent(&self, key: [u8; 32], ttl: Duration) -> BoxFuture<'_, Result<bool, ReplayError>> {
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.insert_if_absent(key, ttl).await;
            self.metrics.latency.observe(started.elapsed().as_secs_f64());
            let label = match result {
                Ok(true) => "fresh",
                Ok(false) => "replayed",
                Err(_) => "error",
            };
            self.metrics.results.get_or_create(&crate::metrics::ReplayLabels { result: label }).inc();
            result
        })
    }

    fn local_entries(&self) -> Option<u64> {
        self.inner.local_entries()
    }

    fn fallbacks(&self) -> u64 {
        self.inner.fallbacks()
    }
}

/// Builds a replay key: SHA-256 over length-prefixed parts (no ambiguity between
/// `("ab","c")` and `("a","bc")`).
pub fn replay_key(namespace: &str, parts: &[&str]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in std::iter::once(namespace).chain(parts.iter().copied()) {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

/// Bounded in-memory store; each entry expires at its own deadline.
#[derive(Debug)]
pub struct MemoryReplayStore {
    seen: moka::sync::Cache<[u8; 32], Instant>,
}

struct UntilDeadline;

impl moka::Expiry<[u8; 32], Instant> for UntilDeadline {
    fn expire_after_create(&self, _key: &[u8; 32], deadline: &Instant, now: Instant) -> Option<Duration> {
        Some(deadline.saturating_duration_since(now))
    }
}

impl MemoryReplayStore {
    /// A store remembering at most `capacity` keys. When full, the least recently
    /// inserted keys go first; size it above peak proofs per `ttl`.
    pub fn new(capacity: u64) -> MemoryReplayStore {
        // LRU, not moka's default TinyLFU: TinyLFU may decline to admit a new key when the
        // cache is full (every key here is seen once), which would forget the newest proofs,
        // the ones a replay would reuse.
        let seen = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .expire_after(UntilDeadline)
            .build();
        MemoryReplayStore { seen }
    }

    /// Entries held now (pending inserts and expiries applied first).
    pub fn len(&self) -> u64 {
        self.seen.run_pending_tasks();
        self.seen.entry_count()
    }

    /// Whether no entries are held (approximate).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ReplayStore for MemoryReplayStore {
    fn insert_if_absent(&self, key: [u8; 32], ttl: Duration) -> BoxFuture<'_, Result<bool, ReplayError>> {
        let entry = self.seen.entry(key).or_insert_with(|| Instant::now() + ttl);
        Box::pin(std::future::ready(Ok(entry.is_fresh())))
    }

    fn local_entries(&self) -> Option<u64> {
        Some(self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_insert_is_a_replay() {
        let store = MemoryReplayStore::new(100);
        let k = replay_key("DPoP", &["jkt", "jti-1"]);
        assert!(store.insert_if_absent(k, Duration::from_secs(60)).await.unwrap());
        assert!(!store.insert_if_absent(k, Duration::from_secs(60)).await.unwrap());
        let other = replay_key("DPoP", &["jkt", "jti-2"]);
        assert!(store.insert_if_absent(other, Duration::from_secs(60)).await.unwrap());
    }

    #[test]
    fn keys_are_unambiguous() {
        assert_ne!(replay_key("n", &["ab", "c"]), replay_key("n", &["a", "bc"]));
        assert_ne!(replay_key("DPoP", &["x"]), replay_key("svc", &["x"]));
    }

    #[tokio::test]
    async fn entries_expire() {
        let store = MemoryReplayStore::new(100);
        let k = replay_key("DPoP", &["a"]);
        assert!(store.insert_if_absent(k, Duration::from_millis(30)).await.unwrap());
        std::thread::sleep(Duration::from_millis(60));
        store.seen.run_pending_tasks();
        assert!(store.insert_if_absent(k, Duration::from_millis(30)).await.unwrap());
    }

    /// Past capacity the oldest keys go; the newest, the ones a replay would reuse, stay.
    #[tokio::test]
    async fn a_full_store_remembers_the_newest_keys() {
        let store = MemoryReplayStore::new(100);
        let keys: Vec<_> = (0..300).map(|i| replay_key("DPoP", &[&i.to_string()])).collect();
        for k in &keys {
            assert!(store.insert_if_absent(*k, Duration::from_secs(60)).await.unwrap());
        }
        store.seen.run_pending_tasks();
        for k in &keys[250..] {
            assert!(!store.insert_if_absent(*k, Duration::from_secs(60)).await.unwrap(), "a recent key was forgotten");
        }
        assert!(store.len() <= 100);
    }

    #[test]
    fn concurrent_inserts_admit_one() {
        let store = std::sync::Arc::new(MemoryReplayStore::new(1000));
        let k = replay_key("DPoP", &["race"]);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    futures_util::FutureExt::now_or_never(store.insert_if_absent(k, Duration::from_secs(60)))
                        .unwrap()
                        .unwrap()
                })
            })
            .collect();
        let fresh = handles.into_iter().map(|h| h.join().unwrap()).filter(|&f| f).count();
        assert_eq!(fresh, 1);
    }
}
