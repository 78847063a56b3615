//! The OpenAI Responses API (`/v1/responses`): streamed, stored, background, resumable and
//! cancellable, on any broker, from any gateway instance.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/responses` | the `response` object once the answer is whole; with `"stream": true` the semantic events ([`ResponsesEvents`]); with `"background": true` at once, `status: "queued"` (or the events, with `stream`) |
//! | `GET /v1/responses/{id}` | the stored response: `queued` → `in_progress` → `completed` / `incomplete` / `cancelled` / `failed` |
//! | `GET /v1/responses/{id}?stream=true&starting_after=N` | its events again, from the first after `N`, during generation and after it, on any instance |
//! | `POST /v1/responses/{id}/cancel` | stops it from any instance; answers the response, `cancelled` with its partial output and usage; a finished response unchanged |
//! | `DELETE /v1/responses/{id}` | `{"id", "object": "response", "deleted": true}` |
//! | `GET /v1/responses/{id}/input_items` | the request's input items (`order`, `limit`, `after`) |
//!
//! Where things live. A response is one stream, keyed `id/id`; its envelopes are the
//! broker's, so a resume works wherever the token topology resumes (README, "Durable
//! streams"). Its record (the echoed request, input items, the conversation so far, the
//! owner, and the outcome once final) is in a [`ResponseStore`](chatstream_core::ResponseStore):
//! [`RedisResponseStore`](https://docs.rs/chatstream-redis) shared by every instance, or an
//! [`InMemoryResponseStore`](chatstream_core::InMemoryResponseStore) for one process. The
//! outcome is written by whichever instance sees the stream end first (see `records`); a
//! read of a record with no outcome asks the token source, and reads an ended stream again
//! to fill it in, so a response whose client went away still reaches its final state.
//!
//! The request:
//! - `input`: a string, or items: `message` (roles `system`, `developer`, `user`,
//!   `assistant`; content a string or `input_text`/`output_text` parts), `function_call`,
//!   `function_call_output`; any other type is a 400 naming the item.
//! - `instructions` is a system message for this response only (it does not carry over to
//!   a response that names this one in `previous_response_id`, as OpenAI documents).
//! - `previous_response_id`: the conversation comes from the store (that response's
//!   context and answer); 404 when it is unknown, expired, deleted or not the caller's, 400
//!   while it is still being generated.
//! - `max_output_tokens` is the worker's token limit; a cut answer is `incomplete` with
//!   `incomplete_details.reason = "max_output_tokens"`.
//! - `temperature` and `top_p` are accepted and echoed, but not passed on: the worker's
//!   model configuration decides sampling ([`ChatRequest`]
//!   carries no sampling fields, and a relay that half-honours them would mislead).
//! - `tools`: function tools (`name`, optional `description` and `parameters`; `strict` is
//!   not enforced) are offered to the model through the request
//!   ([`meta::TOOLS`]), across any broker. A call the model
//!   makes comes back as a `function_call` output item (`call_id`, `name`, `arguments`) and
//!   the response completes; the client runs the tool and answers with a
//!   `function_call_output` item in a request naming this response in
//!   `previous_response_id`. The worker publishes a call whole, so its arguments arrive in
//!   one `response.function_call_arguments.delta`. Other tool types are a 400; with
//!   `tool_choice: "none"` no tool is offered. `tool_choice` other than `auto`/`none`,
//!   `text.format` other than text, and `conversation` are refused (400); other unknown
//!   fields are ignored.
//! - `store` (default true): with `false` nothing is kept (the later routes answer 404);
//!   `background` needs `store`.
//! - `model` is echoed; it is passed on to the worker only when it is one of
//!   [`ResponsesRouteConfig::models`].
//!
//! Outside the success path: a streamed response without `background` whose client goes
//! away is cancelled by the gateway after its `cancel_grace`, as every other dialect's is,
//! and its record ends `cancelled`. A background response is followed by the instance that
//! created it until its end, whoever reads it. A cancel of a queued response stops it when
//! a worker takes it. Errors have OpenAI's shape ([`OpenAiError`]): 400 for a malformed
//! body, 401 without a valid bearer token when the state's stream authorization is on, 404
//! for an unknown id (or another user's response), 413 for a body over the limit.
//!
//! Known differences from OpenAI: `GET` of a response being generated shows no output yet
//! (the partial text is in its event stream); a cancelled response's stream ends with
//! `response.incomplete` carrying `status: "cancelled"`; a response whose token stream
//! expired (the broker's retention) can still be read with `GET`, not streamed again;
//! a stored response lists its message item before its function calls even in the rare
//! case of a model that speaks again after a call (its stream showed them in order).

mod input;
mod records;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chatstream_core::wire::responses::ResponsesOptions;
use chatstream_core::wire::responses::{response_json, ResponseView, ResponsesEvents};
use chatstream_core::{meta, ChatMessage, ChatRequest, ClientStream, DynResponseStore};
use chatstream_core::{ResponseHeader, ResponseRecord, ResponseStatus, StopOutcome, StreamStatus};
use serde::Deserialize;
use serde_json::{json, Value};

pub use input::CreateResponse;

use crate::auth::{authenticate, Principal};
use crate::openai::OpenAiError;
use crate::state::check_path_id;
use crate::{sse_response, ApiError, ChatstreamState};

/// How the Responses routes behave.
#[derive(Debug, Clone)]
pub struct ResponsesRouteConfig {
    /// Where responses are kept (share one across instances: `RedisResponseStore`).
    pub store: Arc<DynResponseStore>,
    /// Models passed on to the worker when asked for by name (others are only echoed).
    pub models: Vec<String>,
    /// The model named in responses to requests without `model`.
    pub default_model: String,
    /// The path the routes live under (default `/v1`); merge the router, do not nest it.
    pub base_path: String,
    /// Largest request body in bytes; the state's body limit when `None`.
    pub body_limit: Option<usize>,
}

impl ResponsesRouteConfig {
    /// Defaults around `store`: default model `chatstream`, under `/v1`.
    pub fn new(store: Arc<DynResponseStore>) -> Self {
        Self {
            store,
            models: Vec::new(),
            default_model: "chatstream".to_owned(),
            base_path: "/v1".to_owned(),
            body_limit: None,
        }
    }

    /// With `model` as the default model and the one passed on.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        let model = model.into();
        self.models = vec![model.clone()];
        self.default_model = model;
        self
    }
}

#[derive(Debug, Clone)]
struct Shared {
    chat: ChatstreamState,
    config: Arc<ResponsesRouteConfig>,
    body_limit: usize,
}

/// The Responses routes (see the module docs), under `config.base_path`.
pub fn router(state: ChatstreamState, config: ResponsesRouteConfig) -> Router {
    let base = config.base_path.trim_end_matches('/').to_owned();
    let body_limit = config.body_limit.unwrap_or(state.body_limit());
    let shared = Shared {
        chat: state,
        config: Arc::new(config),
        body_limit,
    };
    Router::new()
        .route(&format!("{base}/responses"), post(create))
        .route(
            &format!("{base}/responses/{{id}}"),
            get(retrieve).delete(delete),
        )
        .route(&format!("{base}/responses/{{id}}/cancel"), post(cancel))
        .route(
            &format!("{base}/responses/{{id}}/input_items"),
            get(input_items),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(shared)
}

impl Shared {
    fn store(&self) -> &DynResponseStore {
        &*self.config.store
    }

    /// The caller, when the state's stream authorization is on (401 without a valid key).
    async fn caller(&self, headers: &HeaderMap) -> Result<Option<Principal>, OpenAiError> {
        if !self.chat.stream_auth() {
            return Ok(None);
        }
        Ok(Some(authenticate(&self.chat, headers).await?))
    }

    /// The record of `id`, if the caller may see it; 404 otherwise, as for an unknown id.
    async fn load(
        &self,
        id: &str,
        caller: Option<&Principal>,
    ) -> Result<ResponseRecord, OpenAiError> {
        check_path_id("id", id)?;
        let record = self.store().get(id).await?;
        match record {
            Some(r) if owned_by(&r, caller) => Ok(r),
            _ => Err(not_found(id, None)),
        }
    }
}

fn owned_by(record: &ResponseRecord, caller: Option<&Principal>) -> bool {
    match (&record.owner, caller) {
        (Some(owner), Some(caller)) => owner == caller.as_str(),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

fn not_found(id: &str, param: Option<&str>) -> OpenAiError {
    let what = if param.is_some() {
        "Previous response"
    } else {
        "Response"
    };
    OpenAiError {
        status: StatusCode::NOT_FOUND,
        message: format!("{what} with id '{id}' not found."),
        kind: "invalid_request_error",
        param: param.map(str::to_owned),
        code: None,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The response object of `record`, shown in state `status` when it has no outcome.
fn object(record: &ResponseRecord, status: ResponseStatus) -> Response {
    let view = match &record.outcome {
        Some(o) => ResponseView::finished(o),
        None => ResponseView::pending(status),
    };
    let view = ResponseView {
        output_text: true,
        ..view
    };
    let json = response_json(&record.header, &view);
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

fn events_response(
    s: &Shared,
    events: ClientStream,
    header: ResponseHeader,
    starting_after: Option<u64>,
) -> Response {
    let transport = ResponsesEvents::new(ResponsesOptions {
        header: Arc::new(header),
        starting_after,
    });
    sse_response(events, &transport, s.chat.sse())
}

/// `POST /v1/responses`.
async fn create(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let caller = s.caller(&headers).await?;
    let body = body.map_err(|e| OpenAiError::body_rejection(&e, s.body_limit))?;
    let req: CreateResponse = serde_json::from_slice(&body).map_err(|e| {
        let what = if e.is_data() {
            "The request body is not a valid response request"
        } else {
            "We could not parse the JSON body of your request"
        };
        OpenAiError::invalid_request(format!("{what}: {e}"), None)
    })?;
    req.check_supported()?;
    let (new_messages, input_items) = input::read_input(req.input.as_ref())?;

    let mut context = Vec::new();
    if let Some(prev_id) = req.previous_response_id.as_deref() {
        let param = Some("previous_response_id");
        let prev = s
            .load(prev_id, caller.as_ref())
            .await
            .map_err(|_| not_found(prev_id, param))?;
        let (prev, status) = records::refresh(s.chat.gateway(), s.store(), prev).await;
        let Some(outcome) = prev.outcome else {
            return Err(OpenAiError::invalid_request(
                format!(
                    "Previous response with id '{prev_id}' is still {}.",
                    status.as_str()
                ),
                param.map(str::to_owned),
            ));
        };
        context = prev.context;
        if !outcome.tool_calls.is_empty() {
            // The calls the client now answers with `function_call_output` items.
            context.push(ChatMessage::assistant_tool_calls(
                outcome.text,
                outcome.tool_calls,
            ));
        } else if !outcome.text.is_empty() {
            context.push(ChatMessage::assistant(outcome.text));
        }
    }
    context.extend(new_messages);

    let model = req
        .model
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| s.config.default_model.clone());
    let background = req.background == Some(true);
    let stored = req.store != Some(false);
    let header = ResponseHeader {
        id: format!("resp_{}", uuid::Uuid::now_v7().simple()),
        created_at: unix_now(),
        model: model.clone(),
        background,
        instructions: req.instructions.clone(),
        max_output_tokens: req.max_output_tokens,
        metadata: req.metadata.clone().unwrap_or_default(),
        previous_response_id: req.previous_response_id.clone(),
        store: stored,
        temperature: req.temperature,
        top_p: req.top_p,
        tools: req.tools.clone().unwrap_or_default(),
        user: req.user.clone().filter(|u| !u.is_empty()),
    };
    let key = header.stream_key();
    let mut messages = Vec::with_capacity(context.len() + 1);
    messages.extend(req.instructions.iter().map(ChatMessage::system));
    messages.extend(context.iter().cloned());
    let mut request = ChatRequest {
        key: key.clone(),
        messages,
        model: s.config.models.contains(&model).then_some(model),
        user: header.user.clone(),
        max_tokens: req.max_output_tokens,
        metadata: Default::default(),
    }
    .stateless();
    if let Some(tools) = req.tool_definitions()? {
        request.metadata.insert(meta::TOOLS.to_owned(), tools);
    }
    let mut record = ResponseRecord {
        header,
        owner: caller.as_ref().map(|p| p.as_str().to_owned()),
        input_items,
        context,
        outcome: None,
    };
    let store = stored.then(|| s.config.store.clone());
    if let Some(store) = &store {
        store.create(&record).await?;
    }
    s.chat.record_stream(&key, caller.as_ref()).await?;
    let id = record.header.id.clone();
    tracing::debug!(%id, background, stream = req.stream == Some(true), "response queued");

    let events = s.chat.gateway().submit(request).await?;
    if background {
        // `store` is set: background needs it.
        records::follow(events, s.config.store.clone(), id);
        if req.stream == Some(true) {
            let events = s.chat.gateway().subscribe(&key, None).await?;
            return Ok(events_response(&s, events, record.header, None));
        }
        return Ok(object(&record, ResponseStatus::Queued));
    }
    if req.stream == Some(true) {
        let events = records::observe(events, store, id);
        return Ok(events_response(&s, events, record.header, None));
    }
    let outcome = match records::collect(events, Duration::MAX / 4).await {
        Ok(outcome) => outcome,
        Err(Some(fault)) => return Err(OpenAiError::from_fault(&fault)),
        Err(None) => {
            return Err(OpenAiError::server(
                StatusCode::BAD_GATEWAY,
                "incomplete",
                "the answer stream ended before its end",
            ))
        }
    };
    if let Some(store) = &store {
        records::finish(&**store, &id, &outcome).await;
    }
    record.outcome = Some(outcome);
    Ok(object(&record, ResponseStatus::Completed))
}

/// The query of `GET /v1/responses/{id}`.
#[derive(Debug, Default, Deserialize)]
struct RetrieveQuery {
    stream: Option<bool>,
    starting_after: Option<u64>,
}

/// `GET /v1/responses/{id}`, and with `stream=true` its events.
async fn retrieve(
    State(s): State<Shared>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<RetrieveQuery>, QueryRejection>,
) -> Result<Response, OpenAiError> {
    let caller = s.caller(&headers).await?;
    let Path(id) = path.map_err(|e| ApiError::BadPath(e.body_text()))?;
    let Query(q) = query.map_err(|e| ApiError::BadQuery(e.body_text()))?;
    let record = s.load(&id, caller.as_ref()).await?;
    if q.stream != Some(true) {
        let (record, status) = records::refresh(s.chat.gateway(), s.store(), record).await;
        return Ok(object(&record, status));
    }
    let key = record.header.stream_key();
    if record.outcome.is_some() {
        if let Ok(StreamStatus::NotFound) = s.chat.gateway().status(&key).await {
            return Err(OpenAiError {
                status: StatusCode::NOT_FOUND,
                message: format!(
                    "The events of response '{id}' are no longer kept; retrieve it without stream."
                ),
                kind: "invalid_request_error",
                param: Some("stream".to_owned()),
                code: Some("stream_expired".to_owned()),
            });
        }
    }
    // Read from the first envelope: the closing events repeat the whole text.
    let events = s.chat.gateway().subscribe(&key, None).await?;
    Ok(events_response(&s, events, record.header, q.starting_after))
}

/// `DELETE /v1/responses/{id}`.
async fn delete(
    State(s): State<Shared>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, OpenAiError> {
    let caller = s.caller(&headers).await?;
    let Path(id) = path.map_err(|e| ApiError::BadPath(e.body_text()))?;
    s.load(&id, caller.as_ref()).await?;
    if !s.store().delete(&id).await? {
        return Err(not_found(&id, None));
    }
    let body = json!({"id": id, "object": "response", "deleted": true});
    Ok(axum::Json(body).into_response())
}

/// `POST /v1/responses/{id}/cancel`.
async fn cancel(
    State(s): State<Shared>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, OpenAiError> {
    let caller = s.caller(&headers).await?;
    let Path(id) = path.map_err(|e| ApiError::BadPath(e.body_text()))?;
    let record = s.load(&id, caller.as_ref()).await?;
    let (record, status) = records::refresh(s.chat.gateway(), s.store(), record).await;
    if record.outcome.is_some() {
        return Ok(object(&record, status));
    }
    let key = record.header.stream_key();
    let gateway = s.chat.gateway();
    match gateway.stop(&key).await? {
        // Submitted, not started: the worker that takes it stops it at once.
        StopOutcome::Unknown => gateway.cancel(&key).await?,
        _ => tracing::info!(response = %id, "response cancelled"),
    }
    // Wait for the end the worker publishes: `cancelled`, the partial text and its usage.
    let events = gateway.subscribe(&key, None).await?;
    if let Ok(outcome) = records::collect(events, records::SETTLE_LIMIT).await {
        records::finish(s.store(), &id, &outcome).await;
    }
    let record = s.load(&id, caller.as_ref()).await?;
    let (record, status) = records::refresh(gateway, s.store(), record).await;
    Ok(object(&record, status))
}

/// The query of `GET /v1/responses/{id}/input_items`.
#[derive(Debug, Default, Deserialize)]
struct ItemsQuery {
    order: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

/// `GET /v1/responses/{id}/input_items`.
async fn input_items(
    State(s): State<Shared>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ItemsQuery>, QueryRejection>,
) -> Result<Response, OpenAiError> {
    let caller = s.caller(&headers).await?;
    let Path(id) = path.map_err(|e| ApiError::BadPath(e.body_text()))?;
    let Query(q) = query.map_err(|e| ApiError::BadQuery(e.body_text()))?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        let param = Some("limit".to_owned());
        return Err(OpenAiError::invalid_request(
            "limit must be 1 to 100",
            param,
        ));
    }
    let mut items = s.load(&id, caller.as_ref()).await?.input_items;
    match q.order.as_deref() {
        None | Some("desc") => items.reverse(),
        Some("asc") => {}
        Some(_) => {
            let param = Some("order".to_owned());
            return Err(OpenAiError::invalid_request(
                "order must be asc or desc",
                param,
            ));
        }
    }
    if let Some(after) = &q.after {
        let at = items.iter().position(|i| i["id"] == after.as_str());
        items = match at {
            Some(at) => items.split_off(at + 1),
            None => Vec::new(),
        };
    }
    let has_more = items.len() > limit;
    items.truncate(limit);
    let id_of = |i: Option<&Value>| i.map(|i| i["id"].clone()).unwrap_or(Value::Null);
    let (first_id, last_id) = (id_of(items.first()), id_of(items.last()));
    let body = json!({
        "object": "list",
        "data": items,
        "first_id": first_id,
        "last_id": last_id,
        "has_more": has_more,
    });
    Ok(axum::Json(body).into_response())
}
