//! The server side of a run, in a child process of the driver: a gateway (seed 001's SSE
//! route and the quickstart's `POST /api/chat` on a loopback port), a worker answering with
//! the [`LoadBackend`], or — over the in-memory broker, which lives in one process — both,
//! each on a tokio runtime of its own whose threads are named `gw` and `wk`, so the driver
//! can tell their CPU time apart in `/proc/<pid>/task`.
//!
//! It prints `ready <address or -> <pid>` once it serves, then obeys its standard input:
//! `go` starts the answers' tokens, `quit` (or end of input) stops it; a worker then prints
//! `stats received=… completed=… failed=… publishes=… envelopes=…`.

use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use chatstream::amqp::{
    AmqpConfig, AmqpConnection, AmqpRequestSink, AmqpRequestSource, AmqpTokenSink, AmqpTokenSource,
    TokenTopology,
};
use chatstream::axum::{quickstart, seed001, trace_layer, ChatstreamState};
use chatstream::redis::{
    BusConfig, QueueConfig, RedisClient, RedisRequestSink, RedisRequestSource, RedisTokenSink,
    RedisTokenSource,
};
use chatstream::{
    CoalesceConfig, DynMessageSource, DynRequestSink, DynTokenSink, DynTokenSource, Gateway,
    GatewayConfig, InMemoryBroker, Worker, WorkerConfig, WorkerHandle,
};
use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::backend::LoadBackend;
use crate::{BoxResult, Broker, Mode, Role, ServeArgs};

/// Runs one server process until told to quit.
pub(crate) fn serve(args: &ServeArgs) -> BoxResult<()> {
    // Warnings of the runtimes (a failed publish, a requeued request) go to stderr; spans
    // are exported when OTEL_EXPORTER_OTLP_ENDPOINT is set, as in the other examples.
    crate::support::init_logging("warn");
    let result = serve_until_quit(args);
    crate::support::telemetry::shutdown();
    result
}

fn serve_until_quit(args: &ServeArgs) -> BoxResult<()> {
    let (go_tx, go_rx) = watch::channel(false);
    let backend = LoadBackend {
        chars: args.mode == Mode::Seeds,
        epoch_us: args.epoch_us,
        go: go_rx,
    };
    if args.broker == Broker::Memory {
        return serve_memory(args, backend, &go_tx);
    }
    let rt = runtime("tokio", 2)?;
    match args.role {
        Role::Gateway => {
            let gateway = rt.block_on(gateway_over_broker(args))?;
            let addr = rt.block_on(listen(gateway))?;
            println!("ready {addr} {}", std::process::id());
            control(&go_tx);
        }
        Role::Worker | Role::Both => {
            let worker = rt.block_on(worker_over_broker(args, backend))?;
            println!("ready - {}", std::process::id());
            control(&go_tx);
            print_stats(rt.block_on(worker.shutdown()));
        }
    }
    Ok(())
}

fn runtime(name: &str, threads: usize) -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
}

/// Gateway and worker in one process over the in-memory broker, on two runtimes.
fn serve_memory(
    args: &ServeArgs,
    backend: LoadBackend,
    go_tx: &watch::Sender<bool>,
) -> BoxResult<()> {
    let gw_rt = runtime("gw", 2)?;
    let wk_rt = runtime("wk", 2)?;
    let broker = InMemoryBroker::new();
    let worker = {
        let _enter = wk_rt.enter();
        Worker::builder(
            Arc::new(broker.message_source()),
            Arc::new(broker.clone()),
            Arc::new(backend),
        )
        .config(worker_config(args))
        .build()
        .spawn()
    };
    let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker))
        .config(gateway_config(args))
        .build();
    let addr = gw_rt.block_on(listen(gateway))?;
    println!("ready {addr} {}", std::process::id());
    control(go_tx);
    print_stats(wk_rt.block_on(worker.shutdown()));
    Ok(())
}

/// Reads commands from standard input until `quit` or its end.
fn control(go: &watch::Sender<bool>) {
    for line in std::io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("go") => {
                go.send_replace(true);
            }
            Ok("quit") | Err(_) => break,
            Ok(other) => eprintln!("loadgen serve: unknown command {other:?}"),
        }
    }
}

fn print_stats(s: chatstream::WorkerStats) {
    println!(
        "stats received={} completed={} failed={} publishes={} envelopes={}",
        s.received, s.completed, s.failed, s.publishes, s.envelopes
    );
}

fn worker_config(args: &ServeArgs) -> WorkerConfig {
    let base = WorkerConfig {
        concurrency: args.concurrency,
        status_events: false,
        shutdown_grace: Duration::from_secs(2),
        ..WorkerConfig::default()
    };
    let config = match args.mode {
        Mode::Batched => base,
        Mode::Group => WorkerConfig {
            coalesce: CoalesceConfig::off(),
            ..base
        },
        // The seeds' way: one envelope per character, one broker message per envelope;
        // many publishes in flight, as fire-and-forget publishers have. Over Redis 8: with
        // 32 or more in flight, appends of one stream reached Redis out of order (OUTOFORDER:
        // the publish fails, the request is redelivered; see BENCHMARKS.md).
        Mode::Seeds => WorkerConfig {
            coalesce: CoalesceConfig::off(),
            max_batch: 1,
            max_in_flight: if args.broker == Broker::Redis { 8 } else { 256 },
            ..base
        },
    };
    WorkerConfig {
        max_in_flight: args.max_in_flight.unwrap_or(config.max_in_flight),
        ..config
    }
}

fn gateway_config(args: &ServeArgs) -> GatewayConfig {
    GatewayConfig {
        client_buffer: args.client_buffer,
        ..GatewayConfig::default()
    }
}

/// Seed 001's stream route and the quickstart's submit route on a loopback port, with
/// `TCP_NODELAY` (SSE frames are small writes) and a deep accept backlog.
async fn listen(gateway: Gateway) -> std::io::Result<SocketAddr> {
    let state = ChatstreamState::new(gateway);
    // With a span per request continuing the client's `traceparent`, as the examples have.
    let app = seed001::router(state.clone())
        .merge(quickstart::router(state))
        .layer(trace_layer());
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let listener = socket.listen(8192)?;
    let addr = listener.local_addr()?;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("loadgen gateway: {e}");
        }
    });
    Ok(addr)
}

/// The RabbitMQ names of the run: everything under `{name}.`, expiring if a run is cut
/// short. Reply-to topology (one message per batch) normally; topic routing with one
/// message per envelope in the seeds' mode.
pub(crate) fn amqp_config(args: &ServeArgs) -> AmqpConfig {
    let name = &args.name;
    let mut c = AmqpConfig::default();
    c.url = args.amqp_url.clone();
    c.connection_name = format!("{name}-{:?}", args.role);
    c.request_queue = format!("{name}.requests");
    c.dead_letter_exchange = format!("{name}.dlx");
    c.dead_letter_queue = format!("{name}.dead");
    c.token_exchange = format!("{name}.tokens");
    c.control_exchange = format!("{name}.control");
    c.reply_queue_prefix = format!("{name}.gw.");
    c.queue_expires = Some(Duration::from_secs(120));
    c.response_queue_expires = Duration::from_secs(60);
    c.prefetch = u16::try_from(args.concurrency).unwrap_or(u16::MAX);
    c.subscriber_buffer = args.client_buffer;
    match args.mode {
        Mode::Batched | Mode::Group => c.token_topology = TokenTopology::ReplyTo,
        Mode::Seeds => {
            c.token_topology = TokenTopology::Topic;
            c.pack_runs = false;
        }
    }
    c
}

/// The Redis bus of the run: keys under `{name}:`, gone a few minutes after the run.
fn redis_bus() -> BusConfig {
    BusConfig {
        retention_after_end: Duration::from_secs(120),
        idle_expiry: Duration::from_secs(600),
        tombstone: Duration::from_secs(600),
        ..BusConfig::default()
    }
}

async fn redis_client(args: &ServeArgs) -> BoxResult<RedisClient> {
    Ok(RedisClient::connect(&args.redis_url, &format!("{}:", args.name)).await?)
}

async fn gateway_over_broker(args: &ServeArgs) -> BoxResult<Gateway> {
    let (requests, tokens): (Arc<DynRequestSink>, Arc<DynTokenSource>) = match args.broker {
        Broker::Amqp => {
            let conn = AmqpConnection::connect(amqp_config(args)).await?;
            (
                Arc::new(AmqpRequestSink::new(&conn).await?),
                Arc::new(AmqpTokenSource::new(&conn).await?),
            )
        }
        Broker::Redis => {
            let client = redis_client(args).await?;
            (
                Arc::new(RedisRequestSink::new(
                    client.clone(),
                    &QueueConfig::default(),
                )),
                Arc::new(RedisTokenSource::new(client, redis_bus())),
            )
        }
        Broker::Memory => return Err("the in-memory broker runs in one process".into()),
    };
    Ok(Gateway::builder(requests, tokens)
        .config(gateway_config(args))
        .build())
}

async fn worker_over_broker(args: &ServeArgs, backend: LoadBackend) -> BoxResult<WorkerHandle> {
    let (source, sink): (Arc<DynMessageSource>, Arc<DynTokenSink>) = match args.broker {
        Broker::Amqp => {
            let conn = AmqpConnection::connect(amqp_config(args)).await?;
            (
                Arc::new(AmqpRequestSource::new(&conn).await?),
                Arc::new(AmqpTokenSink::new(&conn).await?),
            )
        }
        Broker::Redis => {
            let client = redis_client(args).await?;
            (
                Arc::new(RedisRequestSource::new(client.clone(), QueueConfig::default()).await?),
                Arc::new(RedisTokenSink::new(client, redis_bus()).await?),
            )
        }
        Broker::Memory => return Err("the in-memory broker runs in one process".into()),
    };
    Ok(Worker::builder(source, sink, Arc::new(backend))
        .config(worker_config(args))
        .build()
        .spawn())
}
