//! [`RedisTokenSink`]: pipelined appends, one round trip per batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatstream_core::wire::seed000::{encode_envelope, Mode};
use chatstream_core::{Destination, Error, Result, StreamKey, TokenEnvelope, TokenSink};
use tokio::time::Instant;

use super::order::PublishOrder;
use super::scripts::PUBLISH;
use super::{entry_id, millis, BusConfig};
use crate::error::{from_redis, is_transient};
use crate::RedisClient;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between two tries of a publish.
const MAX_BACKOFF: Duration = Duration::from_millis(800);

/// Publishes envelopes to their streams (see the [module docs](crate::bus)). A batch of
/// many streams costs one round trip: one script call per stream, pipelined.
///
/// A publish that fails on connection trouble (Redis restarting) is tried again for
/// [`BusConfig::retry_for`], in call order with the other publishes of this sink and its
/// clones; appends are idempotent, so a try that reached Redis before its connection
/// dropped does no harm.
#[derive(Debug, Clone)]
pub struct RedisTokenSink {
    client: RedisClient,
    config: BusConfig,
    order: Arc<PublishOrder>,
}

impl RedisTokenSink {
    /// A sink on `client`. Loads the publish script, so that overlapping publishes never
    /// race to load it.
    pub async fn new(client: RedisClient, config: BusConfig) -> Result<Self> {
        PUBLISH
            .prepare_invoke()
            .load_async(&mut client.shared())
            .await
            .map_err(from_redis)?;
        Ok(Self {
            client,
            config,
            order: Arc::default(),
        })
    }

    /// Sends one publish's pipeline once (loading the script when Redis lost it).
    async fn send(&self, pipe: &redis::Pipeline) -> redis::RedisResult<Vec<(u64, u64)>> {
        let mut con = self.client.shared();
        match pipe.query_async(&mut con).await {
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                // The server restarted or its scripts were flushed.
                PUBLISH.prepare_invoke().load_async(&mut con).await?;
                pipe.query_async(&mut con).await
            }
            other => other,
        }
    }

    fn pipeline(&self, batch: &[TokenEnvelope]) -> Result<redis::Pipeline> {
        // Streams in order of first appearance, envelopes in batch order.
        let mut order: Vec<(&StreamKey, Vec<&TokenEnvelope>)> = Vec::new();
        let mut index: HashMap<&StreamKey, usize> = HashMap::new();
        for env in batch {
            let i = *index.entry(&env.key).or_insert_with(|| {
                order.push((&env.key, Vec::new()));
                order.len() - 1
            });
            order[i].1.push(env);
        }
        let keys = self.client.keys();
        let c = &self.config;
        let mut pipe = redis::pipe();
        for (key, envs) in order {
            let mut inv = PUBLISH.prepare_invoke();
            inv.key(keys.token_stream(key))
                .key(keys.token_marker(key))
                .arg(c.max_len.max(1))
                .arg(millis(c.idle_expiry))
                .arg(millis(c.retention_after_end))
                .arg(millis(c.tombstone))
                .arg(
                    envs.iter()
                        .rev()
                        .find(|e| e.event.is_end())
                        .map_or(String::new(), |e| entry_id(e.seq)),
                );
            for env in envs {
                let json = encode_envelope(env, Mode::Canonical)
                    .ok_or_else(|| Error::invalid("envelope", "not representable"))?;
                inv.arg(entry_id(env.seq)).arg(json);
            }
            pipe.invoke_script(&inv);
        }
        Ok(pipe)
    }
}

#[async_trait]
impl TokenSink for RedisTokenSink {
    async fn publish(&self, _destination: &Destination, batch: &[TokenEnvelope]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let pipe = self.pipeline(batch)?;
        let mut turn = self.order.turn();
        let deadline = Instant::now() + self.config.retry_for;
        let mut backoff = FIRST_BACKOFF;
        let counts = loop {
            turn.go().await;
            match self.send(&pipe).await {
                Ok(counts) => break counts,
                Err(e) if is_transient(&e) && Instant::now() < deadline => {
                    tracing::debug!(error = %e, "token publish failed; retrying");
                    turn.retry();
                    tokio::time::sleep(
                        backoff.min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(from_redis(e)),
            }
        };
        drop(turn);
        let stale: u64 = counts.iter().map(|(_, s)| s).sum();
        if stale > 0 {
            tracing::debug!(
                stale,
                "dropped envelopes of an attempt superseded by a redelivery"
            );
        }
        Ok(())
    }
}
