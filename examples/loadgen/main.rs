//! Run with: `cargo run --release --example loadgen --features amqp,redis -- --broker memory --streams 1000`
//!
//! End-to-end load: a gateway (seed 001's SSE route and `POST /api/chat` on a loopback
//! port) and a worker answering with numbered, timestamped tokens at `--rate` tokens/s
//! (`--tokens` per answer), over the in-memory broker, RabbitMQ (reply-to topology) or
//! Redis Streams; `--streams` concurrent SSE clients over real HTTP (hyper, one task per
//! client), each submitting one request and reading its answer. It reports tokens/s
//! delivered, the latency the pipeline added (backend emit → client receive) to the first
//! and to every token, broker messages per 1,000 tokens, CPU per token of gateway, worker
//! and broker, gateway memory per open idle stream, and every lost, duplicated or garbled
//! token. Over RabbitMQ and Redis it measures the raw broker ceiling (lapin publish →
//! consume, `XADD` → `XREAD`, one message per token) before and after, in the same run.
//! `--mode group` turns coalescing off (one envelope per token, batching only);
//! `--mode seeds` relays the seeds' way instead: one delta per character, no coalescing, one
//! broker message per envelope (topic routing on RabbitMQ).
//!
//! Processes: this one is the driver and runs the clients; it starts itself again as the
//! server side (`loadgen serve`, hidden): over RabbitMQ and Redis one gateway process and one
//! worker process, whose CPU time comes from `/proc/<pid>/stat`; over the in-memory broker one
//! process holding both, on two tokio runtimes whose threads are named `gw` and `wk`, whose
//! CPU time comes from `/proc/<pid>/task/<tid>/stat`. Broker CPU is that of RabbitMQ's
//! `beam.smp` and of `redis-server`. Everything is on loopback; the run is bounded by
//! `--ramp-limit` and `--time-limit` and ends by itself.
//!
//! Environment: `CHATSTREAM_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`),
//! `CHATSTREAM_REDIS_URL` (default `redis://127.0.0.1:6379/0`). The server processes set up
//! tracing as the other examples do: `LOG_LEVEL` (default `warn`), `LOG_FORMAT`, and span
//! export over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (`OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`, … as the OpenTelemetry SDK reads them), which is how
//! BENCHMARKS.md measures the cost of trace export. `LOADGEN_SERVE_WRAPPER` runs the server
//! processes under a command (split on whitespace, the server's command line appended), such
//! as `valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p` to count their
//! instructions (`benches/trace_overhead_callgrind.sh`). Each client holds a socket in
//! this process and one in the gateway's: raise `ulimit -n` above `--streams` + 256 first.
//! See BENCHMARKS.md, "End-to-end load (issue 7)", for the commands and the figures.
//!
//! A run longer than three seconds shows its progress on stderr. `--json FILE` appends the
//! run's figures to FILE as one JSON object per line, and `loadgen plot --input FILE
//! --out-dir DIR` draws tokens/s, p99 added latency and CPU per token against the number of
//! streams from such a file as SVG; `benches/sweep.sh` does both for BENCHMARKS.md's plots.

mod backend;
mod client;
#[path = "../../benches/amqp/cpu.rs"]
mod cpu;
mod driver;
mod plot;
mod procfs;
#[path = "../../benches/amqp/raw.rs"]
mod raw;
mod raw_redis;
mod report;
mod serve;
#[path = "../support/mod.rs"]
mod support;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub(crate) type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Which broker carries requests and tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Broker {
    /// The in-memory broker: gateway and worker in one process.
    Memory,
    /// RabbitMQ.
    Amqp,
    /// Redis Streams.
    Redis,
}

/// How the worker relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// chatstream's defaults: coalescing, group commit, one broker message per batch.
    Batched,
    /// Group commit and one broker message per batch, without coalescing (one envelope per
    /// token).
    Group,
    /// The seeds' way: one delta per character, no coalescing, one message per envelope.
    Seeds,
}

/// What a server process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Role {
    /// The gateway (HTTP).
    Gateway,
    /// The worker.
    Worker,
    /// Both (in-memory broker).
    Both,
}

#[derive(Debug, Parser)]
#[command(about = "End-to-end load: N SSE clients through gateway, broker and worker")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A server process of a run (started by the driver).
    #[command(hide = true)]
    Serve(ServeArgs),
    /// Draws SVG plots from the JSON lines of runs (`--json`): tokens/s delivered, p99
    /// added latency and CPU per token against the number of streams, one line per broker
    /// and mode.
    Plot(plot::PlotArgs),
}

/// A run.
#[derive(Debug, Clone, Args)]
pub(crate) struct RunArgs {
    /// The broker.
    #[arg(long, value_enum, default_value_t = Broker::Memory)]
    pub(crate) broker: Broker,
    /// How the worker relays.
    #[arg(long, value_enum, default_value_t = Mode::Batched)]
    pub(crate) mode: Mode,
    /// Concurrent SSE clients, one stream each.
    #[arg(long, default_value_t = 1000)]
    pub(crate) streams: usize,
    /// Tokens per second per stream; 0: as fast as the pipeline takes them.
    #[arg(long, default_value_t = 20.0)]
    pub(crate) rate: f64,
    /// Tokens per answer.
    #[arg(long, default_value_t = 200)]
    pub(crate) tokens: u32,
    /// Idle streams opened first to measure the gateway's memory per open stream (default:
    /// as many as `--streams`; 0 skips).
    #[arg(long)]
    pub(crate) idle_streams: Option<usize>,
    /// Messages of each raw broker measurement (0 skips them).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) raw_messages: usize,
    /// Seconds the clients may take to open their streams.
    #[arg(long, default_value_t = 120)]
    pub(crate) ramp_limit: u64,
    /// Seconds the answers may take once started.
    #[arg(long, default_value_t = 120)]
    pub(crate) time_limit: u64,
    /// The gateway's per-client buffer, in envelopes (default: `GatewayConfig`'s, or a whole
    /// answer when `--rate 0`, whose answers outrun a reading client by design).
    #[arg(long)]
    pub(crate) client_buffer: Option<usize>,
    /// Publishes in flight per destination (default: the worker's, 256 in the seeds' mode).
    #[arg(long)]
    pub(crate) max_in_flight: Option<usize>,
    /// Connections being opened at once, at most.
    #[arg(long, default_value_t = 256)]
    pub(crate) connecting: usize,
    /// Threads of the clients' runtime.
    #[arg(long, default_value_t = 2)]
    pub(crate) client_threads: usize,
    /// Append the run's figures to this file, one JSON object per line (what `loadgen plot`
    /// reads).
    #[arg(long)]
    pub(crate) json: Option<std::path::PathBuf>,
    /// RabbitMQ.
    #[arg(long, env = "CHATSTREAM_AMQP_URL", default_value = chatstream::amqp::DEFAULT_URL)]
    pub(crate) amqp_url: String,
    /// Redis.
    #[arg(
        long,
        env = "CHATSTREAM_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0"
    )]
    pub(crate) redis_url: String,
}

/// A server process.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServeArgs {
    #[arg(long, value_enum)]
    pub(crate) role: Role,
    #[arg(long, value_enum)]
    pub(crate) broker: Broker,
    #[arg(long, value_enum)]
    pub(crate) mode: Mode,
    /// The run's epoch, µs since the Unix epoch.
    #[arg(long)]
    pub(crate) epoch_us: u64,
    /// Namespace of queues, exchanges and keys.
    #[arg(long)]
    pub(crate) name: String,
    /// Requests a worker answers at once.
    #[arg(long)]
    pub(crate) concurrency: usize,
    /// Envelopes a client (and a broker subscriber) may fall behind.
    #[arg(long)]
    pub(crate) client_buffer: usize,
    /// Publishes in flight per destination.
    #[arg(long)]
    pub(crate) max_in_flight: Option<usize>,
    #[arg(long)]
    pub(crate) amqp_url: String,
    #[arg(long)]
    pub(crate) redis_url: String,
}

fn main() -> BoxResult<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Serve(args)) => return serve::serve(&args),
        Some(Command::Plot(args)) => return plot::plot(&args),
        None => {}
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.run.client_threads.max(1))
        .thread_name("client")
        .enable_all()
        .build()?;
    rt.block_on(driver::run(cli.run))
}
