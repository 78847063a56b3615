//! Run with: cargo run --example assistant_ws --features amqp,redis
//!
//! Seed 004 (the OpenAI assistant streaming service) reproduced: chat requests arrive on
//! RabbitMQ (exchange `cosmo_exchange`, routing key `cosmo_key`, queue `cosmo_queue`, body
//! `{"channel", "message_id", "message"}`), conversations live in Redis, and answers stream
//! to WebSocket clients at `/ws` in seed 004's status / response / final / error messages,
//! each with `message_id` and `thread_id`.
//!
//! The OpenAI Assistants API the seed used is retired: each channel maps to a conversation
//! (`thread_id`) kept in Redis, whose history goes with every chat completion request. Tool
//! calling runs in the worker (`get_weather` when `OPENWEATHER_API_KEY` is set), with the
//! `processing` status while a tool runs. Tokens travel on Redis Streams, so any instance
//! can serve any stream, from its start or from where a client left off.
//!
//! A browser subscribes to its channel (`{"action": "subscribe", "channel": "…"}`) and
//! receives the answers to every request published on that channel, by itself
//! (`{"action": "message", …}` on the socket) or by another client straight to RabbitMQ —
//! whichever instance's worker answers it: workers announce every stream they start on
//! Redis pub/sub (`{REDIS_PREFIX}streams`), and every instance's `/ws` follows that news.
//! The same answers are readable as seed 001 SSE at `GET /api/stream/{channel}/{message_id}`
//! (with `Last-Event-ID` resume on any instance).
//!
//! Commands (as the seed's `main.py`):
//!
//! | command | what it does |
//! |---|---|
//! | (none) | runs the service: worker, `/ws`, `/api/stream/…`, `/health`, `/ready`, `/metrics` |
//! | `--gateway-only` | runs `/ws`, `/api/stream/…`, `/health`, `/ready` and `/metrics` without a worker (scale gateways out) |
//! | `--test-message CHANNEL "text"` | publishes a message as a seed 004 client, prints the answer as it streams, exits when it is complete (a service must be running) |
//! | `--generate-uuid` | prints a new channel UUID and creates its thread |
//! | `--show-thread-stats` | threads, messages, ages, oldest/newest, memory |
//! | `--clear-all-threads` | deletes every thread (asks first; `--yes` for scripts) |
//! | `--clear-old-threads N` | deletes threads inactive for more than N days (asks first; `--yes`) |
//!
//! Environment (a `.env` file in the working directory is read too):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `OPENAI_API_KEY` | unset | API key; with neither it nor `OPENAI_URL` set, a scripted backend answers |
//! | `OPENAI_MODEL` | `gpt-4o-mini` | model |
//! | `OPENAI_URL` | `https://api.openai.com/v1` | any OpenAI-compatible server |
//! | `OPENWEATHER_API_KEY` | unset | enables the `get_weather` tool (`OPENWEATHER_URL` changes its base URL) |
//! | `RABBITMQ_URL` | `amqp://guest:guest@localhost:5672/` | RabbitMQ (`CHATSTREAM_AMQP_URL` wins when set) |
//! | `QUEUE_NAME`, `ROUTING_KEY`, `EXCHANGE_NAME` | `cosmo_queue`, `cosmo_key`, `cosmo_exchange` | request queue, its binding, its direct exchange |
//! | `WEBSOCKET_URL` | `ws://localhost:8080/ws` | where to listen (host and port; port 0: any, printed at start) |
//! | `REDIS_URL` | `redis://localhost:6379/0` | Redis |
//! | `REDIS_PREFIX` | `cosmo:` | key prefix |
//! | `REDIS_THREAD_EXPIRY` | `7776000` (90 days) | seconds a thread lives after its last use |
//! | `ASSISTANT_TOKEN_BUS` | `rabbitmq` | how answers travel from workers to the WebSocket instances: `rabbitmq`, the durable RabbitMQ token stream (`RABBITMQ_TOKEN_STREAM`, default `chatstream.tokens.log`; `RABBITMQ_STREAM_MAX_AGE`, `RABBITMQ_STREAM_MAX_BYTES`), which keeps them through a RabbitMQ restart; or `redis`, the Redis bus (as durable as the Redis: without persistence a Redis restart loses the streams in flight). Both resume on any instance |
//! | `LOG_LEVEL` | `info` | `debug`, `info`, `warning`, `error`, or a `tracing` filter |
//! | `METRICS_PORT` | unset | serve the worker's metrics (`GET /metrics`, Prometheus text) and readiness (`GET /ready`) on this port (`0`: any free port, printed at start); off when unset or gateway-only (`GET /ready` and the gateway's `GET /metrics` are on the main port) |
//! | `METRICS_HOST` | `0.0.0.0` | address of the metrics port |

mod support;

use std::error::Error;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use chatstream::amqp::{
    AmqpConfig, AmqpConnection, AmqpRequestSink, AmqpRequestSource, AmqpTokenSink, AmqpTokenSource,
    TokenTopology,
};
use chatstream::axum::metrics::Metrics;
use chatstream::axum::ready::Readiness;
use chatstream::axum::ws::{Channels, WsEndpoint};
use chatstream::axum::{method_not_allowed, not_found, seed001, ChatstreamState};
use chatstream::backend::{
    DynTool, LlmBackendExt, OpenAiBackend, OpenAiConfig, SystemPromptLayer, ToolLoopLayer,
    WeatherTool,
};
use chatstream::redis::{
    BusConfig, RedisCancelChannel, RedisClient, RedisConfig, RedisConversationStore,
    RedisSessionFeed, RedisStreamRegistry, RedisTokenSink, RedisTokenSource, DEFAULT_REGISTRY_TTL,
};
use chatstream::worker::shutdown_signal;
use chatstream::{
    ChatRequest, ConversationStore, DynLlmBackend, DynTokenSink, DynTokenSource, Gateway,
    RequestSink, ScriptedBackend, Status, StreamEvent, StreamKey, TokenSource, Worker,
    WorkerConfig,
};
use clap::Parser;
use futures::StreamExt;
use support::{env, init_logging};

type Res<T> = Result<T, Box<dyn Error>>;

const PROMPT: &str = "You are a helpful assistant. Answer concisely.";
const WEATHER_PROMPT: &str = "You are a helpful assistant. Answer concisely. For questions \
                              about the current weather somewhere, call get_weather.";
/// Requests one worker process answers at once.
const CONCURRENCY: usize = 16;

/// Seed 004's assistant streaming service: RabbitMQ in, Redis conversations, WebSocket out.
#[derive(Debug, Parser)]
#[command(name = "assistant_ws", version, about)]
#[command(group = clap::ArgGroup::new("command").multiple(false))]
struct Cli {
    /// Publish a test message on CHANNEL and print the answer as it streams.
    #[arg(long, num_args = 2, value_names = ["CHANNEL", "TEXT"], group = "command")]
    test_message: Option<Vec<String>>,
    /// Print a new channel UUID and create its thread.
    #[arg(long, group = "command")]
    generate_uuid: bool,
    /// Show statistics about the threads in Redis.
    #[arg(long, group = "command")]
    show_thread_stats: bool,
    /// Delete every thread from Redis.
    #[arg(long, group = "command")]
    clear_all_threads: bool,
    /// Delete threads whose last activity is more than DAYS days ago.
    #[arg(long, value_name = "DAYS", group = "command")]
    clear_old_threads: Option<u64>,
    /// Serve /ws and /api/stream without a worker.
    #[arg(long, group = "command")]
    gateway_only: bool,
    /// Do not ask for confirmation (for scripts).
    #[arg(long, short = 'y')]
    yes: bool,
    /// Seconds --test-message waits for the answer to complete.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    timeout: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    init_logging("info");
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("assistant_ws: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Res<ExitCode> {
    let redis_config = RedisConfig::from_env()?;
    if let Some([channel, text]) = cli.test_message.as_deref() {
        let limit = Duration::from_secs(cli.timeout.max(1));
        return test_message(&redis_config, channel, text, limit).await;
    }
    if cli.generate_uuid {
        let store = store(&redis_config).await?;
        let channel = uuid::Uuid::new_v4().to_string();
        let thread = store.conversation_for_channel(&channel).await?;
        println!("Channel UUID: {channel}");
        println!("Thread ID: {thread}");
        println!("Try: cargo run --example assistant_ws --features amqp,redis -- --test-message {channel} \"Hello, assistant!\"");
        return Ok(ExitCode::SUCCESS);
    }
    if cli.show_thread_stats {
        show_stats(&redis_config).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if cli.clear_all_threads {
        let question = format!(
            "Delete ALL threads under prefix {:?} in Redis at {}?",
            redis_config.prefix, redis_config.url
        );
        if !confirm(&question, cli.yes)? {
            println!("Nothing deleted.");
            return Ok(ExitCode::SUCCESS);
        }
        let n = store(&redis_config).await?.clear_all().await?;
        println!("Deleted {n} threads.");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(days) = cli.clear_old_threads {
        let question = format!(
            "Delete the threads under prefix {:?} inactive for more than {days} days?",
            redis_config.prefix
        );
        if !confirm(&question, cli.yes)? {
            println!("Nothing deleted.");
            return Ok(ExitCode::SUCCESS);
        }
        let age = Duration::from_secs(days.saturating_mul(86_400));
        let n = store(&redis_config).await?.clear_older_than(age).await?;
        println!("Deleted {n} threads inactive for more than {days} days.");
        return Ok(ExitCode::SUCCESS);
    }
    serve(&redis_config, cli.gateway_only).await?;
    Ok(ExitCode::SUCCESS)
}

async fn store(config: &RedisConfig) -> Res<RedisConversationStore> {
    let client = RedisClient::from_config(config).await?;
    Ok(RedisConversationStore::new(client, config.thread_expiry))
}

/// Asks `question` on the terminal; refuses without one unless `yes`.
fn confirm(question: &str, yes: bool) -> Res<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(
            "refusing to delete without confirmation: stdin is not a terminal \
                    (pass --yes to confirm from a script)"
                .into(),
        );
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

async fn show_stats(config: &RedisConfig) -> Res<()> {
    let stats = store(config).await?.stats().await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let days_ago = |ms: u64| now.saturating_sub(ms) as f64 / 86_400_000.0;
    println!(
        "Threads in Redis {} (prefix {:?})",
        config.url, config.prefix
    );
    println!("  threads:  {}", stats.conversations);
    let avg = stats.messages as f64 / stats.conversations.max(1) as f64;
    println!("  messages: {} ({avg:.1} per thread)", stats.messages);
    let [day, week, month, older] = stats.age_buckets;
    println!(
        "  last activity: < 1 day {day}, 1-7 days {week}, 7-30 days {month}, > 30 days {older}"
    );
    if let (Some(oldest), Some(newest)) = (stats.oldest_ms, stats.newest_ms) {
        println!("  oldest thread created {:.1} days ago", days_ago(oldest));
        println!("  newest thread created {:.1} days ago", days_ago(newest));
    }
    match stats.memory_bytes {
        Some(b) => println!("  memory:   {:.1} KiB", b as f64 / 1024.0),
        None => println!("  memory:   unknown (MEMORY USAGE not available)"),
    }
    Ok(())
}

/// Whether answers travel in the RabbitMQ token stream (`ASSISTANT_TOKEN_BUS`, default
/// `rabbitmq`) rather than on the Redis bus.
fn tokens_on_rabbitmq() -> Res<bool> {
    match env("ASSISTANT_TOKEN_BUS").as_deref() {
        None | Some("rabbitmq") => Ok(true),
        Some("redis") => Ok(false),
        Some(other) => {
            Err(format!("ASSISTANT_TOKEN_BUS must be rabbitmq or redis, not {other:?}").into())
        }
    }
}

/// Publishes one message as a seed 004 client does and prints the answer from the token
/// bus until it is complete.
async fn test_message(
    config: &RedisConfig,
    channel: &str,
    text: &str,
    limit: Duration,
) -> Res<ExitCode> {
    let mut amqp_config = AmqpConfig::seed004();
    let tokens: Arc<DynTokenSource> = if tokens_on_rabbitmq()? {
        amqp_config.token_topology = TokenTopology::Stream;
        Arc::new(AmqpTokenSource::new(&AmqpConnection::connect(amqp_config.clone()).await?).await?)
    } else {
        let redis = RedisClient::from_config(config).await?;
        Arc::new(RedisTokenSource::new(redis, BusConfig::default()))
    };
    let amqp = AmqpConnection::connect(amqp_config).await?;
    let requests = AmqpRequestSink::new(&amqp).await?;
    let message_id = format!("test-{}", uuid::Uuid::new_v4().simple());
    let key = StreamKey::new(channel, message_id.as_str());
    println!("Channel: {channel}");
    println!("Message ID: {message_id}");
    // Both buses keep the stream from its start, so subscribing first loses nothing.
    let mut events = tokens.subscribe(&key, None).await?;
    requests.submit(&ChatRequest::new(key, text)).await?;
    let mut failed = false;
    let read = async {
        let mut out = std::io::stdout();
        while let Some(env) = events.next().await {
            match env?.event {
                StreamEvent::Status {
                    status: Status::Started,
                    conversation_id,
                    ..
                } => println!(
                    "[started] thread_id: {}",
                    conversation_id.as_deref().unwrap_or("?")
                ),
                StreamEvent::Status { status, detail, .. } => match detail {
                    Some(d) => println!("[{}] {d}", status.as_str()),
                    None => println!("[{}]", status.as_str()),
                },
                StreamEvent::Token { text } => {
                    print!("{text}");
                    out.flush()?;
                }
                // This client offers no tools, so no call is for it.
                StreamEvent::ToolCall { call } => println!("[tool call] {}", call.name),
                StreamEvent::Error { message } => {
                    failed = true;
                    println!();
                    eprintln!("[error] {message}");
                }
                StreamEvent::End { finish_reason, .. } => {
                    println!();
                    println!("[completed] {}", finish_reason.as_str());
                    return Ok(true);
                }
            }
        }
        Ok::<bool, Box<dyn Error>>(false)
    };
    let complete = tokio::time::timeout(limit, read).await;
    amqp.close().await;
    match complete {
        Ok(Ok(true)) if !failed => Ok(ExitCode::SUCCESS),
        Ok(Ok(_)) => Ok(ExitCode::FAILURE),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "no complete answer within {}s: is the service running \
             (cargo run --example assistant_ws --features amqp,redis)?",
            limit.as_secs()
        )
        .into()),
    }
}

/// The service: the worker (unless `gateway_only`), `/ws`, `/api/stream/…`, `/health`,
/// `/ready` and the gateway's `/metrics`.
async fn serve(config: &RedisConfig, gateway_only: bool) -> Res<()> {
    let redis = RedisClient::from_config(config).await?;
    let store = Arc::new(RedisConversationStore::new(
        redis.clone(),
        config.thread_expiry,
    ));
    let cancels = Arc::new(RedisCancelChannel::new(redis.clone()));
    // News of every stream a worker starts, in any process, so that the browsers listening
    // to its channel here learn of it: requests published straight to RabbitMQ may be
    // answered by the worker of another instance.
    let feed = Arc::new(RedisSessionFeed::new(redis.clone()));
    let mut amqp_config = AmqpConfig::seed004();
    amqp_config.prefetch = CONCURRENCY as u16;
    let on_rabbitmq = tokens_on_rabbitmq()?;
    if on_rabbitmq {
        amqp_config.token_topology = TokenTopology::Stream;
    }
    let amqp = AmqpConnection::connect(amqp_config).await?;
    let channels = Channels::new();
    channels.follow(&*feed).await?;

    let worker = if gateway_only {
        None
    } else {
        // Every request the worker takes is announced to the channel's subscribers, so
        // requests published straight to RabbitMQ reach the browsers listening here.
        let source = channels.announcing(AmqpRequestSource::new(&amqp).await?);
        let sink: Arc<DynTokenSink> = if on_rabbitmq {
            Arc::new(AmqpTokenSink::new(&amqp).await?)
        } else {
            Arc::new(RedisTokenSink::new(redis.clone(), BusConfig::default()).await?)
        };
        let worker = Worker::builder(Arc::new(source), sink, backend()?)
            .store(store.clone())
            .cancels(cancels.clone())
            .session_feed(feed.clone())
            .config(WorkerConfig {
                concurrency: CONCURRENCY,
                shutdown_grace: Duration::from_secs(10),
                ..WorkerConfig::default()
            })
            .build();
        Some(worker.spawn())
    };
    // Readiness: RabbitMQ and Redis answer, until shutdown; `GET /ready` on the main port,
    // and with the worker's metrics on `METRICS_PORT` when set.
    let ready = Readiness::new()
        .check(Arc::new(amqp.clone()))
        .check(Arc::new(redis.clone()));
    if let Some(worker) = &worker {
        support::serve_worker_metrics("assistant_ws", worker.metrics(), ready.clone()).await?;
    }
    let tokens: Arc<DynTokenSource> = if on_rabbitmq {
        Arc::new(AmqpTokenSource::new(&amqp).await?)
    } else {
        Arc::new(RedisTokenSource::new(redis.clone(), BusConfig::default()))
    };
    let gateway = Gateway::builder(Arc::new(AmqpRequestSink::new(&amqp).await?), tokens)
        .cancels(cancels)
        .build();
    // Which stream is a channel's running answer and who submitted a stream live in Redis,
    // so a browser that reconnects to another instance finds them.
    let registry = RedisStreamRegistry::new(redis.clone(), DEFAULT_REGISTRY_TTL);
    let state = ChatstreamState::new(gateway.clone())
        .with_store(store)
        .with_stream_registry(Arc::new(registry));
    // `GET /metrics`: the gateway's (`chatstream_*`; the worker's are on `METRICS_PORT`).
    let metrics = Metrics::new(gateway.clone());
    let app: Router = WsEndpoint::new(state.clone())
        .with_channels(channels)
        .router()
        .merge(seed001::router(state))
        .merge(ready.router())
        .merge(metrics.router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(metrics.layer());

    let (host, port) = listen_address()?;
    let listener = support::bind(&host, port, "set WEBSOCKET_URL").await?;
    let addr = listener.local_addr()?;
    let mode = if gateway_only {
        "gateway only"
    } else {
        "worker and gateway"
    };
    println!("assistant_ws ({mode}): WebSocket at ws://{addr}/ws");
    println!(
        "  SSE: http://{addr}/api/stream/<channel>/<message_id>; health: http://{addr}/health; \
         metrics: http://{addr}/metrics"
    );
    println!(
        "  requests: exchange {:?} → queue {:?}; Redis prefix {:?}",
        amqp.config()
            .request_exchange
            .as_ref()
            .map_or("", |e| e.name.as_str()),
        amqp.config().request_queue,
        config.prefix
    );

    chatstream::axum::serve(listener, app, gateway, ready.shutdown_on(shutdown_signal())).await?;
    if let Some(worker) = worker {
        let stats = worker.shutdown().await;
        tracing::info!(completed = stats.completed, "worker stopped");
    }
    amqp.close().await;
    Ok(())
}

/// Host and port of `WEBSOCKET_URL` (`ws://host:port/path`).
fn listen_address() -> Res<(String, u16)> {
    let url = env("WEBSOCKET_URL").unwrap_or_else(|| "ws://localhost:8080/ws".to_owned());
    let (default_port, rest) = if let Some(r) = url.strip_prefix("ws://") {
        (80, r)
    } else if let Some(r) = url.strip_prefix("wss://") {
        (443, r)
    } else {
        return Err(format!("WEBSOCKET_URL must start with ws:// or wss://, got {url:?}").into());
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !path.is_empty() && path != "ws" {
        tracing::warn!(
            path,
            "the WebSocket is served at /ws; the path of WEBSOCKET_URL is ignored"
        );
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h,
            p.parse()
                .map_err(|_| format!("bad port in WEBSOCKET_URL {url:?}"))?,
        ),
        _ => (authority, default_port),
    };
    Ok((host.trim_matches(|c| c == '[' || c == ']').to_owned(), port))
}

/// The OpenAI backend with the system prompt and the tool loop; the scripted backend when
/// no LLM is configured.
fn backend() -> Res<Arc<DynLlmBackend>> {
    if env("OPENAI_API_KEY").is_none() && env("OPENAI_URL").is_none() {
        tracing::warn!(
            "neither OPENAI_API_KEY nor OPENAI_URL set: answering with the scripted backend"
        );
        return Ok(ScriptedBackend::default()
            .with_delay(Duration::from_millis(30))
            .shared());
    }
    let mut config = OpenAiConfig::from_env();
    config.base_url = env("OPENAI_URL").unwrap_or_else(|| "https://api.openai.com/v1".into());
    config.model = env("OPENAI_MODEL").unwrap_or_else(|| "gpt-4o-mini".into());
    let mut tools: Vec<Arc<DynTool>> = Vec::new();
    match WeatherTool::from_env()? {
        Some(weather) => tools.push(Arc::new(weather)),
        None => tracing::info!("OPENWEATHER_API_KEY not set: no get_weather tool"),
    }
    let prompt = if tools.is_empty() {
        PROMPT
    } else {
        WEATHER_PROMPT
    };
    tracing::info!(url = %config.base_url, model = %config.model, tools = tools.len(), "answering with an OpenAI-compatible server");
    Ok(OpenAiBackend::new(config)?
        .layer(SystemPromptLayer::new(prompt))
        .layer(ToolLoopLayer::new(tools))
        .shared())
}
