//! Run with: cargo run --example servicebus_sse --features servicebus,redis
//!
//! Seed 001 (the SSE service) on Azure Service Bus: streams the tokens that workers
//! (seed 000's, or `servicebus_worker`) publish to the topic `token-streams` to browsers as
//! Server-Sent Events. For each chat session a client asks for, it opens a session receiver
//! on the session-enabled subscription `sse-service`, so Service Bus routes that session's
//! tokens to this instance only, and it forwards the tokens of the asked-for message id.
//!
//! Environment (a `.env` file in the working directory is read too):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SERVICEBUS_FULLY_QUALIFIED_NAMESPACE` | — | `<name>.servicebus.windows.net`, signed in passwordless (`DefaultAzureCredential`) |
//! | `SERVICEBUS_CONNECTION_STRING` | unset | a connection string instead (wins over the namespace) |
//! | `SERVICEBUS_TOKEN_STREAMS_TOPIC` | `token-streams` | topic of the tokens |
//! | `SERVICEBUS_TOKEN_STREAMS_SUBSCRIPTION` | `sse-service` | this service's subscription; it must require sessions |
//! | `REDIS_URL` | unset | when set, the Redis bus the workers (`servicebus_worker` with the same `REDIS_URL`) log every stream to: a stream this instance did not see comes from there, so a client resumes on any instance (see below) |
//! | `REDIS_PREFIX` | `cosmo:` | key prefix in that Redis (the workers' must match) |
//! | `CORS_ORIGINS` | unset | comma-separated origins allowed to call the API (`*`: any) |
//! | `LOG_LEVEL` | `INFO` | `DEBUG`, `INFO`, `WARNING`, `ERROR`, or a `tracing` filter |
//! | `HOST` | `0.0.0.0` | address to listen on (the seed runs uvicorn with `--host 0.0.0.0`) |
//! | `PORT` | `8001` | port to listen on (`0`: any free port, printed at start) |
//!
//! (Shared access keys and `SERVICEBUS_TRY_TIMEOUT`: see the chatstream-servicebus README.)
//!
//! Endpoints, as seed 001 documents them:
//!
//! - `GET /api/stream/{sessionId}/{chatMessageId}`: Server-Sent Events, one
//!   `data: {"token": "…"}` per token message, `data: {"error": "…"}` on failure and
//!   `data: __END__` at the end. Each frame also has an `id:`; a client that reconnects with
//!   `Last-Event-ID` gets the rest from this instance while the session's receiver is open.
//!   Without `REDIS_URL` that is all: elsewhere (or later) it gets a `data: {"error": …}`
//!   saying the history is lost, since Service Bus keeps nothing once a message is completed.
//!   With `REDIS_URL` it gets exactly the rest on any instance, during the answer and for an
//!   hour after its end (the Redis bus's retention), and a read from the start gets the whole
//!   answer: live tokens still come from Service Bus, what came before the subscription from
//!   the Redis log (`FallbackTokenSource`).
//! - `GET /health`: `{"status":"healthy","service":"sse-service"}`.
//!
//! It only reads: it never sends to `user-messages`, so its identity needs only the
//! *Azure Service Bus Data Receiver* role. Token messages that are not seed 000's JSON are
//! logged and skipped. A client that goes away releases the session (when it was the
//! session's last client), so another instance can take it.
//!
//! SIGTERM or Ctrl-C stop it: open streams end with an error frame and `__END__`.

mod support;

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chatstream::axum::{seed001, ChatstreamState};
use chatstream::redis::{BusConfig, RedisClient, RedisConfig, RedisTokenSource};
use chatstream::servicebus::{ServiceBusConfig, ServiceBusConnection};
use chatstream::worker::shutdown_signal;
use chatstream::{DynTokenSource, FallbackTokenSource, Gateway, GatewayConfig, NoRequestSink};
use support::{env, init_logging, local_url};

/// Longest one client stays connected to one answer.
const STREAM_TIMEOUT: Duration = Duration::from_secs(600);

#[tokio::main]
async fn main() -> ExitCode {
    support::exit_code("servicebus_sse", run().await)
}

async fn run() -> Result<(), Box<dyn Error>> {
    let _ = dotenvy::dotenv();
    // The seed uses Python's level names.
    init_logging("info");

    let config = ServiceBusConfig::from_env()?;
    let subscription = format!(
        "{}/{}",
        config.token_streams_topic, config.token_streams_subscription
    );
    let conn = ServiceBusConnection::connect(config).await?;
    let mut tokens: Arc<DynTokenSource> = Arc::new(conn.token_source());
    let mut history = String::new();
    if env("REDIS_URL").is_some() {
        // Live tokens from Service Bus, what this instance did not see from the workers' log.
        let redis = RedisConfig::from_env()?;
        history = format!(", history from the Redis bus (prefix {})", redis.prefix);
        let client = RedisClient::from_config(&redis).await?;
        let log = RedisTokenSource::new(client, BusConfig::default());
        tokens = Arc::new(FallbackTokenSource::new(tokens, Arc::new(log)));
    }
    let gateway = Gateway::builder(Arc::new(NoRequestSink), tokens)
        .config(GatewayConfig {
            stream_timeout: Some(STREAM_TIMEOUT),
            ..GatewayConfig::default()
        })
        .build();

    let app = support::http_edge(seed001::router(ChatstreamState::new(gateway.clone())));

    let host = env("HOST").unwrap_or_else(|| "0.0.0.0".to_owned());
    let port = support::port("PORT", 8001)?;
    let listener = support::bind(&host, port, "set PORT").await?;
    let url = local_url(listener.local_addr()?);
    println!("servicebus_sse: SSE service on {url} reading subscription {subscription}{history}");
    println!("  curl -N {url}/api/stream/<sessionId>/<chatMessageId>");

    // On SIGTERM or Ctrl-C, open streams end with an error frame and __END__, so the
    // server can stop.
    chatstream::axum::serve(listener, app, gateway, shutdown_signal()).await?;
    Ok(())
}
