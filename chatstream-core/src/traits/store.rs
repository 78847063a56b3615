//! Conversation history.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{ChatMessage, Result};

/// What is known about a conversation besides its messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationMeta {
    /// Conversation (thread) id.
    pub id: String,
    /// Title (seed 002 threads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The principal owning it (seed 002: a user sees only its own threads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The organisation it belongs to (seed 002: every user of an organisation sees its
    /// threads, no one else does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Last read or write, milliseconds since the Unix epoch.
    pub last_activity_ms: u64,
    /// Number of messages stored.
    pub message_count: u64,
}

/// A conversation: metadata plus history, oldest message first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// Metadata.
    pub meta: ConversationMeta,
    /// History.
    pub messages: Vec<ChatMessage>,
}

impl Conversation {
    /// An empty conversation that is not stored anywhere (for backends called directly).
    pub fn empty(id: impl Into<String>) -> Self {
        Self {
            meta: ConversationMeta {
                id: id.into(),
                title: None,
                owner: None,
                org: None,
                created_at_ms: 0,
                last_activity_ms: 0,
                message_count: 0,
            },
            messages: Vec::new(),
        }
    }
}

/// Figures about a store (seed 004 `--show-thread-stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Conversations held.
    pub conversations: u64,
    /// Messages held, all conversations together.
    pub messages: u64,
    /// Conversations by age of last activity: < 1 day, < 7 days, < 30 days, older.
    pub age_buckets: [u64; 4],
    /// Oldest creation time held, ms since the epoch.
    pub oldest_ms: Option<u64>,
    /// Newest creation time held, ms since the epoch.
    pub newest_ms: Option<u64>,
    /// Bytes used, where the store can tell.
    pub memory_bytes: Option<u64>,
}

/// Where conversations live. Every read and write slides the conversation's expiry.
#[async_trait]
pub trait ConversationStore: Send + Sync + Debug + 'static {
    /// The conversation mapped to a channel (seed 004), created when there is none or it
    /// expired. Refreshes the mapping's expiry.
    async fn conversation_for_channel(&self, channel: &str) -> Result<String>;
    /// Creates a conversation with a fresh id.
    async fn create(&self, title: Option<&str>, owner: Option<&str>) -> Result<ConversationMeta>;
    /// Creates a conversation with a fresh id, owned by `owner` within organisation `org`.
    /// `org: None` is [`create`](Self::create).
    async fn create_in_org(
        &self,
        title: Option<&str>,
        owner: Option<&str>,
        org: Option<&str>,
    ) -> Result<ConversationMeta>;
    /// Reads a conversation, `None` when absent or expired.
    async fn get(&self, id: &str) -> Result<Option<Conversation>>;
    /// Appends messages atomically, creating the conversation when absent.
    async fn append(&self, id: &str, messages: &[ChatMessage]) -> Result<()>;
    /// Conversations of an owner, newest activity first.
    async fn list(&self, owner: &str) -> Result<Vec<ConversationMeta>>;
    /// Conversations of an organisation, newest activity first.
    async fn list_org(&self, org: &str) -> Result<Vec<ConversationMeta>>;
    /// Figures about the store.
    async fn stats(&self) -> Result<StoreStats>;
    /// Removes every conversation; returns how many.
    async fn clear_all(&self) -> Result<u64>;
    /// Removes conversations whose last activity is older than `age`; returns how many.
    async fn clear_older_than(&self, age: Duration) -> Result<u64>;
}

/// A store as a trait object.
pub type DynConversationStore = dyn ConversationStore;

#[async_trait]
impl<T: ConversationStore + ?Sized> ConversationStore for Arc<T> {
    async fn conversation_for_channel(&self, channel: &str) -> Result<String> {
        (**self).conversation_for_channel(channel).await
    }
    async fn create(&self, title: Option<&str>, owner: Option<&str>) -> Result<ConversationMeta> {
        (**self).create(title, owner).await
    }
    async fn create_in_org(
        &self,
        title: Option<&str>,
        owner: Option<&str>,
        org: Option<&str>,
    ) -> Result<ConversationMeta> {
        (**self).create_in_org(title, owner, org).await
    }
    async fn get(&self, id: &str) -> Result<Option<Conversation>> {
        (**self).get(id).await
    }
    async fn append(&self, id: &str, messages: &[ChatMessage]) -> Result<()> {
        (**self).append(id, messages).await
    }
    async fn list(&self, owner: &str) -> Result<Vec<ConversationMeta>> {
        (**self).list(owner).await
    }
    async fn list_org(&self, org: &str) -> Result<Vec<ConversationMeta>> {
        (**self).list_org(org).await
    }
    async fn stats(&self) -> Result<StoreStats> {
        (**self).stats().await
    }
    async fn clear_all(&self) -> Result<u64> {
        (**self).clear_all().await
    }
    async fn clear_older_than(&self, age: Duration) -> Result<u64> {
        (**self).clear_older_than(age).await
    }
}
