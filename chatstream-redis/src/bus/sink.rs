//! [`RedisTokenSink`]: pipelined appends, one round trip per batch.

use std::collections::HashMap;

use async_trait::async_trait;
use chatstream_core::wire::seed000::{encode_envelope, Mode};
use chatstream_core::{Destination, Error, Result, StreamKey, TokenEnvelope, TokenSink};

use super::scripts::PUBLISH;
use super::{entry_id, millis, BusConfig};
use crate::error::from_redis;
use crate::RedisClient;

/// Publishes envelopes to their streams (see the [module docs](crate::bus)). A batch of
/// many streams costs one round trip: one script call per stream, pipelined.
#[derive(Debug, Clone)]
pub struct RedisTokenSink {
    client: RedisClient,
    config: BusConfig,
}

impl RedisTokenSink {
    /// A sink on `client`. Loads the publish script, so that overlapping publishes never
    /// race to load it.
    pub async fn new(client: RedisClient, config: BusConfig) -> Result<Self> {
        PUBLISH
            .prepare_invoke()
            .load_async(&mut client.connection())
            .await
            .map_err(from_redis)?;
        Ok(Self { client, config })
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
        let mut con = self.client.connection();
        let counts: Vec<(u64, u64)> = match pipe.query_async(&mut con).await {
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                // The server restarted or its scripts were flushed.
                PUBLISH
                    .prepare_invoke()
                    .load_async(&mut con)
                    .await
                    .map_err(from_redis)?;
                pipe.query_async(&mut con).await.map_err(from_redis)?
            }
            other => other.map_err(from_redis)?,
        };
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
