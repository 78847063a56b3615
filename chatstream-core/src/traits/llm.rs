//! The LLM backend trait, its events, and tower-style layers around it.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::{ChatRequest, Conversation, FinishReason, Result, Usage};

/// What a backend emits while generating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmEvent {
    /// A piece of answer text.
    TextDelta(String),
    /// The model asks for a tool to be run.
    ToolCall(ToolCall),
    /// Token counts.
    Usage(Usage),
    /// Generation finished.
    Finish(FinishReason),
}

/// A tool call requested by the model.
///
/// Serialized in OpenAI's shape, `{"id", "type": "function", "function": {"name",
/// "arguments"}}`, as it is stored in [`ChatMessage::tool_calls`](crate::ChatMessage).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "WireToolCall", from = "WireToolCall")]
pub struct ToolCall {
    /// Call id, echoed in the tool's answer.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments, as the JSON text the model produced.
    pub arguments: String,
}

#[derive(Serialize, Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: String,
    #[serde(rename = "type", default = "function_kind")]
    kind: String,
    function: WireFunction,
}

#[derive(Serialize, Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

fn function_kind() -> String {
    "function".to_owned()
}

impl From<ToolCall> for WireToolCall {
    fn from(c: ToolCall) -> Self {
        WireToolCall {
            id: c.id,
            kind: function_kind(),
            function: WireFunction {
                name: c.name,
                arguments: c.arguments,
            },
        }
    }
}

impl From<WireToolCall> for ToolCall {
    fn from(w: WireToolCall) -> Self {
        ToolCall {
            id: w.id,
            name: w.function.name,
            arguments: w.function.arguments,
        }
    }
}

/// The events of one generation. An `Err` item ends it.
pub type LlmStream = BoxStream<'static, Result<LlmEvent>>;

/// A model that answers a request, token by token.
#[async_trait]
pub trait LlmBackend: Send + Sync + Debug + 'static {
    /// Starts generating the answer to `request` given the conversation's history.
    async fn stream(&self, request: &ChatRequest, conversation: &Conversation)
        -> Result<LlmStream>;
}

/// A backend as a trait object.
pub type DynLlmBackend = dyn LlmBackend;

#[async_trait]
impl<T: LlmBackend + ?Sized> LlmBackend for Arc<T> {
    async fn stream(
        &self,
        request: &ChatRequest,
        conversation: &Conversation,
    ) -> Result<LlmStream> {
        (**self).stream(request, conversation).await
    }
}

#[async_trait]
impl<T: LlmBackend + ?Sized> LlmBackend for Box<T> {
    async fn stream(
        &self,
        request: &ChatRequest,
        conversation: &Conversation,
    ) -> Result<LlmStream> {
        (**self).stream(request, conversation).await
    }
}

/// Wraps a backend in another, tower-style (`tower_layer::Layer<S>`): system prompt, max
/// tokens, sentence limit, metrics.
///
/// Generic over the inner backend, so layers stack without boxing
/// (`SentenceLimit<SystemPrompt<OpenAiBackend>>`); `B = Arc<DynLlmBackend>` wraps a backend
/// chosen at run time.
pub trait LlmLayer<B> {
    /// The wrapped backend.
    type Backend: LlmBackend;
    /// Wraps `inner`.
    fn layer(&self, inner: B) -> Self::Backend;
}
