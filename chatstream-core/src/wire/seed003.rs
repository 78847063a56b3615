//! Seed 003 (ChatGPT queue worker, Go): RabbitMQ requests, `response_{uid}` queues, and the
//! REST streaming endpoint `GET /v1/chat/response?uid=`.
//!
//! **Requests** come in two forms, both decoded by [`decode_request`]:
//! `{"key": "<uuid>", "message": "…"}` (key → stream key `key/key`) and
//! `{"model", "messages": [{"role", "content"}], "stream", "username", "uid", "max_tokens"?}`
//! (uid → stream key `uid/uid`, `username` → user, every message kept). [`encode_request`]
//! writes the second form as Go's `json.Marshal` does.
//!
//! **Response queue**: the original worker publishes each delta's content as the raw body
//! (`text/plain`) and no end marker. [`response_body`] does the same for tokens; the end and
//! errors get a message too, told apart by [`ResponseKind`], which the AMQP adapter puts in the
//! message's `type` property (absent on the original's messages, read as a token). Finish
//! reason and usage are not carried. Statuses are not published.
//!
//! **REST SSE**: each token is a chunk built by the Go REST API from maps (so keys are sorted):
//! `{"choices":[{"delta":{"content":"Hi"},"finish_reason":null,"index":0}],"id":"<uid>","object":"chat.completion.chunk"}`;
//! at the end a chunk with empty content and the finish reason, then `[DONE]`. An error is
//! `{"error":{"message":"…"}}` and `[DONE]` follows at the end. A reset (redelivery) or a fault
//! is `{"error":{"code":"…","message":"…"}}` then `[DONE]`: chunk clients append every delta
//! and cannot drop text already shown, so the stream stops rather than splice two answers.

use serde::{Deserialize, Serialize};

use super::{from_json, json::to_go_json};
use crate::{ChatMessage, ChatRequest, ClientEvent, ClientTransport, Error, Frame, FrameEncoder};
use crate::{Result, StreamEvent, StreamKey, TokenEnvelope};

const WHAT: &str = "seed 003 request";
const WHAT_RESPONSE: &str = "seed 003 response";

/// The SSE data that ends a stream.
pub const DONE: &str = "[DONE]";

#[derive(Deserialize)]
struct RequestIn {
    key: Option<String>,
    message: Option<String>,
    model: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    #[serde(rename = "stream")]
    _stream: Option<bool>,
    username: Option<String>,
    uid: Option<String>,
    max_tokens: Option<u32>,
}

/// Decodes either request form.
pub fn decode_request(bytes: &[u8]) -> Result<ChatRequest> {
    let r: RequestIn = from_json(WHAT, bytes)?;
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    match (r.messages, r.key, r.message) {
        (Some(messages), _, _) => {
            let uid = r
                .uid
                .ok_or_else(|| Error::decode(WHAT, "missing field `uid`"))?;
            if messages.is_empty() {
                return Err(Error::decode(WHAT, "messages is empty"));
            }
            Ok(ChatRequest {
                key: StreamKey::new(uid.as_str(), uid.as_str()),
                messages,
                model: non_empty(r.model),
                user: non_empty(r.username),
                max_tokens: r.max_tokens.filter(|&n| n > 0),
                metadata: Default::default(),
            })
        }
        (None, Some(key), Some(message)) => Ok(ChatRequest::new(
            StreamKey::new(key.as_str(), key.as_str()),
            message,
        )),
        _ => Err(Error::decode(
            WHAT,
            "neither `key` and `message` nor `messages` and `uid`",
        )),
    }
}

#[derive(Serialize)]
struct RequestOut<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    username: &'a str,
    uid: &'a str,
}

/// Encodes the `model/messages/stream/username/uid` form as Go's `json.Marshal` of the REST
/// API's struct (`max_tokens` omitted when unset or 0). The uid is the key's session id.
pub fn encode_request(req: &ChatRequest) -> String {
    to_go_json(&RequestOut {
        model: req.model.as_deref().unwrap_or(""),
        messages: &req.messages,
        stream: true,
        max_tokens: req.max_tokens.filter(|&n| n > 0),
        username: req.user.as_deref().unwrap_or(""),
        uid: &req.key.session_id,
    })
}

/// The queue a request's answer goes to: `response_{uid}`.
pub fn response_queue(uid: &str) -> String {
    format!("response_{uid}")
}

/// What a response-queue message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseKind {
    /// A piece of the answer (the original's only kind).
    Token,
    /// The end of the answer (empty body).
    End,
    /// Generation failed; the body is the message.
    Error,
    /// The model asks the client to run a tool; the body is the call as JSON,
    /// `{"id", "type": "function", "function": {"name", "arguments"}}`.
    ToolCall,
}

impl ResponseKind {
    /// The value of the AMQP `type` property: `token`, `end`, `error`, `tool_call`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseKind::Token => "token",
            ResponseKind::End => "end",
            ResponseKind::Error => "error",
            ResponseKind::ToolCall => "tool_call",
        }
    }
}

/// One message for a `response_{uid}` queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseMessage {
    /// What it is (the AMQP `type` property).
    pub kind: ResponseKind,
    /// The raw body.
    pub body: Vec<u8>,
    /// The content type: `text/plain`, as the original.
    pub content_type: &'static str,
}

/// The response-queue message for an envelope; `None` for statuses.
pub fn response_body(env: &TokenEnvelope) -> Option<ResponseMessage> {
    let (kind, body) = match &env.event {
        StreamEvent::Token { text } => (ResponseKind::Token, text.as_bytes().to_vec()),
        StreamEvent::End { .. } => (ResponseKind::End, Vec::new()),
        StreamEvent::Error { message } => (ResponseKind::Error, message.as_bytes().to_vec()),
        StreamEvent::ToolCall { call } => {
            return Some(ResponseMessage {
                kind: ResponseKind::ToolCall,
                // A struct of strings always serializes.
                body: serde_json::to_vec(call).unwrap_or_default(),
                content_type: "application/json",
            });
        }
        StreamEvent::Status { .. } => return None,
    };
    Some(ResponseMessage {
        kind,
        body,
        content_type: "text/plain",
    })
}

/// Reads a response-queue message back: `kind` is the `type` property (absent: a token, as
/// the original worker sends). The end reads as finish reason `stop`.
pub fn decode_response(kind: Option<&str>, body: &[u8]) -> Result<StreamEvent> {
    let text = || {
        std::str::from_utf8(body)
            .map(str::to_owned)
            .map_err(|e| Error::decode(WHAT_RESPONSE, e))
    };
    match kind {
        None | Some("token") => Ok(StreamEvent::Token { text: text()? }),
        Some("end") => Ok(StreamEvent::End {
            finish_reason: crate::FinishReason::Stop,
            usage: None,
        }),
        Some("error") => Ok(StreamEvent::Error { message: text()? }),
        Some("tool_call") => Ok(StreamEvent::ToolCall {
            call: from_json(WHAT_RESPONSE, body)?,
        }),
        Some(other) => Err(Error::decode(
            WHAT_RESPONSE,
            format!("unknown type {other:?}"),
        )),
    }
}

#[derive(Serialize)]
struct ChunkOut<'a> {
    choices: [ChoiceOut<'a>; 1],
    id: &'a str,
    object: &'static str,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    delta: DeltaOut<'a>,
    finish_reason: Option<&'a str>,
    index: u32,
}

#[derive(Serialize)]
struct DeltaOut<'a> {
    content: &'a str,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    message: &'a str,
}

/// One REST SSE chunk, as the Go REST API writes it (sorted keys, compact).
pub fn chunk_json(uid: &str, content: &str, finish_reason: Option<&str>) -> String {
    to_go_json(&ChunkOut {
        choices: [ChoiceOut {
            delta: DeltaOut { content },
            finish_reason,
            index: 0,
        }],
        id: uid,
        object: "chat.completion.chunk",
    })
}

fn error_json(code: Option<&str>, message: &str) -> String {
    to_go_json(&ErrorOut {
        error: ErrorBody { code, message },
    })
}

/// The seed 003 REST SSE dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seed003Sse;

impl ClientTransport for Seed003Sse {
    fn name(&self) -> &'static str {
        "seed003"
    }

    fn encoder(&self, key: &StreamKey) -> Box<dyn FrameEncoder> {
        Box::new(Seed003Encoder {
            uid: key.session_id.to_string(),
            errored: false,
            finished: false,
        })
    }
}

#[derive(Debug)]
struct Seed003Encoder {
    uid: String,
    errored: bool,
    finished: bool,
}

impl FrameEncoder for Seed003Encoder {
    fn encode(&mut self, event: &ClientEvent, out: &mut Vec<Frame>) {
        if self.finished {
            return;
        }
        match event {
            ClientEvent::Envelope(env) => match &env.event {
                StreamEvent::Token { text } => {
                    out.push(Frame::data(chunk_json(&self.uid, text, None)).with_id(env.seq));
                }
                StreamEvent::Error { message } => {
                    self.errored = true;
                    out.push(Frame::data(error_json(None, message)).with_id(env.seq));
                }
                StreamEvent::End { finish_reason, .. } => {
                    self.finished = true;
                    if !self.errored {
                        let chunk = chunk_json(&self.uid, "", Some(finish_reason.as_str()));
                        out.push(Frame::data(chunk).with_id(env.seq));
                    }
                    out.push(Frame::data(DONE).with_id(env.seq));
                }
                StreamEvent::Status { .. } | StreamEvent::ToolCall { .. } => {}
            },
            ClientEvent::Reset { .. } => {
                self.finished = true;
                let message = "the answer was interrupted and restarted; request it again";
                out.push(Frame::data(error_json(Some("reset"), message)));
                out.push(Frame::data(DONE));
            }
            ClientEvent::Fault(fault) => {
                self.finished = true;
                out.push(Frame::data(error_json(
                    Some(fault.code()),
                    &fault.message(),
                )));
                out.push(Frame::data(DONE));
            }
        }
    }
}

#[cfg(test)]
#[path = "seed003_tests.rs"]
mod tests;
