//! [`RedisRequestSink`]: queues requests, reads dead letters.

use async_trait::async_trait;
use chatstream_core::wire::seed000::encode_request;
use chatstream_core::{ChatRequest, RequestSink, Result};

use super::{DeadLetter, QueueConfig};
use crate::error::from_redis;
use crate::RedisClient;

/// Appends requests to the queue's stream (canonical seed 000 JSON in field `body`), and
/// reads the queue's dead letters.
#[derive(Debug, Clone)]
pub struct RedisRequestSink {
    client: RedisClient,
    stream: String,
    dead: String,
}

impl RedisRequestSink {
    /// A sink for the queue `config.name` on `client`.
    pub fn new(client: RedisClient, config: &QueueConfig) -> Self {
        let keys = client.keys();
        Self {
            stream: keys.queue(&config.name),
            dead: keys.dead_letters(&config.name),
            client,
        }
    }

    /// Queues raw bytes as a request, as an outside client would; they are decoded on
    /// delivery, and malformed ones reach the worker as decode errors (and are
    /// dead-lettered).
    pub async fn submit_raw(&self, body: &[u8]) -> Result<()> {
        redis::cmd("XADD")
            .arg(&self.stream)
            .arg("*")
            .arg("body")
            .arg(body)
            .query_async::<String>(&mut self.client.shared())
            .await
            .map(drop)
            .map_err(from_redis)
    }

    /// The oldest `count` dead letters.
    pub async fn dead_letters(&self, count: usize) -> Result<Vec<DeadLetter>> {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.dead)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut self.client.shared())
            .await
            .map_err(from_redis)?;
        Ok(reply
            .ids
            .into_iter()
            .map(|e| DeadLetter {
                body: e.get::<Vec<u8>>("body").unwrap_or_default(),
                reason: e.get("reason").unwrap_or_default(),
                deliveries: e.get("deliveries").unwrap_or_default(),
                id: e.id,
            })
            .collect())
    }

    /// Requests waiting or being worked on (`XLEN`; acked entries are deleted by default).
    pub async fn len(&self) -> Result<u64> {
        redis::cmd("XLEN")
            .arg(&self.stream)
            .query_async(&mut self.client.shared())
            .await
            .map_err(from_redis)
    }
}

#[async_trait]
impl RequestSink for RedisRequestSink {
    async fn submit(&self, request: &ChatRequest) -> Result<()> {
        self.submit_raw(encode_request(request).as_bytes()).await
    }
}
