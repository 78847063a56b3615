//! Seed 003, the ChatGPT queue worker's REST API, as its document gives it.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/chat/completions` | queues the request; `200 {"uid","status":"queued","stream"}` ([`Submitted`]) |
//! | `POST /v1/chat/completions` with `Accept: text/event-stream` | queues it and streams the answer at once, as the original Go handler did |
//! | `GET /v1/chat/response?uid=<uid>` | the answer as SSE in seed 003's chunks ([`Seed003Sse`]), ending with `data: [DONE]`; resumable with `Last-Event-ID` / `?lastEventId=` |
//! | `DELETE /v1/chat/response?uid=<uid>` | stops the answer from any instance: `202 {"status":"stopping"}`, `200 {"status":"ended","finish_reason"}` when it had ended, `404` for an unknown uid ([`crate::stop`]) |
//! | `GET /ping` | `pong`, `text/plain; charset=utf-8` |
//!
//! The body is `{"model", "messages": [{"role", "content"}], "stream", "max_tokens"?,
//! "username"?, "uid"?}`, read as JSON whatever its `Content-Type` (the Go handler did not
//! look). An empty `username` becomes `anonymous` and an empty `uid` a new uuid, as in the
//! original; the stream key is `uid/uid` and all messages are passed on. A given `uid` must
//! be 1–128 characters of `A-Z a-z 0-9 _ -` (it names a queue and a URL) and new for each
//! request. `messages` must not be empty. Errors are the crate's JSON errors ([`ApiError`]).
//!
//! Where the seed is silent: the document says the POST "response will include the UID";
//! the original handler instead held the request open and streamed chunks when `stream` was
//! true. `stream` does not choose here, since the document's own example sends
//! `"stream": true` and then fetches the stream by uid; a client that wants the original
//! behaviour asks for it with `Accept: text/event-stream`, and gets the uid in the
//! [`STREAM_ID_HEADER`] header and every chunk's `id`, so it can resume by `GET`.
//!
//! This API and the OpenAI-compatible mode ([`crate::openai`]) share
//! `POST /v1/chat/completions`: mount one of them, and [`response_router`] beside the
//! OpenAI one to also serve `GET /v1/chat/response` and `GET /ping`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chatstream_core::wire::seed003::Seed003Sse;
use chatstream_core::{ChatMessage, ChatRequest, StreamKey};
use serde::{Deserialize, Serialize};

use crate::openai::{RequestMessage, STREAM_ID_HEADER};
use crate::state::{check_path_id, check_token_id};
use crate::stop::{stop_stream, Stopped};
use crate::{sse_response, ApiError, ChatstreamState, LastEventId};

/// The body of `GET /ping`.
pub const PING_BODY: &str = "pong";

/// The path of the stream route.
pub const RESPONSE_PATH: &str = "/v1/chat/response";

/// The body of `POST /v1/chat/completions` (the Go `ChatCompletionRequest`). `null` reads
/// as the empty value, as Go's decoder does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Seed003Request {
    /// The model asked for; empty: the worker's.
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation; must not be empty.
    #[serde(default)]
    pub messages: Option<Vec<RequestMessage>>,
    /// Read and ignored (see the module docs).
    #[serde(default)]
    pub stream: Option<bool>,
    /// Token limit; 0 or absent: none.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Who asks; `anonymous` when empty.
    #[serde(default)]
    pub username: Option<String>,
    /// The request's id; generated when empty.
    #[serde(default)]
    pub uid: Option<String>,
}

/// The answer of `POST /v1/chat/completions`:
/// `{"uid": "…", "status": "queued", "stream": "/v1/chat/response?uid=…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// The uid of the request, given or generated.
    pub uid: String,
    /// Always `queued`.
    pub status: String,
    /// The path of the answer's SSE stream.
    pub stream: String,
}

/// All seed 003 routes: `POST /v1/chat/completions`, `GET /v1/chat/response`, `GET /ping`.
pub fn router(state: ChatstreamState) -> Router {
    let limit = state.body_limit();
    Router::new()
        .route("/v1/chat/completions", post(submit))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state.clone())
        .merge(response_router(state))
}

/// Only `GET /v1/chat/response` and `GET /ping`, to mount beside the OpenAI-compatible
/// router (which owns `POST /v1/chat/completions`).
pub fn response_router(state: ChatstreamState) -> Router {
    Router::new()
        .route(RESPONSE_PATH, get(response).delete(stop))
        .route("/ping", get(ping))
        .with_state(state)
}

/// `GET /ping`: [`PING_BODY`].
pub async fn ping() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        PING_BODY,
    )
        .into_response()
}

/// Reads the body as JSON whatever its content type.
fn parse_body(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Seed003Request, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::BadBody(e.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        if e.is_data() {
            ApiError::BadBody(e.to_string())
        } else {
            ApiError::BadJson(e.to_string())
        }
    })
}

/// The [`ChatRequest`] of a seed 003 body, with the defaults of the original.
pub fn chat_request(body: Seed003Request) -> Result<ChatRequest, ApiError> {
    let messages = body.messages.unwrap_or_default();
    if messages.is_empty() {
        return Err(ApiError::Invalid {
            field: "messages",
            reason: "must contain at least one message".into(),
        });
    }
    let messages = messages
        .iter()
        .enumerate()
        .map(|(i, m)| m.to_chat_message(i))
        .collect::<Result<Vec<ChatMessage>, _>>()
        .map_err(|e| ApiError::Invalid {
            field: "messages",
            reason: e.message,
        })?;
    let uid = match body.uid.filter(|u| !u.is_empty()) {
        Some(uid) => {
            check_token_id("uid", &uid)?;
            uid
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let username = body
        .username
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "anonymous".to_owned());
    Ok(ChatRequest {
        key: StreamKey::new(uid.as_str(), uid.as_str()),
        messages,
        model: body.model.filter(|m| !m.is_empty()),
        user: Some(username),
        max_tokens: body.max_tokens.filter(|&n| n > 0),
        metadata: Default::default(),
    }
    .stateless())
}

/// `POST /v1/chat/completions`: queues the request; answers with its uid, or with its
/// stream when the client accepts `text/event-stream`.
pub async fn submit(
    State(state): State<ChatstreamState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = chat_request(parse_body(body, state.body_limit())?)?;
    let uid = request.key.session_id.to_string();
    let wants_stream = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    state.record_stream(&request.key, None).await?;
    tracing::debug!(%uid, wants_stream, "seed 003 request queued");
    let mut response = if wants_stream {
        let events = state.gateway().submit(request).await?;
        sse_response(events, &Seed003Sse, state.sse())
    } else {
        state.gateway().submit_detached(request).await?;
        Json(Submitted {
            stream: format!("{RESPONSE_PATH}?uid={uid}"),
            uid: uid.clone(),
            status: "queued".to_owned(),
        })
        .into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&uid) {
        response.headers_mut().insert(STREAM_ID_HEADER, v);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct ResponseQuery {
    uid: Option<String>,
}

/// The stream key a `?uid=` query names.
fn uid_key(query: Result<Query<ResponseQuery>, QueryRejection>) -> Result<StreamKey, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadQuery(e.body_text()))?;
    let uid = q.uid.filter(|u| !u.is_empty()).ok_or(ApiError::Invalid {
        field: "uid",
        reason: "is required: /v1/chat/response?uid=<uid>".into(),
    })?;
    check_path_id("uid", &uid)?;
    Ok(StreamKey::new(uid.as_str(), uid.as_str()))
}

/// `GET /v1/chat/response?uid=<uid>`: the answer as seed 003 SSE chunks.
async fn response(
    State(state): State<ChatstreamState>,
    query: Result<Query<ResponseQuery>, QueryRejection>,
    last_event_id: LastEventId,
) -> Result<Response, ApiError> {
    let key = uid_key(query)?;
    let events = state.gateway().subscribe(&key, last_event_id.0).await?;
    Ok(sse_response(events, &Seed003Sse, state.sse()))
}

/// `DELETE /v1/chat/response?uid=<uid>`: stops the answer (see [`crate::stop`]).
async fn stop(
    State(state): State<ChatstreamState>,
    query: Result<Query<ResponseQuery>, QueryRejection>,
) -> Result<Stopped, ApiError> {
    let key = uid_key(query)?;
    stop_stream(&state, &key).await
}
