//! Seed 002 (streaming chat system): typed events on `POST /chat/threads/:threadId/messages/stream`.
//!
//! Every frame is `data: {"type": "…", "data": {…}, "timestamp": "2024-05-01T12:00:00.000Z"}`
//! with the timestamp as JavaScript's `toISOString` writes it. The original is TypeScript
//! (`JSON.stringify`: compact, non-ASCII as is), but the document shows `", "` and `": "`
//! separators; the vectors follow the document, so frames are written with
//! [`to_spaced_json`].
//!
//! | event | frame |
//! |---|---|
//! | connected, message saved | written by the route with [`event_frame`] |
//! | status | `workflow_status {"status": "started", "threadId"?, "detail"?}` |
//! | token | `ai_response {"content": "Hello", "isComplete": false}` |
//! | end | `ai_response {"content": "", "isComplete": true, "accumulated": "<full text>"}` then `done {"success": true}` (`false` when the finish reason is `error`) |
//! | error | `error {"error": "…"}` |
//! | reset (redelivery) | `workflow_status {"status": "reset", "attempt": N}`; the accumulated text starts again |
//! | fault | `error {"error": "…", "code": "…"}` then `done {"success": false}` |

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::json::to_spaced_json;
use crate::{ClientEvent, ClientTransport, FinishReason, Frame, FrameEncoder, Result};
use crate::{StreamEvent, StreamKey, TokenEnvelope};

const WHAT: &str = "seed 002 event";

/// A source of the current time, injectable for tests.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The `type` of a seed 002 event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Initial connection established: `{"threadId": …}`.
    Connected,
    /// User message saved: `{"message": {…}}`.
    MessageSaved,
    /// Workflow state changes.
    WorkflowStatus,
    /// A piece of the answer, or its completion.
    AiResponse,
    /// Workflow completion: `{"message": …}`.
    WorkflowComplete,
    /// Something failed: `{"error": …}`.
    Error,
    /// The stream is complete: `{"success": …}`.
    Done,
}

#[derive(Serialize)]
struct EventOut<'a, D: Serialize> {
    #[serde(rename = "type")]
    kind: EventKind,
    data: &'a D,
    timestamp: String,
}

/// One frame of any event: what routes use for `connected` and `message_saved`.
pub fn event_frame(kind: EventKind, data: &Value, now: SystemTime) -> Frame {
    typed_frame(kind, data, now)
}

fn typed_frame<D: Serialize>(kind: EventKind, data: &D, now: SystemTime) -> Frame {
    Frame::data(to_spaced_json(&EventOut {
        kind,
        data,
        timestamp: iso_timestamp(now),
    }))
}

/// A time as JavaScript's `Date.prototype.toISOString` writes it:
/// `2024-05-01T12:00:00.000Z`, years outside 0–9999 as `+010000`.
pub fn iso_timestamp(t: SystemTime) -> String {
    let ms: i128 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_millis()).unwrap_or(i128::MAX),
        // Before 1970: floor to the millisecond, as a JavaScript Date holds it.
        Err(e) => {
            let nanos = i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX);
            (-nanos).div_euclid(1_000_000)
        }
    };
    let days = i64::try_from(ms.div_euclid(86_400_000)).unwrap_or(i64::MAX / 2);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let year = if (0..=9999).contains(&y) {
        format!("{y:04}")
    } else {
        format!("{y:+07}")
    };
    format!(
        "{year}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// The seed 002 typed-event SSE dialect.
#[derive(Clone)]
pub struct Seed002Sse {
    clock: Clock,
}

impl std::fmt::Debug for Seed002Sse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seed002Sse").finish_non_exhaustive()
    }
}

impl Default for Seed002Sse {
    fn default() -> Self {
        Self::new()
    }
}

impl Seed002Sse {
    /// Timestamps from the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemTime::now))
    }

    /// Timestamps from `clock`.
    pub fn with_clock(clock: Clock) -> Self {
        Self { clock }
    }
}

impl ClientTransport for Seed002Sse {
    fn name(&self) -> &'static str {
        "seed002"
    }

    fn encoder(&self, _key: &StreamKey) -> Box<dyn FrameEncoder> {
        Box::new(Seed002Encoder {
            clock: self.clock.clone(),
            text: String::new(),
            finished: false,
        })
    }
}

struct Seed002Encoder {
    clock: Clock,
    text: String,
    finished: bool,
}

impl std::fmt::Debug for Seed002Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seed002Encoder")
            .field("text_len", &self.text.len())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AiResponse<'a> {
    content: &'a str,
    is_complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    accumulated: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WorkflowStatus<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    thread_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
}

#[derive(Serialize)]
struct ErrorData<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
}

#[derive(Serialize)]
struct Done {
    success: bool,
}

impl Seed002Encoder {
    fn envelope(&mut self, env: &TokenEnvelope, now: SystemTime, out: &mut Vec<Frame>) {
        let id = env.seq;
        match &env.event {
            StreamEvent::Status {
                status,
                conversation_id,
                detail,
            } => {
                let data = WorkflowStatus {
                    status: status.as_str(),
                    thread_id: conversation_id.as_deref(),
                    detail: detail.as_deref(),
                    attempt: None,
                };
                out.push(typed_frame(EventKind::WorkflowStatus, &data, now).with_id(id));
            }
            StreamEvent::Token { text } => {
                self.text.push_str(text);
                let data = AiResponse {
                    content: text,
                    is_complete: false,
                    accumulated: None,
                };
                out.push(typed_frame(EventKind::AiResponse, &data, now).with_id(id));
            }
            // Seed 002's client loop has no event for a call it should run.
            StreamEvent::ToolCall { .. } => {}
            StreamEvent::Error { message } => {
                let data = ErrorData {
                    error: message,
                    code: None,
                };
                out.push(typed_frame(EventKind::Error, &data, now).with_id(id));
            }
            StreamEvent::End { finish_reason, .. } => {
                self.finished = true;
                let data = AiResponse {
                    content: "",
                    is_complete: true,
                    accumulated: Some(&self.text),
                };
                out.push(typed_frame(EventKind::AiResponse, &data, now).with_id(id));
                let done = Done {
                    success: *finish_reason != FinishReason::Error,
                };
                out.push(typed_frame(EventKind::Done, &done, now).with_id(id));
            }
        }
    }
}

impl FrameEncoder for Seed002Encoder {
    fn encode(&mut self, event: &ClientEvent, out: &mut Vec<Frame>) {
        if self.finished {
            return;
        }
        let now = (self.clock)();
        match event {
            ClientEvent::Envelope(env) => self.envelope(env, now, out),
            ClientEvent::Reset { attempt } => {
                self.text.clear();
                let data = WorkflowStatus {
                    status: "reset",
                    thread_id: None,
                    detail: None,
                    attempt: Some(*attempt),
                };
                out.push(typed_frame(EventKind::WorkflowStatus, &data, now));
            }
            ClientEvent::Fault(fault) => {
                self.finished = true;
                let message = fault.message();
                let data = ErrorData {
                    error: &message,
                    code: Some(fault.code()),
                };
                out.push(typed_frame(EventKind::Error, &data, now));
                out.push(typed_frame(EventKind::Done, &Done { success: false }, now));
            }
        }
    }
}

/// One seed 002 event as a client receives it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Seed002Event {
    /// The event type.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// Its data.
    pub data: Value,
    /// Its ISO 8601 timestamp, as sent.
    pub timestamp: String,
}

/// Parses the payload of one `data:` line (without the `data: ` prefix).
pub fn parse_event(data: &str) -> Result<Seed002Event> {
    super::from_json(WHAT, data.as_bytes())
}

#[cfg(test)]
#[path = "seed002_tests.rs"]
mod tests;
