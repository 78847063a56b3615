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

    fn con(&self) -> crate::client::RedisConnection {
        self.client.shared()
    }

    /// Slides the expiry of the owner and organisation indexes and a channel mapping
    /// (other hash tags, so not inside the conversation's script).
    async fn refresh_links(&self, id: &str, links: Links<'_>, now: u64) -> Result<()> {
        let Links {
            owner,
            org,
            channel,
        } = links;
        if owner.is_empty() && channel.is_empty() && org.is_empty() {
            return Ok(());
        }
        let keys = self.keys();
        let mut pipe = redis::pipe();
        for k in [(owner, keys.owner(owner)), (org, keys.org(org))]
            .into_iter()
            .filter(|(name, _)| !name.is_empty())
            .map(|(_, k)| k)
        {
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
        let (owner, org): (String, String) = scripts::TOUCH
            .key(keys.conversation_meta(&id))
            .key(keys.conversation_messages(&id))
            .arg(&id)
            .arg(now_ms())
            .arg(self.ttl_secs)
            .arg(channel)
            .invoke_async(&mut self.con())
            .await
            .map_err(from_redis)?;
        let links = Links {
            owner: &owner,
            org: &org,
            channel: "",
        };
        self.refresh_links(&id, links, now_ms()).await?;
        Ok(id)
    }

    async fn create(&self, title: Option<&str>, owner: Option<&str>) -> Result<ConversationMeta> {
        self.create_in_org(title, owner, None).await
    }

    async fn create_in_org(
        &self,
        title: Option<&str>,
        owner: Option<&str>,
        org: Option<&str>,
    ) -> Result<ConversationMeta> {
        let now = now_ms();
        let meta = ConversationMeta {
            id: uuid::Uuid::new_v4().to_string(),
            title: title.map(str::to_owned),
            owner: owner.map(str::to_owned),
            org: org.map(str::to_owned),
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
        if let Some(o) = org {
            fields.push(("org", o.to_owned()));
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
        let links = Links {
            owner: owner.unwrap_or(""),
            org: org.unwrap_or(""),
            channel: "",
        };
        self.refresh_links(&meta.id, links, now).await?;
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
        let links = Links {
            owner: meta.owner.as_deref().unwrap_or(""),
            org: meta.org.as_deref().unwrap_or(""),
            channel: "",
        };
        self.refresh_links(id, links, now).await?;
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
        let (owner, channel, org): (String, String, String) = inv
            .invoke_async(&mut self.con())
            .await
            .map_err(from_redis)?;
        let links = Links {
            owner: &owner,
            org: &org,
            channel: &channel,
        };
        self.refresh_links(id, links, now).await
    }

    async fn list(&self, owner: &str) -> Result<Vec<ConversationMeta>> {
        self.list_index(self.keys().owner(owner)).await
    }

    async fn list_org(&self, org: &str) -> Result<Vec<ConversationMeta>> {
        self.list_index(self.keys().org(org)).await
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

/// The indexes and mapping a conversation is linked from ('' for none).
#[derive(Debug, Clone, Copy)]
struct Links<'a> {
    owner: &'a str,
    org: &'a str,
    channel: &'a str,
}

impl RedisConversationStore {
    /// The conversations of an owner or organisation index, newest activity first; ids
    /// whose conversation expired are removed from the index.
    async fn list_index(&self, index: String) -> Result<Vec<ConversationMeta>> {
        let keys = self.keys();
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
        org: get("org").map(str::to_owned),
        created_at_ms: num("created"),
        last_activity_ms: num("last_activity"),
        message_count: num("message_count"),
    }
}
