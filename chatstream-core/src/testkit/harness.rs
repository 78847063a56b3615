//! What an adapter provides to the conformance suite.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    DynCancelChannel, DynMessageSource, DynRequestSink, DynTokenSink, DynTokenSource,
    InMemoryBroker, Result,
};

/// What a broker adapter can do, so checks that need more are skipped for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `TokenSource::subscribe` replays envelopes published before the subscription.
    pub replay: bool,
    /// The broker has a cancel channel.
    pub cancel: bool,
}

/// One isolated instance of a broker under test (fresh queue and stream names).
#[async_trait]
pub trait Harness: Send + Sync {
    /// Where requests are submitted.
    async fn request_sink(&self) -> Arc<DynRequestSink>;
    /// A new consumer of the request queue, as one worker process has. Dropping it must
    /// give its unsettled requests back to the broker.
    async fn message_source(&self) -> Box<DynMessageSource>;
    /// Where workers publish envelopes.
    async fn token_sink(&self) -> Arc<DynTokenSink>;
    /// Where gateways read envelopes.
    async fn token_source(&self) -> Arc<DynTokenSource>;
    /// The cancel channel, when the broker has one.
    async fn cancel_channel(&self) -> Option<Arc<DynCancelChannel>>;
    /// Publishes raw bytes to the request queue, as an outside client would.
    async fn publish_raw_request(&self, body: &[u8]) -> Result<()>;
    /// The bodies and reasons of dead-lettered requests so far.
    async fn dead_letters(&self) -> Result<Vec<(Vec<u8>, String)>>;
    /// What the broker can do.
    fn capabilities(&self) -> Capabilities;
}

/// The in-memory broker as a harness.
#[derive(Debug, Clone, Default)]
pub struct InMemoryHarness {
    /// The broker.
    pub broker: InMemoryBroker,
}

impl InMemoryHarness {
    /// A fresh broker.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Harness for InMemoryHarness {
    async fn request_sink(&self) -> Arc<DynRequestSink> {
        Arc::new(self.broker.clone())
    }
    async fn message_source(&self) -> Box<DynMessageSource> {
        Box::new(self.broker.message_source())
    }
    async fn token_sink(&self) -> Arc<DynTokenSink> {
        Arc::new(self.broker.clone())
    }
    async fn token_source(&self) -> Arc<DynTokenSource> {
        Arc::new(self.broker.clone())
    }
    async fn cancel_channel(&self) -> Option<Arc<DynCancelChannel>> {
        Some(Arc::new(self.broker.clone()))
    }
    async fn publish_raw_request(&self, body: &[u8]) -> Result<()> {
        self.broker.submit_raw(body.to_vec());
        Ok(())
    }
    async fn dead_letters(&self) -> Result<Vec<(Vec<u8>, String)>> {
        Ok(self
            .broker
            .dead_letters()
            .into_iter()
            .map(|d| (d.body.to_vec(), d.reason))
            .collect())
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            replay: true,
            cancel: true,
        }
    }
}

/// True when `CHATSTREAM_REQUIRE_SERVICES=1`: a test that cannot reach its server fails.
pub fn services_required() -> bool {
    std::env::var("CHATSTREAM_REQUIRE_SERVICES")
        .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Call when a test's server is unreachable: skips with a line on stderr, or panics
/// (failing the test) when [`services_required`]. Returns `None` for `?`-style use.
pub fn skip_or_fail<T>(what: &str, why: impl std::fmt::Display) -> Option<T> {
    if services_required() {
        panic!("{what} unreachable and CHATSTREAM_REQUIRE_SERVICES=1: {why}");
    }
    eprintln!(
        "skipping: {what} unreachable ({why}); set CHATSTREAM_REQUIRE_SERVICES=1 to fail instead"
    );
    None
}
