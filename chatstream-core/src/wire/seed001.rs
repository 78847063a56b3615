//! Seed 001 (SSE service): `GET /api/stream/{sessionId}/{chatMessageId}`.
//!
//! Data lines, as the Python service writes them with `json.dumps`:
//!
//! | event | frame |
//! |---|---|
//! | token | `data: {"token": "text"}` with `id: seq` |
//! | status | nothing (seed 001 shows none) |
//! | error | `data: {"error": "message"}` with `id: seq` |
//! | end | `data: __END__` with `id: seq` |
//! | reset (redelivery) | `data: {"reset": true, "attempt": N}`: the nearest equivalent; a seed 001 client, finding no `token`, ignores it, a newer one drops the text shown so far |
//! | fault | `data: {"error": "…"}` then `data: __END__`, so `EventSource` clients stop |

use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use super::json::{push_python_str, to_python_json};
use super::sse::{push_id_line, render_into_bytes};
use crate::{ClientEvent, ClientTransport, Error, FrameEncoder, Result, StreamEvent, StreamKey};
use crate::{Frame, TokenEnvelope};

const WHAT: &str = "seed 001 SSE data";

/// The end-of-stream data line.
pub const END: &str = "__END__";

#[derive(Serialize)]
struct TokenOut<'a> {
    token: &'a str,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    error: &'a str,
}

#[derive(Serialize)]
struct ResetOut {
    reset: bool,
    attempt: u32,
}

/// `{"token": "…"}`.
pub fn token_data(text: &str) -> String {
    to_python_json(&TokenOut { token: text })
}

/// `{"error": "…"}`.
pub fn error_data(message: &str) -> String {
    to_python_json(&ErrorOut { error: message })
}

/// The seed 001 SSE dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seed001Sse;

impl ClientTransport for Seed001Sse {
    fn name(&self) -> &'static str {
        "seed001"
    }

    fn encoder(&self, _key: &StreamKey) -> Box<dyn FrameEncoder> {
        Box::new(Seed001Encoder { finished: false })
    }
}

#[derive(Debug)]
struct Seed001Encoder {
    finished: bool,
}

impl Seed001Encoder {
    fn envelope(&mut self, env: &TokenEnvelope, out: &mut Vec<Frame>) {
        let data = match &env.event {
            StreamEvent::Token { text } => token_data(text),
            StreamEvent::Error { message } => error_data(message),
            StreamEvent::End { .. } => {
                self.finished = true;
                END.to_owned()
            }
            StreamEvent::Status { .. } | StreamEvent::ToolCall { .. } => return,
        };
        out.push(Frame::data(data).with_id(env.seq));
    }
}

impl FrameEncoder for Seed001Encoder {
    fn encode(&mut self, event: &ClientEvent, out: &mut Vec<Frame>) {
        if self.finished {
            return;
        }
        match event {
            ClientEvent::Envelope(env) => self.envelope(env, out),
            ClientEvent::Reset { attempt } => out.push(Frame::data(to_python_json(&ResetOut {
                reset: true,
                attempt: *attempt,
            }))),
            ClientEvent::Fault(fault) => {
                self.finished = true;
                out.push(Frame::data(error_data(&fault.message())));
                out.push(Frame::data(END));
            }
        }
    }

    /// Writes a token's (or error's, or end's) frame straight into `out`, the JSON string
    /// escaped in place: `id: N`, `data: {"token": "…"}` (one line: the escaping leaves no
    /// line break), a blank line. Resets and faults go through `encode`.
    fn encode_sse(&mut self, event: &ClientEvent, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        let ClientEvent::Envelope(env) = event else {
            let mut frames = Vec::with_capacity(2);
            self.encode(event, &mut frames);
            frames.iter().for_each(|f| render_into_bytes(f, out));
            return;
        };
        let (open, text) = match &env.event {
            StreamEvent::Token { text } => (&b"data: {\"token\": "[..], text),
            StreamEvent::Error { message } => (&b"data: {\"error\": "[..], message),
            StreamEvent::End { .. } => {
                self.finished = true;
                push_id_line(out, env.seq);
                out.extend_from_slice(b"data: __END__\n\n");
                return;
            }
            StreamEvent::Status { .. } | StreamEvent::ToolCall { .. } => return,
        };
        push_id_line(out, env.seq);
        out.extend_from_slice(open);
        push_python_str(out, text);
        out.extend_from_slice(b"}\n\n");
    }
}

/// What one seed 001 data line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seed001Frame {
    /// `{"token": "…"}`.
    Token(String),
    /// `__END__`.
    End,
    /// `{"error": "…"}`.
    Error(String),
    /// `{"reset": true, "attempt": N}` (chatstream's addition).
    Reset {
        /// The new attempt.
        attempt: u32,
    },
}

#[derive(Deserialize)]
struct DataIn {
    token: Option<String>,
    error: Option<String>,
    reset: Option<bool>,
    attempt: Option<u32>,
}

/// Parses the payload of one `data:` line (without the `data: ` prefix).
pub fn parse_data(data: &str) -> Result<Seed001Frame> {
    if data == END {
        return Ok(Seed001Frame::End);
    }
    let d: DataIn = super::from_json(WHAT, data.as_bytes())?;
    match d {
        DataIn { token: Some(t), .. } => Ok(Seed001Frame::Token(t)),
        DataIn { error: Some(e), .. } => Ok(Seed001Frame::Error(e)),
        DataIn {
            reset: Some(true),
            attempt: Some(attempt),
            ..
        } => Ok(Seed001Frame::Reset { attempt }),
        _ => Err(Error::decode(WHAT, "neither token, error nor reset")),
    }
}

/// Parses one SSE line `data: …` (the space after the colon is optional).
pub fn parse_line(line: &str) -> Result<Seed001Frame> {
    let data = line
        .strip_prefix("data:")
        .ok_or_else(|| Error::decode(WHAT, "not a data line"))?;
    parse_data(data.strip_prefix(' ').unwrap_or(data))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Fault, FinishReason};

    fn run(events: &[ClientEvent]) -> Vec<Frame> {
        let mut enc = Seed001Sse.encoder(&StreamKey::new("s", "m"));
        let mut out = Vec::new();
        enc.open(&mut out);
        events.iter().for_each(|e| enc.encode(e, &mut out));
        out
    }

    fn ev(seq: u64, event: StreamEvent) -> ClientEvent {
        ClientEvent::Envelope(Arc::new(TokenEnvelope::new(
            StreamKey::new("s", "m"),
            1,
            seq,
            event,
        )))
    }

    #[test]
    fn frames_match_the_seed_document() {
        let end = StreamEvent::End {
            finish_reason: FinishReason::Stop,
            usage: None,
        };
        let frames = run(&[
            ev(0, StreamEvent::status(crate::Status::Started)),
            ev(1, StreamEvent::token("text")),
            ev(
                2,
                StreamEvent::Error {
                    message: "message".into(),
                },
            ),
            ev(3, end),
            ev(4, StreamEvent::token("after end")),
        ]);
        assert_eq!(
            frames,
            vec![
                Frame::data(r#"{"token": "text"}"#).with_id(1),
                Frame::data(r#"{"error": "message"}"#).with_id(2),
                Frame::data("__END__").with_id(3),
            ]
        );
        let body: String = frames.iter().map(super::super::sse::render).collect();
        assert!(body.contains("data: {\"token\": \"text\"}\n"));
        assert!(body.contains("data: __END__\n"));
    }

    #[test]
    fn fault_ends_the_stream_and_reset_is_announced() {
        let frames = run(&[
            ClientEvent::Reset { attempt: 2 },
            ClientEvent::Fault(Fault::SlowConsumer),
            ev(9, StreamEvent::token("x")),
        ]);
        assert_eq!(
            frames,
            vec![
                Frame::data(r#"{"reset": true, "attempt": 2}"#),
                Frame::data(r#"{"error": "client too slow: stream cut off"}"#),
                Frame::data("__END__"),
            ]
        );
        let parsed: Vec<_> = frames.iter().map(|f| parse_data(&f.data).ok()).collect();
        assert_eq!(
            parsed,
            vec![
                Some(Seed001Frame::Reset { attempt: 2 }),
                Some(Seed001Frame::Error(
                    "client too slow: stream cut off".into()
                )),
                Some(Seed001Frame::End),
            ]
        );
    }

    #[test]
    fn parse_accepts_tokens_and_rejects_garbage() {
        assert_eq!(
            parse_line(r#"data: {"token": "\u00e9"}"#).ok(),
            Some(Seed001Frame::Token("é".into()))
        );
        assert_eq!(parse_line("data:__END__").ok(), Some(Seed001Frame::End));
        assert_eq!(token_data("é\n"), r#"{"token": "\u00e9\n"}"#);
        for bad in [
            "",
            "__end__",
            "{}",
            r#"{"token": 1}"#,
            r#"{"reset": true}"#,
            "[1]",
            "{",
        ] {
            assert!(
                matches!(parse_data(bad), Err(Error::Decode { .. })),
                "{bad}"
            );
        }
        assert!(matches!(parse_line("event: x"), Err(Error::Decode { .. })));
    }
}
