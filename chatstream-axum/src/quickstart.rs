//! The quickstart's submit route: `POST /api/chat` with `{"text": "…", "sessionId"?: "…"}`.
//!
//! It queues the request and answers at once, `202 Accepted` with
//! `{"sessionId", "messageId", "stream"}`, where `stream` is the seed 001 SSE URL of the
//! answer (see [`crate::seed001`]). The gateway follows the answer until a client opens that
//! URL, so no token is lost between the two requests.
//!
//! With per-stream authorization on ([`ChatstreamState::with_stream_auth`]) submitting
//! needs `Authorization: Bearer <token>`; the answer then also carries `streamToken`, and
//! `stream` ends with `?token=<streamToken>` so an `EventSource` can open it as is, and the
//! conversation is the user's own ([`user_conversation`]): a `sessionId` another user chose
//! neither reads nor extends that user's history.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use chatstream_core::{meta, ChatRequest, StreamKey};
use serde::{Deserialize, Serialize};

use crate::auth::{Principal, Submitter};
use crate::json::BodyLimit;
use crate::state::check_token_id;
use crate::{ApiError, ApiJson, ChatstreamState};

/// The body of `POST /api/chat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// What the person said; must not be blank.
    pub text: String,
    /// The chat session to continue; a new one is made when absent.
    #[serde(rename = "sessionId", default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// The answer of `POST /api/chat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitResponse {
    /// The chat session.
    #[serde(rename = "sessionId")]
    pub session_id: String,
    /// The id of this message; with the session it names the answer's stream.
    #[serde(rename = "messageId")]
    pub message_id: String,
    /// The path of the answer's SSE stream.
    pub stream: String,
    /// The stream token opening the answer's stream, when per-stream authorization is on.
    #[serde(
        rename = "streamToken",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stream_token: Option<String>,
}

/// The conversation id of `session_id` for `principal` when per-stream authorization is on:
/// `{principal}:{session_id}`. Session ids hold no `:`, so no two pairs give one id.
pub fn user_conversation(principal: &Principal, session_id: &str) -> String {
    format!("{principal}:{session_id}")
}

/// `POST /api/chat`, with the state's request body limit (64 KiB by default).
pub fn router(state: ChatstreamState) -> Router {
    let limit = state.body_limit();
    Router::new()
        .route("/api/chat", post(submit))
        .layer(DefaultBodyLimit::max(limit))
        .layer(Extension(BodyLimit(limit)))
        .with_state(state)
}

/// `POST /api/chat`: validates, queues the request, answers 202 with the stream URL.
pub async fn submit(
    State(state): State<ChatstreamState>,
    Submitter(submitter): Submitter,
    ApiJson(body): ApiJson<SubmitRequest>,
) -> Result<Response, ApiError> {
    if body.text.trim().is_empty() {
        return Err(ApiError::Invalid {
            field: "text",
            reason: "must not be empty".into(),
        });
    }
    let session_id = match body.session_id {
        Some(id) => {
            check_token_id("sessionId", &id)?;
            id
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let message_id = uuid::Uuid::new_v4().to_string();
    let key = StreamKey::new(session_id.as_str(), message_id.as_str());
    let mut stream = state.stream_url(&key);
    let mut request = ChatRequest::new(key.clone(), body.text);
    let mut stream_token = None;
    if let Some(principal) = submitter {
        request.user = Some(principal.to_string());
        request
            .metadata
            .insert(meta::PRINCIPAL.to_owned(), principal.to_string());
        // The conversation belongs to its user: naming another user's `sessionId` starts
        // a conversation of one's own instead of reading and extending theirs.
        request.metadata.insert(
            meta::CONVERSATION.to_owned(),
            user_conversation(&principal, &session_id),
        );
        state.record_stream(&key, Some(&principal)).await?;
        let token = state.stream_signer().sign(&key);
        stream = format!("{stream}?token={token}");
        stream_token = Some(token);
    }
    if stream_token.is_none() {
        state.record_stream(&key, None).await?;
    }
    state.gateway().submit_detached(request).await?;
    tracing::debug!(%session_id, %message_id, "chat request queued");
    let answer = SubmitResponse {
        session_id,
        message_id,
        stream,
        stream_token,
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}
