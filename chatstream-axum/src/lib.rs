//! # chatstream-axum
//!
//! The HTTP edge of chatstream on axum: server-sent events for any
//! [`ClientTransport`](chatstream_core::ClientTransport), `Last-Event-ID` resume, JSON
//! errors, and the routers of the documented HTTP APIs.
//!
//! | item | what it is |
//! |---|---|
//! | [`seed001::router`] | seed 001's SSE service: `GET /api/stream/{sessionId}/{chatMessageId}`, `GET /health` |
//! | [`seed003::router`] | seed 003's REST API: `POST /v1/chat/completions` → uid, `GET /v1/chat/response?uid=`, `GET /ping` |
//! | [`openai::router`] | OpenAI-compatible chat completions (streaming, non-streaming, resumable) and `GET /v1/models` |
//! | [`responses::router`] | the OpenAI Responses API: `POST /v1/responses` (streamed, stored, background), retrieve, resume with `starting_after`, cancel, delete, input items |
//! | [`aisdk::router`] | Vercel AI SDK `useChat` backend: `POST /api/ai-sdk/chat` → UI message stream v1 |
//! | [`seed002::router`] | seed 002's streaming chat API under `/chat`, bearer-authenticated |
//! | [`auth`] | bearer authentication ([`auth::Authenticator`], [`auth::StaticTokens`]), signed stream tokens, per-stream authorization |
//! | [`quickstart::router`] | `POST /api/chat` → `202 {"sessionId", "messageId", "stream"}` |
//! | [`ws::router`] | seed 004's WebSocket at `GET /ws`: subscribe to a channel, ask, ping |
//! | [`metrics::Metrics`] | `GET /metrics` in Prometheus text, and the layer counting HTTP requests |
//! | [`ready::Readiness`] | `GET /ready`: 200, or 503 with a JSON reason while a broker or store check fails or the process shuts down |
//! | [`trace_layer`] | one tracing span per request: method, route, status, latency |
//! | [`sse_response`] | any [`ClientStream`](chatstream_core::ClientStream) as `text/event-stream`, keep-alive comments |
//! | [`LastEventId`] | extractor: `Last-Event-ID` header or `lastEventId` query parameter |
//! | [`ApiJson`] | JSON body extractor whose rejections are JSON [`ApiError`]s |
//! | [`ApiError`] | every error of the routes: status code + `{"error": {"code", "message"}}` |
//! | [`cors_layer`] | CORS from a `CORS_ORIGINS` list |
//! | [`serve()`] | serves a router with `TCP_NODELAY`; on a signal, ends the gateway's open streams and stops |
//!
//! Routers are plain functions of a [`ChatstreamState`] returning a [`Router`](axum::Router),
//! so an application mounts the ones it needs:
//!
//! ```
//! use std::sync::Arc;
//! use chatstream_axum::{quickstart, seed001, ChatstreamState};
//! use chatstream_core::{Gateway, InMemoryBroker};
//!
//! let broker = InMemoryBroker::new();
//! let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker.clone()))
//!     .cancels(Arc::new(broker.clone()))
//!     .build();
//! let state = ChatstreamState::new(gateway);
//! let app: axum::Router = seed001::router(state.clone())
//!     .merge(quickstart::router(state))
//!     .fallback(chatstream_axum::not_found);
//! # let _ = app;
//! ```

pub mod aisdk;
pub mod auth;
mod cors;
mod error;
mod json;
pub mod last_event_id;
pub mod metrics;
pub mod openai;
pub mod quickstart;
pub mod ready;
pub mod responses;
pub mod seed001;
pub mod seed002;
pub mod seed003;
mod serve;
pub mod sse;
mod state;
pub mod stop;
mod trace;
pub mod ws;

pub use cors::cors_layer;
pub use error::{method_not_allowed, not_found, ApiError, ErrorBody, ErrorDetail};
pub use json::{ApiJson, BodyLimit};
pub use last_event_id::LastEventId;
pub use serve::serve;
pub use sse::{sse_response, SseBody, SseConfig};
pub use state::{
    check_path_id, check_token_id, ChatstreamState, DEFAULT_BODY_LIMIT, DEFAULT_STREAM_TIME_LIMIT,
    MAX_ID_LEN,
};
pub use trace::{trace_layer, HttpTraceLayer};
