//! The Redis Streams token bus (`chatstream-redis`) beside raw `XADD`/`XREAD` of the same
//! message size, on the same server, in the same run.
//!
//! Run with: `cargo bench --bench redis` (Redis at `CHATSTREAM_REDIS_URL`, default
//! `redis://127.0.0.1:6379`; without a server the benchmark says so and does nothing).
//! `cargo bench --bench redis -- resume`, `-- throughput` or `-- cpu` runs one part.
//!
//! - **resume** (latency of one subscription, subscribe → first envelope in hand):
//!   `bus/finished` and `bus/live` subscribe with `after_seq` in the middle of a stream of
//!   200 envelopes, with and without its `End`; `bus/tail` subscribes after the last
//!   envelope of a live stream and times one publish until the subscriber has it. `raw/*`
//!   do the same with one `XREAD` from the middle (`COUNT 512`, as the bus reads: both
//!   fetch the remaining 100 entries in one reply), and `XADD` → `XREAD BLOCK`.
//! - **throughput** (`Throughput::Elements` = tokens): 20 streams of 250 tokens and an
//!   `End` each, read by 20 subscribers until their `End`. `bus/batched` publishes one
//!   batch per 10 rounds (10 envelopes of every stream: 200 envelopes, one script call per
//!   stream, one round trip — what the worker's batcher gathers under load);
//!   `bus/unbatched` publishes every envelope on its own, one task per stream awaiting
//!   each publish (the seeds' way; the tasks' commands still share one multiplexed
//!   connection). `raw/pipelined` and `raw/single` do the same with plain `XADD`s of a
//!   payload as long as the canonical envelope JSON, read by one `XREAD BLOCK` loop per
//!   stream on its own connection.
//!
//! - **cpu** (a Markdown table after the criterion groups): the throughput cases again, 20
//!   iterations each, with the CPU time they took in this process and in the Redis server
//!   (`INFO cpu`, which counts every client of the server): on a shared machine, CPU time
//!   per token says what the wall clock cannot.
//!
//! Keys live under a fresh `cstest:bench:…` prefix and are deleted after each iteration
//! and at the end. The figures measured on the reference machine are in BENCHMARKS.md.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chatstream_core::wire::seed000::{encode_envelope, Mode};
use chatstream_core::{
    Destination, FinishReason, StreamEvent, StreamKey, TokenEnvelope, TokenSink, TokenSource,
};
use chatstream_redis::testkit::{connect_or_skip, redis_url, PrefixGuard};
use chatstream_redis::{BusConfig, RedisClient, RedisTokenSink, RedisTokenSource};
use criterion::{Criterion, Throughput};
use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use tokio::runtime::Runtime;

/// Envelopes in the streams resumed from.
const RESUME_LEN: u64 = 200;
/// Streams per throughput iteration.
const STREAMS: usize = 20;
/// Tokens per stream per throughput iteration.
const TOKENS: usize = 250;
/// Rounds (one envelope of every stream each) per batch when batching: what a worker's
/// batcher gathers while one publish is in flight at 20 streams.
const BATCH_ROUNDS: usize = 10;
/// A typical model token.
const TOKEN: &str = " word";
/// Session id of every benchmark stream (as long as a UUID, like real channels).
const SESSION: &str = "bench-0000-0000-0000-000000000000";

/// What every benchmark shares.
struct Bench {
    client: RedisClient,
    sink: RedisTokenSink,
    source: RedisTokenSource,
    /// For raw readers: one dedicated connection each.
    redis: redis::Client,
    iteration: AtomicU64,
    _guard: PrefixGuard,
}

impl Bench {
    async fn connect() -> Option<Self> {
        let client = connect_or_skip("bench").await?;
        let config = BusConfig {
            retention_after_end: Duration::from_secs(60),
            ..BusConfig::default()
        };
        let sink = match RedisTokenSink::new(client.clone(), config.clone()).await {
            Ok(s) => s,
            Err(e) => panic!("Redis token sink: {e}"),
        };
        let redis = match redis::Client::open(redis_url()) {
            Ok(r) => r,
            Err(e) => panic!("Redis URL: {e}"),
        };
        Some(Self {
            source: RedisTokenSource::new(client.clone(), config),
            sink,
            redis,
            iteration: AtomicU64::new(0),
            _guard: PrefixGuard::new(&client),
            client,
        })
    }

    /// A stream key no other iteration uses.
    fn fresh_key(&self, tag: &str) -> StreamKey {
        let n = self.iteration.fetch_add(1, Ordering::Relaxed);
        StreamKey::new(SESSION, format!("{tag}-{n:08}"))
    }

    /// A raw stream name under the prefix.
    fn raw_key(&self, key: &StreamKey) -> String {
        format!(
            "{}raw:{}:{}",
            self.client.keys().prefix(),
            key.session_id,
            key.message_id
        )
    }

    async fn dedicated(&self) -> MultiplexedConnection {
        match self.redis.get_multiplexed_async_connection().await {
            Ok(c) => c,
            Err(e) => panic!("Redis connection: {e}"),
        }
    }

    async fn publish(&self, batch: &[TokenEnvelope]) {
        if let Err(e) = self.sink.publish(&Destination::default(), batch).await {
            panic!("publish: {e}");
        }
    }

    /// Deletes the bus keys and raw streams of `keys`.
    async fn forget(&self, keys: &[StreamKey]) {
        let mut names = Vec::with_capacity(keys.len() * 3);
        for k in keys {
            names.push(self.client.keys().token_stream(k));
            names.push(self.client.keys().token_marker(k));
            names.push(self.raw_key(k));
        }
        let _: redis::RedisResult<()> = redis::cmd("UNLINK")
            .arg(&names)
            .query_async(&mut self.client.connection())
            .await;
    }
}

fn token(key: &StreamKey, seq: u64) -> TokenEnvelope {
    TokenEnvelope::new(key.clone(), 1, seq, StreamEvent::token(TOKEN))
}

fn end(key: &StreamKey, seq: u64) -> TokenEnvelope {
    TokenEnvelope::new(
        key.clone(),
        1,
        seq,
        StreamEvent::End {
            finish_reason: FinishReason::Stop,
            usage: None,
        },
    )
}

/// A raw payload as long as the canonical JSON of a token envelope of `key`.
fn raw_payload(key: &StreamKey) -> String {
    let json = encode_envelope(&token(key, 100), Mode::Canonical).unwrap_or_default();
    "x".repeat(json.len())
}

fn xadd(pipe: &mut redis::Pipeline, stream: &str, seq: u64, payload: &str) {
    pipe.cmd("XADD")
        .arg(stream)
        .arg(format!("{}-1", seq))
        .arg("env")
        .arg(payload)
        .ignore();
}

/// Reads a raw stream from its start with `XREAD BLOCK` until `count` entries arrived.
async fn raw_read(mut con: MultiplexedConnection, stream: String, count: usize) {
    let mut last = "0-0".to_owned();
    let mut seen = 0;
    while seen < count {
        let reply: StreamReadReply = match redis::cmd("XREAD")
            .arg("COUNT")
            .arg(512)
            .arg("BLOCK")
            .arg(5000)
            .arg("STREAMS")
            .arg(&stream)
            .arg(&last)
            .query_async(&mut con)
            .await
        {
            Ok(r) => r,
            Err(e) => panic!("XREAD: {e}"),
        };
        for id in reply.keys.into_iter().flat_map(|k| k.ids) {
            seen += 1;
            last = id.id;
        }
    }
}

fn resume(c: &mut Criterion, rt: &Runtime, b: &'static Bench) {
    let finished = b.fresh_key("resume-finished");
    let live = b.fresh_key("resume-live");
    let raw = b.fresh_key("resume-raw");
    let raw_stream = b.raw_key(&raw);
    let payload = raw_payload(&raw);
    rt.block_on(async {
        for key in [&finished, &live] {
            let batch: Vec<_> = (0..RESUME_LEN).map(|s| token(key, s)).collect();
            b.publish(&batch).await;
        }
        b.publish(&[end(&finished, RESUME_LEN)]).await;
        let mut pipe = redis::pipe();
        for seq in 0..RESUME_LEN {
            xadd(&mut pipe, &raw_stream, seq, &payload);
        }
        let _: () = pipe
            .query_async(&mut b.client.connection())
            .await
            .unwrap_or_else(|e| panic!("raw setup: {e}"));
    });
    let middle = RESUME_LEN / 2;

    let mut group = c.benchmark_group("redis/resume");
    for (name, key) in [("bus/finished", &finished), ("bus/live", &live)] {
        group.bench_function(name, |bench| {
            bench.to_async(rt).iter(|| async {
                let mut sub = b
                    .source
                    .subscribe(key, Some(middle))
                    .await
                    .unwrap_or_else(|e| panic!("subscribe: {e}"));
                match sub.next().await {
                    Some(Ok(env)) => assert_eq!(env.seq, middle + 1),
                    other => panic!("first envelope: {other:?}"),
                }
            });
        });
    }
    group.bench_function("raw/xread", |bench| {
        bench.to_async(rt).iter(|| async {
            let reply: StreamReadReply = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(BusConfig::default().read_count)
                .arg("STREAMS")
                .arg(&raw_stream)
                .arg(format!("{middle}-1"))
                .query_async(&mut b.client.connection())
                .await
                .unwrap_or_else(|e| panic!("XREAD: {e}"));
            assert_eq!(reply.keys.len(), 1);
        });
    });

    let payload = payload.as_str();
    // Live tail: the subscriber waits in XREAD BLOCK; time one publish until it has it.
    group.bench_function("bus/tail", |bench| {
        bench.to_async(rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let key = b.fresh_key("tail");
                b.publish(&[token(&key, 0)]).await;
                let mut sub = b
                    .source
                    .subscribe(&key, Some(0))
                    .await
                    .unwrap_or_else(|e| panic!("subscribe: {e}"));
                let (tx, rx) = tokio::sync::oneshot::channel();
                let reader = tokio::spawn(async move {
                    let first = sub.next().await;
                    let _ = tx.send((Instant::now(), first.map(|r| r.is_ok())));
                });
                // Let the reader reach its XREAD BLOCK (not timed).
                tokio::time::sleep(Duration::from_millis(2)).await;
                let start = Instant::now();
                b.publish(&[token(&key, 1)]).await;
                let (at, ok) = rx.await.unwrap_or_else(|e| panic!("reader: {e}"));
                assert_eq!(ok, Some(true));
                total += at.saturating_duration_since(start);
                let _ = reader.await;
                b.forget(&[key]).await;
            }
            total
        });
    });
    group.bench_function("raw/tail", |bench| {
        bench.to_async(rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            let reader_con = b.dedicated().await;
            for _ in 0..iters {
                let key = b.fresh_key("rawtail");
                let stream = b.raw_key(&key);
                let (tx, rx) = tokio::sync::oneshot::channel();
                let name = stream.clone();
                let mut con = reader_con.clone();
                let reader = tokio::spawn(async move {
                    let r: redis::RedisResult<StreamReadReply> = redis::cmd("XREAD")
                        .arg("BLOCK")
                        .arg(5000)
                        .arg("STREAMS")
                        .arg(&name)
                        .arg("0-0")
                        .query_async(&mut con)
                        .await;
                    let _ = tx.send((Instant::now(), r.is_ok()));
                });
                tokio::time::sleep(Duration::from_millis(2)).await;
                let start = Instant::now();
                let mut pipe = redis::pipe();
                xadd(&mut pipe, &stream, 1, payload);
                let _: () = pipe
                    .query_async(&mut b.client.connection())
                    .await
                    .unwrap_or_else(|e| panic!("XADD: {e}"));
                let (at, ok) = rx.await.unwrap_or_else(|e| panic!("reader: {e}"));
                assert!(ok);
                total += at.saturating_duration_since(start);
                let _ = reader.await;
                b.forget(&[key]).await;
            }
            total
        });
    });
    group.finish();
    rt.block_on(b.forget(&[finished, live, raw]));
}

/// How one throughput iteration publishes.
#[derive(Clone, Copy)]
enum Publish {
    BusBatched,
    BusUnbatched,
    RawPipelined,
    RawSingle,
}

/// One throughput iteration: subscribe everything, publish everything, wait for every
/// reader to see its `End`. Returns the time from the first publish to the last `End`.
async fn iteration(b: &'static Bench, how: Publish) -> Duration {
    let keys: Vec<StreamKey> = (0..STREAMS).map(|_| b.fresh_key("tput")).collect();
    let raw = matches!(how, Publish::RawPipelined | Publish::RawSingle);
    let mut readers = Vec::with_capacity(STREAMS);
    for key in &keys {
        if raw {
            let con = b.dedicated().await;
            readers.push(tokio::spawn(raw_read(con, b.raw_key(key), TOKENS + 1)));
        } else {
            let mut sub = b
                .source
                .subscribe(key, None)
                .await
                .unwrap_or_else(|e| panic!("subscribe: {e}"));
            readers.push(tokio::spawn(async move {
                let mut n = 0;
                while let Some(env) = sub.next().await {
                    let env = env.unwrap_or_else(|e| panic!("read: {e}"));
                    n += 1;
                    if env.event.is_end() {
                        break;
                    }
                }
                assert_eq!(n, TOKENS + 1);
            }));
        }
    }
    let payload = raw_payload(&keys[0]);
    let start = Instant::now();
    match how {
        Publish::BusBatched => {
            let seqs: Vec<u64> = (0..=TOKENS as u64).collect();
            for rounds in seqs.chunks(BATCH_ROUNDS) {
                let mut batch = Vec::with_capacity(rounds.len() * keys.len());
                for k in &keys {
                    for &seq in rounds {
                        batch.push(if seq == TOKENS as u64 {
                            end(k, seq)
                        } else {
                            token(k, seq)
                        });
                    }
                }
                b.publish(&batch).await;
            }
        }
        Publish::BusUnbatched => {
            let writers: Vec<_> = keys
                .iter()
                .cloned()
                .map(|k| {
                    tokio::spawn(async move {
                        for seq in 0..TOKENS as u64 {
                            b.publish(&[token(&k, seq)]).await;
                        }
                        b.publish(&[end(&k, TOKENS as u64)]).await;
                    })
                })
                .collect();
            for w in writers {
                let _ = w.await;
            }
        }
        Publish::RawPipelined => {
            let names: Vec<String> = keys.iter().map(|k| b.raw_key(k)).collect();
            let mut con = b.client.connection();
            let seqs: Vec<u64> = (0..=TOKENS as u64).collect();
            for rounds in seqs.chunks(BATCH_ROUNDS) {
                let mut pipe = redis::pipe();
                for name in &names {
                    for &seq in rounds {
                        xadd(&mut pipe, name, seq, &payload);
                    }
                }
                let _: () = pipe
                    .query_async(&mut con)
                    .await
                    .unwrap_or_else(|e| panic!("XADD: {e}"));
            }
        }
        Publish::RawSingle => {
            let writers: Vec<_> = keys
                .iter()
                .map(|k| {
                    let name = b.raw_key(k);
                    let payload = payload.clone();
                    let mut con = b.client.connection();
                    tokio::spawn(async move {
                        for seq in 0..=TOKENS as u64 {
                            let _: String = redis::cmd("XADD")
                                .arg(&name)
                                .arg(format!("{seq}-1"))
                                .arg("env")
                                .arg(&payload)
                                .query_async(&mut con)
                                .await
                                .unwrap_or_else(|e| panic!("XADD: {e}"));
                        }
                    })
                })
                .collect();
            for w in writers {
                let _ = w.await;
            }
        }
    }
    for r in readers {
        if let Err(e) = r.await {
            panic!("reader: {e}");
        }
    }
    let took = start.elapsed();
    b.forget(&keys).await;
    took
}

fn throughput(c: &mut Criterion, rt: &Runtime, b: &'static Bench) {
    let mut group = c.benchmark_group("redis/throughput");
    group
        .throughput(Throughput::Elements((STREAMS * TOKENS) as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for (name, how) in CASES {
        group.bench_function(name, |bench| {
            bench.to_async(rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += iteration(b, how).await;
                }
                total
            });
        });
    }
    group.finish();
}

/// CPU time of this process, all threads: (on a CPU, waiting for one), in nanoseconds
/// (Linux `/proc/self/task/*/schedstat`).
fn process_schedstat() -> (u64, u64) {
    let mut total = (0, 0);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return total;
    };
    for task in tasks.flatten() {
        let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let mut f = s.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
        total.0 += f.next().unwrap_or(0);
        total.1 += f.next().unwrap_or(0);
    }
    total
}

/// CPU seconds the Redis server has used (`INFO cpu`, user + system, all clients).
async fn redis_cpu(b: &Bench) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut b.client.connection())
        .await
        .unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k, "used_cpu_sys" | "used_cpu_user")
                .then(|| v.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// The throughput cases again, `n` iterations each, with the CPU time they took in this
/// process and in the Redis server: on a shared machine, tokens per CPU-second say what
/// the wall clock cannot. Printed as a Markdown table.
fn cpu_table(rt: &Runtime, b: &'static Bench, n: u32) {
    println!();
    println!("CPU per case ({n} iterations of {STREAMS} streams x {TOKENS} tokens):");
    println!();
    println!("| case | tokens/s (wall) | client CPU ms per 1,000 tokens | client waiting for a CPU | Redis CPU ms per 1,000 tokens | tokens per CPU-second (client + Redis) |");
    println!("|---|---|---|---|---|---|");
    for (name, how) in CASES {
        rt.block_on(async {
            let tokens = f64::from(n) * (STREAMS * TOKENS) as f64;
            let (cpu0, wait0) = process_schedstat();
            let redis0 = redis_cpu(b).await;
            let mut wall = Duration::ZERO;
            for _ in 0..n {
                wall += iteration(b, how).await;
            }
            let redis1 = redis_cpu(b).await;
            let (cpu1, wait1) = process_schedstat();
            let client_ms = (cpu1 - cpu0) as f64 / 1e6;
            let waited = (wait1 - wait0) as f64 / ((cpu1 - cpu0).max(1) + wait1 - wait0) as f64;
            let redis_ms = (redis1 - redis0) * 1e3;
            println!(
                "| {name} | {:.0} k | {:.1} | {:.0} % | {:.1} | {:.0} k |",
                tokens / wall.as_secs_f64() / 1e3,
                client_ms / tokens * 1e3,
                waited * 100.0,
                redis_ms / tokens * 1e3,
                tokens / ((client_ms + redis_ms) / 1e3) / 1e3,
            );
        });
    }
}

const CASES: [(&str, Publish); 4] = [
    ("bus/batched", Publish::BusBatched),
    ("raw/pipelined", Publish::RawPipelined),
    ("bus/unbatched", Publish::BusUnbatched),
    ("raw/single", Publish::RawSingle),
];

fn main() {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    let Some(bench) = rt.block_on(Bench::connect()) else {
        return;
    };
    // The benchmarks' tasks borrow it for the whole run.
    let bench: &'static Bench = Box::leak(Box::new(bench));
    let key = StreamKey::new(SESSION, "tput-00000000");
    eprintln!(
        "redis bench: {} at {}, token envelope {} bytes of JSON",
        redis_url(),
        bench.client.endpoint(),
        raw_payload(&key).len()
    );
    // `cargo bench` passes --bench; `cargo test --benches` does not (criterion then runs
    // each benchmark once). A filter other than `cpu` skips the CPU table.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let benching = args.iter().any(|a| a == "--bench");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let cpu_only = filters.iter().any(|f| f.as_str() == "cpu");
    if !cpu_only {
        let mut c = Criterion::default().configure_from_args();
        resume(&mut c, &rt, bench);
        throughput(&mut c, &rt, bench);
        c.final_summary();
    }
    if cpu_only || (benching && filters.is_empty()) {
        cpu_table(&rt, bench, 20);
    } else if !benching {
        cpu_table(&rt, bench, 1);
    }
    // Box::leak keeps the guard alive: delete the prefix's keys by hand.
    drop(PrefixGuard::new(&bench.client));
}
