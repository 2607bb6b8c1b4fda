//! The replay store shared by replicas: Redis, `SET <prefix><hex key> <random> NX PX <ttl>` (atomic
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

/// `PX` for `ttl`: at least 1 ms, and at most a century, since Redis refuses an expiry
/// past the end of its clock and a TTL derived from an attacker's `exp` may be huge.
fn px(ttl: Duration) -> u64 {
    const CENTURY_MS: u128 = 100 * 365 * 86_400 * 1000;
    ttl.as_millis().clamp(1, CENTURY_MS) as u64
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
            // Each check writes its own random value, so that a retry can tell its own
            // earlier write (the reply was lost with the connection) from another use.
            let mine = crate::jose::sign::random_id();
            let mut cmd = redis::cmd("SET");
            cmd.arg(&name).arg(&mine).arg("NX").arg("PX").arg(px(ttl));
            let set = async {
                let mut conn = self.conn.clone();
                match cmd.query_async::<Option<String>>(&mut conn).await {
                    // A connection that died while idle (Redis restarted), or with our SET
                    // in flight, fails the command, and the manager reconnects: try once
                    // more on the new one rather than refuse a request for a stale socket.
                    Err(e) if e.is_connection_dropped() => {
                        if cmd.query_async::<Option<String>>(&mut conn).await?.is_some() {
                            return Ok(true);
                        }
                        // Present already: ours if the first SET landed before the drop.
                        let held = redis::cmd("GET").arg(&name).query_async::<Option<String>>(&mut conn).await?;
                        Ok(held.as_deref() == Some(mine.as_str()))
                    }
                    other => other.map(|reply| reply.is_some()),
                }
            };
            let error = match tokio::time::timeout(self.timeout, set).await {
                Ok(Ok(fresh)) => {
                    if self.degraded.swap(false, Ordering::Relaxed) {
                        tracing::info!("Redis replay store answering again; shared replay protection resumed");
                    }
                    return Ok(fresh);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::auth::dpop::replay::replay_key;

    /// A `redis-server` on a free loopback port, killed on drop.
    struct Redis {
        child: std::process::Child,
        port: u16,
    }

    impl Redis {
        fn start() -> Redis {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is installed (scripts/test installs it)");
            for _ in 0..250 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Redis { child, port };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("redis-server did not start");
        }
    }

    impl Drop for Redis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// A TCP proxy to Redis that, while `armed`, forwards the next `SET ... NX` command,
    /// waits for Redis's reply, and closes the client's connection instead of passing the
    /// reply on: a first use whose answer was lost.
    async fn dropping_proxy(redis: u16, armed: Arc<AtomicBool>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let armed = armed.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", redis)).await else { return };
                    let _ = pump(client, server, &armed).await;
                });
            }
        });
        port
    }

    async fn pump(mut client: TcpStream, mut server: TcpStream, armed: &AtomicBool) -> std::io::Result<()> {
        let (mut up, mut down) = ([0u8; 4096], [0u8; 4096]);
        loop {
            tokio::select! {
                n = client.read(&mut up) => {
                    let n = n?;
                    if n == 0 { return Ok(()) }
                    server.write_all(&up[..n]).await?;
                    let is_set_nx = up[..n].windows(6).any(|w| w == b"\r\nNX\r\n");
                    if is_set_nx && armed.swap(false, Ordering::SeqCst) {
                        // Redis has executed the SET once its reply arrives; lose it.
                        let _ = server.read(&mut down).await?;
                        return Ok(());
                    }
                }
                n = server.read(&mut down) => {
                    let n = n?;
                    if n == 0 { return Ok(()) }
                    client.write_all(&down[..n]).await?;
                }
            }
        }
    }

    async fn store(port: u16) -> RedisReplayStore {
        let url = format!("redis://127.0.0.1:{port}/");
        RedisReplayStore::connect(&url, "t:", Duration::from_secs(10), Failure::Closed, 10).await.unwrap()
    }

    /// A SET that landed but whose reply was lost is retried; the retry recognises its own
    /// write and calls it a first use, and a real second use is still a replay.
    #[tokio::test]
    async fn a_retried_set_recognises_its_own_write() {
        let redis = Redis::start();
        let armed = Arc::new(AtomicBool::new(false));
        let proxy = dropping_proxy(redis.port, armed.clone()).await;
        let store = store(proxy).await;
        let key = replay_key("DPoP", &["jkt", "lost-reply"]);
        armed.store(true, Ordering::SeqCst);
        assert_eq!(store.insert_if_absent(key, Duration::from_secs(60)).await, Ok(true));
        assert!(!armed.load(Ordering::SeqCst), "the proxy never dropped a reply");
        assert_eq!(store.insert_if_absent(key, Duration::from_secs(60)).await, Ok(false));

        // A key another replica wrote: on the retry path too, a replay.
        let key = replay_key("DPoP", &["jkt", "used-elsewhere"]);
        let other = self::store(redis.port).await;
        assert_eq!(other.insert_if_absent(key, Duration::from_secs(60)).await, Ok(true));
        armed.store(true, Ordering::SeqCst);
        assert_eq!(store.insert_if_absent(key, Duration::from_secs(60)).await, Ok(false));
        assert!(!armed.load(Ordering::SeqCst));
    }

    /// Redis refuses an expiry past the end of its clock: huge TTLs are clamped.
    #[tokio::test]
    async fn huge_ttls_are_clamped() {
        let redis = Redis::start();
        let store = store(redis.port).await;
        let key = replay_key("service-jwt", &["did", "far-future"]);
        assert_eq!(store.insert_if_absent(key, Duration::MAX).await, Ok(true));
        assert_eq!(store.insert_if_absent(key, Duration::MAX).await, Ok(false));
        assert_eq!(px(Duration::ZERO), 1);
    }
}
