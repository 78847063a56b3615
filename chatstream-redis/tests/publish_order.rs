//! Publish order on the Redis token bus with many publishes in flight: a worker with
//! `max_in_flight` 64 answers many requests at once, one envelope per token, and every
//! stream must reach Redis in `seq` order, as one attempt (no `OUTOFORDER` refusal, no
//! request given back, no reset for the client). Against a real Redis, skipped when it is
//! unreachable unless `CHATSTREAM_REQUIRE_SERVICES=1`.

use std::sync::Arc;
use std::time::Duration;

use chatstream_core::testkit::Harness;
use chatstream_core::{
    ChatRequest, CoalesceConfig, RequestSink, ScriptedBackend, StreamEvent, StreamKey,
    TokenEnvelope, TokenSource, Worker, WorkerConfig,
};
use chatstream_redis::testkit::RedisHarness;
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(60);
const STREAMS: usize = 48;

/// Reads one stream to its end, failing on an error item (`HistoryLost`, …).
async fn read_to_end(
    source: Arc<chatstream_core::DynTokenSource>,
    key: StreamKey,
) -> Vec<TokenEnvelope> {
    let stream = source.subscribe(&key, None).await.expect("subscribe");
    stream
        .map(|r| match r {
            Ok(env) => env,
            Err(e) => panic!("stream {key:?} failed for its reader: {e}"),
        })
        .collect()
        .await
}

async fn many_publishes_in_flight_keep_every_stream_in_order(max_in_flight: usize) {
    let Some(h) = RedisHarness::connect().await else {
        return;
    };
    let source = h.token_source().await;
    // One envelope per token, small batches, no linger: many publishes, up to
    // `max_in_flight` of them overlapping, each carrying envelopes of several streams.
    let backend = ScriptedBackend::default().with_repeat(12);
    let worker = Worker::builder(
        Arc::from(h.message_source().await),
        h.token_sink().await,
        Arc::new(backend.clone()),
    )
    .config(WorkerConfig {
        concurrency: STREAMS,
        coalesce: CoalesceConfig::off(),
        max_in_flight,
        max_batch: 4,
        publish_linger: Duration::ZERO,
        status_events: false,
        shutdown_grace: Duration::from_secs(5),
        ..WorkerConfig::default()
    })
    .build()
    .spawn();

    let requests: Vec<ChatRequest> = (0..STREAMS)
        .map(|i| {
            ChatRequest::new(
                StreamKey::new(format!("order-s{i}"), format!("order-m{i}")),
                format!("question {i}"),
            )
        })
        .collect();
    // Readers first (a subscription waits for a stream not started yet), then the requests.
    let readers: Vec<_> = requests
        .iter()
        .map(|r| tokio::spawn(read_to_end(source.clone(), r.key.clone())))
        .collect();
    let submit = h.request_sink().await;
    for r in &requests {
        submit.submit(r).await.expect("submit");
    }

    for (req, reader) in requests.iter().zip(readers) {
        let envs = tokio::time::timeout(WAIT, reader)
            .await
            .unwrap_or_else(|_| panic!("stream {:?} did not end", req.key))
            .expect("reader task");
        let tokens = backend.tokens(&backend.answer(req)).len() as u64;
        let seqs: Vec<u64> = envs.iter().map(|e| e.seq).collect();
        let expected: Vec<u64> = (0..=tokens).collect();
        assert_eq!(
            seqs, expected,
            "stream {:?}: the reader must see seqs 0..={tokens} once each, in order",
            req.key
        );
        assert!(
            envs.iter().all(|e| e.attempt == 1),
            "stream {:?} was answered again (a reset for the client): attempts {:?}",
            req.key,
            envs.iter()
                .map(|e| e.attempt)
                .collect::<std::collections::BTreeSet<_>>()
        );
        let text: String = envs
            .iter()
            .filter_map(|e| match &e.event {
                StreamEvent::Token { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            text,
            backend.answer(req),
            "stream {:?}: wrong text",
            req.key
        );
        assert!(
            envs.last().is_some_and(|e| e.event.is_end()),
            "stream {:?} does not end with End",
            req.key
        );
    }

    let stats = tokio::time::timeout(WAIT, worker.shutdown())
        .await
        .expect("worker shutdown hung");
    assert_eq!(
        stats.requeued, 0,
        "publishes failed and requests were given back: {stats:?}"
    );
    assert_eq!(
        stats.received, STREAMS as u64,
        "requests were delivered again: {stats:?}"
    );
    assert_eq!(stats.completed, STREAMS as u64, "{stats:?}");
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert!(
        stats.publishes > STREAMS as u64 * 10,
        "the test needs many publishes, made {}",
        stats.publishes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_publishes_in_flight_keep_every_stream_in_order() {
    many_publishes_in_flight_keep_every_stream_in_order(64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_publishes_in_flight_keep_every_stream_in_order() {
    many_publishes_in_flight_keep_every_stream_in_order(32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_fifty_six_publishes_in_flight_keep_every_stream_in_order() {
    many_publishes_in_flight_keep_every_stream_in_order(256).await;
}
