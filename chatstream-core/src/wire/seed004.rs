//! Seed 004 (OpenAI assistant streaming service): RabbitMQ requests and WebSocket messages.
//!
//! **Requests**: `{"channel": …, "message_id": …, "message": …}` → stream key
//! `channel/message_id`, one user message.
//!
//! **WebSocket messages** are Python `json.dumps` bytes with the document's key order:
//! `message, timestamp, status, type, final_message | error_details, message_id, thread_id`;
//! `timestamp` is Python's `time.time()` (seconds as a float, from an injectable [`Clock`]).
//!
//! | event | `type` / `status` | `message` |
//! |---|---|---|
//! | status started / processing / responding | `status` / same | the status detail, else "Assistant is processing your request..." / "Assistant is gathering information..." / "Assistant is generating a response..." |
//! | token | `response` / `in_progress` | the chunk |
//! | end | `response` / `completed`, `final_message: true` | the whole accumulated answer (nothing after an error) |
//! | error | `error` / `error`, `error_details` | the error message (also in `error_details`) |
//! | reset (redelivery) | `status` / `reset` | "Assistant is restarting its response (attempt N)..."; the accumulated text starts again |
//! | fault | `error` / `error`, `error_details` = the fault's code | the fault's message; nothing follows |
//!
//! `thread_id` is the `conversation_id` of the first status that carries one, else the
//! session id (the channel). Client → server actions (`subscribe`, `message`, `ping`, and
//! chatstream's `cancel`) decode
//! into [`ClientAction`].

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{from_json, json::to_python_json};
use crate::{ChatRequest, ClientEvent, ClientTransport, Error, Frame, FrameEncoder, Result};
use crate::{Status, StreamEvent, StreamKey, TokenEnvelope};

const WHAT: &str = "seed 004 request";
const WHAT_ACTION: &str = "seed 004 client action";
const WHAT_MESSAGE: &str = "seed 004 WebSocket message";

/// A source of the current time in seconds since the epoch, injectable for tests.
pub type Clock = Arc<dyn Fn() -> f64 + Send + Sync>;

#[derive(Serialize, Deserialize)]
struct RequestWire<T> {
    channel: T,
    message_id: T,
    message: T,
}

/// Decodes `{"channel", "message_id", "message"}`.
pub fn decode_request(bytes: &[u8]) -> Result<ChatRequest> {
    let r: RequestWire<String> = from_json(WHAT, bytes)?;
    Ok(ChatRequest::new(
        StreamKey::new(r.channel, r.message_id),
        r.message,
    ))
}

/// Encodes a request as Python's `json.dumps` of the document's example (last user message).
pub fn encode_request(req: &ChatRequest) -> String {
    to_python_json(&RequestWire {
        channel: &*req.key.session_id,
        message_id: &*req.key.message_id,
        message: req.last_user_text(),
    })
}

/// One WebSocket message from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WsMessage {
    /// Text for people: a status line, a chunk, the whole answer or an error.
    pub message: String,
    /// Seconds since the epoch.
    pub timestamp: f64,
    /// `started`, `processing`, `responding`, `in_progress`, `completed`, `error`, `reset`.
    pub status: String,
    /// `status`, `response` or `error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether this is the last message of the answer (all but errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_message: Option<bool>,
    /// Error details (errors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_details: Option<String>,
    /// The request's message id.
    pub message_id: String,
    /// The conversation (thread) id.
    pub thread_id: String,
}

impl WsMessage {
    /// Python `json.dumps` bytes in the document's key order.
    pub fn to_json(&self) -> String {
        to_python_json(self)
    }
}

/// Parses a server message (what a client receives).
pub fn parse_message(data: &str) -> Result<WsMessage> {
    from_json(WHAT_MESSAGE, data.as_bytes())
}

/// The seed 004 WebSocket dialect.
#[derive(Clone)]
pub struct Seed004Ws {
    clock: Clock,
}

impl std::fmt::Debug for Seed004Ws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seed004Ws").finish_non_exhaustive()
    }
}

impl Default for Seed004Ws {
    fn default() -> Self {
        Self::new()
    }
}

fn system_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Seed004Ws {
    /// Timestamps from the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(system_seconds))
    }

    /// Timestamps from `clock`.
    pub fn with_clock(clock: Clock) -> Self {
        Self { clock }
    }
}

impl ClientTransport for Seed004Ws {
    fn name(&self) -> &'static str {
        "seed004"
    }

    fn encoder(&self, key: &StreamKey) -> Box<dyn FrameEncoder> {
        Box::new(Seed004Encoder {
            clock: self.clock.clone(),
            message_id: key.message_id.to_string(),
            thread_id: key.session_id.to_string(),
            thread_known: false,
            text: String::new(),
            errored: false,
            finished: false,
        })
    }
}

struct Seed004Encoder {
    clock: Clock,
    message_id: String,
    thread_id: String,
    thread_known: bool,
    text: String,
    errored: bool,
    finished: bool,
}

impl std::fmt::Debug for Seed004Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seed004Encoder")
            .field("message_id", &self.message_id)
            .field("thread_id", &self.thread_id)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

fn status_text(status: Status) -> &'static str {
    match status {
        Status::Started => "Assistant is processing your request...",
        Status::Processing => "Assistant is gathering information...",
        Status::Responding => "Assistant is generating a response...",
    }
}

impl Seed004Encoder {
    fn message(&self, message: String, status: &str, kind: &str, last: Option<bool>) -> WsMessage {
        WsMessage {
            message,
            timestamp: (self.clock)(),
            status: status.to_owned(),
            kind: kind.to_owned(),
            final_message: last,
            error_details: None,
            message_id: self.message_id.clone(),
            thread_id: self.thread_id.clone(),
        }
    }

    fn error(&self, message: String, details: String) -> WsMessage {
        let mut m = self.message(message, "error", "error", None);
        m.error_details = Some(details);
        m
    }

    fn envelope(&mut self, env: &TokenEnvelope) -> Option<WsMessage> {
        Some(match &env.event {
            StreamEvent::Status {
                status,
                conversation_id,
                detail,
            } => {
                if let (false, Some(thread)) = (self.thread_known, conversation_id) {
                    self.thread_id.clone_from(thread);
                    self.thread_known = true;
                }
                let text = detail.as_deref().unwrap_or(status_text(*status)).to_owned();
                self.message(text, status.as_str(), "status", Some(false))
            }
            StreamEvent::Token { text } => {
                self.text.push_str(text);
                self.message(text.clone(), "in_progress", "response", Some(false))
            }
            StreamEvent::Error { message } => {
                self.errored = true;
                self.error(message.clone(), message.clone())
            }
            // Seed 004's front end has no message for a call it should run.
            StreamEvent::ToolCall { .. } => return None,
            StreamEvent::End { .. } => {
                self.finished = true;
                if self.errored {
                    return None;
                }
                let text = std::mem::take(&mut self.text);
                self.message(text, "completed", "response", Some(true))
            }
        })
    }
}

impl FrameEncoder for Seed004Encoder {
    fn encode(&mut self, event: &ClientEvent, out: &mut Vec<Frame>) {
        if self.finished {
            return;
        }
        match event {
            ClientEvent::Envelope(env) => {
                if let Some(m) = self.envelope(env) {
                    out.push(Frame::data(m.to_json()).with_id(env.seq));
                }
            }
            ClientEvent::Reset { attempt } => {
                self.text.clear();
                self.errored = false;
                let text = format!("Assistant is restarting its response (attempt {attempt})...");
                out.push(Frame::data(
                    self.message(text, "reset", "status", Some(false)).to_json(),
                ));
            }
            ClientEvent::Fault(fault) => {
                self.finished = true;
                let m = self.error(fault.message(), fault.code().to_owned());
                out.push(Frame::data(m.to_json()));
            }
        }
    }
}

/// What a WebSocket client asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAction {
    /// `{"action": "subscribe", "channel": …}`: receive the channel's answers.
    Subscribe {
        /// The channel.
        channel: String,
    },
    /// `{"action": "message", "channel", "message_id", "message"}`: ask something.
    Message(ChatRequest),
    /// `{"action": "ping"}`.
    Ping,
    /// `{"action": "cancel", "message_id", "channel"?}`: stop generating that answer (not in
    /// the seed; chatstream's explicit stop). Without `channel`, the connection's own
    /// answers are searched for the message id.
    Cancel {
        /// The channel, when given.
        channel: Option<String>,
        /// The message whose answer to stop.
        message_id: String,
    },
}

#[derive(Deserialize)]
struct ActionIn {
    action: String,
    channel: Option<String>,
    message_id: Option<String>,
    message: Option<String>,
}

/// Decodes a client action; an unknown action or a missing field is [`Error::Decode`].
pub fn decode_action(bytes: &[u8]) -> Result<ClientAction> {
    let a: ActionIn = from_json(WHAT_ACTION, bytes)?;
    let need = |v: Option<String>, field: &str| {
        v.ok_or_else(|| Error::decode(WHAT_ACTION, format!("{} without `{field}`", a.action)))
    };
    match a.action.as_str() {
        "subscribe" => Ok(ClientAction::Subscribe {
            channel: need(a.channel, "channel")?,
        }),
        "message" => {
            let key = StreamKey::new(
                need(a.channel, "channel")?,
                need(a.message_id, "message_id")?,
            );
            Ok(ClientAction::Message(ChatRequest::new(
                key,
                need(a.message, "message")?,
            )))
        }
        "ping" => Ok(ClientAction::Ping),
        "cancel" => Ok(ClientAction::Cancel {
            message_id: need(a.message_id, "message_id")?,
            channel: a.channel,
        }),
        other => Err(Error::decode(
            WHAT_ACTION,
            format!("unknown action {other:?}"),
        )),
    }
}

#[cfg(test)]
#[path = "seed004_tests.rs"]
mod tests;
