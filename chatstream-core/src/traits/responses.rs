//! Stored responses of the OpenAI Responses API: what a client may come back for after the
//! connection that created a response is gone (`GET /v1/responses/{id}`, its input items,
//! `previous_response_id`, cancel, delete).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{ChatMessage, FinishReason, Result, StreamKey, ToolCall, Usage};

/// The lifecycle of a response: `queued` → `in_progress` → one of the final states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    /// Submitted in background mode; no worker has started it yet.
    Queued,
    /// Being generated.
    InProgress,
    /// Finished (`stop`, `tool_calls`).
    Completed,
    /// Cut short: the token limit (`max_output_tokens`) or a content filter.
    Incomplete,
    /// Stopped by a cancel (or a client that went away without `background`).
    Cancelled,
    /// Generation failed.
    Failed,
}

impl ResponseStatus {
    /// OpenAI's spelling (`queued`, `in_progress`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseStatus::Queued => "queued",
            ResponseStatus::InProgress => "in_progress",
            ResponseStatus::Completed => "completed",
            ResponseStatus::Incomplete => "incomplete",
            ResponseStatus::Cancelled => "cancelled",
            ResponseStatus::Failed => "failed",
        }
    }

    /// True for the states a response never leaves.
    pub fn is_final(self) -> bool {
        !matches!(self, ResponseStatus::Queued | ResponseStatus::InProgress)
    }

    /// The final state of a stream that ended with `finish` (and an `Error` event before it
    /// when `failed`).
    pub fn of_finish(finish: &FinishReason, failed: bool) -> Self {
        match finish {
            _ if failed => ResponseStatus::Failed,
            FinishReason::Error => ResponseStatus::Failed,
            FinishReason::Length | FinishReason::ContentFilter => ResponseStatus::Incomplete,
            FinishReason::Cancelled => ResponseStatus::Cancelled,
            FinishReason::Stop | FinishReason::ToolCalls => ResponseStatus::Completed,
        }
    }
}

/// What a response echoes of its request, fixed when it is created: every event and every
/// rendering of the response repeats it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseHeader {
    /// `resp_…`; the stream key is `id/id`.
    pub id: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The model named in the request (or the default).
    pub model: String,
    /// `background: true`.
    #[serde(default)]
    pub background: bool,
    /// `instructions` (a system message for this response only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// `max_output_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// `metadata`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// `previous_response_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    /// `store`.
    #[serde(default)]
    pub store: bool,
    /// `temperature`, echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// `top_p`, echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// `tools`, echoed as sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<serde_json::Value>,
    /// `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl ResponseHeader {
    /// The key of the response's token stream: `id/id`.
    pub fn stream_key(&self) -> StreamKey {
        StreamKey::new(self.id.as_str(), self.id.as_str())
    }
}

/// How a response ended, read from its stream's `End` (and the `Error` before it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseOutcome {
    /// The final state.
    pub status: ResponseStatus,
    /// The whole answer text (the partial text of a cancelled or failed one).
    pub text: String,
    /// Token counts, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The finish reason of the stream's `End`.
    pub finish_reason: FinishReason,
    /// The `Error` event's message, for a failed response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The calls of the client's tools the model made (`function_call` output items), in
    /// order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

/// One stored response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseRecord {
    /// What the response echoes of its request.
    pub header: ResponseHeader,
    /// The principal that created it, when the request was authenticated: only it may read,
    /// cancel or delete the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The input items of this request, as OpenAI's `input_items` list shows them (with
    /// ids).
    #[serde(default)]
    pub input_items: Vec<serde_json::Value>,
    /// The conversation the model saw, without `instructions` (which do not carry over):
    /// the history of `previous_response_id` followed by this request's input. A later
    /// response naming this one continues from here plus this response's answer.
    #[serde(default)]
    pub context: Vec<ChatMessage>,
    /// Set once the response reached a final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<ResponseOutcome>,
}

impl ResponseRecord {
    /// The state the record knows: its outcome's, else `queued` (background) or
    /// `in_progress`.
    pub fn status(&self) -> ResponseStatus {
        match &self.outcome {
            Some(o) => o.status,
            None if self.header.background => ResponseStatus::Queued,
            None => ResponseStatus::InProgress,
        }
    }
}

/// Where stored responses live, shared by every gateway instance of a deployment, so that
/// `GET`, `DELETE`, `input_items`, cancel and resume of a response work on any instance.
///
/// Records expire after the implementation's TTL (OpenAI keeps responses 30 days).
/// Implementations: [`InMemoryResponseStore`](crate::memory::InMemoryResponseStore) for one
/// process, `RedisResponseStore` in `chatstream-redis` for many.
#[async_trait]
pub trait ResponseStore: Send + Sync + Debug + 'static {
    /// Stores a new record (replacing one of the same id).
    async fn create(&self, record: &ResponseRecord) -> Result<()>;
    /// The record of `id`, while it is kept.
    async fn get(&self, id: &str) -> Result<Option<ResponseRecord>>;
    /// Sets the outcome of `id`, only if the record still exists (a deleted response stays
    /// deleted) and has no outcome yet (the first final state wins). True when written.
    async fn finish(&self, id: &str, outcome: &ResponseOutcome) -> Result<bool>;
    /// Deletes `id`; true when it existed.
    async fn delete(&self, id: &str) -> Result<bool>;
}

/// A response store as a trait object.
pub type DynResponseStore = dyn ResponseStore;

macro_rules! forward {
    ($($ptr:ident),*) => {$(
        #[async_trait]
        impl<T: ResponseStore + ?Sized> ResponseStore for $ptr<T> {
            async fn create(&self, record: &ResponseRecord) -> Result<()> {
                (**self).create(record).await
            }
            async fn get(&self, id: &str) -> Result<Option<ResponseRecord>> {
                (**self).get(id).await
            }
            async fn finish(&self, id: &str, outcome: &ResponseOutcome) -> Result<bool> {
                (**self).finish(id, outcome).await
            }
            async fn delete(&self, id: &str) -> Result<bool> {
                (**self).delete(id).await
            }
        }
    )*};
}
forward!(Arc, Box);

#[cfg(test)]
mod tests {
    use super::*;

    fn _obj_safe(_: Box<dyn ResponseStore>) {}

    #[test]
    fn finish_reasons_map_to_final_states() {
        use FinishReason::*;
        let s = |f, failed| ResponseStatus::of_finish(&f, failed);
        assert_eq!(s(Stop, false), ResponseStatus::Completed);
        assert_eq!(s(ToolCalls, false), ResponseStatus::Completed);
        assert_eq!(s(Length, false), ResponseStatus::Incomplete);
        assert_eq!(s(Cancelled, false), ResponseStatus::Cancelled);
        assert_eq!(s(Error, false), ResponseStatus::Failed);
        assert_eq!(s(Stop, true), ResponseStatus::Failed);
        assert!(!ResponseStatus::Queued.is_final());
        assert!(ResponseStatus::Cancelled.is_final());
    }
}
