//! The conformance suite's harness on the in-process fake Service Bus (feature `testkit`).

use std::sync::Arc;

use async_trait::async_trait;
use chatstream_core::testkit::{Capabilities, Harness};
use chatstream_core::{
    DynCancelChannel, DynMessageSource, DynRequestSink, DynTokenSink, DynTokenSource, Result,
};

use crate::fake::{FakeConfig, FakeServiceBus};
use crate::{
    ServiceBusConnection, ServiceBusRequestSink, ServiceBusTokenSink, ServiceBusTokenSource,
};

/// A fresh fake Service Bus (`FakeConfig::chatstream("sse-service")`) and one connection
/// to it, with the real azservicebus client. Service Bus keeps nothing once a message is
/// completed and has no cancel channel, so the harness says: no replay, no cancel.
#[derive(Debug)]
pub struct FakeHarness {
    fake: FakeServiceBus,
    conn: ServiceBusConnection,
    requests: Arc<ServiceBusRequestSink>,
    tokens: Arc<ServiceBusTokenSink>,
    source: Arc<ServiceBusTokenSource>,
}

impl FakeHarness {
    /// Starts the fake and connects to it.
    ///
    /// # Panics
    /// When the fake cannot start or be reached (a test set-up failure).
    pub async fn start() -> Self {
        let fake = FakeServiceBus::start(FakeConfig::chatstream("sse-service"))
            .await
            .unwrap_or_else(|e| panic!("start the fake Service Bus: {e}"));
        let conn = ServiceBusConnection::connect(fake.config())
            .await
            .unwrap_or_else(|e| panic!("connect to the fake Service Bus: {e}"));
        let requests = conn.request_sink().await;
        let tokens = conn.token_sink().await;
        Self {
            requests: Arc::new(requests.unwrap_or_else(|e| panic!("request sink: {e}"))),
            tokens: Arc::new(tokens.unwrap_or_else(|e| panic!("token sink: {e}"))),
            source: Arc::new(conn.token_source()),
            conn,
            fake,
        }
    }
}

#[async_trait]
impl Harness for FakeHarness {
    async fn request_sink(&self) -> Arc<DynRequestSink> {
        self.requests.clone()
    }
    async fn message_source(&self) -> Box<DynMessageSource> {
        let source = self.conn.request_source().await;
        Box::new(source.unwrap_or_else(|e| panic!("request source: {e}")))
    }
    async fn token_sink(&self) -> Arc<DynTokenSink> {
        self.tokens.clone()
    }
    async fn token_source(&self) -> Arc<DynTokenSource> {
        self.source.clone()
    }
    async fn cancel_channel(&self) -> Option<Arc<DynCancelChannel>> {
        None
    }
    async fn publish_raw_request(&self, body: &[u8]) -> Result<()> {
        self.requests.submit_raw(body).await
    }
    async fn dead_letters(&self) -> Result<Vec<(Vec<u8>, String)>> {
        Ok(self
            .fake
            .dead_letters("user-messages", "worker-service")
            .into_iter()
            .map(|d| (d.body, d.reason.unwrap_or_default()))
            .collect())
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            replay: false,
            cancel: false,
        }
    }
}
