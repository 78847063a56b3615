//! The composition with the in-memory broker as the log and a live-only primary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::broadcast;

use super::{FallbackTokenSource, LoggedTokenSink};
use crate::memory::InMemoryConfig;
use crate::{
    ChatRequest, ClientEvent, Destination, DynTokenSink, DynTokenSource, EnvelopeStream, Error,
    FinishReason, Gateway, InMemoryBroker, Result, ScriptedBackend, StreamEvent, StreamKey,
    StreamStatus, TokenEnvelope, TokenSink, TokenSource, Worker,
};

const WAIT: Duration = Duration::from_secs(10);

fn _obj_safe(_: Box<DynTokenSink>, _: Box<DynTokenSource>) {}

/// A broker that keeps nothing: subscribers get what is published while they listen.
#[derive(Debug, Clone)]
struct LiveBus {
    tx: broadcast::Sender<Option<TokenEnvelope>>,
    fail: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<u64>>>,
}

impl LiveBus {
    fn new() -> Self {
        Self {
            tx: broadcast::channel(4096).0,
            fail: Arc::default(),
            seen: Arc::default(),
        }
    }

    /// Cuts every subscription (each yields an error and ends).
    fn cut(&self) {
        let _ = self.tx.send(None);
    }

    fn seen(&self) -> Vec<u64> {
        self.seen.lock().expect("seen").clone()
    }
}

#[async_trait]
impl TokenSink for LiveBus {
    async fn publish(&self, _: &Destination, batch: &[TokenEnvelope]) -> Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::unavailable("live bus", "down"));
        }
        self.seen
            .lock()
            .expect("seen")
            .extend(batch.iter().map(|e| e.seq));
        for env in batch {
            let _ = self.tx.send(Some(env.clone()));
        }
        Ok(())
    }
}

#[async_trait]
impl TokenSource for LiveBus {
    async fn subscribe(&self, key: &StreamKey, after_seq: Option<u64>) -> Result<EnvelopeStream> {
        if after_seq.is_some() {
            return Err(Error::Unsupported("live only"));
        }
        let rx = self.tx.subscribe();
        let key = key.clone();
        Ok(futures::stream::unfold((rx, false), move |(mut rx, done)| {
            let key = key.clone();
            async move {
                loop {
                    if done {
                        return None;
                    }
                    match rx.recv().await {
                        Ok(Some(env)) if env.key == key => {
                            let end = env.event.is_end();
                            return Some((Ok(env), (rx, end)));
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => {
                            return Some((Err(Error::unavailable("live bus", "cut")), (rx, true)))
                        }
                    }
                }
            }
        })
        .boxed())
    }

    fn reply_address(&self) -> Option<String> {
        Some("gateway-7".into())
    }
}

struct Setup {
    primary: LiveBus,
    log: InMemoryBroker,
    sink: LoggedTokenSink,
    source: FallbackTokenSource,
}

fn setup() -> Setup {
    let primary = LiveBus::new();
    let log = InMemoryBroker::new();
    Setup {
        sink: LoggedTokenSink::new(Arc::new(primary.clone()), Arc::new(log.clone())),
        source: FallbackTokenSource::new(Arc::new(primary.clone()), Arc::new(log.clone())),
        primary,
        log,
    }
}

fn key() -> StreamKey {
    StreamKey::new("s", "m")
}

/// Envelopes `from..to` of `attempt` (seqs relative to the attempt's base); `End` at `end`.
fn envs(attempt: u32, from: u64, to: u64, end: Option<u64>) -> Vec<TokenEnvelope> {
    let base = TokenEnvelope::seq_base(attempt);
    let mut out: Vec<_> = (from..to)
        .map(|n| {
            TokenEnvelope::new(
                key(),
                attempt,
                base + n,
                StreamEvent::token(format!("{n} ")),
            )
        })
        .collect();
    if let Some(n) = end {
        out.push(TokenEnvelope::new(
            key(),
            attempt,
            base + n,
            StreamEvent::End {
                finish_reason: FinishReason::Stop,
                usage: None,
            },
        ));
    }
    out
}

async fn collect(stream: EnvelopeStream) -> Vec<u64> {
    tokio::time::timeout(WAIT, stream.map(|r| r.expect("envelope").seq).collect())
        .await
        .expect("the subscription did not end")
}

async fn publish(sink: &LoggedTokenSink, batch: &[TokenEnvelope]) {
    sink.publish(&Destination::default(), batch)
        .await
        .expect("publish");
}

#[tokio::test]
async fn a_live_stream_comes_whole_from_the_primary() {
    let s = setup();
    let sub = s.source.subscribe(&key(), None).await.expect("subscribe");
    publish(&s.sink, &envs(1, 0, 5, None)).await;
    publish(&s.sink, &envs(1, 5, 10, Some(10))).await;
    assert_eq!(collect(sub).await, (0..=10).collect::<Vec<_>>());
    assert_eq!(s.primary.seen(), (0..=10).collect::<Vec<_>>());
    assert_eq!(s.source.reply_address().as_deref(), Some("gateway-7"));
}

#[tokio::test]
async fn a_resume_reads_the_log_then_goes_live_exactly() {
    let s = setup();
    // The first part went out before this gateway subscribed: only the log has it.
    publish(&s.sink, &envs(1, 0, 40, None)).await;
    let sub = s
        .source
        .subscribe(&key(), Some(9))
        .await
        .expect("subscribe");
    let publisher = tokio::spawn(async move {
        for n in (40..400).step_by(7) {
            publish(&s.sink, &envs(1, n, (n + 7).min(400), None)).await;
            tokio::task::yield_now().await;
        }
        publish(&s.sink, &envs(1, 400, 400, Some(400))).await;
        s
    });
    assert_eq!(collect(sub).await, (10..=400).collect::<Vec<_>>());
    let s = publisher.await.expect("publisher");
    // After the end: from the start the whole stream, at the End the End again.
    let all = s.source.subscribe(&key(), None).await.expect("again");
    assert_eq!(collect(all).await, (0..=400).collect::<Vec<_>>());
    let end = s.source.subscribe(&key(), Some(400)).await.expect("end");
    assert_eq!(collect(end).await, vec![400]);
}

#[tokio::test]
async fn a_primary_failure_mid_stream_resumes_from_the_log() {
    let s = setup();
    let mut sub = s.source.subscribe(&key(), None).await.expect("subscribe");
    publish(&s.sink, &envs(1, 0, 5, None)).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(sub.next().await.expect("item").expect("envelope").seq);
    }
    s.primary.cut();
    publish(&s.sink, &envs(1, 5, 9, Some(9))).await;
    got.extend(collect(sub).await);
    assert_eq!(got, (0..=9).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_new_attempt_is_a_valid_hand_over_and_stale_envelopes_are_dropped() {
    let s = setup();
    publish(&s.sink, &envs(1, 0, 4, None)).await;
    let sub = s
        .source
        .subscribe(&key(), Some(1))
        .await
        .expect("subscribe");
    let base = TokenEnvelope::seq_base(2);
    publish(&s.sink, &envs(2, 0, 3, None)).await;
    // A worker that lost the request publishes late: dropped, it is superseded.
    publish(&s.sink, &envs(1, 4, 5, None)).await;
    publish(&s.sink, &envs(2, 3, 3, Some(3))).await;
    let got = collect(sub).await;
    assert_eq!(got, vec![2, 3, base, base + 1, base + 2, base + 3]);
}

#[tokio::test]
async fn a_log_failure_fails_the_publish_before_the_primary_gets_anything() {
    let log = LiveBus::new();
    log.fail.store(true, Ordering::SeqCst);
    let primary = LiveBus::new();
    let sink = LoggedTokenSink::new(Arc::new(primary.clone()), Arc::new(log));
    let err = sink
        .publish(&Destination::default(), &envs(1, 0, 3, None))
        .await;
    assert!(err.is_err(), "the worker must learn of it and requeue");
    assert!(
        primary.seen().is_empty(),
        "the primary got what the log lacks"
    );
    // And the primary's failure fails the publish too (the log has the batch).
    let s = setup();
    s.primary.fail.store(true, Ordering::SeqCst);
    assert!(s
        .sink
        .publish(&Destination::default(), &envs(1, 0, 3, None))
        .await
        .is_err());
    assert_eq!(
        s.log.status(&key()).await.expect("status"),
        StreamStatus::Open
    );
}

#[tokio::test]
async fn a_log_without_the_history_fails_the_resume() {
    let s = setup();
    // The log dropped what follows seq 0 (a ring of one holding the third envelope): the
    // resume fails instead of skipping it.
    let log = InMemoryBroker::with_config(InMemoryConfig {
        replay_capacity: 1,
        ..InMemoryConfig::default()
    });
    log.publish(&Destination::default(), &envs(1, 0, 3, None))
        .await
        .expect("publish");
    let source = FallbackTokenSource::new(Arc::new(s.primary.clone()), Arc::new(log));
    let err = source.subscribe(&key(), Some(0)).await.err();
    assert!(
        matches!(err, Some(Error::HistoryLost { .. })),
        "expected HistoryLost, got {err:?}"
    );
}

#[tokio::test]
async fn status_is_the_logs_or_the_primarys_where_the_log_keeps_none() {
    let s = setup();
    assert_eq!(
        s.source.status(&key()).await.expect("status"),
        StreamStatus::NotFound
    );
    publish(&s.sink, &envs(1, 0, 2, Some(2))).await;
    assert_eq!(
        s.source.status(&key()).await.expect("status"),
        StreamStatus::Ended {
            finish_reason: FinishReason::Stop
        }
    );
    let untracked = FallbackTokenSource::new(Arc::new(s.log.clone()), Arc::new(s.primary.clone()));
    assert!(matches!(
        untracked.status(&key()).await.expect("status"),
        StreamStatus::Ended { .. }
    ));
}

/// A log that wants its own destination and confirms its first call last.
#[derive(Debug, Default)]
struct SlowFirstLog {
    calls: Mutex<Vec<(Destination, u64)>>,
}

#[async_trait]
impl TokenSink for SlowFirstLog {
    fn destination(&self, request: &ChatRequest) -> Destination {
        Destination(format!("log:{}", request.key.session_id).into())
    }
    async fn publish(&self, destination: &Destination, batch: &[TokenEnvelope]) -> Result<()> {
        let first = {
            let mut calls = self.calls.lock().expect("calls");
            calls.push((destination.clone(), batch[0].seq));
            calls.len() == 1
        };
        if first {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

#[tokio::test]
async fn overlapping_publishes_reach_the_primary_in_call_order() {
    let primary = LiveBus::new();
    let log = Arc::new(SlowFirstLog::default());
    let sink = LoggedTokenSink::new(Arc::new(primary.clone()), log.clone());
    let request = ChatRequest::new(key(), "hi");
    let dest = sink.destination(&request);
    let (one, two) = (envs(1, 0, 2, None), envs(1, 2, 4, None));
    let (a, b) = futures::join!(sink.publish(&dest, &one), sink.publish(&dest, &two));
    a.expect("first");
    b.expect("second");
    assert_eq!(
        primary.seen(),
        vec![0, 1, 2, 3],
        "the second overtook the first"
    );
    let calls = log.calls.lock().expect("calls").clone();
    assert_eq!(
        calls,
        vec![
            (Destination("log:s".into()), 0),
            (Destination("log:s".into()), 2)
        ],
        "the log gets its own destination"
    );
}

#[tokio::test]
async fn a_worker_and_two_gateways_resume_across_instances() {
    let requests = InMemoryBroker::new();
    let s = setup();
    let worker = Worker::builder(
        Arc::new(requests.message_source()),
        Arc::new(s.sink),
        Arc::new(
            ScriptedBackend::default()
                .with_repeat(10)
                .with_delay(Duration::from_millis(2)),
        ),
    )
    .build()
    .spawn();
    let one = Gateway::builder(Arc::new(requests.clone()), Arc::new(s.source.clone())).build();
    let two = Gateway::builder(Arc::new(requests.clone()), Arc::new(s.source.clone())).build();
    let mut first = one
        .submit(ChatRequest::new(key(), "hello"))
        .await
        .expect("submit");
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match tokio::time::timeout(WAIT, first.next()).await {
            Ok(Some(ClientEvent::Envelope(env))) => seen.push(env.seq),
            other => panic!("the first part did not come: {other:?}"),
        }
    }
    drop(first);
    let rest = two
        .subscribe(&key(), seen.last().copied())
        .await
        .expect("resume");
    let events: Vec<ClientEvent> = tokio::time::timeout(WAIT, rest.collect())
        .await
        .expect("the rest");
    for ev in &events {
        match ev {
            ClientEvent::Envelope(env) => seen.push(env.seq),
            other => panic!("unexpected {other:?}"),
        }
    }
    let n = seen.len() as u64;
    assert_eq!(seen, (0..n).collect::<Vec<_>>(), "gap or duplicate");
    assert!(matches!(
        events.last(),
        Some(ClientEvent::Envelope(env)) if env.event.is_end()
    ));
    worker.shutdown().await;
}
