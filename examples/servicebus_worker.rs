//! Run with: cargo run --example servicebus_worker --features servicebus,redis
//!
//! Seed 000 (the scalable chat worker) on Azure Service Bus: takes chat requests from the
//! subscription `worker-service` of the topic `user-messages`, and streams the answer to the
//! topic `token-streams`, where seed 001's SSE service (or `servicebus_sse`) picks it up by
//! session.
//!
//! Environment (a `.env` file in the working directory is read too):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SERVICEBUS_FULLY_QUALIFIED_NAMESPACE` | — | `<name>.servicebus.windows.net`, signed in passwordless (`DefaultAzureCredential`: managed identity, then the Azure CLI) |
//! | `SERVICEBUS_CONNECTION_STRING` | unset | a connection string instead (wins over the namespace) |
//! | `SERVICEBUS_USER_MESSAGES_TOPIC` | `user-messages` | topic of the requests |
//! | `SERVICEBUS_USER_MESSAGES_SUBSCRIPTION` | `worker-service` | this worker's subscription (every instance shares it) |
//! | `SERVICEBUS_TOKEN_STREAMS_TOPIC` | `token-streams` | topic the tokens go to |
//! | `REDIS_URL` | unset | when set, every answer is also appended to the Redis bus there (the history log `servicebus_sse` instances with the same `REDIS_URL` resume from); a batch counts as sent only once both Redis and Service Bus took it |
//! | `REDIS_PREFIX` | `cosmo:` | key prefix in that Redis |
//! | `LOG_LEVEL` | `INFO` | `DEBUG`, `INFO`, `WARNING`, `ERROR`, or a `tracing` filter |
//! | `OPENAI_URL`, `OPENAI_API_KEY` | unset | when either is set, answers come from that OpenAI-compatible server (`OPENAI_MODEL`, default `deepseek-r1:8b`); otherwise the seed's demo answer |
//! | `TOKEN_DELAY_MS` | `100` | the demo answer's delay between two characters (the seed's 0.1 s) |
//! | `WORKER_CONCURRENCY` | `16` | requests this process answers at once |
//! | `METRICS_PORT` | unset | serve the worker's metrics (`GET /metrics`, Prometheus text) and readiness (`GET /ready`) on this port (`0`: any free port, printed at start); off when unset. Readiness checks Redis when `REDIS_URL` is set; the Service Bus client offers no cheap connection probe, so there it only turns 503 at shutdown |
//! | `METRICS_HOST` | `0.0.0.0` | address of the metrics port |
//!
//! (`SERVICEBUS_ENDPOINT` with `SERVICEBUS_SHARED_ACCESS_KEY_NAME` and
//! `SERVICEBUS_SHARED_ACCESS_KEY` connect with a shared access key, and
//! `SERVICEBUS_TRY_TIMEOUT` sets the per-attempt timeout; see the chatstream-servicebus
//! README.)
//!
//! Messages, as seed 000 documents them. A request's body is
//! `{"text": "…", "sessionId": "…", "messageId": "…"}`; each token goes out as
//! `{"sessionId": "…", "messageId": "…", "token": "…"}` and the end as
//! `{"sessionId": "…", "messageId": "…", "end_of_stream": true}`, with Service Bus's
//! `SessionId` set to the chat session id. chatstream adds `"seq"` (and `"type"` where the
//! seed has no field, such as errors), which seed 001 readers ignore. Where tokens come faster
//! than one per 10 ms (a real model), several travel in one message's `token`.
//!
//! The demo answer names the text and the message id and streams one character at a time,
//! as the seed's demo does. A request that is not valid JSON, or lacks `sessionId` or
//! `messageId`, is dead-lettered with the reason (`DeadLetterReason`) instead of being
//! retried; a request is completed only once its end-of-stream message is sent, so one whose
//! worker dies is redelivered to another.
//!
//! SIGTERM or Ctrl-C stop it gracefully: answers in progress finish (within 25 s), what is
//! still running then is abandoned, so Service Bus gives it to another worker.

mod support;

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chatstream::backend::Tokenize;
use chatstream::redis::{BusConfig, RedisClient, RedisConfig, RedisTokenSink};
use chatstream::servicebus::{ServiceBusConfig, ServiceBusConnection};
use chatstream::worker::shutdown_signal;
use chatstream::{
    DynLlmBackend, DynTokenSink, LoggedTokenSink, ScriptedBackend, Worker, WorkerConfig,
};
use support::{env, init_logging};

/// How long answers in progress may run on after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// The seed's demo: 0.1 s between two characters.
const DEFAULT_TOKEN_DELAY: Duration = Duration::from_millis(100);

/// The demo answer (`{text}` and `{message_id}` are filled in).
const DEMO_ANSWER: &str = "This is a response to your message \"{text}\" (message {message_id}).";

#[tokio::main]
async fn main() -> ExitCode {
    support::exit_code("servicebus_worker", run().await)
}

async fn run() -> Result<(), Box<dyn Error>> {
    let _ = dotenvy::dotenv();
    // The seed uses Python's level names.
    init_logging("info");

    let concurrency =
        match env("WORKER_CONCURRENCY") {
            Some(n) => n.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("WORKER_CONCURRENCY must be a positive number, got {n:?}")
            })?,
            None => 16,
        };
    let config = ServiceBusConfig::from_env()?;
    let subscription = format!(
        "{}/{}",
        config.user_messages_topic, config.user_messages_subscription
    );
    let tokens_topic = config.token_streams_topic.clone();
    let conn = ServiceBusConnection::connect(config).await?;
    let source = conn.request_source().await?;
    let mut sink: Arc<DynTokenSink> = Arc::new(conn.token_sink().await?);
    let mut history = String::new();
    let mut checks: Vec<Arc<dyn chatstream::HealthCheck>> = Vec::new();
    if env("REDIS_URL").is_some() {
        // Each batch goes to the Redis bus first, then to Service Bus: gateways that did not
        // see a stream read it back from there.
        let redis = RedisConfig::from_env()?;
        history = format!(", logged to the Redis bus (prefix {})", redis.prefix);
        let client = RedisClient::from_config(&redis).await?;
        checks.push(Arc::new(client.clone()));
        let log = RedisTokenSink::new(client, BusConfig::default()).await?;
        sink = Arc::new(LoggedTokenSink::new(sink, Arc::new(log)));
    }
    let worker = Worker::builder(Arc::new(source), sink, backend()?)
        .config(WorkerConfig {
            concurrency,
            // Seed 000 messages carry tokens and the end only.
            status_events: false,
            shutdown_grace: SHUTDOWN_GRACE,
            ..WorkerConfig::default()
        })
        .build()
        .spawn();
    println!(
        "servicebus_worker: answering subscription {subscription}, tokens to topic {tokens_topic}{history} ({concurrency} at once)"
    );
    tracing::info!(%subscription, "waiting for messages");
    #[cfg(feature = "axum")]
    let ready = {
        let ready = checks
            .into_iter()
            .fold(chatstream::axum::ready::Readiness::new(), |r, c| r.check(c));
        support::serve_worker_metrics("servicebus_worker", worker.metrics(), ready.clone()).await?;
        ready
    };
    #[cfg(not(feature = "axum"))]
    drop(checks);

    shutdown_signal().await;
    tracing::info!("shutting down");
    #[cfg(feature = "axum")]
    ready.set_shutting_down();
    let stats = worker.shutdown().await;
    tracing::info!(
        completed = stats.completed,
        dead_lettered = stats.dead_lettered,
        requeued = stats.requeued,
        "worker stopped"
    );
    Ok(())
}

/// The OpenAI-compatible backend when `OPENAI_URL` or `OPENAI_API_KEY` is set, else the
/// seed's demo answer, one character every `TOKEN_DELAY_MS`.
fn backend() -> Result<Arc<DynLlmBackend>, Box<dyn Error>> {
    if let Some(openai) = support::configured_openai()? {
        return Ok(openai);
    }
    let delay = match env("TOKEN_DELAY_MS") {
        Some(ms) => Duration::from_millis(
            ms.parse()
                .map_err(|_| format!("TOKEN_DELAY_MS must be milliseconds, got {ms:?}"))?,
        ),
        None => DEFAULT_TOKEN_DELAY,
    };
    tracing::info!(
        ?delay,
        "answering with the demo answer (set OPENAI_URL for a real model)"
    );
    Ok(Arc::new(
        ScriptedBackend::default()
            .with_answer(DEMO_ANSWER)
            .with_tokenize(Tokenize::Chars)
            .with_delay(delay),
    ))
}
