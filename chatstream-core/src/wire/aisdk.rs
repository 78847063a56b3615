//! Vercel AI SDK UI message stream, protocol v1 (what `useChat` reads), announced by the
//! [`HEADER`] response header.
//!
//! | event | frames (compact JSON) |
//! |---|---|
//! | connect | `{"type":"start","messageId":"<message id>"}` |
//! | first token | `{"type":"text-start","id":"text-<attempt>"}` |
//! | token | `{"type":"text-delta","id":"text-<attempt>","delta":"…"}` |
//! | status | nothing |
//! | error | `{"type":"error","errorText":"…"}` |
//! | end | `{"type":"text-end","id":…}` (when text started), `{"type":"finish"}`, `[DONE]` |
//! | reset (redelivery) | `error` then `[DONE]`: a UI message cannot drop text already streamed |
//! | fault | `error` then `[DONE]` |

use serde::Serialize;

use super::json::to_compact_json;
use crate::TokenEnvelope;
use crate::{ClientEvent, ClientTransport, Frame, FrameEncoder, StreamEvent, StreamKey};

/// The response header that marks a UI message stream.
pub const HEADER: (&str, &str) = ("x-vercel-ai-ui-message-stream", "v1");

/// The SSE data that ends a stream.
pub const DONE: &str = "[DONE]";

/// One part of the stream.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum Part<'a> {
    Start {
        #[serde(rename = "messageId")]
        message_id: &'a str,
    },
    TextStart {
        id: &'a str,
    },
    TextDelta {
        id: &'a str,
        delta: &'a str,
    },
    TextEnd {
        id: &'a str,
    },
    Error {
        #[serde(rename = "errorText")]
        error_text: &'a str,
    },
    Finish,
}

impl Part<'_> {
    fn frame(&self) -> Frame {
        Frame::data(to_compact_json(self))
    }
}

/// The AI SDK UI message stream dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct AiSdkUiStream;

impl ClientTransport for AiSdkUiStream {
    fn name(&self) -> &'static str {
        "aisdk"
    }

    fn encoder(&self, key: &StreamKey) -> Box<dyn FrameEncoder> {
        Box::new(AiSdkEncoder {
            message_id: key.message_id.to_string(),
            text_id: None,
            finished: false,
        })
    }
}

#[derive(Debug)]
struct AiSdkEncoder {
    message_id: String,
    /// The open text part, once a token arrived.
    text_id: Option<String>,
    finished: bool,
}

impl AiSdkEncoder {
    fn envelope(&mut self, env: &TokenEnvelope, out: &mut Vec<Frame>) {
        let seq = env.seq;
        match &env.event {
            StreamEvent::Token { text } => {
                if self.text_id.is_none() {
                    let id = format!("text-{}", env.attempt);
                    out.push(Part::TextStart { id: &id }.frame().with_id(seq));
                    self.text_id = Some(id);
                }
                let id = self.text_id.as_deref().unwrap_or_default();
                out.push(Part::TextDelta { id, delta: text }.frame().with_id(seq));
            }
            StreamEvent::Error { message } => {
                out.push(
                    Part::Error {
                        error_text: message,
                    }
                    .frame()
                    .with_id(seq),
                );
            }
            StreamEvent::End { .. } => {
                self.finished = true;
                if let Some(id) = &self.text_id {
                    out.push(Part::TextEnd { id }.frame().with_id(seq));
                }
                out.push(Part::Finish.frame().with_id(seq));
                out.push(Frame::data(DONE).with_id(seq));
            }
            // The AI SDK's tools are the server route's, not the browser's: a client
            // tool call has no reader here.
            StreamEvent::Status { .. } | StreamEvent::ToolCall { .. } => {}
        }
    }

    fn stop(&mut self, message: &str, out: &mut Vec<Frame>) {
        self.finished = true;
        out.push(
            Part::Error {
                error_text: message,
            }
            .frame(),
        );
        out.push(Frame::data(DONE));
    }
}

impl FrameEncoder for AiSdkEncoder {
    fn open(&mut self, out: &mut Vec<Frame>) {
        out.push(
            Part::Start {
                message_id: &self.message_id,
            }
            .frame(),
        );
    }

    fn encode(&mut self, event: &ClientEvent, out: &mut Vec<Frame>) {
        if self.finished {
            return;
        }
        match event {
            ClientEvent::Envelope(env) => self.envelope(env, out),
            ClientEvent::Reset { .. } => {
                self.stop("the answer was interrupted and restarted; ask again", out);
            }
            ClientEvent::Fault(fault) => self.stop(&fault.message(), out),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Fault, FinishReason, Status};

    fn run(events: &[ClientEvent]) -> Vec<Frame> {
        let mut enc = AiSdkUiStream.encoder(&StreamKey::new("s", "msg-1"));
        let mut out = Vec::new();
        enc.open(&mut out);
        events.iter().for_each(|e| enc.encode(e, &mut out));
        out
    }

    fn ev(seq: u64, event: StreamEvent) -> ClientEvent {
        let key = StreamKey::new("s", "msg-1");
        ClientEvent::Envelope(Arc::new(TokenEnvelope::new(key, 1, seq, event)))
    }

    #[test]
    fn ui_message_stream_is_byte_exact() {
        let frames = run(&[
            ev(0, StreamEvent::status(Status::Started)),
            ev(1, StreamEvent::token("Hel")),
            ev(2, StreamEvent::token("lo \"é\"")),
            ev(
                3,
                StreamEvent::End {
                    finish_reason: FinishReason::Stop,
                    usage: None,
                },
            ),
            ev(4, StreamEvent::token("late")),
        ]);
        assert_eq!(
            frames,
            vec![
                Frame::data(r#"{"type":"start","messageId":"msg-1"}"#),
                Frame::data(r#"{"type":"text-start","id":"text-1"}"#).with_id(1),
                Frame::data(r#"{"type":"text-delta","id":"text-1","delta":"Hel"}"#).with_id(1),
                Frame::data(r#"{"type":"text-delta","id":"text-1","delta":"lo \"é\""}"#).with_id(2),
                Frame::data(r#"{"type":"text-end","id":"text-1"}"#).with_id(3),
                Frame::data(r#"{"type":"finish"}"#).with_id(3),
                Frame::data("[DONE]").with_id(3),
            ]
        );
        assert_eq!(HEADER, ("x-vercel-ai-ui-message-stream", "v1"));
    }

    #[test]
    fn errors_resets_and_faults() {
        let frames = run(&[
            ev(
                0,
                StreamEvent::Error {
                    message: "boom".into(),
                },
            ),
            ev(
                1,
                StreamEvent::End {
                    finish_reason: FinishReason::Error,
                    usage: None,
                },
            ),
        ]);
        assert_eq!(
            frames[1],
            Frame::data(r#"{"type":"error","errorText":"boom"}"#).with_id(0)
        );
        assert_eq!(frames[2], Frame::data(r#"{"type":"finish"}"#).with_id(1));
        let frames = run(&[
            ClientEvent::Fault(Fault::TimedOut),
            ev(0, StreamEvent::token("x")),
        ]);
        assert_eq!(
            frames[1..],
            [
                Frame::data(
                    r#"{"type":"error","errorText":"stream exceeded the server's time limit"}"#
                ),
                Frame::data("[DONE]"),
            ]
        );
        let frames = run(&[ClientEvent::Reset { attempt: 2 }]);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[2], Frame::data("[DONE]"));
    }
}
