//! Reads driven by news: a few reader tasks per [`RedisTokenSource`](super::RedisTokenSource)
//! follow many streams each, and read a stream only when the bus says it has new entries.
//!
//! - **News.** Every publish call ends with one `PUBLISH` on the prefix's news channel
//!   ([`Keys::news_channel`](crate::Keys::news_channel)) naming the streams it appended to.
//!   A source holds one subscribed connection (RESP3, named
//!   [`RedisClient::news_name`](crate::RedisClient::news_name)); its news task marks each
//!   named stream that a subscription follows and wakes that subscription's reader.
//! - **Reads.** A woken reader reads its marked streams with one non-blocking
//!   `XREAD COUNT n STREAMS k1 k2 … id1 id2 …` (on a cluster, one per hash slot, sent
//!   together) on the client's shared connection, after each subscription's position, and
//!   hands each stream's entries to its subscription. Redis thus works for the streams that
//!   have news only, however many are followed, and an envelope is read as soon as its
//!   publish is done: no `BLOCK`, no spacing between reads, no dedicated connections.
//! - **Nothing is missed.** A new subscription reads its stream once at the start. Pub/sub
//!   keeps nothing for a connection that is away, so whenever the news connection is
//!   (re)established every followed stream is read again after its position; a stream with
//!   no news for [`BusConfig::block`](super::BusConfig::block) is read (and its marker
//!   probed) anyway. Positions make every read exact, so a spare read costs a round trip
//!   and nothing else.
//! - **Slow consumers.** Each subscription has a bounded queue
//!   ([`BusConfig::read_count`](super::BusConfig::read_count) envelopes). When it is full the
//!   reader leaves that stream out of its reads, keeping its position, until the consumer has
//!   taken half of it; the other streams of the reader go on.
//! - **Expiry and trimming** are checked per stream: the marker is probed (one pipeline for
//!   all streams that need it) when a stream's entries do not follow on from its position,
//!   or when nothing came for it for [`BusConfig::block`](super::BusConfig::block).
//! - **Lifetime.** A reader ends when it follows nothing; a dropped subscription wakes its
//!   reader, which forgets the stream. The news connection lives as long as the source.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use chatstream_core::wire::seed000::decode_envelope;
use chatstream_core::{Error, Result, TokenEnvelope};
use futures::FutureExt;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use super::source::{follows, Probe};
use super::subscription::{Pushed, Slot, Subscription};
use super::{parse_id, BusConfig};
use crate::error::{from_redis, is_transient};
use crate::RedisClient;

/// Longest pause between retries of a failed read or news connection (reads are retried
/// for [`BusConfig::retry_for`](super::BusConfig::retry_for)).
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
    /// Stream key → the subscriptions following it, for the news task.
    watchers: Mutex<HashMap<String, Vec<Watcher>>>,
    /// Started with the first subscription; ends when this is dropped.
    news: Mutex<Option<watch::Sender<()>>>,
    /// News connections made so far (the first, and each reconnection).
    news_connections: AtomicUsize,
}

/// A subscription as the news task sees it.
#[derive(Debug)]
struct Watcher {
    slot: Arc<Slot>,
    reader: Arc<Shared>,
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
            watchers: Mutex::new(HashMap::new()),
            news: Mutex::new(None),
            news_connections: AtomicUsize::new(0),
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
        self.start_news();
        // Marked: the first read happens at once.
        let slot = Arc::new(Slot::new(self.config.read_count));
        let key = stream.clone();
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
        let mut chosen = None;
        for reader in readers.iter() {
            let mut inbox = lock(&reader.inbox);
            if !inbox.closed && inbox.count < per_reader {
                inbox.pending.extend(follow.take());
                inbox.count += 1;
                chosen = Some(reader.clone());
                break;
            }
        }
        let reader = match chosen {
            Some(reader) => reader,
            None => {
                let shared = Arc::new(Shared {
                    inbox: Mutex::new(Inbox {
                        pending: follow.into_iter().collect(),
                        count: 1,
                        closed: false,
                    }),
                    notify: Arc::new(Notify::new()),
                });
                readers.push(shared.clone());
                let reader = Reader {
                    mux: self.clone(),
                    shared: shared.clone(),
                    follows: Vec::new(),
                };
                tokio::spawn(reader.run());
                shared
            }
        };
        drop(readers);
        lock(&self.watchers).entry(key).or_default().push(Watcher {
            slot: slot.clone(),
            reader: reader.clone(),
        });
        reader.notify.notify_one();
        Subscription::new(slot, reader.notify.clone())
    }

    /// Streams followed by all readers.
    pub(super) fn followed(&self) -> usize {
        self.followed.load(Ordering::Relaxed)
    }

    /// Reader tasks running.
    pub(super) fn readers(&self) -> usize {
        lock(&self.readers).len()
    }

    /// News connections made so far.
    pub(super) fn news_connections(&self) -> usize {
        self.news_connections.load(Ordering::Relaxed)
    }

    /// Forgets the watcher of `slot` on `stream`.
    fn unwatch(&self, stream: &str, slot: &Arc<Slot>) {
        let mut watchers = lock(&self.watchers);
        if let Some(list) = watchers.get_mut(stream) {
            list.retain(|w| !Arc::ptr_eq(&w.slot, slot));
            if list.is_empty() {
                watchers.remove(stream);
            }
        }
    }

    /// Marks the streams named in a news message and wakes their readers.
    fn news(&self, payload: &[u8]) {
        let watchers = lock(&self.watchers);
        for key in payload.split(|&b| b == b'\n') {
            let Ok(key) = std::str::from_utf8(key) else {
                continue;
            };
            for w in watchers.get(key).into_iter().flatten() {
                w.slot.mark();
                w.reader.notify.notify_one();
            }
        }
    }

    /// Marks every followed stream (news may have been missed) and wakes every reader.
    fn mark_all(&self) {
        for w in lock(&self.watchers).values().flatten() {
            w.slot.mark();
        }
        for reader in lock(&self.readers).iter() {
            reader.notify.notify_one();
        }
    }

    /// Starts the news task unless it runs.
    fn start_news(self: &Arc<Self>) {
        let mut news = lock(&self.news);
        if news.is_some() {
            return;
        }
        let (stop, stopped) = watch::channel(());
        *news = Some(stop);
        tokio::spawn(news_task(
            Arc::downgrade(self),
            self.client.clone(),
            stopped,
        ));
    }
}

/// Follows the news channel for the source of `mux` until the source is gone: connects,
/// subscribes, marks everything (news may have been missed while it was away), then passes
/// each message on; reconnects when the connection drops.
async fn news_task(mux: Weak<Mux>, client: RedisClient, mut stopped: watch::Receiver<()>) {
    let channel = client.keys().news_channel();
    let name = client.news_name();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let (tx, mut pushes) = mpsc::unbounded_channel();
        let connected = async {
            let mut con = client.push_connection(tx, &name).await?;
            con.subscribe(&channel).await?;
            redis::RedisResult::Ok(con)
        };
        let con = tokio::select! {
            c = connected => c,
            _ = stopped.changed() => return,
        };
        match con {
            Ok(_con) => {
                backoff = FIRST_BACKOFF;
                let Some(m) = mux.upgrade() else { return };
                m.news_connections.fetch_add(1, Ordering::Relaxed);
                m.mark_all();
                drop(m);
                loop {
                    let push = tokio::select! {
                        p = pushes.recv() => p,
                        _ = stopped.changed() => return,
                    };
                    let Some(push) = push else { break };
                    match push.kind {
                        redis::PushKind::Message => {
                            if let (Some(redis::Value::BulkString(payload)), Some(m)) =
                                (push.data.get(1), mux.upgrade())
                            {
                                m.news(payload);
                            }
                        }
                        redis::PushKind::Disconnection => break,
                        _ => {}
                    }
                }
                tracing::debug!("token bus news connection lost; reconnecting");
            }
            Err(e) => {
                tracing::warn!(error = %from_redis(e), "token bus news connection failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stopped.changed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Why a round failed.
struct RoundError(redis::RedisError);

impl RoundError {
    fn transient(&self) -> bool {
        is_transient(&self.0)
    }

    /// The error a subscription gets (a new value each time: one failure may end many).
    fn to_error(&self) -> Error {
        if self.0.is_timeout() {
            Error::Timeout("redis command")
        } else {
            Error::unavailable("redis", self.0.to_string())
        }
    }
}

impl From<redis::RedisError> for RoundError {
    fn from(e: redis::RedisError) -> Self {
        RoundError(e)
    }
}

/// One reader task.
struct Reader {
    mux: Arc<Mux>,
    shared: Arc<Shared>,
    follows: Vec<Follow>,
}

/// One `XREAD` of a round: the streams of one hash slot (every stream, on one server) and
/// the entry id to read each after.
struct Read<'a> {
    slot: u16,
    keys: Vec<&'a str>,
    after: Vec<(u64, u64)>,
}

/// What one round found for one followed stream.
struct Found<'a> {
    index: usize,
    entries: &'a [Entry],
    probe: bool,
}

impl Reader {
    async fn run(mut self) {
        let mut backoff = FIRST_BACKOFF;
        // When the rounds started failing (connection trouble being retried).
        let mut failing_since: Option<Instant> = None;
        loop {
            if !self.sync() {
                return;
            }
            let block = self.mux.config.block;
            let now = Instant::now();
            // Marked streams, and quiet ones due for a look; paused ones keep their mark.
            let due: Vec<usize> = (0..self.follows.len())
                .filter(|&i| {
                    let f = &self.follows[i];
                    !f.slot.paused() && (f.slot.take_mark() || now - f.checked >= block)
                })
                .collect();
            if due.is_empty() {
                let next = self
                    .follows
                    .iter()
                    .filter(|f| !f.slot.paused())
                    .map(|f| f.checked + block)
                    .min();
                match next {
                    Some(at) => {
                        tokio::select! {
                            () = self.shared.notify.notified() => {}
                            () = tokio::time::sleep_until(at) => {}
                        }
                    }
                    // Every stream waits for its consumer to make room.
                    None => self.shared.notify.notified().await,
                }
                continue;
            }
            let started = Instant::now();
            match self.round(&due).await {
                Ok(()) => {
                    backoff = FIRST_BACKOFF;
                    if failing_since.take().is_some() {
                        tracing::info!(streams = due.len(), "token stream reader reconnected");
                    }
                }
                Err(e) => {
                    // Read again when retrying.
                    for &i in &due {
                        self.follows[i].slot.mark();
                    }
                    let since = *failing_since.get_or_insert(started);
                    if e.transient() && since.elapsed() < self.mux.config.retry_for {
                        tracing::debug!(error = %e.to_error(), "token stream read failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                    backoff = FIRST_BACKOFF;
                    failing_since = None;
                    self.fail(&due, &e).await;
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
        let mut gone = Vec::new();
        self.follows.retain_mut(|f| {
            let keep = !f.slot.dropped();
            if !keep {
                gone.push((std::mem::take(&mut f.stream), f.slot.clone()));
            }
            keep
        });
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
        drop(inbox);
        for (stream, slot) in gone {
            self.mux.unwatch(&stream, &slot);
        }
        if !self.follows.is_empty() {
            return true;
        }
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

    /// One read of the `due` streams, the probes it calls for, and delivery.
    async fn round(&mut self, due: &[usize]) -> std::result::Result<(), RoundError> {
        let config = &self.mux.config;
        let cluster = self.mux.client.is_cluster();
        let mut pipe = redis::pipe();
        {
            // One key per stream, read after the lowest position of its subscriptions;
            // on a cluster, one XREAD per hash slot.
            let mut at: HashMap<&str, (usize, usize)> = HashMap::with_capacity(due.len());
            let mut reads: Vec<Read<'_>> = Vec::new();
            for &i in due {
                let f = &self.follows[i];
                if let Some(&(r, k)) = at.get(f.stream.as_str()) {
                    reads[r].after[k] = reads[r].after[k].min(f.position);
                    continue;
                }
                let slot = if cluster {
                    crate::keys::slot(f.stream.as_bytes())
                } else {
                    0
                };
                let r = reads
                    .iter()
                    .position(|read| read.slot == slot)
                    .unwrap_or_else(|| {
                        reads.push(Read {
                            slot,
                            keys: Vec::new(),
                            after: Vec::new(),
                        });
                        reads.len() - 1
                    });
                at.insert(&f.stream, (r, reads[r].keys.len()));
                reads[r].keys.push(&f.stream);
                reads[r].after.push(f.position);
            }
            for read in &reads {
                let cmd = pipe
                    .cmd("XREAD")
                    .arg("COUNT")
                    .arg(config.read_count.max(1))
                    .arg("STREAMS")
                    .arg(&read.keys);
                for (ms, seq) in &read.after {
                    cmd.arg(format!("{ms}-{seq}"));
                }
            }
        }
        let mut con = self.mux.client.shared();
        let replies: Vec<redis::Value> = pipe.query_async(&mut con).await?;
        let mut entries: HashMap<String, Vec<Entry>> = HashMap::new();
        for reply in replies {
            read_reply(reply, &mut entries);
        }

        let now = Instant::now();
        let mut found = Vec::new();
        for &index in due {
            let f = &self.follows[index];
            let all = entries.get(&f.stream).map_or(&[][..], Vec::as_slice);
            if all.len() >= config.read_count.max(1) {
                f.slot.mark(); // more may be waiting
            }
            // Entries another subscription of the same stream still needed.
            let start = all
                .iter()
                .position(|e| parse_id(&e.id).is_none_or(|id| id > f.position))
                .unwrap_or(all.len());
            let got = &all[start..];
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
            let values: Vec<redis::Value> = pipe.query_async(&mut con).await?;
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
            let (items, last) = deliver(follow, f.entries, probe);
            let pushed = if items.is_empty() && !last {
                Pushed::Room
            } else {
                follow.slot.push(items, last)
            };
            if pushed == Pushed::Gone {
                ended.push(f.index);
            }
        }
        self.forget(ended);
        Ok(())
    }

    /// Ends the subscriptions a failed round was for. A command error (not a connection
    /// problem) may come from one bad key, so the keys are checked first and only
    /// subscriptions whose key is not a stream fail, if any is found.
    async fn fail(&mut self, due: &[usize], e: &RoundError) {
        let mut culprits = Vec::new();
        // Only a command error on a working connection can be one key's fault.
        if !e.transient() {
            let mut pipe = redis::pipe();
            for &i in due {
                pipe.cmd("TYPE").arg(&self.follows[i].stream);
            }
            if let Ok(types) = pipe
                .query_async::<Vec<String>>(&mut self.mux.client.shared())
                .await
            {
                culprits = due
                    .iter()
                    .zip(types)
                    .filter(|(_, t)| t != "stream" && t != "none")
                    .map(|(&i, _)| i)
                    .collect();
            }
        }
        if culprits.is_empty() {
            culprits = due.to_vec();
        }
        for &i in &culprits {
            self.follows[i].slot.push([Err(e.to_error())], true);
        }
        self.forget(culprits);
    }

    fn forget(&mut self, mut indices: Vec<usize>) {
        indices.sort_unstable();
        indices.dedup();
        for i in indices.into_iter().rev() {
            let f = self.follows.swap_remove(i);
            self.mux.unwatch(&f.stream, &f.slot);
        }
    }
}

/// Applies what one round found for one stream: what to hand the subscriber (envelopes,
/// and an error last when the stream cannot go on), and whether that ends it.
///
/// Within one attempt, seqs (entry ids) are consecutive. A jump inside an attempt that
/// trimming does not explain means entries acknowledged to the worker are gone: a Redis
/// Cluster failover to a replica that had not received them yet (replication is
/// asynchronous), or a server that came back with part of its data. The envelopes before
/// the jump are delivered, then [`Error::HistoryLost`]: a client never sees an answer with
/// a hole in it.
fn deliver(
    f: &mut Follow,
    entries: &[Entry],
    probe: Option<Probe>,
) -> (Vec<Result<TokenEnvelope>>, bool) {
    let lost = |f: &Follow| {
        Err(Error::HistoryLost {
            after_seq: f.after_seq,
        })
    };
    if let Some(probe) = probe {
        // Something after our position was trimmed away (before or while we read).
        if probe.trimmed.is_some_and(|t| t > f.position) {
            return (vec![lost(f)], true);
        }
        if entries.is_empty() {
            if probe.stream_exists {
                f.seen = true;
            } else if f.seen || probe.marker_exists {
                return (vec![lost(f)], true); // expired under us
            }
            return (Vec::new(), false);
        }
    }
    f.seen = true;
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some(id) = parse_id(&entry.id) else {
            out.push(Err(Error::decode("stream entry id", &entry.id)));
            return (out, true);
        };
        if f.position != (0, 0) && id.0 >> 32 == f.position.0 >> 32 && id.0 > f.position.0 + 1 {
            out.push(lost(f));
            return (out, true);
        }
        let env = entry
            .env
            .as_deref()
            .ok_or_else(|| Error::decode("stream entry", "no env field"))
            .and_then(decode_envelope);
        let env = match env {
            Ok(e) => e.into_envelope(id.0),
            Err(e) => {
                out.push(Err(e));
                return (out, true);
            }
        };
        f.position = id;
        f.after_seq = env.seq;
        let end = env.event.is_end();
        out.push(Ok(env));
        if end {
            return (out, true);
        }
    }
    (out, false)
}

/// One entry of a token stream as read: its id, and its `env` field (`None` when it has
/// none: not an entry of this bus).
#[derive(Debug)]
struct Entry {
    id: String,
    env: Option<Vec<u8>>,
}

/// Adds the entries of one `XREAD` reply (RESP2 arrays or RESP3 maps; `nil` when nothing
/// came) to `out`, by stream key, taking the bytes out of the reply rather than copying
/// them. A part that is not shaped like a stream reply is skipped.
fn read_reply(reply: redis::Value, out: &mut HashMap<String, Vec<Entry>>) {
    use redis::Value;
    let streams: Vec<(Value, Value)> = match reply {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| match item {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let entries = kv.pop()?;
                    Some((kv.pop()?, entries))
                }
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs,
        _ => return,
    };
    for (key, list) in streams {
        let (Some(key), Value::Array(list)) = (text(key), list) else {
            continue;
        };
        let parsed = list.into_iter().filter_map(|entry| {
            let Value::Array(mut parts) = entry else {
                return None;
            };
            let fields = parts.pop()?;
            let id = text(parts.pop()?)?;
            let fields = match fields {
                Value::Array(f) => f,
                Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                _ => Vec::new(),
            };
            let mut env = None;
            let mut fields = fields.into_iter();
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                if matches!(&name, Value::BulkString(n) if n == b"env") {
                    if let Value::BulkString(bytes) = value {
                        env = Some(bytes);
                    }
                }
            }
            Some(Entry { id, env })
        });
        out.entry(key).or_default().extend(parsed);
    }
}

/// A bulk or simple string as text.
fn text(v: redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => String::from_utf8(b).ok(),
        redis::Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn xread_replies_are_read_in_both_protocols_and_odd_parts_skipped() {
        let entry = |id: &str, env: &str| {
            Value::Array(vec![bulk(id), Value::Array(vec![bulk("env"), bulk(env)])])
        };
        let resp2 = Value::Array(vec![
            Value::Array(vec![
                bulk("k1"),
                Value::Array(vec![entry("1-1", "a"), entry("2-1", "b")]),
            ]),
            Value::Int(7),
            Value::Array(vec![
                bulk("k2"),
                Value::Array(vec![Value::Array(vec![
                    bulk("3-1"),
                    Value::Array(vec![bulk("other"), bulk("x")]),
                ])]),
            ]),
        ]);
        let resp3 = Value::Map(vec![(bulk("k1"), Value::Array(vec![entry("3-1", "c")]))]);
        let mut out = HashMap::new();
        read_reply(resp2, &mut out);
        read_reply(resp3, &mut out);
        read_reply(Value::Nil, &mut out);
        let k1: Vec<(&str, Option<&[u8]>)> = out["k1"]
            .iter()
            .map(|e| (e.id.as_str(), e.env.as_deref()))
            .collect();
        assert_eq!(
            k1,
            [
                ("1-1", Some(&b"a"[..])),
                ("2-1", Some(&b"b"[..])),
                ("3-1", Some(&b"c"[..]))
            ]
        );
        assert_eq!(out["k2"].len(), 1);
        assert_eq!(
            out["k2"][0].env, None,
            "an entry without env is kept, to fail as such"
        );
        assert_eq!(out.len(), 2);
    }
}
