//! [`PgConversationStore`]: conversations, messages and channel mappings in PostgreSQL.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chatstream_core::{
    ChatMessage, Conversation, ConversationMeta, ConversationStore, Error, Result, StoreStats,
};
use deadpool_postgres::{GenericClient, Object, Pool};
use tokio_postgres::Row;

use crate::config::PgStoreConfig;
use crate::error::{from_pg, from_pool};
use crate::responses::PgResponseStore;
use crate::sql;

/// How often, at most, expired conversations are swept out (a read never returns one
/// anyway: every query filters on the expiry).
const SWEEP_EVERY_MS: i64 = 60_000;
/// Rows deleted per sweep statement, so that a sweep never holds long locks.
const SWEEP_BATCH: i64 = 1_000;
/// The coarsest step in which reads slide the expiry.
const SLIDE_EVERY_MAX_MS: i64 = 60_000;

/// Conversations in PostgreSQL (seed 002's threads and messages, seed 004's channel
/// mapping), with the same sliding expiry as the other stores.
///
/// - Every read and write of a conversation slides its expiry (90 days by default): the
///   row's `last_activity_ms` is set to the database's clock (by a read only when it is
///   older than a hundredth of the expiry, a minute at most, so that a history load is a
///   single read statement almost always), and a conversation idle for
///   longer than the expiry is treated as absent by every query and deleted by a sweep
///   (at most once a minute, from [`list`](ConversationStore::list),
///   [`stats`](ConversationStore::stats) and the cleanups).
/// - [`append`](ConversationStore::append) is one statement, so one transaction: an upsert
///   of the conversation's row (`INSERT … ON CONFLICT DO UPDATE`, which locks the row until
///   commit) moves its message count on, and the new messages are inserted numbered from
///   the count before. Two workers appending to one thread are serialised by that row lock,
///   so each exchange stays contiguous and in order, and a crash leaves all of an exchange
///   or none of it. (A preceding statement deletes the conversation first when it has
///   expired, so it starts again empty, as in the other stores.)
/// - Every statement binds its values as parameters; none is formatted into SQL.
#[derive(Debug, Clone)]
pub struct PgConversationStore {
    pool: Pool,
    ttl_ms: i64,
    last_sweep: std::sync::Arc<AtomicI64>,
}

impl PgConversationStore {
    /// Connects (a pool of `config.pool_size` connections), creates the schema when one is
    /// named, and applies the migrations.
    pub async fn connect(config: &PgStoreConfig) -> Result<Self> {
        let pool = crate::migrate::prepare(config).await?;
        Ok(Self {
            pool,
            ttl_ms: i64::try_from(config.ttl().as_millis())
                .unwrap_or(i64::MAX)
                .max(1),
            last_sweep: Default::default(),
        })
    }

    /// How stale the recorded activity may get before a read writes it again: a hundredth
    /// of the expiry, at most a minute (so a 90-day expiry slides by the minute, and a
    /// conversation is never dropped earlier than its expiry minus that).
    fn slide_every_ms(&self) -> i64 {
        (self.ttl_ms / 100).min(SLIDE_EVERY_MAX_MS)
    }

    /// The connection pool (for operators' queries and tests).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The Responses API's stored responses in the same database, on this store's pool
    /// (the migrations are applied already), each kept for `ttl` from its creation.
    pub fn responses(&self, ttl: Duration) -> PgResponseStore {
        PgResponseStore::with_pool(self.pool.clone(), ttl)
    }

    async fn client(&self) -> Result<Object> {
        self.pool.get().await.map_err(from_pool)
    }

    /// Deletes expired conversations, a batch at a time, at most once a minute.
    async fn maybe_sweep(&self, client: &Object) -> Result<()> {
        let now = now_ms(client).await?;
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now - last < SWEEP_EVERY_MS
            || self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return Ok(());
        }
        let cutoff = now - self.ttl_ms;
        loop {
            let n = client
                .execute(sql::SWEEP, &[&cutoff, &SWEEP_BATCH])
                .await
                .map_err(from_pg)?;
            if n < SWEEP_BATCH as u64 {
                return Ok(());
            }
        }
    }

    async fn list_by(&self, query: &str, key: &str) -> Result<Vec<ConversationMeta>> {
        let client = self.client().await?;
        self.maybe_sweep(&client).await?;
        let rows = client
            .query(query, &[&key, &self.ttl_ms])
            .await
            .map_err(from_pg)?;
        rows.iter().map(meta_from_row).collect()
    }
}

/// The database's clock, ms since the epoch.
async fn now_ms(client: &impl GenericClient) -> Result<i64> {
    let row = client.query_one(sql::NOW_MS, &[]).await.map_err(from_pg)?;
    row.try_get(0).map_err(from_pg)
}

/// PostgreSQL text cannot hold NUL: such a value can name nothing stored.
fn storable(what: &'static str, value: &str) -> Result<()> {
    if value.contains('\0') {
        return Err(Error::invalid(what, "contains a NUL character"));
    }
    Ok(())
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn u64_of_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn meta_from_row(row: &Row) -> Result<ConversationMeta> {
    Ok(ConversationMeta {
        id: row.try_get("id").map_err(from_pg)?,
        title: row.try_get("title").map_err(from_pg)?,
        owner: row.try_get("owner_id").map_err(from_pg)?,
        org: row.try_get("org_id").map_err(from_pg)?,
        created_at_ms: u64_of(row.try_get("created_ms").map_err(from_pg)?),
        last_activity_ms: u64_of(row.try_get("last_activity_ms").map_err(from_pg)?),
        message_count: u64_of(row.try_get("message_count").map_err(from_pg)?),
    })
}

#[async_trait]
impl ConversationStore for PgConversationStore {
    async fn conversation_for_channel(&self, channel: &str) -> Result<String> {
        storable("channel", channel)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(from_pg)?;
        // One creator per channel at a time, so two callers get the same conversation.
        tx.execute(sql::LOCK_CHANNEL, &[&channel])
            .await
            .map_err(from_pg)?;
        let found = tx
            .query_opt(sql::TOUCH_CHANNEL, &[&channel, &self.ttl_ms])
            .await
            .map_err(from_pg)?;
        let id: String = match found {
            Some(row) => row.try_get(0).map_err(from_pg)?,
            None => {
                let id = format!("thread_{}", uuid::Uuid::new_v4().simple());
                tx.execute(sql::INSERT_BARE, &[&id])
                    .await
                    .map_err(from_pg)?;
                tx.execute(sql::MAP_CHANNEL, &[&channel, &id])
                    .await
                    .map_err(from_pg)?;
                id
            }
        };
        tx.commit().await.map_err(from_pg)?;
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
        storable("title", title.unwrap_or_default())?;
        storable("owner", owner.unwrap_or_default())?;
        storable("organisation", org.unwrap_or_default())?;
        let id = uuid::Uuid::new_v4().to_string();
        let client = self.client().await?;
        let row = client
            .query_one(sql::INSERT_THREAD, &[&id, &title, &owner, &org])
            .await
            .map_err(from_pg)?;
        meta_from_row(&row)
    }

    async fn get(&self, id: &str) -> Result<Option<Conversation>> {
        if storable("conversation id", id).is_err() {
            return Ok(None);
        }
        let client = self.client().await?;
        // One statement: metadata and messages from one snapshot, no write.
        let rows = client
            .query(sql::READ, &[&id, &self.ttl_ms])
            .await
            .map_err(from_pg)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut meta = meta_from_row(first)?;
        let now: i64 = first.try_get("now_ms").map_err(from_pg)?;
        let messages = rows
            .iter()
            .filter_map(|r| r.try_get::<_, Option<String>>("body").transpose())
            .map(|body| {
                let body = body.map_err(from_pg)?;
                serde_json::from_str::<ChatMessage>(&body)
                    .map_err(|e| Error::decode("stored chat message", e))
            })
            .collect::<Result<Vec<_>>>()?;
        // Slide the expiry, but write (and wait for the commit to reach disk) only when
        // the recorded activity is older than a hundredth of the expiry (a minute at
        // most): a history load is then a single read almost always.
        if now - u64_of_i64(meta.last_activity_ms) >= self.slide_every_ms() {
            client
                .execute(sql::SLIDE, &[&id, &now])
                .await
                .map_err(from_pg)?;
            meta.last_activity_ms = u64_of(now);
        }
        Ok(Some(Conversation { meta, messages }))
    }

    async fn append(&self, id: &str, messages: &[ChatMessage]) -> Result<()> {
        storable("conversation id", id)?;
        let bodies = messages
            .iter()
            .map(|m| serde_json::to_string(m).map_err(|e| Error::invalid("chat message", e)))
            .collect::<Result<Vec<_>>>()?;
        let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
        let added = i64::try_from(bodies.len()).unwrap_or(i64::MAX);
        let client = self.client().await?;
        // An expired conversation starts again empty, as in the other stores. (This is a
        // statement of its own: a conversation expiring between it and the append is
        // appended to as if it had not, which only keeps it a little longer.)
        client
            .execute(sql::DELETE_IF_EXPIRED, &[&id, &self.ttl_ms])
            .await
            .map_err(from_pg)?;
        client
            .execute(sql::APPEND, &[&id, &added, &roles, &bodies])
            .await
            .map_err(from_pg)?;
        Ok(())
    }

    async fn list(&self, owner: &str) -> Result<Vec<ConversationMeta>> {
        if storable("owner", owner).is_err() {
            return Ok(Vec::new());
        }
        self.list_by(sql::LIST_OWNER, owner).await
    }

    async fn list_org(&self, org: &str) -> Result<Vec<ConversationMeta>> {
        if storable("organisation", org).is_err() {
            return Ok(Vec::new());
        }
        self.list_by(sql::LIST_ORG, org).await
    }

    async fn stats(&self) -> Result<StoreStats> {
        let client = self.client().await?;
        self.maybe_sweep(&client).await?;
        let row = client
            .query_one(sql::STATS, &[&self.ttl_ms])
            .await
            .map_err(from_pg)?;
        let get = |name: &str| -> Result<i64> { row.try_get(name).map_err(from_pg) };
        let opt = |name: &str| -> Result<Option<i64>> { row.try_get(name).map_err(from_pg) };
        Ok(StoreStats {
            conversations: u64_of(get("conversations")?),
            messages: u64_of(get("messages")?),
            age_buckets: [
                u64_of(get("day")?),
                u64_of(get("week")?),
                u64_of(get("month")?),
                u64_of(get("older")?),
            ],
            oldest_ms: opt("oldest")?.map(u64_of),
            newest_ms: opt("newest")?.map(u64_of),
            memory_bytes: opt("bytes")?.map(u64_of),
        })
    }

    async fn clear_all(&self) -> Result<u64> {
        let client = self.client().await?;
        let row = client
            .query_one(sql::CLEAR_ALL, &[&self.ttl_ms])
            .await
            .map_err(from_pg)?;
        Ok(u64_of(row.try_get(0).map_err(from_pg)?))
    }

    async fn clear_older_than(&self, age: Duration) -> Result<u64> {
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let row = client
            .query_one(sql::CLEAR_OLDER, &[&age_ms, &self.ttl_ms])
            .await
            .map_err(from_pg)?;
        Ok(u64_of(row.try_get(0).map_err(from_pg)?))
    }
}
