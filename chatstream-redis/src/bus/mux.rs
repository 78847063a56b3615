//! Multiplexed reads: a few reader tasks per [`RedisTokenSource`](super::RedisTokenSource),
//! each with one dedicated connection, follow many streams with one
//! `XREAD COUNT n BLOCK ms STREAMS wake k1 k2 … id0 id1 id2 …` and hand each stream's
//! entries to its subscription.
//!
//! - **Waking a blocked reader.** Every reader also reads a small stream of its own, its
//!   *wake stream* ([`Keys::reader_wake`](crate::Keys::reader_wake)), after the last wake
//!   entry it saw. A new subscription, a dropped one or one that made room after a pause
//!   notifies the reader task, which `XADD`s to its wake stream on the shared connection: its
//!   `XREAD` returns at once, whether the `XADD` reaches Redis before or after the `XREAD`
//!   (it reads *after an id*, not *from now*), so no wake-up can be lost, unlike a
//!   `CLIENT UNBLOCK`, which does nothing when it arrives before the read it should cut short.
//! - **Slow consumers.** Each subscription has a bounded queue
//!   ([`BusConfig::read_count`](super::BusConfig::read_count) envelopes). When it is full the
//!   reader leaves that stream out of its reads, keeping its position, until the consumer has
//!   taken half of it; the other streams of the reader go on.
//! - **Gathering.** Redis scans every key of an `XREAD` each time (and registers and
//!   unregisters every key when it blocks), so reading busy streams back to back would cost
//!   a full scan per envelope or two. After a read that brought entries, a reader waits
//!   until (streams followed by the source) ÷ [`BusConfig::scan_rate`](super::BusConfig::scan_rate)
//!   after its start before the next: all readers together then scan at most `scan_rate`
//!   keys per second, whatever the number of streams, and each read brings more envelopes
//!   the more streams there are. When all of a reader's streams were quiet, its read is
//!   already waiting in `BLOCK`, and the first envelope to come is not delayed.
//! - **Expiry and trimming** are checked per stream as before: the marker is probed (one
//!   pipeline for all streams that need it) when a stream's entries do not follow on from its
//!   position, or when nothing came for it for [`BusConfig::block`](super::BusConfig::block).
//! - **Lifetime.** A reader ends, and its connection goes back to the pool, when it follows
//!   nothing; a dropped subscription wakes its reader, which forgets the stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chatstream_core::wire::seed000::decode_envelope;
use chatstream_core::{Error, Result, TokenEnvelope};
use futures::FutureExt;
use redis::streams::{StreamId, StreamReadReply};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::source::{follows, Probe};
use super::subscription::{Pushed, Slot, Subscription};
use super::{millis, parse_id, BusConfig};
use crate::client::Blocking;
use crate::error::is_transient;
use crate::RedisClient;

/// Longest pause between retries of a failed read (they go on for
/// [`BusConfig::retry_for`](super::BusConfig::retry_for)).
const MAX_BACKOFF: Duration = Duration::from_millis(800);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The readers of one source (shared by its clones).
#[derive(Debug)]
pub(super) struct Mux {
    client: RedisClient,
    config: BusConfig,
    readers: Mutex<Vec<Arc<Shared>>>,
    /// Streams followed by all readers (the sum of their inbox counts).
    followed: AtomicUsize,
}

/// What a reader task shares with the subscriptions it follows.
#[derive(Debug)]
struct Shared {
    inbox: Mutex<Inbox>,
    notify: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Inbox {
    /// Subscriptions handed over, not yet taken by the reader.
    pending: Vec<Follow>,
    /// Streams followed: pending ones and the reader's own.
    count: usize,
    /// The reader has ended: hand nothing more over.
    closed: bool,
}

/// One subscription, as its reader sees it.
#[derive(Debug)]
pub(super) struct Follow {
    slot: Arc<Slot>,
    stream: String,
    marker: String,
    /// The last entry id delivered (or the one to read after).
    position: (u64, u64),
    /// The seq to report in `HistoryLost`.
    after_seq: u64,
    /// The stream has been seen to exist.
    seen: bool,
    /// When entries last came or the marker was last probed.
    checked: Instant,
}

impl Drop for Follow {
    fn drop(&mut self) {
        // Only does something when the reader goes away with the subscription still open
        // (the runtime shutting down): the subscriber learns it rather than waiting forever.
        self.slot.fail(Error::Closed);
    }
}

impl Mux {
    pub(super) fn new(client: RedisClient, config: BusConfig) -> Self {
        Self {
            client,
            config,
            readers: Mutex::new(Vec::new()),
            followed: AtomicUsize::new(0),
        }
    }

    /// Follows `stream` after `position` on a reader with room (a new one if none has).
    pub(super) fn follow(
        self: &Arc<Self>,
        stream: String,
        marker: String,
        position: (u64, u64),
        after_seq: u64,
        seen: bool,
    ) -> Subscription {
        let slot = Arc::new(Slot::new(self.config.read_count));
        let mut follow = Some(Follow {
            slot: slot.clone(),
            stream,
            marker,
            position,
            after_seq,
            seen,
            checked: Instant::now(),
        });
        let per_reader = self.config.streams_per_reader.max(1);
        let mut readers = lock(&self.readers);
        self.followed.fetch_add(1, Ordering::Relaxed);
        for reader in readers.iter() {
            let mut inbox = lock(&reader.inbox);
            if !inbox.closed && inbox.count < per_reader {
                inbox.pending.extend(follow.take());
                inbox.count += 1;
                drop(inbox);
                reader.notify.notify_one();
                return Subscription::new(slot, reader.notify.clone());
            }
        }
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox {
                pending: follow.into_iter().collect(),
                count: 1,
                closed: false,
            }),
            notify: Arc::new(Notify::new()),
        });
        readers.push(shared.clone());
        let notify = shared.notify.clone();
        let wake_key = self
            .client
            .keys()
            .reader_wake(&uuid::Uuid::new_v4().simple().to_string());
        let reader = Reader {
            mux: self.clone(),
            shared,
            follows: Vec::new(),
            conn: None,
            wake_key,
            wake_id: "0-0".into(),
        };
        tokio::spawn(reader.run());
        Subscription::new(slot, notify)
    }

    /// Streams followed by all readers.
    pub(super) fn followed(&self) -> usize {
        self.followed.load(Ordering::Relaxed)
    }

    /// How long after the start of a read that brought entries a reader waits before the
    /// next: long enough that all readers together ask Redis to scan at most
    /// [`BusConfig::scan_rate`] keys per second.
    fn linger(&self) -> Duration {
        let followed = self.followed() as f64;
        Duration::from_secs_f64(followed / self.config.scan_rate.max(1) as f64)
            .min(self.config.block)
    }

    /// Reader tasks running.
    pub(super) fn readers(&self) -> usize {
        lock(&self.readers).len()
    }
}

/// Why a round failed.
enum RoundError {
    /// Getting a connection failed.
    Connect(Error),
    /// A command failed.
    Redis(redis::RedisError),
}

impl RoundError {
    fn transient(&self) -> bool {
        match self {
            RoundError::Connect(e) => e.is_retryable(),
            RoundError::Redis(e) => is_transient(e),
        }
    }

    /// The error a subscription gets (a new value each time: one failure may end many).
    fn to_error(&self) -> Error {
        match self {
            RoundError::Redis(e) if e.is_timeout() => Error::Timeout("redis command"),
            RoundError::Redis(e) => Error::unavailable("redis", e.to_string()),
            RoundError::Connect(Error::Timeout(what)) => Error::Timeout(what),
            RoundError::Connect(e) => Error::unavailable("redis", e.to_string()),
        }
    }
}

impl From<redis::RedisError> for RoundError {
    fn from(e: redis::RedisError) -> Self {
        RoundError::Redis(e)
    }
}

/// One reader task.
struct Reader {
    mux: Arc<Mux>,
    shared: Arc<Shared>,
    follows: Vec<Follow>,
    conn: Option<Blocking>,
    wake_key: String,
    /// The last wake entry seen.
    wake_id: String,
}

/// What one round found for one followed stream.
struct Found<'a> {
    index: usize,
    entries: &'a [StreamId],
    probe: bool,
}

impl Reader {
    async fn run(mut self) {
        let mut backoff = FIRST_BACKOFF;
        // When the rounds started failing (connection trouble being retried).
        let mut failing_since: Option<Instant> = None;
        let mut linger_until: Option<Instant> = None;
        loop {
            if let Some(until) = linger_until.take() {
                if until > Instant::now() {
                    tokio::time::sleep_until(until).await;
                }
            }
            if !self.sync() {
                return;
            }
            let active: Vec<usize> = (0..self.follows.len())
                .filter(|&i| !self.follows[i].slot.paused())
                .collect();
            if active.is_empty() {
                // Every stream waits for its consumer to make room.
                self.shared.notify.notified().await;
                continue;
            }
            let started = Instant::now();
            match self.round(&active).await {
                Ok(had_news) => {
                    backoff = FIRST_BACKOFF;
                    if failing_since.take().is_some() {
                        tracing::info!(streams = active.len(), "token stream reader reconnected");
                    }
                    if had_news {
                        // Let entries gather before the next read (see `BusConfig::scan_rate`).
                        linger_until = Some(started + self.mux.linger());
                    }
                }
                Err(e) => {
                    let since = *failing_since.get_or_insert(started);
                    if e.transient() && since.elapsed() < self.mux.config.retry_for {
                        self.conn = None;
                        tracing::debug!(error = %e.to_error(), "token stream read failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                    backoff = FIRST_BACKOFF;
                    failing_since = None;
                    self.fail(&active, &e).await;
                    self.conn = None;
                }
            }
        }
    }

    /// Takes new subscriptions, forgets dropped ones; `false` (and the reader is gone from
    /// its source) once it follows nothing.
    fn sync(&mut self) -> bool {
        // Wake-ups so far are about what we are about to look at.
        let _ = self.shared.notify.notified().now_or_never();
        let mut inbox = lock(&self.shared.inbox);
        self.follows.append(&mut inbox.pending);
        self.follows.retain(|f| !f.slot.dropped());
        let count = self.follows.len();
        // Only changed under this lock, so the difference is exact.
        if count >= inbox.count {
            self.mux
                .followed
                .fetch_add(count - inbox.count, Ordering::Relaxed);
        } else {
            self.mux
                .followed
                .fetch_sub(inbox.count - count, Ordering::Relaxed);
        }
        inbox.count = count;
        if !self.follows.is_empty() {
            return true;
        }
        drop(inbox);
        // Lock order: readers, then inbox (as `Mux::follow`).
        let mut readers = lock(&self.mux.readers);
        let mut inbox = lock(&self.shared.inbox);
        if !inbox.pending.is_empty() {
            return true; // handed one just now: take it next time round
        }
        inbox.closed = true;
        readers.retain(|r| !Arc::ptr_eq(r, &self.shared));
        false
    }

    /// One `XREAD` over the active streams, the probes it calls for, and delivery; whether
    /// any stream had entries.
    async fn round(&mut self, active: &[usize]) -> std::result::Result<bool, RoundError> {
        let config = &self.mux.config;
        let mut pipe = redis::pipe();
        {
            // One key per stream, read after the lowest position of its subscriptions.
            let mut keys: Vec<&str> = Vec::with_capacity(active.len() + 1);
            let mut ids: Vec<(u64, u64)> = Vec::with_capacity(active.len());
            let mut at: HashMap<&str, usize> = HashMap::with_capacity(active.len());
            for &i in active {
                let f = &self.follows[i];
                match at.get(f.stream.as_str()) {
                    Some(&k) => ids[k] = ids[k].min(f.position),
                    None => {
                        at.insert(&f.stream, keys.len());
                        keys.push(&f.stream);
                        ids.push(f.position);
                    }
                }
            }
            let cmd = pipe
                .cmd("XREAD")
                .arg("COUNT")
                .arg(config.read_count.max(1))
                .arg("BLOCK")
                .arg(millis(config.block))
                .arg("STREAMS")
                .arg(&self.wake_key)
                .arg(&keys)
                .arg(&self.wake_id);
            for (ms, seq) in ids {
                cmd.arg(format!("{ms}-{seq}"));
            }
        }
        let conn = match self.conn.as_mut() {
            Some(c) => c,
            None => self.conn.insert(
                self.mux
                    .client
                    .blocking(config.block)
                    .await
                    .map_err(RoundError::Connect)?,
            ),
        };
        let (reply,) = {
            let read = conn.query::<(Option<StreamReadReply>,)>(&pipe);
            tokio::pin!(read);
            let mut woken = false;
            loop {
                tokio::select! {
                    r = &mut read => break r?,
                    () = self.shared.notify.notified(), if !woken => {
                        woken = true;
                        wake(&self.mux.client, &self.wake_key, config).await;
                    }
                }
            }
        };
        let mut entries: HashMap<String, Vec<StreamId>> = reply
            .map(|r| r.keys.into_iter().map(|k| (k.key, k.ids)).collect())
            .unwrap_or_default();
        if let Some(last) = entries
            .remove(&self.wake_key)
            .and_then(|w| w.into_iter().last())
        {
            self.wake_id = last.id;
        }
        let had_news = !entries.is_empty();

        let now = Instant::now();
        let mut found = Vec::new();
        for &index in active {
            let f = &self.follows[index];
            let got = entries.get(&f.stream).map_or(&[][..], |v| {
                // Entries another subscription of the same stream still needed.
                let start = v
                    .iter()
                    .position(|e| parse_id(&e.id).is_none_or(|id| id > f.position))
                    .unwrap_or(v.len());
                &v[start..]
            });
            let seamless = got
                .first()
                .and_then(|e| parse_id(&e.id))
                .is_some_and(|first| follows(f.position, first));
            // The marker is read only when something may be wrong: nothing came for a
            // while (expired under us?) or what came does not follow on (trimmed past us?).
            let probe = !seamless && (!got.is_empty() || now - f.checked >= config.block);
            if !got.is_empty() || probe {
                found.push(Found {
                    index,
                    entries: got,
                    probe,
                });
            }
        }

        let mut probes = Vec::new();
        if found.iter().any(|f| f.probe) {
            let mut pipe = redis::pipe();
            for f in found.iter().filter(|f| f.probe) {
                let follow = &self.follows[f.index];
                Probe::pipeline(&mut pipe, &follow.stream, &follow.marker);
            }
            let conn = match self.conn.as_mut() {
                Some(c) => c,
                None => return Ok(had_news), // cannot happen: the read above used it
            };
            let values: Vec<redis::Value> = conn.query(&pipe).await?;
            for chunk in values.chunks(3) {
                let reply = redis::from_redis_value(&redis::Value::Array(chunk.to_vec()))?;
                probes.push(Probe::from_reply(reply));
            }
        }

        let mut probes = probes.into_iter();
        let mut ended = Vec::new();
        for f in found {
            let probe = if f.probe { probes.next() } else { None };
            let follow = &mut self.follows[f.index];
            follow.checked = now;
            let pushed = match deliver(follow, f.entries, probe) {
                Ok((envelopes, end)) if envelopes.is_empty() && !end => Pushed::Room,
                Ok((envelopes, end)) => follow.slot.push(envelopes.into_iter().map(Ok), end),
                Err(e) => follow.slot.push([Err(e)], true),
            };
            if pushed == Pushed::Gone {
                ended.push(f.index);
            }
        }
        self.forget(ended);
        Ok(had_news)
    }

    /// Ends the subscriptions a failed round was for. A command error (not a connection
    /// problem) may come from one bad key, so the keys are checked first and only
    /// subscriptions whose key is not a stream fail, if any is found.
    async fn fail(&mut self, active: &[usize], e: &RoundError) {
        let mut culprits = Vec::new();
        // Only a command error on a working connection can be one key's fault.
        let command_error = matches!(e, RoundError::Redis(e) if !is_transient(e));
        if let (true, Some(conn)) = (command_error, self.conn.as_mut()) {
            let mut pipe = redis::pipe();
            for &i in active {
                pipe.cmd("TYPE").arg(&self.follows[i].stream);
            }
            if let Ok(types) = conn.query::<Vec<String>>(&pipe).await {
                culprits = active
                    .iter()
                    .zip(types)
                    .filter(|(_, t)| t != "stream" && t != "none")
                    .map(|(&i, _)| i)
                    .collect();
            }
        }
        if culprits.is_empty() {
            culprits = active.to_vec();
        }
        for &i in &culprits {
            self.follows[i].slot.push([Err(e.to_error())], true);
        }
        self.forget(culprits);
    }

    fn forget(&mut self, mut indices: Vec<usize>) {
        indices.sort_unstable();
        for i in indices.into_iter().rev() {
            self.follows.swap_remove(i);
        }
    }
}

/// Applies what one round found for one stream: the envelopes to deliver, and whether the
/// last of them is the `End`.
fn deliver(
    f: &mut Follow,
    entries: &[StreamId],
    probe: Option<Probe>,
) -> Result<(Vec<TokenEnvelope>, bool)> {
    if let Some(probe) = probe {
        let lost = Error::HistoryLost {
            after_seq: f.after_seq,
        };
        // Something after our position was trimmed away (before or while we read).
        if probe.trimmed.is_some_and(|t| t > f.position) {
            return Err(lost);
        }
        if entries.is_empty() {
            if probe.stream_exists {
                f.seen = true;
            } else if f.seen || probe.marker_exists {
                return Err(lost); // expired under us
            }
            return Ok((Vec::new(), false));
        }
    }
    f.seen = true;
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let id = parse_id(&entry.id).ok_or_else(|| Error::decode("stream entry id", &entry.id))?;
        let body: Vec<u8> = entry
            .get("env")
            .ok_or_else(|| Error::decode("stream entry", "no env field"))?;
        let env = decode_envelope(&body)?.into_envelope(id.0);
        f.position = id;
        f.after_seq = env.seq;
        let end = env.event.is_end();
        out.push(env);
        if end {
            return Ok((out, true));
        }
    }
    Ok((out, false))
}

/// Makes the reader's `XREAD` return: an entry in its wake stream (kept to one entry, and
/// gone a while after the reader stops).
async fn wake(client: &RedisClient, key: &str, config: &BusConfig) {
    let mut pipe = redis::pipe();
    pipe.cmd("XADD")
        .arg(key)
        .arg("MAXLEN")
        .arg(1)
        .arg("*")
        .arg("w")
        .arg(1)
        .ignore()
        .cmd("PEXPIRE")
        .arg(key)
        .arg(millis(config.block * 2 + Duration::from_secs(60)))
        .ignore();
    if let Err(e) = pipe.query_async::<()>(&mut client.shared()).await {
        // The read then ends at its BLOCK timeout instead: late, not wrong.
        tracing::debug!(error = %e, "waking a token stream reader failed");
    }
}
