//! Wire dialects: codecs between chatstream's model and each documented system's bytes.
//!
//! One module per dialect. Every encoder is tested against byte-exact vectors copied from the
//! seed documents; every decoder turns unknown or malformed input into
//! [`Error::Decode`], never a panic.
//!
//! | module | dialect | seed | where it is used |
//! |---|---|---|---|
//! | [`json`] | Python `json.dumps`, Go `json.Marshal`, spaced JSON | all | byte-exact JSON for the others |
//! | [`seed000`] | `{"sessionId", "messageId", "token" \| "end_of_stream"}` + optional fields | 000 | the canonical broker format (requests and envelopes) |
//! | [`seed001`] | SSE `data: {"token": …}` / `__END__` / `{"error": …}` | 001 | `GET /api/stream/{sessionId}/{chatMessageId}` |
//! | [`seed002`] | SSE `{"type", "data", "timestamp"}` typed events | 002 | `POST /chat/threads/:threadId/messages/stream` |
//! | [`seed003`] | `{"key","message"}` / OpenAI-like requests, raw-text response bodies, sorted-key SSE chunks | 003 | RabbitMQ `default-queue` / `response_{uid}`, `GET /v1/chat/response?uid=` |
//! | [`seed004`] | `{"channel","message_id","message"}` requests, WebSocket status/response/error messages | 004 | RabbitMQ request queue, `/ws` |
//! | [`openai`] | `chat.completion.chunk` SSE and `chat.completion` | — | OpenAI-compatible endpoint, backend decoding |
//! | [`aisdk`] | Vercel AI SDK UI message stream v1 | — | `useChat` front ends |
//! | [`responses`] | OpenAI Responses API: the `response` object and its semantic events | — | `/v1/responses` |
//! | [`decode_request`] | any of the request forms above, told apart by field names | 000, 003, 004 | request queues several kinds of client publish to |
//! | [`sse`] | SSE text: render a [`Frame`](crate::Frame), parse a body | — | tests, adapters without an SSE library |
//!
//! # Ids, resets and faults
//!
//! Every frame produced for an envelope carries `Frame.id = Some(envelope.seq)`, so a client
//! that resumes with `Last-Event-ID: n` gets exactly what follows envelope `n`. Frames produced
//! for a [`ClientEvent::Reset`](crate::ClientEvent::Reset) or a
//! [`ClientEvent::Fault`](crate::ClientEvent::Fault) carry no id.
//!
//! | dialect | on `Reset { attempt }` | on `Fault` |
//! |---|---|---|
//! | seed 001 | `{"reset": true, "attempt": N}`, stream goes on | `{"error": …}` then `__END__` |
//! | seed 002 | `workflow_status {"status": "reset", "attempt": N}`, stream goes on | `error` then `done {"success": false}` |
//! | seed 003 SSE | error chunk then `[DONE]`: its clients cannot drop text | error chunk then `[DONE]` |
//! | seed 004 | status message with `"status": "reset"`, stream goes on | error message |
//! | openai | error object then `[DONE]`: OpenAI clients cannot drop text | error object then `[DONE]` |
//! | aisdk | `error` then `[DONE]` | `error` then `[DONE]` |
//! | responses | `error` (code `reset`), nothing more | `error` with the fault's code, nothing more |
//!
//! After its terminal frame (`__END__`, `[DONE]`, `done`, …) an encoder emits nothing more.

pub mod aisdk;
mod detect;
pub mod json;
pub mod openai;
pub mod responses;
pub mod seed000;
pub mod seed001;
pub mod seed002;
pub mod seed003;
pub mod seed004;
pub mod sse;

pub use detect::{decode_request, detect_request, RequestDialect};

use serde::Deserialize;

use crate::{Error, Result};

/// Parses JSON into `T`, mapping every failure (invalid UTF-8, syntax, missing field, wrong
/// type, out-of-range number) to [`Error::Decode`] naming `what`.
pub(crate) fn from_json<'a, T: Deserialize<'a>>(what: &'static str, bytes: &'a [u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::decode(what, e))
}

#[cfg(test)]
mod encode_sse_tests;
#[cfg(test)]
mod fuzz_tests;
