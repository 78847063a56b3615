//! The seed 002 event stream of one answer: [`Seed002Sse`]'s frames plus what the route
//! adds (connected, message saved, workflow complete, resume), under a time limit.

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use chatstream_core::wire::json::to_spaced_json;
use chatstream_core::wire::seed002::{iso_timestamp, EventKind, Seed002Sse};
use chatstream_core::wire::sse::render;
use chatstream_core::{
    ClientEvent, ClientStream, ClientTransport, Fault, FinishReason, Frame, FrameEncoder,
    StreamEvent, TokenEnvelope,
};
use futures::StreamExt;
use serde::Serialize;
use tokio::time::Instant;

use crate::sse::KEEP_ALIVE;

/// Wraps [`Seed002Sse`]'s encoder for the routes:
/// - `open` writes the route's first events (`connected`, `message_saved`);
/// - a successful end gets `workflow_complete` between the final `ai_response` and `done`;
/// - on resume, envelopes up to the client's `Last-Event-ID` are fed to the inner encoder
///   without being written, so the final `accumulated` is still the whole answer.
#[derive(Debug)]
pub(crate) struct RouteEncoder {
    inner: Box<dyn FrameEncoder>,
    opening: Vec<Frame>,
    skip_through: Option<u64>,
    thread_id: String,
    message_id: String,
}

impl RouteEncoder {
    pub(crate) fn new(
        key: &chatstream_core::StreamKey,
        opening: Vec<Frame>,
        skip_through: Option<u64>,
    ) -> Self {
        Self {
            inner: Seed002Sse::new().encoder(key),
            opening,
            skip_through,
            thread_id: key.session_id.to_string(),
            message_id: key.message_id.to_string(),
        }
    }

    fn workflow_complete(&self, finish: &FinishReason, seq: u64) -> Frame {
        let data = WorkflowComplete {
            message: "Workflow completed",
            thread_id: &self.thread_id,
            message_id: &self.message_id,
            finish_reason: finish.as_str(),
        };
        frame(EventKind::WorkflowComplete, &data).with_id(seq)
    }
}

impl FrameEncoder for RouteEncoder {
    fn open(&mut self, out: &mut Vec<Frame>) {
        out.append(&mut self.opening);
        self.inner.open(out);
    }

    fn encode(&mut self, event: &ClientEvent, out: &mut Vec<Frame>) {
        let ClientEvent::Envelope(env) = event else {
            return self.inner.encode(event, out);
        };
        if let Some(last) = self.skip_through {
            // End is never skipped: resuming at or after it gets the end again.
            if env.seq <= last && !env.event.is_end() {
                self.inner.encode(event, &mut Vec::new());
                return;
            }
            self.skip_through = None;
            // The stream was answered again after the client's attempt: tell it to reset.
            if env.attempt > TokenEnvelope::attempt_of_seq(last) {
                let reset = ClientEvent::Reset {
                    attempt: env.attempt,
                };
                self.inner.encode(&reset, out);
            }
        }
        let before = out.len();
        self.inner.encode(event, out);
        if let StreamEvent::End { finish_reason, .. } = &env.event {
            let ok = !matches!(finish_reason, FinishReason::Error | FinishReason::Cancelled);
            // The inner encoder writes the final `ai_response` then `done`.
            if ok && out.len() >= before + 2 {
                let frame = self.workflow_complete(finish_reason, env.seq);
                out.insert(out.len() - 1, frame);
            }
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WorkflowComplete<'a> {
    message: &'a str,
    thread_id: &'a str,
    message_id: &'a str,
    finish_reason: &'a str,
}

/// The data of `connected`: the document's `threadId`, then what a client needs to resume.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Connected<'a> {
    pub(crate) thread_id: &'a str,
    pub(crate) message_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stream_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) resume_url: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) resumed: bool,
}

#[derive(Serialize)]
struct EventOut<'a, D: Serialize> {
    #[serde(rename = "type")]
    kind: EventKind,
    data: &'a D,
    timestamp: String,
}

/// One seed 002 event frame, fields in the order given (the core's `event_frame` takes a
/// `serde_json::Value`, whose keys come out sorted).
pub(crate) fn frame<D: Serialize>(kind: EventKind, data: &D) -> Frame {
    Frame::data(to_spaced_json(&EventOut {
        kind,
        data,
        timestamp: iso_timestamp(SystemTime::now()),
    }))
}

/// A `connected` frame.
pub(crate) fn connected(data: &Connected<'_>) -> Frame {
    frame(EventKind::Connected, data)
}

/// A `message_saved` frame: `{"message": {…}}`.
pub(crate) fn message_saved<M: Serialize>(message: &M) -> Frame {
    #[derive(Serialize)]
    struct Saved<'a, M: Serialize> {
        message: &'a M,
    }
    frame(EventKind::MessageSaved, &Saved { message })
}

struct BodyState {
    events: Option<ClientStream>,
    encoder: RouteEncoder,
    deadline: Instant,
    keep_alive: Option<Duration>,
    opened: bool,
}

/// A `text/event-stream` response writing `events` with `encoder`, one chunk per event,
/// keep-alive comments after `keep_alive` of silence, and at `limit` an `error` event
/// (code `timeout`) then `done`, after which the client stream is dropped (so the gateway
/// cancels the generation once no one else watches).
pub(crate) fn limited_sse(
    events: ClientStream,
    encoder: RouteEncoder,
    limit: Duration,
    keep_alive: Option<Duration>,
) -> Response {
    let state = BodyState {
        events: Some(events),
        encoder,
        deadline: Instant::now() + limit,
        keep_alive,
        opened: false,
    };
    let body = futures::stream::unfold(state, next_chunk);
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn render_all(frames: &[Frame]) -> Option<Bytes> {
    if frames.is_empty() {
        return None;
    }
    Some(Bytes::from(frames.iter().map(render).collect::<String>()))
}

enum Step {
    Event(Option<ClientEvent>),
    TimeLimit,
    Quiet,
}

async fn next_chunk(mut st: BodyState) -> Option<(Result<Bytes, Infallible>, BodyState)> {
    let mut frames = Vec::new();
    if !st.opened {
        st.opened = true;
        st.encoder.open(&mut frames);
        if let Some(chunk) = render_all(&frames) {
            return Some((Ok(chunk), st));
        }
    }
    loop {
        let events = st.events.as_mut()?;
        let quiet_until = st.keep_alive.map(|p| Instant::now() + p);
        let step = tokio::select! {
            biased;
            ev = events.next() => Step::Event(ev),
            _ = tokio::time::sleep_until(st.deadline) => Step::TimeLimit,
            _ = tokio::time::sleep_until(quiet_until.unwrap_or(st.deadline)), if quiet_until.is_some() => Step::Quiet,
        };
        let event = match step {
            Step::Event(ev) => ev,
            Step::TimeLimit => {
                st.events = None;
                Some(ClientEvent::Fault(Fault::TimedOut))
            }
            Step::Quiet => return Some((Ok(Bytes::from_static(KEEP_ALIVE.as_bytes())), st)),
        };
        let Some(event) = event else {
            st.events = None;
            return None;
        };
        st.encoder.encode(&event, &mut frames);
        if let Some(chunk) = render_all(&frames) {
            return Some((Ok(chunk), st));
        }
    }
}
