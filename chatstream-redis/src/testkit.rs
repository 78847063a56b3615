//! The conformance suite's harness on a real Redis, and helpers for tests that need one.
//!
//! Every harness works under its own random prefix (`cstest:<tag>:<random>:`), so tests run
//! in parallel on one server, and deletes its keys when dropped.

/// A Redis Cluster (3 masters + 3 replicas) a test owns: start it, kill a node, await failover.
pub mod cluster;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatstream_core::testkit::{skip_or_fail, Capabilities, Harness};
use chatstream_core::{
    DynCancelChannel, DynMessageSource, DynRequestSink, DynTokenSink, DynTokenSource, Result,
};

use crate::{
    BusConfig, QueueConfig, RedisCancelChannel, RedisClient, RedisRequestSink, RedisRequestSource,
    RedisTokenSink, RedisTokenSource,
};

/// The variable naming the Redis server of integration tests.
pub const URL_VAR: &str = "CHATSTREAM_REDIS_URL";
/// The server used when [`URL_VAR`] is unset.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// The Redis URL of integration tests.
pub fn redis_url() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// The variable naming a Redis Cluster for the tests that run on one (`.ci/run` starts one
/// with `ops/redis-cluster.sh` and sets it): node URLs separated by commas, or one node.
pub const CLUSTER_URL_VAR: &str = "CHATSTREAM_REDIS_CLUSTER_URL";

/// The Redis Cluster of integration tests, when [`CLUSTER_URL_VAR`] is set.
pub fn cluster_url() -> Option<String> {
    std::env::var(CLUSTER_URL_VAR)
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// Which Redis a harness works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The single server of [`redis_url`].
    Server,
    /// The cluster of [`cluster_url`].
    Cluster,
}

/// A client of `target` under a fresh prefix, or `None` (after [`skip_or_fail`]) when it is
/// unreachable or, for [`Target::Cluster`], when [`CLUSTER_URL_VAR`] is unset or names a
/// server that is not in cluster mode.
pub async fn connect_to_or_skip(target: Target, tag: &str) -> Option<RedisClient> {
    let (url, what) = match target {
        Target::Server => (redis_url(), "Redis"),
        Target::Cluster => match cluster_url() {
            Some(url) => (url, "Redis Cluster"),
            None => {
                return skip_or_fail(
                    "Redis Cluster",
                    format!(
                        "{CLUSTER_URL_VAR} is not set (`ops/redis-cluster.sh start DIR` starts \
                         one and prints its URL; .ci/run does it)"
                    ),
                )
            }
        },
    };
    let client = match RedisClient::connect(&url, &unique_prefix(tag)).await {
        Ok(c) => c,
        Err(e) => return skip_or_fail(&format!("{what} at {url}"), e),
    };
    if let Err(e) = client.ping().await {
        return skip_or_fail(&format!("{what} at {url}"), e);
    }
    if target == Target::Cluster && !client.is_cluster() {
        return skip_or_fail(
            &format!("{what} at {url}"),
            "the server is not in cluster mode",
        );
    }
    Some(client)
}

/// A fresh prefix for one test.
pub fn unique_prefix(tag: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("cstest:{tag}:{}:", &id[..12])
}

/// A client under a fresh prefix, or `None` (after [`skip_or_fail`]) when Redis is
/// unreachable. Pair it with [`PrefixGuard`] to delete its keys afterwards.
pub async fn connect_or_skip(tag: &str) -> Option<RedisClient> {
    connect_to_or_skip(Target::Server, tag).await
}

/// Deletes every key of a prefix when dropped (synchronously, so it also runs at the end of
/// a test whose runtime is shutting down).
#[derive(Debug)]
pub struct PrefixGuard {
    prefix: String,
    /// Where to delete: [`redis_url`], or every node of a cluster.
    nodes: Vec<String>,
    cluster: bool,
}

impl PrefixGuard {
    /// Guards the prefix of `client`.
    pub fn new(client: &RedisClient) -> Self {
        let nodes = if client.is_cluster() {
            client
                .endpoint()
                .split(',')
                .map(|node| format!("redis://{node}"))
                .collect()
        } else {
            vec![redis_url()]
        };
        Self {
            prefix: client.keys().prefix().to_owned(),
            nodes,
            cluster: client.is_cluster(),
        }
    }
}

impl Drop for PrefixGuard {
    fn drop(&mut self) {
        if !self.prefix.starts_with("cstest:") {
            return; // never delete anything but test data
        }
        for node in &self.nodes {
            let _ = delete_prefix_blocking(node, &self.prefix, self.cluster);
        }
    }
}

/// Deletes the keys of `prefix` on the server at `url` (on a cluster node: only when it is
/// a master, one key per command, as keys of several slots may not share one).
fn delete_prefix_blocking(url: &str, prefix: &str, cluster: bool) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
    if cluster {
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut con)?;
        if !matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
            return Ok(());
        }
    }
    let pattern = format!("{}*", prefix.replace('*', "\\*"));
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)?;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("UNLINK").arg(key).ignore();
            }
            pipe.query::<()>(&mut con)?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// The Redis bus, queue and cancel channel as a conformance harness, under a fresh prefix.
#[derive(Debug)]
pub struct RedisHarness {
    client: RedisClient,
    queue: QueueConfig,
    bus: BusConfig,
    requests: RedisRequestSink,
    _guard: PrefixGuard,
}

impl RedisHarness {
    /// Connects to [`redis_url`], or `None` (after [`skip_or_fail`]) when unreachable.
    pub async fn connect() -> Option<Self> {
        Self::connect_to(Target::Server).await
    }

    /// Connects to the cluster of [`cluster_url`] (see [`connect_to_or_skip`]).
    pub async fn connect_cluster() -> Option<Self> {
        Self::connect_to(Target::Cluster).await
    }

    /// Connects to `target`, or `None` (after [`skip_or_fail`]).
    pub async fn connect_to(target: Target) -> Option<Self> {
        let client = connect_to_or_skip(target, "conformance").await?;
        let queue = QueueConfig {
            claim_idle: Duration::from_secs(2),
            block: Duration::from_millis(500),
            ..QueueConfig::default()
        };
        let bus = BusConfig {
            block: Duration::from_secs(1),
            ..BusConfig::default()
        };
        Some(Self {
            requests: RedisRequestSink::new(client.clone(), &queue),
            _guard: PrefixGuard::new(&client),
            client,
            queue,
            bus,
        })
    }

    /// The client (under this harness's prefix).
    pub fn client(&self) -> &RedisClient {
        &self.client
    }

    /// The queue settings (short claim idle time and block).
    pub fn queue_config(&self) -> &QueueConfig {
        &self.queue
    }

    /// The bus settings.
    pub fn bus_config(&self) -> &BusConfig {
        &self.bus
    }
}

#[async_trait]
impl Harness for RedisHarness {
    async fn request_sink(&self) -> Arc<DynRequestSink> {
        Arc::new(self.requests.clone())
    }
    async fn message_source(&self) -> Box<DynMessageSource> {
        match RedisRequestSource::new(self.client.clone(), self.queue.clone()).await {
            Ok(s) => Box::new(s),
            Err(e) => panic!("Redis request source: {e}"),
        }
    }
    async fn token_sink(&self) -> Arc<DynTokenSink> {
        match RedisTokenSink::new(self.client.clone(), self.bus.clone()).await {
            Ok(s) => Arc::new(s),
            Err(e) => panic!("Redis token sink: {e}"),
        }
    }
    async fn token_source(&self) -> Arc<DynTokenSource> {
        Arc::new(RedisTokenSource::new(self.client.clone(), self.bus.clone()))
    }
    async fn cancel_channel(&self) -> Option<Arc<DynCancelChannel>> {
        Some(Arc::new(RedisCancelChannel::new(self.client.clone())))
    }
    async fn publish_raw_request(&self, body: &[u8]) -> Result<()> {
        self.requests.submit_raw(body).await
    }
    async fn dead_letters(&self) -> Result<Vec<(Vec<u8>, String)>> {
        Ok(self
            .requests
            .dead_letters(10_000)
            .await?
            .into_iter()
            .map(|d| (d.body, d.reason))
            .collect())
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            replay: true,
            cancel: true,
        }
    }
}

/// The conversation-store conformance harness
/// ([`store_checks`](chatstream_core::testkit::store_checks)) on a real Redis: each store
/// under a prefix of its own, every key deleted when the harness is dropped.
#[derive(Debug)]
pub struct RedisStoreHarness {
    target: Target,
    guards: std::sync::Mutex<Vec<PrefixGuard>>,
}

impl RedisStoreHarness {
    /// A harness when Redis answers; `None` (skipped) otherwise.
    pub async fn connect_or_skip() -> Option<Self> {
        Self::connect_to_or_skip(Target::Server).await
    }

    /// A harness on `target` when it answers; `None` (skipped) otherwise.
    pub async fn connect_to_or_skip(target: Target) -> Option<Self> {
        let probe = connect_to_or_skip(target, "store").await?;
        Some(Self {
            target,
            guards: std::sync::Mutex::new(vec![PrefixGuard::new(&probe)]),
        })
    }
}

#[async_trait]
impl chatstream_core::testkit::store_checks::StoreHarness for RedisStoreHarness {
    async fn store(&self, ttl: Duration) -> Arc<chatstream_core::DynConversationStore> {
        let Some(client) = connect_to_or_skip(self.target, "store").await else {
            panic!("Redis answered the probe but not the store");
        };
        self.guards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(PrefixGuard::new(&client));
        Arc::new(crate::RedisConversationStore::new(client, ttl))
    }
}

/// The response-store conformance harness
/// ([`response_checks`](chatstream_core::testkit::response_checks)) on a real Redis: each
/// store under a prefix of its own, its two handles on two connections, every key deleted
/// when the harness is dropped.
#[derive(Debug)]
pub struct RedisResponseStoreHarness {
    target: Target,
    guards: std::sync::Mutex<Vec<PrefixGuard>>,
}

impl RedisResponseStoreHarness {
    /// A harness when Redis answers; `None` (skipped) otherwise.
    pub async fn connect_or_skip() -> Option<Self> {
        Self::connect_to_or_skip(Target::Server).await
    }

    /// A harness on `target` when it answers; `None` (skipped) otherwise.
    pub async fn connect_to_or_skip(target: Target) -> Option<Self> {
        let probe = connect_to_or_skip(target, "responses").await?;
        Some(Self {
            target,
            guards: std::sync::Mutex::new(vec![PrefixGuard::new(&probe)]),
        })
    }
}

#[async_trait]
impl chatstream_core::testkit::response_checks::ResponseStoreHarness for RedisResponseStoreHarness {
    async fn stores(&self, ttl: Duration) -> [Arc<chatstream_core::DynResponseStore>; 2] {
        let Some(client) = connect_to_or_skip(self.target, "responses").await else {
            panic!("Redis answered the probe but not the store");
        };
        self.guards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(PrefixGuard::new(&client));
        let url = match self.target {
            Target::Server => redis_url(),
            Target::Cluster => cluster_url().unwrap_or_else(redis_url),
        };
        let other = match RedisClient::connect(&url, client.keys().prefix()).await {
            Ok(c) => c,
            Err(e) => panic!("a second Redis client: {e}"),
        };
        [
            Arc::new(crate::RedisResponseStore::new(client, ttl)),
            Arc::new(crate::RedisResponseStore::new(other, ttl)),
        ]
    }
}
