//! Replay protection: remembers proof `jti`s (and later service-JWT `(iss, jti)`s) until
//! they could no longer be accepted anyway. Insert-if-absent is the whole check.
//!
//! Keys are SHA-256 digests built by the caller from a namespace and the identifying
//! values, so attacker input is never stored raw. A Redis implementation shares the state
//! across replicas (`SET key 1 NX PX ttl`); the in-memory one serves a single replica.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use parking_lot::Mutex;

/// Why the replay store could not answer: a 503, never an accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The store did not answer (Redis down, say).
    #[error("replay store unavailable: {0}")]
    Unavailable(String),
    /// The in-memory store holds `capacity` keys, none expired: remembering one more would
    /// mean forgetting a key that could still be replayed.
    #[error("replay store full")]
    Full,
}

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
    inner: Arc<dyn ReplayStore>,
    metrics: crate::metrics::ReplayMetrics,
}

impl Measured {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ReplayStore>, metrics: crate::metrics::ReplayMetrics) -> Measured {
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
                Err(ReplayError::Full) => "full",
                Err(ReplayError::Unavailable(_)) => "error",
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

/// The store's time source: `Instant::now`, or a test's hand-moved clock.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Shards of the in-memory store: concurrent inserts of different keys rarely wait.
const SHARDS: usize = 64;

/// Bounded in-memory store; each entry is kept until its own deadline, never less.
///
/// At `capacity` live keys it refuses new ones ([`ReplayError::Full`], a 503) instead of
/// evicting: any evicted key younger than its TTL is a proof that could be replayed
/// (ATPROTO-AUTH.md §3.4). Only requests whose token verified reach the store, so filling
/// it takes valid credentials.
pub struct MemoryReplayStore {
    shards: Box<[Mutex<Shard>]>,
    capacity: u64,
    /// Keys held, over all shards; reserved before an insert so the bound is exact.
    live: AtomicU64,
    clock: Clock,
}

/// One shard: the keys, and their deadlines in order so expired ones leave cheaply.
#[derive(Default)]
struct Shard {
    deadlines: HashMap<[u8; 32], Instant>,
    by_deadline: BinaryHeap<Reverse<(Instant, [u8; 32])>>,
}

impl Shard {
    /// Drops the keys whose deadline has passed; returns how many.
    fn purge(&mut self, now: Instant) -> u64 {
        let mut dropped = 0;
        while let Some(Reverse((deadline, key))) = self.by_deadline.peek().copied() {
            if deadline > now {
                break;
            }
            self.by_deadline.pop();
            self.deadlines.remove(&key);
            dropped += 1;
        }
        dropped
    }
}

impl std::fmt::Debug for MemoryReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryReplayStore").field("capacity", &self.capacity).field("live", &self.live).finish()
    }
}

impl MemoryReplayStore {
    /// A store remembering at most `capacity` keys; size it above peak proofs per TTL
    /// (198 s for DPoP).
    pub fn new(capacity: u64) -> MemoryReplayStore {
        MemoryReplayStore::with_clock(capacity, Arc::new(Instant::now))
    }

    /// A store reading time from `clock` (tests move it by hand).
    pub fn with_clock(capacity: u64, clock: Clock) -> MemoryReplayStore {
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect();
        MemoryReplayStore { shards, capacity, live: AtomicU64::new(0), clock }
    }

    /// Keys held now, expired ones dropped first.
    pub fn len(&self) -> u64 {
        self.purge_all((self.clock)());
        self.live.load(Ordering::Acquire)
    }

    /// Whether no keys are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn purge_all(&self, now: Instant) {
        for shard in self.shards.iter() {
            let dropped = shard.lock().purge(now);
            self.live.fetch_sub(dropped, Ordering::AcqRel);
        }
    }

    /// Takes one slot of the capacity, if one is free.
    fn reserve(&self) -> bool {
        self.live.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.capacity).then_some(n + 1)).is_ok()
    }

    fn insert(&self, key: [u8; 32], ttl: Duration) -> Result<bool, ReplayError> {
        let now = (self.clock)();
        // A TTL from an attacker-chosen `exp` may be huge: saturate, never overflow.
        let deadline = now.checked_add(ttl).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        let shard = &self.shards[usize::from(key[0]) % SHARDS];
        let mut held = shard.lock();
        let dropped = held.purge(now);
        self.live.fetch_sub(dropped, Ordering::AcqRel);
        if held.deadlines.contains_key(&key) {
            return Ok(false);
        }
        if !self.reserve() {
            // Full: other shards may still hold expired keys. Drop them and try once more.
            drop(held);
            self.purge_all(now);
            held = shard.lock();
            if held.deadlines.contains_key(&key) {
                return Ok(false);
            }
            if !self.reserve() {
                return Err(ReplayError::Full);
            }
        }
        held.deadlines.insert(key, deadline);
        held.by_deadline.push(Reverse((deadline, key)));
        Ok(true)
    }
}

impl ReplayStore for MemoryReplayStore {
    fn insert_if_absent(&self, key: [u8; 32], ttl: Duration) -> BoxFuture<'_, Result<bool, ReplayError>> {
        Box::pin(std::future::ready(self.insert(key, ttl)))
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

    /// A clock the test moves by hand.
    fn manual_clock() -> (Clock, Arc<AtomicU64>) {
        let start = Instant::now();
        let offset_ms = Arc::new(AtomicU64::new(0));
        let read = offset_ms.clone();
        (Arc::new(move || start + Duration::from_millis(read.load(Ordering::SeqCst))), offset_ms)
    }

    fn insert(store: &MemoryReplayStore, key: [u8; 32], ttl: Duration) -> Result<bool, ReplayError> {
        futures_util::FutureExt::now_or_never(store.insert_if_absent(key, ttl)).unwrap()
    }

    #[test]
    fn entries_expire_at_their_deadline_not_before() {
        let (clock, ms) = manual_clock();
        let store = MemoryReplayStore::with_clock(100, clock);
        let k = replay_key("DPoP", &["a"]);
        assert_eq!(insert(&store, k, Duration::from_secs(198)), Ok(true));
        ms.store(197_999, Ordering::SeqCst);
        assert_eq!(insert(&store, k, Duration::from_secs(198)), Ok(false));
        ms.store(198_000, Ordering::SeqCst);
        assert_eq!(store.len(), 0);
        assert_eq!(insert(&store, k, Duration::from_secs(198)), Ok(true));
    }

    /// Full of live keys, the store refuses a new one rather than forget any of them; as
    /// soon as keys expire there is room again.
    #[test]
    fn a_full_store_refuses_rather_than_forgets() {
        let (clock, ms) = manual_clock();
        let store = MemoryReplayStore::with_clock(100, clock);
        let keys: Vec<_> = (0..101).map(|i| replay_key("DPoP", &[&i.to_string()])).collect();
        for k in &keys[..100] {
            assert_eq!(insert(&store, *k, Duration::from_secs(198)), Ok(true));
        }
        assert_eq!(insert(&store, keys[100], Duration::from_secs(198)), Err(ReplayError::Full));
        ms.store(197_999, Ordering::SeqCst);
        for k in &keys[..100] {
            assert_eq!(insert(&store, *k, Duration::from_secs(198)), Ok(false), "a live key was forgotten");
        }
        assert_eq!(insert(&store, keys[100], Duration::from_secs(198)), Err(ReplayError::Full));
        assert_eq!(store.len(), 100);
        ms.store(198_000, Ordering::SeqCst);
        assert_eq!(insert(&store, keys[100], Duration::from_secs(198)), Ok(true));
        assert_eq!(store.len(), 1);
    }

    /// A TTL derived from an attacker's `exp` cannot overflow the deadline.
    #[test]
    fn huge_ttls_do_not_panic() {
        let store = MemoryReplayStore::new(10);
        assert_eq!(insert(&store, replay_key("t", &["max"]), Duration::MAX), Ok(true));
        assert_eq!(insert(&store, replay_key("t", &["max"]), Duration::MAX), Ok(false));
        assert_eq!(insert(&store, replay_key("t", &["zero"]), Duration::ZERO), Ok(true));
    }

    #[test]
    fn concurrent_inserts_admit_one() {
        let store = Arc::new(MemoryReplayStore::new(1000));
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
