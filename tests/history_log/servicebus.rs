//! Service Bus (the in-process fake, with the real azservicebus client) as the primary: a
//! session-routed topology that keeps nothing once a message is completed, and has no cancel
//! channel.

use std::sync::Arc;

use async_trait::async_trait;
use chatstream_core::testkit::{Capabilities, Harness};
use chatstream_core::{
    DynCancelChannel, DynMessageSource, DynRequestSink, DynTokenSink, DynTokenSource, Result,
};
use chatstream_servicebus::fake::{FakeConfig, FakeServiceBus};
use chatstream_servicebus::{
    ServiceBusConnection, ServiceBusRequestSink, ServiceBusTokenSink, ServiceBusTokenSource,
};

/// A fresh fake Service Bus and one connection to it.
pub(crate) struct ServiceBusPrimary {
    fake: FakeServiceBus,
    conn: ServiceBusConnection,
    requests: Arc<ServiceBusRequestSink>,
    tokens: Arc<ServiceBusTokenSink>,
    source: Arc<ServiceBusTokenSource>,
}

impl ServiceBusPrimary {
    pub(crate) async fn start() -> Self {
        let fake = FakeServiceBus::start(FakeConfig::chatstream("sse-service"))
            .await
            .unwrap_or_else(|e| panic!("start the fake Service Bus: {e}"));
        let conn = ServiceBusConnection::connect(fake.config())
            .await
            .unwrap_or_else(|e| panic!("connect to the fake: {e}"));
        Self {
            requests: Arc::new(conn.request_sink().await.expect("request sink")),
            tokens: Arc::new(conn.token_sink().await.expect("token sink")),
            source: Arc::new(conn.token_source()),
            conn,
            fake,
        }
    }
}

#[async_trait]
impl Harness for ServiceBusPrimary {
    async fn request_sink(&self) -> Arc<DynRequestSink> {
        self.requests.clone()
    }
    async fn message_source(&self) -> Box<DynMessageSource> {
        Box::new(self.conn.request_source().await.expect("request source"))
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
