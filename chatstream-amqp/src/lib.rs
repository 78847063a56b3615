//! # chatstream-amqp
//!
//! The RabbitMQ adapter of chatstream, on [lapin](https://docs.rs/lapin) (tokio). It
//! implements the broker traits of `chatstream-core`:
//!
//! | type | trait | what it does |
//! |---|---|---|
//! | [`AmqpConnection`] | — | one connection, reopened with backoff when it drops; every type below takes one |
//! | [`AmqpRequestSource`] | [`MessageSource`](chatstream_core::MessageSource) | consumes the request queue: manual ack, prefetch, exact attempts, delivery limit, dead-lettering with a reason header |
//! | [`AmqpRequestSink`] | [`RequestSink`](chatstream_core::RequestSink) | persistent, confirmed request publishes (canonical, seed 003 or seed 004 bodies) |
//! | [`AmqpTokenSink`] | [`TokenSink`](chatstream_core::TokenSink) | confirmed, pipelined envelope publishes in the configured topology |
//! | [`AmqpTokenSource`] | [`TokenSource`](chatstream_core::TokenSource) | envelopes for a gateway in the configured topology |
//! | [`AmqpCancelChannel`] | [`CancelChannel`](chatstream_core::CancelChannel) | cancels on a fanout exchange |
//! | [`DeadLetterQueue`] | — | reads dead-lettered requests and their reasons |
//!
//! ## Token topologies ([`TokenTopology`])
//!
//! | topology | broker messages per worker batch | gateway side | replay |
//! |---|---|---|---|
//! | [`ReplyTo`](TokenTopology::ReplyTo) (default) | **one** per batch and gateway: newline-delimited canonical envelopes of many streams (`application/x-ndjson`) | one exclusive queue per instance, local demux | no (live) |
//! | [`Topic`](TokenTopology::Topic) | one per stream in the batch (one per envelope with `pack_runs = false`) on the topic exchange `chatstream.tokens`, routing key [`routing_key`] | one exclusive auto-delete queue per stream | no (live) |
//! | [`PerRequestQueue`](TokenTopology::PerRequestQueue) (seed 003) | one per run of tokens + one for the end (one per envelope with `pack_runs = false`) to `response_{uid}`, raw text bodies, AMQP `type` = `token` / `error` / `end` | consumes `response_{uid}` (`x-expires`) | no; the queue holds what no one consumed yet |
//!
//! A worker on the per-request-queue topology answers a request whose `reply_to` names a
//! chatstream gateway queue ([`AmqpConfig::reply_queue_prefix`]) in that queue, as the
//! reply-to topology does: seed 003 clients that publish themselves get `response_{uid}`,
//! while a gateway on the reply-to topology in front of the same workers gets one message
//! per batch (`examples/queue_worker.rs` offers both).
//!
//! None of these keep a stream's history, so `subscribe(key, Some(seq))` fails with
//! [`Error::Unsupported`](chatstream_core::Error::Unsupported); a gateway's hubs still
//! replay what they hold for clients that reconnect to the same instance.
//!
//! ## Requests
//!
//! The request queue is durable ([`AmqpConfig::request_queue`], seed 003's `default-queue`;
//! or seed 004's exchange + routing key + queue via [`AmqpConfig::seed004`]), optionally a
//! quorum queue ([`AmqpConfig::quorum`]). Bodies of every seed dialect decode. A request is
//! acked only when the worker says so (after `End` was published and confirmed); a worker
//! that dies leaves its requests to the broker, which redelivers them with a higher attempt.
//! Malformed requests and requests past [`AmqpConfig::max_deliveries`] go to the dead-letter
//! exchange with the reason in the `x-chatstream-reason` header.
//!
//! ## Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use chatstream_amqp::{AmqpConfig, AmqpConnection, AmqpRequestSource, AmqpTokenSink,
//!     AmqpCancelChannel};
//! use chatstream_core::{ScriptedBackend, Worker};
//!
//! # async fn run() -> chatstream_core::Result<()> {
//! let conn = AmqpConnection::connect(AmqpConfig::from_env()).await?;
//! let worker = Worker::builder(
//!     Arc::new(AmqpRequestSource::new(&conn).await?),
//!     Arc::new(AmqpTokenSink::new(&conn).await?),
//!     Arc::new(ScriptedBackend::default()),
//! )
//! .cancels(Arc::new(AmqpCancelChannel::new(&conn).await?))
//! .build()
//! .spawn();
//! # let _ = worker; Ok(()) }
//! ```

mod cancel;
pub mod codec;
mod config;
mod connection;
mod dead_letters;
mod demux;
mod error;
mod publisher;
mod request_sink;
mod request_source;
mod routing;
mod stream_log;
mod token_sink;
mod token_source;
mod topology;

pub use cancel::AmqpCancelChannel;
pub use config::{
    AmqpConfig, Backoff, RequestExchange, RequestFormat, StreamRetention, TokenTopology,
    DEFAULT_URL,
};
pub use connection::AmqpConnection;
pub use dead_letters::{DeadLetter, DeadLetterQueue};
pub use error::AmqpError;
pub use request_sink::AmqpRequestSink;
pub use request_source::AmqpRequestSource;
pub use routing::{escape_word, parse_routing_key, response_queue, routing_key, unescape_word};
pub use stream_log::HEADER_MARKER;
pub use token_sink::AmqpTokenSink;
pub use token_source::AmqpTokenSource;
