//! Seed 004's WebSocket at `GET /ws`.
//!
//! # Protocol
//!
//! Client → server, one JSON text (or binary) message per action:
//!
//! | action | effect |
//! |---|---|
//! | `{"action": "subscribe", "channel": "c"}` | from now on, every answer on channel `c` is sent here: each stream whose session id is `c` that is [announced](Channels) after the subscription. Several channels per connection; subscribing twice is a no-op. Nothing is sent back. |
//! | `{"action": "message", "channel": "c", "message_id": "m", "message": "…"}` | queues the question and sends its answer here (whether or not the connection subscribed to `c`), and to every other client subscribed to `c` |
//! | `{"action": "ping"}` | answered with `{"message": "pong", "timestamp": …, "status": "pong", "type": "pong", "message_id": "", "thread_id": ""}` |
//!
//! Actions are handled in order, so a `ping` after a `subscribe` is answered once the
//! subscription is in place.
//!
//! Server → client: seed 004's messages ([`Seed004Ws`]), each naming its `message_id` and
//! `thread_id`: `status` (`started`, `processing`, `responding`), `response` with status
//! `in_progress` per chunk, then `response` with `final_message: true`, status
//! `completed` and the whole answer; or `error`. Answers of several questions may
//! interleave; `message_id` tells them apart.
//!
//! Problems never close the connection; they are answered with an error in the same shape,
//! `error_details` holding a code:
//!
//! | `error_details` | when |
//! |---|---|
//! | `invalid_json` | the message is not JSON |
//! | `invalid_action` | unknown `action`, or a field missing |
//! | `invalid_field` | an empty `message`; a channel or message id that is empty, longer than 200 bytes or holds control characters |
//! | `duplicate_message_id` | a `message_id` this connection already used on that channel |
//! | `too_many_subscriptions`, `too_many_streams` | past [`WsConfig::with_max_channels`] / [`WsConfig::with_max_streams`] |
//! | `missed_answers` | the connection fell so far behind that it missed the news of new answers on a channel |
//! | a gateway code (`unavailable`, `timeout`, …) | the broker refused the question, or an answer ended early |
//!
//! Keep-alive: the server sends a WebSocket ping every [`WsConfig::with_ping_interval`]
//! (20 s) and closes (1001) a connection it heard nothing from, not even a pong, for two
//! periods; client pings are answered with pongs by the WebSocket layer. A client that reads
//! too slowly — more than [`WsConfig::with_send_buffer`] messages waiting — gets an error
//! with `error_details: "slow_consumer"` in place of what was waiting, then a close (1008);
//! one whose socket accepts nothing for [`WsConfig::with_send_timeout`] is dropped. On
//! shutdown, each followed answer ends with a `shutting_down` error and the connection
//! closes (1001). Messages larger than [`WsConfig::with_max_message_size`] close the
//! connection.

mod channels;
mod frames;
mod session;
mod writer;

use std::fmt::Display;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chatstream_core::wire::seed004::{Clock, Seed004Ws};
use futures::{Sink, Stream, StreamExt};
use tracing::Instrument;

pub use channels::{AnnouncingSource, Channels};

use crate::{ChatstreamState, ErrorBody, ErrorDetail};

/// Settings of the `/ws` route.
#[derive(Clone)]
pub struct WsConfig {
    ping_interval: Option<Duration>,
    send_buffer: usize,
    send_timeout: Duration,
    max_channels: usize,
    max_streams: usize,
    max_message_size: usize,
    clock: Clock,
}

impl std::fmt::Debug for WsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsConfig")
            .field("ping_interval", &self.ping_interval)
            .field("send_buffer", &self.send_buffer)
            .field("send_timeout", &self.send_timeout)
            .field("max_channels", &self.max_channels)
            .field("max_streams", &self.max_streams)
            .field("max_message_size", &self.max_message_size)
            .finish_non_exhaustive()
    }
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            ping_interval: Some(Duration::from_secs(20)),
            send_buffer: 256,
            send_timeout: Duration::from_secs(10),
            max_channels: 16,
            max_streams: 32,
            max_message_size: crate::DEFAULT_BODY_LIMIT,
            clock: Arc::new(system_seconds),
        }
    }
}

impl WsConfig {
    /// Sends a WebSocket ping after each `period` (default 20 s) and closes connections
    /// silent for two; `None` turns keep-alive off.
    pub fn with_ping_interval(mut self, period: Option<Duration>) -> Self {
        self.ping_interval = period.filter(|p| !p.is_zero());
        self
    }

    /// Messages that may wait for a slow client before it is cut off (default 256).
    pub fn with_send_buffer(mut self, messages: usize) -> Self {
        self.send_buffer = messages.max(1);
        self
    }

    /// Longest one write may stall before the connection is dropped (default 10 s).
    pub fn with_send_timeout(mut self, limit: Duration) -> Self {
        self.send_timeout = limit;
        self
    }

    /// Channels one connection may subscribe to (default 16).
    pub fn with_max_channels(mut self, n: usize) -> Self {
        self.max_channels = n;
        self
    }

    /// Answers one connection may follow at once (default 32).
    pub fn with_max_streams(mut self, n: usize) -> Self {
        self.max_streams = n;
        self
    }

    /// Largest client message accepted, in bytes (default 64 KiB, as the HTTP bodies).
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Takes the messages' `timestamp` from `clock` (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
}

/// The `/ws` endpoint: the gateway, the settings and the [`Channels`] directory. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct WsEndpoint {
    state: ChatstreamState,
    config: Arc<WsConfig>,
    channels: Channels,
    transport: Seed004Ws,
}

impl WsEndpoint {
    /// An endpoint on `state`'s gateway with default settings and its own directory.
    pub fn new(state: ChatstreamState) -> Self {
        Self {
            state,
            config: Arc::new(WsConfig::default()),
            channels: Channels::new(),
            transport: Seed004Ws::new(),
        }
    }

    /// Sets the settings.
    pub fn with_config(mut self, config: WsConfig) -> Self {
        self.transport = Seed004Ws::with_clock(config.clock.clone());
        self.config = Arc::new(config);
        self
    }

    /// Uses `channels` as the directory, e.g. one whose [`Channels::announcing`] wraps the
    /// worker's request source, so that requests published straight to the broker reach
    /// the subscribers of their channel.
    pub fn with_channels(mut self, channels: Channels) -> Self {
        self.channels = channels;
        self
    }

    /// The directory.
    pub fn channels(&self) -> &Channels {
        &self.channels
    }

    /// `GET /ws`.
    pub fn router(self) -> Router {
        Router::new().route("/ws", get(upgrade)).with_state(self)
    }

    /// Serves one connection given as a sink and a stream of messages (a split
    /// [`WebSocket`](axum::extract::ws::WebSocket), or channels in tests) until the client
    /// leaves, is cut off, or the server shuts down.
    pub async fn serve<W, R, E>(&self, sink: W, incoming: R)
    where
        W: Sink<Message> + Unpin + Send,
        W::Error: Display,
        R: Stream<Item = Result<Message, E>> + Unpin + Send,
        E: Display,
    {
        session::run(self.clone(), sink, incoming).await;
    }
}

/// Seconds since the epoch, as Python's `time.time()`.
fn system_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `GET /ws` on `state`'s gateway with default settings.
pub fn router(state: ChatstreamState) -> Router {
    WsEndpoint::new(state).router()
}

/// `GET /ws`: upgrades to a WebSocket; anything else is a JSON error.
async fn upgrade(
    State(endpoint): State<WsEndpoint>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            let body = ErrorBody {
                error: ErrorDetail {
                    code: "websocket_upgrade_required".to_owned(),
                    message: rejection.body_text(),
                },
            };
            return (rejection.status(), Json(body)).into_response();
        }
    };
    let size = endpoint.config.max_message_size;
    ws.max_message_size(size)
        .max_frame_size(size)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| {
            let (sink, incoming) = socket.split();
            let span = tracing::info_span!("ws");
            async move {
                tracing::debug!("WebSocket connected");
                endpoint.serve(sink, incoming).await;
                tracing::debug!("WebSocket closed");
            }
            .instrument(span)
        })
}
