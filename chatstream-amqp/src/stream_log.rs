//! The reading side of the stream topology: one tail consumer per gateway instance over the
//! token stream (a RabbitMQ stream queue), a local index of where each stream starts, live
//! fan-out through the [`Demux`], and replays read from the log by their own consumers.
//!
//! Why one log with a local index (and not a super stream, or a queue per stream): a worker
//! batch holds envelopes of many streams, and one append per batch is what keeps the broker's
//! message rate low (one message for dozens of tokens). A log partitioned by stream key would
//! split each batch into one message per partition. Every gateway reads the whole log, which
//! costs each gateway the decoding of every batch; in exchange any gateway can serve any
//! stream at any offset, and a gateway that joins late learns the index by reading the
//! retained log from its start (`x-stream-offset` = now − retention). Replays start at the
//! stream's first offset and stop at the offset the tail had reached when the subscriber was
//! registered; from there the live fan-out takes over, so nothing falls between the two.
//!
//! Readiness: a gateway appends an empty *marker* message (header [`HEADER_MARKER`]) to the
//! log when its tail consumer starts; once the tail reads its own marker back, the index
//! holds everything published before, and resumes of unknown streams can be answered with
//! `history lost` instead of waiting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatstream_core::{
    EnvelopeStream, Error, FinishReason, Result, StreamEvent, StreamKey, StreamStatus,
    TokenEnvelope,
};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Consumer};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::codec::{self, header_text, header_u64};
use crate::demux::{end_after_end, Demux};
use crate::error::lapin_err;
use crate::publisher::{Outgoing, Publisher};
use crate::topology::{self, short};
use crate::AmqpConnection;

/// Header of a gateway's readiness marker in the log (its value: the gateway's id).
pub const HEADER_MARKER: &str = "x-chatstream-marker";

/// Header RabbitMQ puts on every message delivered from a stream queue: its offset.
const HEADER_OFFSET: &str = "x-stream-offset";

/// Longest a resume or a status question waits for the tail to catch up with the log.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);

/// How often the index drops streams past their retention.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Longest a resume after a seq this instance's tail has not read yet waits for it (the
/// client read it from another instance a moment ago), before it is refused as ahead of the
/// stream.
const AHEAD_WAIT: Duration = Duration::from_secs(2);

/// Envelopes a replay may read ahead of its subscriber.
const REPLAY_BUFFER: usize = 256;

/// Prefetch of a replay's consumer: RabbitMQ fills the whole prefetch from the log before
/// the first delivery, so a small one gets the first envelope sooner (45 ms at 1,000 against
/// 5 ms at 10, measured here), and a replay is short.
const REPLAY_PREFETCH: u16 = 64;

/// A stream's index entry marks the log offset of every this-many seqs, so a resume after
/// seq `n` starts reading near `n` instead of at the stream's start.
const MARK_EVERY: u64 = 32;

/// The low 32 bits of a seq: the envelope's position within its attempt.
const IN_ATTEMPT: u64 = 0xFFFF_FFFF;

/// What the index knows of one stream.
#[derive(Debug, Clone)]
struct Entry {
    /// Offset of the first log message holding an envelope of the stream.
    first_offset: u64,
    /// Highest seq seen.
    last_seq: u64,
    /// Highest attempt seen.
    attempt: u32,
    /// How it ended, once it did.
    end: Option<FinishReason>,
    /// Last envelope seen (for retention).
    touched: Instant,
    /// `(seq, offset)`: the first seq of a log message holding this stream's envelopes,
    /// every [`MARK_EVERY`] seqs, ascending.
    marks: Vec<(u64, u64)>,
}

impl Entry {
    /// Where a replay of the envelopes after `after_seq` can start: the offset of the last
    /// mark at or before it (the stream's start for `None`).
    fn replay_from(&self, after_seq: Option<u64>) -> u64 {
        let Some(after) = after_seq else {
            return self.first_offset;
        };
        self.marks
            .iter()
            .rev()
            .find(|(seq, _)| *seq <= after.saturating_add(1))
            .map_or(self.first_offset, |(_, offset)| *offset)
    }
}

#[derive(Debug)]
struct IndexState {
    entries: HashMap<StreamKey, Entry>,
    /// Offset of the last message the tail routed.
    tail: Option<u64>,
    last_prune: Instant,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<IndexState>,
    demux: Arc<Demux>,
    /// True once the tail has read this instance's latest marker back.
    caught_up: watch::Sender<bool>,
    /// This instance's marker id.
    marker: String,
    /// Woken after each log message the tail routed.
    progress: tokio::sync::Notify,
    /// The highest sync marker of this instance read back.
    synced: watch::Sender<u64>,
    /// The last sync marker number handed out.
    syncs: std::sync::atomic::AtomicU64,
    retention: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, IndexState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Indexes one log message and hands its envelopes to the live subscribers.
    fn route(&self, offset: u64, delivery: &lapin::message::Delivery) {
        let headers = delivery.properties.headers().as_ref();
        if let Some(marker) = header_text(headers, HEADER_MARKER) {
            self.lock().tail = Some(offset);
            // `<id>` when the tail starts, `<id>/<n>` for a sync (`StreamLog::sync_index`).
            if let Some(rest) = marker.strip_prefix(self.marker.as_str()) {
                if rest.is_empty() {
                    self.caught_up.send_replace(true);
                } else if let Some(n) = rest.strip_prefix('/').and_then(|n| n.parse().ok()) {
                    self.synced.send_modify(|s| *s = (*s).max(n));
                }
            }
            return;
        }
        let now = Instant::now();
        let mut st = self.lock();
        for dec in codec::decode_envelopes(&delivery.data) {
            let dec = match dec {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, offset, "skipping an undecodable envelope in the token stream");
                    continue;
                }
            };
            let Some(seq) = dec.seq else {
                tracing::warn!(
                    offset,
                    "skipping an envelope without seq in the token stream"
                );
                continue;
            };
            let env = dec.into_envelope(seq);
            let entry = st.entries.entry(env.key.clone()).or_insert(Entry {
                first_offset: offset,
                last_seq: seq,
                attempt: env.attempt,
                end: None,
                touched: now,
                marks: Vec::new(),
            });
            if entry
                .marks
                .last()
                .is_none_or(|(m, _)| seq >= m + MARK_EVERY || seq < *m)
            {
                entry.marks.push((seq, offset));
            }
            entry.last_seq = entry.last_seq.max(seq);
            entry.attempt = entry.attempt.max(env.attempt);
            entry.touched = now;
            if let StreamEvent::End { finish_reason, .. } = &env.event {
                entry.end = Some(finish_reason.clone());
            }
            // Under the index lock, so a subscriber registered meanwhile either is in the
            // demux already or finds this message's offset at or below its replay target.
            self.demux.route(&env, Some(seq));
        }
        st.tail = Some(offset);
        drop(st);
        self.progress.notify_waiters();
        let mut st = self.lock();
        if now.duration_since(st.last_prune) >= PRUNE_EVERY {
            st.last_prune = now;
            let retention = self.retention;
            st.entries
                .retain(|_, e| now.duration_since(e.touched) < retention);
        }
    }

    async fn wait_caught_up(&self) -> Result<()> {
        let mut rx = self.caught_up.subscribe();
        let ready =
            tokio::time::timeout(
                CATCH_UP_LIMIT,
                async move { rx.wait_for(|c| *c).await.is_ok() },
            )
            .await;
        match ready {
            Ok(true) => Ok(()),
            _ => Err(Error::unavailable(
                "RabbitMQ",
                "the gateway is still reading the token stream (or cannot reach RabbitMQ)",
            )),
        }
    }
}

/// A gateway's view of the token stream. Dropping it stops the tail consumer.
#[derive(Debug)]
pub(crate) struct StreamLog {
    conn: AmqpConnection,
    /// Appends sync markers.
    publisher: Publisher,
    stream: String,
    shared: Arc<Shared>,
    tail: AbortHandle,
}

impl Drop for StreamLog {
    fn drop(&mut self) {
        self.tail.abort();
    }
}

/// Where a log consumer starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// The first message at or after this time (seconds since the epoch).
    Timestamp(u64),
    /// This offset.
    Offset(u64),
}

impl StreamLog {
    /// Declares the token stream and starts reading it from the start of its retention.
    pub(crate) async fn start(conn: &AmqpConnection) -> Result<Self> {
        let config = conn.config();
        let ch = conn.channel().await?;
        topology::declare_token_stream(&ch, config).await?;
        let _ = ch.close(200, "declared".into()).await;
        let retention = config.stream_retention.max_age;
        let shared = Arc::new(Shared {
            state: Mutex::new(IndexState {
                entries: HashMap::new(),
                tail: None,
                last_prune: Instant::now(),
            }),
            demux: Demux::new(config.subscriber_buffer),
            caught_up: watch::channel(false).0,
            marker: uuid::Uuid::new_v4().simple().to_string(),
            progress: tokio::sync::Notify::new(),
            synced: watch::channel(0).0,
            syncs: std::sync::atomic::AtomicU64::new(0),
            retention,
        });
        let since = epoch_secs().saturating_sub(retention.as_secs());
        let first = open_consumer(
            conn,
            &config.token_stream,
            Start::Timestamp(since),
            config.stream_prefetch,
        )
        .await?;
        let task = tokio::spawn(run_tail(
            conn.clone(),
            config.token_stream.clone(),
            shared.clone(),
            first,
        ));
        Ok(Self {
            conn: conn.clone(),
            publisher: Publisher::new(conn.clone()),
            stream: config.token_stream.clone(),
            shared,
            tail: task.abort_handle(),
        })
    }

    /// What the index knows of `key` (after catching up with the log; for a stream it does
    /// not know, after reading everything appended before the question).
    pub(crate) async fn status(&self, key: &StreamKey) -> Result<StreamStatus> {
        self.shared.wait_caught_up().await?;
        if !self.shared.lock().entries.contains_key(key) {
            self.sync_index().await?;
        }
        let st = self.shared.lock();
        Ok(match st.entries.get(key) {
            None => StreamStatus::NotFound,
            Some(Entry { end: None, .. }) => StreamStatus::Open,
            Some(Entry {
                end: Some(finish_reason),
                ..
            }) => StreamStatus::Ended {
                finish_reason: finish_reason.clone(),
            },
        })
    }

    /// The envelopes of `key` after `after_seq` (all with `None`): replayed from the log
    /// where it holds them, then live.
    pub(crate) async fn subscribe(
        &self,
        key: &StreamKey,
        after_seq: Option<u64>,
    ) -> Result<EnvelopeStream> {
        if after_seq.is_some() {
            self.shared.wait_caught_up().await?;
        }
        if let Some(after) = after_seq {
            self.wait_until_indexed(key, after).await;
        }
        let caught_up = *self.shared.caught_up.borrow();
        let st = self.shared.lock();
        let Some(entry) = st.entries.get(key).cloned() else {
            if let (Some(after), true) = (after_seq, caught_up) {
                // Never published, or gone with the log's retention.
                return Err(Error::HistoryLost { after_seq: after });
            }
            // Not started yet: the tail delivers it from its first envelope.
            let live = self.shared.demux.subscribe(key);
            drop(st);
            return Ok(contiguous(live, after_seq));
        };
        if let Some(after) = after_seq {
            let attempt = TokenEnvelope::attempt_of_seq(after);
            let ahead = attempt > entry.attempt
                || (attempt == entry.attempt && after > entry.last_seq && entry.end.is_none());
            if ahead {
                return Err(Error::invalid(
                    "Last-Event-ID",
                    format!(
                        "{after} is ahead of the stream (its last envelope is {})",
                        entry.last_seq
                    ),
                ));
            }
        }
        let target = st.tail.unwrap_or(entry.first_offset);
        let live = entry
            .end
            .is_none()
            .then(|| self.shared.demux.subscribe(key));
        drop(st);
        let (tx, rx) = mpsc::channel(REPLAY_BUFFER);
        tokio::spawn(replay(
            self.conn.clone(),
            self.stream.clone(),
            Replay {
                key: key.clone(),
                from: entry.replay_from(after_seq),
                target,
                after_seq,
            },
            tx,
        ));
        let replayed = tokio_stream::wrappers::ReceiverStream::new(rx).boxed();
        let all = match live {
            Some(live) => replayed.chain(live).boxed(),
            None => replayed,
        };
        Ok(contiguous(all, after_seq))
    }
}

impl StreamLog {
    /// Appends a fresh marker of this instance to the log and waits until the tail reads it
    /// back: then the index holds everything appended before this call (another instance
    /// may have relayed envelopes this one has not read yet).
    async fn sync_index(&self) -> Result<()> {
        let n = self
            .shared
            .syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let mut rx = self.shared.synced.subscribe();
        let marker = format!("{}/{n}", self.shared.marker);
        publish_marker(&self.publisher, &self.stream, &marker).await?;
        let synced = async move { rx.wait_for(|s| *s >= n).await.is_ok() };
        match tokio::time::timeout(CATCH_UP_LIMIT, synced).await {
            Ok(true) => Ok(()),
            _ => Err(Error::unavailable(
                "RabbitMQ",
                "the gateway could not read the token stream up to now",
            )),
        }
    }

    /// Waits (at most [`AHEAD_WAIT`]) until this instance's index has seen seq `after` of
    /// `key`, or its end: a client that read seq `after` from another instance may resume
    /// here a moment before this instance's tail has read that far.
    async fn wait_until_indexed(&self, key: &StreamKey, after: u64) {
        let deadline = Instant::now() + AHEAD_WAIT;
        loop {
            let progressed = self.shared.progress.notified();
            tokio::pin!(progressed);
            progressed.as_mut().enable();
            let ahead = match self.shared.lock().entries.get(key) {
                // Not indexed here yet, or never published: settle which.
                None => None,
                Some(e) => {
                    let attempt = TokenEnvelope::attempt_of_seq(after);
                    Some(
                        e.end.is_none()
                            && (attempt > e.attempt
                                || (attempt == e.attempt && after > e.last_seq)),
                    )
                }
            };
            let ahead = match ahead {
                Some(ahead) => ahead,
                None => {
                    if let Err(e) = self.sync_index().await {
                        tracing::debug!(error = %e, "token stream sync failed");
                    }
                    return;
                }
            };
            if !ahead || tokio::time::timeout_at(deadline, progressed).await.is_err() {
                return;
            }
        }
    }
}

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Opens a channel with the prefetch a stream consumer needs and consumes the log from
/// `start`.
async fn open_consumer(
    conn: &AmqpConnection,
    stream: &str,
    start: Start,
    prefetch: u16,
) -> Result<(Channel, Consumer)> {
    let ch = conn.channel().await?;
    ch.basic_qos(prefetch.max(1), BasicQosOptions::default())
        .await
        .map_err(lapin_err("basic.qos (token stream)"))?;
    let offset = match start {
        Start::Timestamp(secs) => AMQPValue::Timestamp(secs),
        Start::Offset(n) => AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX)),
    };
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-stream-offset"), offset);
    let consumer = ch
        .basic_consume(
            short(stream)?,
            "".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .map_err(lapin_err("basic.consume (token stream)"))?;
    Ok((ch, consumer))
}

/// Acknowledges stream deliveries in groups: on a stream queue an ack only grants the
/// consumer more credit, so one `multiple` ack per quarter of the prefetch is enough.
struct Credit {
    every: u64,
    since: u64,
}

impl Credit {
    fn new(prefetch: u16) -> Self {
        Self {
            every: u64::from(prefetch / 4).max(1),
            since: 0,
        }
    }

    async fn delivered(&mut self, ch: &Channel, tag: u64) -> Result<()> {
        self.since += 1;
        if self.since >= self.every {
            self.since = 0;
            ch.basic_ack(tag, BasicAckOptions { multiple: true })
                .await
                .map_err(lapin_err("basic.ack (token stream)"))?;
        }
        Ok(())
    }
}

/// Appends this instance's marker to the log.
async fn publish_marker(publisher: &Publisher, stream: &str, marker: &str) -> Result<()> {
    let out = Outgoing {
        exchange: "".into(),
        routing_key: short(stream)?,
        body: Vec::new(),
        properties: BasicProperties::default()
            .with_headers(codec::table([(HEADER_MARKER, codec::text(marker))])),
    };
    publisher.publish("token stream marker", &[out]).await
}

/// The tail consumer: indexes and routes every message; after a failure it consumes again
/// from the next offset, so live subscribers lose nothing across a reconnect or a broker
/// restart (the log is durable).
async fn run_tail(
    conn: AmqpConnection,
    stream: String,
    shared: Arc<Shared>,
    first: (Channel, Consumer),
) {
    let publisher = Publisher::new(conn.clone());
    let prefetch = conn.config().stream_prefetch.max(1);
    let mut next: Option<u64> = None;
    let mut current = Some(first);
    loop {
        let (ch, mut consumer) = match current.take() {
            Some(c) => c,
            None => {
                conn.pause().await;
                let since = epoch_secs().saturating_sub(shared.retention.as_secs());
                let start = next.map_or(Start::Timestamp(since), Start::Offset);
                match open_consumer(&conn, &stream, start, prefetch).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, stream, "token stream not back yet");
                        continue;
                    }
                }
            }
        };
        if let Err(e) = publish_marker(&publisher, &stream, &shared.marker).await {
            tracing::warn!(error = %e, "could not append the readiness marker");
        }
        let mut credit = Credit::new(prefetch);
        while let Some(item) = consumer.next().await {
            let d = match item {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, stream, "token stream consumer failed; resuming");
                    break;
                }
            };
            let headers = d.properties.headers().as_ref();
            let Some(offset) = header_u64(headers, HEADER_OFFSET) else {
                tracing::warn!(
                    stream,
                    "a message without x-stream-offset: is this a stream queue?"
                );
                continue;
            };
            if next.is_some_and(|n| offset < n) {
                continue; // delivered again after a reconnect
            }
            shared.route(offset, &d);
            next = Some(offset + 1);
            if let Err(e) = credit.delivered(&ch, d.delivery_tag).await {
                tracing::warn!(error = %e, "token stream ack failed; resuming");
                break;
            }
        }
        shared.caught_up.send_replace(false);
        let _ = ch.close(200, "resuming".into()).await;
    }
}

/// One replay: the envelopes of `key` in offsets `from..=target`.
#[derive(Debug)]
struct Replay {
    key: StreamKey,
    from: u64,
    target: u64,
    after_seq: Option<u64>,
}

/// Reads a replay with its own consumer, reconnecting where it left off; ends at the
/// target offset or the stream's `End`, or when the subscriber is gone.
async fn replay(
    conn: AmqpConnection,
    stream: String,
    r: Replay,
    tx: mpsc::Sender<Result<TokenEnvelope>>,
) {
    let prefetch = REPLAY_PREFETCH;
    let give_up = conn.config().backoff.give_up_after;
    let mut from = r.from;
    let mut failing_since: Option<Instant> = None;
    loop {
        let (ch, mut consumer) =
            match open_consumer(&conn, &stream, Start::Offset(from), prefetch).await {
                Ok(c) => c,
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= give_up {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    conn.pause().await;
                    continue;
                }
            };
        failing_since = None;
        let mut credit = Credit::new(prefetch);
        let finished = loop {
            let item = tokio::select! {
                item = consumer.next() => item,
                () = tx.closed() => break true,
            };
            let Some(Ok(d)) = item else { break false };
            let offset = header_u64(d.properties.headers().as_ref(), HEADER_OFFSET);
            let Some(offset) = offset else { continue };
            if offset < from {
                continue;
            }
            if offset > r.target {
                break true;
            }
            let mut ended = false;
            for dec in codec::decode_envelopes(&d.data).into_iter().flatten() {
                if dec.key != r.key {
                    continue;
                }
                let Some(seq) = dec.seq else { continue };
                let env = dec.into_envelope(seq);
                let end = env.event.is_end();
                if (end || r.after_seq.is_none_or(|a| seq > a)) && tx.send(Ok(env)).await.is_err() {
                    break;
                }
                ended |= end;
            }
            from = offset + 1;
            if ended || offset >= r.target || tx.is_closed() {
                break true;
            }
            if credit.delivered(&ch, d.delivery_tag).await.is_err() {
                break false;
            }
        };
        let _ = ch.close(200, "replayed".into()).await;
        if finished {
            return;
        }
        conn.pause().await;
    }
}

/// Passes envelopes through in order, dropping duplicates, and ends the stream with
/// [`Error::HistoryLost`] at a gap: the first envelope after `after_seq` must follow it (or
/// start a new attempt), and so must each one after. A log whose retention dropped the
/// start of a stream thus never hands out its tail as if it were whole.
fn contiguous(stream: EnvelopeStream, after_seq: Option<u64>) -> EnvelopeStream {
    let mut last = after_seq;
    let checked = stream.filter_map(move |item| {
        let out = match item {
            Err(e) => Some(Err(e)),
            Ok(env) => {
                let follows = match last {
                    None => env.seq & IN_ATTEMPT == 0,
                    Some(l) => {
                        env.seq == l + 1
                            || (env.seq & IN_ATTEMPT == 0
                                && TokenEnvelope::attempt_of_seq(env.seq)
                                    > TokenEnvelope::attempt_of_seq(l))
                    }
                };
                if last.is_some_and(|l| env.seq <= l) {
                    // Already delivered, or the End again for a resume at or after it.
                    env.event.is_end().then_some(Ok(env))
                } else if follows {
                    last = Some(env.seq);
                    Some(Ok(env))
                } else {
                    Some(Err(Error::HistoryLost {
                        after_seq: last.unwrap_or(0),
                    }))
                }
            }
        };
        std::future::ready(out)
    });
    end_after_end(checked.boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(seq: u64, event: StreamEvent) -> Result<TokenEnvelope> {
        let attempt = TokenEnvelope::attempt_of_seq(seq);
        Ok(TokenEnvelope::new(
            StreamKey::new("s", "m"),
            attempt,
            seq,
            event,
        ))
    }

    fn end() -> StreamEvent {
        StreamEvent::End {
            finish_reason: FinishReason::Stop,
            usage: None,
        }
    }

    async fn run(items: Vec<Result<TokenEnvelope>>, after: Option<u64>) -> Vec<String> {
        contiguous(futures::stream::iter(items).boxed(), after)
            .map(|r| match r {
                Ok(e) if e.event.is_end() => format!("end@{}", e.seq),
                Ok(e) => e.seq.to_string(),
                Err(e) => format!("err: {e}"),
            })
            .collect()
            .await
    }

    #[tokio::test]
    async fn duplicates_are_dropped_and_attempts_may_restart() {
        let base = TokenEnvelope::seq_base(2);
        let got = run(
            vec![
                env(0, StreamEvent::token("a")),
                env(1, StreamEvent::token("b")),
                env(1, StreamEvent::token("b")),
                env(base, StreamEvent::token("a")),
                env(base + 1, end()),
            ],
            None,
        )
        .await;
        assert_eq!(
            got,
            vec![
                "0",
                "1",
                base.to_string().as_str(),
                &format!("end@{}", base + 1)
            ]
        );
    }

    #[tokio::test]
    async fn a_stream_whose_start_is_gone_is_history_lost_not_a_tail() {
        let got = run(vec![env(5, StreamEvent::token("x")), env(6, end())], None).await;
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with("err: history lost"), "{got:?}");
        let got = run(vec![env(5, StreamEvent::token("x"))], Some(2)).await;
        assert!(got[0].starts_with("err: history lost"), "{got:?}");
    }

    #[tokio::test]
    async fn a_resume_at_or_after_the_end_gets_the_end_again() {
        let got = run(
            vec![env(3, StreamEvent::token("x")), env(4, end())],
            Some(4),
        )
        .await;
        assert_eq!(got, vec!["end@4"]);
        let got = run(
            vec![env(3, StreamEvent::token("x")), env(4, end())],
            Some(2),
        )
        .await;
        assert_eq!(got, vec!["3", "end@4"]);
    }
}
