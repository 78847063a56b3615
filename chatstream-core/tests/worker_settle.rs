//! A worker's metrics at the moment a request is settled: whatever the outcome (answered,
//! failed, rejected as malformed, cancelled, requeued, lost), the request has left
//! `chatstream_worker_requests_in_flight` by the time its outcome is counted, so no scrape
//! shows it both in flight and settled. Each request's acker renders the metrics when the
//! worker settles it with the broker (ack, nack, dead letter) or, for a request the broker
//! took back, when the worker lets go of it: the outcome is counted by then.
#![cfg(feature = "testkit")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chatstream_core::testkit::backends::EndlessBackend;
use chatstream_core::worker::WorkerMetrics;
use chatstream_core::{
    Acker, CancelChannel, ChatRequest, Conversation, Delivery, Error, InMemoryBroker, LlmBackend,
    LlmStream, MessageSource, RequestSink, Result, ScriptedBackend, StreamEvent, StreamKey,
    TokenSource, Worker, WorkerConfig, WorkerHandle,
};
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(30);

/// What the metrics said when a request was settled.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    /// `ack`, `nack(true)`, `dead_letter` or `dropped`.
    how: &'static str,
    in_flight: u64,
    /// `outcome` → `chatstream_worker_requests_total` summed over models.
    outcomes: Vec<(String, u64)>,
    dead_letters: u64,
}

impl Seen {
    fn outcome(&self, outcome: &str) -> u64 {
        self.outcomes
            .iter()
            .filter(|(o, _)| o == outcome)
            .map(|(_, n)| n)
            .sum()
    }
}

fn read(metrics: &WorkerMetrics, how: &'static str) -> Seen {
    let text = metrics.render_string();
    let value = |line: &str| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap();
    let mut seen = Seen {
        how,
        in_flight: 0,
        outcomes: Vec::new(),
        dead_letters: 0,
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if line.starts_with("chatstream_worker_requests_in_flight ") {
            seen.in_flight = value(line);
        } else if line.starts_with("chatstream_worker_dead_letters_total ") {
            seen.dead_letters = value(line);
        } else if line.starts_with("chatstream_worker_requests_total{") {
            let outcome = line
                .split("outcome=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap();
            seen.outcomes.push((outcome.to_owned(), value(line)));
        }
    }
    seen
}

/// Where the acker hooks report.
#[derive(Debug, Default)]
struct Watch {
    metrics: OnceLock<WorkerMetrics>,
    seen: Mutex<Vec<Seen>>,
    notify: tokio::sync::Notify,
}

impl Watch {
    fn record(&self, how: &'static str) {
        let metrics = self.metrics.get().expect("the worker runs");
        self.seen.lock().unwrap().push(read(metrics, how));
        self.notify.notify_waiters();
    }

    /// Waits for the first settlement.
    async fn first(&self) -> Seen {
        tokio::time::timeout(WAIT, async {
            loop {
                let notified = self.notify.notified();
                if let Some(s) = self.seen.lock().unwrap().first() {
                    return s.clone();
                }
                notified.await;
            }
        })
        .await
        .expect("the request was not settled")
    }
}

/// The in-memory broker's source, with each acker wrapped to record the metrics.
#[derive(Debug)]
struct Watched {
    inner: chatstream_core::memory::InMemorySource,
    watch: Arc<Watch>,
}

#[async_trait]
impl MessageSource for Watched {
    async fn recv(&self) -> Result<Option<Delivery>> {
        let Some(d) = self.inner.recv().await? else {
            return Ok(None);
        };
        // A request whose message id says so is one the broker took back at once.
        let lost = d
            .request
            .as_ref()
            .is_ok_and(|r| &*r.key.message_id == "lost");
        Ok(Some(Delivery {
            acker: Box::new(WatchingAcker {
                inner: Some(d.acker),
                watch: self.watch.clone(),
                lost,
            }),
            ..d
        }))
    }
}

#[derive(Debug)]
struct WatchingAcker {
    inner: Option<Box<dyn Acker>>,
    watch: Arc<Watch>,
    lost: bool,
}

impl WatchingAcker {
    fn take(&mut self, how: &'static str) -> Box<dyn Acker> {
        self.watch.record(how);
        self.inner.take().unwrap()
    }
}

#[async_trait]
impl Acker for WatchingAcker {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.take("ack").ack().await
    }
    async fn nack(mut self: Box<Self>, requeue: bool) -> Result<()> {
        self.take(if requeue { "nack(true)" } else { "nack(false)" })
            .nack(requeue)
            .await
    }
    async fn dead_letter(mut self: Box<Self>, reason: &str) -> Result<()> {
        self.take("dead_letter").dead_letter(reason).await
    }
    fn is_lost(&self) -> bool {
        self.lost
    }
}

impl Drop for WatchingAcker {
    fn drop(&mut self) {
        // Let go of without a word to the broker: a lost request.
        if self.inner.is_some() {
            self.watch.record("dropped");
        }
    }
}

#[derive(Debug)]
struct Failing;

#[async_trait]
impl LlmBackend for Failing {
    async fn stream(&self, _: &ChatRequest, _: &Conversation) -> Result<LlmStream> {
        Err(Error::invalid("model", "refused"))
    }
}

fn start(
    broker: &InMemoryBroker,
    backend: Arc<dyn LlmBackend>,
    config: WorkerConfig,
) -> (WorkerHandle, Arc<Watch>) {
    let watch = Arc::new(Watch::default());
    let source = Watched {
        inner: broker.message_source(),
        watch: watch.clone(),
    };
    let handle = Worker::builder(Arc::new(source), Arc::new(broker.clone()), backend)
        .cancels(Arc::new(broker.clone()))
        .config(config)
        .build()
        .spawn();
    watch
        .metrics
        .set(handle.metrics())
        .expect("set once, before any request");
    (handle, watch)
}

/// Waits until `key`'s stream carries a token.
async fn first_token(broker: &InMemoryBroker, key: &StreamKey) {
    let mut tokens = broker.subscribe(key, None).await.unwrap();
    tokio::time::timeout(WAIT, async {
        while let Some(env) = tokens.next().await {
            if matches!(env.unwrap().event, StreamEvent::Token { .. }) {
                return;
            }
        }
        panic!("the stream ended without a token");
    })
    .await
    .expect("no token");
}

fn assert_settled(seen: &Seen, how: &str, outcome: &str) {
    assert_eq!(seen.how, how, "{seen:?}");
    assert_eq!(seen.outcome(outcome), 1, "{seen:?}");
    assert_eq!(
        seen.in_flight, 0,
        "counted {outcome} while still in flight: {seen:?}"
    );
}

#[tokio::test]
async fn an_answered_request_has_left_in_flight_when_counted_completed() {
    let broker = InMemoryBroker::new();
    let (w, watch) = start(
        &broker,
        Arc::new(ScriptedBackend::default()),
        WorkerConfig::default(),
    );
    broker
        .submit(&ChatRequest::new(StreamKey::new("s", "m"), "x"))
        .await
        .unwrap();
    assert_settled(&watch.first().await, "ack", "completed");
    w.shutdown().await;
}

#[tokio::test]
async fn a_failed_request_has_left_in_flight_when_counted_failed_and_dead_lettered() {
    let broker = InMemoryBroker::new();
    let (w, watch) = start(&broker, Arc::new(Failing), WorkerConfig::default());
    broker
        .submit(&ChatRequest::new(StreamKey::new("s", "m"), "x"))
        .await
        .unwrap();
    let seen = watch.first().await;
    assert_settled(&seen, "dead_letter", "failed");
    assert_eq!(seen.dead_letters, 1, "{seen:?}");
    w.shutdown().await;
}

#[tokio::test]
async fn a_malformed_request_has_left_in_flight_when_counted_rejected() {
    let broker = InMemoryBroker::new();
    let (w, watch) = start(
        &broker,
        Arc::new(ScriptedBackend::default()),
        WorkerConfig::default(),
    );
    broker.submit_raw("this is not JSON");
    let seen = watch.first().await;
    assert_settled(&seen, "dead_letter", "rejected");
    assert_eq!(seen.dead_letters, 1, "{seen:?}");
    w.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_request_has_left_in_flight_when_counted_cancelled() {
    let broker = InMemoryBroker::new();
    let (w, watch) = start(
        &broker,
        Arc::new(EndlessBackend::new(Duration::from_millis(2))),
        WorkerConfig::default(),
    );
    let key = StreamKey::new("s", "m");
    broker
        .submit(&ChatRequest::new(key.clone(), "x"))
        .await
        .unwrap();
    first_token(&broker, &key).await;
    broker.cancel(&key).await.unwrap();
    assert_settled(&watch.first().await, "ack", "cancelled");
    w.shutdown().await;
}

#[tokio::test]
async fn a_request_given_back_at_shutdown_has_left_in_flight_when_counted_requeued() {
    let broker = InMemoryBroker::new();
    let (w, watch) = start(
        &broker,
        Arc::new(EndlessBackend::new(Duration::from_millis(2))),
        WorkerConfig {
            shutdown_grace: Duration::ZERO,
            ..WorkerConfig::default()
        },
    );
    let key = StreamKey::new("s", "m");
    broker
        .submit(&ChatRequest::new(key.clone(), "x"))
        .await
        .unwrap();
    first_token(&broker, &key).await;
    tokio::time::timeout(WAIT, w.shutdown())
        .await
        .expect("shutdown hung");
    assert_settled(&watch.first().await, "nack(true)", "requeued");
}

#[tokio::test]
async fn a_request_the_broker_took_back_has_left_in_flight_when_counted_lost() {
    let broker = InMemoryBroker::new();
    let (w, watch) = start(
        &broker,
        Arc::new(ScriptedBackend::default()),
        WorkerConfig::default(),
    );
    broker
        .submit(&ChatRequest::new(StreamKey::new("s", "lost"), "x"))
        .await
        .unwrap();
    assert_settled(&watch.first().await, "dropped", "lost");
    w.shutdown().await;
}
