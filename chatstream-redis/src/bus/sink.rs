//! [`RedisTokenSink`]: one script call per round trip, covering every stream of every
//! publish waiting, sent in call order by one writer task.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use chatstream_core::wire::seed000::{encode_envelope, Mode};
use chatstream_core::{Destination, Error, Result, StreamKey, TokenEnvelope, TokenSink};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::scripts::PUBLISH;
use super::{entry_id, millis, BusConfig};
use crate::error::{from_redis, is_transient};
use crate::RedisClient;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between two tries of a round.
const MAX_BACKOFF: Duration = Duration::from_millis(800);
/// Envelopes per script call at most (a call holds Redis for its whole run); a single
/// publish larger than this still goes out whole.
const MAX_ROUND_ENVELOPES: usize = 4096;

/// Publishes envelopes to their streams (see the [module docs](crate::bus)).
///
/// Publishes are appended in call order, whatever the number in flight: a publish hands
/// its envelopes, already encoded, to the sink's writer task when it is called (before it
/// first waits), and the writer sends what is waiting as one script call (one round trip
/// covering every stream of every waiting publish), one call at a time. While a call is out,
/// the publishes made meanwhile wait and go together in the next one, so batches grow with
/// the load.
///
/// A call that fails on connection trouble (Redis restarting) is sent again for
/// [`BusConfig::retry_for`] (from each publish's call), before anything later; appends are
/// idempotent, so a try that reached Redis before its connection dropped does no harm.
#[derive(Debug, Clone)]
pub struct RedisTokenSink {
    client: RedisClient,
    config: BusConfig,
    writer: mpsc::UnboundedSender<Call>,
}

/// The envelopes of one stream in one publish.
#[derive(Debug)]
struct Group {
    stream: String,
    marker: String,
    /// Entry id of the group's `End` ('' when none).
    end_id: String,
    /// Entry id and canonical JSON of each envelope, in batch order.
    entries: Vec<(String, String)>,
}

/// One publish waiting for the writer.
#[derive(Debug)]
struct Call {
    groups: Vec<Group>,
    envelopes: usize,
    deadline: Instant,
    done: oneshot::Sender<Result<()>>,
}

impl RedisTokenSink {
    /// A sink on `client`. Loads the publish script, so that the first publishes never
    /// race to load it, and starts the sink's writer task (it ends when the sink and its
    /// clones are dropped and what they published is sent).
    pub async fn new(client: RedisClient, config: BusConfig) -> Result<Self> {
        PUBLISH
            .prepare_invoke()
            .load_async(&mut client.shared())
            .await
            .map_err(from_redis)?;
        let (writer, calls) = mpsc::unbounded_channel();
        tokio::spawn(write(client.clone(), config.clone(), calls));
        Ok(Self {
            client,
            config,
            writer,
        })
    }

    /// The groups of a batch: streams in order of first appearance, envelopes in batch
    /// order.
    fn groups(&self, batch: &[TokenEnvelope]) -> Result<Vec<Group>> {
        let keys = self.client.keys();
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<&StreamKey, usize> = HashMap::new();
        for env in batch {
            let i = *index.entry(&env.key).or_insert_with(|| {
                groups.push(Group {
                    stream: keys.token_stream(&env.key),
                    marker: keys.token_marker(&env.key),
                    end_id: String::new(),
                    entries: Vec::new(),
                });
                groups.len() - 1
            });
            let json = encode_envelope(env, Mode::Canonical)
                .ok_or_else(|| Error::invalid("envelope", "not representable"))?;
            let id = entry_id(env.seq);
            if env.event.is_end() {
                groups[i].end_id.clone_from(&id);
            }
            groups[i].entries.push((id, json));
        }
        Ok(groups)
    }
}

#[async_trait]
impl TokenSink for RedisTokenSink {
    async fn publish(&self, _destination: &Destination, batch: &[TokenEnvelope]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // Everything up to the hand-over is synchronous: the writer gets publishes in the
        // order they were called.
        let (done, outcome) = oneshot::channel();
        let call = Call {
            groups: self.groups(batch)?,
            envelopes: batch.len(),
            deadline: Instant::now() + self.config.retry_for,
            done,
        };
        self.writer.send(call).map_err(|_| Error::Closed)?;
        outcome.await.map_err(|_| Error::Closed)?
    }
}

/// The writer task: sends waiting publishes as one script call at a time, in call order.
async fn write(client: RedisClient, config: BusConfig, mut calls: mpsc::UnboundedReceiver<Call>) {
    let mut queue: VecDeque<Call> = VecDeque::new();
    let mut backoff = FIRST_BACKOFF;
    loop {
        if queue.is_empty() {
            match calls.recv().await {
                Some(call) => queue.push_back(call),
                None => return,
            }
        }
        while let Ok(call) = calls.try_recv() {
            queue.push_back(call);
        }
        // A round: the oldest publishes, up to MAX_ROUND_ENVELOPES (at least one).
        let mut n = 0;
        let mut envelopes = 0;
        for call in &queue {
            if n > 0 && envelopes + call.envelopes > MAX_ROUND_ENVELOPES {
                break;
            }
            envelopes += call.envelopes;
            n += 1;
        }
        match send(&client, &config, queue.range(..n)).await {
            Ok(results) => {
                backoff = FIRST_BACKOFF;
                let mut results = results.into_iter();
                let mut stale = 0;
                for call in queue.drain(..n) {
                    let mut outcome = Ok(());
                    for _ in 0..call.groups.len() {
                        let (_added, s, error) = results.next().unwrap_or((0, 0, String::new()));
                        stale += s;
                        if !error.is_empty() && outcome.is_ok() {
                            outcome = Err(Error::unavailable("redis", error));
                        }
                    }
                    let _ = call.done.send(outcome);
                }
                if stale > 0 {
                    tracing::debug!(
                        stale,
                        "dropped envelopes of an attempt superseded by a redelivery"
                    );
                }
            }
            Err(e) if is_transient(&e) => {
                tracing::debug!(error = %e, "token publish failed; retrying");
                let now = Instant::now();
                // Deadlines follow call order: the expired publishes are the oldest.
                while queue.front().is_some_and(|c| c.deadline <= now) {
                    if let Some(call) = queue.pop_front() {
                        let _ = call.done.send(Err(failure(&e)));
                    }
                }
                if let Some(first) = queue.front() {
                    tokio::time::sleep(backoff.min(first.deadline.saturating_duration_since(now)))
                        .await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            Err(e) => {
                for call in queue.drain(..n) {
                    let _ = call.done.send(Err(failure(&e)));
                }
            }
        }
    }
}

/// The error of each publish of a failed round (timeouts stay timeouts, as in
/// [`from_redis`]).
fn failure(e: &redis::RedisError) -> Error {
    if e.is_timeout() {
        Error::Timeout("redis command")
    } else {
        Error::unavailable("redis", e.to_string())
    }
}

/// Sends one round once: the groups of `calls`, in order, in one script call (on a cluster,
/// one per hash slot, concurrently: a script may touch one slot only). The results come
/// back in group order.
async fn send<'a>(
    client: &RedisClient,
    config: &BusConfig,
    calls: impl Iterator<Item = &'a Call>,
) -> redis::RedisResult<Vec<(u64, u64, String)>> {
    let groups: Vec<&Group> = calls.flat_map(|c| &c.groups).collect();
    if !client.is_cluster() {
        return invoke(client, config, &groups).await;
    }
    // Group indices per slot, slots in order of first appearance.
    let mut by_slot: Vec<(u16, Vec<usize>)> = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let slot = crate::keys::slot(g.stream.as_bytes());
        match by_slot.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, members)) => members.push(i),
            None => by_slot.push((slot, vec![i])),
        }
    }
    let replies = futures::future::join_all(by_slot.iter().map(|(_, members)| {
        let part: Vec<&Group> = members.iter().map(|&i| groups[i]).collect();
        async move { invoke(client, config, &part).await }
    }))
    .await;
    let mut out = vec![(0, 0, String::new()); groups.len()];
    for ((_, members), reply) in by_slot.iter().zip(replies) {
        for (&i, result) in members.iter().zip(reply?) {
            out[i] = result;
        }
    }
    Ok(out)
}

/// One script call with `groups`.
async fn invoke(
    client: &RedisClient,
    config: &BusConfig,
    groups: &[&Group],
) -> redis::RedisResult<Vec<(u64, u64, String)>> {
    let mut inv = PUBLISH.prepare_invoke();
    inv.arg(config.max_len.max(1))
        .arg(millis(config.idle_expiry))
        .arg(millis(config.retention_after_end))
        .arg(millis(config.tombstone))
        .arg(client.keys().news_channel());
    for group in groups {
        inv.key(&group.stream)
            .key(&group.marker)
            .arg(group.entries.len())
            .arg(&group.end_id);
        for (id, json) in &group.entries {
            inv.arg(id).arg(json);
        }
    }
    // Loads the script again when Redis lost it (a restart, SCRIPT FLUSH).
    inv.invoke_async(&mut client.shared()).await
}
