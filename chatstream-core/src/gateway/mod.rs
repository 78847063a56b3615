//! The gateway runtime: submits requests and serves their streams to clients.
//!
//! One broker subscription per stream per gateway (a *hub*), shared by every local client of
//! that stream; each client has a bounded buffer, catches up from the hub's bounded history
//! when the buffer overflows, and is cut off with [`Fault::SlowConsumer`](crate::Fault) when
//! it falls further behind than that history, so memory stays bounded. When
//! the last client of an unfinished stream goes away (and none comes back within
//! [`GatewayConfig::cancel_grace`]), a cancel is published so the worker stops generating.

mod client;
mod hub;

use foldhash::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

pub use client::ClientStream;
use hub::Hub;

use crate::{
    meta, ChatRequest, DynCancelChannel, DynRequestSink, DynTokenSource, Error, FinishReason,
    Result, StreamKey, StreamStatus,
};

/// Longest a submit waits for its stream's broker subscription before giving up.
const SUBSCRIBE_LIMIT: Duration = Duration::from_secs(30);

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Envelopes queued for one client at most (its memory, allocated only while envelopes
    /// wait). A client whose queue fills catches up from the hub's history once it has read
    /// the queue, and is cut off as a slow consumer only when the history no longer holds
    /// what it missed ([`GatewayConfig::hub_history`] behind). 1024: an in-process broker
    /// hands a hub a whole publish at once, before the client's task runs.
    pub client_buffer: usize,
    /// Envelopes a hub keeps so late local clients and reconnects replay without the broker,
    /// and a client that fell a whole queue behind catches up. 4096: how far behind a
    /// client may fall before it is cut off.
    pub hub_history: usize,
    /// How long an unfinished stream with no client waits for one to come back before a
    /// cancel is published (EventSource reconnects within ~3 s by default).
    pub cancel_grace: Duration,
    /// How long a stream submitted without a client is followed, waiting for one.
    pub detached_hold: Duration,
    /// Longest a client stream may stay open; past it the client gets a timeout fault.
    pub stream_timeout: Option<Duration>,
    /// Longest a client waits for the next envelope (including the first, so a stream that
    /// never starts does not hold a client forever); past it the client gets a timeout fault.
    pub idle_timeout: Option<Duration>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            client_buffer: 1024,
            hub_history: 4096,
            cancel_grace: Duration::from_secs(5),
            detached_hold: Duration::from_secs(60),
            stream_timeout: None,
            idle_timeout: Some(Duration::from_secs(300)),
        }
    }
}

/// Counters of a gateway (exported by the HTTP layer as Prometheus metrics).
#[derive(Debug, Default)]
pub struct GatewayMetrics {
    /// Client streams opened.
    pub clients_opened: AtomicU64,
    /// Client streams closed (any reason).
    pub clients_closed: AtomicU64,
    /// Client streams that went away before the end of their stream.
    pub client_disconnects: AtomicU64,
    /// Clients cut off for reading too slowly.
    pub slow_consumers: AtomicU64,
    /// Token envelopes delivered to clients.
    pub tokens_relayed: AtomicU64,
    /// Cancels published.
    pub cancels_published: AtomicU64,
    /// Sum of time-to-first-token of submitted streams, microseconds.
    pub ttft_micros_sum: AtomicU64,
    /// Streams whose time to first token was measured.
    pub ttft_count: AtomicU64,
}

impl GatewayMetrics {
    /// Client streams open now.
    pub fn clients_active(&self) -> u64 {
        let opened = self.clients_opened.load(Ordering::Relaxed);
        opened.saturating_sub(self.clients_closed.load(Ordering::Relaxed))
    }
}

/// What an explicit [`Gateway::stop`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopOutcome {
    /// The cancel was published: the worker generating the stream stops within one token
    /// and ends it with `End { finish_reason: Cancelled, usage }`, which every reader of the
    /// stream sees, on every gateway instance. Also the answer where the token source keeps
    /// no record of streams ([`StreamStatus::Untracked`]): the cancel is published, and is
    /// a no-op for a stream that already ended.
    Stopping,
    /// The stream had already ended; nothing was published. Stopping is idempotent: a
    /// second stop of a stopped stream says `Ended { finish_reason: Cancelled }`.
    Ended {
        /// How it ended.
        finish_reason: FinishReason,
    },
    /// Neither this gateway nor the token source holds the stream (never published, or
    /// its retention expired); nothing was published. A caller that knows the stream was
    /// submitted (and may still wait in the request queue) can [`Gateway::cancel`] it.
    Unknown,
}

/// Submits requests and serves their streams. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    requests: Arc<DynRequestSink>,
    tokens: Arc<DynTokenSource>,
    cancels: Option<Arc<DynCancelChannel>>,
    config: GatewayConfig,
    hubs: Mutex<HashMap<StreamKey, Arc<Hub>>>,
    metrics: GatewayMetrics,
    shutdown: watch::Sender<bool>,
}

/// Builds a [`Gateway`].
#[derive(Debug)]
pub struct GatewayBuilder {
    requests: Arc<DynRequestSink>,
    tokens: Arc<DynTokenSource>,
    cancels: Option<Arc<DynCancelChannel>>,
    config: GatewayConfig,
}

impl GatewayBuilder {
    /// Sets the cancel channel (without one, client disconnects cancel nothing).
    pub fn cancels(mut self, cancels: Arc<DynCancelChannel>) -> Self {
        self.cancels = Some(cancels);
        self
    }
    /// Sets the configuration.
    pub fn config(mut self, config: GatewayConfig) -> Self {
        self.config = config;
        self
    }
    /// The gateway.
    pub fn build(self) -> Gateway {
        Gateway {
            inner: Arc::new(Inner {
                requests: self.requests,
                tokens: self.tokens,
                cancels: self.cancels,
                config: self.config,
                hubs: Mutex::new(HashMap::default()),
                metrics: GatewayMetrics::default(),
                shutdown: watch::channel(false).0,
            }),
        }
    }
}

impl Gateway {
    /// A gateway submitting to `requests` and reading envelopes from `tokens`.
    pub fn builder(requests: Arc<DynRequestSink>, tokens: Arc<DynTokenSource>) -> GatewayBuilder {
        GatewayBuilder {
            requests,
            tokens,
            cancels: None,
            config: GatewayConfig::default(),
        }
    }

    /// Subscribes to the request's stream, then submits the request, so no envelope can be
    /// missed even on a broker that keeps no history. The returned stream ends after `End`.
    pub async fn submit(&self, request: ChatRequest) -> Result<ClientStream> {
        let request = self.prepare(request);
        let hub = self.hub_for(&request.key, None);
        let stream = hub.join(&self.inner, None);
        hub.ready(SUBSCRIBE_LIMIT).await?;
        self.send(request).await?;
        Ok(stream)
    }

    /// Hands the request to the broker in a `send` span (OpenTelemetry messaging
    /// conventions), whose trace context the request carries to the worker.
    async fn send(&self, mut request: ChatRequest) -> Result<()> {
        let span = tracing::info_span!(
            "send",
            otel.name = "send chat request",
            otel.kind = "producer",
            messaging.operation.type = "send",
            messaging.operation.name = "submit",
            gen_ai.request.model = request.model.as_deref().unwrap_or_default(),
        );
        crate::trace::inject_metadata(&span, &mut request.metadata);
        tracing::Instrument::instrument(self.inner.requests.submit(&request), span).await
    }

    /// Submits a request whose stream a client will fetch later (with
    /// [`Gateway::subscribe`]); the gateway follows it for [`GatewayConfig::detached_hold`].
    pub async fn submit_detached(&self, request: ChatRequest) -> Result<()> {
        let request = self.prepare(request);
        let hub = self.hub_for(&request.key, None);
        hub.hold(&self.inner, self.inner.config.detached_hold);
        hub.ready(SUBSCRIBE_LIMIT).await?;
        self.send(request).await
    }

    /// A client stream of `key`, replaying what came after `after_seq` (`None`: from the
    /// start). Fails with [`Error::HistoryLost`] only through the
    /// stream (as a [`Fault`](crate::Fault)), so every dialect can tell the client.
    ///
    /// A resume (`after_seq` given) of a stream that neither this gateway nor the token
    /// source holds fails at once with `HistoryLost`: the client saw envelopes that are gone
    /// (retention expired, or ids from another deployment), and waiting would only end in
    /// the idle timeout. So does any read, on the reply-to topology without a history log,
    /// of a stream this gateway did not submit (its envelopes go to the submitting
    /// gateway's queue only).
    pub async fn subscribe(&self, key: &StreamKey, after_seq: Option<u64>) -> Result<ClientStream> {
        let replies_here = self.inner.tokens.reply_address().is_some();
        if (after_seq.is_some() || replies_here) && !self.inner.lock_hubs().contains_key(key) {
            // Reply-to keeps no record and sends a stream's envelopes only to the gateway
            // that submitted it: another instance would wait for the idle timeout, so it
            // says at once that it cannot serve the stream. A resume of a stream the source
            // does not hold is history lost too. A source that cannot say (or cannot be
            // reached now) is subscribed as before.
            let lost = match self.inner.tokens.status(key).await {
                Ok(StreamStatus::NotFound) => after_seq.is_some(),
                Ok(StreamStatus::Untracked) => replies_here,
                _ => false,
            };
            if lost {
                let buffer = self.inner.config.client_buffer;
                let hub = Hub::failed(key.clone(), crate::Fault::HistoryLost, buffer);
                return Ok(hub.join(&self.inner, after_seq));
            }
        }
        let hub = self.hub_for(key, after_seq);
        Ok(hub.join(&self.inner, after_seq))
    }

    /// Stops the generation of `key` now, whichever gateway instance relays it and whichever
    /// worker generates it: asks the token source what it holds of the stream, and unless
    /// the stream ended or is unknown, publishes a cancel at once (no
    /// [`GatewayConfig::cancel_grace`]). The caller decides who may stop a stream.
    ///
    /// Fails with [`Error::Unsupported`] when the gateway has no cancel channel, or with the
    /// source's or channel's error when the broker cannot be reached.
    pub async fn stop(&self, key: &StreamKey) -> Result<StopOutcome> {
        let followed_here = self.inner.lock_hubs().contains_key(key);
        match self.inner.tokens.status(key).await? {
            StreamStatus::Ended { finish_reason } => Ok(StopOutcome::Ended { finish_reason }),
            StreamStatus::NotFound if !followed_here => Ok(StopOutcome::Unknown),
            _ => {
                self.cancel(key).await?;
                Ok(StopOutcome::Stopping)
            }
        }
    }

    /// Publishes a cancel for `key` at once, without asking what the stream's state is (a
    /// worker remembers cancels of streams it has not started yet, so this also stops a
    /// request still waiting in the queue). See [`Gateway::stop`].
    pub async fn cancel(&self, key: &StreamKey) -> Result<()> {
        let Some(channel) = &self.inner.cancels else {
            return Err(Error::Unsupported("this gateway has no cancel channel"));
        };
        channel.cancel(key).await?;
        self.inner
            .metrics
            .cancels_published
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// What the token source holds of `key` (see [`crate::TokenSource::status`]).
    pub async fn status(&self, key: &StreamKey) -> Result<StreamStatus> {
        self.inner.tokens.status(key).await
    }

    /// Streams followed now.
    pub fn active_streams(&self) -> usize {
        self.inner.lock_hubs().len()
    }

    /// Counters.
    pub fn metrics(&self) -> &GatewayMetrics {
        &self.inner.metrics
    }

    /// Ends every client stream with a [`Fault::ShuttingDown`](crate::Fault) event.
    pub fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
    }

    fn prepare(&self, mut request: ChatRequest) -> ChatRequest {
        if let Some(addr) = self.inner.tokens.reply_address() {
            request.metadata.insert(meta::REPLY_TO.to_owned(), addr);
        }
        request
    }

    /// The shared hub of `key` when it can serve `after_seq`, else a private one.
    fn hub_for(&self, key: &StreamKey, after_seq: Option<u64>) -> Arc<Hub> {
        let mut hubs = self.inner.lock_hubs();
        if let Some(hub) = hubs.get(key) {
            if hub.covers(after_seq) {
                return hub.clone();
            }
            return Hub::start(&self.inner, key.clone(), after_seq, false);
        }
        let hub = Hub::start(&self.inner, key.clone(), after_seq, true);
        hubs.insert(key.clone(), hub.clone());
        hub
    }
}

impl Inner {
    fn lock_hubs(&self) -> MutexGuard<'_, HashMap<StreamKey, Arc<Hub>>> {
        self.hubs.lock().unwrap_or_else(|p| p.into_inner())
    }
}
