//! Test helpers (feature `testkit`): stores in throw-away schemas of the real server, and
//! the harnesses of the conversation-store and response-store conformance suites.
//!
//! Tests read `CHATSTREAM_POSTGRES_URL` (default [`DEFAULT_TEST_URL`]) and skip with a line
//! on stderr when the server is unreachable, unless `CHATSTREAM_REQUIRE_SERVICES=1`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chatstream_core::testkit::response_checks::ResponseStoreHarness;
use chatstream_core::testkit::skip_or_fail;
use chatstream_core::testkit::store_checks::StoreHarness;
use chatstream_core::{DynConversationStore, DynResponseStore};

use crate::{PgConversationStore, PgResponseStore, PgStoreConfig};

/// The server tests use when `CHATSTREAM_POSTGRES_URL` is unset.
pub const DEFAULT_TEST_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The test server's URL.
pub fn postgres_url() -> String {
    std::env::var("CHATSTREAM_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_TEST_URL.to_owned())
}

/// A fresh schema name, `cstest_<tag>_<random>`.
pub fn unique_schema(tag: &str) -> String {
    let tag: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase();
    format!(
        "cstest_{tag}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Drops the schemas it was given when dropped (synchronously, on a thread of its own, so
/// it also runs when the test's runtime is shutting down).
#[derive(Debug, Default)]
pub struct SchemaGuard {
    url: String,
    schemas: Mutex<Vec<String>>,
}

impl SchemaGuard {
    /// A guard for schemas on `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schemas: Mutex::default(),
        }
    }

    /// Drops `schema` when the guard is dropped.
    pub fn add(&self, schema: &str) {
        self.schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(schema.to_owned());
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let schemas = std::mem::take(&mut *self.schemas.lock().unwrap_or_else(|p| p.into_inner()));
        let schemas: Vec<_> = schemas
            .into_iter()
            .filter(|s| s.starts_with("cstest_")) // never anything but test data
            .collect();
        if schemas.is_empty() {
            return;
        }
        let url = self.url.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .ok()?;
                tokio::spawn(conn);
                for s in schemas {
                    // Names come from `unique_schema` (checked by `with_schema`): no quoting needed.
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
                        .await;
                }
                Some(())
            })
        })
        .join();
    }
}

/// A store in a fresh schema (dropped with `guard`), or `None` (skipped) when the server
/// is unreachable.
pub async fn store_or_skip(
    tag: &str,
    ttl: Duration,
    guard: &SchemaGuard,
) -> Option<PgConversationStore> {
    let url = postgres_url();
    let schema = unique_schema(tag);
    let config = match PgStoreConfig::new(&url).with_schema(&schema) {
        Ok(c) => c.with_ttl(ttl).with_timeout(Duration::from_secs(5)),
        Err(e) => panic!("test schema name: {e}"),
    };
    guard.add(&schema);
    match PgConversationStore::connect(&config).await {
        Ok(store) => Some(store),
        Err(e) => skip_or_fail(&format!("PostgreSQL at {url}"), e),
    }
}

/// The store conformance harness on the real server: each store in a schema of its own,
/// all dropped with the harness.
#[derive(Debug)]
pub struct PgStoreHarness {
    guard: Arc<SchemaGuard>,
}

impl PgStoreHarness {
    /// A harness when the server answers; `None` (skipped) otherwise.
    pub async fn connect_or_skip() -> Option<Self> {
        let url = postgres_url();
        let probe = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_postgres::connect(&url, tokio_postgres::NoTls),
        )
        .await;
        match probe {
            Ok(Ok(_)) => Some(Self {
                guard: Arc::new(SchemaGuard::new(url)),
            }),
            Ok(Err(e)) => skip_or_fail(&format!("PostgreSQL at {url}"), e),
            Err(_) => skip_or_fail(&format!("PostgreSQL at {url}"), "no answer within 5 s"),
        }
    }
}

#[async_trait]
impl StoreHarness for PgStoreHarness {
    async fn store(&self, ttl: Duration) -> Arc<DynConversationStore> {
        match store_or_skip("conf", ttl, &self.guard).await {
            Some(s) => Arc::new(s),
            None => panic!("PostgreSQL answered the probe but not the store"),
        }
    }
}

/// The response-store conformance harness
/// ([`response_checks`](chatstream_core::testkit::response_checks)) on the real server:
/// each store in a schema of its own, its two handles on two pools, all schemas dropped
/// with the harness.
#[derive(Debug)]
pub struct PgResponseStoreHarness {
    inner: PgStoreHarness,
}

impl PgResponseStoreHarness {
    /// A harness when the server answers; `None` (skipped) otherwise.
    pub async fn connect_or_skip() -> Option<Self> {
        Some(Self {
            inner: PgStoreHarness::connect_or_skip().await?,
        })
    }
}

/// A response store in a fresh schema (dropped with `guard`) and a second handle on it
/// (its own pool), or `None` (skipped) when the server is unreachable.
pub async fn response_stores_or_skip(
    tag: &str,
    ttl: Duration,
    guard: &SchemaGuard,
) -> Option<[PgResponseStore; 2]> {
    let url = postgres_url();
    let schema = unique_schema(tag);
    let config = match PgStoreConfig::new(&url).with_schema(&schema) {
        Ok(c) => c.with_timeout(Duration::from_secs(5)),
        Err(e) => panic!("test schema name: {e}"),
    };
    guard.add(&schema);
    let a = match PgResponseStore::connect(&config, ttl).await {
        Ok(store) => store,
        Err(e) => return skip_or_fail(&format!("PostgreSQL at {url}"), e),
    };
    match PgResponseStore::connect(&config, ttl).await {
        Ok(b) => Some([a, b]),
        Err(e) => skip_or_fail(&format!("PostgreSQL at {url}"), e),
    }
}

#[async_trait]
impl ResponseStoreHarness for PgResponseStoreHarness {
    async fn stores(&self, ttl: Duration) -> [Arc<DynResponseStore>; 2] {
        match response_stores_or_skip("resp", ttl, &self.inner.guard).await {
            Some([a, b]) => [Arc::new(a), Arc::new(b)],
            None => panic!("PostgreSQL answered the probe but not the store"),
        }
    }
}
