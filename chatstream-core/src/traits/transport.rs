//! Client dialects: turning a stream's events into the frames one kind of client expects.

use std::borrow::Cow;
use std::fmt::Debug;
use std::sync::Arc;

use bytes::BytesMut;

use crate::{StreamKey, TokenEnvelope};

/// Why a gateway ended a client's stream early.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The client resumed from a position the broker no longer holds.
    HistoryLost,
    /// The client read too slowly and was cut off.
    SlowConsumer,
    /// The stream ran past the server's time limit.
    TimedOut,
    /// The broker failed.
    Unavailable(String),
    /// The gateway is shutting down.
    ShuttingDown,
}

impl Fault {
    /// A short machine-readable code (`history_lost`, `slow_consumer`, …).
    pub fn code(&self) -> &'static str {
        match self {
            Fault::HistoryLost => "history_lost",
            Fault::SlowConsumer => "slow_consumer",
            Fault::TimedOut => "timeout",
            Fault::Unavailable(_) => "unavailable",
            Fault::ShuttingDown => "shutting_down",
        }
    }

    /// A message for people.
    pub fn message(&self) -> String {
        match self {
            Fault::HistoryLost => {
                "history lost: the requested part of the stream is no longer held".into()
            }
            Fault::SlowConsumer => "client too slow: stream cut off".into(),
            Fault::TimedOut => "stream exceeded the server's time limit".into(),
            Fault::Unavailable(m) => format!("broker unavailable: {m}"),
            Fault::ShuttingDown => "server shutting down".into(),
        }
    }
}

/// What a gateway delivers to one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// An envelope of the stream.
    Envelope(Arc<TokenEnvelope>),
    /// The request was redelivered and is being answered again from the start: drop what
    /// was shown of the earlier attempt.
    Reset {
        /// The new attempt.
        attempt: u32,
    },
    /// The stream ended early; nothing follows.
    Fault(Fault),
}

/// One frame for a client: an SSE event or a WebSocket text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// SSE `id:` (the envelope's `seq`), when the frame resumes from there.
    pub id: Option<u64>,
    /// SSE `event:` name, when the dialect uses named events.
    pub event: Option<Cow<'static, str>>,
    /// The payload (SSE `data:`; WebSocket text).
    pub data: String,
}

impl Frame {
    /// A frame with data only.
    pub fn data(data: impl Into<String>) -> Self {
        Self {
            id: None,
            event: None,
            data: data.into(),
        }
    }
    /// Sets the id.
    pub fn with_id(mut self, id: u64) -> Self {
        self.id = Some(id);
        self
    }
}

/// Encodes one client's stream; may keep state (accumulated text, chunk ids).
pub trait FrameEncoder: Send + Debug {
    /// Frames sent when the client connects, before any event.
    fn open(&mut self, out: &mut Vec<Frame>) {
        let _ = out;
    }
    /// Frames for one event; may push none (a status a dialect does not show).
    fn encode(&mut self, event: &ClientEvent, out: &mut Vec<Frame>);

    /// Appends the SSE text of the frames [`encode`](Self::encode) would push for `event`
    /// to `out`, each as [`wire::sse::render`](crate::wire::sse::render) writes it; the SSE
    /// body calls this for every event, into one buffer it reuses.
    ///
    /// The default calls `encode` and renders its frames. A dialect may override it to
    /// write the text directly, without a `String` per frame; an override must write
    /// exactly the default's bytes and change the encoder's state as `encode` does.
    fn encode_sse(&mut self, event: &ClientEvent, out: &mut BytesMut) {
        let mut frames = Vec::new();
        self.encode(event, &mut frames);
        for frame in &frames {
            crate::wire::sse::render_into_bytes(frame, out);
        }
    }
}

/// A client dialect: makes one [`FrameEncoder`] per client stream.
pub trait ClientTransport: Send + Sync + Debug + 'static {
    /// The dialect's name (`seed001`, `openai`, …), for logs and metrics.
    fn name(&self) -> &'static str;
    /// A fresh encoder for a client of `key`.
    fn encoder(&self, key: &StreamKey) -> Box<dyn FrameEncoder>;
}

/// A transport as a trait object.
pub type DynClientTransport = dyn ClientTransport;

impl<T: ClientTransport + ?Sized> ClientTransport for Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn encoder(&self, key: &StreamKey) -> Box<dyn FrameEncoder> {
        (**self).encoder(key)
    }
}
