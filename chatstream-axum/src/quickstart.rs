//! The quickstart's routes: `POST /api/chat` with `{"text": "…", "sessionId"?: "…"}`, and
//! `GET /api/chat/{sessionId}/messages`.
//!
//! The submit route queues the request and answers at once, `202 Accepted` with
//! `{"sessionId", "messageId", "stream"}`, where `stream` is the seed 001 SSE URL of the
//! answer (see [`crate::seed001`]). The gateway follows the answer until a client opens that
//! URL, so no token is lost between the two requests.
//!
//! The history route answers `{"sessionId", "messages": [{"role", "content"}, …]}`: the
//! session's exchanges as the conversation store holds them, oldest first. The worker
//! stores an exchange when its answer ends (before the stream's end goes out), so an answer
//! still streaming is not in it yet. A session the store does not know is a `404`, unless
//! its latest stream was submitted here by the same caller (its first answer is still
//! being written): then the list is empty.
//!
//! With per-stream authorization on ([`ChatstreamState::with_stream_auth`]) both routes
//! need `Authorization: Bearer <token>`; the submit answer then also carries `streamToken`,
//! and `stream` ends with `?token=<streamToken>` so an `EventSource` can open it as is, and
//! the conversation is the user's own ([`user_conversation`]): a `sessionId` another user
//! chose neither reads nor extends that user's history (its history route is a `404` for
//! them). With it off, the conversation of a session is [`session_conversation`].

use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chatstream_core::{meta, ChatMessage, ChatRequest, StreamKey};
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

/// The answer of `GET /api/chat/{sessionId}/messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryResponse {
    /// The chat session.
    #[serde(rename = "sessionId")]
    pub session_id: String,
    /// The stored messages, oldest first: each finished exchange's question and answer.
    pub messages: Vec<ChatMessage>,
}

/// The conversation id of `session_id` for `principal` when per-stream authorization is on:
/// `{principal}:{session_id}`. Session ids hold no `:`, so no two pairs give one id.
pub fn user_conversation(principal: &Principal, session_id: &str) -> String {
    format!("{principal}:{session_id}")
}

/// The conversation id of `session_id` when per-stream authorization is off:
/// `quickstart:{session_id}`. It is named by the submit route rather than looked up through
/// the store's channel mapping, so that the history route can read it without creating a
/// conversation for every session id a client asks about; the prefix keeps it apart from
/// seed 002's thread ids.
pub fn session_conversation(session_id: &str) -> String {
    format!("quickstart:{session_id}")
}

/// `POST /api/chat`, with the state's request body limit (64 KiB by default), and
/// `GET /api/chat/{sessionId}/messages`.
pub fn router(state: ChatstreamState) -> Router {
    let limit = state.body_limit();
    Router::new()
        .route("/api/chat", post(submit))
        .route("/api/chat/{session_id}/messages", get(history))
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
        request.metadata.insert(
            meta::CONVERSATION.to_owned(),
            session_conversation(&session_id),
        );
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

/// `GET /api/chat/{sessionId}/messages`: the session's stored messages, for the caller's
/// own conversation only (see the module docs).
pub async fn history(
    State(state): State<ChatstreamState>,
    Submitter(submitter): Submitter,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(session_id) = path.map_err(|e| ApiError::BadPath(e.body_text()))?;
    check_token_id("sessionId", &session_id)?;
    let Some(store) = state.store() else {
        return Err(ApiError::Misconfigured(
            "the history route needs a conversation store".into(),
        ));
    };
    let conversation = match &submitter {
        Some(principal) => user_conversation(principal, &session_id),
        None => session_conversation(&session_id),
    };
    let messages = match store.get(&conversation).await? {
        Some(conversation) => conversation.messages,
        None if submitted_here(&state, &session_id, submitter.as_ref()).await? => Vec::new(),
        None => return Err(ApiError::Missing("session")),
    };
    let answer = HistoryResponse {
        session_id,
        messages,
    };
    Ok(Json(answer).into_response())
}

/// True when the latest stream of `session_id` in the state's registry was submitted by
/// `submitter` (anyone, when authorization is off): a session whose first answer is still
/// being written, which the store does not hold yet.
async fn submitted_here(
    state: &ChatstreamState,
    session_id: &str,
    submitter: Option<&Principal>,
) -> Result<bool, ApiError> {
    let registry = state.stream_registry();
    let Some(latest) = registry.latest(session_id).await? else {
        return Ok(false);
    };
    let Some(principal) = submitter else {
        return Ok(true);
    };
    let record = registry.lookup(&latest).await?;
    Ok(record.is_some_and(|r| r.owner.as_deref() == Some(principal.as_str())))
}
