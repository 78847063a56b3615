//! Requests in: a consumer of the request queue with manual acks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chatstream_core::{meta, Acker, ChatRequest, Delivery, Error, MessageSource, Result};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Consumer};
use tokio::sync::{Mutex, Notify};

use crate::codec::{self, HEADER_ATTEMPT, HEADER_DELIVERY_COUNT, HEADER_QUEUE, HEADER_REASON};
use crate::error::lapin_err;
use crate::publisher::{Outgoing, Publisher};
use crate::topology::{self, short};
use crate::{AmqpConfig, AmqpConnection};

/// Takes requests from the request queue (a [`MessageSource`]).
///
/// - Manual acknowledgement; at most [`AmqpConfig::prefetch`] requests unsettled at once.
/// - Bodies of every known dialect decode; a malformed body becomes a [`Delivery`] whose
///   `request` is the decode error, so the worker dead-letters it.
/// - `attempt` is exact: `x-delivery-count + 1` on quorum queues; on classic queues a
///   redelivered request is re-published once with its attempt in the `x-chatstream-attempt`
///   header (and the redelivery acked), because RabbitMQ only says *redelivered*, not how
///   often.
/// - A request delivered more than [`AmqpConfig::max_deliveries`] times is dead-lettered
///   with reason "delivery limit", so nothing is requeued forever.
/// - Dead-lettering publishes the body with its headers plus `x-chatstream-reason` to the
///   dead-letter exchange, confirmed, then acks.
/// - After the connection drops, the next [`recv`](MessageSource::recv) reconnects,
///   re-declares and consumes again; the broker has already requeued what was unsettled.
///   Dropping the source closes its channel, which gives its unsettled requests back.
#[derive(Debug)]
pub struct AmqpRequestSource {
    shared: Arc<Shared>,
    state: Mutex<Option<Consuming>>,
    closed: AtomicBool,
    close: Notify,
}

#[derive(Debug)]
struct Consuming {
    _channel: Channel,
    consumer: Consumer,
}

#[derive(Debug)]
struct Shared {
    config: AmqpConfig,
    publisher: Publisher,
}

impl AmqpRequestSource {
    /// Declares the request topology and starts consuming.
    pub async fn new(conn: &AmqpConnection) -> Result<Self> {
        let source = Self {
            shared: Arc::new(Shared {
                config: conn.config().clone(),
                publisher: Publisher::new(conn.clone()),
            }),
            state: Mutex::new(None),
            closed: AtomicBool::new(false),
            close: Notify::new(),
        };
        let consuming = source.start().await?;
        *source.state.lock().await = Some(consuming);
        Ok(source)
    }

    /// Stops consuming: pending and later [`recv`](MessageSource::recv) calls return `None`,
    /// and requests taken but not settled go back to the queue.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.close.notify_one();
        self.state.lock().await.take();
    }

    async fn start(&self) -> Result<Consuming> {
        let config = &self.shared.config;
        let channel = self.shared.publisher.connection().channel().await?;
        topology::declare_requests(&channel, config).await?;
        channel
            .basic_qos(config.prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(lapin_err("basic.qos"))?;
        let consumer = channel
            .basic_consume(
                short(&config.request_queue)?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(lapin_err("basic.consume"))?;
        Ok(Consuming {
            _channel: channel,
            consumer,
        })
    }

    /// Turns a broker delivery into a worker delivery, or settles it here (redelivery
    /// rewritten, delivery limit reached) and returns `None`.
    async fn admit(&self, d: lapin::message::Delivery) -> Option<Delivery> {
        let config = &self.shared.config;
        let headers = d.properties.headers().as_ref();
        let attempt = if config.quorum {
            let count = codec::header_u64(headers, HEADER_DELIVERY_COUNT).unwrap_or(0);
            u32::try_from(count + 1)
                .unwrap_or(u32::MAX)
                .max(1 + u32::from(d.redelivered))
        } else {
            let base = codec::header_u64(headers, HEADER_ATTEMPT)
                .unwrap_or(1)
                .max(1);
            u32::try_from(base + u64::from(d.redelivered)).unwrap_or(u32::MAX)
        };
        let message = Message {
            body: d.data,
            properties: d.properties,
            attempt,
        };
        if !config.quorum && d.redelivered && attempt <= config.max_deliveries {
            // Make the count stick: a copy carries it, the redelivery is acked.
            match self.shared.republish(&message).await {
                Ok(()) => {
                    if let Err(e) = d.acker.ack(BasicAckOptions::default()).await {
                        tracing::warn!(error = %e, "ack of a rewritten redelivery failed");
                    }
                    return None;
                }
                Err(e) => tracing::warn!(error = %e, "could not record the attempt; going on"),
            }
        }
        if attempt > config.max_deliveries {
            let reason = format!(
                "delivery limit: delivered {attempt} times (max_deliveries = {})",
                config.max_deliveries
            );
            tracing::warn!(attempt, "dead-lettering a request past its delivery limit");
            let acker = AmqpAcker::new(d.acker, message, self.shared.clone());
            let _ = Box::new(acker).dead_letter(&reason).await;
            return None;
        }
        let request = chatstream_core::wire::decode_request(&message.body)
            .map(|r| with_enqueued_at(with_reply_to(r, &message), &message));
        Some(Delivery {
            request,
            attempt,
            acker: Box::new(AmqpAcker::new(d.acker, message, self.shared.clone())),
        })
    }
}

/// The AMQP `reply_to` property stands in for `metadata["reply_to"]` when the body has no
/// room for it (seed 003 and 004 bodies).
fn with_reply_to(mut request: ChatRequest, message: &Message) -> ChatRequest {
    if let Some(rt) = message.properties.reply_to() {
        if !rt.as_str().is_empty() {
            request
                .metadata
                .entry(meta::REPLY_TO.to_owned())
                .or_insert_with(|| rt.as_str().to_owned());
        }
    }
    request
}

/// RabbitMQ's `timestamp_in_ms` header (set by its `set_header_timestamp` message
/// interceptor, and by [`AmqpRequestSink`](crate::AmqpRequestSink)), else the AMQP
/// `timestamp` property (seconds), as `metadata["enqueued_at_ms"]` for the worker's queue
/// wait metric. Requests without either (the seeds' pika clients) have no queue wait.
fn with_enqueued_at(mut request: ChatRequest, message: &Message) -> ChatRequest {
    let headers = message.properties.headers().as_ref();
    let at = codec::header_u64(headers, codec::HEADER_TIMESTAMP_MS).or_else(|| {
        message
            .properties
            .timestamp()
            .map(|s| s.saturating_mul(1000))
    });
    if let Some(at) = at {
        request
            .metadata
            .insert(meta::ENQUEUED_AT_MS.to_owned(), at.to_string());
    }
    // The W3C trace context from headers, for bodies without metadata (seed 003, 004).
    for name in [meta::TRACEPARENT, meta::TRACESTATE] {
        if let Some(value) = codec::header_text(headers, name) {
            request.metadata.entry(name.to_owned()).or_insert(value);
        }
    }
    if let Some(value) = codec::header_text(headers, codec::HEADER_TOOLS) {
        request
            .metadata
            .entry(meta::TOOLS.to_owned())
            .or_insert(value);
    }
    request
}

#[async_trait]
impl MessageSource for AmqpRequestSource {
    async fn recv(&self) -> Result<Option<Delivery>> {
        let mut state = self.state.lock().await;
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return Ok(None);
            }
            let consuming = match state.as_mut() {
                Some(c) => c,
                None => state.insert(self.start().await?),
            };
            let next = tokio::select! {
                next = consuming.consumer.next() => next,
                _ = self.close.notified() => return Ok(None),
            };
            match next {
                Some(Ok(d)) => {
                    if let Some(delivery) = self.admit(d).await {
                        return Ok(Some(delivery));
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "request consumer failed; reconnecting");
                    *state = None;
                    self.shared.publisher.connection().pause().await;
                }
                None => {
                    tracing::warn!("request consumer cancelled by the broker; consuming again");
                    *state = None;
                    self.shared.publisher.connection().pause().await;
                }
            }
        }
    }
}

/// A delivered message, kept for dead-lettering and re-publishing.
struct Message {
    body: Vec<u8>,
    properties: BasicProperties,
    attempt: u32,
}

impl Shared {
    /// Headers of `message` plus `extra`.
    fn headers_with(message: &Message, extra: Vec<(&'static str, AMQPValue)>) -> FieldTable {
        let mut headers = message.properties.headers().clone().unwrap_or_default();
        for (k, v) in extra {
            headers.insert(k.into(), v);
        }
        headers
    }

    /// Puts a copy of `message` carrying its attempt at the back of the request queue.
    async fn republish(&self, message: &Message) -> Result<()> {
        let headers = Self::headers_with(
            message,
            vec![(
                HEADER_ATTEMPT,
                AMQPValue::LongLongInt(message.attempt.into()),
            )],
        );
        let out = Outgoing {
            exchange: "".into(),
            routing_key: short(&self.config.request_queue)?,
            body: message.body.clone(),
            properties: message
                .properties
                .clone()
                .with_headers(headers)
                .with_delivery_mode(2),
        };
        self.publisher.publish("request (redelivery)", &[out]).await
    }

    /// Publishes `message` to the dead-letter exchange with `reason`.
    async fn dead_letter(&self, message: &Message, reason: &str) -> Result<()> {
        let headers = Self::headers_with(
            message,
            vec![
                (HEADER_REASON, codec::text(reason)),
                (HEADER_QUEUE, codec::text(&self.config.request_queue)),
                (
                    HEADER_ATTEMPT,
                    AMQPValue::LongLongInt(message.attempt.into()),
                ),
            ],
        );
        let out = Outgoing {
            exchange: short(&self.config.dead_letter_exchange)?,
            routing_key: short(&self.config.request_queue)?,
            body: message.body.clone(),
            properties: message
                .properties
                .clone()
                .with_headers(headers)
                .with_delivery_mode(2),
        };
        self.publisher.publish("dead letter", &[out]).await
    }
}

/// Settles one request. Dropped unsettled, it gives the request back (nack with requeue).
struct AmqpAcker {
    acker: Option<lapin::Acker>,
    message: Message,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AmqpAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpAcker")
            .field("attempt", &self.message.attempt)
            .field("settled", &self.acker.is_none())
            .finish_non_exhaustive()
    }
}

impl AmqpAcker {
    fn new(acker: lapin::Acker, message: Message, shared: Arc<Shared>) -> Self {
        Self {
            acker: Some(acker),
            message,
            shared,
        }
    }

    fn take(&mut self) -> Result<lapin::Acker> {
        self.acker.take().ok_or(Error::Closed)
    }
}

/// `Ok(false)` from lapin means the channel is gone: the broker redelivers.
fn settled(op: &'static str, r: lapin::Result<bool>) -> Result<()> {
    match r {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::unavailable(
            "RabbitMQ",
            format!("{op}: the channel closed; the broker redelivers the request"),
        )),
        Err(e) => Err(lapin_err(op)(e)),
    }
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        let acker = self.take()?;
        settled("basic.ack", acker.ack(BasicAckOptions::default()).await)
    }

    async fn nack(mut self: Box<Self>, requeue: bool) -> Result<()> {
        if !requeue {
            return self.dead_letter("rejected by the worker").await;
        }
        let acker = self.take()?;
        let options = BasicNackOptions {
            requeue: true,
            ..Default::default()
        };
        settled("basic.nack", acker.nack(options).await)
    }

    async fn dead_letter(mut self: Box<Self>, reason: &str) -> Result<()> {
        let acker = self.take()?;
        if let Err(e) = self.shared.dead_letter(&self.message, reason).await {
            // Not stored elsewhere: give it back rather than lose it.
            let options = BasicNackOptions {
                requeue: true,
                ..Default::default()
            };
            let _ = acker.nack(options).await;
            return Err(e);
        }
        settled("basic.ack", acker.ack(BasicAckOptions::default()).await)
    }

    /// The delivery's channel closed (or failed): RabbitMQ requeued it and redelivers it.
    fn is_lost(&self) -> bool {
        self.acker.as_ref().is_some_and(lapin::Acker::poisoned)
    }
}

impl Drop for AmqpAcker {
    fn drop(&mut self) {
        let Some(acker) = self.acker.take() else {
            return;
        };
        // Without a runtime the channel's closing requeues it anyway.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let options = BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                };
                let _ = acker.nack(options).await;
            });
        }
    }
}
