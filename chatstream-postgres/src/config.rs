//! [`PgStoreConfig`]: where the store connects, its schema, expiry and pool size.

use std::time::Duration;

use chatstream_core::{Error, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

/// The environment variable seed 002's deployment reads its database from.
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";

/// The default expiry: 90 days after the last access, as the other stores.
pub const DEFAULT_TTL: Duration = Duration::from_secs(90 * 86_400);

/// How [`PgConversationStore`](crate::PgConversationStore) connects.
#[derive(Debug, Clone)]
pub struct PgStoreConfig {
    url: String,
    schema: Option<String>,
    ttl: Duration,
    pool_size: usize,
    timeout: Duration,
}

impl PgStoreConfig {
    /// A configuration for `url` (`postgres://user@host:port/db`), public schema, 90 days
    /// expiry, 16 connections, 5 s to connect or wait for a connection.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            ttl: DEFAULT_TTL,
            pool_size: 16,
            timeout: Duration::from_secs(5),
        }
    }

    /// Keeps the tables in `schema` (created when absent; first on every connection's
    /// `search_path`). A name is `[a-z_][a-z0-9_]*`, at most 63 characters.
    pub fn with_schema(mut self, schema: &str) -> Result<Self> {
        let ok = !schema.is_empty()
            && schema.len() <= 63
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            return Err(Error::invalid(
                "schema name",
                "must match [a-z_][a-z0-9_]* and be at most 63 characters",
            ));
        }
        self.schema = Some(schema.to_owned());
        Ok(self)
    }

    /// Conversations expire `ttl` after their last access (at least 1 ms).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// At most `n` connections (at least 1).
    pub fn with_pool_size(mut self, n: usize) -> Self {
        self.pool_size = n.max(1);
        self
    }

    /// How long connecting, or waiting for a free connection, may take.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The schema, when one is set.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The expiry.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The connection pool this configuration describes (connections are made lazily).
    pub fn pool(&self) -> Result<Pool> {
        let mut pg: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|e| Error::invalid("postgres URL", e))?;
        pg.connect_timeout(self.timeout);
        if let Some(schema) = &self.schema {
            pg.options(format!("-c search_path={schema}"));
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(self.timeout))
            .create_timeout(Some(self.timeout))
            .recycle_timeout(Some(self.timeout))
            .build()
            .map_err(|e| Error::invalid("postgres pool", e))
    }
}
