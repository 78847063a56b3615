//! [`RedisStreamRegistry`]: the stream registry every gateway instance of a deployment
//! shares.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P{sreg:SESSION:MESSAGE}` | string | the submitter's principal id, or empty when the submit was not authenticated |
//! | `P{sreg:SESSION}` | string | the message id of the session's latest stream |
//!
//! Both expire `ttl` after the submit (one hour by default): a client comes back to an
//! answer within minutes. Parts from users are percent-encoded as in [`crate::keys`].

use std::time::Duration;

use async_trait::async_trait;
use chatstream_core::{Result, StreamKey, StreamRecord, StreamRegistry};

use crate::error::from_redis;
use crate::keys::escape;
use crate::RedisClient;

/// How long a stream is remembered, by default: one hour.
pub const DEFAULT_REGISTRY_TTL: Duration = Duration::from_secs(3600);

/// A [`StreamRegistry`] in Redis: who submitted each stream and each session's latest
/// stream, shared by every gateway instance using the same Redis and prefix, so a resume or
/// a stop that reaches another instance than the submit finds them. One round trip per
/// call. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RedisStreamRegistry {
    client: RedisClient,
    ttl_secs: u64,
}

impl RedisStreamRegistry {
    /// A registry on `client` keeping each record for `ttl` (at least a second).
    pub fn new(client: RedisClient, ttl: Duration) -> Self {
        Self {
            client,
            ttl_secs: ttl.as_secs().max(1),
        }
    }

    fn stream_key(&self, key: &StreamKey) -> String {
        format!(
            "{}{{sreg:{}:{}}}",
            self.client.keys().prefix(),
            escape(&key.session_id),
            escape(&key.message_id)
        )
    }

    fn latest_key(&self, session_id: &str) -> String {
        format!(
            "{}{{sreg:{}}}",
            self.client.keys().prefix(),
            escape(session_id)
        )
    }
}

#[async_trait]
impl StreamRegistry for RedisStreamRegistry {
    async fn record(&self, key: &StreamKey, owner: Option<&str>) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.set_ex(self.stream_key(key), owner.unwrap_or(""), self.ttl_secs)
            .ignore();
        pipe.set_ex(
            self.latest_key(&key.session_id),
            &*key.message_id,
            self.ttl_secs,
        )
        .ignore();
        pipe.query_async::<()>(&mut self.client.connection())
            .await
            .map_err(from_redis)
    }

    async fn lookup(&self, key: &StreamKey) -> Result<Option<StreamRecord>> {
        let owner: Option<String> = redis::cmd("GET")
            .arg(self.stream_key(key))
            .query_async(&mut self.client.connection())
            .await
            .map_err(from_redis)?;
        Ok(owner.map(|o| StreamRecord::new(key.clone(), (!o.is_empty()).then_some(o))))
    }

    async fn latest(&self, session_id: &str) -> Result<Option<StreamKey>> {
        let message: Option<String> = redis::cmd("GET")
            .arg(self.latest_key(session_id))
            .query_async(&mut self.client.connection())
            .await
            .map_err(from_redis)?;
        Ok(message.map(|m| StreamKey::new(session_id, m)))
    }
}
