//! A backend for the Vercel AI SDK's `useChat` (AI SDK 5, `DefaultChatTransport`): the UI
//! message stream protocol v1 ([`AiSdkUiStream`]).
//!
//! | route | answer |
//! |---|---|
//! | `POST /api/ai-sdk/chat` | the answer as a UI message stream: `start`, `text-start`, `text-delta`…, `text-end`, `finish`, `data: [DONE]` (`error` then `[DONE]` on failure), header `x-vercel-ai-ui-message-stream: v1` |
//! | `GET /api/ai-sdk/chat/{chatId}/stream` | the latest answer of that chat again (what `useChat({ resume: true })` asks for), `204` when this gateway knows none; `Last-Event-ID` replays only what followed |
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
//! the assistant message's id in `start`. Which answer is a chat's latest is remembered by
//! this gateway only (the last 10 000 chats), so a reconnect that reaches another instance
//! gets `204` and the client keeps what it has.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

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
use crate::{sse_response, ApiError, ApiJson, ChatstreamState, LastEventId};

/// The path of the chat route.
pub const CHAT_PATH: &str = "/api/ai-sdk/chat";

/// How many chats' latest streams a gateway remembers for reconnects.
pub const REMEMBERED_CHATS: usize = 10_000;

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

/// The latest stream of each chat this gateway answered, oldest forgotten first.
#[derive(Debug, Default)]
struct Latest {
    by_chat: HashMap<String, StreamKey>,
    order: VecDeque<(String, StreamKey)>,
}

#[derive(Debug, Clone)]
struct AiSdkState {
    chat: ChatstreamState,
    latest: Arc<Mutex<Latest>>,
}

impl AiSdkState {
    fn remember(&self, key: &StreamKey) {
        let mut l = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        let chat = key.session_id.to_string();
        l.by_chat.insert(chat.clone(), key.clone());
        l.order.push_back((chat, key.clone()));
        while l.order.len() > REMEMBERED_CHATS {
            if let Some((chat, key)) = l.order.pop_front() {
                if l.by_chat.get(&chat) == Some(&key) {
                    l.by_chat.remove(&chat);
                }
            }
        }
    }

    fn latest(&self, chat: &str) -> Option<StreamKey> {
        let l = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        l.by_chat.get(chat).cloned()
    }
}

/// `POST /api/ai-sdk/chat` and `GET /api/ai-sdk/chat/{chatId}/stream`, with the state's
/// request body limit.
pub fn router(state: ChatstreamState) -> Router {
    let limit = state.body_limit();
    let shared = AiSdkState {
        chat: state,
        latest: Arc::default(),
    };
    Router::new()
        .route(CHAT_PATH, post(chat))
        .route(&format!("{CHAT_PATH}/{{chat_id}}/stream"), get(reconnect))
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
    let events = s.chat.gateway().submit(request).await?;
    s.remember(&key);
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
    let Some(key) = s.latest(&chat_id) else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let events = s.chat.gateway().subscribe(&key, last_event_id.0).await?;
    Ok(ui_stream(&s, events))
}
