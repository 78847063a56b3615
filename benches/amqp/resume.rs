//! What a resume costs on the stream topology: the time from a subscription on another
//! gateway instance (its own connection and token source) to the first envelope it gets,
//! mid-answer and after the end, while other streams fill the log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatstream::amqp::{
    AmqpConnection, AmqpRequestSink, AmqpRequestSource, AmqpTokenSink, AmqpTokenSource,
    TokenTopology,
};
use chatstream::{
    ChatRequest, ClientEvent, Gateway, ScriptedBackend, StreamKey, TokenSource, Worker,
    WorkerConfig,
};
use futures::StreamExt;

use crate::env_usize;
use crate::relay::{bench_config, delete_stream};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Time from `subscribe` to the first envelope.
async fn first_envelope(source: &AmqpTokenSource, key: &StreamKey, after: Option<u64>) -> Duration {
    let started = Instant::now();
    let mut stream = source.subscribe(key, after).await.expect("subscribe");
    match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
        Ok(Some(Ok(_))) => started.elapsed(),
        other => panic!("resume of {key}: {other:?}"),
    }
}

pub(crate) async fn run(url: &str) {
    let streams = env_usize("AMQP_BENCH_RESUME_STREAMS", 50);
    let tokens = 100;
    let config = bench_config(url, TokenTopology::Stream);
    let worker_conn = AmqpConnection::connect(config.clone())
        .await
        .expect("worker");
    let worker = Worker::builder(
        Arc::new(AmqpRequestSource::new(&worker_conn).await.expect("source")),
        Arc::new(AmqpTokenSink::new(&worker_conn).await.expect("sink")),
        Arc::new(
            ScriptedBackend::default()
                .with_delay(Duration::from_millis(20))
                .with_repeat(tokens / 10),
        ),
    )
    .config(WorkerConfig {
        concurrency: streams,
        status_events: false,
        ..WorkerConfig::default()
    })
    .build()
    .spawn();
    let a_conn = AmqpConnection::connect(config.clone())
        .await
        .expect("gateway a");
    let gateway = Gateway::builder(
        Arc::new(AmqpRequestSink::new(&a_conn).await.expect("requests")),
        Arc::new(AmqpTokenSource::new(&a_conn).await.expect("tokens")),
    )
    .build();
    let b_conn = AmqpConnection::connect(config.clone())
        .await
        .expect("gateway b");
    let b = Arc::new(AmqpTokenSource::new(&b_conn).await.expect("tokens b"));

    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut tasks = Vec::new();
    for i in 0..streams {
        let key = StreamKey::new(format!("resume-{}-{i}", &run_id[..8]), "m");
        let mut on_a = gateway
            .submit(ChatRequest::new(key.clone(), "go").stateless())
            .await
            .expect("submit");
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            // Read six envelopes on A, then resume after the fifth on B, mid-answer.
            let mut n = 0;
            let mut fifth = 0;
            while n < 6 {
                if let Some(ClientEvent::Envelope(env)) = on_a.next().await {
                    n += 1;
                    if n == 5 {
                        fifth = env.seq;
                    }
                }
            }
            let mid = first_envelope(&b, &key, Some(fifth)).await;
            let mut seqs = Vec::new();
            while let Some(event) = on_a.next().await {
                if let ClientEvent::Envelope(env) = event {
                    seqs.push(env.seq);
                }
            }
            let near_end = seqs.len().saturating_sub(5);
            let late = seqs.get(near_end).copied().unwrap_or(fifth);
            let after_end = first_envelope(&b, &key, Some(fifth)).await;
            let after_end_late = first_envelope(&b, &key, Some(late)).await;
            let from_start = first_envelope(&b, &key, None).await;
            (mid, after_end, after_end_late, from_start)
        }));
    }
    let mut mids = Vec::new();
    let mut ends = Vec::new();
    let mut lates = Vec::new();
    let mut starts = Vec::new();
    for t in tasks {
        let (m, e, l, s) = t.await.expect("resume task");
        mids.push(m);
        ends.push(e);
        lates.push(l);
        starts.push(s);
    }
    for v in [&mut mids, &mut ends, &mut lates, &mut starts] {
        v.sort_unstable();
    }
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    println!();
    println!(
        "## resume on another gateway instance (stream topology, {streams} concurrent streams of {tokens} tokens at 50 tokens/s)"
    );
    println!();
    println!("| resume | first envelope after subscribe: median / p99 / max |");
    println!("|---|---|");
    for (what, v) in [
        ("mid-answer, after seq 4", &mids),
        ("after the end, after seq 4", &ends),
        ("after the end, five envelopes before it", &lates),
        ("after the end, from the start", &starts),
    ] {
        println!(
            "| {what} | {} / {} / {} |",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99)),
            ms(v.last().copied().unwrap_or_default())
        );
    }
    worker.shutdown().await;
    for c in [&worker_conn, &a_conn, &b_conn] {
        c.close().await;
    }
    delete_stream(&config).await;
}
