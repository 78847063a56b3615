//! One WebSocket connection: a reader that handles the client's actions and follows
//! streams, and a writer that drains a bounded queue into the socket. Written against
//! `Sink`/`Stream` of [`Message`]s, so tests drive it with channels.

use std::fmt::Display;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, Message};
use bytes::Bytes;
use chatstream_core::wire::seed004::{decode_action, ClientAction};
use chatstream_core::{ChatRequest, ClientStream, ClientTransport, Fault, Frame, StreamKey};
use futures::{Sink, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_stream::StreamMap;

use super::channels::{Announcement, ChannelFeed, Seen};
use super::frames::{self, Follow, Ids};
use super::writer::{close, write};
use super::WsEndpoint;
use crate::state::check_path_id;
use crate::stop::stop_stream;
use crate::ApiError;

type Flow = ControlFlow<()>;
const GO: Flow = ControlFlow::Continue(());
const STOP: Flow = ControlFlow::Break(());

/// Serves one connection until the client leaves, is cut off, or the server shuts down.
pub(super) async fn run<W, R, E>(endpoint: WsEndpoint, sink: W, incoming: R)
where
    W: Sink<Message> + Unpin + Send,
    W::Error: Display,
    R: Stream<Item = Result<Message, E>> + Unpin + Send,
    E: Display,
{
    let config = endpoint.config.clone();
    let (out, queue) = mpsc::channel(config.send_buffer);
    let (cut, cut_rx) = oneshot::channel();
    let writer = write(sink, queue, cut_rx, config.send_timeout);
    tokio::pin!(writer);
    let reader = Reader {
        endpoint,
        out,
        cut: Some(cut),
        followed: StreamMap::new(),
        feeds: StreamMap::new(),
        seen: Seen::default(),
        last_heard: Instant::now(),
    };
    tokio::select! {
        // The client is gone or was cut off: stop following its streams.
        () = &mut writer => {}
        () = reader.run(incoming) => writer.await,
    }
}

struct Reader {
    endpoint: WsEndpoint,
    out: mpsc::Sender<Message>,
    cut: Option<oneshot::Sender<Message>>,
    followed: StreamMap<StreamKey, Follow>,
    feeds: StreamMap<Arc<str>, ChannelFeed>,
    seen: Seen,
    last_heard: Instant,
}

impl Reader {
    async fn run<R, E>(mut self, mut incoming: R)
    where
        R: Stream<Item = Result<Message, E>> + Unpin,
        E: Display,
    {
        let mut ping = self.endpoint.config.ping_interval.map(|period| {
            let mut i = tokio::time::interval_at(Instant::now() + period, period);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            (period, i)
        });
        loop {
            let flow = tokio::select! {
                message = incoming.next() => match message {
                    Some(Ok(message)) => {
                        self.last_heard = Instant::now();
                        self.on_message(message).await
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "WebSocket read failed");
                        STOP
                    }
                    None => STOP,
                },
                Some((_, (frames, fault))) = self.followed.next(), if !self.followed.is_empty() => {
                    self.on_frames(frames, fault.as_ref())
                }
                Some((channel, news)) = self.feeds.next(), if !self.feeds.is_empty() => {
                    self.on_news(&channel, news).await
                }
                period = tick(&mut ping) => self.on_tick(period),
            };
            if flow.is_break() {
                return;
            }
        }
    }

    async fn on_message(&mut self, message: Message) -> Flow {
        match message {
            Message::Text(text) => self.on_action(text.as_bytes()).await,
            Message::Binary(bytes) => self.on_action(&bytes).await,
            // axum answers pings by itself; a pong only proves the client is alive.
            Message::Ping(_) | Message::Pong(_) => GO,
            Message::Close(_) => STOP,
        }
    }

    async fn on_action(&mut self, bytes: &[u8]) -> Flow {
        let value: serde_json::Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                let message = format!("invalid JSON: {e}");
                return self.error(message, "invalid_json", Ids::default());
            }
        };
        let ids = Ids::of_action(&value);
        match decode_action(bytes) {
            Ok(ClientAction::Subscribe { channel }) => self.subscribe(channel, ids).await,
            Ok(ClientAction::Message(request)) => self.ask(request, ids).await,
            Ok(ClientAction::Ping) => self.push(frames::pong(&self.endpoint.config.clock)),
            Ok(ClientAction::Cancel {
                channel,
                message_id,
            }) => self.cancel(channel, message_id, ids).await,
            Err(e) => self.error(e.to_string(), "invalid_action", ids),
        }
    }

    /// Follows a channel: every answer started on it from now on, and the one being
    /// generated now, if the stream registry knows it (a browser that reconnects to another
    /// instance in the middle of an answer gets it again from its start: seed 004's
    /// messages carry no position to resume from).
    async fn subscribe(&mut self, channel: String, ids: Ids) -> Flow {
        if let Err(e) = check_path_id("channel", &channel) {
            return self.error(e.to_string(), "invalid_field", ids);
        }
        let channel: Arc<str> = Arc::from(channel);
        if self.feeds.contains_key(&channel) {
            return GO;
        }
        let max = self.endpoint.config.max_channels;
        if self.feeds.len() >= max {
            let message = format!("at most {max} subscriptions per connection");
            return self.error(message, "too_many_subscriptions", ids);
        }
        tracing::debug!(%channel, "WebSocket client subscribed");
        let feed = self.endpoint.channels.listen(channel.clone());
        self.feeds.insert(channel.clone(), feed);
        self.follow_running(&channel).await
    }

    /// Follows the channel's latest answer when it is still being generated.
    async fn follow_running(&mut self, channel: &str) -> Flow {
        let state = &self.endpoint.state;
        let latest = match state.stream_registry().latest(channel).await {
            Ok(Some(key)) => key,
            Ok(None) => return GO,
            Err(e) => {
                tracing::warn!(error = %e, "stream registry unreachable: not following the running answer");
                return GO;
            }
        };
        if self.seen.contains(&latest) {
            return GO;
        }
        match state.gateway().status(&latest).await {
            Ok(chatstream_core::StreamStatus::Open) => {}
            _ => return GO,
        }
        self.on_news(channel, Ok(latest)).await
    }

    async fn ask(&mut self, request: ChatRequest, ids: Ids) -> Flow {
        let key = request.key.clone();
        let checked = check_path_id("channel", &key.session_id)
            .and_then(|()| check_path_id("message_id", &key.message_id));
        if let Err(e) = checked {
            return self.error(e.to_string(), "invalid_field", ids);
        }
        if request.last_user_text().trim().is_empty() {
            let message = "invalid message: must not be empty".to_owned();
            return self.error(message, "invalid_field", ids);
        }
        if self.seen.contains(&key) {
            let message = "this message_id was already used on this connection".to_owned();
            return self.error(message, "duplicate_message_id", ids);
        }
        if let Some(flow) = self.check_room(&ids) {
            return flow;
        }
        if let Err(e) = self.endpoint.state.record_stream(&key, None).await {
            return self.error(e.client_message(), e.code(), ids);
        }
        match self.endpoint.state.gateway().submit(request).await {
            Ok(events) => {
                tracing::debug!(channel = %key.session_id, message_id = %key.message_id, "WebSocket request queued");
                self.seen.insert(key.clone());
                self.follow(events);
                self.endpoint.channels.announce(&key);
                GO
            }
            Err(e) => self.gateway_error(e, ids),
        }
    }

    /// `{"action": "cancel", "message_id", "channel"?}`: stops that answer from any instance
    /// (see [`crate::stop`]). Its `final` (the text so far) follows on every connection
    /// that reads it; nothing else is sent, unless the answer is unknown (an `error` with
    /// code `not_found`). Without `channel`, the answers this connection followed are
    /// searched for the message id.
    async fn cancel(&mut self, channel: Option<String>, message_id: String, ids: Ids) -> Flow {
        let key = match channel {
            Some(channel) => StreamKey::new(channel, message_id),
            None => {
                match self.seen.find_message(&message_id) {
                    Some(key) => key,
                    None => {
                        let message = format!("no answer to message {message_id:?} on this connection; name its channel");
                        return self.error(message, "not_found", ids);
                    }
                }
            }
        };
        let checked = check_path_id("channel", &key.session_id)
            .and_then(|()| check_path_id("message_id", &key.message_id));
        if let Err(e) = checked {
            return self.error(e.to_string(), "invalid_field", ids);
        }
        match stop_stream(&self.endpoint.state, &key).await {
            Ok(_) => GO,
            Err(ApiError::Missing(_)) => {
                let message = format!(
                    "no answer to message {:?} on channel {:?}",
                    key.message_id, key.session_id
                );
                self.error(message, "not_found", ids)
            }
            Err(ApiError::Gateway(e)) => self.gateway_error(e, ids),
            Err(e) => self.error(e.to_string(), "cancel_failed", ids),
        }
    }

    async fn on_news(&mut self, channel: &str, news: Announcement) -> Flow {
        let key = match news {
            Ok(key) => key,
            Err(missed) => {
                let message = format!("missed {missed} new answers on channel {channel}");
                let ids = Ids {
                    thread_id: channel.to_owned(),
                    ..Ids::default()
                };
                return self.error(message, "missed_answers", ids);
            }
        };
        if !self.seen.insert(key.clone()) {
            return GO;
        }
        let ids = Ids {
            message_id: key.message_id.to_string(),
            thread_id: key.session_id.to_string(),
        };
        if let Some(flow) = self.check_room(&ids) {
            return flow;
        }
        match self.endpoint.state.gateway().subscribe(&key, None).await {
            Ok(events) => {
                self.follow(events);
                GO
            }
            Err(e) => self.gateway_error(e, ids),
        }
    }

    /// `Some` (after an error frame) when the connection follows as many streams as it may.
    fn check_room(&mut self, ids: &Ids) -> Option<Flow> {
        let max = self.endpoint.config.max_streams;
        (self.followed.len() >= max).then(|| {
            let message = format!("at most {max} answers followed at once per connection");
            self.error(message, "too_many_streams", ids.clone())
        })
    }

    fn follow(&mut self, events: ClientStream) {
        let key = events.key().clone();
        let encoder = self.endpoint.transport.encoder(&key);
        self.followed.insert(key, Follow::new(events, encoder));
    }

    fn on_frames(&mut self, frames: Vec<Frame>, fault: Option<&Fault>) -> Flow {
        for frame in frames {
            self.push(Message::text(frame.data))?;
        }
        if fault == Some(&Fault::ShuttingDown) {
            self.push(close(close_code::AWAY, "server shutting down"))?;
            return STOP;
        }
        GO
    }

    fn on_tick(&mut self, period: Duration) -> Flow {
        if self.last_heard.elapsed() >= period * 2 {
            tracing::debug!("WebSocket client silent for two ping periods: closing");
            // Best effort: a client that does not read will not see it either.
            let _ = self.push(close(close_code::AWAY, "no pong"));
            return STOP;
        }
        self.push(Message::Ping(Bytes::new()))
    }

    fn gateway_error(&mut self, e: chatstream_core::Error, ids: Ids) -> Flow {
        let e = ApiError::from(e);
        if e.status().is_server_error() {
            tracing::warn!(error = %e, "WebSocket request failed");
        }
        self.error(e.client_message(), e.code(), ids)
    }

    fn error(&mut self, message: String, code: &str, ids: Ids) -> Flow {
        self.push(frames::error(
            &self.endpoint.config.clock,
            message,
            code,
            ids,
        ))
    }

    /// Queues a message; a full queue means the client reads too slowly: it is cut off.
    fn push(&mut self, message: Message) -> Flow {
        match self.out.try_send(message) {
            Ok(()) => GO,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("WebSocket client too slow: cut off");
                let gateway = self.endpoint.state.gateway();
                gateway
                    .metrics()
                    .slow_consumers
                    .fetch_add(1, Ordering::Relaxed);
                let fault = Fault::SlowConsumer;
                let config = &self.endpoint.config;
                let last =
                    frames::error(&config.clock, fault.message(), fault.code(), Ids::default());
                if let Some(cut) = self.cut.take() {
                    let _ = cut.send(last);
                }
                STOP
            }
            Err(mpsc::error::TrySendError::Closed(_)) => STOP,
        }
    }
}

/// The next ping tick and the period, or never without keep-alive.
async fn tick(ping: &mut Option<(Duration, Interval)>) -> Duration {
    match ping {
        Some((period, interval)) => {
            interval.tick().await;
            *period
        }
        None => std::future::pending().await,
    }
}
