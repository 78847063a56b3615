//! Run with: DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run --example chat_api --features redis,postgres
//!
//! Seed 002's streaming chat API as a service of its own: threads and messages in
//! PostgreSQL, answers carried by a broker, every route behind bearer authentication and
//! scoped to the caller's organisation.
//!
//! | route | answer |
//! |---|---|
//! | `POST /chat/threads` `{"title"}` | `201 {"thread": {...}}` |
//! | `GET /chat/threads` | the caller's (organisation's) threads |
//! | `GET /chat/threads/:threadId/messages` | `{"messages": [...]}` |
//! | `POST /chat/threads/:threadId/messages` `{"content"}` | `{"response": "..."}` |
//! | `POST /chat/threads/:threadId/messages/stream` `{"content"}` | SSE: `connected`, `message_saved`, `workflow_status`, `ai_response`..., `workflow_complete`, `done` (or `error`, `done`) |
//! | `GET`/`DELETE /chat/threads/:threadId/messages/:messageId/stream` | resume with `Last-Event-ID` / stop |
//!
//! Environment (a `.env` file in the working directory is read too):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DATABASE_URL` | required | PostgreSQL, e.g. `postgres://postgres@127.0.0.1:5432/test`; migrations run at start |
//! | `DATABASE_SCHEMA` | `public` | schema for the tables (created when absent) |
//! | `HOST`, `PORT` | `127.0.0.1`, `3002` | where to listen |
//! | `RABBITMQ_URL` | unset | requests and answers through RabbitMQ (queue `chat_api.requests`, answers on the stream `chat_api.tokens`), so several instances share the work and any of them resumes any answer |
//! | `REDIS_URL` | unset | requests and answers through Redis Streams (prefix `chat_api:`) instead; neither: the in-memory broker (one process) |
//! | `CHATSTREAM_API_TOKENS` | one random token for user `demo` of organisation `demo`, printed at start | bearer tokens, `token:user:org,token:user` |
//! | `CHATSTREAM_JWT_HS256_SECRET` or `CHATSTREAM_JWT_RS256_PUBLIC_KEY` | unset | also accept JWTs (HS256 secret; RS256 public key as PEM text or a file path) with `sub` and an org claim; `CHATSTREAM_JWT_ORG_CLAIM` (default `org`), `CHATSTREAM_JWT_ISSUER`, `CHATSTREAM_JWT_AUDIENCE` |
//! | `OPENAI_URL`, `OPENAI_API_KEY`, `OPENAI_MODEL` | unset | answers from that OpenAI-compatible server; otherwise the scripted backend, one word every `TOKEN_DELAY_MS` (30) |
//! | `WORKFLOW_STEPS` | `chat:256` | the workflow every thread walks through, one step per user message (the last step repeats): `kind:max_tokens,…`; a `chat` step is also cut after two sentences, as seed 002's chat steps are |
//! | `CORS_ORIGINS`, `LOG_LEVEL` | unset, `info` | as the other examples |
//!
//! A user acting for an organisation sees and writes every thread of that organisation and
//! no other: another organisation's thread is a 404, like a missing one. When PostgreSQL is
//! away at the end of an answer, the worker retries saving it for 10 s; failing that, the
//! stream carries an `error` event saying the message was not saved.

mod support;

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatstream::amqp::{
    AmqpCancelChannel, AmqpConfig, AmqpConnection, AmqpRequestSink, AmqpRequestSource,
    AmqpTokenSink, AmqpTokenSource, TokenTopology,
};
use chatstream::axum::auth::StaticTokens;
use chatstream::axum::auth::{looks_like_jwt, Authenticator, JwtAuthenticator, Principal};
use chatstream::axum::{seed002, ApiError, ChatstreamState};
use chatstream::backend::{MaxTokensLayer, SentenceLimitLayer};
use chatstream::postgres::{PgConversationStore, PgStoreConfig, DATABASE_URL_ENV};
use chatstream::redis::{
    BusConfig, QueueConfig, RedisCancelChannel, RedisClient, RedisRequestSink, RedisRequestSource,
    RedisTokenSink, RedisTokenSource,
};
use chatstream::worker::shutdown_signal;
use chatstream::{
    ChatRequest, Conversation, DynCancelChannel, DynLlmBackend, DynMessageSource, DynRequestSink,
    DynTokenSink, DynTokenSource, Gateway, GatewayConfig, InMemoryBroker, LlmBackend, LlmLayer,
    LlmStream, Role, ScriptedBackend, Worker, WorkerConfig,
};
use support::{env, init_logging};

/// Longest a client waits for a stream that never comes.
const STREAM_TIMEOUT: Duration = Duration::from_secs(600);
/// Default pause between the scripted backend's words.
const SCRIPTED_DELAY_MS: u64 = 30;
/// Seed 002's chat steps answer in at most two sentences.
const CHAT_STEP_SENTENCES: usize = 2;
/// The RabbitMQ and Redis names of this service.
const NAMESPACE: &str = "chat_api";

#[tokio::main]
async fn main() -> ExitCode {
    support::exit_code("chat_api", run().await)
}

async fn run() -> Result<(), Box<dyn Error>> {
    let _ = dotenvy::dotenv();
    init_logging("info");

    let url = env(DATABASE_URL_ENV).ok_or(
        "set DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/test): seed 002 keeps its threads in PostgreSQL",
    )?;
    let mut config = PgStoreConfig::new(&url);
    if let Some(schema) = env("DATABASE_SCHEMA") {
        config = config.with_schema(schema.trim())?;
    }
    let store = PgConversationStore::connect(&config)
        .await
        .map_err(|e| format!("cannot open PostgreSQL at {}: {e}", redact(&url)))?;
    let store = Arc::new(store);

    let broker = open_broker().await?;
    let worker = Worker::builder(broker.source, broker.sink, backend()?)
        .cancels(broker.cancels.clone())
        .store(store.clone())
        .config(WorkerConfig {
            shutdown_grace: Duration::from_secs(5),
            ..WorkerConfig::default()
        })
        .build()
        .spawn();
    let gateway = Gateway::builder(broker.requests, broker.tokens)
        .cancels(broker.cancels)
        .config(GatewayConfig {
            stream_timeout: Some(STREAM_TIMEOUT),
            ..GatewayConfig::default()
        })
        .build();
    let (auth, demo_token) = authenticator()?;
    let state = ChatstreamState::new(gateway.clone())
        .with_store(store)
        .with_authenticator(Arc::new(auth));
    let app = support::http_edge(seed002::router(state));

    let host = env("HOST").unwrap_or_else(|| "127.0.0.1".to_owned());
    let port = support::port("PORT", 3002)?;
    let listener = support::bind(&host, port, "set HOST or PORT").await?;
    let base = support::local_url(listener.local_addr()?);
    println!(
        "chat_api: seed 002 API on {base}/chat/threads (PostgreSQL {}, {} broker)",
        redact(&url),
        broker.name
    );
    if let Some(token) = &demo_token {
        println!("  Authorization: Bearer {token}   (user demo, organisation demo)");
    }
    println!(
        "  curl -s -X POST {base}/chat/threads -H 'authorization: Bearer <token>' \
         -H 'content-type: application/json' -d '{{\"title\":\"Chat Title\"}}'"
    );
    println!("Ctrl-C stops.");

    chatstream::axum::serve(listener, app, gateway, shutdown_signal()).await?;
    let stats = worker.shutdown().await;
    tracing::info!(completed = stats.completed, "worker stopped");
    for conn in broker.connections {
        conn.close().await;
    }
    Ok(())
}

/// The broker's halves for one process that is both worker and gateway.
struct Broker {
    name: &'static str,
    source: Arc<DynMessageSource>,
    sink: Arc<DynTokenSink>,
    requests: Arc<DynRequestSink>,
    tokens: Arc<DynTokenSource>,
    cancels: Arc<DynCancelChannel>,
    connections: Vec<AmqpConnection>,
}

/// RabbitMQ with `RABBITMQ_URL`, Redis with `REDIS_URL`, else the in-memory broker.
async fn open_broker() -> Result<Broker, Box<dyn Error>> {
    match (env("RABBITMQ_URL"), env("REDIS_URL")) {
        (Some(_), Some(_)) => Err("set RABBITMQ_URL or REDIS_URL, not both".into()),
        (Some(url), None) => {
            let config = amqp_config();
            let connect = |role: &str| {
                let mut c = config.clone();
                c.connection_name = format!("{NAMESPACE}-{role}-{}", std::process::id());
                AmqpConnection::connect(c)
            };
            let fail = |e| format!("cannot connect to RabbitMQ at {}: {e}", redact(&url));
            let worker = connect("worker").await.map_err(fail)?;
            let gateway = connect("gateway").await.map_err(fail)?;
            Ok(Broker {
                name: "RabbitMQ",
                source: Arc::new(AmqpRequestSource::new(&worker).await?),
                sink: Arc::new(AmqpTokenSink::new(&worker).await?),
                requests: Arc::new(AmqpRequestSink::new(&gateway).await?),
                tokens: Arc::new(AmqpTokenSource::new(&gateway).await?),
                cancels: Arc::new(AmqpCancelChannel::new(&gateway).await?),
                connections: vec![worker, gateway],
            })
        }
        (None, Some(url)) => {
            let client = RedisClient::connect(&url, &format!("{NAMESPACE}:"))
                .await
                .map_err(|e| format!("cannot connect to Redis at {}: {e}", redact(&url)))?;
            let queue = QueueConfig::default();
            Ok(Broker {
                name: "Redis",
                source: Arc::new(RedisRequestSource::new(client.clone(), queue.clone()).await?),
                sink: Arc::new(RedisTokenSink::new(client.clone(), BusConfig::default()).await?),
                requests: Arc::new(RedisRequestSink::new(client.clone(), &queue)),
                tokens: Arc::new(RedisTokenSource::new(client.clone(), BusConfig::default())),
                cancels: Arc::new(RedisCancelChannel::new(client)),
                connections: Vec::new(),
            })
        }
        (None, None) => {
            let broker = InMemoryBroker::new();
            Ok(Broker {
                name: "in-memory",
                source: Arc::new(broker.message_source()),
                sink: Arc::new(broker.clone()),
                requests: Arc::new(broker.clone()),
                tokens: Arc::new(broker.clone()),
                cancels: Arc::new(broker),
                connections: Vec::new(),
            })
        }
    }
}

/// This service's RabbitMQ names (`chat_api.*`), answers on a stream queue so that any
/// instance serves any answer, from any offset.
fn amqp_config() -> AmqpConfig {
    let mut c = AmqpConfig::from_env();
    c.token_topology = TokenTopology::Stream;
    if env("RABBITMQ_QUEUE").is_none() {
        c.request_queue = format!("{NAMESPACE}.requests");
    }
    if env("RABBITMQ_TOKEN_STREAM").is_none() {
        c.token_stream = format!("{NAMESPACE}.tokens");
    }
    c.dead_letter_exchange = format!("{NAMESPACE}.dlx");
    c.dead_letter_queue = format!("{NAMESPACE}.dead");
    c.token_exchange = format!("{NAMESPACE}.topic");
    c.control_exchange = format!("{NAMESPACE}.control");
    c.reply_queue_prefix = format!("{NAMESPACE}.gw.");
    c
}

/// Static tokens and, when configured, JWTs; with neither configured, one random demo
/// token (returned, to be printed).
fn authenticator() -> Result<(TokensOrJwt, Option<String>), Box<dyn Error>> {
    let jwt = JwtAuthenticator::from_env()?;
    let tokens = StaticTokens::from_env()?;
    if tokens.is_none() && jwt.is_none() {
        let token = StaticTokens::random_token();
        let demo = StaticTokens::new().with(&token, Principal::new("demo").with_org("demo"));
        return Ok((
            TokensOrJwt {
                tokens: Some(demo),
                jwt: None,
            },
            Some(token),
        ));
    }
    Ok((TokensOrJwt { tokens, jwt }, None))
}

/// A bearer token shaped as a JWT goes to the JWT check (when configured), any other to the
/// token table.
#[derive(Debug)]
struct TokensOrJwt {
    tokens: Option<StaticTokens>,
    jwt: Option<JwtAuthenticator>,
}

#[async_trait]
impl Authenticator for TokensOrJwt {
    async fn authenticate(&self, bearer: &str) -> Result<Option<Principal>, ApiError> {
        match (&self.jwt, &self.tokens) {
            (Some(jwt), _) if looks_like_jwt(bearer) => jwt.authenticate(bearer).await,
            (_, Some(tokens)) => tokens.authenticate(bearer).await,
            _ => Ok(None),
        }
    }
}

/// The model (OpenAI-compatible server or scripted), inside seed 002's workflow steps.
fn backend() -> Result<Arc<DynLlmBackend>, Box<dyn Error>> {
    let model: Arc<DynLlmBackend> = match support::configured_openai()? {
        Some(openai) => openai,
        None => {
            tracing::info!("answering with the scripted backend (set OPENAI_URL for a real model)");
            let delay = match env("TOKEN_DELAY_MS") {
                Some(ms) => ms
                    .trim()
                    .parse()
                    .map_err(|e| format!("TOKEN_DELAY_MS={ms:?}: {e}"))?,
                None => SCRIPTED_DELAY_MS,
            };
            Arc::new(ScriptedBackend::default().with_delay(Duration::from_millis(delay)))
        }
    };
    let spec = env("WORKFLOW_STEPS").unwrap_or_else(|| "chat:256".to_owned());
    Ok(Arc::new(Workflow::parse(&spec, &model)?))
}

/// Seed 002's workflow: each user message of a thread is answered by the next step (the
/// last one repeats), with that step's token limit; chat steps stop after two sentences.
#[derive(Debug)]
struct Workflow {
    steps: Vec<Arc<DynLlmBackend>>,
}

impl Workflow {
    /// `chat:256,detailed:1024`: kind and token limit per step.
    fn parse(spec: &str, model: &Arc<DynLlmBackend>) -> Result<Self, Box<dyn Error>> {
        let mut steps = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (kind, max) = entry
                .split_once(':')
                .ok_or_else(|| format!("WORKFLOW_STEPS entry {entry:?} is not kind:max_tokens"))?;
            let max: u32 = max
                .trim()
                .parse()
                .map_err(|e| format!("WORKFLOW_STEPS entry {entry:?}: {e}"))?;
            let limited = MaxTokensLayer::new(max).layer(model.clone());
            let step: Arc<DynLlmBackend> = if kind.trim() == "chat" {
                Arc::new(SentenceLimitLayer::new(CHAT_STEP_SENTENCES).layer(limited))
            } else {
                Arc::new(limited)
            };
            steps.push(step);
        }
        if steps.is_empty() {
            return Err("WORKFLOW_STEPS names no step".into());
        }
        Ok(Self { steps })
    }
}

#[async_trait]
impl LlmBackend for Workflow {
    async fn stream(
        &self,
        request: &ChatRequest,
        conversation: &Conversation,
    ) -> chatstream::Result<LlmStream> {
        let turn = conversation
            .messages
            .iter()
            .filter(|m| m.role == Role::User)
            .count();
        let step = &self.steps[turn.min(self.steps.len() - 1)];
        step.stream(request, conversation).await
    }
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
