//! [`RedisConversationStore`]: conversations, channel mappings and owner indexes in Redis,
//! with sliding expiry.

mod scan;
mod scripts;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chatstream_core::{
    ChatMessage, Conversation, ConversationMeta, ConversationStore, Error, Result, StoreStats,
};

use crate::error::from_redis;
use crate::{Keys, RedisClient};

/// Conversations in Redis (seed 004's thread store, seed 002's threads and messages).
///
/// Every read and write of a conversation slides its expiry (`REDIS_THREAD_EXPIRY`, 90
/// days by default) with `EXPIRE`, and so does every lookup of a channel mapping. History
/// is appended atomically by a Lua script (`RPUSH`, `HINCRBY message_count`,
/// `HSET last_activity`, `EXPIRE`). See [`Keys`] for the layout.
#[derive(Debug, Clone)]
pub struct RedisConversationStore {
    client: RedisClient,
    ttl_secs: u64,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl RedisConversationStore {
    /// A store on `client` whose entries live `expiry` after their last access (at least
    /// one second).
    pub fn new(client: RedisClient, expiry: Duration) -> Self {
        Self {
            client,
            ttl_secs: expiry.as_secs().max(1),
        }
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        self.client.keys()
    }

    fn con(&self) -> crate::client::SharedConnection {
        self.client.shared()
    }

    /// Slides the expiry of an owner index and a channel mapping (other hash tags, so not
    /// inside the conversation's script).
    async fn refresh_links(&self, id: &str, owner: &str, channel: &str, now: u64) -> Result<()> {
        if owner.is_empty() && channel.is_empty() {
            return Ok(());
        }
        let keys = self.keys();
        let mut pipe = redis::pipe();
        if !owner.is_empty() {
            let k = keys.owner(owner);
            pipe.zadd(&k, id, now).ignore();
            pipe.expire(&k, self.ttl_secs as i64).ignore();
        }
        if !channel.is_empty() {
            pipe.expire(keys.channel(channel), self.ttl_secs as i64)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.con())
            .await
            .map_err(from_redis)
    }
}

#[async_trait]
impl ConversationStore for RedisConversationStore {
    async fn conversation_for_channel(&self, channel: &str) -> Result<String> {
        let keys = self.keys();
        let fresh = format!("thread_{}", uuid::Uuid::new_v4().simple());
        let (id, _created): (String, u8) = scripts::CHANNEL
            .key(keys.channel(channel))
            .arg(&fresh)
            .arg(self.ttl_secs)
            .invoke_async(&mut self.con())
            .await
            .map_err(from_redis)?;
        let owner: Option<String> = scripts::TOUCH
            .key(keys.conversation_meta(&id))
            .key(keys.conversation_messages(&id))
            .arg(&id)
            .arg(now_ms())
            .arg(self.ttl_secs)
            .arg(channel)
            .invoke_async(&mut self.con())
            .await
            .map_err(from_redis)?;
        if let Some(owner) = owner {
            self.refresh_links(&id, &owner, "", now_ms()).await?;
        }
        Ok(id)
    }

    async fn create(&self, title: Option<&str>, owner: Option<&str>) -> Result<ConversationMeta> {
        let now = now_ms();
        let meta = ConversationMeta {
            id: uuid::Uuid::new_v4().to_string(),
            title: title.map(str::to_owned),
            owner: owner.map(str::to_owned),
            created_at_ms: now,
            last_activity_ms: now,
            message_count: 0,
        };
        let key = self.keys().conversation_meta(&meta.id);
        let mut fields = vec![
            ("id", meta.id.clone()),
            ("created", now.to_string()),
            ("last_activity", now.to_string()),
            ("message_count", "0".to_owned()),
        ];
        if let Some(t) = title {
            fields.push(("title", t.to_owned()));
        }
        if let Some(o) = owner {
            fields.push(("owner", o.to_owned()));
        }
        redis::pipe()
            .atomic()
            .hset_multiple(&key, &fields)
            .ignore()
            .expire(&key, self.ttl_secs as i64)
            .ignore()
            .query_async::<()>(&mut self.con())
            .await
            .map_err(from_redis)?;
        self.refresh_links(&meta.id, owner.unwrap_or(""), "", now)
            .await?;
        Ok(meta)
    }

    async fn get(&self, id: &str) -> Result<Option<Conversation>> {
        let keys = self.keys();
        let now = now_ms();
        let reply: Option<(Vec<(String, String)>, Vec<Vec<u8>>)> = scripts::GET
            .key(keys.conversation_meta(id))
            .key(keys.conversation_messages(id))
            .arg(now)
            .arg(self.ttl_secs)
            .invoke_async(&mut self.con())
            .await
            .map_err(from_redis)?;
        let Some((fields, raw)) = reply else {
            return Ok(None);
        };
        let meta = meta_from_fields(id, &fields);
        let messages = raw
            .iter()
            .map(|m| {
                serde_json::from_slice::<ChatMessage>(m)
                    .map_err(|e| Error::decode("stored chat message", e))
            })
            .collect::<Result<Vec<_>>>()?;
        self.refresh_links(id, meta.owner.as_deref().unwrap_or(""), "", now)
            .await?;
        Ok(Some(Conversation { meta, messages }))
    }

    async fn append(&self, id: &str, messages: &[ChatMessage]) -> Result<()> {
        let keys = self.keys();
        let now = now_ms();
        let mut inv = scripts::APPEND.prepare_invoke();
        inv.key(keys.conversation_meta(id))
            .key(keys.conversation_messages(id))
            .arg(id)
            .arg(now)
            .arg(self.ttl_secs);
        for m in messages {
            let json = serde_json::to_string(m).map_err(|e| Error::invalid("chat message", e))?;
            inv.arg(json);
        }
        let (owner, channel): (String, String) = inv
            .invoke_async(&mut self.con())
            .await
            .map_err(from_redis)?;
        self.refresh_links(id, &owner, &channel, now).await
    }

    async fn list(&self, owner: &str) -> Result<Vec<ConversationMeta>> {
        let keys = self.keys();
        let index = keys.owner(owner);
        let mut con = self.con();
        let ids: Vec<String> = redis::cmd("ZREVRANGE")
            .arg(&index)
            .arg(0)
            .arg(-1)
            .query_async(&mut con)
            .await
            .map_err(from_redis)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(keys.conversation_meta(id));
        }
        let metas: Vec<Vec<(String, String)>> =
            pipe.query_async(&mut con).await.map_err(from_redis)?;
        let mut out = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        for (id, fields) in ids.iter().zip(metas) {
            if fields.is_empty() {
                gone.push(id.as_str());
            } else {
                out.push(meta_from_fields(id, &fields));
            }
        }
        if !gone.is_empty() {
            redis::cmd("ZREM")
                .arg(&index)
                .arg(&gone)
                .query_async::<()>(&mut con)
                .await
                .map_err(from_redis)?;
        }
        out.sort_by_key(|m| std::cmp::Reverse(m.last_activity_ms));
        Ok(out)
    }

    async fn stats(&self) -> Result<StoreStats> {
        scan::stats(&self.client, now_ms()).await
    }

    async fn clear_all(&self) -> Result<u64> {
        scan::clear_all(&self.client).await
    }

    async fn clear_older_than(&self, age: Duration) -> Result<u64> {
        let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        scan::clear_older_than(&self.client, now_ms().saturating_sub(age_ms)).await
    }
}

/// Metadata from a hash's fields; missing or malformed numbers read as 0.
pub(crate) fn meta_from_fields(id: &str, fields: &[(String, String)]) -> ConversationMeta {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let num = |name: &str| get(name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    ConversationMeta {
        id: get("id").unwrap_or(id).to_owned(),
        title: get("title").map(str::to_owned),
        owner: get("owner").map(str::to_owned),
        created_at_ms: num("created"),
        last_activity_ms: num("last_activity"),
        message_count: num("message_count"),
    }
}
