//! Test helpers: a conformance harness on the real RabbitMQ with throw-away names.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chatstream_amqp::{
    AmqpCancelChannel, AmqpConfig, AmqpConnection, AmqpRequestSink, AmqpRequestSource,
    AmqpTokenSink, AmqpTokenSource, DeadLetterQueue, TokenTopology,
};
use chatstream_core::testkit::{skip_or_fail, Capabilities, Harness};
use chatstream_core::{
    DynCancelChannel, DynMessageSource, DynRequestSink, DynTokenSink, DynTokenSource, Result,
};
use tokio::sync::OnceCell;

/// A config whose every name is unique to this test, with queues that expire if a test
/// leaves them behind.
pub fn test_config(topology: TokenTopology) -> AmqpConfig {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let id = &id[..12];
    let mut c = AmqpConfig::from_env();
    c.connection_name = format!("chatstream-test-{id}");
    c.request_queue = format!("cs-test-{id}.requests");
    c.dead_letter_exchange = format!("cs-test-{id}.dlx");
    c.dead_letter_queue = format!("cs-test-{id}.dead");
    c.token_exchange = format!("cs-test-{id}.tokens");
    c.token_stream = format!("cs-test-{id}.log");
    c.control_exchange = format!("cs-test-{id}.control");
    c.reply_queue_prefix = format!("cs-test-{id}.gw.");
    c.queue_expires = Some(Duration::from_secs(120));
    c.response_queue_expires = Duration::from_secs(60);
    c.token_topology = topology;
    c.backoff.initial = Duration::from_millis(50);
    c.backoff.give_up_after = Duration::from_secs(10);
    c
}

/// Connects, or skips (`None`) when RabbitMQ is unreachable — failing instead under
/// `CHATSTREAM_REQUIRE_SERVICES=1`.
pub async fn connect_or_skip(config: &AmqpConfig) -> Option<AmqpConnection> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    match AmqpConnection::connect(config.clone()).await {
        Ok(c) => Some(c),
        Err(e) => skip_or_fail("RabbitMQ", e),
    }
}

/// One isolated broker setup per test.
pub struct AmqpHarness {
    pub config: AmqpConfig,
    pub conn: AmqpConnection,
    token_source: OnceCell<Arc<AmqpTokenSource>>,
    request_sink: OnceCell<Arc<AmqpRequestSink>>,
    dead: DeadLetterQueue,
    dead_seen: Mutex<Vec<(Vec<u8>, String)>>,
}

impl std::fmt::Debug for AmqpHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpHarness")
            .field("queue", &self.config.request_queue)
            .finish()
    }
}

impl AmqpHarness {
    pub async fn new(config: AmqpConfig) -> Option<Self> {
        let conn = connect_or_skip(&config).await?;
        let dead = DeadLetterQueue::new(&conn)
            .await
            .expect("declare dead letters");
        Some(Self {
            config,
            conn,
            token_source: OnceCell::new(),
            request_sink: OnceCell::new(),
            dead,
            dead_seen: Mutex::new(Vec::new()),
        })
    }

    pub async fn sink(&self) -> Arc<AmqpRequestSink> {
        self.request_sink
            .get_or_init(|| async {
                Arc::new(
                    AmqpRequestSink::new(&self.conn)
                        .await
                        .expect("request sink"),
                )
            })
            .await
            .clone()
    }

    /// A request source on its own connection, like a worker process.
    pub async fn own_source(&self) -> (AmqpConnection, AmqpRequestSource) {
        let conn = AmqpConnection::connect(self.config.clone())
            .await
            .expect("worker connection");
        let source = AmqpRequestSource::new(&conn).await.expect("request source");
        (conn, source)
    }
}

#[async_trait]
impl Harness for AmqpHarness {
    async fn request_sink(&self) -> Arc<DynRequestSink> {
        self.sink().await
    }
    async fn message_source(&self) -> Box<DynMessageSource> {
        Box::new(self.own_source().await.1)
    }
    async fn token_sink(&self) -> Arc<DynTokenSink> {
        Arc::new(AmqpTokenSink::new(&self.conn).await.expect("token sink"))
    }
    async fn token_source(&self) -> Arc<DynTokenSource> {
        // One gateway instance: a reply-to source must be shared, or a second subscriber
        // would listen on another gateway's queue.
        self.token_source
            .get_or_init(|| async {
                Arc::new(
                    AmqpTokenSource::new(&self.conn)
                        .await
                        .expect("token source"),
                )
            })
            .await
            .clone()
    }
    async fn cancel_channel(&self) -> Option<Arc<DynCancelChannel>> {
        Some(Arc::new(
            AmqpCancelChannel::new(&self.conn)
                .await
                .expect("cancel channel"),
        ))
    }
    async fn publish_raw_request(&self, body: &[u8]) -> Result<()> {
        self.sink().await.submit_raw(body, None).await
    }
    async fn dead_letters(&self) -> Result<Vec<(Vec<u8>, String)>> {
        let new = self.dead.take(1000).await?;
        let mut seen = self.dead_seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.extend(new.into_iter().map(|d| (d.body, d.reason)));
        Ok(seen.clone())
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            replay: self.config.token_topology == TokenTopology::Stream,
            cancel: true,
        }
    }
}

impl Drop for AmqpHarness {
    fn drop(&mut self) {
        let c = self.config.clone();
        // Delete what the test declared, on a runtime of its own (Drop cannot await).
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let url = c.normalized_url();
                let Ok(conn) = lapin::Connection::connect(&url, Default::default()).await else {
                    return;
                };
                if let Ok(ch) = conn.create_channel().await {
                    for q in [&c.request_queue, &c.dead_letter_queue, &c.token_stream] {
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
        })
        .join();
    }
}

/// Closes the broker-side connection(s) whose client-provided name is `name`, as an operator
/// (or a crash of the network) would. `false` when `rabbitmqctl` is not available.
pub fn close_connection_server_side(name: &str) -> bool {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "pid", "client_properties", "--silent"])
        .output();
    let Ok(out) = out else { return false };
    if !out.status.success() {
        return false;
    }
    let listing = String::from_utf8_lossy(&out.stdout);
    let mut closed = false;
    for line in listing.lines().filter(|l| l.contains(name)) {
        let Some(pid) = line.split_whitespace().next() else {
            continue;
        };
        let status = std::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "closed by a chatstream test"])
            .status();
        closed |= status.is_ok_and(|s| s.success());
    }
    closed
}

/// Waits for `cond` (polled every 20 ms) up to `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
