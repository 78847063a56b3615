//! The store's whole-prefix operations: stats and cleanup, by `SCAN` (never `KEYS`).

use chatstream_core::{Result, StoreStats};

use super::{meta_from_fields, scripts};
use crate::error::from_redis;
use crate::RedisClient;

/// Keys asked for per `SCAN` step.
const SCAN_COUNT: usize = 500;
const DAY_MS: u64 = 86_400_000;

/// Walks the keys matching a pattern, a `SCAN` step at a time.
/// On a cluster, walks every master in turn.
struct Scanner {
    client: RedisClient,
    pattern: String,
    /// Nodes still to walk (`None` until the first step asks the client).
    nodes: Option<Vec<Option<(String, u16)>>>,
    cursor: u64,
}

impl Scanner {
    fn new(client: &RedisClient, pattern: String) -> Self {
        Self {
            client: client.clone(),
            pattern,
            nodes: None,
            cursor: 0,
        }
    }

    /// The next non-empty batch of keys, or `None` at the end.
    async fn next_batch(&mut self) -> Result<Option<Vec<String>>> {
        if self.nodes.is_none() {
            let mut nodes = self.client.scan_nodes().await.map_err(from_redis)?;
            nodes.reverse();
            self.nodes = Some(nodes);
        }
        while let Some(node) = self.nodes.as_ref().and_then(|n| n.last()).cloned() {
            let (next, keys): (u64, Vec<String>) = self
                .client
                .query_node(
                    &node,
                    redis::cmd("SCAN")
                        .arg(self.cursor)
                        .arg("MATCH")
                        .arg(&self.pattern)
                        .arg("COUNT")
                        .arg(SCAN_COUNT),
                )
                .await
                .map_err(from_redis)?;
            self.cursor = next;
            if next == 0 {
                if let Some(nodes) = self.nodes.as_mut() {
                    nodes.pop();
                }
            }
            if !keys.is_empty() {
                return Ok(Some(keys));
            }
        }
        Ok(None)
    }
}

fn messages_key_of(meta_key: &str) -> String {
    let base = meta_key.strip_suffix(":meta").unwrap_or(meta_key);
    format!("{base}:messages")
}

pub(super) async fn stats(client: &RedisClient, now: u64) -> Result<StoreStats> {
    let mut stats = StoreStats::default();
    let mut memory = Some(0u64);
    let mut scan = Scanner::new(client, client.keys().conversation_meta_pattern());
    let mut con = client.shared();
    while let Some(keys) = scan.next_batch().await? {
        let con = &mut con;
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.hgetall(k);
        }
        let metas: Vec<Vec<(String, String)>> = pipe.query_async(con).await.map_err(from_redis)?;
        for fields in metas.iter().filter(|f| !f.is_empty()) {
            let m = meta_from_fields("", fields);
            stats.conversations += 1;
            stats.messages += m.message_count;
            let age = now.saturating_sub(m.last_activity_ms);
            let bucket = match age {
                a if a < DAY_MS => 0,
                a if a < 7 * DAY_MS => 1,
                a if a < 30 * DAY_MS => 2,
                _ => 3,
            };
            stats.age_buckets[bucket] += 1;
            let c = m.created_at_ms;
            stats.oldest_ms = Some(stats.oldest_ms.map_or(c, |o| o.min(c)));
            stats.newest_ms = Some(stats.newest_ms.map_or(c, |o| o.max(c)));
        }
        if let Some(total) = memory {
            // MEMORY USAGE is missing on some managed servers: then memory is unknown.
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("MEMORY").arg("USAGE").arg(k);
                pipe.cmd("MEMORY").arg("USAGE").arg(messages_key_of(k));
            }
            memory = match pipe.query_async::<Vec<Option<u64>>>(con).await {
                Ok(sizes) => Some(total + sizes.into_iter().flatten().sum::<u64>()),
                Err(e) => {
                    tracing::debug!(error = %e, "MEMORY USAGE unavailable");
                    None
                }
            };
        }
    }
    stats.memory_bytes = memory;
    Ok(stats)
}

pub(super) async fn clear_all(client: &RedisClient) -> Result<u64> {
    let mut conversations = 0;
    for pattern in client.keys().store_patterns() {
        let mut scan = Scanner::new(client, pattern);
        let mut con = client.shared();
        while let Some(keys) = scan.next_batch().await? {
            conversations += keys.iter().filter(|k| k.ends_with("}:meta")).count() as u64;
            redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<()>(&mut con)
                .await
                .map_err(from_redis)?;
        }
    }
    Ok(conversations)
}

pub(super) async fn clear_older_than(client: &RedisClient, cutoff_ms: u64) -> Result<u64> {
    let keys_of = client.keys().clone();
    let mut scan = Scanner::new(client, keys_of.conversation_meta_pattern());
    let mut con = client.shared();
    let mut removed = 0;
    while let Some(keys) = scan.next_batch().await? {
        let con = &mut con;
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("HMGET")
                .arg(k)
                .arg(&["id", "last_activity", "channel", "owner", "org"]);
        }
        type Fields = (
            Option<String>,
            Option<u64>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Fields> = pipe.query_async(con).await.map_err(from_redis)?;
        let mut pipe = redis::pipe();
        let mut n = 0;
        for (key, (id, last, channel, owner, org)) in keys.iter().zip(rows) {
            let (Some(id), Some(last)) = (id, last) else {
                continue; // expired between SCAN and HMGET, or not ours
            };
            if last >= cutoff_ms {
                continue;
            }
            n += 1;
            pipe.unlink(&[key.clone(), messages_key_of(key)]).ignore();
            if let Some(ch) = channel {
                pipe.invoke_script(scripts::UNMAP_CHANNEL.key(keys_of.channel(&ch)).arg(&id))
                    .ignore();
            }
            if let Some(o) = owner {
                pipe.zrem(keys_of.owner(&o), &id).ignore();
            }
            if let Some(o) = org {
                pipe.zrem(keys_of.org(&o), &id).ignore();
            }
        }
        if n > 0 {
            run_with_scripts(con, &pipe).await?;
            removed += n;
        }
    }
    Ok(removed)
}

/// Runs a pipeline that invokes scripts, loading them first when the server lost them.
async fn run_with_scripts(
    con: &mut crate::client::RedisConnection,
    pipe: &redis::Pipeline,
) -> Result<()> {
    match pipe.query_async::<()>(con).await {
        Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
            scripts::UNMAP_CHANNEL
                .prepare_invoke()
                .load_async(con)
                .await
                .map_err(from_redis)?;
            pipe.query_async::<()>(con).await.map_err(from_redis)
        }
        other => other.map_err(from_redis),
    }
}
