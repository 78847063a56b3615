//! The frames the `/ws` route writes besides a stream's own: errors, pongs, and the
//! per-stream encoding.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::ws::Message;
use chatstream_core::wire::seed004::{Clock, WsMessage};
use chatstream_core::{ClientEvent, ClientStream, Fault, Frame, FrameEncoder};
use futures::{Stream, StreamExt};

/// Ids that tie a frame to a question: `message_id` and `thread_id` (the channel), empty
/// when unknown.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ids {
    pub(crate) message_id: String,
    pub(crate) thread_id: String,
}

impl Ids {
    /// The ids named in an action that could be parsed as JSON, if any.
    pub(crate) fn of_action(value: &serde_json::Value) -> Self {
        let field = |name: &str| value[name].as_str().unwrap_or_default().to_owned();
        Self {
            message_id: field("message_id"),
            thread_id: field("channel"),
        }
    }
}

/// A seed 004 error message: `{"message", "timestamp", "status": "error", "type": "error",
/// "error_details": <code>, "message_id", "thread_id"}`.
pub(crate) fn error(clock: &Clock, message: String, code: &str, ids: Ids) -> Message {
    Message::text(
        WsMessage {
            message,
            timestamp: clock(),
            status: "error".to_owned(),
            kind: "error".to_owned(),
            final_message: None,
            error_details: Some(code.to_owned()),
            message_id: ids.message_id,
            thread_id: ids.thread_id,
        }
        .to_json(),
    )
}

/// The answer to `{"action": "ping"}`: `{"message": "pong", "timestamp", "status": "pong",
/// "type": "pong", "message_id": "", "thread_id": ""}`.
pub(crate) fn pong(clock: &Clock) -> Message {
    Message::text(
        WsMessage {
            message: "pong".to_owned(),
            timestamp: clock(),
            status: "pong".to_owned(),
            kind: "pong".to_owned(),
            final_message: None,
            error_details: None,
            message_id: String::new(),
            thread_id: String::new(),
        }
        .to_json(),
    )
}

/// One followed stream as seed 004 messages: each item is the frames of one event, and the
/// fault that ended the stream, if one did.
pub(crate) struct Follow {
    events: ClientStream,
    encoder: Box<dyn FrameEncoder>,
}

impl std::fmt::Debug for Follow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follow")
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl Follow {
    pub(crate) fn new(events: ClientStream, encoder: Box<dyn FrameEncoder>) -> Self {
        Self { events, encoder }
    }
}

impl Stream for Follow {
    type Item = (Vec<Frame>, Option<Fault>);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        this.events.poll_next_unpin(cx).map(|event| {
            event.map(|event| {
                let mut frames = Vec::new();
                this.encoder.encode(&event, &mut frames);
                let fault = match event {
                    ClientEvent::Fault(f) => Some(f),
                    _ => None,
                };
                (frames, fault)
            })
        })
    }
}
