//! End-to-end benchmarks of the embedded pipeline: backend → worker (coalescer, batcher) →
//! in-memory broker → gateway → client stream, all real runtime code.
//!
//! Run with:
//! - `cargo bench --bench pipeline` — criterion throughput, then the counts table;
//! - `cargo bench --bench pipeline -- throughput` — criterion throughput only;
//! - `cargo bench --bench pipeline -- counts` — the counts table only (about 35 s).
//!
//! No environment is read; nothing outside the process is needed. `cargo test --benches`
//! runs every benchmark once and a shortened counts table, as a smoke test.
//!
//! Two parts:
//! - **throughput** (criterion, `Throughput::Elements` = tokens): a backend yields tokens as
//!   fast as it is polled; each iteration starts a fresh broker and worker, submits
//!   requests through the gateway and reads every client stream to `End` in a task per
//!   client, checking that every byte arrived. The runtime is `current_thread`, so the
//!   whole pipeline runs on one core. Coalescing and batching as shipped (`coalesced`) or
//!   off (`per_token`: one envelope per token, one envelope per publish, one publish in
//!   flight); one case starts with 10,000 conversations in the store.
//! - **counts** (a printed table, not timings; multi-thread runtime, real time): a clock
//!   thread feeds tokens to backends at a fixed rate, evenly spread across streams; the
//!   table gives envelopes and publishes per 1,000 tokens, how long tokens take from the
//!   backend yielding them to the client stream yielding them, and how long they wait in
//!   the worker before the publish carrying them starts. The token sink can take a
//!   simulated broker round trip per publish (in order, several on the wire at once).
//!
//! The figures measured on the reference machine are in BENCHMARKS.md.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chatstream_core::{
    ChatMessage, ChatRequest, ClientEvent, ClientStream, CoalesceConfig, Conversation,
    ConversationStore, Destination, DynLlmBackend, DynTokenSink, FinishReason, Gateway,
    GatewayConfig, InMemoryBroker, InMemoryConversationStore, LlmBackend, LlmEvent, LlmStream,
    StreamEvent, StreamKey, TokenEnvelope, TokenSink, Worker, WorkerConfig, WorkerHandle,
};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use futures::StreamExt;
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------------------
// The pipeline under test
// ---------------------------------------------------------------------------------------

/// A worker and a gateway on one in-memory broker.
struct Pipeline {
    gateway: Gateway,
    worker: WorkerHandle,
}

impl Pipeline {
    /// Starts the worker; must be called inside the runtime that will drive it.
    fn start(
        broker: &InMemoryBroker,
        sink: Arc<DynTokenSink>,
        backend: Arc<DynLlmBackend>,
        store: Arc<InMemoryConversationStore>,
        config: WorkerConfig,
        gateway: GatewayConfig,
    ) -> Self {
        let worker = Worker::builder(Arc::new(broker.message_source()), sink, backend)
            .store(store)
            .cancels(Arc::new(broker.clone()))
            .config(config)
            .build()
            .spawn();
        let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker.clone()))
            .cancels(Arc::new(broker.clone()))
            .config(gateway)
            .build();
        Self { gateway, worker }
    }
}

/// Coalescing and batching as shipped.
fn coalesced() -> WorkerConfig {
    WorkerConfig::default()
}

/// One envelope per token, one envelope per publish, one publish at a time (the seeds'
/// behaviour).
fn per_token() -> WorkerConfig {
    WorkerConfig {
        coalesce: CoalesceConfig::off(),
        max_in_flight: 1,
        max_batch: 1,
        ..WorkerConfig::default()
    }
}

static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

/// A key never used before in this process, so no iteration sees another's history.
fn fresh_key() -> StreamKey {
    let n = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
    StreamKey::new(format!("bench-session-{n}"), format!("bench-message-{n}"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------
// Throughput (criterion)
// ---------------------------------------------------------------------------------------

/// The text of every token of [`FastBackend`]: four bytes, about an average LLM token.
const TOKEN: &str = " tok";

/// Tokens per criterion iteration, whatever the number of streams.
const TOKENS_PER_ITER: usize = 64_000;

/// Conversations already in the store for the `coalesced_10k_conversations` case.
const STORED: usize = 10_000;

/// Yields `request.max_tokens` tokens, each as soon as it is polled.
#[derive(Debug)]
struct FastBackend;

#[async_trait]
impl LlmBackend for FastBackend {
    async fn stream(
        &self,
        request: &ChatRequest,
        _: &Conversation,
    ) -> chatstream_core::Result<LlmStream> {
        let n = request.max_tokens.unwrap_or(0) as usize;
        let deltas =
            futures::stream::iter((0..n).map(|_| Ok(LlmEvent::TextDelta(TOKEN.to_owned()))));
        let finish = futures::stream::iter([Ok(LlmEvent::Finish(FinishReason::Stop))]);
        Ok(deltas.chain(finish).boxed())
    }
}

/// Reads a client stream to its end; returns the token bytes received.
async fn read_all(mut stream: ClientStream) -> usize {
    let mut bytes = 0;
    while let Some(event) = stream.next().await {
        match event {
            ClientEvent::Envelope(env) => {
                if let StreamEvent::Token { text } = &env.event {
                    bytes += text.len();
                }
            }
            other => panic!("unexpected client event in a clean run: {other:?}"),
        }
    }
    bytes
}

/// One iteration: `streams` requests of `tokens` tokens each, every client read to `End`.
async fn run_streams(gateway: &Gateway, streams: usize, tokens: usize) {
    let mut clients = Vec::with_capacity(streams);
    for _ in 0..streams {
        let mut request = ChatRequest::new(fresh_key(), "benchmark");
        request.max_tokens = Some(u32::try_from(tokens).unwrap_or(u32::MAX));
        clients.push(
            gateway
                .submit(request)
                .await
                .expect("in-memory submit cannot fail"),
        );
    }
    // Each client reads in a task of its own, as each HTTP connection does.
    let readers: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(read_all(c)))
        .collect();
    for reader in readers {
        let got = reader.await.expect("client task");
        assert_eq!(got, tokens * TOKEN.len(), "a client missed tokens");
    }
}

/// Counts summed over the iterations of one benchmark.
#[derive(Debug, Default)]
struct Tally {
    tokens: AtomicU64,
    envelopes: AtomicU64,
    publishes: AtomicU64,
    /// Time the benchmark thread ran on a CPU, and waited for one, during the iterations.
    on_cpu_ns: AtomicU64,
    waiting_ns: AtomicU64,
    wall_ns: AtomicU64,
}

/// This thread's time on a CPU and time waiting for one, in nanoseconds (Linux
/// `/proc/thread-self/schedstat`). On a shared machine, tokens per CPU-second is the
/// one-core throughput the wall clock cannot show; the waiting share says how shared it was.
fn schedstat() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut fields = s.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}

/// One iteration on a fresh broker and worker, timed from the first submit to the last
/// client's `End`. The conversation store is fresh too unless `store` is given.
async fn iteration(
    config: WorkerConfig,
    streams: usize,
    tokens: usize,
    store: Option<Arc<InMemoryConversationStore>>,
    tally: &Tally,
) -> Duration {
    let broker = InMemoryBroker::new();
    let gateway = GatewayConfig {
        // The default, 256, cuts per-token clients off as slow consumers here although
        // they keep pace (see BENCHMARKS.md).
        client_buffer: 1024,
        ..GatewayConfig::default()
    };
    let pipeline = Pipeline::start(
        &broker,
        Arc::new(broker.clone()),
        Arc::new(FastBackend),
        store.unwrap_or_default(),
        config,
        gateway,
    );
    let sched0 = schedstat();
    let t0 = Instant::now();
    run_streams(&pipeline.gateway, streams, tokens).await;
    let elapsed = t0.elapsed();
    if let (Some((cpu0, wait0)), Some((cpu1, wait1))) = (sched0, schedstat()) {
        tally.on_cpu_ns.fetch_add(cpu1 - cpu0, Ordering::Relaxed);
        tally.waiting_ns.fetch_add(wait1 - wait0, Ordering::Relaxed);
        let wall = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        tally.wall_ns.fetch_add(wall, Ordering::Relaxed);
    }
    let stats = pipeline.worker.shutdown().await;
    tally
        .tokens
        .fetch_add((streams * tokens) as u64, Ordering::Relaxed);
    tally
        .envelopes
        .fetch_add(stats.envelopes, Ordering::Relaxed);
    tally
        .publishes
        .fetch_add(stats.publishes, Ordering::Relaxed);
    elapsed
}

/// A store already holding `n` conversations, as a worker does after a while.
async fn store_with(n: usize) -> Arc<InMemoryConversationStore> {
    let store = Arc::new(InMemoryConversationStore::default());
    for i in 0..n {
        let id = store
            .conversation_for_channel(&format!("earlier-session-{i}"))
            .await
            .expect("in-memory store");
        let messages = [
            ChatMessage::user("hello"),
            ChatMessage::assistant("an earlier answer"),
        ];
        store.append(&id, &messages).await.expect("in-memory store");
    }
    store
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("throughput");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(TOKENS_PER_ITER as u64));
    let cases = [
        ("coalesced", coalesced(), 1, 0),
        ("coalesced", coalesced(), 64, 0),
        ("per_token", per_token(), 1, 0),
        ("per_token", per_token(), 64, 0),
        ("coalesced_10k_conversations", coalesced(), 64, STORED),
    ];
    for (mode, config, streams, stored) in cases {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let config = WorkerConfig {
            concurrency: streams.max(64),
            ..config
        };
        let per_stream = TOKENS_PER_ITER / streams;
        let tally = Tally::default();
        let id = BenchmarkId::new(mode, format!("{streams}x{per_stream}"));
        // Filled on first use, so a filtered-out case costs nothing.
        let mut preloaded = None;
        group.bench_function(id, |b| {
            let store = (stored > 0).then(|| {
                preloaded
                    .get_or_insert_with(|| {
                        let t0 = Instant::now();
                        let store = rt.block_on(store_with(stored));
                        println!(
                            "    storing {stored} conversations took {:.1} s",
                            t0.elapsed().as_secs_f64()
                        );
                        store
                    })
                    .clone()
            });
            b.to_async(&rt).iter_custom(|iters| {
                let (config, store, tally) = (config.clone(), store.clone(), &tally);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total +=
                            iteration(config.clone(), streams, per_stream, store.clone(), tally)
                                .await;
                    }
                    total
                }
            });
        });
        let tokens = tally.tokens.load(Ordering::Relaxed);
        println!(
            "    {mode} {streams}x{per_stream}: {:.1} envelopes and {:.2} publishes per 1,000 tokens",
            per_1k(tally.envelopes.load(Ordering::Relaxed), tokens),
            per_1k(tally.publishes.load(Ordering::Relaxed), tokens),
        );
        let (cpu, waiting, wall) = (
            tally.on_cpu_ns.load(Ordering::Relaxed),
            tally.waiting_ns.load(Ordering::Relaxed),
            tally.wall_ns.load(Ordering::Relaxed),
        );
        if cpu > 0 && wall > 0 {
            println!(
                "    {mode} {streams}x{per_stream}: {:.2} M tokens per CPU-second ({:.2} M per wall second; on a CPU {:.0}%, waiting for one {:.0}% of the wall time)",
                tokens as f64 / cpu as f64 * 1000.0,
                tokens as f64 / wall as f64 * 1000.0,
                cpu as f64 * 100.0 / wall as f64,
                waiting as f64 * 100.0 / wall as f64,
            );
        }
    }
    group.finish();
}

fn per_1k(count: u64, tokens: u64) -> f64 {
    if tokens == 0 {
        return 0.0;
    }
    count as f64 * 1000.0 / tokens as f64
}

// ---------------------------------------------------------------------------------------
// Counts (plain table)
// ---------------------------------------------------------------------------------------

/// When the backend yielded each token of one stream.
type EmitTimes = Arc<Mutex<Vec<Instant>>>;

/// Per stream: the channel its tokens come down, and when the backend yielded each.
#[derive(Debug)]
struct Tap {
    times: EmitTimes,
    tokens: Option<mpsc::UnboundedReceiver<String>>,
}

/// The taps of every stream by message id; shared by the bench, backend, sink and clients.
#[derive(Debug, Default)]
struct EmitLog {
    streams: Mutex<HashMap<Arc<str>, Tap>>,
}

impl EmitLog {
    /// Opens the tap of `key`: returns its emit times and the sender the clock feeds.
    fn open(&self, key: &StreamKey) -> (EmitTimes, mpsc::UnboundedSender<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let times = Arc::new(Mutex::new(Vec::new()));
        let tap = Tap {
            times: times.clone(),
            tokens: Some(rx),
        };
        lock(&self.streams).insert(key.message_id.clone(), tap);
        (times, tx)
    }

    fn times(&self, key: &StreamKey) -> Option<EmitTimes> {
        lock(&self.streams)
            .get(&key.message_id)
            .map(|t| t.times.clone())
    }

    fn take(&self, key: &StreamKey) -> Option<(EmitTimes, mpsc::UnboundedReceiver<String>)> {
        let mut streams = lock(&self.streams);
        let tap = streams.get_mut(&key.message_id)?;
        Some((tap.times.clone(), tap.tokens.take()?))
    }
}

/// Yields the tokens the [clock](run_clock) sends down the stream's tap, each the moment
/// it arrives, and records when it yielded it: an LLM whose tokens arrive over the network.
#[derive(Debug)]
struct TapBackend {
    log: Arc<EmitLog>,
}

#[async_trait]
impl LlmBackend for TapBackend {
    async fn stream(
        &self,
        request: &ChatRequest,
        _: &Conversation,
    ) -> chatstream_core::Result<LlmStream> {
        let (times, rx) = self
            .log
            .take(&request.key)
            .expect("every benchmark stream has a tap");
        let deltas = futures::stream::unfold(rx, move |mut rx| {
            let times = times.clone();
            async move {
                let text = rx.recv().await?;
                lock(&times).push(Instant::now());
                Some((Ok(LlmEvent::TextDelta(text)), rx))
            }
        });
        let finish = futures::stream::iter([Ok(LlmEvent::Finish(FinishReason::Stop))]);
        Ok(deltas.chain(finish).boxed())
    }
}

/// Feeds `tokens` tokens `" {j}"` to each of `taps`, one every `period` per stream, from a
/// thread of its own. Stream `i` of `n` is offset by `i·period/n`, so tokens arrive evenly
/// spread rather than in step (a tokio timer would fire whole groups on one millisecond
/// tick). The schedule is fixed: a late thread catches up, so the average rate is exact.
fn run_clock(
    taps: Vec<mpsc::UnboundedSender<String>>,
    period: Duration,
    tokens: usize,
    epoch: Instant,
) {
    let n = taps.len() as u128;
    let period_ns = period.as_nanos();
    let mut taps: Vec<_> = taps.into_iter().map(Some).collect();
    for k in 0..n * tokens as u128 {
        let due =
            epoch + Duration::from_nanos(u64::try_from(period_ns * k / n).unwrap_or(u64::MAX));
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let (i, j) = ((k % n) as usize, (k / n) as usize);
        if let Some(tap) = &taps[i] {
            let _ = tap.send(format!(" {j}"));
        }
        if j + 1 == tokens {
            taps[i] = None; // the stream ends
        }
    }
}

/// The token sink of the counts: the in-memory broker behind a simulated round trip per
/// publish (`rtt`; zero: the in-memory publish as is), like a publish awaiting its publisher
/// confirm from a broker across the network. A "wire" thread delivers each batch to the
/// broker (and so to the gateway) `rtt` after it was sent, in the order sent, and confirms
/// it then; several publishes may be on the wire at once, as on an AMQP channel.
///
/// Also records how long each token envelope waited in the worker: backend emit → start of
/// the publish carrying it.
#[derive(Debug)]
struct RoundTripSink {
    inner: InMemoryBroker,
    rtt: Duration,
    wire: Option<Mutex<std::sync::mpsc::Sender<Flight>>>,
    log: Arc<EmitLog>,
    publish_micros: AtomicU64,
    publish_max_micros: AtomicU64,
    publishes: AtomicU64,
    waits: Mutex<Vec<Duration>>,
}

/// A batch on the simulated wire.
struct Flight {
    due: Instant,
    destination: Destination,
    batch: Vec<TokenEnvelope>,
    confirm: tokio::sync::oneshot::Sender<chatstream_core::Result<()>>,
}

impl RoundTripSink {
    fn new(inner: InMemoryBroker, rtt: Duration, log: Arc<EmitLog>) -> Self {
        let wire = (!rtt.is_zero()).then(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Flight>();
            let broker = inner.clone();
            // Ends when the sink is dropped. A thread sleep is precise to tens of
            // microseconds; a tokio timer rounds up to the next millisecond.
            std::thread::spawn(move || {
                for flight in rx {
                    let now = Instant::now();
                    if flight.due > now {
                        std::thread::sleep(flight.due - now);
                    }
                    let r = futures::executor::block_on(
                        broker.publish(&flight.destination, &flight.batch),
                    );
                    let _ = flight.confirm.send(r);
                }
            });
            Mutex::new(tx)
        });
        Self {
            inner,
            rtt,
            wire,
            log,
            publish_micros: AtomicU64::new(0),
            publish_max_micros: AtomicU64::new(0),
            publishes: AtomicU64::new(0),
            waits: Mutex::new(Vec::new()),
        }
    }

    fn record_waits(&self, t0: Instant, batch: &[TokenEnvelope]) {
        let mut waits = lock(&self.waits);
        for env in batch {
            let StreamEvent::Token { text } = &env.event else {
                continue;
            };
            let first = text.split(' ').nth(1).and_then(|i| i.parse::<usize>().ok());
            if let (Some(i), Some(times)) = (first, self.log.times(&env.key)) {
                if let Some(emitted) = lock(&times).get(i) {
                    waits.push(t0.saturating_duration_since(*emitted));
                }
            }
        }
    }
}

#[async_trait]
impl TokenSink for RoundTripSink {
    fn destination(&self, request: &ChatRequest) -> Destination {
        self.inner.destination(request)
    }

    async fn publish(
        &self,
        destination: &Destination,
        batch: &[TokenEnvelope],
    ) -> chatstream_core::Result<()> {
        let t0 = Instant::now();
        self.record_waits(t0, batch);
        let r = match &self.wire {
            None => self.inner.publish(destination, batch).await,
            Some(wire) => {
                let (confirm, confirmed) = tokio::sync::oneshot::channel();
                let flight = Flight {
                    due: t0 + self.rtt,
                    destination: destination.clone(),
                    batch: batch.to_vec(),
                    confirm,
                };
                lock(wire)
                    .send(flight)
                    .expect("wire thread runs while the sink lives");
                confirmed.await.expect("wire thread confirms every flight")
            }
        };
        let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.publish_micros.fetch_add(us, Ordering::Relaxed);
        self.publish_max_micros.fetch_max(us, Ordering::Relaxed);
        self.publishes.fetch_add(1, Ordering::Relaxed);
        r
    }
}

/// What one client saw.
#[derive(Debug, Default)]
struct ClientReport {
    tokens: usize,
    token_envelopes: usize,
    /// Per token: client receive − backend emit.
    delays: Vec<Duration>,
}

/// Reads a client stream to its end, timing every token against its emit time.
async fn read_timed(mut stream: ClientStream, times: EmitTimes) -> ClientReport {
    let mut report = ClientReport::default();
    while let Some(event) = stream.next().await {
        let now = Instant::now();
        let env = match event {
            ClientEvent::Envelope(env) => env,
            other => panic!("unexpected client event in a clean run: {other:?}"),
        };
        let StreamEvent::Token { text } = &env.event else {
            continue;
        };
        let times = lock(&times);
        for part in text.split(' ').skip(1) {
            let i: usize = part.parse().expect("token text is \" {i}\"");
            assert_eq!(i, report.tokens, "tokens out of order or missing");
            report.delays.push(now.saturating_duration_since(times[i]));
            report.tokens += 1;
        }
        report.token_envelopes += 1;
    }
    report
}

/// One row of the counts table.
#[derive(Debug, Clone)]
struct Case {
    name: &'static str,
    streams: usize,
    period: Duration,
    tokens_per_stream: usize,
    /// Simulated broker round trip per publish; zero: the in-memory publish as is.
    rtt: Duration,
    config: WorkerConfig,
}

#[derive(Debug)]
struct Row {
    case: Case,
    tokens: usize,
    envelopes: u64,
    token_envelopes: usize,
    publishes: u64,
    publish_mean: Duration,
    publish_max: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// Worker-side wait of token envelopes: backend emit → start of their publish.
    wait_p99: Duration,
    wait_max: Duration,
}

fn run_case(case: &Case) -> Row {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run_case_async(case))
}

async fn run_case_async(case: &Case) -> Row {
    let broker = InMemoryBroker::new();
    let log = Arc::new(EmitLog::default());
    let backend = Arc::new(TapBackend { log: log.clone() });
    let sink = Arc::new(RoundTripSink::new(broker.clone(), case.rtt, log.clone()));
    let config = WorkerConfig {
        concurrency: case.streams.max(1),
        ..case.config.clone()
    };
    let pipeline = Pipeline::start(
        &broker,
        sink.clone(),
        backend,
        Arc::default(),
        config,
        GatewayConfig::default(),
    );
    let mut clients = Vec::with_capacity(case.streams);
    let mut taps = Vec::with_capacity(case.streams);
    for _ in 0..case.streams {
        let key = fresh_key();
        let (times, tap) = log.open(&key);
        taps.push(tap);
        let request = ChatRequest::new(key, "benchmark");
        let stream = pipeline
            .gateway
            .submit(request)
            .await
            .expect("in-memory submit cannot fail");
        clients.push(tokio::spawn(read_timed(stream, times)));
    }
    // Room for the worker to take every request before the first token is due.
    let epoch = Instant::now() + Duration::from_millis(100);
    let (period, per_stream) = (case.period, case.tokens_per_stream);
    let clock = std::thread::spawn(move || run_clock(taps, period, per_stream, epoch));
    let mut tokens = 0;
    let mut token_envelopes = 0;
    let mut delays = Vec::with_capacity(case.streams * case.tokens_per_stream);
    for client in clients {
        let report = client.await.expect("client task");
        assert_eq!(
            report.tokens, case.tokens_per_stream,
            "a client missed tokens"
        );
        tokens += report.tokens;
        token_envelopes += report.token_envelopes;
        delays.extend(report.delays);
    }
    clock.join().expect("clock thread");
    let stats = pipeline.worker.shutdown().await;
    delays.sort_unstable();
    let n = sink.publishes.load(Ordering::Relaxed).max(1);
    let publish_mean = Duration::from_micros(sink.publish_micros.load(Ordering::Relaxed) / n);
    let publish_max = Duration::from_micros(sink.publish_max_micros.load(Ordering::Relaxed));
    let mut waits = std::mem::take(&mut *lock(&sink.waits));
    waits.sort_unstable();
    Row {
        case: case.clone(),
        tokens,
        envelopes: stats.envelopes,
        token_envelopes,
        publishes: stats.publishes,
        publish_mean,
        publish_max,
        p50: pct(&delays, 0.50),
        p99: pct(&delays, 0.99),
        max: delays.last().copied().unwrap_or_default(),
        wait_p99: pct(&waits, 0.99),
        wait_max: waits.last().copied().unwrap_or_default(),
    }
}

/// The `p` quantile of sorted durations.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn counts(quick: bool) {
    // Seconds of generation per case; `cargo test --benches` only checks that it runs.
    let seconds = if quick { 0.2 } else { 3.0 };
    let millis = |n: u64| Duration::from_millis(n);
    let one_stream = |name, config| Case {
        name,
        streams: 1,
        period: millis(1),
        tokens_per_stream: (seconds * 1000.0) as usize,
        rtt: Duration::ZERO,
        config,
    };
    let many = |name, rtt, config| Case {
        name,
        streams: 500,
        period: millis(20),
        tokens_per_stream: (seconds * 50.0) as usize,
        rtt,
        config,
    };
    let in_flight_1 = WorkerConfig {
        max_in_flight: 1,
        ..coalesced()
    };
    let cases = [
        one_stream("a: default window (10 ms)", coalesced()),
        one_stream("a: per token, as the seeds", per_token()),
        many("b: in-memory publish", Duration::ZERO, coalesced()),
        many(
            "b: 0.1 ms round trip",
            Duration::from_micros(100),
            coalesced(),
        ),
        many("b: 1 ms round trip", millis(1), coalesced()),
        many("b: 1 ms round trip, 1 in flight", millis(1), in_flight_1),
        many("b: 2 ms round trip", millis(2), coalesced()),
    ];
    println!();
    println!("counts, per 1,000 tokens (delay: backend yields a token → client stream yields it;");
    println!("wait: backend yields a token → the publish carrying it starts)");
    println!();
    println!(
        "| case | streams × tokens/s | tokens | publish mean / max ms | envelopes | token envelopes | publishes | delay p50 / p99 / max ms | wait p99 / max ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for case in &cases {
        let row = run_case(case);
        let tokens = row.tokens as u64;
        println!(
            "| {} | {} × {:.0} | {} | {} / {} | {:.1} | {:.1} | {:.1} | {} / {} / {} | {} / {} |",
            row.case.name,
            row.case.streams,
            1.0 / row.case.period.as_secs_f64(),
            row.tokens,
            ms(row.publish_mean),
            ms(row.publish_max),
            per_1k(row.envelopes, tokens),
            per_1k(row.token_envelopes as u64, tokens),
            per_1k(row.publishes, tokens),
            ms(row.p50),
            ms(row.p99),
            ms(row.max),
            ms(row.wait_p99),
            ms(row.wait_max),
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------------------

/// Criterion options that take a value (so the value is not mistaken for the filter).
const VALUE_OPTIONS: &[&str] = &[
    "--color",
    "--save-baseline",
    "--baseline",
    "--baseline-lenient",
    "--format",
    "--profile-time",
    "--load-baseline",
    "--sample-size",
    "--warm-up-time",
    "--measurement-time",
    "--nresamples",
    "--noise-threshold",
    "--confidence-level",
    "--significance-level",
    "--plotting-backend",
    "--output-format",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut filter = None;
    let mut skip_value = false;
    for a in &args {
        if skip_value {
            skip_value = false;
        } else if a.starts_with('-') {
            skip_value = VALUE_OPTIONS.contains(&a.as_str()) && !a.contains('=');
        } else if filter.is_none() {
            filter = Some(a.as_str());
        }
    }
    let listing = args.iter().any(|a| a == "--list");
    let bench_mode = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");

    let mut criterion = Criterion::default().configure_from_args();
    if filter.is_none_or(|f| f != "counts") {
        throughput(&mut criterion);
    }
    if !listing && filter.is_none_or(|f| f == "counts") {
        counts(!bench_mode);
    }
    criterion.final_summary();
}
