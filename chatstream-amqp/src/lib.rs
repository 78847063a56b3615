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
//! | [`Stream`](TokenTopology::Stream) | **one** per batch: newline-delimited canonical envelopes of many streams, appended to the stream queue [`AmqpConfig::token_stream`] (`x-queue-type: stream`, durable, retention [`StreamRetention`]) | one tail consumer per instance + a local index of where each stream starts; replays by their own consumers | **yes**: any instance, from the start or after any seq, during and after generation, across a broker restart, for as long as the retention keeps it |
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
//! Only the stream topology keeps a stream's history. On the others
//! `subscribe(key, Some(seq))` fails with
//! [`Error::Unsupported`](chatstream_core::Error::Unsupported); a gateway's hubs still
//! replay what they hold for clients that reconnect to the same instance, and a history
//! log (`chatstream_core::history`) can be paired with them.
//!
//! ## The stream topology
//!
//! Why one log that every gateway reads, with a local index, rather than a super stream
//! partitioned by stream key or a queue per stream: what keeps RabbitMQ's message rate low
//! is one message per worker batch, and a batch holds envelopes of many streams. Partitions
//! would split each batch into one message per partition, and a queue per stream into one
//! per stream. The price is that every gateway decodes every batch (the relay benchmark in
//! BENCHMARKS.md measures it).
//!
//! - **Workers** append each batch as one message (`timestamp` set) to the log with
//!   publisher confirms, in order. A request whose `reply_to` is `stream:<queue>` (what a
//!   gateway on this topology puts there) is answered in that log whatever the worker's
//!   own topology, so seed 003's workers (per-request queues for pika clients) answer
//!   chatstream REST gateways in the log.
//! - **Gateways** consume the log from `now − max_age` at start, index the first offset,
//!   last seq and end of every stream, and hand live envelopes to their subscribers. A
//!   subscription of a stream the index knows replays it with a consumer of its own from the
//!   stream's first offset up to the offset the tail had reached when the subscriber was
//!   registered, then continues live: nothing falls between the two, nothing comes twice.
//! - **Readiness**: at start (and after each reconnect) a gateway appends an empty marker
//!   message ([`HEADER_MARKER`]); once it reads it back, its index holds everything before
//!   it, so a resume of a stream it does not know is `history lost` at once rather than a
//!   wait. Until then a resume waits (30 s at most).
//! - **Reconnects and broker restarts**: the tail consumes again from the next offset, so a
//!   live subscriber sees neither a gap nor a repeat; the log is durable, so a RabbitMQ
//!   restart loses nothing published before it.
//! - **Never a tail as a whole**: every subscription checks that seqs follow each other
//!   (from 0, or from `after_seq`, or from the start of a new attempt); a stream whose start
//!   retention dropped ends with `history lost`.
//! - **Retention** ([`StreamRetention`]): `x-max-age` (1 h), `x-max-length-bytes` (1 GiB),
//!   segments of 16 MiB. A finished answer stays resumable on any gateway for as long as
//!   both keep it. A gateway reads the retained log once at start (index only, nothing is
//!   kept of the envelopes); while it does, new streams reach their clients after it.
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
