//! Run with: cargo run --example quickstart
//!
//! Everything in one process: the in-memory broker, a worker, a gateway, and every client
//! API chatstream speaks, on one port:
//!
//! | route | API |
//! |---|---|
//! | `/` | a chat page that streams the answer in with `EventSource` (which reconnects and resumes with `Last-Event-ID` by itself), stops it with a Stop button, and after a reload shows the chat so far and the answer continuing (`/?session=<id>`) |
//! | `POST /api/chat`, `GET /api/chat/{sessionId}/messages`, `GET`/`DELETE /api/stream/{sessionId}/{messageId}`, `GET /health` | seed 001's SSE service (read, stop) plus submit and history routes |
//! | `/chat/threads…` | seed 002's streaming chat API (bearer token printed at start) |
//! | `POST /v1/chat/completions`, `GET /v1/models` | OpenAI-compatible mode (the official SDKs work against it) |
//! | `POST /v1/responses`, `GET`/`DELETE /v1/responses/{id}`, `…/cancel`, `…/input_items` | the OpenAI Responses API: streamed, stored (in this process's memory), background, resumable with `starting_after` |
//! | `POST /api/ai-sdk/chat` | Vercel AI SDK UI message stream (`useChat`) |
//! | `GET /ws` | seed 004's WebSocket |
//! | `GET /metrics` | Prometheus metrics |
//!
//! Environment (a `.env` file in the working directory is read too):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `HOST` | `127.0.0.1` | address to listen on (`0.0.0.0` for every interface) |
//! | `PORT` | `3000` | port to listen on |
//! | `OPENAI_URL`, `OPENAI_API_KEY` | unset | when either is set, answers come from that OpenAI-compatible server (feature `openai`, on by default); otherwise from the scripted backend, one word every `TOKEN_DELAY_MS` |
//! | `TOKEN_DELAY_MS` | `30` | the scripted backend's pause between two words |
//! | `OPENAI_MODEL` | `deepseek-r1:8b` | model asked for (seed 003's default) |
//! | `LOG_LEVEL` | `info` | `debug`, `info`, `warning`, `error`, or a `tracing` filter |
//! | `CORS_ORIGINS` | unset | comma-separated origins allowed to call the API (`*`: any) |
//! | `CHATSTREAM_API_TOKENS` | one random token for user `demo`, printed at start | bearer tokens of the seed 002 API, `token:user,token:user` |
//! | `CHATSTREAM_STREAM_AUTH` | unset | `1`: per-stream authorization on every API (a bearer token of `CHATSTREAM_API_TOKENS` to submit, the same user to read, stop, or see a stored response; 401 without one). The chat page sends no token, so it stops working: for API clients |

mod support;

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Html;
use axum::routing::get;
use axum::Router;
use chatstream::axum::auth::StaticTokens;
use chatstream::axum::metrics::Metrics;
use chatstream::axum::openai::OpenAiRouteConfig;
use chatstream::axum::responses::{self, ResponsesRouteConfig};
use chatstream::axum::ws::{Channels, WsEndpoint};
use chatstream::axum::ChatstreamState;
use chatstream::axum::{
    aisdk, cors_layer, method_not_allowed, not_found, openai, quickstart, seed001, seed002,
    trace_layer,
};
use chatstream::worker::shutdown_signal;
use chatstream::{
    DynLlmBackend, Gateway, GatewayConfig, InMemoryBroker, InMemoryConversationStore,
    InMemoryResponseStore, ScriptedBackend, Worker, WorkerConfig,
};
use support::{env, init_logging};

/// The chat page: HTML, CSS and JavaScript in one file, nothing fetched from elsewhere.
const PAGE: &str = include_str!("quickstart.html");

/// Longest an SSE client stays connected (as long as the OpenAI backend's answer timeout).
const STREAM_TIMEOUT: Duration = Duration::from_secs(600);

/// Default delay between the scripted backend's words, so the streaming is visible.
const SCRIPTED_DELAY_MS: u64 = 30;

#[tokio::main]
async fn main() -> ExitCode {
    support::exit_code("quickstart", run().await)
}

async fn run() -> Result<(), Box<dyn Error>> {
    let _ = dotenvy::dotenv();
    init_logging("info");

    let broker = InMemoryBroker::new();
    // Every request the worker takes is announced to the WebSocket clients of its channel.
    let channels = Channels::new();
    // One store for the worker's history and seed 002's threads.
    let store = Arc::new(InMemoryConversationStore::default());
    let worker = Worker::builder(
        Arc::new(channels.announcing(broker.message_source())),
        Arc::new(broker.clone()),
        backend()?,
    )
    .cancels(Arc::new(broker.clone()))
    .store(store.clone())
    .config(WorkerConfig {
        shutdown_grace: Duration::from_secs(5),
        ..WorkerConfig::default()
    })
    .build()
    .spawn();
    let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker.clone()))
        .cancels(Arc::new(broker.clone()))
        .config(GatewayConfig {
            // A client waiting on a stream that never comes is let go eventually.
            stream_timeout: Some(STREAM_TIMEOUT),
            ..GatewayConfig::default()
        })
        .build();
    let (tokens, demo_token) = match StaticTokens::from_env()? {
        Some(tokens) => (tokens, None),
        None => {
            let token = StaticTokens::random_token();
            (StaticTokens::new().with(&token, "demo"), Some(token))
        }
    };
    let stream_auth = env("CHATSTREAM_STREAM_AUTH")
        .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
    let state = ChatstreamState::new(gateway.clone())
        .with_store(store)
        .with_authenticator(Arc::new(tokens))
        .with_stream_auth(stream_auth);
    let model = env("OPENAI_MODEL").unwrap_or_else(|| "scripted".to_owned());
    let metrics = Metrics::new(gateway.clone());

    let mut app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .merge(seed001::router(state.clone()))
        .merge(quickstart::router(state.clone()))
        .merge(seed002::router(state.clone()))
        .merge(openai::router(
            state.clone(),
            OpenAiRouteConfig::for_model(model.clone()),
        ))
        // One process: its stored responses live in its memory.
        .merge(responses::router(
            state.clone(),
            ResponsesRouteConfig::new(Arc::new(InMemoryResponseStore::default())).with_model(model),
        ))
        .merge(aisdk::router(state.clone()))
        .merge(WsEndpoint::new(state).with_channels(channels).router())
        .merge(metrics.router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(metrics.layer())
        .layer(trace_layer());
    if let Some(origins) = env("CORS_ORIGINS") {
        app = app.layer(cors_layer(&origins));
    }

    let host = env("HOST").unwrap_or_else(|| "127.0.0.1".to_owned());
    let port = support::port("PORT", 3000)?;
    let listener = support::bind(&host, port, "set HOST or PORT").await?;
    let url = format!("http://{}", listener.local_addr()?);
    println!("chatstream quickstart: open {url}/ in a browser, or try:");
    println!(
        "  curl -s -X POST {url}/api/chat -H 'content-type: application/json' -d '{{\"text\":\"hi\"}}'"
    );
    println!("  curl -N {url}/api/stream/<sessionId>/<messageId>");
    println!("  curl -X DELETE {url}/api/stream/<sessionId>/<messageId>   (stop the answer)");
    println!("  curl -s {url}/api/chat/<sessionId>/messages   (the chat so far)");
    if let Some(token) = &demo_token {
        println!("seed 002 API (/chat/threads…): Authorization: Bearer {token}");
    }
    println!("OpenAI-compatible: {url}/v1   AI SDK: {url}/api/ai-sdk/chat   WebSocket: {url}/ws");
    println!("Ctrl-C stops.");

    // On SIGTERM or Ctrl-C, open streams end with an error frame and __END__, so
    // connections close and the server can stop.
    chatstream::axum::serve(listener, app, gateway, shutdown_signal()).await?;
    let stats = worker.shutdown().await;
    tracing::info!(completed = stats.completed, "worker stopped");
    Ok(())
}

/// The OpenAI-compatible backend when `OPENAI_URL` or `OPENAI_API_KEY` is set, else the
/// scripted one.
fn backend() -> Result<Arc<DynLlmBackend>, Box<dyn Error>> {
    if let Some(openai) = support::configured_openai()? {
        return Ok(openai);
    }
    tracing::info!("answering with the scripted backend (set OPENAI_URL for a real model)");
    let delay = match env("TOKEN_DELAY_MS") {
        Some(ms) => ms
            .trim()
            .parse()
            .map_err(|e| format!("TOKEN_DELAY_MS={ms:?}: {e}"))?,
        None => SCRIPTED_DELAY_MS,
    };
    Ok(Arc::new(
        ScriptedBackend::default().with_delay(Duration::from_millis(delay)),
    ))
}
