//! [`InMemoryBroker`]: request queue, token bus with replay, and cancel channel in one process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::{broadcast, Notify};
use tokio_stream::wrappers::BroadcastStream;

use super::queue::{Payload, QueueState};
use super::streams::Streams;
use crate::{
    Acker, CancelChannel, ChatRequest, Delivery, Destination, EnvelopeReceiver, EnvelopeStream,
    Error, MessageSource, RequestSink, Result, SessionFeed, StreamKey, StreamStatus, Subscription,
    TokenEnvelope, TokenSink, TokenSource,
};

pub use super::queue::DeadLetter;

/// Settings of an [`InMemoryBroker`].
#[derive(Debug, Clone)]
pub struct InMemoryConfig {
    /// Envelopes kept per stream for replay (oldest dropped first).
    pub replay_capacity: usize,
    /// How long an ended stream stays replayable.
    pub retention: Duration,
    /// How long a stream with no activity and no subscriber is kept.
    pub stale_after: Duration,
    /// Deliveries of one request before it is dead-lettered instead of requeued.
    pub delivery_limit: u32,
}

impl Default for InMemoryConfig {
    fn default() -> Self {
        Self {
            replay_capacity: 4096,
            retention: Duration::from_secs(300),
            stale_after: Duration::from_secs(3600),
            delivery_limit: 5,
        }
    }
}

/// Counters of what went through an [`InMemoryBroker`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Requests submitted.
    pub requests: u64,
    /// `TokenSink::publish` calls (broker messages, in a real broker's terms).
    pub publishes: u64,
    /// Envelopes published.
    pub envelopes: u64,
    /// Streams held (live, retained or tombstoned).
    pub streams: u64,
}

/// A broker in one process: a work queue with ack / requeue / dead-letter, per-stream
/// replay rings with live fan-out, and a cancel channel. Cheap to clone; clones share state.
///
/// Implements [`RequestSink`], [`TokenSink`], [`TokenSource`] and [`CancelChannel`];
/// [`InMemoryBroker::message_source`] makes a [`MessageSource`] per worker.
#[derive(Debug, Clone)]
pub struct InMemoryBroker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: Mutex<QueueState>,
    ready: Notify,
    streams: Arc<Streams>,
    cancels: broadcast::Sender<StreamKey>,
    announcements: broadcast::Sender<StreamKey>,
    config: InMemoryConfig,
    next_consumer: AtomicU64,
    requests: AtomicU64,
    publishes: AtomicU64,
    envelopes: AtomicU64,
}

impl Default for InMemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryBroker {
    /// A broker with default settings.
    pub fn new() -> Self {
        Self::with_config(InMemoryConfig::default())
    }

    /// A broker with the given settings.
    pub fn with_config(config: InMemoryConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                queue: Mutex::new(QueueState::default()),
                ready: Notify::new(),
                streams: Arc::new(Streams::new(
                    config.replay_capacity,
                    config.retention,
                    config.stale_after,
                )),
                cancels: broadcast::channel(1024).0,
                announcements: broadcast::channel(1024).0,
                config,
                next_consumer: AtomicU64::new(1),
                requests: AtomicU64::new(0),
                publishes: AtomicU64::new(0),
                envelopes: AtomicU64::new(0),
            }),
        }
    }

    /// A consumer of the request queue. Requests it holds unsettled go back to the queue
    /// when it is dropped, as when a worker's connection closes.
    pub fn message_source(&self) -> InMemorySource {
        InMemorySource {
            inner: self.inner.clone(),
            id: self.inner.next_consumer.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Queues raw bytes as a request, decoded on delivery with
    /// [`wire::decode_request`](crate::wire::decode_request) — as a client publishing to a
    /// real broker would. Malformed bodies reach the worker as decode errors.
    pub fn submit_raw(&self, body: impl Into<Bytes>) {
        self.push(Payload::Raw(body.into()));
    }

    /// Requests dead-lettered so far, with reasons.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.inner.lock_queue().dead.clone()
    }

    /// Requests waiting plus requests delivered and not yet settled.
    pub fn pending(&self) -> (usize, usize) {
        let q = self.inner.lock_queue();
        (q.ready.len(), q.unacked.len())
    }

    /// Counters.
    pub fn stats(&self) -> BrokerStats {
        BrokerStats {
            requests: self.inner.requests.load(Ordering::Relaxed),
            publishes: self.inner.publishes.load(Ordering::Relaxed),
            envelopes: self.inner.envelopes.load(Ordering::Relaxed),
            streams: self.inner.streams.len() as u64,
        }
    }

    /// Closes the request queue: consumers get `None` once it is drained.
    pub fn close(&self) {
        self.inner.lock_queue().closed = true;
        self.inner.ready.notify_waiters();
    }

    fn push(&self, payload: Payload) {
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        self.inner
            .lock_queue()
            .ready
            .push_back(super::queue::Queued {
                payload,
                deliveries: 0,
            });
        self.inner.ready.notify_one();
    }
}

impl Inner {
    fn lock_queue(&self) -> MutexGuard<'_, QueueState> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn requeue(&self, tag: u64) {
        if self.lock_queue().requeue(tag, self.config.delivery_limit) {
            self.ready.notify_one();
        }
    }
}

/// A consumer of an [`InMemoryBroker`]'s request queue.
#[derive(Debug)]
pub struct InMemorySource {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for InMemorySource {
    fn drop(&mut self) {
        let tags = self.inner.lock_queue().tags_of(self.id);
        for tag in tags {
            self.inner.requeue(tag);
        }
    }
}

#[async_trait]
impl MessageSource for InMemorySource {
    async fn recv(&self) -> Result<Option<Delivery>> {
        loop {
            let notified = self.inner.ready.notified();
            {
                let mut q = self.inner.lock_queue();
                if let Some((tag, queued)) = q.take(self.id) {
                    drop(q);
                    let request = match queued.payload {
                        Payload::Request(r) => Ok(*r),
                        Payload::Raw(b) => crate::wire::decode_request(&b),
                    };
                    return Ok(Some(Delivery {
                        request,
                        attempt: queued.deliveries,
                        acker: Box::new(InMemoryAcker {
                            inner: self.inner.clone(),
                            tag,
                            settled: false,
                        }),
                    }));
                }
                if q.closed {
                    return Ok(None);
                }
            }
            notified.await;
        }
    }
}

#[derive(Debug)]
struct InMemoryAcker {
    inner: Arc<Inner>,
    tag: u64,
    settled: bool,
}

impl Drop for InMemoryAcker {
    fn drop(&mut self) {
        if !self.settled {
            self.inner.requeue(self.tag);
        }
    }
}

#[async_trait]
impl Acker for InMemoryAcker {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.settled = true;
        self.inner.lock_queue().settle(self.tag);
        Ok(())
    }

    async fn nack(mut self: Box<Self>, requeue: bool) -> Result<()> {
        self.settled = true;
        if requeue {
            self.inner.requeue(self.tag);
        } else {
            self.inner
                .lock_queue()
                .dead_letter(self.tag, "rejected without requeue".into());
        }
        Ok(())
    }

    async fn dead_letter(mut self: Box<Self>, reason: &str) -> Result<()> {
        self.settled = true;
        self.inner
            .lock_queue()
            .dead_letter(self.tag, reason.to_owned());
        Ok(())
    }
}

#[async_trait]
impl RequestSink for InMemoryBroker {
    async fn submit(&self, request: &ChatRequest) -> Result<()> {
        if self.inner.lock_queue().closed {
            return Err(Error::Closed);
        }
        self.push(Payload::Request(Box::new(request.clone())));
        Ok(())
    }
}

#[async_trait]
impl TokenSink for InMemoryBroker {
    async fn publish(&self, destination: &Destination, batch: &[TokenEnvelope]) -> Result<()> {
        self.publish_owned(destination, batch.to_vec()).await
    }

    /// Keeps the envelopes as they are (`publish` keeps copies).
    async fn publish_owned(
        &self,
        _destination: &Destination,
        batch: Vec<TokenEnvelope>,
    ) -> Result<()> {
        self.inner.publishes.fetch_add(1, Ordering::Relaxed);
        self.inner
            .envelopes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.inner.streams.append(batch);
        Ok(())
    }
}

#[async_trait]
impl TokenSource for InMemoryBroker {
    async fn status(&self, key: &StreamKey) -> Result<StreamStatus> {
        Ok(self.inner.streams.status(key))
    }

    async fn subscribe(&self, key: &StreamKey, after_seq: Option<u64>) -> Result<EnvelopeStream> {
        self.inner.streams.subscribe(key, after_seq)
    }

    /// Direct: the publisher's `append` hands each envelope to `receiver`, with no task of
    /// the subscription's own.
    async fn subscribe_into(
        &self,
        key: &StreamKey,
        after_seq: Option<u64>,
        receiver: Arc<dyn EnvelopeReceiver>,
    ) -> Result<Subscription> {
        self.inner.streams.subscribe_into(key, after_seq, receiver)
    }
}

/// The keys sent on `tx` from now on (a listener that falls 1,024 behind skips the excess).
fn keys_from(tx: &broadcast::Sender<StreamKey>) -> BoxStream<'static, StreamKey> {
    BroadcastStream::new(tx.subscribe())
        .filter_map(|r| async move { r.ok() })
        .boxed()
}

#[async_trait]
impl SessionFeed for InMemoryBroker {
    async fn announce(&self, key: &StreamKey) -> Result<()> {
        let _ = self.inner.announcements.send(key.clone());
        Ok(())
    }

    async fn announcements(&self) -> Result<BoxStream<'static, StreamKey>> {
        Ok(keys_from(&self.inner.announcements))
    }
}

#[async_trait]
impl CancelChannel for InMemoryBroker {
    async fn cancel(&self, key: &StreamKey) -> Result<()> {
        let _ = self.inner.cancels.send(key.clone());
        Ok(())
    }

    async fn cancellations(&self) -> Result<BoxStream<'static, StreamKey>> {
        Ok(keys_from(&self.inner.cancels))
    }
}
