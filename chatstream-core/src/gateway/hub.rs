//! A hub: one broker subscription of one stream, fanned out to the local clients.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::client::{ClientInit, ClientStream};
use super::Inner;
use crate::{EnvelopeReceiver, Error, Fault, StreamEvent, StreamKey, Subscription, TokenEnvelope};

#[derive(Debug, Clone)]
pub(crate) enum HubMsg {
    Env(Arc<TokenEnvelope>),
    Fault(Fault),
}

/// One client's queue: bounded by `client_buffer`, and allocated only while messages wait
/// in it (a tokio mpsc channel allocates a block of 32 slots per client up front; a
/// broadcast channel all `client_buffer` slots per stream).
#[derive(Debug, Default)]
pub(crate) struct ClientQueue {
    state: Mutex<QueueState>,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<HubMsg>,
    /// The queue was full: nothing more is queued until the client, having read what it
    /// holds, catches up from the hub's history ([`Hub::catch_up`]) or is cut off.
    lagged: bool,
    /// The client is gone.
    closed: bool,
    waker: Option<Waker>,
}

impl ClientQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `msg`; false when the client is gone or has just been cut off.
    fn push(&self, msg: HubMsg, bound: usize) -> bool {
        let (queued, waker) = {
            let mut q = self.lock();
            if q.closed || q.lagged {
                return false;
            }
            if q.items.len() >= bound {
                q.lagged = true;
                (false, q.waker.take())
            } else {
                q.items.push_back(msg);
                (true, q.waker.take())
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        queued
    }

    /// The next message, or the waker registered for it; `None` once a cut-off client has
    /// read what was queued.
    pub(crate) fn poll_recv(&self, cx: &mut std::task::Context<'_>) -> Poll<Option<HubMsg>> {
        let mut q = self.lock();
        if let Some(m) = q.items.pop_front() {
            return Poll::Ready(Some(m));
        }
        if q.lagged {
            return Poll::Ready(None);
        }
        if !q.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            q.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Whether the queue overflowed: the client fell a whole queue behind.
    pub(crate) fn lagged(&self) -> bool {
        self.lock().lagged
    }
}

/// The client's end of its queue; dropping it tells the hub the client is gone.
#[derive(Debug)]
pub(crate) struct ClientRx {
    pub(crate) queue: Arc<ClientQueue>,
}

impl Drop for ClientRx {
    fn drop(&mut self) {
        let mut q = self.queue.lock();
        q.closed = true;
        q.items.clear();
    }
}

#[derive(Debug, Default)]
struct HubState {
    history: VecDeque<Arc<TokenEnvelope>>,
    /// Highest seq dropped from `history`.
    trimmed_upto: Option<u64>,
    ended: bool,
    fault: Option<Fault>,
    clients: usize,
    ever_had_client: bool,
    /// Bumped on every join and leave, so a pending teardown knows it is stale.
    generation: u64,
    first_token_seen: bool,
    /// One bounded queue per client. Not a broadcast channel: that allocates all
    /// `client_buffer` slots up front, per stream, which made most of an idle stream's
    /// memory.
    clients_tx: Vec<Arc<ClientQueue>>,
}

impl HubState {
    /// Whether `history` still holds every envelope after `after_seq` it ever held.
    fn holds_all_after(&self, after_seq: Option<u64>) -> bool {
        self.trimmed_upto
            .is_none_or(|t| after_seq.is_some_and(|a| a >= t))
    }

    /// Queues `msg` for every client; a client whose queue is full is cut off.
    fn send_all(&mut self, msg: &HubMsg, bound: usize) {
        self.clients_tx.retain(|c| c.push(msg.clone(), bound));
    }
}

#[derive(Debug)]
pub(crate) struct Hub {
    key: StreamKey,
    /// Where the broker subscription started (`None`: from the stream's start).
    start_after: Option<u64>,
    /// Registered in the gateway's map (a private hub serves one resuming client).
    shared: bool,
    state: Mutex<HubState>,
    /// Envelopes a client may fall behind (its queue's bound).
    buffer: usize,
    /// Envelopes kept for clients that join late.
    history_cap: usize,
    /// The broker subscription, once made.
    subscription: Mutex<SubscriptionSlot>,
    /// For the time-to-first-token metric; weak, as the gateway holds its hubs.
    inner: Weak<Inner>,
    created: Instant,
    /// Set once the broker subscription is in place (or failed), so a submit never races
    /// ahead of it on brokers that keep no history. A flag and a `Notify` inside the hub,
    /// not a watch channel: that is a separate allocation of about 500 bytes per stream.
    ready: AtomicBool,
    /// Wakes the submits waiting for `ready`.
    ready_notify: Notify,
}

/// A hub's broker subscription, or what stops it while it is being made.
#[derive(Debug, Default)]
struct SubscriptionSlot {
    subscription: Option<Subscription>,
    /// The task making the subscription.
    setup: Option<AbortHandle>,
    /// The hub stopped: a subscription made after this is dropped at once.
    stopped: bool,
}

fn fault_of(e: &Error) -> Fault {
    match e {
        Error::HistoryLost { .. } | Error::Unsupported(_) => Fault::HistoryLost,
        Error::SlowConsumer(_) => Fault::Unavailable("the broker subscription fell behind".into()),
        other => Fault::Unavailable(other.to_string()),
    }
}

impl Hub {
    /// Creates the hub and starts its broker subscription.
    pub(crate) fn start(
        inner: &Arc<Inner>,
        key: StreamKey,
        start_after: Option<u64>,
        shared: bool,
    ) -> Arc<Self> {
        let hub = Arc::new(Hub {
            key,
            start_after,
            shared,
            state: Mutex::new(HubState::default()),
            buffer: inner.config.client_buffer.max(1),
            history_cap: inner.config.hub_history.max(1),
            subscription: Mutex::new(SubscriptionSlot::default()),
            inner: Arc::downgrade(inner),
            created: Instant::now(),
            ready: AtomicBool::new(false),
            ready_notify: Notify::new(),
        });
        let task = tokio::spawn(subscribe(hub.clone(), inner.clone()));
        let mut slot = hub.lock_subscription();
        if !slot.stopped && slot.subscription.is_none() {
            slot.setup = Some(task.abort_handle());
        }
        drop(slot);
        hub
    }

    /// A private hub that failed before subscribing: its one client gets `fault` and the
    /// stream ends.
    pub(crate) fn failed(key: StreamKey, fault: Fault, buffer: usize) -> Arc<Self> {
        Arc::new(Hub {
            key,
            start_after: None,
            shared: false,
            state: Mutex::new(HubState {
                fault: Some(fault),
                ..HubState::default()
            }),
            buffer: buffer.max(1),
            history_cap: 1,
            subscription: Mutex::new(SubscriptionSlot::default()),
            inner: Weak::new(),
            created: Instant::now(),
            ready: AtomicBool::new(true),
            ready_notify: Notify::new(),
        })
    }

    /// Waits until the broker subscription is in place (or has failed), at most `limit`.
    pub(crate) async fn ready(&self, limit: Duration) -> crate::Result<()> {
        let ready = tokio::time::timeout(limit, async {
            loop {
                let notified = self.ready_notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.ready.load(Ordering::Acquire) {
                    return;
                }
                notified.await;
            }
        })
        .await;
        match ready {
            Ok(()) => Ok(()),
            Err(_) => Err(Error::Timeout("broker subscription")),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_subscription(&self) -> MutexGuard<'_, SubscriptionSlot> {
        self.subscription.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a client resuming after `after_seq` can be served from this hub.
    pub(crate) fn covers(&self, after_seq: Option<u64>) -> bool {
        let st = self.lock();
        if st.fault.is_some() {
            return false;
        }
        let from_start = match (self.start_after, after_seq) {
            (None, _) => true,
            (Some(s), Some(a)) => a >= s,
            (Some(_), None) => false,
        };
        from_start && st.holds_all_after(after_seq)
    }

    /// Keeps `env` and queues it for every client; true when it is the End.
    fn deliver(&self, env: Arc<TokenEnvelope>) -> bool {
        let end = env.event.is_end();
        let mut st = self.lock();
        if !st.first_token_seen && matches!(env.event, StreamEvent::Token { .. }) {
            st.first_token_seen = true;
            if self.start_after.is_none() {
                if let Some(inner) = self.inner.upgrade() {
                    let us = u64::try_from(self.created.elapsed().as_micros()).unwrap_or(u64::MAX);
                    inner
                        .metrics
                        .ttft_micros_sum
                        .fetch_add(us, Ordering::Relaxed);
                    inner.metrics.ttft_count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if st.history.len() >= self.history_cap {
            if let Some(old) = st.history.pop_front() {
                st.trimmed_upto = Some(old.seq);
            }
        }
        st.history.push_back(env.clone());
        st.ended |= end;
        st.send_all(&HubMsg::Env(env), self.buffer);
        end
    }

    fn fail(&self, fault: Fault) {
        let mut st = self.lock();
        if st.ended || st.fault.is_some() {
            return;
        }
        st.fault = Some(fault.clone());
        st.send_all(&HubMsg::Fault(fault), self.buffer);
    }

    /// Adds a client.
    pub(crate) fn join(
        self: &Arc<Self>,
        inner: &Arc<Inner>,
        after_seq: Option<u64>,
    ) -> ClientStream {
        let mut st = self.lock();
        let replay = crate::model::replay_after(&st.history, st.ended, after_seq);
        let queue = Arc::new(ClientQueue::default());
        st.clients_tx.push(queue.clone());
        let rx = ClientRx { queue };
        st.clients += 1;
        st.ever_had_client = true;
        st.generation += 1;
        let fault = st.fault.clone();
        drop(st);
        inner.metrics.clients_opened.fetch_add(1, Ordering::Relaxed);
        ClientStream::new(ClientInit {
            key: self.key.clone(),
            replay,
            rx,
            fault,
            after_seq,
            hub: self.clone(),
            inner: inner.clone(),
        })
    }

    /// A client whose queue overflowed, now that it has read what the queue held: the
    /// envelopes after `last_seq` from the hub's history, with the queue taking envelopes
    /// again, or `None` when the history no longer reaches back that far (the client is then
    /// cut off as a slow consumer). A burst larger than the client's queue (envelopes an
    /// in-process broker hands over from one publish, before the client's task runs) costs
    /// the client a replay, not the stream.
    pub(crate) fn catch_up(
        &self,
        queue: &Arc<ClientQueue>,
        last_seq: Option<u64>,
    ) -> Option<VecDeque<Arc<TokenEnvelope>>> {
        let mut st = self.lock();
        if !st.holds_all_after(last_seq) {
            return None;
        }
        let replay = crate::model::replay_after(&st.history, st.ended, last_seq);
        {
            let mut q = queue.lock();
            if q.closed || !q.items.is_empty() {
                return None;
            }
            q.lagged = false;
            // A fault raised while the queue refused envelopes is not in the history.
            if let Some(fault) = &st.fault {
                q.items.push_back(HubMsg::Fault(fault.clone()));
            }
        }
        if st.fault.is_none() && !st.ended {
            st.clients_tx.push(queue.clone());
        }
        Some(replay)
    }

    /// Removes a client; schedules teardown (and a cancel) when it was the last.
    pub(crate) fn leave(self: &Arc<Self>, inner: &Arc<Inner>) {
        let mut st = self.lock();
        st.clients = st.clients.saturating_sub(1);
        st.generation += 1;
        if st.clients > 0 {
            return;
        }
        let settled = st.ended || st.fault.is_some();
        let generation = st.generation;
        drop(st);
        if !self.shared {
            self.stop();
            return;
        }
        if settled {
            self.retire(inner);
            return;
        }
        self.teardown_after(inner, inner.config.cancel_grace, generation, true);
    }

    /// Keeps following the stream with no client for `hold`.
    pub(crate) fn hold(self: &Arc<Self>, inner: &Arc<Inner>, hold: Duration) {
        let generation = self.lock().generation;
        self.teardown_after(inner, hold, generation, false);
    }

    fn teardown_after(
        self: &Arc<Self>,
        inner: &Arc<Inner>,
        after: Duration,
        generation: u64,
        cancel: bool,
    ) {
        let hub = self.clone();
        let inner = Arc::downgrade(inner);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(inner) = inner.upgrade() else { return };
            let (idle, unfinished, watched) = {
                let st = hub.lock();
                (
                    st.clients == 0 && st.generation == generation,
                    !st.ended && st.fault.is_none(),
                    st.ever_had_client,
                )
            };
            if !idle {
                return;
            }
            hub.retire(&inner);
            if cancel && unfinished && watched {
                if let Some(ch) = &inner.cancels {
                    tracing::debug!(stream = %hub.key, "last client gone: cancelling");
                    inner
                        .metrics
                        .cancels_published
                        .fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = ch.cancel(&hub.key).await {
                        tracing::warn!(error = %e, "cancel not published");
                    }
                }
            }
        });
    }

    /// Unregisters the hub and stops its subscription.
    fn retire(self: &Arc<Self>, inner: &Inner) {
        let mut hubs = inner.lock_hubs();
        if hubs.get(&self.key).is_some_and(|h| Arc::ptr_eq(h, self)) {
            hubs.remove(&self.key);
        }
        drop(hubs);
        self.stop();
    }

    /// Stops the broker subscription (or its making).
    fn stop(&self) {
        let (subscription, setup) = {
            let mut slot = self.lock_subscription();
            slot.stopped = true;
            (slot.subscription.take(), slot.setup.take())
        };
        if let Some(task) = setup {
            task.abort();
            // No subscription will come: nobody waits for one in vain.
            self.ready.store(true, Ordering::Release);
            self.ready_notify.notify_waiters();
        }
        // Dropped outside the slot's lock: stopping may take the source's own lock.
        drop(subscription);
    }
}

impl EnvelopeReceiver for Hub {
    fn envelope(&self, env: Arc<TokenEnvelope>) -> bool {
        !self.deliver(env)
    }

    fn ended(&self, error: Option<Error>) {
        self.fail(match error {
            Some(e) => fault_of(&e),
            None => Fault::Unavailable("the stream closed before its end".into()),
        });
    }
}

/// Makes the hub's broker subscription; the source delivers into the hub from then on.
async fn subscribe(hub: Arc<Hub>, inner: Arc<Inner>) {
    let receiver: Arc<dyn EnvelopeReceiver> = hub.clone();
    let subscribed = inner
        .tokens
        .subscribe_into(&hub.key, hub.start_after, receiver)
        .await;
    drop(inner);
    match subscribed {
        Ok(subscription) => {
            let mut slot = hub.lock_subscription();
            slot.setup = None;
            if slot.stopped {
                drop(slot);
                drop(subscription);
            } else {
                slot.subscription = Some(subscription);
            }
        }
        Err(e) => hub.fail(fault_of(&e)),
    }
    hub.ready.store(true, Ordering::Release);
    hub.ready_notify.notify_waiters();
}
