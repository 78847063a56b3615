//! Group commit: envelopes of any streams bound for one destination go out together.

use std::collections::VecDeque;

use foldhash::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, Notify};

use crate::{Destination, DynTokenSink, Error, Result, TokenEnvelope};

/// Tracks the envelopes of one request until the broker accepted them all.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    pending: AtomicUsize,
    failed: AtomicBool,
    error: Mutex<Option<String>>,
    notify: Notify,
}

impl Tracker {
    fn add(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    fn done(&self, result: &std::result::Result<(), String>) {
        if let Err(e) = result {
            self.failed.store(true, Ordering::Release);
            let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| e.clone());
        }
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.notify.notify_one();
        }
    }

    /// True once any publish of this request failed.
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn error(&self) -> Error {
        let msg = self
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        Error::unavailable("token sink", msg)
    }

    /// Waits until every envelope handed to the batcher was published.
    pub(crate) async fn settled(&self) -> Result<()> {
        loop {
            let notified = self.notify.notified();
            if self.pending.load(Ordering::Acquire) == 0 {
                return if self.failed() {
                    Err(self.error())
                } else {
                    Ok(())
                };
            }
            notified.await;
        }
    }
}

struct Item {
    dest: Destination,
    env: TokenEnvelope,
    tracker: Arc<Tracker>,
}

/// Publish counters shared with the worker's stats.
#[derive(Debug, Default)]
pub(crate) struct BatchCounters {
    pub(crate) publishes: AtomicU64,
    pub(crate) envelopes: AtomicU64,
    /// Time of each publish until the broker accepted it.
    pub(crate) latency: super::metrics::PublishLatency,
}

/// Handle to the batcher task.
#[derive(Debug, Clone)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<Item>,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Item")
            .field("seq", &self.env.seq)
            .finish_non_exhaustive()
    }
}

/// Batcher settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchConfig {
    /// Publishes in flight per destination.
    pub(crate) max_in_flight: usize,
    /// Envelopes per publish at most.
    pub(crate) max_batch: usize,
    /// Envelopes waiting at most before producers wait (backpressure).
    pub(crate) capacity: usize,
    /// Least time between two launches per destination (leading edge).
    pub(crate) linger: std::time::Duration,
}

impl Batcher {
    /// Starts the batcher task; it ends when every handle is dropped and all is published.
    pub(crate) fn spawn(
        sink: Arc<DynTokenSink>,
        config: BatchConfig,
        counters: Arc<BatchCounters>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let task = tokio::spawn(run(sink, config, counters, rx));
        (Self { tx }, task)
    }

    /// Queues an envelope for publishing; waits only when the batcher is full.
    pub(crate) async fn send(
        &self,
        dest: &Destination,
        env: TokenEnvelope,
        tracker: &Arc<Tracker>,
    ) -> Result<()> {
        tracker.add();
        let item = Item {
            dest: dest.clone(),
            env,
            tracker: tracker.clone(),
        };
        if let Err(e) = self.tx.send(item).await {
            e.0.tracker.done(&Err("worker shutting down".into()));
            return Err(Error::Closed);
        }
        Ok(())
    }
}

#[derive(Default)]
struct DestState {
    queue: VecDeque<Item>,
    in_flight: usize,
    last_launch: Option<tokio::time::Instant>,
}

type Done = (
    Destination,
    std::result::Result<(), String>,
    Vec<Arc<Tracker>>,
);

async fn run(
    sink: Arc<DynTokenSink>,
    config: BatchConfig,
    counters: Arc<BatchCounters>,
    mut rx: mpsc::Receiver<Item>,
) {
    let mut dests: HashMap<Destination, DestState> = HashMap::default();
    let mut in_flight: FuturesUnordered<BoxFuture<'static, Done>> = FuturesUnordered::new();
    let mut queued = 0usize;
    let mut open = true;
    loop {
        // Launch what may go: at low load this is every envelope as soon as it arrives;
        // at high load envelopes pile up while publishes are in flight and leave together.
        let now = tokio::time::Instant::now();
        let mut wake: Option<tokio::time::Instant> = None;
        for (dest, st) in dests.iter_mut() {
            while st.in_flight < config.max_in_flight && !st.queue.is_empty() {
                if st.queue.len() < config.max_batch && !config.linger.is_zero() {
                    if let Some(t) = st.last_launch {
                        let due = t + config.linger;
                        if due > now {
                            wake = Some(wake.map_or(due, |w| w.min(due)));
                            break;
                        }
                    }
                }
                st.last_launch = Some(now);
                let n = st.queue.len().min(config.max_batch);
                queued -= n;
                st.in_flight += 1;
                let mut batch = Vec::with_capacity(n);
                let mut trackers = Vec::with_capacity(n);
                for it in st.queue.drain(..n) {
                    batch.push(it.env);
                    trackers.push(it.tracker);
                }
                counters.publishes.fetch_add(1, Ordering::Relaxed);
                counters.envelopes.fetch_add(n as u64, Ordering::Relaxed);
                let sink = sink.clone();
                let dest = dest.clone();
                let counters = counters.clone();
                in_flight.push(
                    async move {
                        let started = std::time::Instant::now();
                        let r = sink
                            .publish_owned(&dest, batch)
                            .await
                            .map_err(|e| e.to_string());
                        counters.latency.0.observe_duration(started.elapsed());
                        (dest, r, trackers)
                    }
                    .boxed(),
                );
            }
        }
        let linger = config.linger;
        dests.retain(|_, st| {
            st.in_flight > 0
                || !st.queue.is_empty()
                || st
                    .last_launch
                    .is_some_and(|t| now.duration_since(t) < linger)
        });
        if !open && in_flight.is_empty() && queued == 0 {
            return;
        }
        tokio::select! {
            item = rx.recv(), if open && queued < config.capacity => match item {
                Some(item) => {
                    enqueue(&mut dests, &mut queued, item);
                    while queued < config.capacity {
                        match rx.try_recv() {
                            Ok(item) => enqueue(&mut dests, &mut queued, item),
                            Err(_) => break,
                        }
                    }
                }
                None => open = false,
            },
            _ = tokio::time::sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
            Some((dest, result, trackers)) = in_flight.next(), if !in_flight.is_empty() => {
                if let Err(e) = &result {
                    tracing::warn!(destination = %dest.0, error = %e, "publish failed");
                }
                if let Some(st) = dests.get_mut(&dest) {
                    st.in_flight -= 1;
                }
                for t in trackers {
                    t.done(&result);
                }
            }
        }
    }
}

fn enqueue(dests: &mut HashMap<Destination, DestState>, queued: &mut usize, item: Item) {
    *queued += 1;
    dests
        .entry(item.dest.clone())
        .or_default()
        .queue
        .push_back(item);
}
