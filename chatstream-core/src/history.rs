//! Any broker plus a history log: resume on any gateway instance, with a broker that keeps
//! no history.
//!
//! Some token topologies are live only: Azure Service Bus sessions, RabbitMQ's reply-to and
//! topic topologies. A gateway that did not follow a stream from its start (another instance
//! relayed it, or a client resumes with `Last-Event-ID` on an instance that never saw it)
//! cannot get what was published before it subscribed. Pairing such a broker with a *log*
//! that keeps streams — the Redis bus (`chatstream-redis`), RabbitMQ's stream topology
//! (`chatstream-amqp`), or the [`InMemoryBroker`](crate::InMemoryBroker) within one process
//! — fixes that, without a line of broker-specific code:
//!
//! - workers publish through a [`LoggedTokenSink`]: every batch is appended to the log, then
//!   published to the primary broker;
//! - gateways read through a [`FallbackTokenSource`]: live envelopes come from the primary,
//!   and what the primary does not hold (what came before the subscription, or everything
//!   after the primary's subscription failed) comes from the log.
//!
//! # Why a composition
//!
//! Both halves are plain [`TokenSink`](crate::TokenSink) / [`TokenSource`](crate::TokenSource)
//! wrappers over trait objects, so every broker gets resumable streams the day it passes the
//! conformance suite, every log serves every broker, and neither adapter knows of the other
//! (the house rule: an adapter never depends on another). The price is one more write per
//! batch, and a second read only where the primary cannot serve.
//!
//! # Guarantees
//!
//! - **The log holds everything a client can have seen.** The sink appends a batch to the log
//!   and only after the log accepted it publishes it to the primary; the publish succeeds
//!   only when both accepted the batch. A failure of either fails the publish, so the worker
//!   gives the request back (it is redelivered as a new attempt) instead of acking an answer
//!   whose history has holes. Overlapping publishes to one destination reach the primary in
//!   call order, as they reach the log.
//! - **Exact subscriptions: in order, no duplicate, no gap.** The source subscribes to the
//!   primary first (live, from now), then to the log from the asked-for position. It forwards
//!   the log's envelopes while it holds back the primary's; once the first held-back envelope
//!   continues what was forwarded (its `seq` is the next one, or it is the first of a newer
//!   attempt), it drops the log subscription and goes on with the primary, skipping every
//!   envelope at or before the last forwarded `seq`. A fresh stream is thus served by the
//!   primary from its first envelope; a resume reads the log until it meets the live edge.
//! - **Attempts.** A redelivered request's answer starts at
//!   [`TokenEnvelope::seq_base`](crate::TokenEnvelope::seq_base)`(attempt)`; the gateway tells
//!   its clients to reset there. The first envelope of a newer attempt is therefore a valid
//!   hand-over point even when the log has not yet forwarded all of the superseded attempt
//!   (that part would be discarded by the reset anyway). Envelopes of a superseded attempt
//!   that arrive after a newer one (a worker that lost its request) are dropped, as the
//!   gateway drops them.
//! - **End.** A subscription ends after the `End`, whichever side delivered it; at or after
//!   the `End` of a finished stream the log yields that `End` again, and so does this source.
//!
//! # Failures
//!
//! | what fails | what happens |
//! |---|---|
//! | the log, on publish | the publish fails and nothing reaches the primary: the worker requeues the request |
//! | the primary, on publish | the publish fails (the log already holds the batch): the worker requeues the request, and its new attempt resets the clients |
//! | the log, on subscribe (`HistoryLost`, unreachable, …) | the subscription fails with the log's error: without the log no gap-free answer can be promised (the gateway turns it into a fault the client sees) |
//! | the primary, on subscribe | `Unsupported`/`HistoryLost` for a resume are retried from now (live-only brokers refuse `after_seq`); any other error is logged and the log alone serves the stream (every log is live too) |
//! | the primary, mid-stream (error, or closed before `End`) | the log is subscribed again after the last forwarded `seq` and serves the rest |
//! | the log, mid-stream, before the hand-over | the subscription yields the log's error and ends |
//! | the primary runs more than [`MAX_HELD`] envelopes ahead of the log | the primary is dropped, the log alone serves the stream |
//!
//! [`FallbackTokenSource::status`](crate::TokenSource::status) is the log's (it keeps the
//! record), or the primary's where the log keeps none; the reply address is the primary's,
//! so reply-to routing keeps working.
//!
//! ```
//! use std::sync::Arc;
//! use chatstream_core::{ChatRequest, FallbackTokenSource, Gateway, InMemoryBroker,
//!     LoggedTokenSink, ScriptedBackend, StreamKey, Worker};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> chatstream_core::Result<()> {
//! // Stand-ins: in production the primary is e.g. Service Bus and the log the Redis bus.
//! let broker = InMemoryBroker::new();
//! let log = InMemoryBroker::new();
//! let worker = Worker::builder(
//!     Arc::new(broker.message_source()),
//!     Arc::new(LoggedTokenSink::new(Arc::new(broker.clone()), Arc::new(log.clone()))),
//!     Arc::new(ScriptedBackend::default()),
//! )
//! .build()
//! .spawn();
//! let tokens = FallbackTokenSource::new(Arc::new(broker.clone()), Arc::new(log.clone()));
//! let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(tokens)).build();
//! let stream = gateway.submit(ChatRequest::new(StreamKey::new("s", "m"), "Hi")).await?;
//! # drop(stream);
//! worker.shutdown().await;
//! # Ok(()) }
//! ```

mod sink;
mod source;
#[cfg(test)]
mod tests;

pub use sink::LoggedTokenSink;
pub use source::{FallbackTokenSource, MAX_HELD};
