//! The OpenAI-compatible mode: chat completions answered like OpenAI itself, so the official
//! SDKs (and anything built on them) use chatstream unchanged.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/chat/completions`, `"stream": true` | `chat.completion.chunk` SSE ([`OpenAiChunks`]) ending with `data: [DONE]`; a usage chunk first when `stream_options.include_usage` |
//! | `POST /v1/chat/completions`, otherwise | one `chat.completion` object, `usage` from the end of the stream |
//! | `GET /v1/chat/completions/{id}/stream` | the chunk stream of completion `id` again; with `Last-Event-ID` (or `?lastEventId=`) only what followed; `?model=` and `?include_usage=true` as in the request |
//! | `POST /v1/chat/completions/{id}/cancel` | stops completion `id` from any instance ([`crate::stop`]); its stream ends with `finish_reason: "cancelled"` |
//! | `GET /v1/models`, `GET /v1/models/{model}` | the configured models |
//!
//! Every answer carries the completion id in [`STREAM_ID_HEADER`]. The id is
//! `chatcmpl-<uuid v7>`; it is also the stream's key (`id/id`) and its `created` time, so a
//! resumed stream repeats the same `id`, `created` and `model` in its chunks. A resumed stream
//! starts with a role chunk (`"delta":{"role":"assistant","content":""}`) again, which adds no
//! text.
//!
//! Choices where OpenAI's contract does not fit a relay:
//! - the request's `model` is echoed in the answer; it is passed on to the worker only when
//!   it is one of [`OpenAiRouteConfig::models`], otherwise the worker uses its own model
//!   (clients often hard-code `gpt-4o`). With [`OpenAiRouteConfig::reject_unknown_models`]
//!   an unlisted model is a 404 `model_not_found` instead. No `model`: the default model.
//! - all of the request's messages go to the worker; the stream key is new for each request,
//!   so no stored history is added to them.
//! - unknown fields are ignored. Function `tools` are offered to the model (through the
//!   broker, to whichever worker answers): its calls come back as `tool_calls` (in the
//!   stream, each call whole in one delta; finish reason `tool_calls`), and the client's
//!   next request carries the assistant message with those `tool_calls` and a `tool`
//!   message per result, as with OpenAI. Legacy `functions` are ignored; `tool_choice`
//!   other than `none`/`auto`, tools other than functions and `n` other than 1 are refused
//!   (400), as are content parts other than text.
//! - the body is read as JSON whatever its `Content-Type`, as OpenAI does.
//! - errors are OpenAI-shaped ([`OpenAiError`]); a failure after streaming began is an
//!   `{"error": …}` chunk then `[DONE]`. Unknown paths and wrong methods get the
//!   application's fallback (axum cannot merge two routers that both have one).

mod error;
mod models;
mod request;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chatstream_core::wire::openai::{completion_json, ChunkMeta, OpenAiChunks, OpenAiOptions};
use chatstream_core::{meta, ChatRequest, ClientEvent, ClientStream, FinishReason, StreamEvent};
use chatstream_core::{StreamKey, ToolCall, Usage};
use futures::StreamExt;
use serde::Deserialize;

pub use error::OpenAiError;
pub use models::{ModelList, ModelObject};
pub use request::StreamOptions;
pub use request::{chat_messages, CompletionRequest, Content, ContentPart, RequestMessage};

use crate::state::check_path_id;
use crate::stop::{stop_stream, Stopped};
use crate::{sse_response, ApiError, ChatstreamState, LastEventId};

/// The response header carrying the completion id, which names the resumable stream.
pub const STREAM_ID_HEADER: &str = "x-chatstream-stream-id";

/// How the OpenAI-compatible routes behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiRouteConfig {
    /// Models listed by `GET /v1/models` and passed on to the worker when asked for by
    /// name. Empty: only [`default_model`](Self::default_model) is listed, and no model name
    /// is passed on.
    pub models: Vec<String>,
    /// The model named in answers to requests without `model`.
    pub default_model: String,
    /// `owned_by` of the listed models.
    pub owned_by: String,
    /// Answer 404 `model_not_found` for a model not in the list.
    pub reject_unknown_models: bool,
    /// The path the routes live under (default `/v1`); the router's routes are
    /// `{base_path}/chat/completions`, …, so merge it rather than nest it.
    pub base_path: String,
    /// Largest request body in bytes; the state's body limit when `None`.
    pub body_limit: Option<usize>,
}

impl Default for OpenAiRouteConfig {
    fn default() -> Self {
        Self {
            models: Vec::new(),
            default_model: "chatstream".to_owned(),
            owned_by: "chatstream".to_owned(),
            reject_unknown_models: false,
            base_path: "/v1".to_owned(),
            body_limit: None,
        }
    }
}

impl OpenAiRouteConfig {
    /// Defaults, with `model` as the default model and the one listed.
    pub fn for_model(model: impl Into<String>) -> Self {
        let model = model.into();
        Self {
            models: vec![model.clone()],
            default_model: model,
            ..Self::default()
        }
    }

    /// The models `GET /v1/models` lists.
    pub fn listed_models(&self) -> Vec<String> {
        if self.models.is_empty() {
            vec![self.default_model.clone()]
        } else {
            self.models.clone()
        }
    }
}

#[derive(Debug, Clone)]
struct OpenAiState {
    chat: ChatstreamState,
    config: Arc<OpenAiRouteConfig>,
    /// When the router was built (the models' `created`).
    created: u64,
    body_limit: usize,
}

/// The OpenAI-compatible routes (see the module docs), under `config.base_path`.
pub fn router(state: ChatstreamState, config: OpenAiRouteConfig) -> Router {
    let base = config.base_path.trim_end_matches('/').to_owned();
    let body_limit = config.body_limit.unwrap_or(state.body_limit());
    let shared = OpenAiState {
        chat: state,
        config: Arc::new(config),
        created: unix_now(),
        body_limit,
    };
    Router::new()
        .route(&format!("{base}/chat/completions"), post(create))
        .route(
            &format!("{base}/chat/completions/{{id}}/stream"),
            get(resume),
        )
        .route(
            &format!("{base}/chat/completions/{{id}}/cancel"),
            post(cancel),
        )
        .route(&format!("{base}/models"), get(models::list))
        .route(&format!("{base}/models/{{*model}}"), get(models::retrieve))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(shared)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The `created` of completion `id`: the time in its uuid v7, else now.
fn created_of(id: &str) -> u64 {
    id.strip_prefix("chatcmpl-")
        .and_then(|u| uuid::Uuid::parse_str(u).ok())
        .and_then(|u| u.get_timestamp())
        .map(|t| t.to_unix().0)
        .unwrap_or_else(unix_now)
}

/// `POST /v1/chat/completions`.
async fn create(
    State(s): State<OpenAiState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let body = body.map_err(|e| OpenAiError::body_rejection(&e, s.body_limit))?;
    let req: CompletionRequest =
        serde_json::from_slice(&body).map_err(|e| OpenAiError::bad_json(&e))?;
    req.check_supported()?;
    let messages = chat_messages(&req.messages)?;
    let model = req
        .model
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| s.config.default_model.clone());
    let listed = s.config.models.contains(&model);
    if s.config.reject_unknown_models && !s.config.listed_models().contains(&model) {
        return Err(OpenAiError::model_not_found(&model));
    }
    let id = format!("chatcmpl-{}", uuid::Uuid::now_v7());
    let mut request = ChatRequest {
        key: StreamKey::new(id.as_str(), id.as_str()),
        messages,
        model: listed.then(|| model.clone()),
        user: req.user.clone().filter(|u| !u.is_empty()),
        max_tokens: req.token_limit(),
        metadata: Default::default(),
    }
    .stateless();
    if let Some(tools) = req.tool_definitions()? {
        request.metadata.insert(meta::TOOLS.to_owned(), tools);
    }
    s.chat.record_stream(&request.key, None).await?;
    let events = s.chat.gateway().submit(request).await?;
    tracing::debug!(%id, %model, stream = req.stream == Some(true), "chat completion queued");
    let meta = ChunkMeta {
        created: created_of(&id),
        id,
        model,
    };
    let mut response = if req.stream == Some(true) {
        chunk_stream(&s, events, &meta, req.include_usage())
    } else {
        let (text, calls, finish, usage) = collect(events).await?;
        let json = completion_json(&meta, &text, &calls, &finish, usage);
        ([(header::CONTENT_TYPE, "application/json")], json).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&meta.id) {
        response.headers_mut().insert(STREAM_ID_HEADER, v);
    }
    Ok(response)
}

fn chunk_stream(
    s: &OpenAiState,
    events: ClientStream,
    meta: &ChunkMeta,
    include_usage: bool,
) -> Response {
    let transport = OpenAiChunks::new(OpenAiOptions {
        id: Some(meta.id.clone()),
        model: meta.model.clone(),
        created: Some(meta.created),
        include_usage,
    });
    sse_response(events, &transport, s.chat.sse())
}

/// A whole answer: its text, tool calls, finish reason and usage.
type Whole = (String, Vec<ToolCall>, FinishReason, Option<Usage>);

/// Reads a stream to its end. A reset (redelivery) starts the answer over; an `Error`
/// event or a fault is an error.
async fn collect(mut events: ClientStream) -> Result<Whole, OpenAiError> {
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut failure: Option<String> = None;
    while let Some(event) = events.next().await {
        match event {
            ClientEvent::Envelope(env) => match &env.event {
                StreamEvent::Token { text: t } => text.push_str(t),
                StreamEvent::Error { message } => failure = Some(message.clone()),
                StreamEvent::End {
                    finish_reason,
                    usage,
                } => {
                    if let Some(message) = failure {
                        let status = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                        return Err(OpenAiError::server(status, "backend_error", message));
                    }
                    return Ok((text, calls, finish_reason.clone(), *usage));
                }
                StreamEvent::ToolCall { call } => calls.push(call.clone()),
                StreamEvent::Status { .. } => {}
            },
            ClientEvent::Reset { .. } => {
                text.clear();
                calls.clear();
                failure = None;
            }
            ClientEvent::Fault(fault) => return Err(OpenAiError::from_fault(&fault)),
        }
    }
    Err(OpenAiError::server(
        axum::http::StatusCode::BAD_GATEWAY,
        "incomplete",
        "the answer stream ended before its end",
    ))
}

/// The query of the resume route.
#[derive(Debug, Default, Deserialize)]
struct ResumeQuery {
    model: Option<String>,
    include_usage: Option<bool>,
}

/// `GET /v1/chat/completions/{id}/stream`.
async fn resume(
    State(s): State<OpenAiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ResumeQuery>, QueryRejection>,
    last_event_id: Result<LastEventId, ApiError>,
) -> Result<Response, OpenAiError> {
    let Path(id) = path.map_err(|e| ApiError::BadPath(e.body_text()))?;
    check_path_id("id", &id)?;
    let Query(q) = query.map_err(|e| ApiError::BadQuery(e.body_text()))?;
    let after = last_event_id?.0;
    let meta = ChunkMeta {
        created: created_of(&id),
        model: q
            .model
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| s.config.default_model.clone()),
        id,
    };
    let key = StreamKey::new(meta.id.as_str(), meta.id.as_str());
    let events = s.chat.gateway().subscribe(&key, after).await?;
    let mut response = chunk_stream(&s, events, &meta, q.include_usage.unwrap_or(false));
    if let Ok(v) = HeaderValue::from_str(&meta.id) {
        response.headers_mut().insert(STREAM_ID_HEADER, v);
    }
    Ok(response)
}

/// `POST /v1/chat/completions/{id}/cancel`: stops the completion from any instance
/// (`202 {"status":"stopping"}`, `200 {"status":"ended","finish_reason"}`, `404` for an
/// unknown id; see [`crate::stop`]). Its stream, on every instance, ends with
/// `finish_reason: "cancelled"` and, when asked for, the usage so far.
async fn cancel(
    State(s): State<OpenAiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Stopped, OpenAiError> {
    let Path(id) = path.map_err(|e| ApiError::BadPath(e.body_text()))?;
    check_path_id("id", &id)?;
    let key = StreamKey::new(id.as_str(), id.as_str());
    Ok(stop_stream(&s.chat, &key).await?)
}
