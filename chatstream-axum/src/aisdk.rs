//! A backend for the Vercel AI SDK's `useChat` (AI SDK 5, `DefaultChatTransport`): the UI
//! message stream protocol v1 ([`AiSdkUiStream`]).
//!
//! | route | answer |
//! |---|---|
//! | `POST /api/ai-sdk/chat` | the answer as a UI message stream: `start`, `text-start`, `text-delta`…, `text-end`, `finish`, `data: [DONE]` (`error` then `[DONE]` on failure), header `x-vercel-ai-ui-message-stream: v1` |
//! | `GET /api/ai-sdk/chat/{chatId}/stream` | the latest answer of that chat again (what `useChat({ resume: true })` asks for), `204` when the stream registry knows none; `Last-Event-ID` replays only what followed |
//! | `POST /api/ai-sdk/chat/{chatId}/stop` | stops the chat's latest answer from any instance ([`crate::stop`]): the stop endpoint the AI SDK's docs pair with resumable streams, since `stop()` only closes the connection |
//!
//! `useChat` posts to `/api/chat` by default, which the quickstart uses for its own body, so
//! point the transport here: `new DefaultChatTransport({ api: "/api/ai-sdk/chat" })`. Its
//! reconnect URL, `${api}/${chatId}/stream`, is the second route.
//!
//! The request body is what `DefaultChatTransport` sends: `{"id": chatId, "messages":
//! [UIMessage], "trigger": "submit-message" | "regenerate-message", "messageId"?}` plus any
//! extra `body` fields, which are ignored. A UIMessage is `{"id", "role", "parts":
//! [{"type": "text", "text"}, …]}`; text parts are joined, other parts (files, tools,
//! reasoning) are skipped, and AI SDK 4's `content` string is read when there are no parts.
//!
//! Choices: the client's messages are the whole conversation (it edits and regenerates
//! them), so all of them are passed on and no stored history is added. Both triggers are
//! answered alike, from the messages sent. The stream key is `chatId/<new uuid>`; the uuid is
//! the assistant message's id in `start`. Which answer is a chat's latest is kept in the
//! state's [`StreamRegistry`](chatstream_core::StreamRegistry): in this process by default,
//! in Redis (`RedisStreamRegistry`) for gateways behind a load balancer, so that a
//! reconnect or a stop reaching another instance finds it.

use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use chatstream_core::wire::aisdk::{AiSdkUiStream, HEADER};
use chatstream_core::{ChatMessage, ChatRequest, ClientStream, Role, StreamKey};
use serde::Deserialize;
use serde_json::Value;

use crate::json::BodyLimit;
use crate::state::check_path_id;
use crate::stop::{stop_stream, Stopped};
use crate::{sse_response, ApiError, ApiJson, ChatstreamState, LastEventId};

/// The path of the chat route.
pub const CHAT_PATH: &str = "/api/ai-sdk/chat";

/// The body `DefaultChatTransport` posts.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct UiChatRequest {
    /// The chat id; a new one is made when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// The whole conversation.
    pub messages: Vec<UiMessage>,
    /// `submit-message` or `regenerate-message`.
    #[serde(default)]
    pub trigger: Option<String>,
    /// The message to regenerate.
    #[serde(default, rename = "messageId")]
    pub message_id: Option<String>,
}

/// One `UIMessage`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct UiMessage {
    /// The message id.
    #[serde(default)]
    pub id: Option<String>,
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The parts.
    #[serde(default)]
    pub parts: Vec<UiPart>,
    /// AI SDK 4's text content, read when there are no parts.
    #[serde(default)]
    pub content: Option<Value>,
}

/// One part of a `UIMessage`; only `text` parts are read.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct UiPart {
    /// `text`, `reasoning`, `file`, `tool-…`, `step-start`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

impl UiMessage {
    /// The text of the message: its text parts joined, else its `content` string.
    pub fn text(&self) -> String {
        if self.parts.is_empty() {
            return match &self.content {
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            };
        }
        self.parts
            .iter()
            .filter(|p| p.kind == "text")
            .filter_map(|p| p.text.as_deref())
            .collect()
    }
}

/// The chatstream messages of a conversation: messages without text are skipped; at least
/// one user message with text is required.
pub fn chat_messages(messages: &[UiMessage]) -> Result<Vec<ChatMessage>, ApiError> {
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        let role = match m.role.as_str() {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(ApiError::Invalid {
                    field: "messages",
                    reason: format!("unknown role {other:?}"),
                })
            }
        };
        let text = m.text();
        if !text.is_empty() {
            out.push(ChatMessage::new(role, text));
        }
    }
    if !out.iter().any(|m| m.role == Role::User) {
        return Err(ApiError::Invalid {
            field: "messages",
            reason: "no user message with text".into(),
        });
    }
    Ok(out)
}

#[derive(Debug, Clone)]
struct AiSdkState {
    chat: ChatstreamState,
}

/// `POST /api/ai-sdk/chat` and `GET /api/ai-sdk/chat/{chatId}/stream`, with the state's
/// request body limit.
pub fn router(state: ChatstreamState) -> Router {
    let limit = state.body_limit();
    let shared = AiSdkState { chat: state };
    Router::new()
        .route(CHAT_PATH, post(chat))
        .route(&format!("{CHAT_PATH}/{{chat_id}}/stream"), get(reconnect))
        .route(&format!("{CHAT_PATH}/{{chat_id}}/stop"), post(stop))
        .layer(DefaultBodyLimit::max(limit))
        .layer(Extension(BodyLimit(limit)))
        .with_state(shared)
}

fn ui_stream(s: &AiSdkState, events: ClientStream) -> Response {
    let mut response = sse_response(events, &AiSdkUiStream, s.chat.sse());
    response.headers_mut().insert(
        HeaderName::from_static(HEADER.0),
        HeaderValue::from_static(HEADER.1),
    );
    response
}

/// `POST /api/ai-sdk/chat`.
async fn chat(
    State(s): State<AiSdkState>,
    ApiJson(body): ApiJson<UiChatRequest>,
) -> Result<Response, ApiError> {
    let chat_id = match body.id.filter(|id| !id.is_empty()) {
        Some(id) => {
            check_path_id("id", &id)?;
            id
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let messages = chat_messages(&body.messages)?;
    let message_id = uuid::Uuid::new_v4().to_string();
    let key = StreamKey::new(chat_id.as_str(), message_id.as_str());
    let request = ChatRequest {
        key: key.clone(),
        messages,
        model: None,
        user: None,
        max_tokens: None,
        metadata: Default::default(),
    };
    // The client holds the history: nothing is loaded or saved.
    let request = request.stateless();
    s.chat.record_stream(&key, None).await?;
    let events = s.chat.gateway().submit(request).await?;
    tracing::debug!(%chat_id, %message_id, trigger = ?body.trigger, "AI SDK chat queued");
    Ok(ui_stream(&s, events))
}

/// `GET /api/ai-sdk/chat/{chatId}/stream`.
async fn reconnect(
    State(s): State<AiSdkState>,
    path: Result<Path<String>, PathRejection>,
    last_event_id: LastEventId,
) -> Result<Response, ApiError> {
    let Path(chat_id) = path.map_err(|e| ApiError::BadPath(e.body_text()))?;
    check_path_id("chatId", &chat_id)?;
    let Some(key) = s.chat.stream_registry().latest(&chat_id).await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let events = s.chat.gateway().subscribe(&key, last_event_id.0).await?;
    Ok(ui_stream(&s, events))
}

/// `POST /api/ai-sdk/chat/{chatId}/stop`: stops the chat's latest answer, from any
/// instance (the dedicated stop endpoint the AI SDK's docs pair with `resume: true`, since
/// `useChat`'s `stop()` only closes the client's connection): `202 {"status":"stopping"}`,
/// `200 {"status":"ended","finish_reason"}`, `404` when the chat has no known answer (see
/// [`crate::stop`]).
async fn stop(
    State(s): State<AiSdkState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Stopped, ApiError> {
    let Path(chat_id) = path.map_err(|e| ApiError::BadPath(e.body_text()))?;
    check_path_id("chatId", &chat_id)?;
    let Some(key) = s.chat.stream_registry().latest(&chat_id).await? else {
        return Err(ApiError::Missing("stream"));
    };
    stop_stream(&s.chat, &key).await
}
