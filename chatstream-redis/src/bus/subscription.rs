//! One subscription's hand-over point between its reader task and its consumer: a bounded
//! queue that allocates only while envelopes wait.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use chatstream_core::{Error, Result, TokenEnvelope};
use futures::Stream;
use tokio::sync::Notify;

/// What the reader and the consumer of one subscription share.
#[derive(Debug)]
pub(super) struct Slot {
    state: Mutex<SlotState>,
    /// Envelopes waiting before the reader stops reading this stream.
    capacity: usize,
    /// The stream may have entries the reader has not read: news came, the subscription is
    /// new, or the consumer made room after a pause.
    marked: AtomicBool,
}

#[derive(Debug, Default)]
struct SlotState {
    /// Envelopes (and a final error) not yet taken by the consumer.
    queue: VecDeque<Result<TokenEnvelope>>,
    consumer: Option<Waker>,
    /// Nothing will be added any more (End or an error delivered, or the reader gone).
    done: bool,
    /// The reader skips this stream until the consumer makes room.
    paused: bool,
    /// The consumer is gone.
    dropped: bool,
}

/// What [`Slot::push`] tells the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pushed {
    /// Keep reading.
    Room,
    /// Full: stop reading this stream (the consumer wakes the reader when it made room).
    Full,
    /// The consumer is gone: forget this stream.
    Gone,
}

impl Slot {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(SlotState::default()),
            capacity: capacity.max(1),
            marked: AtomicBool::new(true),
        }
    }

    /// Asks the reader to read this stream.
    pub(super) fn mark(&self) {
        self.marked.store(true, Ordering::Release);
    }

    /// Whether the stream was marked, clearing the mark.
    pub(super) fn take_mark(&self) -> bool {
        self.marked.swap(false, Ordering::AcqRel)
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the consumer went away.
    pub(super) fn dropped(&self) -> bool {
        self.lock().dropped
    }

    /// Hands envelopes to the consumer (reader side). `last` ends the subscription after
    /// them.
    pub(super) fn push(
        &self,
        items: impl IntoIterator<Item = Result<TokenEnvelope>>,
        last: bool,
    ) -> Pushed {
        let (waker, pushed) = {
            let mut s = self.lock();
            if s.dropped || s.done {
                return Pushed::Gone;
            }
            s.queue.extend(items);
            s.done = last;
            let pushed = if last {
                Pushed::Gone
            } else if s.queue.len() >= self.capacity {
                s.paused = true;
                Pushed::Full
            } else {
                Pushed::Room
            };
            (s.consumer.take(), pushed)
        };
        if let Some(w) = waker {
            w.wake();
        }
        pushed
    }

    /// Whether the reader should leave this stream out of its reads for now.
    pub(super) fn paused(&self) -> bool {
        self.lock().paused
    }

    /// Ends the subscription with `error` unless it already ended (the reader is going away).
    pub(super) fn fail(&self, error: Error) {
        let waker = {
            let mut s = self.lock();
            if s.done || s.dropped {
                return;
            }
            s.queue.push_back(Err(error));
            s.done = true;
            s.consumer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The consumer's end: the [`EnvelopeStream`](chatstream_core::EnvelopeStream) a
/// subscriber holds. Dropping it tells the reader to forget the stream.
#[derive(Debug)]
pub(super) struct Subscription {
    slot: Arc<Slot>,
    /// Woken when this subscription made room after a pause, or went away.
    reader: Arc<Notify>,
}

impl Subscription {
    pub(super) fn new(slot: Arc<Slot>, reader: Arc<Notify>) -> Self {
        Self { slot, reader }
    }
}

impl Stream for Subscription {
    type Item = Result<TokenEnvelope>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut resume = false;
        let poll = {
            let mut s = self.slot.lock();
            match s.queue.pop_front() {
                Some(item) => {
                    // Read on once half the room is free again.
                    if s.paused && s.queue.len() <= self.slot.capacity / 2 {
                        s.paused = false;
                        resume = true;
                    }
                    if s.queue.is_empty() {
                        s.queue = VecDeque::new(); // give the memory back while idle
                    }
                    Poll::Ready(Some(item))
                }
                None if s.done => Poll::Ready(None),
                None => {
                    if !s.consumer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        s.consumer = Some(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        };
        if resume {
            self.slot.mark();
            self.reader.notify_one();
        }
        poll
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let was_following = {
            let mut s = self.slot.lock();
            s.dropped = true;
            s.queue.clear();
            !s.done
        };
        if was_following {
            self.reader.notify_one();
        }
    }
}
