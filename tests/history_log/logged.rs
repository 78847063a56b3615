//! A broker under test paired with a history log, as one conformance harness.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatstream_core::testkit::{Capabilities, Harness};
use chatstream_core::{
    DynCancelChannel, DynMessageSource, DynRequestSink, DynTokenSink, DynTokenSource,
    FallbackTokenSource, InMemoryBroker, LoggedTokenSink, Result,
};
use chatstream_redis::testkit::{connect_or_skip, PrefixGuard};
use chatstream_redis::{BusConfig, RedisCancelChannel, RedisTokenSink, RedisTokenSource};

/// A history log: where workers append, where gateways read back, and a cancel channel for
/// primaries that have none (Service Bus).
pub(crate) struct Log {
    sink: Arc<DynTokenSink>,
    source: Arc<DynTokenSource>,
    cancels: Arc<DynCancelChannel>,
    /// Deletes the Redis keys of the test.
    _guard: Option<PrefixGuard>,
}

impl Log {
    /// The in-memory broker: a log for one process.
    pub(crate) fn memory() -> Self {
        let broker = InMemoryBroker::new();
        Self {
            sink: Arc::new(broker.clone()),
            source: Arc::new(broker.clone()),
            cancels: Arc::new(broker),
            _guard: None,
        }
    }

    /// The Redis bus under a fresh prefix, or `None` (after a line on stderr) when Redis is
    /// unreachable and `CHATSTREAM_REQUIRE_SERVICES` is not set.
    pub(crate) async fn redis() -> Option<Self> {
        let client = connect_or_skip("history").await?;
        let bus = BusConfig {
            block: Duration::from_secs(1),
            ..BusConfig::default()
        };
        let sink = RedisTokenSink::new(client.clone(), bus.clone())
            .await
            .unwrap_or_else(|e| panic!("Redis token sink: {e}"));
        Some(Self {
            sink: Arc::new(sink),
            source: Arc::new(RedisTokenSource::new(client.clone(), bus)),
            cancels: Arc::new(RedisCancelChannel::new(client.clone())),
            _guard: Some(PrefixGuard::new(&client)),
        })
    }
}

/// `primary`'s requests, and its tokens through [`LoggedTokenSink`] and
/// [`FallbackTokenSource`] with `log`. The cancel channel is the primary's, else the log's.
pub(crate) struct Logged<P> {
    primary: P,
    log: Log,
    /// One gateway instance: a reply-to primary must be shared by every subscriber.
    source: Arc<DynTokenSource>,
}

impl<P: Harness> Logged<P> {
    pub(crate) async fn new(primary: P, log: Log) -> Self {
        let source = Arc::new(FallbackTokenSource::new(
            primary.token_source().await,
            log.source.clone(),
        ));
        Self {
            primary,
            log,
            source,
        }
    }
}

#[async_trait]
impl<P: Harness> Harness for Logged<P> {
    async fn request_sink(&self) -> Arc<DynRequestSink> {
        self.primary.request_sink().await
    }
    async fn message_source(&self) -> Box<DynMessageSource> {
        self.primary.message_source().await
    }
    async fn token_sink(&self) -> Arc<DynTokenSink> {
        Arc::new(LoggedTokenSink::new(
            self.primary.token_sink().await,
            self.log.sink.clone(),
        ))
    }
    async fn token_source(&self) -> Arc<DynTokenSource> {
        self.source.clone()
    }
    async fn cancel_channel(&self) -> Option<Arc<DynCancelChannel>> {
        match self.primary.cancel_channel().await {
            Some(c) => Some(c),
            None => Some(self.log.cancels.clone()),
        }
    }
    async fn publish_raw_request(&self, body: &[u8]) -> Result<()> {
        self.primary.publish_raw_request(body).await
    }
    async fn dead_letters(&self) -> Result<Vec<(Vec<u8>, String)>> {
        self.primary.dead_letters().await
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            replay: true,
            cancel: true,
        }
    }
}
