//! Per-stream logs of the in-memory broker: a bounded replay ring plus live fan-out.

use std::collections::VecDeque;

use foldhash::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::{
    EnvelopeReceiver, EnvelopeStream, Error, FinishReason, Result, StreamEvent, StreamKey,
    StreamStatus, Subscription, TokenEnvelope,
};

#[derive(Debug)]
struct StreamLog {
    entries: VecDeque<Arc<TokenEnvelope>>,
    /// Highest seq dropped from the ring; replay from before it is impossible.
    evicted_upto: Option<u64>,
    ended: bool,
    last_activity: Instant,
    /// The live channel of `subscribe` streams, made for the first of them (its slots are
    /// allocated up front, and the gateway's hubs subscribe with `subscribe_into` instead).
    tx: Option<broadcast::Sender<Arc<TokenEnvelope>>>,
    /// The `subscribe_into` receivers, called by `append` under the lock, by id.
    receivers: Vec<(u64, Arc<dyn EnvelopeReceiver>)>,
}

impl StreamLog {
    /// The envelopes after `after_seq` still held (the End again when resumed at or after
    /// it, so the subscriber learns the stream is over); `HistoryLost` when some are gone.
    fn replay(&self, after_seq: Option<u64>) -> Result<VecDeque<Arc<TokenEnvelope>>> {
        if let Some(evicted) = self.evicted_upto {
            if after_seq.is_none_or(|a| evicted > a) {
                return Err(Error::HistoryLost {
                    after_seq: after_seq.unwrap_or(0),
                });
            }
        }
        Ok(crate::model::replay_after(
            &self.entries,
            self.ended,
            after_seq,
        ))
    }

    fn new(now: Instant) -> Self {
        Self {
            entries: VecDeque::new(),
            evicted_upto: None,
            ended: false,
            last_activity: now,
            tx: None,
            receivers: Vec::new(),
        }
    }
}

/// Replay plus live receiver of one subscription.
type Snapshot = (
    VecDeque<Arc<TokenEnvelope>>,
    broadcast::Receiver<Arc<TokenEnvelope>>,
);

/// Live buffer per subscriber; a subscriber that falls further behind catches up from the ring.
/// Small, because a broadcast channel allocates all its slots when the stream is created
/// (256 were about 10 KiB per stream); catching up from the ring loses nothing.
const LIVE_CAPACITY: usize = 32;

#[derive(Debug)]
pub(crate) struct Streams {
    logs: Mutex<HashMap<StreamKey, StreamLog>>,
    capacity: usize,
    retention: Duration,
    stale_after: Duration,
    last_sweep: Mutex<Instant>,
    next_receiver: AtomicU64,
}

impl Streams {
    pub(crate) fn new(capacity: usize, retention: Duration, stale_after: Duration) -> Self {
        Self {
            logs: Mutex::new(HashMap::default()),
            capacity: capacity.max(1),
            retention,
            stale_after,
            last_sweep: Mutex::new(Instant::now()),
            next_receiver: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamKey, StreamLog>> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Appends each envelope to its stream's log and hands it to the stream's subscribers.
    pub(crate) fn append(&self, batch: impl IntoIterator<Item = TokenEnvelope>) {
        let now = Instant::now();
        {
            let mut logs = self.lock();
            for env in batch {
                let log = logs
                    .entry(env.key.clone())
                    .or_insert_with(|| StreamLog::new(now));
                let env = Arc::new(env);
                log.last_activity = now;
                if env.event.is_end() {
                    log.ended = true;
                }
                if log.entries.len() == self.capacity {
                    if let Some(old) = log.entries.pop_front() {
                        log.evicted_upto = Some(old.seq);
                    }
                }
                if let Some(tx) = log.tx.as_ref().filter(|tx| tx.receiver_count() > 0) {
                    let _ = tx.send(env.clone());
                }
                // Under the lock, so each receiver gets every stream's envelopes in order.
                log.receivers.retain(|(_, r)| r.envelope(env.clone()));
                log.entries.push_back(env);
            }
        }
        self.maybe_sweep(now);
    }

    /// Drops ended streams past their retention (keeping a tombstone so a late resume gets
    /// `HistoryLost` instead of waiting forever) and streams idle past `stale_after`.
    fn maybe_sweep(&self, now: Instant) {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            if now.duration_since(*last) < Duration::from_secs(1).min(self.retention) {
                return;
            }
            *last = now;
        }
        let mut logs = self.lock();
        logs.retain(|_, log| {
            let idle = now.duration_since(log.last_activity);
            if log.ended && idle >= self.retention && log.entries.len() > 1 {
                // Become a tombstone that still knows the End.
                let end = log.entries.pop_back();
                if let Some(last_dropped) = log.entries.back() {
                    log.evicted_upto = Some(last_dropped.seq);
                }
                log.entries.clear();
                log.entries.extend(end);
                return true;
            }
            idle < self.stale_after.max(self.retention)
                || log.tx.as_ref().is_some_and(|tx| tx.receiver_count() > 0)
                || !log.receivers.is_empty()
        });
    }

    /// What is held of `key`: nothing, an open stream, or an ended one (tombstones too).
    pub(crate) fn status(&self, key: &StreamKey) -> StreamStatus {
        let logs = self.lock();
        let Some(log) = logs.get(key) else {
            return StreamStatus::NotFound;
        };
        if log.ended {
            let finish_reason = log
                .entries
                .back()
                .and_then(|e| match &e.event {
                    StreamEvent::End { finish_reason, .. } => Some(finish_reason.clone()),
                    _ => None,
                })
                .unwrap_or(FinishReason::Stop);
            return StreamStatus::Ended { finish_reason };
        }
        if log.entries.is_empty() {
            // Made by a subscriber waiting for a stream nothing was published to yet.
            return StreamStatus::NotFound;
        }
        StreamStatus::Open
    }

    /// Envelopes of `key` after `after_seq` still in the ring, plus a live receiver, taken
    /// under one lock so nothing falls between them.
    fn snapshot(&self, key: &StreamKey, after_seq: Option<u64>) -> Result<Snapshot> {
        let now = Instant::now();
        let mut logs = self.lock();
        let log = logs
            .entry(key.clone())
            .or_insert_with(|| StreamLog::new(now));
        let replay = log.replay(after_seq)?;
        let tx = log
            .tx
            .get_or_insert_with(|| broadcast::channel(LIVE_CAPACITY).0);
        Ok((replay, tx.subscribe()))
    }

    pub(crate) fn subscribe(
        self: &Arc<Self>,
        key: &StreamKey,
        after_seq: Option<u64>,
    ) -> Result<EnvelopeStream> {
        let (replay, rx) = self.snapshot(key, after_seq)?;
        let state = Sub {
            streams: self.clone(),
            key: key.clone(),
            replay,
            rx,
            last_seq: after_seq,
            done: false,
        };
        Ok(futures::stream::unfold(state, Sub::next).boxed())
    }
}

impl Streams {
    /// [`TokenSource::subscribe_into`](crate::TokenSource::subscribe_into): the replay is
    /// handed to `receiver` at once, then every envelope from inside `append`, all under the
    /// lock so nothing falls between them or comes out of order.
    pub(crate) fn subscribe_into(
        self: &Arc<Self>,
        key: &StreamKey,
        after_seq: Option<u64>,
        receiver: Arc<dyn EnvelopeReceiver>,
    ) -> Result<Subscription> {
        let now = Instant::now();
        let mut logs = self.lock();
        let log = logs
            .entry(key.clone())
            .or_insert_with(|| StreamLog::new(now));
        let mut wants_more = true;
        for env in log.replay(after_seq)? {
            if !receiver.envelope(env) {
                wants_more = false;
                break;
            }
        }
        if !wants_more {
            return Ok(Subscription::on_drop(|| {}));
        }
        let id = self.next_receiver.fetch_add(1, Ordering::Relaxed);
        log.receivers.push((id, receiver));
        drop(logs);
        let streams: Weak<Self> = Arc::downgrade(self);
        let key = key.clone();
        Ok(Subscription::on_drop(move || {
            if let Some(streams) = streams.upgrade() {
                if let Some(log) = streams.lock().get_mut(&key) {
                    log.receivers.retain(|(i, _)| *i != id);
                }
            }
        }))
    }
}

/// One subscription: replay first, then live; a subscriber that lags behind the live buffer
/// catches up from the ring.
struct Sub {
    streams: Arc<Streams>,
    key: StreamKey,
    replay: VecDeque<Arc<TokenEnvelope>>,
    rx: broadcast::Receiver<Arc<TokenEnvelope>>,
    last_seq: Option<u64>,
    done: bool,
}

impl Sub {
    async fn next(mut self) -> Option<(Result<TokenEnvelope>, Self)> {
        if self.done {
            return None;
        }
        loop {
            let env = if let Some(e) = self.replay.pop_front() {
                e
            } else {
                match self.rx.recv().await {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Closed) => return None,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        match self.streams.snapshot(&self.key, self.last_seq) {
                            Ok((replay, rx)) => {
                                self.replay = replay;
                                self.rx = rx;
                                continue;
                            }
                            Err(e) => {
                                self.done = true;
                                return Some((Err(e), self));
                            }
                        }
                    }
                }
            };
            if self.last_seq.is_some_and(|l| env.seq <= l) && !env.event.is_end() {
                continue; // already delivered through the replay
            }
            self.last_seq = self.last_seq.max(Some(env.seq));
            if env.event.is_end() {
                self.done = true;
            }
            return Some((Ok((*env).clone()), self));
        }
    }
}
