//! RabbitMQ's reply-to topology as the primary: each gateway instance has a queue of its own,
//! workers pack the envelopes for it into one message per batch, and nothing is kept.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chatstream::amqp::{
    AmqpCancelChannel, AmqpConfig, AmqpConnection, AmqpRequestSink, AmqpRequestSource,
    AmqpTokenSink, AmqpTokenSource, DeadLetterQueue, TokenTopology,
};
use chatstream_core::testkit::{skip_or_fail, Capabilities, Harness};
use chatstream_core::{
    DynCancelChannel, DynMessageSource, DynRequestSink, DynTokenSink, DynTokenSource, Result,
};

use crate::support::block_on_aside;

/// Throw-away names on the RabbitMQ of the tests (`CHATSTREAM_AMQP_URL`), one connection.
pub(crate) struct AmqpPrimary {
    config: AmqpConfig,
    conn: AmqpConnection,
    requests: Arc<AmqpRequestSink>,
    source: Arc<AmqpTokenSource>,
    dead: DeadLetterQueue,
    dead_seen: Mutex<Vec<(Vec<u8>, String)>>,
}

impl AmqpPrimary {
    /// The reply-to topology, or `None` (after a line on stderr) when RabbitMQ is unreachable
    /// and `CHATSTREAM_REQUIRE_SERVICES` is not set.
    pub(crate) async fn reply_to() -> Option<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let id = &id[..12];
        let mut config = AmqpConfig::from_env();
        config.connection_name = format!("chatstream-history-{id}");
        config.request_queue = format!("cs-hist-{id}.requests");
        config.dead_letter_exchange = format!("cs-hist-{id}.dlx");
        config.dead_letter_queue = format!("cs-hist-{id}.dead");
        config.token_exchange = format!("cs-hist-{id}.tokens");
        config.token_stream = format!("cs-hist-{id}.log");
        config.control_exchange = format!("cs-hist-{id}.control");
        config.reply_queue_prefix = format!("cs-hist-{id}.gw.");
        config.queue_expires = Some(Duration::from_secs(120));
        config.token_topology = TokenTopology::ReplyTo;
        config.backoff.initial = Duration::from_millis(50);
        config.backoff.give_up_after = Duration::from_secs(10);
        let conn = match AmqpConnection::connect(config.clone()).await {
            Ok(c) => c,
            Err(e) => return skip_or_fail("RabbitMQ", e),
        };
        let dead = DeadLetterQueue::new(&conn)
            .await
            .expect("declare dead letters");
        let requests = AmqpRequestSink::new(&conn).await.expect("request sink");
        let source = AmqpTokenSource::new(&conn).await.expect("token source");
        Some(Self {
            config,
            conn,
            requests: Arc::new(requests),
            source: Arc::new(source),
            dead,
            dead_seen: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl Harness for AmqpPrimary {
    async fn request_sink(&self) -> Arc<DynRequestSink> {
        self.requests.clone()
    }
    async fn message_source(&self) -> Box<DynMessageSource> {
        // A connection of its own, like a worker process: dropping it gives its requests back.
        let conn = AmqpConnection::connect(self.config.clone())
            .await
            .expect("worker connection");
        Box::new(AmqpRequestSource::new(&conn).await.expect("request source"))
    }
    async fn token_sink(&self) -> Arc<DynTokenSink> {
        Arc::new(AmqpTokenSink::new(&self.conn).await.expect("token sink"))
    }
    async fn token_source(&self) -> Arc<DynTokenSource> {
        self.source.clone()
    }
    async fn cancel_channel(&self) -> Option<Arc<DynCancelChannel>> {
        Some(Arc::new(
            AmqpCancelChannel::new(&self.conn)
                .await
                .expect("cancel channel"),
        ))
    }
    async fn publish_raw_request(&self, body: &[u8]) -> Result<()> {
        self.requests.submit_raw(body, None).await
    }
    async fn dead_letters(&self) -> Result<Vec<(Vec<u8>, String)>> {
        let new = self.dead.take(1000).await?;
        let mut seen = self.dead_seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.extend(new.into_iter().map(|d| (d.body, d.reason)));
        Ok(seen.clone())
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            replay: false,
            cancel: true,
        }
    }
}

impl Drop for AmqpPrimary {
    fn drop(&mut self) {
        let c = self.config.clone();
        block_on_aside(async move {
            let Ok(conn) =
                lapin::Connection::connect(&c.normalized_url(), Default::default()).await
            else {
                return;
            };
            if let Ok(ch) = conn.create_channel().await {
                for q in [&c.request_queue, &c.dead_letter_queue] {
                    let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
                }
                for x in [
                    &c.dead_letter_exchange,
                    &c.token_exchange,
                    &c.control_exchange,
                ] {
                    let _ = ch
                        .exchange_delete(x.as_str().into(), Default::default())
                        .await;
                }
            }
            let _ = conn.close(200, "test cleanup".into()).await;
        });
    }
}
