//! Seed 000 (Service Bus chat worker): the canonical broker format.
//!
//! Requests are `{"text": …, "sessionId": …, "messageId": …}`; tokens are
//! `{"sessionId": "s", "messageId": "m", "token": "H"}`; the end of a stream is
//! `{"sessionId": "s", "messageId": "m", "end_of_stream": true}`, all as Python's
//! `json.dumps` writes them.
//!
//! The canonical format ([`Mode::Canonical`]) is the same JSON with optional fields appended,
//! so a seed 000/001 peer reads it unchanged:
//!
//! | field | when |
//! |---|---|
//! | `"seq"` | always |
//! | `"attempt"` | only when it is not 1 (absent means 1) |
//! | `"type"` | always: `"token"`, `"end"`, `"error"`, `"status"` or `"tool_call"` |
//! | `"finish_reason"`, `"usage"` | `end` (`usage` when known) |
//! | `"error"` | `error` (no `token` field, so old peers skip it) |
//! | `"status"`, `"thread_id"`, `"detail"` | `status` (the last two when known) |
//! | `"tool_call"` | `tool_call`: `{"id", "type": "function", "function": {"name", "arguments"}}` |
//!
//! [`Mode::Seed000`] writes exactly the seed's fields: statuses, errors and tool calls have
//! no representation there and encode to `None`.
//!
//! [`decode_envelope`] accepts both forms and any valid JSON spelling. Without `"type"` the
//! kind is inferred: `end_of_stream: true` is an end (finish reason `stop`), a `token` is a
//! token, an `error` is an error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{from_json, json::to_python_json};
use crate::{
    ChatMessage, ChatRequest, Error, FinishReason, Result, Status, StreamEvent, StreamKey,
    TokenEnvelope, ToolCall, Usage,
};

const WHAT: &str = "seed 000 envelope";
const WHAT_REQUEST: &str = "seed 000 request";

/// Which fields [`encode_envelope`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Exactly seed 000's fields; statuses and errors are not representable.
    Seed000,
    /// Seed 000's fields plus the optional fields of the module table.
    Canonical,
}

#[derive(Serialize)]
struct WireOut<'a> {
    #[serde(rename = "sessionId")]
    session_id: &'a str,
    #[serde(rename = "messageId")]
    message_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_of_stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thread_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call: Option<&'a ToolCall>,
}

/// Encodes an envelope as seed 000 (or canonical) JSON, in Python `json.dumps` bytes.
/// Returns `None` when `mode` is [`Mode::Seed000`] and the event is a status or an error.
pub fn encode_envelope(env: &TokenEnvelope, mode: Mode) -> Option<String> {
    let canonical = mode == Mode::Canonical;
    let mut out = WireOut {
        session_id: &env.key.session_id,
        message_id: &env.key.message_id,
        token: None,
        end_of_stream: None,
        seq: canonical.then_some(env.seq),
        attempt: (canonical && env.attempt != 1).then_some(env.attempt),
        kind: None,
        finish_reason: None,
        usage: None,
        error: None,
        status: None,
        thread_id: None,
        detail: None,
        tool_call: None,
    };
    match &env.event {
        StreamEvent::Token { text } => {
            out.token = Some(text);
            out.kind = canonical.then_some("token");
        }
        StreamEvent::End {
            finish_reason,
            usage,
        } => {
            out.end_of_stream = Some(true);
            if canonical {
                out.kind = Some("end");
                out.finish_reason = Some(finish_reason.as_str());
                out.usage = *usage;
            }
        }
        StreamEvent::Error { message } if canonical => {
            out.kind = Some("error");
            out.error = Some(message);
        }
        StreamEvent::Status {
            status,
            conversation_id,
            detail,
        } if canonical => {
            out.kind = Some("status");
            out.status = Some(status.as_str());
            out.thread_id = conversation_id.as_deref();
            out.detail = detail.as_deref();
        }
        StreamEvent::ToolCall { call } if canonical => {
            out.kind = Some("tool_call");
            out.tool_call = Some(call);
        }
        StreamEvent::Error { .. } | StreamEvent::Status { .. } | StreamEvent::ToolCall { .. } => {
            return None
        }
    }
    Some(to_python_json(&out))
}

/// An envelope as read from the broker: `seq` is `None` for plain seed 000 messages, which
/// the adapter numbers by arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedEnvelope {
    /// Which stream.
    pub key: StreamKey,
    /// Delivery attempt (1 when absent).
    pub attempt: u32,
    /// Position in the stream, when the producer wrote one.
    pub seq: Option<u64>,
    /// What it says.
    pub event: StreamEvent,
}

impl DecodedEnvelope {
    /// The envelope, numbered `fallback_seq` when the message carried no `seq`.
    pub fn into_envelope(self, fallback_seq: u64) -> TokenEnvelope {
        TokenEnvelope::new(
            self.key,
            self.attempt,
            self.seq.unwrap_or(fallback_seq),
            self.event,
        )
    }
}

#[derive(Deserialize)]
struct WireIn {
    #[serde(rename = "sessionId")]
    session_id: String,
    #[serde(rename = "messageId")]
    message_id: String,
    token: Option<String>,
    end_of_stream: Option<bool>,
    seq: Option<u64>,
    attempt: Option<u32>,
    #[serde(rename = "type")]
    kind: Option<String>,
    finish_reason: Option<FinishReason>,
    usage: Option<Usage>,
    error: Option<String>,
    status: Option<Status>,
    thread_id: Option<String>,
    detail: Option<String>,
    tool_call: Option<ToolCall>,
}

/// Decodes a seed 000 or canonical envelope. Unknown `type`s, missing or mistyped fields,
/// attempt 0 and non-JSON input are [`Error::Decode`].
pub fn decode_envelope(bytes: &[u8]) -> Result<DecodedEnvelope> {
    let w: WireIn = from_json(WHAT, bytes)?;
    let attempt = w.attempt.unwrap_or(1);
    if attempt == 0 {
        return Err(Error::decode(WHAT, "attempt must be at least 1"));
    }
    let kind = match w.kind.as_deref() {
        Some(k) => k,
        None if w.end_of_stream == Some(true) => "end",
        None if w.token.is_some() => "token",
        None if w.error.is_some() => "error",
        None => return Err(Error::decode(WHAT, "neither token nor end_of_stream")),
    };
    let missing = |field: &str| Error::decode(WHAT, format!("{kind} without {field}"));
    let event = match kind {
        "token" => StreamEvent::Token {
            text: w.token.ok_or_else(|| missing("token"))?,
        },
        "end" => StreamEvent::End {
            finish_reason: w.finish_reason.unwrap_or(FinishReason::Stop),
            usage: w.usage,
        },
        "error" => StreamEvent::Error {
            message: w.error.ok_or_else(|| missing("error"))?,
        },
        "status" => StreamEvent::Status {
            status: w.status.ok_or_else(|| missing("status"))?,
            conversation_id: w.thread_id,
            detail: w.detail,
        },
        "tool_call" => StreamEvent::ToolCall {
            call: w.tool_call.ok_or_else(|| missing("tool_call"))?,
        },
        other => return Err(Error::decode(WHAT, format!("unknown type {other:?}"))),
    };
    Ok(DecodedEnvelope {
        key: StreamKey::new(w.session_id, w.message_id),
        attempt,
        seq: w.seq,
        event,
    })
}

#[derive(Serialize)]
struct RequestOut<'a> {
    text: &'a str,
    #[serde(rename = "sessionId")]
    session_id: &'a str,
    #[serde(rename = "messageId")]
    message_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<&'a [ChatMessage]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: &'a BTreeMap<String, String>,
}

/// Encodes a request as `{"text": …, "sessionId": …, "messageId": …}` in Python bytes:
/// exactly seed 000 for a request of one user message with nothing else set. Otherwise
/// `"messages"` (when not exactly one user message), `"model"`, `"user"`, `"max_tokens"` and
/// `"metadata"` are appended; `text` is always the last user message.
pub fn encode_request(req: &ChatRequest) -> String {
    let single_user = matches!(req.messages.as_slice(), [m] if m.role == crate::Role::User);
    to_python_json(&RequestOut {
        text: req.last_user_text(),
        session_id: &req.key.session_id,
        message_id: &req.key.message_id,
        messages: (!single_user).then_some(req.messages.as_slice()),
        model: req.model.as_deref(),
        user: req.user.as_deref(),
        max_tokens: req.max_tokens,
        metadata: &req.metadata,
    })
}

#[derive(Deserialize)]
struct RequestIn {
    text: Option<String>,
    #[serde(rename = "sessionId")]
    session_id: String,
    #[serde(rename = "messageId")]
    message_id: String,
    messages: Option<Vec<ChatMessage>>,
    model: Option<String>,
    user: Option<String>,
    max_tokens: Option<u32>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// Decodes a seed 000 request (or one written by [`encode_request`]): `messages` when present,
/// otherwise `text` as one user message.
pub fn decode_request(bytes: &[u8]) -> Result<ChatRequest> {
    let r: RequestIn = from_json(WHAT_REQUEST, bytes)?;
    let messages = match (r.messages, r.text) {
        (Some(m), _) if !m.is_empty() => m,
        (Some(_), _) => return Err(Error::decode(WHAT_REQUEST, "messages is empty")),
        (None, Some(text)) => vec![ChatMessage::user(text)],
        (None, None) => return Err(Error::decode(WHAT_REQUEST, "missing field `text`")),
    };
    Ok(ChatRequest {
        key: StreamKey::new(r.session_id, r.message_id),
        messages,
        model: r.model,
        user: r.user,
        max_tokens: r.max_tokens,
        metadata: r.metadata,
    })
}

#[cfg(test)]
#[path = "seed000_tests.rs"]
mod tests;
