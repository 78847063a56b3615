//! The data that flows through chatstream: stream keys, requests, envelopes, events.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ToolCall;

/// Identifies one answer stream: the chat session plus the message being answered.
///
/// Every envelope carries it; it is the routing key of every broker topology.
/// Both parts are `Arc<str>` so that cloning a key (once per envelope) does not allocate.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamKey {
    /// The chat session (seed 000 `sessionId`, seed 004 `channel`, seed 003 `uid`).
    pub session_id: Arc<str>,
    /// The message being answered (seed 000 `messageId`, seed 004 `message_id`).
    pub message_id: Arc<str>,
}

impl StreamKey {
    /// Builds a key from its two parts.
    pub fn new(session_id: impl Into<Arc<str>>, message_id: impl Into<Arc<str>>) -> Self {
        Self {
            session_id: session_id.into(),
            message_id: message_id.into(),
        }
    }
}

impl fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamKey({}/{})", self.session_id, self.message_id)
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.session_id, self.message_id)
    }
}

/// Who said a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the model.
    System,
    /// The person.
    User,
    /// The model.
    Assistant,
    /// The result of a tool call.
    Tool,
}

impl Role {
    /// The OpenAI name of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One message of a conversation.
///
/// Tool calling adds two optional fields, both left out of the JSON when unset, so stored
/// histories and wire bodies without tools are unchanged: an assistant message that asks
/// for tools carries [`ChatMessage::tool_calls`] (in OpenAI's shape,
/// `{"id", "type": "function", "function": {"name", "arguments"}}`), and the answer of a tool
/// is a [`Role::Tool`] message naming its call in [`ChatMessage::tool_call_id`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
    /// The call a [`Role::Tool`] message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The tools an assistant message asks for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_call_id: None,
            tool_calls: Vec::new(),
        }
    }
    /// An assistant message asking for `calls` (with the text said before them, often
    /// empty).
    pub fn assistant_tool_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Self {
            tool_calls: calls,
            ..Self::new(Role::Assistant, content)
        }
    }
    /// The result of the tool call `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(call_id.into()),
            ..Self::new(Role::Tool, content)
        }
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
}

/// A request for an answer. Every seed's request format decodes into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Where the answer goes.
    pub key: StreamKey,
    /// The new messages of this turn (usually one user message). History comes from the
    /// [`ConversationStore`](crate::ConversationStore).
    pub messages: Vec<ChatMessage>,
    /// Model asked for, when the client named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The user (seed 003 `username`, seed 002 principal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Token limit asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Free-form extra fields: reply-to destination, conversation id, dialect hints.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl ChatRequest {
    /// A request with one user message and nothing else set.
    pub fn new(key: StreamKey, text: impl Into<String>) -> Self {
        Self {
            key,
            messages: vec![ChatMessage::user(text)],
            model: None,
            user: None,
            max_tokens: None,
            metadata: BTreeMap::new(),
        }
    }

    /// The conversation this request belongs to: `metadata["conversation"]` when set,
    /// otherwise the session id.
    pub fn conversation_id(&self) -> &str {
        self.metadata
            .get(meta::CONVERSATION)
            .map(String::as_str)
            .unwrap_or(&self.key.session_id)
    }

    /// True when the client holds the history (see [`meta::STATELESS`]).
    pub fn is_stateless(&self) -> bool {
        self.metadata
            .get(meta::STATELESS)
            .is_some_and(|v| v == "true")
    }

    /// Marks the request as carrying its whole conversation (see [`meta::STATELESS`]).
    pub fn stateless(mut self) -> Self {
        self.metadata
            .insert(meta::STATELESS.to_owned(), "true".to_owned());
        self
    }

    /// The text of the last user message, or an empty string.
    pub fn last_user_text(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .unwrap_or("")
    }
}

/// Well-known keys of [`ChatRequest::metadata`].
pub mod meta {
    /// Conversation (thread) id, when it differs from the session id.
    pub const CONVERSATION: &str = "conversation";
    /// The destination that wants this request's tokens (a gateway instance's queue).
    pub const REPLY_TO: &str = "reply_to";
    /// The principal that submitted the request (per-stream authorization).
    pub const PRINCIPAL: &str = "principal";
    /// Set to `"true"` when the client sends the whole conversation with each request (the
    /// OpenAI API, seed 003, the AI SDK): the worker then neither loads nor saves history.
    pub const STATELESS: &str = "stateless";
    /// The tools offered to the model, as a JSON array of
    /// [`ToolDefinition`](crate::backend::ToolDefinition)s, read by backends that can call
    /// tools (the OpenAI backend sends them as `tools`). On a request from a client (the
    /// OpenAI and Responses APIs' `tools`) they are the client's tools: the worker publishes
    /// the model's calls of them as
    /// [`StreamEvent::ToolCall`](crate::StreamEvent::ToolCall)s instead of running them.
    /// [`ToolLoopLayer`](crate::backend::ToolLoopLayer) adds the worker's own tools to the
    /// request it passes inward.
    pub const TOOLS: &str = "tools";
    /// When the broker took the request in, in milliseconds since the Unix epoch: set by
    /// a request source whose broker gives the time (RabbitMQ, Redis Streams), read by the
    /// worker for its queue wait metric.
    pub const ENQUEUED_AT_MS: &str = "enqueued_at_ms";
    /// The W3C `traceparent` of the span that submitted the request (see
    /// [`trace`](crate::trace)); brokers whose body format has no room for metadata carry
    /// it in a message header of the same name.
    pub const TRACEPARENT: &str = "traceparent";
    /// The W3C `tracestate` that goes with [`TRACEPARENT`].
    pub const TRACESTATE: &str = "tracestate";
}

/// Why generation stopped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model finished its answer.
    Stop,
    /// The token limit was reached.
    Length,
    /// The model asked for tools.
    ToolCalls,
    /// A content filter stopped the answer.
    ContentFilter,
    /// A client or an operator cancelled the stream.
    Cancelled,
    /// Generation failed; an `Error` event precedes the `End`.
    Error,
}

impl FinishReason {
    /// The OpenAI spelling (`stop`, `length`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::Cancelled => "cancelled",
            FinishReason::Error => "error",
        }
    }
}

/// Token counts reported by a backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Both.
    pub total_tokens: u32,
}

/// A progress status (seed 004's `started`, `processing`, `responding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The worker took the request.
    Started,
    /// A tool is running.
    Processing,
    /// The model started answering.
    Responding,
}

impl Status {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Started => "started",
            Status::Processing => "processing",
            Status::Responding => "responding",
        }
    }
}

/// What one envelope says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// Progress.
    Status {
        /// Which stage.
        status: Status,
        /// The conversation (thread) id the worker answers in, when known (seed 004's
        /// `thread_id`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conversation_id: Option<String>,
        /// Free text, e.g. which tool is running.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A piece of the answer.
    Token {
        /// The text; may be several model tokens when coalesced.
        text: String,
    },
    /// The last envelope of a stream.
    End {
        /// Why it ended.
        finish_reason: FinishReason,
        /// Token counts, when the backend reported them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
    },
    /// Generation failed; an `End` with [`FinishReason::Error`] follows.
    Error {
        /// What went wrong, fit for the end user.
        message: String,
    },
    /// The model asks the client to run one of the tools the request offered in
    /// [`meta::TOOLS`]: the client runs it and sends the result in its next request. The
    /// answer then ends with [`FinishReason::ToolCalls`]. Calls of the worker's own tools
    /// ([`ToolLoopLayer`](crate::backend::ToolLoopLayer)) are not published as calls: the
    /// worker runs them and shows a [`Status::Processing`].
    ToolCall {
        /// The call, whole: its id, the tool's name and the JSON text of its arguments.
        call: ToolCall,
    },
}

impl StreamEvent {
    /// A token event.
    pub fn token(text: impl Into<String>) -> Self {
        StreamEvent::Token { text: text.into() }
    }
    /// A status event with nothing else set.
    pub fn status(status: Status) -> Self {
        StreamEvent::Status {
            status,
            conversation_id: None,
            detail: None,
        }
    }
    /// True for `End`.
    pub fn is_end(&self) -> bool {
        matches!(self, StreamEvent::End { .. })
    }
}

/// One unit on the token bus: an event of one stream, numbered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEnvelope {
    /// Which stream.
    pub key: StreamKey,
    /// Delivery attempt of the request that produced it (1 on first delivery). A higher
    /// attempt means a new generation after a redelivery: the client must reset.
    pub attempt: u32,
    /// Position in the stream: `n` for the n-th envelope (from 0) of the first attempt, and
    /// [`TokenEnvelope::seq_base`]`(attempt) + n` for later attempts, so that ids stay unique
    /// and increasing across a redelivery and `Last-Event-ID` keeps its meaning.
    pub seq: u64,
    /// What it says.
    pub event: StreamEvent,
}

/// The envelopes of a stream's kept log that follow `after_seq` (all of them for `None`),
/// in order; resumed at or after the End of an `ended` stream, the End again, so the
/// subscriber learns the stream is over instead of waiting. The broker's log and a gateway
/// hub's history both replay this way.
pub(crate) fn replay_after(
    log: &std::collections::VecDeque<Arc<TokenEnvelope>>,
    ended: bool,
    after_seq: Option<u64>,
) -> std::collections::VecDeque<Arc<TokenEnvelope>> {
    let mut replay: std::collections::VecDeque<_> = log
        .iter()
        .filter(|e| after_seq.is_none_or(|a| e.seq > a))
        .cloned()
        .collect();
    if replay.is_empty() && ended {
        replay.extend(log.back().cloned());
    }
    replay
}

impl TokenEnvelope {
    /// The first `seq` of an attempt: `(attempt - 1) << 32`. Attempt 1 starts at 0.
    pub fn seq_base(attempt: u32) -> u64 {
        u64::from(attempt.saturating_sub(1)) << 32
    }

    /// The attempt a `seq` belongs to (inverse of [`TokenEnvelope::seq_base`]).
    pub fn attempt_of_seq(seq: u64) -> u32 {
        u32::try_from(seq >> 32).unwrap_or(u32::MAX - 1) + 1
    }

    /// Builds an envelope.
    pub fn new(key: StreamKey, attempt: u32, seq: u64, event: StreamEvent) -> Self {
        Self {
            key,
            attempt,
            seq,
            event,
        }
    }
}
