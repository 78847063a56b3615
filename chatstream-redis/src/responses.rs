//! [`RedisResponseStore`]: the stored responses of the OpenAI Responses API, shared by every
//! gateway instance of a deployment.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P{resp:ID}` | string | the record's JSON, without its outcome |
//! | `P{resp:ID}:outcome` | string | the outcome's JSON, once the response reached a final state |
//!
//! Both keys share a hash tag (one Redis Cluster slot) and expire `ttl` after the response
//! was created (30 days by default, as OpenAI keeps responses). The outcome is written by a
//! script that sets it only while the record exists and has none, so a deleted response
//! stays deleted and the first final state wins. The id is percent-encoded as in
//! [`crate::keys`].

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use chatstream_core::{Error, ResponseOutcome, ResponseRecord, ResponseStore, Result};
use redis::Script;

use crate::error::from_redis;
use crate::keys::escape;
use crate::RedisClient;

/// How long a stored response is kept, by default: 30 days.
pub const DEFAULT_RESPONSE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// KEYS: record, outcome. ARGV: outcome JSON. Sets the outcome with the record's remaining
/// lifetime, only if the record exists and no outcome is set; 1 when written.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if ttl > 0 then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ttl)
else
  redis.call('SET', KEYS[2], ARGV[1])
end
return 1
",
    )
});

/// A [`ResponseStore`] in Redis (see the module docs). One round trip per call.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct RedisResponseStore {
    client: RedisClient,
    ttl_secs: u64,
}

impl RedisResponseStore {
    /// A store on `client` keeping each response for `ttl` (at least a second).
    pub fn new(client: RedisClient, ttl: Duration) -> Self {
        Self {
            client,
            ttl_secs: ttl.as_secs().max(1),
        }
    }

    fn record_key(&self, id: &str) -> String {
        format!("{}{{resp:{}}}", self.client.keys().prefix(), escape(id))
    }

    fn outcome_key(&self, id: &str) -> String {
        let mut k = self.record_key(id);
        k.push_str(":outcome");
        k
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::decode("stored response", e))
}

#[async_trait]
impl ResponseStore for RedisResponseStore {
    async fn create(&self, record: &ResponseRecord) -> Result<()> {
        let id = &record.header.id;
        let mut pipe = redis::pipe();
        pipe.atomic();
        match &record.outcome {
            Some(outcome) => {
                let bare = ResponseRecord {
                    outcome: None,
                    ..record.clone()
                };
                pipe.set_ex(self.record_key(id), to_json(&bare)?, self.ttl_secs)
                    .ignore();
                pipe.set_ex(self.outcome_key(id), to_json(outcome)?, self.ttl_secs)
                    .ignore();
            }
            None => {
                pipe.set_ex(self.record_key(id), to_json(record)?, self.ttl_secs)
                    .ignore();
                pipe.del(self.outcome_key(id)).ignore();
            }
        }
        pipe.query_async::<()>(&mut self.client.connection())
            .await
            .map_err(from_redis)
    }

    async fn get(&self, id: &str) -> Result<Option<ResponseRecord>> {
        let (record, outcome): (Option<String>, Option<String>) = redis::pipe()
            .get(self.record_key(id))
            .get(self.outcome_key(id))
            .query_async(&mut self.client.connection())
            .await
            .map_err(from_redis)?;
        let Some(record) = record else {
            return Ok(None);
        };
        let mut record: ResponseRecord =
            serde_json::from_str(&record).map_err(|e| Error::decode("stored response", e))?;
        if let Some(outcome) = outcome {
            record.outcome = Some(
                serde_json::from_str(&outcome)
                    .map_err(|e| Error::decode("stored response outcome", e))?,
            );
        }
        Ok(Some(record))
    }

    async fn finish(&self, id: &str, outcome: &ResponseOutcome) -> Result<bool> {
        let written: i64 = FINISH
            .key(self.record_key(id))
            .key(self.outcome_key(id))
            .arg(to_json(outcome)?)
            .invoke_async(&mut self.client.connection())
            .await
            .map_err(from_redis)?;
        Ok(written == 1)
    }

    async fn delete(&self, id: &str) -> Result<bool> {
        let removed: i64 = redis::cmd("DEL")
            .arg(self.record_key(id))
            .arg(self.outcome_key(id))
            .query_async(&mut self.client.connection())
            .await
            .map_err(from_redis)?;
        Ok(removed > 0)
    }
}
