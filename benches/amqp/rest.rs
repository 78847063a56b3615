//! Seed 003's REST flow under load: `POST /v1/chat/completions`, then
//! `GET /v1/chat/response?uid=` as SSE, from many clients at once over real HTTP on loopback,
//! against the deployment of `examples/queue_worker.rs` (worker and gateway on RabbitMQ,
//! answers from an OpenAI-compatible server: the fake one, pacing its tokens).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use chatstream::amqp::{
    AmqpCancelChannel, AmqpConfig, AmqpConnection, AmqpRequestSink, AmqpRequestSource,
    AmqpTokenSink, AmqpTokenSource, RequestFormat, TokenTopology,
};
use chatstream::axum::{seed003, ChatstreamState};
use chatstream::backend::{OpenAiBackend, OpenAiConfig};
use chatstream::testkit::fake_openai::{Answer, Behaviour, FakeOpenAi};
use chatstream::{Gateway, Worker, WorkerConfig, WorkerHandle};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::cpu::CpuSample;
use crate::env_usize;
use crate::relay::bench_config;

/// Longest the whole run may take.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// What one client saw.
#[derive(Debug, Default)]
struct ClientRun {
    /// From sending the POST to the first token chunk.
    ttft: Option<Duration>,
    /// Arrival of every chunk that carried text.
    arrivals: Vec<Instant>,
    /// Tokens received (the fake's tokens are ` t0`, ` t1`, …).
    tokens: usize,
    /// Whether the text was the whole answer, in order, ended by `[DONE]`.
    complete: bool,
    /// What went wrong, if anything.
    error: Option<String>,
}

/// The deployment under test, on a runtime of its own.
struct Server {
    addr: SocketAddr,
    worker: WorkerHandle,
    conns: Vec<AmqpConnection>,
}

async fn start_server(
    config: AmqpConfig,
    gateway_topology: TokenTopology,
    llm_url: String,
    concurrency: usize,
) -> Server {
    let worker_conn = AmqpConnection::connect(config.clone())
        .await
        .expect("worker connection");
    let backend = OpenAiBackend::new(OpenAiConfig::new(llm_url, "fake-model")).expect("backend");
    let worker = Worker::builder(
        Arc::new(AmqpRequestSource::new(&worker_conn).await.expect("source")),
        Arc::new(AmqpTokenSink::new(&worker_conn).await.expect("sink")),
        Arc::new(backend),
    )
    .cancels(Arc::new(
        AmqpCancelChannel::new(&worker_conn).await.expect("cancels"),
    ))
    .config(WorkerConfig {
        concurrency,
        status_events: false,
        shutdown_grace: Duration::from_secs(5),
        ..WorkerConfig::default()
    })
    .build()
    .spawn();

    let mut gw_config = config;
    gw_config.token_topology = gateway_topology;
    let gw_conn = AmqpConnection::connect(gw_config)
        .await
        .expect("gateway connection");
    let gateway = Gateway::builder(
        Arc::new(AmqpRequestSink::new(&gw_conn).await.expect("request sink")),
        Arc::new(AmqpTokenSource::new(&gw_conn).await.expect("token source")),
    )
    .cancels(Arc::new(
        AmqpCancelChannel::new(&gw_conn).await.expect("cancels"),
    ))
    .build();
    let app = seed003::router(ChatstreamState::new(gateway));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    // As the example: SSE chunks are small writes, which Nagle's algorithm would hold back.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Server {
        addr,
        worker,
        conns: vec![worker_conn, gw_conn],
    }
}

/// One client: POST, then GET the SSE stream, timing every chunk.
async fn client(addr: SocketAddr, answer: Arc<String>) -> ClientRun {
    let mut run = ClientRun::default();
    match client_inner(addr, &answer, &mut run).await {
        Ok(()) => {}
        Err(e) => run.error = Some(e),
    }
    run
}

async fn client_inner(addr: SocketAddr, answer: &str, run: &mut ClientRun) -> Result<(), String> {
    let started = Instant::now();
    let body = r#"{"model": "fake-model", "messages": [{"role": "user", "content": "Tell me a story."}], "stream": true, "username": "bench"}"#;
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let post = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(post.as_bytes())
        .await
        .map_err(|e| format!("post: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .await
        .map_err(|e| format!("post answer: {e}"))?;
    let text = String::from_utf8_lossy(&out);
    let (head, json) = text.split_once("\r\n\r\n").ok_or("no HTTP head")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("POST: {}", head.lines().next().unwrap_or_default()));
    }
    let submitted: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("POST body: {e}"))?;
    let uid = submitted["uid"].as_str().ok_or("no uid")?;

    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut reader = BufReader::new(s);
    let get = format!("GET /v1/chat/response?uid={uid} HTTP/1.0\r\nHost: bench\r\n\r\n");
    reader
        .get_mut()
        .write_all(get.as_bytes())
        .await
        .map_err(|e| format!("get: {e}"))?;
    let mut received = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .await
            .map_err(|e| format!("sse: {e}"))?;
        if n == 0 {
            break;
        }
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let data = data.trim_end();
        if data == "[DONE]" {
            run.complete = received == answer;
            break;
        }
        let chunk: serde_json::Value =
            serde_json::from_str(data).map_err(|e| format!("chunk: {e}"))?;
        if chunk.get("error").is_some() {
            return Err(format!("error chunk: {data}"));
        }
        if let Some(content) = chunk["choices"][0]["delta"]["content"].as_str() {
            if !content.is_empty() {
                let now = Instant::now();
                run.ttft.get_or_insert_with(|| now - started);
                run.arrivals.push(now);
                run.tokens += content.matches(" t").count();
                received.push_str(content);
            }
        }
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Runs the flow with the gateway on each topology of the example's `--rest-topology`.
pub(crate) fn run(url: &str) {
    let only = std::env::var("AMQP_BENCH_REST_TOPOLOGIES").unwrap_or_default();
    for (name, topology) in [
        ("stream", TokenTopology::Stream),
        ("reply-to", TokenTopology::ReplyTo),
        ("per-request", TokenTopology::PerRequestQueue),
    ] {
        if only.is_empty() || only.split(',').any(|t| t.trim() == name) {
            run_one(url, topology);
        }
    }
}

/// Runs the flow once and prints the report.
fn run_one(url: &str, gateway_topology: TokenTopology) {
    let clients = env_usize("AMQP_BENCH_CLIENTS", 500);
    let answer_tokens = env_usize("AMQP_BENCH_ANSWER", 200);
    let rate: usize = std::env::var("AMQP_BENCH_RATE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(50)
        .max(1);
    let delay = Duration::from_secs_f64(1.0 / rate as f64);
    let tokens: Vec<String> = (0..answer_tokens).map(|i| format!(" t{i}")).collect();
    let answer = Arc::new(tokens.concat());

    // Two runtimes, as two processes would be: the deployment, and the load (the LLM
    // server and the clients).
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("server")
        .enable_all()
        .build()
        .expect("server runtime");
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("load")
        .enable_all()
        .build()
        .expect("load runtime");

    let fake = load_rt.block_on(FakeOpenAi::start(Behaviour::Answer(
        Answer::new(tokens).with_delay(delay).with_usage(false),
    )));
    let mut config = bench_config(url, TokenTopology::PerRequestQueue);
    config.request_format = RequestFormat::Seed003;
    config.prefetch = u16::try_from(clients).unwrap_or(u16::MAX);
    let config_for_cleanup = config.clone();
    let server = server_rt.block_on(start_server(
        config,
        gateway_topology,
        fake.base_url(),
        clients,
    ));

    println!();
    println!(
        "## seed 003 REST flow: {clients} clients, {answer_tokens} tokens each at {rate} tokens/s \
         (offered {} tokens/s), gateway reading {}",
        clients * rate,
        match gateway_topology {
            TokenTopology::ReplyTo => "its reply-to queue (`--rest-topology reply-to`)",
            TokenTopology::Stream =>
                "the durable token stream (`--rest-topology stream`, the default)",
            _ => "`response_{uid}` queues (`--rest-topology per-request`)",
        }
    );
    println!();
    let cpu_before = CpuSample::now();
    let started = Instant::now();
    let runs: Vec<ClientRun> = load_rt.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|_| tokio::spawn(client(server.addr, answer.clone())))
            .collect();
        match tokio::time::timeout(RUN_LIMIT, futures::future::join_all(tasks)).await {
            Ok(results) => results.into_iter().map(|r| r.unwrap_or_default()).collect(),
            Err(_) => Vec::new(),
        }
    });
    let wall = started.elapsed();
    let (own_cpu, broker_cpu) = CpuSample::now().since(&cpu_before);

    let complete = runs.iter().filter(|r| r.complete).count();
    let delivered: usize = runs.iter().map(|r| r.tokens).sum();
    let mut errors: Vec<&str> = runs.iter().filter_map(|r| r.error.as_deref()).collect();
    errors.sort_unstable();
    errors.dedup();
    let mut gaps: Vec<Duration> = runs
        .iter()
        .flat_map(|r| r.arrivals.windows(2).map(|w| w[1] - w[0]))
        .collect();
    gaps.sort_unstable();
    let mut ttfts: Vec<Duration> = runs.iter().filter_map(|r| r.ttft).collect();
    ttfts.sort_unstable();
    let first = runs
        .iter()
        .filter_map(|r| r.arrivals.first())
        .min()
        .copied();
    let last = runs.iter().filter_map(|r| r.arrivals.last()).max().copied();
    let span = match (first, last) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => Duration::from_secs(1),
    };
    let chunks: usize = runs.iter().map(|r| r.arrivals.len()).sum();
    // Each client's own rate: its tokens over its first-to-last chunk time.
    let mut rates: Vec<f64> = runs
        .iter()
        .filter_map(|r| {
            let span = *r.arrivals.last()? - *r.arrivals.first()?;
            (span > Duration::ZERO).then(|| r.tokens.saturating_sub(1) as f64 / span.as_secs_f64())
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    let rate_sum: f64 = rates.iter().sum();
    // Diagnostic: the gaps once every stream is under way (its first second left out).
    let mut steady: Vec<Duration> = runs
        .iter()
        .flat_map(|r| {
            let start = r.arrivals.first().copied();
            r.arrivals
                .windows(2)
                .filter(move |w| start.is_some_and(|s| w[0] - s >= Duration::from_secs(1)))
                .map(|w| w[1] - w[0])
        })
        .collect();
    steady.sort_unstable();

    println!("| measure | value |");
    println!("|---|---|");
    println!("| clients complete (whole answer, in order, `[DONE]`) | {complete} / {clients} |");
    println!(
        "| tokens delivered | {delivered} / {} in {} chunks |",
        clients * answer_tokens,
        chunks
    );
    println!(
        "| delivered rate (first to last token, all clients) | {:.0} tokens/s over {:.2} s |",
        delivered as f64 / span.as_secs_f64(),
        span.as_secs_f64()
    );
    println!(
        "| per-client rate, median / min (sum over clients) | {:.1} / {:.1} tokens/s ({:.0} tokens/s) |",
        rates.get(rates.len() / 2).copied().unwrap_or_default(),
        rates.first().copied().unwrap_or_default(),
        rate_sum
    );
    println!(
        "| gap between chunks, median / p90 / p99 / max | {} / {} / {} / {} |",
        ms(percentile(&gaps, 0.5)),
        ms(percentile(&gaps, 0.9)),
        ms(percentile(&gaps, 0.99)),
        ms(gaps.last().copied().unwrap_or_default())
    );
    println!(
        "| the same after each stream's first second: median / p99 / max | {} / {} / {} |",
        ms(percentile(&steady, 0.5)),
        ms(percentile(&steady, 0.99)),
        ms(steady.last().copied().unwrap_or_default())
    );
    println!(
        "| time to first token, median / p99 | {} / {} |",
        ms(percentile(&ttfts, 0.5)),
        ms(percentile(&ttfts, 0.99))
    );
    println!("| wall time | {:.2} s |", wall.as_secs_f64());
    println!(
        "| CPU: bench process (fake LLM, clients, worker, gateway) / broker | {:.2} s / {} |",
        own_cpu.as_secs_f64(),
        broker_cpu.map_or("?".to_owned(), |b| format!("{:.2} s", b.as_secs_f64()))
    );
    if !errors.is_empty() {
        println!();
        println!("client errors: {}", errors.join("; "));
    }
    let median = percentile(&gaps, 0.5);
    let p99 = percentile(&gaps, 0.99);
    let met = complete == clients
        && delivered == clients * answer_tokens
        && median <= delay + Duration::from_millis(5)
        && p99 <= Duration::from_millis(50);
    println!();
    println!(
        "goal (every token at the offered rate, median gap ≈ {}, p99 ≤ 50 ms): {}",
        ms(delay),
        if met { "met" } else { "NOT met" }
    );

    server_rt.block_on(async {
        server.worker.shutdown().await;
        for c in &server.conns {
            c.close().await;
        }
        crate::relay::delete_stream(&config_for_cleanup).await;
    });
    drop(fake);
}
