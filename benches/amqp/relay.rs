//! Relayed tokens per second: worker → RabbitMQ → gateway, per token topology and batching.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chatstream::amqp::{
    AmqpConfig, AmqpConnection, AmqpRequestSink, AmqpRequestSource, AmqpTokenSink, AmqpTokenSource,
    TokenTopology,
};
use chatstream::{
    ChatRequest, ClientEvent, CoalesceConfig, Conversation, Destination, FinishReason, Gateway,
    GatewayConfig, LlmBackend, LlmEvent, LlmStream, StreamEvent, StreamKey, TokenEnvelope,
    TokenSink, Worker, WorkerConfig,
};
use futures::StreamExt;

use crate::cpu::CpuSample;

/// Every token of the fast backend (4 bytes, so bytes / 4 = tokens).
pub(crate) const TOKEN: &str = " tok";

/// Longest one case may take before it is reported as unfinished.
const CASE_LIMIT: Duration = Duration::from_secs(180);

/// How the worker batches, in the words of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Batching {
    /// Group commit (up to 1,024 envelopes per publish, 2 publishes in flight per
    /// destination) and `pack_runs`; one envelope per token (no coalescing).
    On,
    /// As `On`, plus per-stream coalescing (10 ms window, 512 bytes), the worker's default.
    OnCoalescing,
    /// One broker message per envelope, no coalescing: `pack_runs` off (topic, per-request
    /// queue: each envelope its own message, a publish still sends many back to back); for
    /// reply-to `max_batch` 1 with 256 publishes in flight.
    Off,
}

impl Batching {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Batching::On => "on (group commit + pack_runs)",
            Batching::OnCoalescing => "on + coalescing 10 ms",
            Batching::Off => "off (1 message per envelope)",
        }
    }

    fn worker_config(self, topology: TokenTopology, concurrency: usize) -> WorkerConfig {
        let base = WorkerConfig {
            concurrency,
            status_events: false,
            coalesce: CoalesceConfig::off(),
            shutdown_grace: Duration::from_secs(5),
            ..WorkerConfig::default()
        };
        match self {
            Batching::On => base,
            Batching::OnCoalescing => WorkerConfig {
                coalesce: CoalesceConfig::default(),
                ..base
            },
            // Topic and per-request queue send one message per envelope without pack_runs,
            // however many envelopes a publish holds; reply-to needs one envelope per publish.
            Batching::Off if topology != TokenTopology::ReplyTo => base,
            Batching::Off => WorkerConfig {
                max_batch: 1,
                max_in_flight: 256,
                ..base
            },
        }
    }
}

/// One relay measurement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RelayResult {
    /// Tokens received by the gateway's clients.
    pub(crate) tokens: u64,
    /// From the worker's start to the last client's `End`.
    pub(crate) elapsed: Duration,
    /// Envelopes published by the worker.
    pub(crate) envelopes: u64,
    /// Broker messages those envelopes went out in.
    pub(crate) messages: u64,
    /// Whether every stream ended within [`CASE_LIMIT`] with all its tokens.
    pub(crate) complete: bool,
    /// CPU used meanwhile by this process (worker, gateway, clients) and by the broker.
    pub(crate) cpu: (Duration, Option<Duration>),
}

impl RelayResult {
    pub(crate) fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.elapsed.as_secs_f64()
    }
}

/// Yields `request.max_tokens` tokens, each as soon as it is polled.
#[derive(Debug)]
struct FastBackend;

#[async_trait]
impl LlmBackend for FastBackend {
    async fn stream(
        &self,
        request: &ChatRequest,
        _: &Conversation,
    ) -> chatstream::Result<LlmStream> {
        let n = request.max_tokens.unwrap_or(0) as usize;
        let deltas =
            futures::stream::iter((0..n).map(|_| Ok(LlmEvent::TextDelta(TOKEN.to_owned()))));
        let finish = futures::stream::iter([Ok(LlmEvent::Finish(FinishReason::Stop))]);
        Ok(deltas.chain(finish).boxed())
    }
}

/// Counts what goes to the broker: envelopes, and broker messages by the adapter's rules
/// (see `AmqpTokenSink`).
#[derive(Debug)]
struct CountingSink {
    inner: AmqpTokenSink,
    topology: TokenTopology,
    pack: bool,
    envelopes: AtomicU64,
    messages: AtomicU64,
}

impl CountingSink {
    fn messages_for(&self, batch: &[TokenEnvelope]) -> u64 {
        let n = batch.len() as u64;
        match (self.topology, self.pack) {
            (TokenTopology::ReplyTo, _) => 1,
            (_, false) => n,
            (TokenTopology::Topic, true) => {
                let mut keys: Vec<&StreamKey> = batch.iter().map(|e| &e.key).collect();
                keys.sort_by(|a, b| {
                    (&a.session_id, &a.message_id).cmp(&(&b.session_id, &b.message_id))
                });
                keys.dedup();
                keys.len() as u64
            }
            // One stream per destination: one message per run of tokens, one per end.
            (_, true) => {
                let tokens = batch
                    .iter()
                    .any(|e| matches!(e.event, StreamEvent::Token { .. }));
                let ends = batch
                    .iter()
                    .filter(|e| !matches!(e.event, StreamEvent::Token { .. }))
                    .count() as u64;
                u64::from(tokens) + ends
            }
        }
    }
}

#[async_trait]
impl TokenSink for CountingSink {
    fn destination(&self, request: &ChatRequest) -> Destination {
        self.inner.destination(request)
    }
    async fn publish(
        &self,
        destination: &Destination,
        batch: &[TokenEnvelope],
    ) -> chatstream::Result<()> {
        self.envelopes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.messages
            .fetch_add(self.messages_for(batch), Ordering::Relaxed);
        self.inner.publish(destination, batch).await
    }
}

/// Names of a run, unique per case; queues expire if a run is interrupted.
/// Deletes the run's token stream (stream queues take no `x-expires`).
pub(crate) async fn delete_stream(config: &AmqpConfig) {
    if let Ok(conn) = lapin::Connection::connect(&config.normalized_url(), Default::default()).await
    {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .queue_delete(config.token_stream.as_str().into(), Default::default())
                .await;
        }
        let _ = conn.close(200, "bench cleanup".into()).await;
    }
}

pub(crate) fn bench_config(url: &str, topology: TokenTopology) -> AmqpConfig {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut c = AmqpConfig::from_env();
    c.url = url.to_owned();
    c.connection_name = "chatstream-bench".to_owned();
    c.request_queue = format!("chatstream.bench.{}.requests", &id[..12]);
    c.dead_letter_exchange = "chatstream.bench.dead-letter".to_owned();
    c.dead_letter_queue = "chatstream.bench.dead-letter".to_owned();
    c.token_exchange = "chatstream.bench.tokens".to_owned();
    c.token_stream = format!("chatstream.bench.{}.log", &id[..12]);
    c.control_exchange = "chatstream.bench.control".to_owned();
    c.reply_queue_prefix = "chatstream.bench.gw.".to_owned();
    c.queue_expires = Some(Duration::from_secs(120));
    c.response_queue_expires = Duration::from_secs(60);
    c.token_topology = topology;
    c
}

/// `streams` concurrent answers of `tokens` tokens each through one worker and one gateway
/// (each on its own connection, as separate processes would be). The requests are queued
/// and every client subscribed before the worker starts, so the time measured is the relay
/// alone.
pub(crate) async fn run(
    url: &str,
    topology: TokenTopology,
    batching: Batching,
    streams: usize,
    tokens: usize,
) -> RelayResult {
    let mut config = bench_config(url, topology);
    config.pack_runs = batching != Batching::Off;
    config.prefetch = u16::try_from(streams).unwrap_or(u16::MAX);
    config.subscriber_buffer = tokens + 64;

    let gw_conn = AmqpConnection::connect(config.clone())
        .await
        .expect("gateway connection");
    let gateway = Gateway::builder(
        Arc::new(AmqpRequestSink::new(&gw_conn).await.expect("request sink")),
        Arc::new(AmqpTokenSource::new(&gw_conn).await.expect("token source")),
    )
    .config(GatewayConfig {
        client_buffer: tokens + 64,
        ..GatewayConfig::default()
    })
    .build();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut readers = Vec::with_capacity(streams);
    for i in 0..streams {
        let key = StreamKey::new(format!("relay-{}-{i:04}", &run_id[..8]), "m");
        let mut request = ChatRequest::new(key, "go");
        request.max_tokens = Some(u32::try_from(tokens).unwrap_or(u32::MAX));
        let mut stream = gateway.submit(request).await.expect("submit");
        readers.push(tokio::spawn(async move {
            let mut bytes = 0u64;
            let mut ended = false;
            while let Some(event) = stream.next().await {
                match event {
                    ClientEvent::Envelope(env) => match &env.event {
                        StreamEvent::Token { text } => bytes += text.len() as u64,
                        StreamEvent::End { .. } => ended = true,
                        _ => {}
                    },
                    other => {
                        eprintln!("relay: unexpected client event {other:?}");
                        break;
                    }
                }
            }
            (bytes / TOKEN.len() as u64, ended)
        }));
    }

    let worker_conn = AmqpConnection::connect(config.clone())
        .await
        .expect("worker connection");
    let sink = Arc::new(CountingSink {
        inner: AmqpTokenSink::new(&worker_conn).await.expect("token sink"),
        topology,
        pack: config.pack_runs,
        envelopes: AtomicU64::new(0),
        messages: AtomicU64::new(0),
    });
    let source = AmqpRequestSource::new(&worker_conn)
        .await
        .expect("request source");
    let cpu_before = CpuSample::now();
    let started = Instant::now();
    let worker = Worker::builder(Arc::new(source), sink.clone(), Arc::new(FastBackend))
        .config(batching.worker_config(topology, streams))
        .build()
        .spawn();

    let all = futures::future::join_all(readers);
    let (received, complete) = match tokio::time::timeout(CASE_LIMIT, all).await {
        Ok(results) => {
            let mut total = 0;
            let mut complete = true;
            for r in results {
                let (n, ended) = r.unwrap_or((0, false));
                total += n;
                complete &= ended && n == tokens as u64;
            }
            (total, complete)
        }
        Err(_) => (0, false),
    };
    let elapsed = started.elapsed();
    let cpu = CpuSample::now().since(&cpu_before);
    worker.shutdown().await;
    worker_conn.close().await;
    gw_conn.close().await;
    delete_stream(&config).await;
    RelayResult {
        tokens: received,
        elapsed,
        envelopes: sink.envelopes.load(Ordering::Relaxed),
        messages: sink.messages.load(Ordering::Relaxed),
        complete,
        cpu,
    }
}
