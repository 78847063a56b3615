//! Helpers of the fault tests: the `chaos_worker` example as a child process, broker
//! namespaces that no other test uses, and a client-side check of answers.
#![allow(dead_code)]

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chatstream::amqp::{
    AmqpConfig, AmqpConnection, AmqpRequestSink, AmqpRequestSource, AmqpTokenSink, AmqpTokenSource,
};
use chatstream::redis::{
    BusConfig, QueueConfig, RedisClient, RedisRequestSink, RedisRequestSource, RedisTokenSink,
    RedisTokenSource,
};
use chatstream::testkit::skip_or_fail;
use chatstream::{
    ChatRequest, ClientEvent, ClientStream, DynMessageSource, DynRequestSink, DynTokenSink,
    DynTokenSource, ScriptedBackend, StreamEvent,
};
use futures::StreamExt;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

pub(crate) use crate::support::within;
use crate::support::{block_on_aside, example_path, http, signal, start};
#[allow(unused_imports)]
pub(crate) use crate::support::{Event, SseClient};
pub use chatstream_redis::testkit::redis_url;

/// Longest any single step (a process start, an answer, a stop) may take.
pub const STEP: Duration = Duration::from_secs(60);

/// A fresh namespace for one test's queues, exchanges and keys.
pub fn unique_name(tag: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("cs-chaos-{tag}-{}", &id[..10])
}

/// Which broker a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// RabbitMQ: durable request queue, reply-to token topology (no history).
    Amqp,
    /// Redis: Streams request queue and token bus (history kept).
    Redis,
}

impl Kind {
    pub fn env(self) -> &'static str {
        match self {
            Kind::Amqp => "amqp",
            Kind::Redis => "redis",
        }
    }
}

/// The names `chaos_worker` uses for namespace `name` (keep in step with
/// `examples/chaos_worker.rs`): the stream token topology, whose log is `{name}.log`.
pub fn amqp_config(name: &str) -> AmqpConfig {
    let mut c = AmqpConfig::from_env();
    c.token_topology = chatstream::amqp::TokenTopology::Stream;
    c.token_stream = format!("{name}.log");
    c.connection_name = format!("{name}-test");
    c.request_queue = format!("{name}.requests");
    c.dead_letter_exchange = format!("{name}.dlx");
    c.dead_letter_queue = format!("{name}.dead");
    c.token_exchange = format!("{name}.tokens");
    c.control_exchange = format!("{name}.control");
    c.reply_queue_prefix = format!("{name}.gw.");
    c.queue_expires = Some(Duration::from_secs(600));
    c.max_deliveries = 100;
    c.backoff.initial = Duration::from_millis(50);
    c.backoff.max = Duration::from_secs(1);
    c.backoff.give_up_after = Duration::from_secs(60);
    c
}

pub fn redis_prefix(name: &str) -> String {
    format!("{name}:")
}

/// A worker's and a gateway's ends of one broker, for a pipeline in the test's process.
pub struct Ends {
    pub source: Arc<DynMessageSource>,
    pub sink: Arc<DynTokenSink>,
    pub requests: Arc<DynRequestSink>,
    pub tokens: Arc<DynTokenSource>,
}

impl Ends {
    /// On RabbitMQ, over `conn`.
    pub async fn amqp(conn: &AmqpConnection) -> Self {
        Self {
            source: Arc::new(
                AmqpRequestSource::new(conn)
                    .await
                    .unwrap_or_else(|e| panic!("request source: {e}")),
            ),
            sink: Arc::new(
                AmqpTokenSink::new(conn)
                    .await
                    .unwrap_or_else(|e| panic!("token sink: {e}")),
            ),
            requests: Arc::new(
                AmqpRequestSink::new(conn)
                    .await
                    .unwrap_or_else(|e| panic!("request sink: {e}")),
            ),
            tokens: Arc::new(
                AmqpTokenSource::new(conn)
                    .await
                    .unwrap_or_else(|e| panic!("token source: {e}")),
            ),
        }
    }

    /// On Redis under `prefix`, requests on `queue`; token reads block 1 s at most.
    pub async fn redis(prefix: &str, queue: QueueConfig) -> Self {
        let client = RedisClient::connect(&redis_url(), prefix)
            .await
            .unwrap_or_else(|e| panic!("Redis: {e}"));
        let bus = BusConfig {
            block: Duration::from_secs(1),
            ..BusConfig::default()
        };
        Self {
            source: Arc::new(
                RedisRequestSource::new(client.clone(), queue.clone())
                    .await
                    .unwrap_or_else(|e| panic!("request source: {e}")),
            ),
            sink: Arc::new(
                RedisTokenSink::new(client.clone(), bus.clone())
                    .await
                    .unwrap_or_else(|e| panic!("token sink: {e}")),
            ),
            requests: Arc::new(RedisRequestSink::new(client.clone(), &queue)),
            tokens: Arc::new(RedisTokenSource::new(client, bus)),
        }
    }
}

/// Whether the broker answers; `false` after [`skip_or_fail`] said why.
pub async fn broker_up(kind: Kind) -> bool {
    match kind {
        Kind::Amqp => {
            let config = amqp_config(&unique_name("probe"));
            match AmqpConnection::connect(config).await {
                Ok(conn) => {
                    drop(conn);
                    true
                }
                Err(e) => skip_or_fail::<()>("RabbitMQ", e).is_some(),
            }
        }
        Kind::Redis => match RedisClient::connect(&redis_url(), "cs-chaos-probe:").await {
            Ok(c) => match c.ping().await {
                Ok(()) => true,
                Err(e) => skip_or_fail::<()>("Redis", e).is_some(),
            },
            Err(e) => skip_or_fail::<()>("Redis", e).is_some(),
        },
    }
}

/// Deletes a Redis namespace's keys when dropped (best effort, with `redis-cli`).
#[derive(Debug)]
pub struct RedisCleanup(pub String);

impl Drop for RedisCleanup {
    fn drop(&mut self) {
        let script = format!(
            "redis-cli -u {url} --scan --pattern '{p}*' | xargs -r redis-cli -u {url} del >/dev/null",
            url = redis_url(),
            p = self.0
        );
        let _ = std::process::Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Deletes what a RabbitMQ namespace declared (queues, exchanges) when dropped. Reply
/// queues are exclusive and go by themselves.
#[derive(Debug)]
pub struct AmqpCleanup(pub String);

impl Drop for AmqpCleanup {
    fn drop(&mut self) {
        let c = amqp_config(&self.0);
        block_on_aside(async move {
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
    }
}

/// Removes a namespace's queues, exchanges and keys from both brokers when dropped.
#[derive(Debug)]
pub struct Namespace {
    pub name: String,
    _amqp: AmqpCleanup,
    _redis: RedisCleanup,
}

/// A fresh namespace for one test ([`unique_name`]), cleaned up when dropped.
pub fn namespace(tag: &str) -> Namespace {
    let name = unique_name(tag);
    Namespace {
        _amqp: AmqpCleanup(name.clone()),
        _redis: RedisCleanup(redis_prefix(&name)),
        name,
    }
}

/// A running `chaos_worker` process, killed when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    /// The gateway's port (gateway role).
    pub port: Option<u16>,
}

/// Settings of one `chaos_worker` process.
#[derive(Debug, Clone)]
pub struct Spec {
    pub kind: Kind,
    pub name: String,
    pub gateway: bool,
    pub token_delay_ms: u64,
    pub concurrency: usize,
    pub shutdown_grace_ms: u64,
}

impl Spec {
    pub fn worker(kind: Kind, name: &str) -> Self {
        Self {
            kind,
            name: name.to_owned(),
            gateway: false,
            token_delay_ms: 10,
            concurrency: 16,
            shutdown_grace_ms: 10_000,
        }
    }

    pub fn gateway(kind: Kind, name: &str) -> Self {
        Self {
            gateway: true,
            ..Self::worker(kind, name)
        }
    }

    /// Starts the process and waits for its ready line.
    pub async fn start(&self) -> Proc {
        let mut cmd = Command::new(example_path("chaos_worker"));
        cmd.env("CHAOS_BROKER", self.kind.env())
            .env(
                "CHAOS_ROLE",
                if self.gateway { "gateway" } else { "worker" },
            )
            .env("CHAOS_NAME", &self.name)
            .env("CHAOS_TOKEN_DELAY_MS", self.token_delay_ms.to_string())
            .env("CHAOS_CONCURRENCY", self.concurrency.to_string())
            .env(
                "CHAOS_SHUTDOWN_GRACE_MS",
                self.shutdown_grace_ms.to_string(),
            )
            .env("CHAOS_CLAIM_IDLE_MS", "1000")
            .env("CHATSTREAM_REDIS_URL", redis_url())
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("LOG_LEVEL", "error");
        let started = start(cmd, "chaos_worker", STEP, |line| {
            (line.starts_with("chaos_worker ready") || line.starts_with("chaos_gateway listening"))
                .then(|| line.to_owned())
        })
        .await;
        let port = started
            .ready
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .filter(|_| self.gateway);
        Proc {
            child: started.child,
            lines: started.lines,
            port,
        }
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child
            .id()
            .unwrap_or_else(|| panic!("process already reaped"))
    }

    fn signal(&self, sig: &str) {
        signal(&self.child, sig);
    }

    /// SIGKILL, and waits until the process is gone.
    pub async fn kill(mut self) {
        self.signal("-KILL");
        let _ = within("SIGKILLed process to exit", STEP, self.child.wait()).await;
    }

    /// SIGTERM; waits for the exit and returns the process's `stopped` line.
    pub async fn terminate(mut self, limit: Duration) -> String {
        self.signal("-TERM");
        let status = within("SIGTERMed process to exit", limit, self.child.wait())
            .await
            .unwrap_or_else(|e| panic!("wait: {e}"));
        assert!(status.success(), "exit status {status} after SIGTERM");
        // The process has exited, but its last lines may still be on their way from the
        // pipe: read up to the end of its output.
        let mut stopped = String::new();
        while let Some(line) = within("the end of its output", limit, self.lines.recv()).await {
            if line.contains("stopped") {
                stopped = line;
            }
        }
        stopped
    }
}

/// A number from a `key=value` field of a line.
pub fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// What a client made of a stream, applying resets the way a UI does.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// The text after the last reset.
    pub text: String,
    pub resets: u32,
    pub ended: bool,
    pub fault: Option<String>,
}

/// Reads a stream to its end (at most `limit`), applying `Reset`s.
pub async fn follow(mut stream: ClientStream, limit: Duration) -> Outcome {
    let mut out = Outcome::default();
    let read = async {
        while let Some(event) = stream.next().await {
            match event {
                ClientEvent::Reset { .. } => {
                    out.resets += 1;
                    out.text.clear();
                }
                ClientEvent::Envelope(env) => match &env.event {
                    StreamEvent::Token { text } => out.text.push_str(text),
                    StreamEvent::End { .. } => out.ended = true,
                    StreamEvent::Error { message } => out.fault = Some(message.clone()),
                    _ => {}
                },
                ClientEvent::Fault(f) => out.fault = Some(f.message()),
            }
        }
    };
    if tokio::time::timeout(limit, read).await.is_err() {
        out.fault = Some(format!("no end within {limit:?}"));
    }
    out
}

/// The answer the scripted backend gives to `request`.
pub fn expected(request: &ChatRequest) -> String {
    ScriptedBackend::default().answer(request)
}

/// Tallies of a run.
#[derive(Debug, Default)]
pub struct Tally {
    pub complete: usize,
    pub lost: usize,
    pub garbled: usize,
    pub resets: u32,
    pub problems: Vec<String>,
}

impl Tally {
    pub fn add(&mut self, request: &ChatRequest, outcome: &Outcome) {
        self.resets += outcome.resets;
        let want = expected(request);
        if !outcome.ended {
            self.lost += 1;
            self.problems
                .push(format!("{}: lost ({:?})", request.key, outcome.fault));
        } else if outcome.text != want {
            self.garbled += 1;
            self.problems.push(format!(
                "{}: garbled {:?} != {:?}",
                request.key, outcome.text, want
            ));
        } else {
            self.complete += 1;
        }
    }
}

/// POSTs `{"text": …}` to the gateway's `/api/chat`; returns the JSON answer.
pub async fn submit(port: u16, text: &str) -> serde_json::Value {
    let body = serde_json::json!({ "text": text }).to_string();
    let post = "POST /api/chat HTTP/1.0\r\nContent-Type: application/json";
    let (status, body) = http(port, post, &body, STEP).await;
    assert!(status.contains(" 202 "), "{status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Seed 001 data → the token text, `None` for anything else.
pub fn token_of(data: &str) -> Option<String> {
    match chatstream::wire::seed001::parse_data(data).ok()? {
        chatstream::wire::seed001::Seed001Frame::Token(t) => Some(t),
        _ => None,
    }
}

/// Shared, so helpers can hand it around.
pub type Shared<T> = Arc<tokio::sync::Mutex<T>>;
