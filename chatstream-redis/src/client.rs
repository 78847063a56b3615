//! [`RedisClient`]: the shared connection every component is built from, and
//! [`RedisConfig`], read from the environment variables seed 004 documents.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::{AsyncConnectionConfig, Cmd, RedisFuture, Value};

use crate::error::{from_redis, is_transient, Error};
use crate::keys::Keys;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a non-blocking command may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle dedicated connections kept for blocking reads.
const MAX_IDLE_BLOCKING: usize = 32;

/// Settings read from the environment (seed 004's names and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `REDIS_URL`, default `redis://localhost:6379/0`.
    pub url: String,
    /// `REDIS_PREFIX`, default `cosmo:`.
    pub prefix: String,
    /// `REDIS_THREAD_EXPIRY` in seconds, default 7,776,000 (90 days): how long a
    /// conversation and its channel mapping live after their last access.
    pub thread_expiry: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://localhost:6379/0".into(),
            prefix: "cosmo:".into(),
            thread_expiry: Duration::from_secs(7_776_000),
        }
    }
}

impl RedisConfig {
    /// Reads `REDIS_URL`, `REDIS_PREFIX` and `REDIS_THREAD_EXPIRY`; unset ones keep their
    /// defaults.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`RedisConfig::from_env`] with another source of variables (tests, `.env` maps).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let mut cfg = Self::default();
        if let Some(url) = get("REDIS_URL") {
            cfg.url = url;
        }
        if let Some(prefix) = get("REDIS_PREFIX") {
            cfg.prefix = prefix;
        }
        if let Some(secs) = get("REDIS_THREAD_EXPIRY") {
            let secs: u64 = secs.trim().parse().map_err(|e| Error::Config {
                name: "REDIS_THREAD_EXPIRY",
                reason: format!("{secs:?} is not a number of seconds: {e}"),
            })?;
            if secs == 0 {
                return Err(Error::Config {
                    name: "REDIS_THREAD_EXPIRY",
                    reason: "must be at least 1 second".into(),
                });
            }
            cfg.thread_expiry = Duration::from_secs(secs);
        }
        Ok(cfg)
    }
}

/// A connection to one Redis server under one key prefix. Cheap to clone; clones share the
/// connection.
///
/// Commands go through one auto-reconnecting multiplexed connection
/// ([`ConnectionManager`]); blocking reads (`XREAD BLOCK`, `XREADGROUP BLOCK`) use dedicated
/// connections, so they never stall the shared one: one per token-source reader task (which
/// follows many streams, see [`bus`](crate::bus)) and one per request-queue consumer.
/// Dedicated connections of finished readers are kept for reuse.
#[derive(Clone)]
pub struct RedisClient {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    manager: ConnectionManager,
    keys: Keys,
    endpoint: String,
    idle: Mutex<Vec<MultiplexedConnection>>,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("endpoint", &self.inner.endpoint)
            .field("prefix", &self.inner.keys.prefix())
            .finish_non_exhaustive()
    }
}

impl RedisClient {
    /// Connects to `url` (`redis://[:password@]host[:port][/db]`) with key prefix `prefix`.
    /// Fails fast (about two seconds) when the server is unreachable.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, Error> {
        let client = redis::Client::open(url).map_err(|e| Error::InvalidUrl {
            reason: e.to_string(),
        })?;
        let endpoint = client.get_connection_info().addr.to_string();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            .set_number_of_retries(1);
        let manager = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| Error::Unreachable {
                endpoint: endpoint.clone(),
                source: Box::new(e),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                manager,
                keys: Keys::new(prefix),
                endpoint,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Connects with a [`RedisConfig`].
    pub async fn from_config(config: &RedisConfig) -> Result<Self, Error> {
        Self::connect(&config.url, &config.prefix).await
    }

    /// The key layout of this client's prefix.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// `host:port` of the server (never the password).
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The shared multiplexed connection, for commands of your own (it reconnects by
    /// itself).
    pub fn connection(&self) -> ConnectionManager {
        self.inner.manager.clone()
    }

    /// The shared connection for this crate's own commands: like [`RedisClient::connection`],
    /// and a command refused before it was sent is tried once more on a fresh connection
    /// (see [`SharedConnection`]).
    pub(crate) fn shared(&self) -> SharedConnection {
        SharedConnection(self.inner.manager.clone())
    }

    /// `PING`.
    pub async fn ping(&self) -> chatstream_core::Result<()> {
        let mut con = self.shared();
        redis::cmd("PING")
            .query_async::<()>(&mut con)
            .await
            .map_err(from_redis)
    }

    /// The underlying `redis` client (for pub/sub connections).
    pub(crate) fn redis(&self) -> &redis::Client {
        &self.inner.client
    }

    /// A dedicated connection for blocking reads of up to `block`, reused when one is idle.
    pub(crate) async fn blocking(&self, block: Duration) -> chatstream_core::Result<Blocking> {
        let reused = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let conn = match reused {
            Some(c) => c,
            None => self.dedicated(block).await?,
        };
        Ok(Blocking {
            conn,
            home: self.inner.clone(),
            clean: true,
        })
    }

    /// A new connection whose commands may block for up to `block`.
    pub(crate) async fn dedicated(
        &self,
        block: Duration,
    ) -> chatstream_core::Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(block + RESPONSE_TIMEOUT);
        let mut con = self
            .inner
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(from_redis)?;
        // Named, so operators (and tests) can tell blocking readers apart in CLIENT LIST.
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(self.reader_name())
            .query_async::<()>(&mut con)
            .await
            .map_err(from_redis)?;
        Ok(con)
    }

    /// The `CLIENT SETNAME` of this client's dedicated (blocking) connections:
    /// `chatstream-reader:` plus the prefix, with characters other than
    /// `A-Z a-z 0-9 : _ - .` replaced by `_`.
    pub fn reader_name(&self) -> String {
        let prefix: String = self
            .keys()
            .prefix()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("chatstream-reader:{prefix}")
    }
}

/// The shared connection, trying a command once more when the connection it would have
/// gone on could not be made (connection refused).
///
/// After Redis went away, the [`ConnectionManager`] keeps its last failed reconnect until a
/// command fails on it and starts a new one, so the first command after Redis came back
/// would fail although the server is up. Such a command was never sent, so trying it again
/// is safe even when it is not idempotent (`XADD *` of a request); a command that was sent
/// and whose connection then dropped is not retried here (callers retry idempotent work).
#[derive(Clone)]
pub(crate) struct SharedConnection(ConnectionManager);

impl ConnectionLike for SharedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match self.0.send_packed_command(cmd).await {
                Err(e) if e.is_connection_refusal() => self.0.send_packed_command(cmd).await,
                other => other,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match self.0.send_packed_commands(cmd, offset, count).await {
                Err(e) if e.is_connection_refusal() => {
                    self.0.send_packed_commands(cmd, offset, count).await
                }
                other => other,
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

/// Runs idempotent work (reads, acks, appends under explicit ids) until it succeeds, fails
/// for good, or connection trouble ([`is_transient`]) has lasted `retry_for`: then the last
/// error. A command that fails on a connection that died under it (Redis restarting) goes
/// out again once the connection is back.
pub(crate) async fn retrying<T, F, Fut>(retry_for: Duration, mut op: F) -> redis::RedisResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    let deadline = tokio::time::Instant::now() + retry_for;
    let mut backoff = Duration::from_millis(50);
    loop {
        match op().await {
            Err(e) if is_transient(&e) && tokio::time::Instant::now() + backoff < deadline => {
                tracing::debug!(error = %e, "redis command failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(800));
            }
            other => return other,
        }
    }
}

/// A dedicated connection lent to one blocking reader. Back to the pool on drop, unless a
/// command was cut off mid-way (its reply would delay the next user) or failed.
pub(crate) struct Blocking {
    conn: MultiplexedConnection,
    home: Arc<Inner>,
    clean: bool,
}

impl std::fmt::Debug for Blocking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blocking")
            .field("clean", &self.clean)
            .finish_non_exhaustive()
    }
}

impl Blocking {
    /// Runs a pipeline (which may start with a blocking command).
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> redis::RedisResult<T> {
        self.clean = false;
        let r = pipe.query_async(&mut self.conn).await;
        self.clean = r.is_ok();
        if r.as_ref().is_err_and(|e| e.is_io_error()) {
            // The server went away (a restart, a network cut): the idle connections to it
            // are most likely dead too, and each would cost its next user a failed read.
            self.home
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        r
    }
}

impl Drop for Blocking {
    fn drop(&mut self) {
        if !self.clean {
            return;
        }
        let mut idle = self.home.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_BLOCKING {
            idle.push(self.conn.clone());
        }
    }
}

/// Ready while Redis answers `PING`.
#[async_trait::async_trait]
impl chatstream_core::HealthCheck for RedisClient {
    fn name(&self) -> &str {
        "redis"
    }

    async fn check(&self) -> chatstream_core::Result<()> {
        self.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_seed_004_variables() {
        let cfg = RedisConfig::from_lookup(|name| match name {
            "REDIS_PREFIX" => Some("app:".into()),
            "REDIS_THREAD_EXPIRY" => Some("60".into()),
            _ => None,
        })
        .expect("valid");
        assert_eq!(cfg.prefix, "app:");
        assert_eq!(cfg.thread_expiry, Duration::from_secs(60));
        assert_eq!(cfg.url, "redis://localhost:6379/0");
        let bad = RedisConfig::from_lookup(|n| (n == "REDIS_THREAD_EXPIRY").then(|| "90d".into()));
        assert!(matches!(bad, Err(Error::Config { .. })));
    }
}
