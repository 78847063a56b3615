//! The JSON bodies of the seed 002 API, and loading a thread on behalf of a user.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatstream_core::wire::seed002::iso_timestamp;
use chatstream_core::{ChatMessage, Conversation, ConversationMeta, DynConversationStore};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::{ApiError, ChatstreamState};

/// Longest accepted thread title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;

/// The title of a thread created without one.
pub const DEFAULT_TITLE: &str = "New Chat";

/// The body of `POST /chat/threads`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateThread {
    /// The title; [`DEFAULT_TITLE`] when absent or blank.
    #[serde(default)]
    pub title: Option<String>,
}

/// The body of both `POST …/messages` routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMessage {
    /// What the user says; must not be blank.
    pub content: String,
}

/// A thread as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadJson {
    /// Thread id.
    pub id: String,
    /// Title.
    pub title: Option<String>,
    /// The owning user.
    pub user_id: Option<String>,
    /// The organisation the thread belongs to, when the user acts for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// Creation time, ISO 8601 (`toISOString`).
    pub created_at: String,
    /// Last activity, ISO 8601.
    pub updated_at: String,
    /// Messages stored (user and assistant).
    pub message_count: u64,
}

impl From<&ConversationMeta> for ThreadJson {
    fn from(m: &ConversationMeta) -> Self {
        Self {
            id: m.id.clone(),
            title: m.title.clone(),
            user_id: m.owner.clone(),
            org_id: m.org.clone(),
            created_at: iso_ms(m.created_at_ms),
            updated_at: iso_ms(m.last_activity_ms),
            message_count: m.message_count,
        }
    }
}

/// The answer of `POST /chat/threads`: `{"thread": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadBody {
    /// The new thread.
    pub thread: ThreadJson,
}

/// The answer of `GET /chat/threads`: `{"threads": […]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadsBody {
    /// The caller's threads, newest activity first.
    pub threads: Vec<ThreadJson>,
}

/// The answer of `GET /chat/threads/{threadId}/messages`: `{"messages": […]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagesBody {
    /// The thread's messages, oldest first.
    pub messages: Vec<MessageJson>,
}

/// The answer of `POST /chat/threads/{threadId}/messages`: `{"response": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyBody {
    /// The whole answer.
    pub response: String,
}

/// A message as the API shows it. The store keeps role and content only, so messages
/// read back have no `id` or `createdAt`; the `message_saved` event, made when the
/// message arrives, has both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageJson {
    /// Message id (the stream's message id), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The thread.
    pub thread_id: String,
    /// `user`, `assistant`, `system` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
    /// When it arrived, ISO 8601, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

impl MessageJson {
    /// A stored message of `thread_id`.
    pub fn stored(thread_id: &str, m: &ChatMessage) -> Self {
        Self {
            id: None,
            thread_id: thread_id.to_owned(),
            role: m.role.as_str().to_owned(),
            content: m.content.clone(),
            created_at: None,
        }
    }
}

/// `ms` since the epoch as `toISOString` writes it.
pub(crate) fn iso_ms(ms: u64) -> String {
    iso_timestamp(UNIX_EPOCH + Duration::from_millis(ms))
}

/// Now as `toISOString` writes it.
pub(crate) fn iso_now() -> String {
    iso_timestamp(SystemTime::now())
}

/// The state's store, or a 500 when the deployment forgot it.
pub(crate) fn store(state: &ChatstreamState) -> Result<&Arc<DynConversationStore>, ApiError> {
    state.store().ok_or_else(|| {
        ApiError::Misconfigured("the seed 002 routes need a conversation store".into())
    })
}

/// Whether `user` may read and write the thread of `meta`: for a user acting for an
/// organisation, any thread of that organisation; for a user in none, its own threads
/// outside every organisation.
pub fn may_access(user: &Principal, meta: &ConversationMeta) -> bool {
    match user.org() {
        Some(org) => meta.org.as_deref() == Some(org),
        None => meta.org.is_none() && meta.owner.as_deref() == Some(user.as_str()),
    }
}

/// The thread `id` when `user` may access it ([`may_access`]); 404 when it does not exist
/// or is someone else's (the same answer, so that thread ids do not leak), logged at `warn`
/// in the second case.
pub(crate) async fn owned_thread(
    state: &ChatstreamState,
    user: &Principal,
    id: &str,
) -> Result<Conversation, ApiError> {
    let conversation = store(state)?.get(id).await?;
    match conversation {
        Some(c) if may_access(user, &c.meta) => Ok(c),
        Some(_) => {
            tracing::warn!(principal = %user, thread = id, "thread access refused: not the owner");
            Err(ApiError::Missing("thread"))
        }
        None => Err(ApiError::Missing("thread")),
    }
}

/// Refuses blank text.
pub(crate) fn check_content(content: &str) -> Result<(), ApiError> {
    if content.trim().is_empty() {
        return Err(ApiError::Invalid {
            field: "content",
            reason: "must not be empty".into(),
        });
    }
    Ok(())
}

/// The title to store: trimmed, [`DEFAULT_TITLE`] when blank, refused when too long.
pub(crate) fn title(body: &CreateThread) -> Result<String, ApiError> {
    let title = body.title.as_deref().map(str::trim).unwrap_or_default();
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(ApiError::Invalid {
            field: "title",
            reason: format!("must be at most {MAX_TITLE_CHARS} characters"),
        });
    }
    Ok(if title.is_empty() {
        DEFAULT_TITLE.to_owned()
    } else {
        title.to_owned()
    })
}
