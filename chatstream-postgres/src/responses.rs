//! [`PgResponseStore`]: the stored responses of the OpenAI Responses API in PostgreSQL.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatstream_core::{Error, ResponseOutcome, ResponseRecord, ResponseStore, Result};
use deadpool_postgres::{Object, Pool};

use crate::error::{from_pg, from_pool};
use crate::{sql, PgStoreConfig};

/// How often, at most, expired records are swept out (no read returns one anyway).
const SWEEP_EVERY_MS: i64 = 60_000;
/// Rows deleted per sweep statement, so that a sweep never holds long locks.
const SWEEP_BATCH: i64 = 1_000;
/// The longest expiry (about 100 years), so that `now + ttl` stays a `bigint`.
const MAX_TTL_MS: i64 = 100 * 365 * 86_400_000;

/// A [`ResponseStore`] in PostgreSQL, shared by every gateway instance on one database:
/// table `chatstream_responses` (migration 2), one row per response.
///
/// - Each record is kept for the TTL from its creation (30 days by default,
///   [`DEFAULT_RESPONSE_TTL`](chatstream_core::memory::DEFAULT_RESPONSE_TTL), as OpenAI
///   keeps responses), as in the in-memory and Redis stores: reads and the outcome do not
///   extend it, and a record created again under the same id starts its TTL again.
///   Expired rows are invisible to every statement and deleted by a sweep, at most once a
///   minute, from [`create`](ResponseStore::create).
/// - The outcome is set by one `UPDATE … WHERE outcome IS NULL` on a live row, so a deleted
///   response stays deleted and the first final state wins.
/// - The owner is kept in the record (and in a column of its own): the HTTP layer lets
///   only it read, cancel or delete the response.
/// - Every call is one statement; every value is a bound parameter.
///
/// Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct PgResponseStore {
    pool: Pool,
    ttl_ms: i64,
    last_sweep: Arc<AtomicI64>,
}

impl PgResponseStore {
    /// Connects (a pool of `config.pool_size` connections), creates the schema when one is
    /// named, and applies the migrations; records are kept for `ttl` (the configuration's
    /// own expiry is the conversations'). A deployment that also keeps its conversations
    /// here shares one pool with [`PgConversationStore::responses`](crate::PgConversationStore::responses).
    pub async fn connect(config: &PgStoreConfig, ttl: Duration) -> Result<Self> {
        let pool = crate::migrate::prepare(config).await?;
        Ok(Self::with_pool(pool, ttl))
    }

    /// A store on `pool`, whose database has the migrations applied.
    pub(crate) fn with_pool(pool: Pool, ttl: Duration) -> Self {
        Self {
            pool,
            ttl_ms: i64::try_from(ttl.as_millis())
                .unwrap_or(MAX_TTL_MS)
                .clamp(1, MAX_TTL_MS),
            last_sweep: Arc::default(),
        }
    }

    /// The connection pool (for operators' queries and tests).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn client(&self) -> Result<Object> {
        self.pool.get().await.map_err(from_pool)
    }

    /// Deletes expired records, a batch at a time, at most once a minute (by this
    /// process's clock: only the pacing, never the expiry, depends on it).
    async fn maybe_sweep(&self, client: &Object) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) < SWEEP_EVERY_MS
            || self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return Ok(());
        }
        loop {
            let n = client
                .execute(sql::RESPONSE_SWEEP, &[&SWEEP_BATCH])
                .await
                .map_err(from_pg)?;
            if n < SWEEP_BATCH as u64 {
                return Ok(());
            }
        }
    }
}

/// PostgreSQL text cannot hold NUL: an id with one names nothing stored.
fn storable(id: &str) -> bool {
    !id.contains('\0')
}

#[async_trait]
impl ResponseStore for PgResponseStore {
    async fn create(&self, record: &ResponseRecord) -> Result<()> {
        let id = &record.header.id;
        let owner = record.owner.as_deref();
        if !storable(id) || !owner.is_none_or(storable) {
            return Err(Error::invalid(
                "response id or owner",
                "contains a NUL character",
            ));
        }
        let bare = ResponseRecord {
            outcome: None,
            ..record.clone()
        };
        let body =
            serde_json::to_string(&bare).map_err(|e| Error::invalid("stored response", e))?;
        let outcome = record
            .outcome
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| Error::invalid("stored response outcome", e))?;
        let client = self.client().await?;
        client
            .execute(
                sql::RESPONSE_PUT,
                &[id, &owner, &body, &outcome, &self.ttl_ms],
            )
            .await
            .map_err(from_pg)?;
        if let Err(e) = self.maybe_sweep(&client).await {
            // The record is stored; a failed sweep is retried a minute later.
            tracing::warn!(error = %e, "sweeping expired stored responses failed");
        }
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<ResponseRecord>> {
        if !storable(id) {
            return Ok(None);
        }
        let client = self.client().await?;
        let Some(row) = client
            .query_opt(sql::RESPONSE_GET, &[&id])
            .await
            .map_err(from_pg)?
        else {
            return Ok(None);
        };
        let body: String = row.try_get("record").map_err(from_pg)?;
        let outcome: Option<String> = row.try_get("outcome").map_err(from_pg)?;
        let mut record: ResponseRecord =
            serde_json::from_str(&body).map_err(|e| Error::decode("stored response", e))?;
        record.outcome = outcome
            .map(|o| serde_json::from_str(&o))
            .transpose()
            .map_err(|e| Error::decode("stored response outcome", e))?;
        Ok(Some(record))
    }

    async fn finish(&self, id: &str, outcome: &ResponseOutcome) -> Result<bool> {
        if !storable(id) {
            return Ok(false);
        }
        let outcome = serde_json::to_string(outcome)
            .map_err(|e| Error::invalid("stored response outcome", e))?;
        let client = self.client().await?;
        let n = client
            .execute(sql::RESPONSE_FINISH, &[&id, &outcome])
            .await
            .map_err(from_pg)?;
        Ok(n == 1)
    }

    async fn delete(&self, id: &str) -> Result<bool> {
        if !storable(id) {
            return Ok(false);
        }
        let client = self.client().await?;
        let row = client
            .query_opt(sql::RESPONSE_DELETE, &[&id])
            .await
            .map_err(from_pg)?;
        match row {
            Some(row) => row.try_get("live").map_err(from_pg),
            None => Ok(false),
        }
    }
}
