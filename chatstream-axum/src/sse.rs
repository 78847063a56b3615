//! Writing a [`ClientStream`] as a `text/event-stream` response.
//!
//! The body is built by hand rather than with `axum::response::Sse` so that every frame a
//! [`FrameEncoder`] produces for one event (seed 001's fault is `{"error": …}` then
//! `__END__`) leaves in one chunk, and so that the frame text is exactly what
//! [`chatstream_core::wire::sse::render`] specifies: `id:` when set, `event:` when set, one
//! `data:` line per line of data, a blank line. Events that are ready together (a replay, a
//! burst) leave together in one chunk, so one write carries them. Each event is written
//! with [`FrameEncoder::encode_sse`] into one buffer the body keeps and reuses: a chunk is
//! split off it, and once hyper has written and dropped the chunk the space is taken back,
//! so a warm body allocates nothing per chunk (seed 001's and OpenAI's encoders write a
//! token's text straight into it, with no `String` per frame either).
//!
//! The body owns the [`ClientStream`] and nothing else holds it: when the client goes away,
//! hyper drops the body, the stream is dropped with it, and the gateway counts a disconnect
//! (and cancels the generation after its grace period if no other client watches).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use chatstream_core::wire::sse::render_into_bytes;
use chatstream_core::{ClientStream, ClientTransport, FrameEncoder};
use futures::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

/// The comment line sent when nothing else was written for a while.
pub const KEEP_ALIVE: &str = ": keep-alive\n\n";

/// Events rendered into one chunk at most, when many are ready at once.
const MAX_EVENTS_PER_CHUNK: usize = 64;
/// Bytes of SSE text gathered into one chunk, about, before it is sent.
const MAX_CHUNK: usize = 16 * 1024;
/// The body's buffer: its size when first allocated (at the first event), and the room made
/// at the start of each chunk (taking back the space of chunks already sent, or allocating
/// when one is still held).
const BUFFER: usize = 1024;
const CHUNK_ROOM: usize = 256;
/// A buffer grown past this by a burst is let go with the burst's chunk, so an idle
/// stream does not keep it.
const KEEP_BUFFER: usize = 4 * 1024;

/// How SSE responses are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseConfig {
    keep_alive: Option<Duration>,
}

impl Default for SseConfig {
    fn default() -> Self {
        Self {
            keep_alive: Some(Duration::from_secs(15)),
        }
    }
}

impl SseConfig {
    /// Sends [`KEEP_ALIVE`] after `period` without output (default 15 s), so proxies and
    /// load balancers do not close an idle stream; `None` turns it off.
    pub fn with_keep_alive(mut self, period: Option<Duration>) -> Self {
        self.keep_alive = period.filter(|p| !p.is_zero());
        self
    }

    /// The keep-alive period.
    pub fn keep_alive(&self) -> Option<Duration> {
        self.keep_alive
    }
}

/// A `200 text/event-stream` response carrying `events` in `transport`'s dialect, with
/// `Cache-Control: no-cache` and `X-Accel-Buffering: no` (nginx must not buffer it).
pub fn sse_response(
    events: ClientStream,
    transport: &dyn ClientTransport,
    config: &SseConfig,
) -> Response {
    let encoder = transport.encoder(events.key());
    let body = SseBody::new(events, encoder, config);
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

/// The frames of a stream as SSE text, one chunk per event or per group of events that were
/// ready together, with keep-alive comments.
pub struct SseBody {
    events: Option<ClientStream>,
    encoder: Box<dyn FrameEncoder>,
    opening: Option<Bytes>,
    keep_alive: Option<KeepAlive>,
    /// Where chunks are written; each chunk is split off it.
    buffer: BytesMut,
}

/// The keep-alive timer. A write only notes its time; the timer is moved when it fires
/// early, so a stream pays one timer operation per keep-alive period instead of one per
/// event.
struct KeepAlive {
    period: Duration,
    sleep: Pin<Box<Sleep>>,
    last_write: Instant,
}

impl std::fmt::Debug for SseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseBody")
            .field("events", &self.events)
            .field("encoder", &self.encoder)
            .finish_non_exhaustive()
    }
}

impl SseBody {
    /// A body writing `events` with `encoder`.
    pub fn new(
        events: ClientStream,
        mut encoder: Box<dyn FrameEncoder>,
        config: &SseConfig,
    ) -> Self {
        let mut frames = Vec::new();
        encoder.open(&mut frames);
        // Allocated at the first event, not here: an idle stream holds no buffer.
        let mut buffer = BytesMut::new();
        frames
            .iter()
            .for_each(|f| render_into_bytes(f, &mut buffer));
        let opening = (!buffer.is_empty()).then(|| buffer.split().freeze());
        Self {
            events: Some(events),
            encoder,
            opening,
            keep_alive: config.keep_alive.map(|period| KeepAlive {
                period,
                sleep: Box::pin(tokio::time::sleep(period)),
                last_write: Instant::now(),
            }),
            buffer,
        }
    }

    fn wrote(&mut self) {
        if let Some(k) = &mut self.keep_alive {
            k.last_write = Instant::now();
        }
    }
}

/// Splits what `buffer` holds off as a chunk; `None` when it holds nothing.
fn take_chunk(buffer: &mut BytesMut) -> Option<Bytes> {
    if buffer.is_empty() {
        return None;
    }
    let chunk = buffer.split().freeze();
    if chunk.len() + buffer.capacity() > KEEP_BUFFER {
        *buffer = BytesMut::new();
    }
    Some(chunk)
}

impl Stream for SseBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(chunk) = this.opening.take() {
            this.wrote();
            return Poll::Ready(Some(Ok(chunk)));
        }
        let Some(events) = this.events.as_mut() else {
            return Poll::Ready(None);
        };
        let mut gathered = 0;
        let mut ended = false;
        while gathered < MAX_EVENTS_PER_CHUNK {
            match events.poll_next_unpin(cx) {
                Poll::Ready(Some(event)) => {
                    if gathered == 0 {
                        let room = if this.buffer.capacity() == 0 {
                            BUFFER
                        } else {
                            CHUNK_ROOM
                        };
                        this.buffer.reserve(room);
                    }
                    this.encoder.encode_sse(&event, &mut this.buffer);
                    gathered += 1;
                    if this.buffer.len() >= MAX_CHUNK {
                        break;
                    }
                }
                Poll::Ready(None) => {
                    // Release the client's lease now rather than when hyper drops the body.
                    this.events = None;
                    ended = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if let Some(chunk) = take_chunk(&mut this.buffer) {
            this.wrote();
            return Poll::Ready(Some(Ok(chunk)));
        }
        if ended {
            return Poll::Ready(None);
        }
        if let Some(k) = &mut this.keep_alive {
            while k.sleep.as_mut().poll(cx).is_ready() {
                let now = Instant::now();
                let due = k.last_write + k.period;
                if due > now {
                    // Written to since the timer was set: wait the rest of the period.
                    k.sleep.as_mut().reset(due);
                    continue;
                }
                k.sleep.as_mut().reset(now + k.period);
                k.last_write = now;
                return Poll::Ready(Some(Ok(Bytes::from_static(KEEP_ALIVE.as_bytes()))));
            }
        }
        Poll::Pending
    }
}
