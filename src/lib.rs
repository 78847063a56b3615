//! # chatstream
//!
//! Carries LLM chat answers from workers to browsers through a message broker, token by
//! token. This is the facade: it re-exports [`chatstream_core`] (the model, the wire
//! dialects, the traits, the worker and gateway runtimes, the in-memory broker) and, behind
//! features, the adapter crates.
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `axum` | yes | `axum` (`chatstream-axum`): SSE responses, `Last-Event-ID` resume, the seed 001 and quickstart routers |
//! | `openai` | yes | `backend::OpenAiBackend`: answers from any OpenAI-compatible server (`OPENAI_URL`, `OPENAI_API_KEY`, `OPENAI_MODEL`) |
//! | `amqp` | no | `amqp` (`chatstream-amqp`): RabbitMQ request source and sink, token sink and source, cancel channel |
//! | `redis` | no | `redis` (`chatstream-redis`): Redis conversation store, Redis Streams token bus and request queue, pub/sub cancel channel |
//! | `servicebus` | no | `servicebus` (`chatstream-servicebus`): Azure Service Bus request source and sink, token sink, session-aware token source |
//! | `postgres` | no | `postgres` (`chatstream-postgres`): PostgreSQL conversation store (threads, messages, owners and organisations) with embedded migrations |
//! | `testkit` | no | `testkit`: the conformance suite every broker adapter runs |
//!
//! `cargo run --example quickstart` starts everything in one process (in-memory broker,
//! worker, gateway, HTTP routes and a chat page); the README shows the rest.
//!
//! ```
//! use std::sync::Arc;
//! use chatstream::{ChatRequest, Gateway, InMemoryBroker, ScriptedBackend, StreamKey, Worker};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> chatstream::Result<()> {
//! let broker = InMemoryBroker::new();
//! let worker = Worker::builder(
//!     Arc::new(broker.message_source()),
//!     Arc::new(broker.clone()),
//!     Arc::new(ScriptedBackend::default()),
//! )
//! .cancels(Arc::new(broker.clone()))
//! .build()
//! .spawn();
//! let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker.clone())).build();
//! let stream = gateway.submit(ChatRequest::new(StreamKey::new("s", "m"), "Hi")).await?;
//! # drop(stream);
//! worker.shutdown().await;
//! # Ok(()) }
//! ```

pub use chatstream_core::*;

#[cfg(feature = "axum")]
pub use chatstream_axum as axum;

#[cfg(feature = "amqp")]
pub use chatstream_amqp as amqp;

#[cfg(feature = "redis")]
pub use chatstream_redis as redis;

#[cfg(feature = "servicebus")]
pub use chatstream_servicebus as servicebus;

#[cfg(feature = "postgres")]
pub use chatstream_postgres as postgres;
