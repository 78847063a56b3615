//! PostgreSQL adapter for chatstream: [`PgConversationStore`], a
//! [`ConversationStore`](chatstream_core::ConversationStore) keeping threads (title, owner
//! user and organisation, created and updated times), their messages in order and seed
//! 004's channel → thread mapping with sliding expiry.
//!
//! | item | what |
//! |---|---|
//! | [`PgConversationStore`] | the store; [`connect`](PgConversationStore::connect) applies the migrations |
//! | [`PgResponseStore`] | the Responses API's stored responses ([`ResponseStore`](chatstream_core::ResponseStore)), each kept for a TTL from its creation; [`PgConversationStore::responses`] shares the conversations' pool |
//! | [`PgStoreConfig`] | URL (`DATABASE_URL`), schema, expiry, pool size, timeouts |
//! | [`migrate`] | the embedded, versioned migrations |
//! | `testkit` (feature `testkit`) | stores in throw-away schemas, the store conformance harness |
//!
//! ## Why tokio-postgres with deadpool, not sqlx
//!
//! The store is a dozen fixed statements. tokio-postgres runs them with binary parameters
//! and pipelines the statements of a transaction; deadpool-postgres adds a small pool with
//! connect, wait and recycle timeouts (a dead connection is dropped when it is next taken,
//! so the pool recovers by itself after a server restart). sqlx would bring its macro crate
//! and a larger dependency tree for nothing this crate uses: its compile-time checked
//! queries need a live database at build time, which this workspace does not allow. The
//! migrations are a short module of its own ([`migrate`]): versioned files compiled in,
//! recorded in `chatstream_schema_migrations`, applied once under an advisory lock.
//!
//! ## Tables
//!
//! `chatstream_conversations` (id, title, owner_id, org_id, created_ms, last_activity_ms,
//! message_count; indexed by owner and by organisation with activity, and by activity),
//! `chatstream_messages` (conversation_id, seq, role, body; primary key
//! `(conversation_id, seq)`, so a history load is one index range scan) and
//! `chatstream_channels` (channel → conversation), and `chatstream_responses` (id, owner,
//! the record's JSON, the outcome's JSON, created and expiry times; indexed by expiry for
//! the sweeps). See `migrations/`.
//!
//! ```no_run
//! # async fn demo() -> chatstream_core::Result<()> {
//! use chatstream_core::{ChatMessage, ConversationStore};
//! use chatstream_postgres::{PgConversationStore, PgStoreConfig};
//!
//! let store = PgConversationStore::connect(&PgStoreConfig::new(
//!     "postgres://postgres@127.0.0.1:5432/test",
//! ))
//! .await?;
//! let thread = store.create_in_org(Some("Hello"), Some("alice"), Some("acme")).await?;
//! store
//!     .append(&thread.id, &[ChatMessage::user("hi"), ChatMessage::assistant("hello")])
//!     .await?;
//! # Ok(()) }
//! ```

mod config;
mod error;
pub mod migrate;
mod responses;
mod sql;
mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use config::{PgStoreConfig, DATABASE_URL_ENV, DEFAULT_TTL};
pub use responses::PgResponseStore;
pub use store::PgConversationStore;
