//! Local demultiplexing: one consumer per gateway instance feeding many stream subscribers.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use chatstream_core::{EnvelopeStream, Error, Result, StreamKey, TokenEnvelope};
use futures::{Stream, StreamExt};

/// One subscriber's queue. Unbounded like an mpsc channel (the bound is
/// [`Demux`]'s `buffer`, counted in `queued`), but it allocates only while envelopes wait:
/// an mpsc channel allocates a block of 32 slots, about 3.5 KiB of envelopes, per
/// subscriber up front, which was a seventh of an idle stream's memory in a gateway.
#[derive(Debug, Default)]
struct Queue {
    inner: Mutex<QueueInner>,
}

#[derive(Debug, Default)]
struct QueueInner {
    items: VecDeque<Result<TokenEnvelope>>,
    /// The sending side is gone: the stream ends once `items` is drained.
    closed: bool,
    /// The receiving side is gone: nothing more is queued.
    receiver_gone: bool,
    waker: Option<Waker>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item`; false when the receiver is gone.
    fn send(&self, item: Result<TokenEnvelope>) -> bool {
        let waker = {
            let mut q = self.lock();
            if q.receiver_gone {
                return false;
            }
            q.items.push_back(item);
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    fn close(&self) {
        let waker = {
            let mut q = self.lock();
            q.closed = true;
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The receiving side of a [`Queue`].
#[derive(Debug)]
struct QueueStream {
    queue: Arc<Queue>,
}

impl Stream for QueueStream {
    type Item = Result<TokenEnvelope>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut q = self.queue.lock();
        if let Some(item) = q.items.pop_front() {
            return Poll::Ready(Some(item));
        }
        if q.closed {
            return Poll::Ready(None);
        }
        if !q.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            q.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for QueueStream {
    fn drop(&mut self) {
        let mut q = self.queue.lock();
        q.receiver_gone = true;
        q.items.clear();
    }
}

/// One subscriber of one stream.
#[derive(Debug)]
struct Sub {
    id: u64,
    tx: Arc<Queue>,
    /// Envelopes sent but not yet read: the bound of the subscriber's buffer.
    queued: Arc<AtomicUsize>,
    /// Seq for envelopes that arrive without one (plain seed 000 producers).
    next_seq: u64,
}

impl Drop for Sub {
    fn drop(&mut self) {
        self.tx.close();
    }
}

/// Subscribers by stream. Envelopes of streams nobody follows are dropped (live topology).
#[derive(Debug)]
pub(crate) struct Demux {
    subs: Mutex<HashMap<StreamKey, Vec<Sub>>>,
    ids: AtomicU64,
    buffer: usize,
}

impl Demux {
    pub(crate) fn new(buffer: usize) -> Arc<Self> {
        Arc::new(Self {
            subs: Mutex::new(HashMap::new()),
            ids: AtomicU64::new(0),
            buffer: buffer.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<StreamKey, Vec<Sub>>> {
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a subscriber of `key`; the stream ends after `End`, and unregisters itself
    /// when dropped.
    pub(crate) fn subscribe(self: &Arc<Self>, key: &StreamKey) -> EnvelopeStream {
        let tx = Arc::new(Queue::default());
        let rx = QueueStream { queue: tx.clone() };
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let queued = Arc::new(AtomicUsize::new(0));
        self.lock().entry(key.clone()).or_default().push(Sub {
            id,
            tx,
            queued: queued.clone(),
            next_seq: 0,
        });
        let guard = Unsubscribe {
            demux: Arc::downgrade(self),
            key: key.clone(),
            id,
        };
        let stream = rx.map(move |item| {
            let _keep = &guard;
            queued.fetch_sub(1, Ordering::Relaxed);
            item
        });
        end_after_end(stream.boxed())
    }

    /// Hands an envelope to the subscribers of its stream. `seq` is `None` when the message
    /// carried none: each subscriber numbers those by arrival.
    pub(crate) fn route(&self, env: &TokenEnvelope, seq: Option<u64>) {
        let mut subs = self.lock();
        let Some(list) = subs.get_mut(&env.key) else {
            return;
        };
        let end = env.event.is_end();
        list.retain_mut(|sub| {
            let mut env = env.clone();
            env.seq = seq.unwrap_or(sub.next_seq);
            sub.next_seq = env.seq + 1;
            if sub.queued.fetch_add(1, Ordering::Relaxed) >= self.buffer {
                sub.tx.send(Err(Error::SlowConsumer(self.buffer)));
                return false;
            }
            sub.tx.send(Ok(env)) && !end
        });
        if list.is_empty() {
            subs.remove(&env.key);
        }
    }

    /// Fails every subscriber (the connection dropped: what was in flight is lost).
    pub(crate) fn fail_all(&self, why: &str) {
        let subs = std::mem::take(&mut *self.lock());
        for sub in subs.into_values().flatten() {
            sub.tx
                .send(Err(Error::unavailable("RabbitMQ", why.to_owned())));
        }
    }

    fn unsubscribe(&self, key: &StreamKey, id: u64) {
        let mut subs = self.lock();
        if let Some(list) = subs.get_mut(key) {
            list.retain(|s| s.id != id);
            if list.is_empty() {
                subs.remove(key);
            }
        }
    }
}

#[derive(Debug)]
struct Unsubscribe {
    demux: Weak<Demux>,
    key: StreamKey,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        if let Some(demux) = self.demux.upgrade() {
            demux.unsubscribe(&self.key, self.id);
        }
    }
}

/// Ends a stream right after its `End` envelope or its first error, without waiting for
/// the inner stream to yield again (a consumer would not).
pub(crate) fn end_after_end(stream: EnvelopeStream) -> EnvelopeStream {
    futures::stream::unfold(Some(stream), |state| async move {
        let mut stream = state?;
        let item = stream.next().await?;
        let last = match &item {
            Ok(env) => env.event.is_end(),
            Err(_) => true,
        };
        Some((item, (!last).then_some(stream)))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use chatstream_core::{FinishReason, StreamEvent};

    use super::*;

    fn env(key: &StreamKey, seq: u64, event: StreamEvent) -> TokenEnvelope {
        TokenEnvelope::new(key.clone(), 1, seq, event)
    }

    #[tokio::test]
    async fn envelopes_reach_only_their_streams_subscribers_and_end_after_end() {
        let demux = Demux::new(16);
        let a = StreamKey::new("a", "1");
        let b = StreamKey::new("b", "1");
        let mut sa = demux.subscribe(&a);
        let mut sa2 = demux.subscribe(&a);
        let sb = demux.subscribe(&b);
        demux.route(&env(&a, 0, StreamEvent::token("x")), Some(0));
        demux.route(&env(&b, 0, StreamEvent::token("y")), None);
        let end = StreamEvent::End {
            finish_reason: FinishReason::Stop,
            usage: None,
        };
        demux.route(&env(&a, 1, end), Some(1));
        let got: Vec<_> = (&mut sa).map(|r| r.expect("ok").seq).collect().await;
        assert_eq!(got, vec![0, 1]);
        assert_eq!((&mut sa2).count().await, 2);
        drop(sb);
        assert!(
            demux.lock().is_empty(),
            "ended and dropped subscribers are gone"
        );
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_cut_off() {
        let demux = Demux::new(2);
        let a = StreamKey::new("a", "1");
        let s = demux.subscribe(&a);
        for i in 0..5 {
            demux.route(&env(&a, i, StreamEvent::token("x")), None);
        }
        let items: Vec<_> = s.collect().await;
        assert!(matches!(items.last(), Some(Err(Error::SlowConsumer(2)))));
    }
}
