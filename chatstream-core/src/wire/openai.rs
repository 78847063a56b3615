//! OpenAI chat completions: `chat.completion.chunk` SSE, the `chat.completion` object, and a
//! decoder of chunks (for tests and for OpenAI-compatible backends).
//!
//! Frames are compact JSON, as OpenAI writes them:
//!
//! | event | frames |
//! |---|---|
//! | first token or end | first a role chunk, `"delta":{"role":"assistant","content":""}` |
//! | token | `{"id":"chatcmpl-…","object":"chat.completion.chunk","created":…,"model":…,"choices":[{"index":0,"delta":{"content":"…"},"finish_reason":null}]}` |
//! | status | nothing |
//! | tool call (a tool the request offered) | a chunk `"delta":{"tool_calls":[{"index":n,"id":…,"type":"function","function":{"name":…,"arguments":…}}]}`, the whole call in one delta (`index` counts the calls from 0) |
//! | end | a chunk with `"delta":{}` and the finish reason; with `include_usage` and known usage a chunk `"choices":[]`, `"usage":{…}`; then `[DONE]` |
//! | error | `{"error":{"message":…,"type":"server_error","param":null,"code":null}}`; the end then sends only `[DONE]` |
//! | reset (redelivery) | error with code `reset`, then `[DONE]`: OpenAI clients append every delta and cannot drop text already shown |
//! | fault | error with the fault's code, then `[DONE]` |
//!
//! With `include_usage` every other chunk carries `"usage":null`, as OpenAI's do. Finish
//! reasons OpenAI does not know (`cancelled`, `error`) are sent as `stop`, since strict clients
//! reject unknown values.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use serde::Serialize;

use super::json::{push_compact_str, to_compact_json};
use super::sse::{push_id_line, render_into_bytes};
use crate::{ClientEvent, ClientTransport, FinishReason, Frame, FrameEncoder};
use crate::{StreamEvent, StreamKey, TokenEnvelope, Usage};

/// The SSE data that ends a stream.
pub const DONE: &str = "[DONE]";

/// What every chunk of one completion repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkMeta {
    /// `chatcmpl-…`.
    pub id: String,
    /// The model name.
    pub model: String,
    /// Unix seconds.
    pub created: u64,
}

/// Options of the [`OpenAiChunks`] transport.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenAiOptions {
    /// The completion id; `chatcmpl-{message_id}` when unset.
    pub id: Option<String>,
    /// The model name written in every chunk.
    pub model: String,
    /// Unix seconds; the time the encoder is made when unset.
    pub created: Option<u64>,
    /// `stream_options.include_usage`: send the usage chunk.
    pub include_usage: bool,
}

/// The OpenAI `chat.completion.chunk` SSE dialect.
#[derive(Debug, Clone, Default)]
pub struct OpenAiChunks {
    options: OpenAiOptions,
}

impl OpenAiChunks {
    /// A transport with these options.
    pub fn new(options: OpenAiOptions) -> Self {
        Self { options }
    }
}

impl ClientTransport for OpenAiChunks {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn encoder(&self, key: &StreamKey) -> Box<dyn FrameEncoder> {
        let o = &self.options;
        let created = o.created.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
        let meta = ChunkMeta {
            id: o
                .id
                .clone()
                .unwrap_or_else(|| format!("chatcmpl-{}", key.message_id)),
            model: o.model.clone(),
            created,
        };
        Box::new(OpenAiEncoder {
            meta,
            include_usage: o.include_usage,
            ..Default::default()
        })
    }
}

/// The OpenAI spelling of a finish reason; `cancelled` and `error` become `stop`.
pub fn finish_reason_str(reason: &FinishReason) -> &'static str {
    match reason {
        FinishReason::Cancelled | FinishReason::Error => "stop",
        other => other.as_str(),
    }
}

/// A finish reason read from an OpenAI-compatible server; unknown values are `stop`.
pub fn finish_reason_from_str(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

#[derive(Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChoiceOut<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

impl<'a> DeltaOut<'a> {
    fn content(content: Option<&'a str>) -> Self {
        Self {
            role: None,
            content,
            tool_calls: None,
        }
    }
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

/// `{"error":{"message":…,"type":…,"param":null,"code":…}}`.
pub fn error_json(message: &str, kind: &str, code: Option<&str>) -> String {
    to_compact_json(&ErrorOut {
        error: ErrorBody {
            message,
            kind,
            param: None,
            code,
        },
    })
}

#[derive(Debug, Default)]
struct OpenAiEncoder {
    meta: ChunkMeta,
    include_usage: bool,
    role_sent: bool,
    /// Tool calls sent (the `index` of the next).
    calls: u32,
    errored: bool,
    finished: bool,
    /// A token chunk with empty content, and where its `""` is: what the SSE fast path
    /// writes around a token's content. Made at the first token.
    token_template: Option<(String, usize)>,
}

impl OpenAiEncoder {
    fn chunk(&self, delta: DeltaOut<'_>, finish_reason: Option<&str>) -> String {
        let choice = [ChoiceOut {
            index: 0,
            delta,
            finish_reason,
        }];
        to_compact_json(&ChunkOut {
            id: &self.meta.id,
            object: "chat.completion.chunk",
            created: self.meta.created,
            model: &self.meta.model,
            choices: &choice,
            usage: self.include_usage.then_some(None),
        })
    }

    /// The data of a token chunk before and after the content's JSON string.
    fn token_template(&mut self) -> Option<(&str, &str)> {
        const CONTENT: &str = r#""content":"#;
        if self.token_template.is_none() {
            let chunk = self.chunk(DeltaOut::content(Some("")), None);
            // The last one: the id and model come before the delta, and escape their quotes.
            let at = chunk.rfind(r#""content":"""#)? + CONTENT.len();
            self.token_template = Some((chunk, at));
        }
        let (chunk, at) = self.token_template.as_ref()?;
        Some((&chunk[..*at], &chunk[*at + 2..]))
    }

    fn role_chunk(&mut self, seq: u64, out: &mut Vec<Frame>) {
        if !self.role_sent {
            self.role_sent = true;
            let delta = DeltaOut {
                role: Some("assistant"),
                ..DeltaOut::content(Some(""))
            };
            out.push(Frame::data(self.chunk(delta, None)).with_id(seq));
        }
    }

    fn envelope(&mut self, env: &TokenEnvelope, out: &mut Vec<Frame>) {
        let id = env.seq;
        match &env.event {
            StreamEvent::Token { text } => {
                self.role_chunk(id, out);
                let chunk = self.chunk(DeltaOut::content(Some(text)), None);
                out.push(Frame::data(chunk).with_id(id));
            }
            StreamEvent::ToolCall { call } => {
                self.role_chunk(id, out);
                let delta = DeltaOut {
                    tool_calls: Some([ToolCallDelta {
                        index: self.calls,
                        id: &call.id,
                        kind: "function",
                        function: FunctionDelta {
                            name: &call.name,
                            arguments: &call.arguments,
                        },
                    }]),
                    ..DeltaOut::content(None)
                };
                self.calls += 1;
                out.push(Frame::data(self.chunk(delta, None)).with_id(id));
            }
            StreamEvent::Error { message } => {
                self.errored = true;
                out.push(Frame::data(error_json(message, "server_error", None)).with_id(id));
            }
            StreamEvent::End {
                finish_reason,
                usage,
            } => {
                self.finished = true;
                if !self.errored {
                    self.role_chunk(id, out);
                    let delta = DeltaOut::content(None);
                    let chunk = self.chunk(delta, Some(finish_reason_str(finish_reason)));
                    out.push(Frame::data(chunk).with_id(id));
                    if let (true, Some(usage)) = (self.include_usage, usage) {
                        let chunk = to_compact_json(&ChunkOut {
                            id: &self.meta.id,
                            object: "chat.completion.chunk",
                            created: self.meta.created,
                            model: &self.meta.model,
                            choices: &[],
                            usage: Some(Some(*usage)),
                        });
                        out.push(Frame::data(chunk).with_id(id));
                    }
                }
                out.push(Frame::data(DONE).with_id(id));
            }
            StreamEvent::Status { .. } => {}
        }
    }
}

impl FrameEncoder for OpenAiEncoder {
    fn encode(&mut self, event: &ClientEvent, out: &mut Vec<Frame>) {
        if self.finished {
            return;
        }
        match event {
            ClientEvent::Envelope(env) => self.envelope(env, out),
            ClientEvent::Reset { .. } => {
                self.finished = true;
                let message = "the answer was interrupted and restarted; request it again";
                out.push(Frame::data(error_json(
                    message,
                    "server_error",
                    Some("reset"),
                )));
                out.push(Frame::data(DONE));
            }
            ClientEvent::Fault(fault) => {
                self.finished = true;
                let m = fault.message();
                out.push(Frame::data(error_json(
                    &m,
                    "server_error",
                    Some(fault.code()),
                )));
                out.push(Frame::data(DONE));
            }
        }
    }

    /// Writes a token's chunk (after the first, which the role chunk precedes) straight into
    /// `out`: the chunk's JSON around the content is made once, the content escaped in
    /// place. Everything else goes through `encode`.
    fn encode_sse(&mut self, event: &ClientEvent, out: &mut BytesMut) {
        if let (false, true, ClientEvent::Envelope(env)) = (self.finished, self.role_sent, event) {
            if let StreamEvent::Token { text } = &env.event {
                if let Some((head, tail)) = self.token_template() {
                    push_id_line(out, env.seq);
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(head.as_bytes());
                    push_compact_str(out, text);
                    out.extend_from_slice(tail.as_bytes());
                    out.extend_from_slice(b"\n\n");
                    return;
                }
            }
        }
        let mut frames = Vec::with_capacity(2);
        self.encode(event, &mut frames);
        frames.iter().for_each(|f| render_into_bytes(f, out));
    }
}

#[derive(Serialize)]
struct CompletionOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: CompletionMessage<'a>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct CompletionMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tool_calls: &'a [crate::ToolCall],
}

/// A non-streaming `chat.completion` object for a whole answer (`usage` omitted when
/// unknown). With `tool_calls` (calls of tools the request offered) the message carries
/// them, in OpenAI's shape, and its `content` is `null` when there is no text.
pub fn completion_json(
    meta: &ChunkMeta,
    text: &str,
    tool_calls: &[crate::ToolCall],
    finish_reason: &FinishReason,
    usage: Option<Usage>,
) -> String {
    to_compact_json(&CompletionOut {
        id: &meta.id,
        object: "chat.completion",
        created: meta.created,
        model: &meta.model,
        choices: [CompletionChoice {
            index: 0,
            message: CompletionMessage {
                role: "assistant",
                content: (!text.is_empty() || tool_calls.is_empty()).then_some(text),
                tool_calls,
            },
            finish_reason: finish_reason_str(finish_reason),
        }],
        usage,
    })
}

#[cfg(test)]
#[path = "openai_tests.rs"]
mod tests;

mod decode;
pub use decode::{parse_data, ApiError, ChunkDelta, OpenAiData};
