//! Run with: cargo run --example queue_worker --features amqp
//!
//! Seed 003 (the ChatGPT queue worker) end to end on RabbitMQ: a worker that takes chat
//! requests from a queue, asks any OpenAI-compatible server (OpenAI, Ollama, vLLM,
//! DeepSeek, …) and publishes the answer token by token to the queue `response_{uid}`; and
//! seed 003's REST API on port 8080 (`POST /v1/chat/completions`,
//! `GET /v1/chat/response?uid=`, `GET /ping`, `GET /ready`: 503 with a JSON reason while
//! RabbitMQ is unreachable, and `GET /metrics`: the gateway's metrics in Prometheus text). A
//! client that publishes to `default-queue` as the seed's pika example does and consumes
//! `response_{uid}` gets the answer, and so does the seed's curl flow.
//!
//! Environment (a `.env` file in the working directory is read too):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `RABBITMQ_URL` | `amqp://guest:guest@localhost:5672/` | RabbitMQ connection URL (`CHATSTREAM_AMQP_URL` wins when set) |
//! | `RABBITMQ_QUEUE` | `default-queue` | durable queue of chat requests |
//! | `OPENAI_API_KEY` | `dummy-token` | API key of the LLM server |
//! | `OPENAI_URL` | `http://localhost:11434/v1` | base URL of the OpenAI-compatible server |
//! | `OPENAI_MODEL` | `deepseek-r1:8b` | model used when a request names none |
//! | `LOG_LEVEL` | `info` | `debug`, `info`, `warn`, `error`, or a `tracing` filter |
//! | `RESTAPI_PORT` | `8080` | port of the REST API (`0`: any free port, printed at start) |
//! | `RESTAPI_HOST` | `0.0.0.0` | address of the REST API (the Go original listens on every interface) |
//! | `WORKER_CONCURRENCY` | `16` | requests one worker process answers at once (`--concurrency`) |
//! | `CHATSTREAM_SCRIPTED` | unset | `1`: answer with the scripted backend (one word every 30 ms) instead of an LLM, for demos without a model |
//! | `CHATSTREAM_WORKER_ONLY` | unset | `1`: as `--worker-only` |
//! | `CHATSTREAM_REST_ONLY` | unset | `1`: as `--rest-only` |
//! | `CHATSTREAM_REST_TOPOLOGY` | `stream` | as `--rest-topology`: `stream`, `per-request` or `reply-to` |
//! | `RABBITMQ_TOKEN_STREAM` | `chatstream.tokens.log` | the stream queue (log) of the `stream` topology; workers and REST instances must agree |
//! | `RABBITMQ_STREAM_MAX_AGE` | `3600` | seconds the log keeps envelopes: how long a finished answer stays resumable |
//! | `RABBITMQ_STREAM_MAX_BYTES` | `1073741824` | the log's size cap (1 GiB); under load it, not the age, bounds how far back a resume reaches |
//! | `CORS_ORIGINS` | unset | comma-separated origins allowed to call the REST API (`*`: any) |
//! | `METRICS_PORT` | unset | serve the worker's metrics (`GET /metrics`, Prometheus text) and readiness (`GET /ready`) on this port (`0`: any free port, printed at start); off when unset |
//! | `METRICS_HOST` | `0.0.0.0` | address of the metrics port |
//! | `REDIS_URL`, `REDIS_PREFIX` | unset, `cosmo:` | where the REST side keeps the OpenAI Responses API's stored responses, shared by every `--rest-only` instance; unset: in this process's memory |
//!
//! Modes: by default one process runs a worker and the REST API. `--worker-only` (or
//! `--no-rest`) runs only the worker and `--rest-only` only the REST API; start as many
//! worker processes as you like, they share the request queue (each request goes to one of
//! them; a request whose worker dies is redelivered to another, whose answer then follows
//! the partial one, its envelopes carrying a higher attempt). Several `--rest-only`
//! instances work behind a load balancer: with the default `stream` topology any instance
//! serves `GET /v1/chat/response?uid=` for any request, from the start, after a
//! `Last-Event-ID`, or live, during and after generation, and `DELETE` on it stops the
//! answer from any instance.
//!
//! Where the REST API reads answers (`--rest-topology`):
//! - `stream` (default): the workers append one message per batch, holding the envelopes
//!   of many streams, to the durable RabbitMQ stream queue `RABBITMQ_TOKEN_STREAM`, which
//!   keeps them for `RABBITMQ_STREAM_MAX_AGE` / `RABBITMQ_STREAM_MAX_BYTES`; every REST
//!   instance reads it. Resumable on any instance and across a RabbitMQ restart; needs
//!   chatstream workers (the requests name the log in `reply_to`).
//! - `per-request`: from `response_{uid}` as the seed did, one broker message per run of
//!   tokens (so it also works in front of the Go original's workers). Live only and on one
//!   instance: the REST API consumes `response_{uid}` exclusively, so a second reader of
//!   the same uid (on another instance) gets a clear error instead of every other token.
//! - `reply-to`: from a queue of the gateway's own that its requests name in `reply_to`,
//!   one message per batch; live only, on the instance the client posted to.
//!
//! Workers need no setting for any of these; clients that publish to the queue themselves
//! (the pika flow) still get `response_{uid}`.
//!
//! Messages in `response_{uid}`: one per run of tokens, the raw text as the body
//! (`text/plain`), AMQP `type` = `token`; an error has `type` = `error`; the end is an empty
//! message with `type` = `end` (the original sent no end marker). The queue is declared
//! with `x-expires` (10 minutes unused), so abandoned ones disappear.
//!
//! SIGTERM or Ctrl-C stop it gracefully: the REST API ends open streams and stops, and the
//! worker finishes the answers in progress (within 25 s; what is still running then goes
//! back to the queue for another worker).

mod support;

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chatstream::amqp::{
    AmqpCancelChannel, AmqpConfig, AmqpConnection, AmqpRequestSink, AmqpRequestSource,
    AmqpTokenSink, AmqpTokenSource, TokenTopology,
};
use chatstream::axum::metrics::Metrics;
use chatstream::axum::ready::Readiness;
use chatstream::axum::responses::{self, ResponsesRouteConfig};
use chatstream::axum::seed003;
use chatstream::axum::ChatstreamState;
use chatstream::worker::shutdown_signal;
use chatstream::{
    DynLlmBackend, Gateway, GatewayConfig, ScriptedBackend, Worker, WorkerConfig, WorkerHandle,
};
use clap::Parser;
use support::{env, init_logging, local_url};

/// How long answers in progress may run on after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// Longest a REST client stays connected to one answer.
const STREAM_TIMEOUT: Duration = Duration::from_secs(600);

/// Delay between the scripted backend's tokens.
const SCRIPTED_DELAY: Duration = Duration::from_millis(30);

/// Seed 003's queue worker and REST API on RabbitMQ.
#[derive(Debug, Parser)]
#[command(name = "queue_worker")]
struct Args {
    /// Run only the worker, not the REST API.
    #[arg(
        long,
        visible_alias = "no-rest",
        env = "CHATSTREAM_WORKER_ONLY",
        conflicts_with = "rest_only"
    )]
    worker_only: bool,
    /// Run only the REST API, not the worker.
    #[arg(long, env = "CHATSTREAM_REST_ONLY")]
    rest_only: bool,
    /// Requests this worker answers at once.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// How the REST API receives answers from the workers.
    #[arg(
        long,
        value_enum,
        env = "CHATSTREAM_REST_TOPOLOGY",
        default_value_t = RestTopology::Stream
    )]
    rest_topology: RestTopology,
}

/// Where the REST API reads the answers it streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RestTopology {
    /// From the durable token stream every instance reads: resumable anywhere.
    Stream,
    /// From `response_{uid}`, as seed 003's REST API did: one broker message per token.
    PerRequest,
    /// From a queue of this gateway's own, named in each request's `reply_to`: workers send
    /// it one message per batch for all its streams. Needs chatstream workers.
    ReplyTo,
}

#[tokio::main]
async fn main() -> ExitCode {
    support::exit_code("queue_worker", run().await)
}

async fn run() -> Result<(), Box<dyn Error>> {
    let _ = dotenvy::dotenv();
    let args = Args::parse();
    // Seed 003 uses logrus level names; Python's are accepted too.
    init_logging("info");

    let mut config = AmqpConfig::seed003();
    config.connection_name = "queue-worker".to_owned();
    config.prefetch = args.concurrency.max(1);
    let where_ = format!("{} queue {:?}", redact(&config.url), config.request_queue);

    let worker = if args.rest_only {
        None
    } else {
        Some(start_worker(&config, args.concurrency).await?)
    };
    // The worker's readiness: its broker connection, until shutdown.
    let worker_ready = worker
        .as_ref()
        .map(|(conn, _)| Readiness::new().check(Arc::new(conn.clone())));
    if let (Some((_, handle)), Some(ready)) = (&worker, &worker_ready) {
        support::serve_worker_metrics("queue_worker", handle.metrics(), ready.clone()).await?;
    }
    if worker.is_some() {
        println!(
            "queue_worker: worker answering {where_} ({} at once)",
            args.concurrency.max(1)
        );
        tracing::info!(queue = %config.request_queue, "waiting for messages");
    }

    if args.worker_only {
        shutdown_signal().await;
        tracing::info!("shutting down");
    } else {
        serve_rest(&config, args.rest_topology, &where_).await?;
    }
    if let Some(ready) = &worker_ready {
        ready.set_shutting_down();
    }

    if let Some((conn, handle)) = worker {
        let stats = handle.shutdown().await;
        conn.close().await;
        tracing::info!(
            completed = stats.completed,
            requeued = stats.requeued,
            "worker stopped"
        );
    }
    Ok(())
}

/// Connects and starts the worker: `RABBITMQ_QUEUE` → LLM → `response_{uid}`.
async fn start_worker(
    config: &AmqpConfig,
    concurrency: u16,
) -> Result<(AmqpConnection, WorkerHandle), Box<dyn Error>> {
    let conn = connect(config).await?;
    let source = AmqpRequestSource::new(&conn).await?;
    let sink = AmqpTokenSink::new(&conn).await?;
    let cancels = AmqpCancelChannel::new(&conn).await?;
    let handle = Worker::builder(Arc::new(source), Arc::new(sink), backend()?)
        .cancels(Arc::new(cancels))
        .config(WorkerConfig {
            concurrency: usize::from(concurrency.max(1)),
            // Seed 003 clients read text only; statuses would not be published anyway.
            status_events: false,
            shutdown_grace: SHUTDOWN_GRACE,
            ..WorkerConfig::default()
        })
        .build()
        .spawn();
    Ok((conn, handle))
}

/// Serves seed 003's REST API until SIGTERM / Ctrl-C.
async fn serve_rest(
    config: &AmqpConfig,
    topology: RestTopology,
    where_: &str,
) -> Result<(), Box<dyn Error>> {
    let mut config = config.clone();
    config.token_topology = match topology {
        RestTopology::Stream => TokenTopology::Stream,
        RestTopology::PerRequest => TokenTopology::PerRequestQueue,
        RestTopology::ReplyTo => TokenTopology::ReplyTo,
    };
    let conn = connect(&config).await?;
    let requests = AmqpRequestSink::new(&conn).await?;
    let tokens = AmqpTokenSource::new(&conn).await?;
    let cancels = AmqpCancelChannel::new(&conn).await?;
    let gateway = Gateway::builder(Arc::new(requests), Arc::new(tokens))
        .cancels(Arc::new(cancels))
        .config(GatewayConfig {
            stream_timeout: Some(STREAM_TIMEOUT),
            ..GatewayConfig::default()
        })
        .build();
    // `GET /ready`: 503 while RabbitMQ is unreachable or the process is shutting down.
    let ready = Readiness::new().check(Arc::new(conn.clone()));
    // `GET /metrics`: the gateway's (`chatstream_*`; the worker's are on `METRICS_PORT`).
    let metrics = Metrics::new(gateway.clone());
    let app = support::http_edge(
        seed003::router(ChatstreamState::new(gateway.clone()))
            .merge(responses_router(ChatstreamState::new(gateway.clone())).await?)
            .merge(ready.router())
            .merge(metrics.router()),
    )
    .layer(metrics.layer());

    let host = env("RESTAPI_HOST").unwrap_or_else(|| "0.0.0.0".to_owned());
    let port = support::port("RESTAPI_PORT", 8080)?;
    let listener = support::bind(&host, port, "set RESTAPI_PORT").await?;
    let url = local_url(listener.local_addr()?);
    println!("queue_worker: REST API on {url} submitting to {where_} ({topology:?} topology)");
    println!(
        "  curl -s {url}/v1/chat/completions -H 'content-type: application/json' \
         -d '{{\"model\":\"gpt-4o\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hi\"}}],\"stream\":true}}'"
    );
    println!("  curl -N '{url}/v1/chat/response?uid=<uid>'");

    // On SIGTERM or Ctrl-C, open SSE streams end with an error chunk and [DONE], so the
    // server can stop.
    chatstream::axum::serve(listener, app, gateway, ready.shutdown_on(shutdown_signal())).await?;
    conn.close().await;
    Ok(())
}

/// Connects to RabbitMQ, saying clearly where it failed to.
async fn connect(config: &AmqpConfig) -> Result<AmqpConnection, Box<dyn Error>> {
    AmqpConnection::connect(config.clone()).await.map_err(|e| {
        format!(
            "cannot connect to RabbitMQ at {}: {e} (set RABBITMQ_URL)",
            redact(&config.url)
        )
        .into()
    })
}

/// The LLM: the OpenAI-compatible server of `OPENAI_URL`, or the scripted backend when
/// `CHATSTREAM_SCRIPTED` is set.
fn backend() -> Result<Arc<DynLlmBackend>, Box<dyn Error>> {
    if env("CHATSTREAM_SCRIPTED").is_some_and(|v| v != "0" && v != "false") {
        tracing::info!("answering with the scripted backend (CHATSTREAM_SCRIPTED)");
        return Ok(Arc::new(
            ScriptedBackend::default().with_delay(SCRIPTED_DELAY),
        ));
    }
    #[cfg(feature = "openai")]
    {
        support::openai_from_env()
    }
    #[cfg(not(feature = "openai"))]
    Err("this build lacks feature `openai`: build with it, or set CHATSTREAM_SCRIPTED=1".into())
}

/// The URL without its password.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

/// The OpenAI Responses API beside seed 003's routes (`/v1/responses…`; no path is shared).
/// Its stored responses live in Redis when `REDIS_URL` is set, shared by every REST
/// instance; otherwise in this process's memory, so that `GET`, cancel, delete and
/// `previous_response_id` of a response work only on the instance that created it (its
/// event stream still resumes anywhere on the `stream` topology).
async fn responses_router(state: ChatstreamState) -> Result<axum::Router, Box<dyn Error>> {
    let store: Arc<chatstream::DynResponseStore> = if env("REDIS_URL").is_some() {
        let config = chatstream::redis::RedisConfig::from_env()?;
        let client = chatstream::redis::RedisClient::from_config(&config).await?;
        let ttl = chatstream::redis::DEFAULT_RESPONSE_TTL;
        Arc::new(chatstream::redis::RedisResponseStore::new(client, ttl))
    } else {
        Arc::new(chatstream::InMemoryResponseStore::default())
    };
    let model = env("OPENAI_MODEL").unwrap_or_else(|| "deepseek-r1:8b".to_owned());
    let config = ResponsesRouteConfig::new(store).with_model(model);
    Ok(responses::router(state, config))
}
