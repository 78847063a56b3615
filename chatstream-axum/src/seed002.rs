//! Seed 002, the streaming chat API, under `/chat`, every route behind bearer
//! authentication (`401` JSON without a valid token):
//!
//! | route | answer |
//! |---|---|
//! | `POST /chat/threads` `{"title"}` | `201 {"thread": {"id", "title", "userId", "createdAt", "updatedAt", "messageCount"}}` |
//! | `GET /chat/threads` | `{"threads": [...]}`, the caller's own (its organisation's, for a user acting for one), newest activity first (not in the document; added so a user can find its threads) |
//! | `GET /chat/threads/{threadId}/messages` | `{"messages": [{"threadId", "role", "content"}, ...]}` |
//! | `POST /chat/threads/{threadId}/messages` `{"content"}` | `{"response": "<the whole answer>"}` (non-streaming fallback) |
//! | `POST /chat/threads/{threadId}/messages/stream` `{"content"}` | SSE: `connected`, `message_saved`, `workflow_status`, `ai_response`…, `workflow_complete`, `done` (or `error`, `done`) |
//! | `GET /chat/threads/{threadId}/messages/{messageId}/stream` | the same stream again from `Last-Event-ID` (resume) |
//! | `DELETE /chat/threads/{threadId}/messages/{messageId}/stream` | stops the answer from any instance: `202 {"status":"stopping"}`, `200 {"status":"ended","finish_reason"}`, `404` for an unknown message or another user's thread ([`crate::stop`]); every reader's stream ends with `workflow_complete` and `done` |
//!
//! A user sees only its own threads: another user's thread is a `404`, like a missing one.
//! A user acting for an organisation (a [`Principal`] with an org: `token:user:org` tokens,
//! a JWT's org claim) sees and writes every thread of that organisation and no other
//! ([`may_access`]).
//! Threads and messages live in the [`ConversationStore`](chatstream_core::ConversationStore)
//! the workers use; the request carries `metadata.conversation = threadId`, so the worker
//! answers with the thread's history and appends the user message and the answer to it,
//! before `End`. The route itself stores nothing, so nothing is stored twice:
//! `message_saved` tells the client its message was accepted (queued), and carries the
//! message as it will be stored, with its id and time.
//!
//! Each answer has a server-side time limit ([`ChatstreamState::with_stream_time_limit`],
//! 120 s by default): past it a streaming client gets `error` (code `timeout`) then `done`,
//! a waiting one a `504`.
//!
//! The `connected` event's data is `{"threadId", "messageId", "streamToken", "resumeUrl"}`:
//! a client whose connection drops opens `resumeUrl` with `Last-Event-ID` (header or
//! `lastEventId` query parameter) and its bearer token or `?token=<streamToken>`, and gets
//! what it missed; the final `accumulated` is still the whole answer.

mod events;
mod model;

use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chatstream_core::{
    meta, ChatRequest, ClientEvent, ClientStream, Fault, StreamEvent, StreamKey,
};
use futures::StreamExt;

pub use model::{
    may_access, CreateThread, MessageJson, MessagesBody, ReplyBody, SendMessage, ThreadBody,
    ThreadJson, ThreadsBody, DEFAULT_TITLE, MAX_TITLE_CHARS,
};

use crate::auth::{authenticate_token, is_stream_token, refused, stream_credential, Principal};
use crate::json::BodyLimit;
use crate::state::check_path_id;
use crate::stop::{stop_stream, Stopped};
use crate::{ApiError, ApiJson, ChatstreamState, LastEventId};
use events::{connected, limited_sse, message_saved, Connected, RouteEncoder};
use model::{check_content, iso_now, owned_thread, store, title};

/// The seed 002 routes (see the [module docs](self)), with the state's body limit.
pub fn router(state: ChatstreamState) -> Router {
    if state.store().is_none() || state.authenticator().is_none() {
        tracing::error!("seed 002 router without a conversation store or an authenticator: its routes will answer 500");
    }
    let limit = state.body_limit();
    Router::new()
        .route("/chat/threads", post(create_thread).get(list_threads))
        .route(
            "/chat/threads/{thread_id}/messages",
            get(messages).post(send),
        )
        .route("/chat/threads/{thread_id}/messages/stream", post(stream))
        .route(
            "/chat/threads/{thread_id}/messages/{message_id}/stream",
            get(resume).delete(stop),
        )
        .layer(DefaultBodyLimit::max(limit))
        .layer(Extension(BodyLimit(limit)))
        .with_state(state)
}

/// The path of a message's resume stream.
pub fn resume_url(key: &StreamKey) -> String {
    format!(
        "/chat/threads/{}/messages/{}/stream",
        key.session_id, key.message_id
    )
}

fn thread_path(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::BadPath(e.body_text()))?;
    check_path_id("threadId", &id)?;
    Ok(id)
}

/// `POST /chat/threads`: creates a thread owned by the caller, `201 {"thread": …}`.
pub async fn create_thread(
    State(state): State<ChatstreamState>,
    user: Principal,
    ApiJson(body): ApiJson<CreateThread>,
) -> Result<Response, ApiError> {
    let title = title(&body)?;
    let meta = store(&state)?
        .create_in_org(Some(&title), Some(user.as_str()), user.org())
        .await?;
    let thread = ThreadJson::from(&meta);
    Ok((StatusCode::CREATED, Json(ThreadBody { thread })).into_response())
}

/// `GET /chat/threads`: the caller's threads, `{"threads": […]}`.
pub async fn list_threads(
    State(state): State<ChatstreamState>,
    user: Principal,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let metas = match user.org() {
        Some(org) => store.list_org(org).await?,
        None => store.list(user.as_str()).await?,
    };
    let threads: Vec<ThreadJson> = metas
        .iter()
        .filter(|m| may_access(&user, m))
        .map(ThreadJson::from)
        .collect();
    Ok(Json(ThreadsBody { threads }).into_response())
}

/// `GET /chat/threads/{threadId}/messages`: `{"messages": […]}`, oldest first.
pub async fn messages(
    State(state): State<ChatstreamState>,
    user: Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = thread_path(path)?;
    let thread = owned_thread(&state, &user, &id).await?;
    let messages: Vec<MessageJson> = thread
        .messages
        .iter()
        .map(|m| MessageJson::stored(&id, m))
        .collect();
    Ok(Json(MessagesBody { messages }).into_response())
}

/// Checks the thread and the text, and builds the request of a new message.
async fn new_request(
    state: &ChatstreamState,
    user: &Principal,
    path: Result<Path<String>, PathRejection>,
    body: SendMessage,
) -> Result<ChatRequest, ApiError> {
    let thread_id = thread_path(path)?;
    check_content(&body.content)?;
    owned_thread(state, user, &thread_id).await?;
    let message_id = uuid::Uuid::new_v4().to_string();
    let mut request =
        ChatRequest::new(StreamKey::new(thread_id.as_str(), message_id), body.content);
    request.user = Some(user.to_string());
    request
        .metadata
        .insert(meta::CONVERSATION.to_owned(), thread_id);
    request
        .metadata
        .insert(meta::PRINCIPAL.to_owned(), user.to_string());
    state.record_stream(&request.key, Some(user)).await?;
    Ok(request)
}

/// `POST /chat/threads/{threadId}/messages`: waits for the whole answer (within the time
/// limit) and answers `{"response": "…"}`.
pub async fn send(
    State(state): State<ChatstreamState>,
    user: Principal,
    path: Result<Path<String>, PathRejection>,
    ApiJson(body): ApiJson<SendMessage>,
) -> Result<Response, ApiError> {
    let request = new_request(&state, &user, path, body).await?;
    let events = state.gateway().submit(request).await?;
    let text = tokio::time::timeout(state.stream_time_limit(), collect(events))
        .await
        .map_err(|_| chatstream_core::Error::Timeout("answer"))??;
    Ok(Json(ReplyBody { response: text }).into_response())
}

/// The text of a whole answer; the stream's error or fault as an error.
async fn collect(mut events: ClientStream) -> Result<String, ApiError> {
    use chatstream_core::Error as E;
    let mut text = String::new();
    let mut failure = None;
    while let Some(event) = events.next().await {
        match event {
            ClientEvent::Envelope(env) => match &env.event {
                StreamEvent::Token { text: t } => text.push_str(t),
                StreamEvent::Error { message } => failure = Some(message.clone()),
                StreamEvent::End { .. } => break,
                StreamEvent::Status { .. } | StreamEvent::ToolCall { .. } => {}
            },
            ClientEvent::Reset { .. } => text.clear(),
            ClientEvent::Fault(Fault::TimedOut) => return Err(E::Timeout("answer").into()),
            ClientEvent::Fault(f) => return Err(E::unavailable("stream", f.message()).into()),
        }
    }
    match failure {
        Some(message) => Err(E::Backend {
            status: None,
            message,
        }
        .into()),
        None => Ok(text),
    }
}

/// `POST /chat/threads/{threadId}/messages/stream`: the answer as seed 002 SSE events.
pub async fn stream(
    State(state): State<ChatstreamState>,
    user: Principal,
    path: Result<Path<String>, PathRejection>,
    ApiJson(body): ApiJson<SendMessage>,
) -> Result<Response, ApiError> {
    let request = new_request(&state, &user, path, body).await?;
    let key = request.key.clone();
    let message = MessageJson {
        id: Some(key.message_id.to_string()),
        thread_id: key.session_id.to_string(),
        role: "user".to_owned(),
        content: request.last_user_text().to_owned(),
        created_at: Some(iso_now()),
    };
    let events = state.gateway().submit(request).await?;
    tracing::debug!(principal = %user, stream = %key, "seed 002 answer streaming");
    let token = state.stream_signer().sign(&key);
    let resume = resume_url(&key);
    let opening = vec![
        connected(&Connected {
            thread_id: &key.session_id,
            message_id: &key.message_id,
            stream_token: Some(&token),
            resume_url: Some(&resume),
            resumed: false,
        }),
        message_saved(&message),
    ];
    let encoder = RouteEncoder::new(&key, opening, None);
    let keep_alive = state.sse().keep_alive();
    Ok(limited_sse(
        events,
        encoder,
        state.stream_time_limit(),
        keep_alive,
    ))
}

/// The message stream a path names, when the request may read it: the thread's owner
/// (bearer token) or the holder of the message's stream token (`?token=` or bearer).
async fn authorized_message(
    state: &ChatstreamState,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<StreamKey, ApiError> {
    let Path((thread_id, message_id)) = path.map_err(|e| ApiError::BadPath(e.body_text()))?;
    check_path_id("threadId", &thread_id)?;
    check_path_id("messageId", &message_id)?;
    let key = StreamKey::new(thread_id.as_str(), message_id.as_str());
    let Some(credential) = stream_credential(headers, uri)? else {
        let e = ApiError::Unauthorized("a bearer token or stream token is required".into());
        return Err(refused(None, Some(&key), e));
    };
    if is_stream_token(&credential) {
        let checked = state.stream_signer().verify(&key, &credential);
        checked.map_err(|e| refused(None, Some(&key), e))?;
    } else {
        let user = authenticate_token(state, &credential)
            .await
            .map_err(|e| refused(None, Some(&key), e))?;
        owned_thread(state, &user, &thread_id).await?;
    }
    Ok(key)
}

/// `DELETE /chat/threads/{threadId}/messages/{messageId}/stream`: stops the answer (see
/// [`crate::stop`]), allowed to whoever may read it.
pub async fn stop(
    State(state): State<ChatstreamState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Stopped, ApiError> {
    let key = authorized_message(&state, path, &headers, &uri).await?;
    stop_stream(&state, &key).await
}

/// `GET /chat/threads/{threadId}/messages/{messageId}/stream`: the stream again, writing
/// what came after `Last-Event-ID`. Allowed to the thread's owner (bearer token) or with
/// the message's stream token (`?token=` or bearer).
pub async fn resume(
    State(state): State<ChatstreamState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    uri: Uri,
    last_event_id: LastEventId,
) -> Result<Response, ApiError> {
    let key = authorized_message(&state, path, &headers, &uri).await?;
    // From the start, so the final `accumulated` is whole; the encoder skips what the
    // client already has.
    let events = state.gateway().subscribe(&key, None).await?;
    let opening = vec![connected(&Connected {
        thread_id: &key.session_id,
        message_id: &key.message_id,
        stream_token: None,
        resume_url: None,
        resumed: true,
    })];
    let encoder = RouteEncoder::new(&key, opening, last_event_id.0);
    let keep_alive = state.sse().keep_alive();
    Ok(limited_sse(
        events,
        encoder,
        state.stream_time_limit(),
        keep_alive,
    ))
}
