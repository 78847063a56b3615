//! Seed 001, the SSE service: `GET /api/stream/{sessionId}/{chatMessageId}` and
//! `GET /health`.
//!
//! The stream route answers with seed 001's frames ([`Seed001Sse`]): `data: {"token": …}`
//! per token, `data: {"error": …}` on failure, `data: __END__` at the end, each with
//! `id: <seq>`, so a client that reconnects with `Last-Event-ID: n` (or `?lastEventId=n`)
//! gets exactly the frames after `n`.
//!
//! `DELETE /api/stream/{sessionId}/{chatMessageId}` stops the answer from any instance (see
//! [`crate::stop`]); only a client allowed to read the stream may stop it.
//!
//! With per-stream authorization on ([`ChatstreamState::with_stream_auth`]), the stream is
//! readable only by its submitter's bearer token or with its stream token (`?token=`); see
//! [`crate::auth::authorize_stream`].

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chatstream_core::wire::seed001::Seed001Sse;
use chatstream_core::StreamKey;

use crate::auth::authorize_stream;
use crate::sse::sse_response;
use crate::state::check_path_id;
use crate::stop::{stop_stream, Stopped};
use crate::{ApiError, ChatstreamState, LastEventId};

/// The body of `GET /health`.
///
/// The seed document shows it pretty-printed as `{"status": "healthy", "service":
/// "sse-service"}`, but the service it documents is a FastAPI app, whose `JSONResponse`
/// serialises with `separators=(",", ":")`: the bytes on the wire are the compact form
/// below, and that is what we send.
pub const HEALTH_BODY: &str = r#"{"status":"healthy","service":"sse-service"}"#;

/// The seed 001 routes, ready to merge into an application:
/// `GET /api/stream/{sessionId}/{chatMessageId}` and `GET /health`.
pub fn router(state: ChatstreamState) -> Router {
    Router::new()
        .route(
            "/api/stream/{session_id}/{chat_message_id}",
            get(stream).delete(stop),
        )
        .route("/health", get(health))
        .with_state(state)
}

/// `GET /api/stream/{sessionId}/{chatMessageId}`: the answer's frames as SSE, replaying
/// after `Last-Event-ID` when given.
pub async fn stream(
    State(state): State<ChatstreamState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    uri: Uri,
    last_event_id: LastEventId,
) -> Result<Response, ApiError> {
    let Path((session_id, message_id)) = path.map_err(|e| ApiError::BadPath(e.body_text()))?;
    check_path_id("sessionId", &session_id)?;
    check_path_id("chatMessageId", &message_id)?;
    let key = StreamKey::new(session_id, message_id);
    authorize_stream(&state, &headers, &uri, &key).await?;
    let events = state.gateway().subscribe(&key, last_event_id.0).await?;
    Ok(sse_response(events, &Seed001Sse, state.sse()))
}

/// `DELETE /api/stream/{sessionId}/{chatMessageId}`: stops the answer (see [`crate::stop`]).
pub async fn stop(
    State(state): State<ChatstreamState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Stopped, ApiError> {
    let Path((session_id, message_id)) = path.map_err(|e| ApiError::BadPath(e.body_text()))?;
    check_path_id("sessionId", &session_id)?;
    check_path_id("chatMessageId", &message_id)?;
    let key = StreamKey::new(session_id, message_id);
    authorize_stream(&state, &headers, &uri, &key).await?;
    stop_stream(&state, &key).await
}

/// `GET /health`: [`HEALTH_BODY`] as `application/json`.
pub async fn health() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], HEALTH_BODY).into_response()
}
