//! # chatstream-redis
//!
//! Redis for chatstream: where conversations live, a resumable token bus, a request queue
//! and a cancel channel — enough for a deployment on Redis alone.
//!
//! | type | core trait | Redis feature |
//! |---|---|---|
//! | [`RedisConversationStore`] | [`ConversationStore`](chatstream_core::ConversationStore) | hashes, lists, sorted sets; sliding `EXPIRE`; Lua for atomic appends; `SCAN` for stats and cleanup |
//! | [`RedisTokenSink`] | [`TokenSink`](chatstream_core::TokenSink) | one stream per [`StreamKey`](chatstream_core::StreamKey), explicit entry ids from `seq`, one round trip per round covering every stream of the publishes waiting (plain `XADD`s under explicit ids, Lua where an entry needs checking), in call order at any number in flight; one `PUBLISH` of news per round |
//! | [`RedisTokenSource`] | [`TokenSource`](chatstream_core::TokenSource) | `XREAD` from any `seq`, then non-blocking `XREAD`s of the streams the news names, many streams per read; `HistoryLost` once trimmed, expired, or missing entries of an attempt |
//! | [`RedisRequestSink`] | [`RequestSink`](chatstream_core::RequestSink) | `XADD` to the request stream; dead letters readable |
//! | [`RedisRequestSource`] | [`MessageSource`](chatstream_core::MessageSource) | consumer group, `XREADGROUP BLOCK`, `XACK`, `XAUTOCLAIM` of crashed consumers' entries, dead-letter stream |
//! | [`RedisCancelChannel`] | [`CancelChannel`](chatstream_core::CancelChannel) | pub/sub |
//! | [`RedisSessionFeed`] | [`SessionFeed`](chatstream_core::SessionFeed) | pub/sub: news of started streams, for gateways whose WebSocket clients follow whole sessions |
//! | [`RedisResponseStore`] | [`ResponseStore`](chatstream_core::ResponseStore) | the OpenAI Responses API's stored responses: strings with `EX`, a script that sets the outcome once |
//! | [`RedisClient`] | — | the shared auto-reconnecting connection (plus dedicated ones for the queue's blocking reads and the news); one server or a Redis Cluster |
//!
//! The key layout is in [`keys`]; how `seq` maps to entry ids and when history is lost in
//! [`bus`]; how requests are settled and redelivered in [`queue`].
//!
//! | feature | what it adds |
//! |---|---|
//! | `testkit` | `testkit::RedisHarness`: the conformance suite's harness on a real Redis |
//!
//! ```no_run
//! use std::sync::Arc;
//! use chatstream_core::{ChatRequest, Gateway, ScriptedBackend, StreamKey, Worker};
//! use chatstream_redis::{
//!     BusConfig, QueueConfig, RedisCancelChannel, RedisClient, RedisConfig,
//!     RedisConversationStore, RedisRequestSink, RedisRequestSource, RedisTokenSink,
//!     RedisTokenSource,
//! };
//!
//! # async fn run() -> chatstream_core::Result<()> {
//! let config = RedisConfig::from_env()?; // REDIS_URL, REDIS_PREFIX, REDIS_THREAD_EXPIRY
//! let redis = RedisClient::from_config(&config).await?;
//! let queue = QueueConfig::default();
//!
//! let worker = Worker::builder(
//!     Arc::new(RedisRequestSource::new(redis.clone(), queue.clone()).await?),
//!     Arc::new(RedisTokenSink::new(redis.clone(), BusConfig::default()).await?),
//!     Arc::new(ScriptedBackend::default()),
//! )
//! .store(Arc::new(RedisConversationStore::new(redis.clone(), config.thread_expiry)))
//! .cancels(Arc::new(RedisCancelChannel::new(redis.clone())))
//! .build()
//! .spawn();
//!
//! let gateway = Gateway::builder(
//!     Arc::new(RedisRequestSink::new(redis.clone(), &queue)),
//!     Arc::new(RedisTokenSource::new(redis.clone(), BusConfig::default())),
//! )
//! .cancels(Arc::new(RedisCancelChannel::new(redis.clone())))
//! .build();
//! let answer = gateway.submit(ChatRequest::new(StreamKey::new("s", "m"), "Hi")).await?;
//! # drop(answer);
//! worker.shutdown().await;
//! # Ok(()) }
//! ```

pub mod bus;
mod cancel;
mod client;
mod error;
pub mod keys;
pub mod queue;
mod registry;
mod responses;
mod store;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use bus::{BusConfig, RedisTokenSink, RedisTokenSource};
pub use cancel::{RedisCancelChannel, RedisSessionFeed};
pub use client::{RedisClient, RedisConfig, RedisConnection};
pub use error::Error;
pub use keys::Keys;
pub use queue::{DeadLetter, QueueConfig, RedisRequestSink, RedisRequestSource};
pub use registry::{RedisStreamRegistry, DEFAULT_REGISTRY_TTL};
pub use responses::{RedisResponseStore, DEFAULT_RESPONSE_TTL};
pub use store::RedisConversationStore;
