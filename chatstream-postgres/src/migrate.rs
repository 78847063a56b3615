//! Embedded, versioned migrations, applied at start.
//!
//! Each migration is a SQL file compiled into the binary. `run` takes a transaction-level
//! advisory lock (so that instances starting together apply each migration once), reads
//! which versions `chatstream_schema_migrations` records, and applies the missing ones in
//! order, each in its own transaction together with its record. A migration that is
//! already recorded is never run again; the files also use `IF NOT EXISTS`, so a partly
//! hand-applied schema does not stop a start.

use deadpool_postgres::{Object, Pool};

use crate::error::{from_pg, from_pool};
use crate::PgStoreConfig;
use chatstream_core::Result;

/// A migration: version, name, SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version; applied in increasing order.
    pub version: i32,
    /// Short name.
    pub name: &'static str,
    /// The SQL (several statements).
    pub sql: &'static str,
}

/// Every migration of this crate, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "conversations",
        sql: include_str!("../migrations/0001_conversations.sql"),
    },
    Migration {
        version: 2,
        name: "responses",
        sql: include_str!("../migrations/0002_responses.sql"),
    },
];

/// The advisory lock key serialising migrations (any constant; "chatstrm" in ASCII).
const LOCK_KEY: i64 = 0x6368_6174_7374_726d;

/// The pool `config` describes, with its schema created (when one is named) and the
/// migrations applied.
pub(crate) async fn prepare(config: &PgStoreConfig) -> Result<Pool> {
    let pool = config.pool()?;
    let mut client = pool.get().await.map_err(from_pool)?;
    if let Some(schema) = config.schema() {
        // An identifier cannot be a parameter; `schema()` only ever holds
        // `[a-z_][a-z0-9_]*`, checked by `PgStoreConfig::with_schema`.
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await
            .map_err(from_pg)?;
    }
    run(&mut client).await?;
    Ok(pool)
}

/// Applies the missing migrations; returns the versions applied now.
pub(crate) async fn run(client: &mut Object) -> Result<Vec<i32>> {
    let mut applied_now = Vec::new();
    for m in MIGRATIONS {
        let tx = client.transaction().await.map_err(from_pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(from_pg)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS chatstream_schema_migrations (
                version INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(from_pg)?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM chatstream_schema_migrations WHERE version = $1",
                &[&m.version],
            )
            .await
            .map_err(from_pg)?;
        if done.is_some() {
            continue;
        }
        tx.batch_execute(m.sql).await.map_err(from_pg)?;
        tx.execute(
            "INSERT INTO chatstream_schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(from_pg)?;
        tx.commit().await.map_err(from_pg)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "postgres migration applied"
        );
        applied_now.push(m.version);
    }
    Ok(applied_now)
}
