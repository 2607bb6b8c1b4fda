//! Where browser sessions and sign-ins in progress live: this replica's memory, or Redis
//! so that every replica serves every session.
//!
//! The store is a small key-value interface with expiry (`get`, `set`, `take`,
//! `delete`, and the two lock primitives `set_nx` and `delete_if`); what the values mean
//! is the session module's business. Keys are `s:<session id>`, `p:<state>` and
//! `l:<session id>` under a prefix; ids and states are random base64url, never raw input.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use redis::aio::ConnectionManager;

/// The store did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session store unavailable: {0}")]
pub struct StoreError(pub String);

/// The session store's time, which measures idle expiry and when to extend a session:
/// the system clock, or, once frozen (tests), a clock that moves only when advanced. The
/// memory store expires entries by it; Redis expires keys by its own time.
#[derive(Debug, Default)]
pub struct Clock {
    /// Unix milliseconds while frozen; 0 while following the system clock.
    manual_ms: AtomicU64,
}

impl Clock {
    /// Unix time now, in milliseconds.
    pub fn now_ms(&self) -> u64 {
        match self.manual_ms.load(Ordering::SeqCst) {
            0 => crate::auth::now_ms(),
            frozen => frozen,
        }
    }

    /// Whether the clock was frozen.
    pub fn is_frozen(&self) -> bool {
        self.manual_ms.load(Ordering::SeqCst) != 0
    }

    /// Stops the clock at the current time; it then moves only by [`Self::advance`].
    pub fn freeze(&self) {
        let now = crate::auth::now_ms().max(1);
        let _ = self.manual_ms.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Moves the clock forward by `by` (freezing it first).
    pub fn advance(&self, by: Duration) {
        self.freeze();
        self.manual_ms.fetch_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX / 2), Ordering::SeqCst);
    }
}

/// A key-value store with per-entry expiry.
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// The clock the store's expiry (for the memory store) and session extension follow.
    fn clock(&self) -> &Clock;
    /// The value under `key`, if present and unexpired.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>>;
    /// Stores `value` under `key` for `ttl`.
    fn set<'a>(&'a self, key: &'a str, value: Bytes, ttl: Duration) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Removes and returns the value (single use).
    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>>;
    /// Removes the value.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Extends the value's life to `ttl` from now without rewriting it (sliding expiry
    /// that can never overwrite a concurrent update); nothing if it is gone.
    fn touch<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Stores `value` only if `key` is absent; true if stored (a lock taken).
    fn set_nx<'a>(&'a self, key: &'a str, value: Bytes, ttl: Duration) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Removes `key` only if it still holds `value` (a lock released by its owner).
    fn delete_if<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Entries held in this process (`None` for Redis).
    fn local_entries(&self) -> Option<u64> {
        None
    }
}

#[derive(Clone)]
struct Entry {
    value: Bytes,
    /// Unix milliseconds (store clock) when the entry ends.
    until_ms: u64,
}

/// Frees entries at their end; reads check the end against the store's clock, so while
/// that clock is frozen (tests) entries are kept until read or evicted for space.
struct EntryExpiry(Arc<Clock>);

impl EntryExpiry {
    fn remaining(&self, e: &Entry) -> Option<Duration> {
        let now = self.0.now_ms();
        (!self.0.is_frozen()).then(|| Duration::from_millis(e.until_ms.saturating_sub(now)))
    }
}

impl moka::Expiry<String, Entry> for EntryExpiry {
    fn expire_after_create(&self, _: &String, e: &Entry, _: std::time::Instant) -> Option<Duration> {
        self.remaining(e)
    }
    fn expire_after_update(
        &self,
        _: &String,
        e: &Entry,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.remaining(e)
    }
}

/// Sessions in this process's memory: the default for a single replica.
pub struct MemorySessionStore {
    entries: moka::sync::Cache<String, Entry>,
    clock: Arc<Clock>,
    /// Serializes writes: `set_nx`/`delete_if`/`take`/`touch` read then write, and must not
    /// interleave with a `set`.
    guard: parking_lot::Mutex<()>,
}

impl std::fmt::Debug for MemorySessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySessionStore").field("entries", &self.entries.entry_count()).finish()
    }
}

impl MemorySessionStore {
    /// Holds at most `max_bytes` of values (least recently used go first).
    pub fn new(max_bytes: u64) -> MemorySessionStore {
        let clock = Arc::new(Clock::default());
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, e: &Entry| u32::try_from(k.len() + e.value.len()).unwrap_or(u32::MAX))
            .expire_after(EntryExpiry(clock.clone()))
            .build();
        MemorySessionStore { entries, clock, guard: parking_lot::Mutex::new(()) }
    }

    fn read(&self, key: &str) -> Option<Bytes> {
        self.entries.get(key).filter(|e| e.until_ms > self.clock.now_ms()).map(|e| e.value)
    }

    fn entry(&self, value: Bytes, ttl: Duration) -> Entry {
        let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        Entry { value, until_ms: self.clock.now_ms().saturating_add(ttl) }
    }
}

impl SessionStore for MemorySessionStore {
    fn clock(&self) -> &Clock {
        &self.clock
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        Box::pin(async move { Ok(self.read(key)) })
    }
    fn set<'a>(&'a self, key: &'a str, value: Bytes, ttl: Duration) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let _g = self.guard.lock();
            self.entries.insert(key.to_owned(), self.entry(value, ttl));
            Ok(())
        })
    }
    fn touch<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let _g = self.guard.lock();
            if let Some(value) = self.read(key) {
                self.entries.insert(key.to_owned(), self.entry(value, ttl));
            }
            Ok(())
        })
    }
    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        Box::pin(async move {
            let _g = self.guard.lock();
            let found = self.read(key);
            self.entries.invalidate(key);
            Ok(found)
        })
    }
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.entries.invalidate(key);
            Ok(())
        })
    }
    fn set_nx<'a>(&'a self, key: &'a str, value: Bytes, ttl: Duration) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let _g = self.guard.lock();
            if self.read(key).is_some() {
                return Ok(false);
            }
            self.entries.insert(key.to_owned(), self.entry(value, ttl));
            Ok(true)
        })
    }
    fn delete_if<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let _g = self.guard.lock();
            if self.read(key).as_ref() == Some(&value) {
                self.entries.invalidate(key);
            }
            Ok(())
        })
    }
    fn local_entries(&self) -> Option<u64> {
        self.entries.run_pending_tasks();
        Some(self.entries.entry_count())
    }
}

/// Sessions in Redis, over the replay store's connection.
pub struct RedisSessionStore {
    conn: ConnectionManager,
    clock: Clock,
    prefix: String,
    timeout: Duration,
}

impl std::fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessionStore").field("prefix", &self.prefix).finish()
    }
}

/// Deletes KEYS[1] if it holds ARGV[1]: a lock released only by the replica that took it.
const DELETE_IF: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

impl RedisSessionStore {
    /// Uses `conn` (shared with the replay store) with keys under `prefix`.
    pub fn new(conn: ConnectionManager, prefix: &str, timeout: Duration) -> RedisSessionStore {
        RedisSessionStore { conn, clock: Clock::default(), prefix: prefix.to_owned(), timeout }
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError(e.to_string())),
            Err(_) => Err(StoreError("Redis did not answer in time".into())),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

fn ms(ttl: Duration) -> u64 {
    ttl.as_millis().max(1) as u64
}

impl SessionStore for RedisSessionStore {
    fn clock(&self) -> &Clock {
        &self.clock
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        Box::pin(async move {
            let v: Option<Vec<u8>> = self.run(redis::Cmd::get(self.key(key))).await?;
            Ok(v.map(Bytes::from))
        })
    }
    fn set<'a>(&'a self, key: &'a str, value: Bytes, ttl: Duration) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(key)).arg(value.as_ref()).arg("PX").arg(ms(ttl));
            self.run::<()>(cmd).await
        })
    }
    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("GETDEL");
            cmd.arg(self.key(key));
            let v: Option<Vec<u8>> = self.run(cmd).await?;
            Ok(v.map(Bytes::from))
        })
    }
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.run::<()>(redis::Cmd::del(self.key(key))).await })
    }
    fn touch<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("PEXPIRE");
            cmd.arg(self.key(key)).arg(ms(ttl));
            self.run::<i64>(cmd).await.map(|_| ())
        })
    }
    fn set_nx<'a>(&'a self, key: &'a str, value: Bytes, ttl: Duration) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(key)).arg(value.as_ref()).arg("NX").arg("PX").arg(ms(ttl));
            let v: Option<String> = self.run(cmd).await?;
            Ok(v.is_some())
        })
    }
    fn delete_if<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(DELETE_IF).arg(1).arg(self.key(key)).arg(value.as_ref());
            self.run::<i64>(cmd).await.map(|_| ())
        })
    }
}

/// The store for a gateway: Redis when the replay store is Redis, else memory.
pub fn for_gateway(redis: Option<(ConnectionManager, Duration)>, prefix: &str) -> Arc<dyn SessionStore> {
    match redis {
        Some((conn, timeout)) => Arc::new(RedisSessionStore::new(conn, prefix, timeout)),
        // About 100,000 sessions of ~1.5 KB, or many more sign-ins in progress.
        None => Arc::new(MemorySessionStore::new(256 << 20)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_expires_takes_and_locks() {
        let s = MemorySessionStore::new(1 << 20);
        s.clock().freeze();
        s.set("a", Bytes::from_static(b"1"), Duration::from_millis(50)).await.unwrap();
        assert_eq!(s.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
        s.clock().advance(Duration::from_millis(49));
        assert_eq!(s.get("a").await.unwrap().as_deref(), Some(&b"1"[..]), "alive until its end");
        s.clock().advance(Duration::from_millis(1));
        assert_eq!(s.get("a").await.unwrap(), None);

        s.set("t", Bytes::from_static(b"v"), Duration::from_millis(60)).await.unwrap();
        s.clock().advance(Duration::from_millis(40));
        s.touch("t", Duration::from_millis(60)).await.unwrap();
        s.clock().advance(Duration::from_millis(40));
        assert_eq!(s.get("t").await.unwrap().as_deref(), Some(&b"v"[..]), "touched: still there");
        s.touch("gone", Duration::from_secs(5)).await.unwrap();
        assert_eq!(s.get("gone").await.unwrap(), None, "touch creates nothing");

        s.set("p", Bytes::from_static(b"x"), Duration::from_secs(5)).await.unwrap();
        assert_eq!(s.take("p").await.unwrap().as_deref(), Some(&b"x"[..]));
        assert_eq!(s.take("p").await.unwrap(), None, "take is single use");

        assert!(s.set_nx("l", Bytes::from_static(b"me"), Duration::from_secs(5)).await.unwrap());
        assert!(!s.set_nx("l", Bytes::from_static(b"you"), Duration::from_secs(5)).await.unwrap());
        s.delete_if("l", Bytes::from_static(b"you")).await.unwrap();
        assert!(!s.set_nx("l", Bytes::from_static(b"you"), Duration::from_secs(5)).await.unwrap(), "not the owner");
        s.delete_if("l", Bytes::from_static(b"me")).await.unwrap();
        assert!(s.set_nx("l", Bytes::from_static(b"you"), Duration::from_secs(5)).await.unwrap());
    }
}
