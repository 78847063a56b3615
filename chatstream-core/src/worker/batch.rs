//! Group commit: envelopes of any streams bound for one destination go out together.

use std::collections::VecDeque;

use foldhash::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::Notify;

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

/// Handle to the batcher task. Producers queue envelopes straight into the task's
/// per-destination queues, under one lock, and wake the task only when it may be idle (the
/// queues were empty): no channel in between, and each envelope is moved once on its way.
#[derive(Debug)]
pub(crate) struct Batcher {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    queues: Mutex<Queues>,
    /// Wakes the task: something was queued into empty queues, or the handle was dropped.
    work: Notify,
    /// Wakes producers waiting for room.
    room: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Queues {
    dests: HashMap<Destination, DestState>,
    /// Envelopes queued, all destinations together.
    queued: usize,
    /// The handle was dropped: publish what is queued, then stop.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }
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
    /// Starts the batcher task; it ends when the handle is dropped and all is published.
    pub(crate) fn spawn(
        sink: Arc<DynTokenSink>,
        config: BatchConfig,
        counters: Arc<BatchCounters>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            work: Notify::new(),
            room: Notify::new(),
            capacity: config.capacity.max(1),
        });
        let task = tokio::spawn(run(sink, config, counters, shared.clone()));
        (Self { shared }, task)
    }

    /// Queues an envelope for publishing; waits only when the batcher is full.
    pub(crate) async fn send(
        &self,
        dest: &Destination,
        env: TokenEnvelope,
        tracker: &Arc<Tracker>,
    ) -> Result<()> {
        // A unit of the task's cooperative budget, as a channel send takes: a backend that
        // is always ready yields to the runtime every so often instead of filling the queues
        // (and, in process, its clients' queues) faster than the clients are run.
        tokio::task::consume_budget().await;
        tracker.add();
        let mut item = Item {
            env,
            tracker: tracker.clone(),
        };
        loop {
            // The waiter for room is made (and registered) only once the queues were found
            // full, then they are looked at once more before waiting.
            let room = self.shared.room.notified();
            tokio::pin!(room);
            let Some(full) = self.try_queue(dest, item) else {
                return Ok(());
            };
            room.as_mut().enable();
            let Some(full) = self.try_queue(dest, full) else {
                return Ok(());
            };
            item = full;
            room.await;
        }
    }

    /// Queues `item` for `dest`, or hands it back when the batcher is full. Wakes the task
    /// when the queues were empty: with envelopes already queued the task is awake, or looks
    /// again when its publish in flight returns.
    fn try_queue(&self, dest: &Destination, item: Item) -> Option<Item> {
        let mut q = self.shared.lock();
        if q.queued >= self.shared.capacity {
            return Some(item);
        }
        let idle = q.queued == 0;
        q.queued += 1;
        match q.dests.get_mut(dest) {
            Some(st) => st.queue.push_back(item),
            None => {
                let mut st = DestState::default();
                st.queue.push_back(item);
                q.dests.insert(dest.clone(), st);
            }
        }
        drop(q);
        if idle {
            self.shared.work.notify_one();
        }
        None
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_one();
    }
}

#[derive(Default)]
struct DestState {
    queue: VecDeque<Item>,
    in_flight: usize,
    last_launch: Option<tokio::time::Instant>,
}

impl std::fmt::Debug for DestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestState")
            .field("queued", &self.queue.len())
            .field("in_flight", &self.in_flight)
            .finish()
    }
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
    shared: Arc<Shared>,
) {
    let mut in_flight: FuturesUnordered<BoxFuture<'static, Done>> = FuturesUnordered::new();
    loop {
        // Launch what may go: at low load this is every envelope as soon as it arrives;
        // at high load envelopes pile up while publishes are in flight and leave together.
        let now = tokio::time::Instant::now();
        let mut wake: Option<tokio::time::Instant> = None;
        let (closed, queued) = {
            let mut q = shared.lock();
            let Queues {
                dests,
                queued,
                closed,
            } = &mut *q;
            let before = *queued;
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
                    *queued -= n;
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
            if *queued < before {
                shared.room.notify_waiters();
            }
            (*closed, *queued)
        };
        if closed && in_flight.is_empty() && queued == 0 {
            return;
        }
        tokio::select! {
            _ = shared.work.notified() => {}
            _ = tokio::time::sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
            Some((dest, result, trackers)) = in_flight.next(), if !in_flight.is_empty() => {
                if let Err(e) = &result {
                    tracing::warn!(destination = %dest.0, error = %e, "publish failed");
                }
                if let Some(st) = shared.lock().dests.get_mut(&dest) {
                    st.in_flight -= 1;
                }
                for t in trackers {
                    t.done(&result);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_trait::async_trait;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::{StreamEvent, StreamKey, TokenSink};

    /// Publishes only what the test lets through, one permit per publish, and keeps it.
    #[derive(Debug)]
    struct Gated {
        permits: Semaphore,
        published: Mutex<Vec<Vec<u64>>>,
    }

    #[async_trait]
    impl TokenSink for Gated {
        async fn publish(&self, _: &Destination, batch: &[TokenEnvelope]) -> Result<()> {
            self.permits
                .acquire()
                .await
                .map_err(|_| Error::Closed)?
                .forget();
            let seqs = batch.iter().map(|e| e.seq).collect();
            self.published
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(seqs);
            Ok(())
        }
    }

    fn env(seq: u64) -> TokenEnvelope {
        let key = StreamKey::new("s", "m");
        TokenEnvelope::new(key, 1, seq, StreamEvent::token("x"))
    }

    #[tokio::test]
    async fn a_full_batcher_makes_producers_wait_and_loses_nothing() {
        let sink = Arc::new(Gated {
            permits: Semaphore::new(0),
            published: Mutex::default(),
        });
        let config = BatchConfig {
            max_in_flight: 1,
            max_batch: 2,
            capacity: 2,
            linger: Duration::ZERO,
        };
        let (batcher, task) = Batcher::spawn(sink.clone(), config, Arc::default());
        let tracker = Arc::new(Tracker::default());
        let dest = Destination::default();
        // The first goes out at once (and waits at the gate); two more fill the queue.
        for seq in 0..3 {
            batcher.send(&dest, env(seq), &tracker).await.expect("send");
            tokio::task::yield_now().await;
        }
        // (A tracker of its own: the send given up on counts an envelope never queued.)
        let given_up = Arc::new(Tracker::default());
        let full = tokio::time::timeout(
            Duration::from_millis(200),
            batcher.send(&dest, env(3), &given_up),
        )
        .await;
        assert!(full.is_err(), "a send into a full batcher waits");
        let producer = {
            let tracker = tracker.clone();
            tokio::spawn(async move {
                for seq in 3..6 {
                    batcher.send(&dest, env(seq), &tracker).await.expect("send");
                }
                batcher
            })
        };
        sink.permits.add_permits(100);
        let limit = Duration::from_secs(30);
        let batcher = tokio::time::timeout(limit, producer)
            .await
            .expect("the producer gets room once publishes go out")
            .expect("producer");
        tokio::time::timeout(limit, tracker.settled())
            .await
            .expect("everything published")
            .expect("all published");
        drop(batcher);
        task.await.expect("batcher task");
        let published = sink.published.lock().unwrap_or_else(|p| p.into_inner());
        let seqs: Vec<u64> = published.iter().flatten().copied().collect();
        assert_eq!(
            seqs,
            vec![0, 1, 2, 3, 4, 5],
            "every envelope once, in order"
        );
        assert!(published.iter().all(|b| b.len() <= 2), "{published:?}");
    }
}
