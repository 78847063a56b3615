//! # chatstream-core
//!
//! The broker-agnostic heart of chatstream: the data model ([`StreamKey`], [`ChatRequest`],
//! [`TokenEnvelope`]), the wire dialects of the five systems chatstream replaces
//! ([`wire`]), the pluggable traits ([`MessageSource`], [`TokenSink`], [`TokenSource`],
//! [`RequestSink`], [`CancelChannel`], [`LlmBackend`], [`ClientTransport`],
//! [`ConversationStore`]), the [`Worker`] and [`Gateway`] runtimes, and the embedded
//! defaults: [`InMemoryBroker`], [`InMemoryConversationStore`], [`ScriptedBackend`].
//!
//! Core knows no broker and no HTTP framework; adapters (`chatstream-amqp`,
//! `chatstream-redis`, `chatstream-axum`, …) depend on it.
//!
//! | feature | what it adds |
//! |---|---|
//! | `openai` | [`backend::OpenAiBackend`], an OpenAI-compatible streaming backend on async-openai |
//! | `testkit` | [`testkit`]: the conformance suite every adapter runs, and a fake OpenAI-compatible server |
//!
//! ```
//! use std::sync::Arc;
//! use chatstream_core::{ChatRequest, ClientEvent, Gateway, InMemoryBroker,
//!     InMemoryConversationStore, ScriptedBackend, StreamEvent, StreamKey, Worker};
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> chatstream_core::Result<()> {
//! let broker = InMemoryBroker::new();
//! let worker = Worker::builder(
//!     Arc::new(broker.message_source()),
//!     Arc::new(broker.clone()),
//!     Arc::new(ScriptedBackend::default()),
//! )
//! .store(Arc::new(InMemoryConversationStore::default()))
//! .cancels(Arc::new(broker.clone()))
//! .build();
//! let handle = worker.spawn();
//!
//! let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker.clone())).build();
//! let key = StreamKey::new("session-1", "message-1");
//! let mut stream = gateway.submit(ChatRequest::new(key, "Hello")).await?;
//! let mut answer = String::new();
//! while let Some(event) = stream.next().await {
//!     if let ClientEvent::Envelope(env) = event {
//!         if let StreamEvent::Token { text } = &env.event { answer.push_str(text) }
//!     }
//! }
//! assert!(answer.contains("message-1"));
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

pub mod backend;
mod error;
pub mod gateway;
pub mod history;
pub mod memory;
mod model;
pub mod trace;
mod traits;
pub mod wire;
pub mod worker;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use backend::ScriptedBackend;
pub use error::{BoxError, Error, Result};
pub use gateway::{ClientStream, Gateway, GatewayConfig, GatewayMetrics, StopOutcome};
pub use history::{FallbackTokenSource, LoggedTokenSink};
pub use memory::{
    InMemoryBroker, InMemoryConversationStore, InMemoryResponseStore, InMemoryStreamRegistry,
};
pub use model::{
    meta, ChatMessage, ChatRequest, FinishReason, Role, Status, StreamEvent, StreamKey,
    TokenEnvelope, Usage,
};
pub use traits::*;
pub use worker::{CoalesceConfig, Worker, WorkerConfig, WorkerHandle, WorkerStats};
