//! [`RedisClient`]: the shared connection every component is built from, and
//! [`RedisConfig`], read from the environment variables seed 004 documents.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisFuture,
    Value,
};

use crate::error::{from_redis, is_transient, Error};
use crate::keys::Keys;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a non-blocking command may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// A connection to one Redis server, or to a Redis Cluster, under one key prefix. Cheap to
/// clone; clones share the connection.
///
/// # One server
///
/// Commands go through one auto-reconnecting multiplexed connection
/// ([`ConnectionManager`]); blocking reads (`XREADGROUP BLOCK` of the request queue) use
/// dedicated connections, so they never stall the shared one.
///
/// # Redis Cluster
///
/// [`RedisClient::connect`] uses redis-rs's cluster client when the URL lists several nodes
/// separated by commas, or names one node that says it is in cluster mode (`INFO cluster`).
/// Commands are routed by key and follow `MOVED`/`ASK` redirections and failovers by
/// themselves; a pipeline whose commands hash to several slots is sent as one command per
/// key, concurrently, instead of failing with `CROSSSLOT`. Every key this crate writes
/// carries a hash tag ([`Keys`]), so each script touches one slot; the token sink sends a
/// publish as single-slot pipelines and script calls (see [`bus`](crate::bus)). A blocking
/// read goes to a dedicated connection to the
/// master serving its key, and moves when the slot does. Pub/sub (cancels, the session
/// feed, the token bus's news) connects to any live node: Redis forwards classic `PUBLISH`
/// to every node of the cluster.
#[derive(Clone)]
pub struct RedisClient {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    keys: Keys,
    endpoint: String,
}

enum Backend {
    Single {
        client: redis::Client,
        manager: ConnectionManager,
    },
    Cluster {
        handle: Arc<ClusterHandle>,
        /// The nodes the client was given (each one's password and database settings are
        /// reused for connections to the nodes discovered later).
        seeds: Vec<ConnectionInfo>,
    },
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("endpoint", &self.inner.endpoint)
            .field("cluster", &self.is_cluster())
            .field("prefix", &self.inner.keys.prefix())
            .finish_non_exhaustive()
    }
}

impl RedisClient {
    /// Connects to `url` (`redis://[:password@]host[:port][/db]`) with key prefix `prefix`.
    /// Fails fast (about two seconds) when the server is unreachable.
    ///
    /// A Redis Cluster is used when `url` lists several nodes separated by commas
    /// (`redis://10.0.0.1:7000,redis://10.0.0.2:7000`), or names one node of a cluster:
    /// the node is asked (`INFO cluster`), and nothing else needs setting.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, Error> {
        let urls: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let mut infos = Vec::with_capacity(urls.len());
        for u in &urls {
            infos.push(u.into_connection_info().map_err(|e| Error::InvalidUrl {
                reason: format!("{u}: {e}"),
            })?);
        }
        let endpoint = infos
            .iter()
            .map(|i| i.addr.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let unreachable = |e: redis::RedisError| Error::Unreachable {
            endpoint: endpoint.clone(),
            source: Box::new(e),
        };
        let backend = match infos.as_slice() {
            [] => {
                return Err(Error::InvalidUrl {
                    reason: "no Redis URL given".into(),
                })
            }
            [one] => {
                let client = redis::Client::open(one.clone()).map_err(|e| Error::InvalidUrl {
                    reason: e.to_string(),
                })?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT)
                    .set_number_of_retries(1);
                let mut manager = ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map_err(unreachable)?;
                if cluster_enabled(&mut manager).await {
                    cluster(infos).await.map_err(unreachable)?
                } else {
                    Backend::Single { client, manager }
                }
            }
            _ => cluster(infos).await.map_err(unreachable)?,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                keys: Keys::new(prefix),
                endpoint,
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

    /// `host:port` of the server (never the password); for a cluster, the nodes given,
    /// separated by commas.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// Whether this client talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.backend, Backend::Cluster { .. })
    }

    /// The shared connection, for commands of your own: it reconnects by itself, and on a
    /// cluster routes each command by its key (see [`RedisConnection`]).
    pub fn connection(&self) -> RedisConnection {
        match &self.inner.backend {
            Backend::Single { manager, .. } => RedisConnection(Conn::Single(manager.clone())),
            Backend::Cluster { handle, .. } => {
                let (generation, connection) = handle.current();
                RedisConnection(Conn::Cluster {
                    connection,
                    generation,
                    handle: handle.clone(),
                })
            }
        }
    }

    /// The shared connection for this crate's own commands (the same as
    /// [`RedisClient::connection`]).
    pub(crate) fn shared(&self) -> RedisConnection {
        self.connection()
    }

    /// `PING` (on a cluster, every node).
    pub async fn ping(&self) -> chatstream_core::Result<()> {
        let mut con = self.shared();
        redis::cmd("PING")
            .query_async::<()>(&mut con)
            .await
            .map_err(from_redis)
    }

    /// A pub/sub connection: to the server, or to the first live node of a cluster (seeds
    /// first, then the masters the cluster names).
    pub(crate) async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        self.on_first_node(|info| async {
            let client = redis::Client::open(info)?;
            tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
                .await
                .map_err(|_| timed_out())?
        })
        .await
    }

    /// A RESP3 connection whose pushes (pub/sub messages, and a `Disconnection` when it
    /// drops) go to `pushes`, named `name` in `CLIENT LIST`: to the server, or to the first
    /// live node of a cluster.
    pub(crate) async fn push_connection(
        &self,
        pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
        name: &str,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            .set_push_sender(pushes);
        self.on_first_node(|mut info| {
            info.redis.protocol = redis::ProtocolVersion::RESP3;
            let config = &config;
            async move {
                let client = redis::Client::open(info)?;
                let mut con = client
                    .get_multiplexed_async_connection_with_config(config)
                    .await?;
                redis::cmd("CLIENT")
                    .arg("SETNAME")
                    .arg(name)
                    .query_async::<()>(&mut con)
                    .await?;
                Ok(con)
            }
        })
        .await
    }

    /// What `connect` makes of the first node of [`RedisClient::pubsub_nodes`] it succeeds
    /// on, or the last failure.
    async fn on_first_node<T, F, Fut>(&self, mut connect: F) -> redis::RedisResult<T>
    where
        F: FnMut(ConnectionInfo) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut last = None;
        for info in self.pubsub_nodes().await {
            match connect(info).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(no_node))
    }

    /// Where pub/sub connections may go: the server; on a cluster the seeds, then the
    /// masters it names.
    async fn pubsub_nodes(&self) -> Vec<ConnectionInfo> {
        match &self.inner.backend {
            Backend::Single { client, .. } => vec![client.get_connection_info().clone()],
            Backend::Cluster { seeds, .. } => {
                let mut nodes = seeds.clone();
                if let Ok(masters) = self.masters().await {
                    nodes.extend(masters.into_iter().map(|(_, _, info)| info));
                }
                nodes
            }
        }
    }

    /// The `CLIENT SETNAME` of a token source's news connection: `chatstream-news:` plus
    /// the prefix (sanitized as in [`RedisClient::reader_name`]).
    pub fn news_name(&self) -> String {
        format!("chatstream-news:{}", self.sanitized_prefix())
    }

    /// The masters of a cluster and the slot ranges they serve (`CLUSTER SLOTS`).
    async fn masters(&self) -> redis::RedisResult<Vec<(u16, u16, ConnectionInfo)>> {
        let Backend::Cluster { handle, seeds } = &self.inner.backend else {
            return Ok(Vec::new());
        };
        let mut connection = handle.current().1;
        let reply = connection
            .route_command(
                &redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        let template = seeds.first().cloned();
        Ok(parse_slots(&reply)
            .into_iter()
            .filter_map(|(start, end, host, port)| {
                let mut info = template.clone()?;
                info.addr = ConnectionAddr::Tcp(host, port);
                Some((start, end, info))
            })
            .collect())
    }

    /// The nodes a whole-keyspace walk (`SCAN`) must visit: `[None]` (the server) on one
    /// server, each master's address on a cluster.
    pub(crate) async fn scan_nodes(&self) -> redis::RedisResult<Vec<Option<(String, u16)>>> {
        if !self.is_cluster() {
            return Ok(vec![None]);
        }
        let mut nodes: Vec<Option<(String, u16)>> = Vec::new();
        for (_, _, info) in self.masters().await? {
            if let ConnectionAddr::Tcp(host, port) = info.addr {
                let node = Some((host, port));
                if !nodes.contains(&node) {
                    nodes.push(node);
                }
            }
        }
        Ok(nodes)
    }

    /// Runs `cmd` on `node` (from [`RedisClient::scan_nodes`]).
    pub(crate) async fn query_node<T: redis::FromRedisValue>(
        &self,
        node: &Option<(String, u16)>,
        cmd: &Cmd,
    ) -> redis::RedisResult<T> {
        match (&self.inner.backend, node) {
            (Backend::Cluster { handle, .. }, Some((host, port))) => {
                let reply = handle
                    .current()
                    .1
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        }),
                    )
                    .await?;
                redis::from_redis_value(&reply)
            }
            _ => cmd.query_async(&mut self.shared()).await,
        }
    }

    /// A new connection whose commands may block for up to `block`, to the server, or to
    /// the master serving `key` on a cluster.
    pub(crate) async fn dedicated_for(
        &self,
        key: &str,
        block: Duration,
    ) -> chatstream_core::Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(block + RESPONSE_TIMEOUT);
        let client = match &self.inner.backend {
            Backend::Single { client, .. } => client.clone(),
            Backend::Cluster { .. } => {
                let slot = crate::keys::slot(key.as_bytes());
                let masters = self.masters().await.map_err(from_redis)?;
                let info = masters
                    .into_iter()
                    .find(|(start, end, _)| (*start..=*end).contains(&slot))
                    .map(|(_, _, info)| info)
                    .ok_or_else(|| {
                        chatstream_core::Error::unavailable(
                            "redis",
                            format!("no cluster node serves slot {slot}"),
                        )
                    })?;
                redis::Client::open(info).map_err(from_redis)?
            }
        };
        let mut con = client
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
        format!("chatstream-reader:{}", self.sanitized_prefix())
    }

    fn sanitized_prefix(&self) -> String {
        self.keys()
            .prefix()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "connection timed out",
    ))
}

fn no_node() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::ClientError,
        "no cluster node to connect to",
    ))
}

/// Whether the server says it is a cluster node (`cluster_enabled:1`). A server that
/// refuses `INFO` (some proxies) is taken for a single server.
async fn cluster_enabled(manager: &mut ConnectionManager) -> bool {
    let info: redis::RedisResult<String> =
        redis::cmd("INFO").arg("cluster").query_async(manager).await;
    info.is_ok_and(|i| i.lines().any(|l| l.trim() == "cluster_enabled:1"))
}

/// Connects redis-rs's cluster client to `seeds`.
async fn cluster(seeds: Vec<ConnectionInfo>) -> redis::RedisResult<Backend> {
    let client = ClusterClientBuilder::new(seeds.clone())
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .build()?;
    let connection = client.get_async_connection().await?;
    Ok(Backend::Cluster {
        handle: Arc::new(ClusterHandle {
            client,
            current: Mutex::new((0, connection)),
            rebuilding: AtomicBool::new(false),
        }),
        seeds,
    })
}

/// The cluster connection every clone of a [`RedisClient`] uses, and what it takes to
/// make a new one.
///
/// redis-rs's cluster connection can stay stuck after a master dies while commands to it
/// are in flight: every later command times out, for minutes, although the cluster has
/// promoted a replica (seen here with 50 answers streaming when the request queue's master
/// was killed). So a command that times out, or finds no connection for its slot, has a
/// new cluster connection made in the background (one at a time), which every connection
/// handed out afterwards uses; the command itself fails as before, and callers retry what
/// is safe to retry.
struct ClusterHandle {
    client: redis::cluster::ClusterClient,
    current: Mutex<(u64, ClusterConnection)>,
    rebuilding: AtomicBool,
}

impl ClusterHandle {
    fn current(&self) -> (u64, ClusterConnection) {
        let c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        (c.0, c.1.clone())
    }

    /// Has the connection of `generation` replaced when `result` says it may be stuck: a
    /// timeout, or no connection for the command's slot.
    fn check<T>(self: &Arc<Self>, generation: u64, result: &redis::RedisResult<T>) {
        let stuck = result.as_ref().is_err_and(|e| {
            e.is_timeout() || e.kind() == redis::ErrorKind::ClusterConnectionNotFound
        });
        if stuck {
            self.rebuild(generation);
        }
    }

    /// Replaces the connection of `generation` (unless that happened already).
    fn rebuild(self: &Arc<Self>, generation: u64) {
        if self.current().0 != generation || self.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let handle = self.clone();
        tokio::spawn(async move {
            let fresh =
                tokio::time::timeout(RESPONSE_TIMEOUT, handle.client.get_async_connection()).await;
            match fresh {
                Ok(Ok(connection)) => {
                    let mut c = handle.current.lock().unwrap_or_else(|p| p.into_inner());
                    if c.0 == generation {
                        *c = (generation + 1, connection);
                        tracing::info!("redis cluster connection made anew after a timeout");
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "redis cluster reconnect failed"),
                Err(_) => tracing::warn!("redis cluster reconnect timed out"),
            }
            handle.rebuilding.store(false, Ordering::Release);
        });
    }
}

/// `(start, end, host, port)` of each master's slot range in a `CLUSTER SLOTS` reply.
fn parse_slots(reply: &Value) -> Vec<(u16, u16, String, u16)> {
    let as_int = |v: &Value| match v {
        Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let as_text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let Value::Array(ranges) = reply else {
        return Vec::new();
    };
    ranges
        .iter()
        .filter_map(|range| {
            let Value::Array(parts) = range else {
                return None;
            };
            let start = as_int(parts.first()?)?;
            let end = as_int(parts.get(1)?)?;
            let Value::Array(master) = parts.get(2)? else {
                return None;
            };
            let host = as_text(master.first()?)?;
            let port = as_int(master.get(1)?)?;
            Some((start, end, host, port))
        })
        .collect()
}

/// The shared connection ([`RedisClient::connection`]): to one server, or to a cluster.
///
/// On one server, a command refused before it was sent (connection refused) is tried once
/// more: after Redis went away, the [`ConnectionManager`] keeps its last failed reconnect
/// until a command fails on it and starts a new one, so the first command after Redis came
/// back would fail although the server is up. Such a command was never sent, so trying it
/// again is safe even when it is not idempotent (`XADD *` of a request); a command that was
/// sent and whose connection then dropped is not retried here (callers retry idempotent
/// work).
///
/// On a cluster, commands are routed by key (redis-rs follows redirections and
/// failovers). A pipeline whose keys are in several slots goes out as one command per key,
/// concurrently, with the replies in pipeline order: Redis Cluster runs no multi-slot
/// pipeline as one, and none of this crate's pipelines needs to be atomic.
#[derive(Clone)]
pub struct RedisConnection(Conn);

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster {
        connection: ClusterConnection,
        generation: u64,
        handle: Arc<ClusterHandle>,
    },
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.0 {
            Conn::Single(_) => "single",
            Conn::Cluster { .. } => "cluster",
        };
        f.debug_tuple("RedisConnection").field(&kind).finish()
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match &mut self.0 {
                Conn::Single(m) => match m.send_packed_command(cmd).await {
                    Err(e) if e.is_connection_refusal() => m.send_packed_command(cmd).await,
                    other => other,
                },
                Conn::Cluster {
                    connection,
                    generation,
                    handle,
                } => {
                    let r = connection.req_packed_command(cmd).await;
                    handle.check(*generation, &r);
                    r
                }
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
            match &mut self.0 {
                Conn::Single(m) => match m.send_packed_commands(cmd, offset, count).await {
                    Err(e) if e.is_connection_refusal() => {
                        m.send_packed_commands(cmd, offset, count).await
                    }
                    other => other,
                },
                Conn::Cluster {
                    connection,
                    generation,
                    handle,
                } => {
                    let r = match connection.req_packed_commands(cmd, offset, count).await {
                        // Refused by the client before anything was sent: split it.
                        Err(e) if e.kind() == redis::ErrorKind::CrossSlot && offset == 0 => {
                            let replies = cmd.cmd_iter().map(|one| {
                                let mut c = connection.clone();
                                async move { c.req_packed_command(one).await }
                            });
                            futures::future::join_all(replies)
                                .await
                                .into_iter()
                                .take(count)
                                .collect()
                        }
                        other => other,
                    };
                    handle.check(*generation, &r);
                    r
                }
            }
        })
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Conn::Single(m) => m.get_db(),
            Conn::Cluster { .. } => 0,
        }
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
