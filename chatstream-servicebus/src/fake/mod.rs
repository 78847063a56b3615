//! An in-process fake Azure Service Bus for tests (feature `fake`).
//!
//! Service Bus speaks AMQP 1.0 and nothing on a developer machine emulates it without Docker,
//! so this module serves the part of it that chatstream uses, on fe2o3-amqp's acceptor, to the
//! real `azservicebus` client:
//!
//! - plain TCP on `127.0.0.1:0`, SASL ANONYMOUS or PLAIN (any credentials accepted);
//! - `$cbs`: put-token answered with `status-code` 202 and the request's message id as
//!   correlation id; `<entity>/$management`: `renew-lock` and `renew-session-lock` answered,
//!   anything else with 501;
//! - topics with subscriptions, declared up front in a [`FakeConfig`]; a message sent to a
//!   topic (alone or in a Service Bus batch) is copied into every subscription;
//! - receivers on `topic/Subscriptions/name` and `…/$DeadLetterQueue` in peek-lock (or
//!   receive-and-delete, as the link asks): accepted → removed; rejected → dead-lettered with
//!   its `DeadLetterReason`/`DeadLetterErrorDescription`; released, modified (abandon, defer) or
//!   left unsettled when the link or connection closes → redelivered in sequence order with
//!   the delivery count raised by one;
//! - sessions: a subscription declared with `requires_session` only accepts session receivers
//!   (`com.microsoft:session-filter` on the source) and only messages with a session id
//!   (`group-id`); a receiver gets only its session's messages, and holds the session's lock
//!   until its link closes. A second receiver for a locked session is refused at once with
//!   `com.microsoft:session-cannot-be-locked`, as Service Bus does; a null filter ("next
//!   available session") locks the unlocked session of the oldest available message, or is
//!   refused with `com.microsoft:timeout` when there is none.
//!
//! What clients send is settled after a 10 ms pause: fe2o3 0.14 loses a disposition that
//! arrives before it has recorded the delivery, which a loopback peer easily manages.
//!
//! A message goes to the first receiver link of its queue that is free to take one and waits
//! there for that link's credit (the fake cannot see credit before sending): with several
//! receivers on one subscription, one that asks for nothing can sit on a message until it
//! asks or closes.
//!
//! Not modelled: lock expiry (locks last until settled or the link closes), TTL, scheduled
//! messages, deferral, rules and filters, queues, transactions, duplicate detection.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use chatstream_servicebus::fake::{FakeConfig, FakeServiceBus};
//!
//! let fake = FakeServiceBus::start(FakeConfig::chatstream("sse-service")).await?;
//! let config = fake.config(); // a ServiceBusConfig that connects to it
//! # let _ = config; Ok(()) }
//! ```

mod amqp;
mod broker;
mod links;
mod node;
mod quickack;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use broker::FakeDeadLetter;

use crate::config::{ServiceBusConfig, ServiceBusCredential};

/// How long the fake says a lock lasts (it never expires one).
const LOCK_DURATION_MS: i64 = 60_000;

/// How long the fake waits before settling what a client sends. fe2o3 0.14's sender records a
/// delivery as unsettled only after handing its transfer to the session, so a disposition
/// that comes back sooner is dropped and the send waits for its timeout (then retries: a
/// duplicate). A broker across a network is never that fast; one on loopback is.
const SETTLE_DELAY: std::time::Duration = std::time::Duration::from_millis(10);

/// One subscription of a [`FakeTopic`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeSubscription {
    /// Its name.
    pub name: String,
    /// Whether only session receivers may read it (`requiresSession` in Azure).
    pub requires_session: bool,
}

/// A topic and its subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeTopic {
    /// Its name.
    pub name: String,
    /// Its subscriptions.
    pub subscriptions: Vec<FakeSubscription>,
}

/// The entities of a [`FakeServiceBus`]. Names are case-insensitive, as in Azure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeConfig {
    /// The topics.
    pub topics: Vec<FakeTopic>,
}

impl FakeConfig {
    /// No entities.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a topic with `(subscription, requires_session)` pairs.
    pub fn topic<'a>(
        mut self,
        name: &str,
        subscriptions: impl IntoIterator<Item = (&'a str, bool)>,
    ) -> Self {
        self.topics.push(FakeTopic {
            name: name.to_owned(),
            subscriptions: subscriptions
                .into_iter()
                .map(|(name, requires_session)| FakeSubscription {
                    name: name.to_owned(),
                    requires_session,
                })
                .collect(),
        });
        self
    }

    /// The entities of seeds 000/001 with their default names: topic `user-messages` with
    /// subscription `worker-service`, and topic `token-streams` with the session-enabled
    /// subscription `token_subscription` (the SSE service's).
    pub fn chatstream(token_subscription: &str) -> Self {
        let defaults = ServiceBusConfig::default();
        Self::new()
            .topic(
                &defaults.user_messages_topic,
                [(defaults.user_messages_subscription.as_str(), false)],
            )
            .topic(&defaults.token_streams_topic, [(token_subscription, true)])
    }
}

/// A running fake Service Bus. Dropping it stops accepting connections; open connections
/// live on until their clients close them (or the runtime ends).
#[derive(Debug)]
pub struct FakeServiceBus {
    addr: SocketAddr,
    broker: Arc<broker::Broker>,
    accept: tokio::task::JoinHandle<()>,
}

impl FakeServiceBus {
    /// Starts a fake on `127.0.0.1` with a free port.
    pub async fn start(config: FakeConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let broker = Arc::new(broker::Broker::new(&config));
        let accept = tokio::spawn(server::serve(listener, broker.clone()));
        Ok(Self {
            addr,
            broker,
            accept,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port`, what [`ServiceBusCredential::Unsecured`] takes as its endpoint.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// A configuration that connects to this fake (named key over plain AMQP, short
    /// receive waits), with the default entity names.
    pub fn config(&self) -> ServiceBusConfig {
        ServiceBusConfig {
            credential: ServiceBusCredential::Unsecured {
                endpoint: self.endpoint(),
                key_name: "fake".into(),
                key: "fake".into(),
            },
            receive_wait: std::time::Duration::from_millis(200),
            // A send whose acknowledgement fe2o3 lost (see `SETTLE_DELAY`) is retried after
            // this; the retry's duplicate is harmless (envelopes are deduplicated by seq).
            try_timeout: std::time::Duration::from_secs(5),
            ..ServiceBusConfig::default()
        }
    }

    /// The environment that makes [`ServiceBusConfig::from_env`] connect to this fake (for
    /// binaries started by a test; they need this crate's `fake` feature).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SERVICEBUS_ENDPOINT", self.endpoint()),
            ("SERVICEBUS_SHARED_ACCESS_KEY_NAME", "fake".into()),
            ("SERVICEBUS_SHARED_ACCESS_KEY", "fake".into()),
            ("SERVICEBUS_UNSECURED", "1".into()),
        ]
    }

    /// The dead-lettered messages of a subscription, oldest first.
    pub fn dead_letters(&self, topic: &str, subscription: &str) -> Vec<FakeDeadLetter> {
        self.broker.dead_letters(topic, subscription)
    }

    /// How many messages wait in a subscription (not counting locked ones).
    pub fn available(&self, topic: &str, subscription: &str) -> usize {
        self.broker.available(topic, subscription)
    }
}

impl Drop for FakeServiceBus {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
