//! The replay store shared by replicas: Redis, `SET <prefix><hex key> 1 NX PX <ttl>` (atomic
//! insert-if-absent with expiry) over one multiplexed, reconnecting connection.
//!
//! When Redis does not answer in time, `fail_closed` (the default) refuses the request
//! (503); `fail_open_local` falls back to this replica's in-memory store and says so in the
//! log, trading cross-replica replay protection for availability.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::ConnectionManager;

use super::replay::{MemoryReplayStore, ReplayError, ReplayStore};

/// What to do when Redis fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Refuse requests that need a replay check (503).
    Closed,
    /// Use the replica's in-memory store meanwhile.
    OpenLocal,
}

/// A Redis-backed [`ReplayStore`].
pub struct RedisReplayStore {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    failure: Failure,
    local: MemoryReplayStore,
    fallbacks: AtomicU64,
    /// Whether the last check failed over to memory (logged once per outage).
    degraded: AtomicBool,
}

impl std::fmt::Debug for RedisReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisReplayStore").field("prefix", &self.prefix).field("failure", &self.failure).finish()
    }
}

impl RedisReplayStore {
    /// Connects to `url` (`redis://host:port/db`, or `rediss://` for TLS).
    pub async fn connect(
        url: &str,
        prefix: &str,
        timeout: Duration,
        failure: Failure,
        local_capacity: u64,
    ) -> Result<RedisReplayStore, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        let conn = tokio::time::timeout(timeout.max(Duration::from_secs(2)), ConnectionManager::new(client))
            .await
            .map_err(|_| "Redis did not answer in time".to_owned())?
            .map_err(|e| format!("cannot connect to Redis: {e}"))?;
        Ok(RedisReplayStore {
            conn,
            prefix: prefix.to_owned(),
            timeout,
            failure,
            local: MemoryReplayStore::new(local_capacity),
            fallbacks: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
        })
    }
}

impl RedisReplayStore {
    /// The connection, for other state kept in the same Redis (browser sessions).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

impl ReplayStore for RedisReplayStore {
    fn insert_if_absent(&self, key: [u8; 32], ttl: Duration) -> BoxFuture<'_, Result<bool, ReplayError>> {
        Box::pin(async move {
            // The key is a SHA-256 digest of namespaced parts: never raw attacker input.
            let mut name = String::with_capacity(self.prefix.len() + 64);
            name.push_str(&self.prefix);
            for b in key {
                let _ = write!(name, "{b:02x}");
            }
            let mut cmd = redis::cmd("SET");
            cmd.arg(&name).arg(1).arg("NX").arg("PX").arg(ttl.as_millis().max(1) as u64);
            let set = async {
                let mut conn = self.conn.clone();
                match cmd.query_async::<Option<String>>(&mut conn).await {
                    // A connection that died while idle (Redis restarted) fails its next
                    // command, and the manager reconnects: try once more on the new one
                    // rather than refuse a request for a stale socket.
                    Err(e) if e.is_connection_dropped() => cmd.query_async::<Option<String>>(&mut conn).await,
                    other => other,
                }
            };
            let error = match tokio::time::timeout(self.timeout, set).await {
                Ok(Ok(reply)) => {
                    if self.degraded.swap(false, Ordering::Relaxed) {
                        tracing::info!("Redis replay store answering again; shared replay protection resumed");
                    }
                    return Ok(reply.is_some());
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_owned(),
            };
            match self.failure {
                Failure::Closed => Err(ReplayError::Unavailable(format!("Redis: {error}"))),
                Failure::OpenLocal => {
                    self.fallbacks.fetch_add(1, Ordering::Relaxed);
                    if !self.degraded.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %error, "Redis replay store failed; using this replica's memory until it answers (fail_open_local)");
                    }
                    self.local.insert_if_absent(key, ttl).await
                }
            }
        })
    }

    fn local_entries(&self) -> Option<u64> {
        Some(self.local.len())
    }

    fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }
}
