//! Run with: cargo run --example chaos_worker --features amqp,redis
//!
//! The process the fault tests start, kill (SIGKILL) and stop (SIGTERM): by default a
//! worker alone — it takes requests from RabbitMQ or Redis, answers each with the scripted
//! backend one word every `CHAOS_TOKEN_DELAY_MS`, and on SIGTERM stops taking requests,
//! finishes what it can within `CHAOS_SHUTDOWN_GRACE_MS` and gives the rest back to the
//! broker. With `CHAOS_ROLE=gateway` it is a gateway alone instead: seed 001's SSE route and
//! the quickstart's `POST /api/chat` over the same broker; on SIGTERM every open stream
//! ends with an error frame and `__END__`.
//!
//! It prints one line when it is ready (`chaos_worker ready` or
//! `chaos_gateway listening on http://…`) and one when it stopped (`chaos_worker stopped
//! completed=… requeued=…`). See RELIABILITY.md for the tests that use it.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CHAOS_BROKER` | `amqp` | `amqp`: RabbitMQ, requests on a durable queue, tokens in the token topology of `CHAOS_AMQP_TOPOLOGY`; `redis`: Redis Streams as request queue and token bus |
//! | `CHAOS_AMQP_TOPOLOGY` | `stream` | `stream`: the durable, replayable token stream `{name}.log`; `reply-to`: one reply queue per gateway (live only) |
//! | `CHAOS_ROLE` | `worker` | `worker` or `gateway` |
//! | `CHAOS_NAME` | `chatstream-chaos` | namespace of every queue, exchange and key (see [`amqp_config`], [`redis_prefix`]) |
//! | `CHATSTREAM_AMQP_URL` / `RABBITMQ_URL` | `amqp://guest:guest@127.0.0.1:5672/%2f` | RabbitMQ |
//! | `CHATSTREAM_REDIS_URL` / `REDIS_URL` | `redis://127.0.0.1:6379/0` | Redis |
//! | `CHAOS_TOKEN_DELAY_MS` | `20` | pause between the scripted backend's words |
//! | `CHAOS_CONCURRENCY` | `16` | requests answered at once |
//! | `CHAOS_SHUTDOWN_GRACE_MS` | `10000` | how long in-flight requests may run on after SIGTERM |
//! | `CHAOS_CLAIM_IDLE_MS` | `1000` | Redis: how long a dead worker's request sits before another claims it |
//! | `CHAOS_MAX_DELIVERIES` | `100` | deliveries of one request before it is dead-lettered |
//! | `HOST`, `PORT` | `127.0.0.1`, `0` | where the gateway listens |
//! | `LOG_LEVEL` | `warn` | a `tracing` filter |

mod support;

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chatstream::amqp::{
    AmqpCancelChannel, AmqpConfig, AmqpConnection, AmqpRequestSink, AmqpRequestSource,
    AmqpTokenSink, AmqpTokenSource, TokenTopology,
};
use chatstream::axum::{not_found, quickstart, seed001, ChatstreamState};
use chatstream::redis::{
    BusConfig, QueueConfig, RedisCancelChannel, RedisClient, RedisRequestSink, RedisRequestSource,
    RedisTokenSink, RedisTokenSource,
};
use chatstream::worker::shutdown_signal;
use chatstream::{
    DynCancelChannel, DynMessageSource, DynRequestSink, DynTokenSink, DynTokenSource, Gateway,
    ScriptedBackend, Worker, WorkerConfig,
};
use support::{env, init_logging};

type BoxResult<T> = Result<T, Box<dyn Error>>;

/// The broker side of one process: what a worker or a gateway needs.
struct Broker {
    source: Option<Arc<DynMessageSource>>,
    sink: Option<Arc<DynTokenSink>>,
    requests: Option<Arc<DynRequestSink>>,
    tokens: Option<Arc<DynTokenSource>>,
    cancels: Arc<DynCancelChannel>,
}

#[tokio::main]
async fn main() -> ExitCode {
    support::exit_code("chaos_worker", run().await)
}

async fn run() -> BoxResult<()> {
    init_logging("warn");
    let gateway_role = match env("CHAOS_ROLE").as_deref() {
        None | Some("worker") => false,
        Some("gateway") => true,
        Some(other) => {
            return Err(format!("CHAOS_ROLE must be worker or gateway, not {other}").into())
        }
    };
    let name = env("CHAOS_NAME").unwrap_or_else(|| "chatstream-chaos".to_owned());
    let broker = match env("CHAOS_BROKER").as_deref() {
        None | Some("amqp") => amqp(&name, gateway_role).await?,
        Some("redis") => redis(&name, gateway_role).await?,
        Some(other) => {
            return Err(format!("CHAOS_BROKER must be amqp or redis, not {other}").into())
        }
    };
    if gateway_role {
        run_gateway(broker).await
    } else {
        run_worker(broker).await
    }
}

async fn run_worker(broker: Broker) -> BoxResult<()> {
    let (Some(source), Some(sink)) = (broker.source, broker.sink) else {
        return Err("worker without a request source or token sink".into());
    };
    let delay = Duration::from_millis(number("CHAOS_TOKEN_DELAY_MS", 20)?);
    let worker = Worker::builder(
        source,
        sink,
        Arc::new(ScriptedBackend::default().with_delay(delay)),
    )
    .cancels(broker.cancels)
    .config(WorkerConfig {
        concurrency: usize::try_from(number("CHAOS_CONCURRENCY", 16)?)?,
        shutdown_grace: Duration::from_millis(number("CHAOS_SHUTDOWN_GRACE_MS", 10_000)?),
        ..WorkerConfig::default()
    })
    .build()
    .spawn();
    println!("chaos_worker ready pid={}", std::process::id());
    shutdown_signal().await;
    let stats = worker.shutdown().await;
    println!(
        "chaos_worker stopped completed={} requeued={} received={}",
        stats.completed, stats.requeued, stats.received
    );
    Ok(())
}

async fn run_gateway(broker: Broker) -> BoxResult<()> {
    let (Some(requests), Some(tokens)) = (broker.requests, broker.tokens) else {
        return Err("gateway without a request sink or token source".into());
    };
    let gateway = Gateway::builder(requests, tokens)
        .cancels(broker.cancels)
        .build();
    let state = ChatstreamState::new(gateway.clone());
    let app = seed001::router(state.clone())
        .merge(quickstart::router(state))
        .fallback(not_found);
    let host = env("HOST").unwrap_or_else(|| "127.0.0.1".to_owned());
    let port = support::port("PORT", 0)?;
    let listener = support::bind(&host, port, "set HOST or PORT").await?;
    println!(
        "chaos_gateway listening on http://{}",
        listener.local_addr()?
    );
    chatstream::axum::serve(listener, app, gateway, shutdown_signal()).await?;
    println!("chaos_gateway stopped");
    Ok(())
}

/// The RabbitMQ names of namespace `name`: queue `{name}.requests`, dead letters
/// `{name}.dead`, exchanges `{name}.tokens` and `{name}.control`, gateway reply queues
/// `{name}.gw.…`, token stream `{name}.log`; tokens in the stream topology unless
/// `CHAOS_AMQP_TOPOLOGY=reply-to`.
pub fn amqp_config(name: &str) -> AmqpConfig {
    let mut c = AmqpConfig::from_env();
    c.token_topology = match env("CHAOS_AMQP_TOPOLOGY").as_deref() {
        Some("reply-to") => TokenTopology::ReplyTo,
        _ => TokenTopology::Stream,
    };
    c.token_stream = format!("{name}.log");
    c.connection_name = format!("{name}-{}", std::process::id());
    c.request_queue = format!("{name}.requests");
    c.dead_letter_exchange = format!("{name}.dlx");
    c.dead_letter_queue = format!("{name}.dead");
    c.token_exchange = format!("{name}.tokens");
    c.control_exchange = format!("{name}.control");
    c.reply_queue_prefix = format!("{name}.gw.");
    c.queue_expires = Some(Duration::from_secs(600));
    c.backoff.initial = Duration::from_millis(50);
    c.backoff.max = Duration::from_secs(1);
    c.backoff.give_up_after = Duration::from_secs(60);
    c
}

async fn amqp(name: &str, gateway_role: bool) -> BoxResult<Broker> {
    let mut config = amqp_config(name);
    config.max_deliveries = u32::try_from(number("CHAOS_MAX_DELIVERIES", 100)?)?;
    config.prefetch = u16::try_from(number("CHAOS_CONCURRENCY", 16)?)?;
    let conn = AmqpConnection::connect(config).await?;
    let cancels: Arc<DynCancelChannel> = Arc::new(AmqpCancelChannel::new(&conn).await?);
    Ok(if gateway_role {
        Broker {
            source: None,
            sink: None,
            requests: Some(Arc::new(AmqpRequestSink::new(&conn).await?)),
            tokens: Some(Arc::new(AmqpTokenSource::new(&conn).await?)),
            cancels,
        }
    } else {
        Broker {
            source: Some(Arc::new(AmqpRequestSource::new(&conn).await?)),
            sink: Some(Arc::new(AmqpTokenSink::new(&conn).await?)),
            requests: None,
            tokens: None,
            cancels,
        }
    })
}

/// The Redis key prefix of namespace `name`: `{name}:`; the request queue is `requests`.
pub fn redis_prefix(name: &str) -> String {
    format!("{name}:")
}

async fn redis(name: &str, gateway_role: bool) -> BoxResult<Broker> {
    let url = env("CHATSTREAM_REDIS_URL")
        .or_else(|| env("REDIS_URL"))
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".to_owned());
    let client = RedisClient::connect(&url, &redis_prefix(name)).await?;
    let queue = QueueConfig {
        claim_idle: Duration::from_millis(number("CHAOS_CLAIM_IDLE_MS", 1000)?),
        block: Duration::from_millis(500),
        delivery_limit: u32::try_from(number("CHAOS_MAX_DELIVERIES", 100)?)?,
        ..QueueConfig::default()
    };
    let bus = BusConfig {
        block: Duration::from_secs(1),
        ..BusConfig::default()
    };
    let cancels: Arc<DynCancelChannel> = Arc::new(RedisCancelChannel::new(client.clone()));
    Ok(if gateway_role {
        Broker {
            source: None,
            sink: None,
            requests: Some(Arc::new(RedisRequestSink::new(client.clone(), &queue))),
            tokens: Some(Arc::new(RedisTokenSource::new(client, bus))),
            cancels,
        }
    } else {
        Broker {
            source: Some(Arc::new(
                RedisRequestSource::new(client.clone(), queue).await?,
            )),
            sink: Some(Arc::new(RedisTokenSink::new(client, bus).await?)),
            requests: None,
            tokens: None,
            cancels,
        }
    })
}

/// A numeric environment variable, or `default`.
fn number(name: &str, default: u64) -> BoxResult<u64> {
    match env(name) {
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name} must be a whole number, got {v:?}").into()),
        None => Ok(default),
    }
}
