//! # chatstream-servicebus
//!
//! The Azure Service Bus adapter of chatstream: requests through a topic subscription in
//! peek-lock, answers through a topic whose session-enabled subscription routes each chat's
//! envelopes to the one gateway reading that chat — the set-up of seeds 000 (worker) and 001
//! (SSE service).
//!
//! | type | trait | entity (defaults) |
//! |---|---|---|
//! | [`ServiceBusRequestSink`] | [`RequestSink`](chatstream_core::RequestSink) | topic `user-messages` |
//! | [`ServiceBusRequestSource`] | [`MessageSource`](chatstream_core::MessageSource) | subscription `user-messages/worker-service` |
//! | [`ServiceBusTokenSink`] | [`TokenSink`](chatstream_core::TokenSink) | topic `token-streams`, `SessionId` = chat session |
//! | [`ServiceBusTokenSource`] | [`TokenSource`](chatstream_core::TokenSource) | session subscription `token-streams/sse-service` |
//!
//! There is no cancel channel: a Service Bus subscription per worker instance would be needed
//! to broadcast cancels, and seeds 000/001 have none. Replay is not supported (a completed
//! message is gone), so resuming a stream fails with
//! [`Error::Unsupported`](chatstream_core::Error::Unsupported).
//!
//! Bodies are seed 000's JSON (requests) and the canonical envelope JSON (seed 000 plus
//! optional fields), so seed 000/001 peers read them unchanged.
//!
//! ## Why azservicebus
//!
//! `azure_messaging_servicebus` (0.21, the newest on crates.io) is the legacy REST client of
//! the unofficial Azure SDK: shared access keys only (no Azure identity, so no passwordless
//! sign-in as seed 000's `SERVICEBUS_FULLY_QUALIFIED_NAMESPACE` set-up needs) and no session
//! receiver (seed 001's routing). The official AMQP client is not published. `azservicebus`
//! (AMQP 1.0 over fe2o3-amqp) has topic senders, subscription receivers in peek-lock with
//! complete/abandon/dead-letter, session receivers (`accept_session_for_subscription`),
//! token credentials (`azure_identity`'s `DefaultAzureCredential`), connection strings and
//! shared access keys.
//!
//! ## Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `fake` | [`fake`]: an in-process fake Service Bus on fe2o3-amqp's acceptor, and [`ServiceBusCredential::Unsecured`] (plain `amqp://`) to reach it |
//! | `testkit` | `testkit::FakeHarness`: the conformance suite's harness on that fake |
//!
//! Everything here was tested against that fake with the real azservicebus client; real Azure
//! is not reachable from the machine this was written on (see the README).
//!
//! ```no_run
//! use std::sync::Arc;
//! use chatstream_core::{ScriptedBackend, Worker};
//! use chatstream_servicebus::{ServiceBusConfig, ServiceBusConnection};
//!
//! # async fn demo() -> chatstream_core::Result<()> {
//! let conn = ServiceBusConnection::connect(ServiceBusConfig::from_env()?).await?;
//! let worker = Worker::builder(
//!     Arc::new(conn.request_source().await?),
//!     Arc::new(conn.token_sink().await?),
//!     Arc::new(ScriptedBackend::default()),
//! )
//! .build()
//! .spawn();
//! # worker.shutdown().await; Ok(()) }
//! ```

mod config;
mod connection;
mod error;
mod message;
mod request_source;
mod sink;
mod token_source;

#[cfg(feature = "fake")]
pub mod fake;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use config::{ServiceBusConfig, ServiceBusCredential};
pub use connection::ServiceBusConnection;
pub use error::ServiceBusError;
pub use message::{MESSAGE_ID_PROPERTY, SESSION_ID_PROPERTY};
pub use request_source::ServiceBusRequestSource;
pub use sink::{ServiceBusRequestSink, ServiceBusTokenSink};
pub use token_source::{ServiceBusTokenSource, MAX_PARKED};
