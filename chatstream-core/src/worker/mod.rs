//! The worker runtime: takes requests, streams answers onto the token bus, acks.
//!
//! Per request: decode (malformed → dead-letter with the reason), look up the conversation,
//! stream from the [`LlmBackend`](crate::LlmBackend), coalesce deltas, hand envelopes to the
//! batcher (group commit across streams per destination), save the exchange to the
//! [`ConversationStore`](crate::ConversationStore), publish `End`, wait until the broker
//! accepted every envelope, and only then ack.

mod batch;
mod cancel;
mod coalesce;
mod metrics;
mod request;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

pub use coalesce::CoalesceConfig;
pub use metrics::{WorkerMetrics, MAX_MODELS};

use crate::{
    DynCancelChannel, DynConversationStore, DynLlmBackend, DynMessageSource, DynSessionFeed,
    DynTokenSink, InMemoryConversationStore,
};
use batch::{BatchConfig, BatchCounters, Batcher};
use cancel::CancelRegistry;

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Requests generated at once (and so taken from the broker at once).
    pub concurrency: usize,
    /// Per-stream coalescing.
    pub coalesce: CoalesceConfig,
    /// Publishes in flight per destination; envelopes arriving meanwhile wait and leave
    /// together in the next publish. Adapters must send overlapping publishes to the broker
    /// in call order.
    pub max_in_flight: usize,
    /// Envelopes per publish at most.
    pub max_batch: usize,
    /// Least time between two publish launches to one destination while envelopes keep
    /// coming (leading edge: after a quiet `publish_linger` the next envelope leaves at
    /// once). Caps publishes at one per linger per destination under load (2 ms: at most
    /// 500 broker messages per second per gateway, whatever the token rate). Zero: off.
    pub publish_linger: Duration,
    /// Envelopes queued for publishing before generation waits (backpressure).
    pub batch_capacity: usize,
    /// Publish `Status` envelopes (started, responding). Seed 004 shows them; other
    /// dialects skip them.
    pub status_events: bool,
    /// How long in-flight requests may run on after shutdown is asked for; what is still
    /// running then is given back to the broker (requeued).
    pub shutdown_grace: Duration,
    /// Longest a single generation may take; past it the stream ends with an error.
    pub generation_timeout: Duration,
    /// How long saving an answer to the conversation store is retried while the store is
    /// unreachable (a database restarting). Failing that, the stream gets an `Error`
    /// saying the message was not saved, then its `End`.
    pub save_retry: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            coalesce: CoalesceConfig::default(),
            max_in_flight: 2,
            max_batch: 1024,
            publish_linger: Duration::from_millis(2),
            batch_capacity: 16_384,
            status_events: true,
            shutdown_grace: Duration::from_secs(30),
            generation_timeout: Duration::from_secs(600),
            save_retry: Duration::from_secs(10),
        }
    }
}

/// Counters of a running worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Deliveries taken.
    pub received: u64,
    /// Requests answered to the end and acked.
    pub completed: u64,
    /// Requests that ended with an error event.
    pub failed: u64,
    /// Requests dead-lettered (malformed, invalid, or failed).
    pub dead_lettered: u64,
    /// Requests stopped by a cancel.
    pub cancelled: u64,
    /// Requests given back to the broker (shutdown, publish failure).
    pub requeued: u64,
    /// Requests the broker took back while they were being answered (the worker's
    /// connection dropped; see [`Acker::is_lost`](crate::Acker::is_lost)): generation
    /// stopped, the broker redelivers them.
    pub lost: u64,
    /// Publishes made (broker messages for batching sinks).
    pub publishes: u64,
    /// Envelopes published.
    pub envelopes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    received: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
    cancelled: AtomicU64,
    requeued: AtomicU64,
    lost: AtomicU64,
    batch: Arc<BatchCounters>,
    /// Requests being answered now.
    in_flight: AtomicU64,
    models: metrics::Models,
    queue_wait: metrics::QueueWait,
}

impl Counters {
    fn snapshot(&self) -> WorkerStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerStats {
            received: l(&self.received),
            completed: l(&self.completed),
            failed: l(&self.failed),
            dead_lettered: l(&self.dead_lettered),
            cancelled: l(&self.cancelled),
            requeued: l(&self.requeued),
            lost: l(&self.lost),
            publishes: l(&self.batch.publishes),
            envelopes: l(&self.batch.envelopes),
        }
    }
}

/// Takes requests from a [`MessageSource`](crate::MessageSource) and answers them.
#[derive(Debug)]
pub struct Worker {
    source: Arc<DynMessageSource>,
    sink: Arc<DynTokenSink>,
    backend: Arc<DynLlmBackend>,
    store: Arc<DynConversationStore>,
    cancels: Option<Arc<DynCancelChannel>>,
    feed: Option<Arc<DynSessionFeed>>,
    config: WorkerConfig,
}

/// Builds a [`Worker`].
#[derive(Debug)]
pub struct WorkerBuilder {
    worker: Worker,
}

impl Worker {
    /// A worker reading `source`, publishing to `sink`, answering with `backend`.
    /// Conversations go to an in-memory store unless [`WorkerBuilder::store`] sets one.
    pub fn builder(
        source: Arc<DynMessageSource>,
        sink: Arc<DynTokenSink>,
        backend: Arc<DynLlmBackend>,
    ) -> WorkerBuilder {
        WorkerBuilder {
            worker: Worker {
                source,
                sink,
                backend,
                store: Arc::new(InMemoryConversationStore::default()),
                cancels: None,
                feed: None,
                config: WorkerConfig::default(),
            },
        }
    }

    /// Starts the worker on the current runtime.
    pub fn spawn(self) -> WorkerHandle {
        let (stop_tx, stop_rx) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(self.run(stop_rx, counters.clone()));
        WorkerHandle {
            stop: stop_tx,
            task,
            counters,
        }
    }

    async fn run(self, mut stop: watch::Receiver<bool>, counters: Arc<Counters>) {
        let Worker {
            source,
            sink,
            backend,
            store,
            cancels,
            feed,
            config,
        } = self;
        let (batcher, batch_task) = Batcher::spawn(
            sink.clone(),
            BatchConfig {
                max_in_flight: config.max_in_flight.max(1),
                max_batch: config.max_batch.max(1),
                linger: config.publish_linger,
                capacity: config.batch_capacity,
            },
            counters.batch.clone(),
        );
        let registry = CancelRegistry::start(cancels).await;
        let ctx = Arc::new(request::Ctx {
            sink,
            backend,
            store,
            batcher,
            registry,
            feed,
            config: config.clone(),
            counters: counters.clone(),
        });
        let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stop.wait_for(|s| *s) => break,
            };
            let delivery = tokio::select! {
                d = source.recv() => d,
                _ = stop.wait_for(|s| *s) => break,
            };
            match delivery {
                Ok(Some(delivery)) => {
                    counters.received.fetch_add(1, Ordering::Relaxed);
                    let ctx = ctx.clone();
                    tasks.spawn(async move {
                        request::handle(&ctx, delivery).await;
                        drop(permit);
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "request source failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            while tasks.try_join_next().is_some() {}
        }
        // Shutdown: let in-flight requests finish within the grace period, then requeue.
        if tokio::time::timeout(config.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            // Requests past `settle` (in-flight gauge down) wait on the broker's ack or nack.
            tracing::warn!(
                tasks = tasks.len(),
                answering = counters.in_flight.load(Ordering::Relaxed),
                grace = ?config.shutdown_grace,
                "shutdown grace over with requests still running; giving them back"
            );
            ctx.registry.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        drop(ctx);
        let _ = batch_task.await;
    }
}

impl WorkerBuilder {
    /// Sets the conversation store.
    pub fn store(mut self, store: Arc<DynConversationStore>) -> Self {
        self.worker.store = store;
        self
    }
    /// Sets the cancel channel the worker listens to.
    pub fn cancels(mut self, cancels: Arc<DynCancelChannel>) -> Self {
        self.worker.cancels = Some(cancels);
        self
    }
    /// Announces every request the worker starts answering on `feed`, so that gateways in
    /// other processes whose clients follow the request's session (seed 004's `/ws`) learn
    /// of its stream. A failed announcement is logged; the answer goes on.
    pub fn session_feed(mut self, feed: Arc<DynSessionFeed>) -> Self {
        self.worker.feed = Some(feed);
        self
    }
    /// Sets the configuration.
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.worker.config = config;
        self
    }
    /// The worker.
    pub fn build(self) -> Worker {
        self.worker
    }
}

/// A running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    counters: Arc<Counters>,
}

impl WorkerHandle {
    /// Counters so far.
    pub fn stats(&self) -> WorkerStats {
        self.counters.snapshot()
    }

    /// The worker's metrics (outcomes and latencies by model), to serve in Prometheus'
    /// text format; they stay readable after the worker stopped.
    pub fn metrics(&self) -> WorkerMetrics {
        WorkerMetrics {
            counters: self.counters.clone(),
        }
    }

    /// Stops taking requests, lets in-flight ones finish (requeueing those still running
    /// after the grace period), and waits until everything is published.
    pub async fn shutdown(self) -> WorkerStats {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.counters.snapshot()
    }

    /// Stops the worker at once without settling anything, as a crash would: the broker
    /// redelivers its in-flight requests (tests use it to prove nothing is lost).
    pub fn abort(self) {
        self.task.abort();
    }

    /// Waits until the source closes and all work is done.
    pub async fn join(self) -> WorkerStats {
        let _ = self.task.await;
        self.counters.snapshot()
    }
}

/// Resolves on Ctrl-C or SIGTERM: pass to a graceful shutdown.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
