//! One client's view of a stream.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{BoxFuture, Fuse};
use futures::{FutureExt, Stream};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::hub::{ClientRx, Hub, HubMsg};
use super::Inner;
use crate::{ClientEvent, Fault, StreamEvent, StreamKey, TokenEnvelope};

pub(crate) struct ClientInit {
    pub(crate) key: StreamKey,
    pub(crate) replay: VecDeque<Arc<TokenEnvelope>>,
    pub(crate) rx: ClientRx,
    pub(crate) fault: Option<Fault>,
    pub(crate) after_seq: Option<u64>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) inner: Arc<Inner>,
}

/// The events of one stream for one client: envelopes in order without duplicates, a
/// [`ClientEvent::Reset`] before the envelopes of a new attempt, and a
/// [`ClientEvent::Fault`] when the stream cannot go on. Ends after `End` or a fault.
/// Dropping it before the end counts as a client disconnect.
pub struct ClientStream {
    key: StreamKey,
    /// Boxed, so that the stream stays small where a body or a route holds it.
    state: Box<State>,
    /// Sees each event before it is yielded ([`ClientStream::observed`]).
    observer: Option<Observer>,
}

/// What [`ClientStream::observed`] shows each event to.
type Observer = Box<dyn FnMut(&ClientEvent) + Send>;

impl std::fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientStream")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ClientStream {
    pub(crate) fn new(init: ClientInit) -> Self {
        let ClientInit {
            key,
            mut replay,
            rx,
            fault,
            after_seq,
            hub,
            inner,
        } = init;
        let mut seen_attempt = after_seq.map(TokenEnvelope::attempt_of_seq);
        if seen_attempt.is_none() {
            // A fresh client skips the remains of attempts that were superseded.
            if let Some(max) = replay.iter().map(|e| e.attempt).max() {
                replay.retain(|e| e.attempt == max);
                seen_attempt = Some(max);
            }
        }
        let now = Instant::now();
        let deadline = inner.config.stream_timeout.map(|t| now + t);
        let shutdown = inner.shutdown.subscribe();
        let mut shutdown_rx = shutdown.clone();
        let shutting_down = async move {
            // Ends when the gateway shuts down (or is gone).
            let _ = shutdown_rx.wait_for(|s| *s).await;
        }
        .boxed()
        .fuse();
        let state = State {
            replay,
            rx,
            initial_fault: fault,
            pending: VecDeque::new(),
            last_seq: after_seq,
            seen_attempt,
            done: false,
            shutdown,
            shutting_down,
            deadline,
            last_activity: now,
            timer: None,
            registered: None,
            lease: Lease {
                hub,
                inner,
                finished: false,
            },
        };
        Self {
            key,
            state: Box::new(state),
            observer: None,
        }
    }

    /// The stream this client follows.
    pub fn key(&self) -> &StreamKey {
        &self.key
    }

    /// The same stream, showing each event to `observe` before it is yielded (a route that
    /// relays a stream and also keeps what it said, as the Responses API's stored
    /// responses do). Dropping it is still a client disconnect.
    pub fn observed(mut self, mut observe: impl FnMut(&ClientEvent) + Send + 'static) -> Self {
        self.observer = Some(match self.observer.take() {
            Some(mut before) => Box::new(move |e: &ClientEvent| {
                before(e);
                observe(e);
            }),
            None => Box::new(observe),
        });
        self
    }
}

impl Stream for ClientStream {
    type Item = ClientEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        let this = &mut *self;
        let event = std::task::ready!(this.state.poll_next_event(cx));
        if let (Some(observe), Some(e)) = (this.observer.as_mut(), event.as_ref()) {
            observe(e);
        }
        Poll::Ready(event)
    }
}

struct Lease {
    hub: Arc<Hub>,
    inner: Arc<Inner>,
    /// The client saw the end (or a fault that ends the stream for everyone).
    finished: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let m = &self.inner.metrics;
        m.clients_closed.fetch_add(1, Ordering::Relaxed);
        if !self.finished {
            m.client_disconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.hub.leave(&self.inner);
    }
}

struct State {
    replay: VecDeque<Arc<TokenEnvelope>>,
    rx: ClientRx,
    initial_fault: Option<Fault>,
    pending: VecDeque<ClientEvent>,
    last_seq: Option<u64>,
    seen_attempt: Option<u32>,
    done: bool,
    shutdown: watch::Receiver<bool>,
    /// Resolves when the gateway shuts down. Made once and kept, so that waiting for the
    /// next envelope does not register and drop a waiter on the watch at every envelope.
    shutting_down: Fuse<BoxFuture<'static, ()>>,
    deadline: Option<Instant>,
    /// When the last envelope (or the stream's start) was seen, for the idle timeout.
    last_activity: Instant,
    /// One timer for both timeouts, made once and moved only when it fires early: arming a
    /// timer per envelope cost a timer-wheel insertion and removal per token.
    timer: Option<Pin<Box<Sleep>>>,
    /// The waker the shutdown waiter and the timer were last polled with.
    registered: Option<std::task::Waker>,
    lease: Lease,
}

impl State {
    /// The next event for the client; `None` after the End or a fault.
    fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Poll::Ready(Some(ev));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match std::task::ready!(self.poll_recv(cx)) {
                HubMsg::Env(env) => self.accept(env),
                HubMsg::Fault(fault) => {
                    if fault == Fault::SlowConsumer {
                        self.lease
                            .inner
                            .metrics
                            .slow_consumers
                            .fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.lease.finished = true;
                    }
                    self.done = true;
                    self.pending.push_back(ClientEvent::Fault(fault));
                }
            }
        }
    }

    /// When the stream times out if nothing else arrives: the earlier of its deadline and
    /// the idle timeout after the last activity.
    fn due(&self) -> Option<Instant> {
        let idle = self
            .lease
            .inner
            .config
            .idle_timeout
            .map(|t| self.last_activity + t);
        match (self.deadline, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<HubMsg> {
        if let Some(env) = self.replay.pop_front() {
            return Poll::Ready(HubMsg::Env(env));
        }
        if let Some(f) = self.initial_fault.take() {
            return Poll::Ready(HubMsg::Fault(f));
        }
        // A gateway shutting down ends the stream at once, whatever is queued.
        if *self.shutdown.borrow() {
            return Poll::Ready(HubMsg::Fault(Fault::ShuttingDown));
        }
        // Past the stream's deadline it times out, whatever is queued.
        let now = Instant::now();
        if self.deadline.is_some_and(|d| d <= now) {
            return Poll::Ready(HubMsg::Fault(Fault::TimedOut));
        }
        // The queue: the common case is a client woken for an envelope, taken here with
        // nothing registered. Else the queue's waker is set and the gateway's shutdown and
        // the timer are looked at, in that order. Neither starves: each call checks the
        // shutdown and the deadline above first, and the idle timer matters only while the
        // queue is empty.
        match self.rx.queue.poll_recv(cx) {
            Poll::Ready(Some(m)) => {
                self.last_activity = now;
                return Poll::Ready(m);
            }
            Poll::Ready(None) if self.rx.queue.lagged() => {
                // Fell a whole queue behind: catch up from the hub's history if it still
                // holds what came next, else the client is cut off.
                return match self.lease.hub.catch_up(&self.rx.queue, self.last_seq) {
                    Some(replay) => {
                        self.replay = replay;
                        self.poll_recv(cx)
                    }
                    None => Poll::Ready(HubMsg::Fault(Fault::SlowConsumer)),
                };
            }
            Poll::Ready(None) => {
                return Poll::Ready(HubMsg::Fault(Fault::Unavailable(
                    "the stream closed before its end".into(),
                )))
            }
            Poll::Pending => {}
        }
        // The shutdown waiter and the timer keep the waker they were last polled with and
        // wake it when they fire. Polled again with the same waker (the connection's task,
        // woken for the next envelope) they would only register it anew: skip them then,
        // unless the timer has fired (the shutdown was checked above).
        let same_task = self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        let due = self.due();
        let timer_set = match (&self.timer, due) {
            // Set at or before the due time, which only moves later: it fires in time.
            (Some(t), Some(due)) => !t.is_elapsed() && t.deadline() <= due,
            (None, None) => true,
            _ => false,
        };
        if same_task && timer_set {
            return Poll::Pending;
        }
        if self.shutting_down.poll_unpin(cx).is_ready() {
            return Poll::Ready(HubMsg::Fault(Fault::ShuttingDown));
        }
        self.registered = Some(cx.waker().clone());
        let Some(due) = due else {
            self.timer = None;
            return Poll::Pending;
        };
        // The timer is set once and moved only when it fires before the (since moved) due
        // time: arming a timer per envelope cost a timer-wheel insertion and removal each.
        let mut timer = self
            .timer
            .take()
            .unwrap_or_else(|| Box::pin(tokio::time::sleep_until(due)));
        while timer.as_mut().poll(cx).is_ready() {
            match self.due() {
                Some(due) if due > Instant::now() => timer.as_mut().reset(due),
                _ => return Poll::Ready(HubMsg::Fault(Fault::TimedOut)),
            }
        }
        self.timer = Some(timer);
        Poll::Pending
    }

    /// Whether `env` continues what the client has: the next seq, or the first envelope of
    /// a newer attempt (a reset); from the start, the first envelope of an attempt. An `End`
    /// at or before the last seq (a resume at or after the end) is the End again.
    fn follows(&self, env: &TokenEnvelope) -> bool {
        let starts_attempt = env.seq == TokenEnvelope::seq_base(env.attempt);
        match self.last_seq {
            None => starts_attempt,
            Some(l) => {
                env.seq == l + 1
                    || (env.event.is_end() && env.seq <= l)
                    || (starts_attempt && env.attempt > TokenEnvelope::attempt_of_seq(l))
            }
        }
    }

    fn accept(&mut self, env: Arc<TokenEnvelope>) {
        let end = env.event.is_end();
        if self.last_seq.is_some_and(|l| env.seq <= l) && !end {
            return; // duplicate
        }
        if self.seen_attempt.is_some_and(|a| env.attempt < a) && !end {
            return; // late envelope of a superseded attempt
        }
        if !self.follows(&env) {
            // A gap: the source handed this client a stream from its middle (a live-only
            // topology joined late) or lost envelopes. Never pass part of an answer off as
            // the whole of it.
            self.done = true;
            self.lease.finished = true;
            self.pending
                .push_back(ClientEvent::Fault(Fault::HistoryLost));
            return;
        }
        if self.seen_attempt.is_some_and(|a| env.attempt > a) {
            self.pending.push_back(ClientEvent::Reset {
                attempt: env.attempt,
            });
        }
        self.seen_attempt = Some(env.attempt);
        self.last_seq = self.last_seq.max(Some(env.seq));
        match env.event {
            StreamEvent::End { .. } => {
                self.done = true;
                self.lease.finished = true;
            }
            StreamEvent::Token { .. } => {
                self.lease
                    .inner
                    .metrics
                    .tokens_relayed
                    .fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.pending.push_back(ClientEvent::Envelope(env));
    }
}
