//! [`RedisTokenSink`]: one round trip per round, covering every stream of every publish
//! waiting (plain appends where they can go, the script where an entry needs checking),
//! sent in call order by one writer task.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use chatstream_core::wire::seed000::{encode_envelope, Mode};
use chatstream_core::{Destination, Error, Result, StreamKey, TokenEnvelope, TokenSink};
use redis::aio::ConnectionLike;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::scripts::PUBLISH;
use super::{entry_id, millis, BusConfig};
use crate::error::{from_redis, is_transient};
use crate::RedisClient;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between two tries of a round.
const MAX_BACKOFF: Duration = Duration::from_millis(800);
/// Envelopes per round at most (a script call holds Redis for its whole run); a single
/// publish larger than this still goes out whole.
const MAX_ROUND_ENVELOPES: usize = 4096;

/// Publishes envelopes to their streams (see the [module docs](crate::bus)).
///
/// Publishes are appended in call order, whatever the number in flight: a publish hands
/// its envelopes, already encoded, to the sink's writer task when it is called (before it
/// first waits), and the writer sends what is waiting as one round (one round trip
/// covering every stream of every waiting publish), one round at a time. While a round is
/// out, the publishes made meanwhile wait and go together in the next one, so batches grow
/// with the load.
///
/// A round that fails on connection trouble (Redis restarting) is sent again for
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
    /// Seq of the first and of the last envelope.
    seqs: (u64, u64),
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
                    seqs: (env.seq, env.seq),
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
            groups[i].seqs.1 = env.seq;
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

/// Sends one round once: the groups of `calls`, in order (see [`send_pipelined`] and
/// [`send_cluster`]). The results come back in group order.
async fn send<'a>(
    client: &RedisClient,
    config: &BusConfig,
    calls: impl Iterator<Item = &'a Call>,
) -> redis::RedisResult<Vec<(u64, u64, String)>> {
    let groups: Vec<&Group> = calls.flat_map(|c| &c.groups).collect();
    if client.is_cluster() {
        send_cluster(client, config, &groups).await
    } else {
        send_pipelined(client, config, &groups).await
    }
}

/// `groups` through the script: one call on one server; on a cluster one per hash slot,
/// concurrently (a script may touch one slot only). Results in group order.
async fn send_scripts(
    client: &RedisClient,
    config: &BusConfig,
    groups: &[&Group],
) -> redis::RedisResult<Vec<(u64, u64, String)>> {
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    if !client.is_cluster() {
        return invoke(client, config, groups).await;
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

/// How often (in seqs) the publish script checks trimming and renews the expiries: as
/// `CHECK` in [`PUBLISH`].
fn check_interval(max_len: usize) -> u64 {
    (max_len as u64 / 10).clamp(1, 128)
}

/// How a group may go without the script, if it may: it has no `End` and is the only
/// group of its stream in the round, and either
/// - starts the first attempt (seq 0) and stays below the check interval: a new stream,
///   made by plain `XADD`s, then its marker's `started` and both expiries
///   ([`Part::Start`]), or
/// - is in the middle of an attempt and does not cross a multiple of the check interval
///   (where the script trims and renews the expiries): plain `XADD … NOMKSTREAM`s
///   ([`Part::Plain`]).
fn plain(group: &Group, check: u64, alone: bool, index: usize) -> Option<Part> {
    let (first, last) = group.seqs;
    if !alone || !group.end_id.is_empty() {
        return None;
    }
    if first == 0 {
        return (last < check).then_some(Part::Start(index));
    }
    (first % TokenEnvelope::seq_base(2) != 0 && (first - 1) / check == last / check)
        .then_some(Part::Plain(index))
}

/// What a round's pipeline holds, in group order.
enum Part {
    /// A group as plain appends.
    Plain(usize),
    /// A group that starts a stream, as plain appends and the marker's start.
    Start(usize),
    /// Consecutive groups in one script call.
    Script(Vec<usize>),
}

/// One round on one server, in one round trip for the common case: the groups that may go
/// plain ([`plain`]) as `XADD`s under their explicit ids (about a third of the Redis CPU of
/// the same appends from Lua), the others in script calls, all in one pipeline
/// in group order, then one `PUBLISH` of the plain groups' news. A plain append that finds
/// no stream (Redis lost it) or an id already there (a retry, or another attempt's) leaves
/// its group to a script call after the pipeline, which checks every entry exactly as
/// before: the group is its stream's only one in the round, so nothing of that stream
/// went in between.
async fn send_pipelined(
    client: &RedisClient,
    config: &BusConfig,
    groups: &[&Group],
) -> redis::RedisResult<Vec<(u64, u64, String)>> {
    let parts = plan(groups, config);
    if parts.iter().all(|p| matches!(p, Part::Script(_))) {
        return invoke(client, config, groups).await;
    }
    let mut pipe = redis::pipe();
    let mut news = Vec::new();
    let invocations: Vec<_> = parts
        .iter()
        .filter_map(|p| match p {
            Part::Script(members) => {
                let part: Vec<&Group> = members.iter().map(|&i| groups[i]).collect();
                Some(invocation(client, config, &part))
            }
            Part::Plain(_) | Part::Start(_) => None,
        })
        .collect();
    let mut scripts = invocations.iter();
    for part in &parts {
        match part {
            Part::Plain(i) | Part::Start(i) => {
                add_plain(&mut pipe, groups[*i], part, config);
                news.push(groups[*i].stream.as_str());
            }
            Part::Script(_) => {
                if let Some(inv) = scripts.next() {
                    pipe.invoke_script(inv);
                }
            }
        }
    }
    pipe.cmd("PUBLISH")
        .arg(client.keys().news_channel())
        .arg(news.join("\n"))
        .ignore();
    let mut con = client.shared();
    // Command errors come back as values, in place.
    let replies = con.req_packed_commands(&pipe, 0, pipe.len()).await?;
    // The server lost the script (a restart, SCRIPT FLUSH): load it, send again.
    if replies
        .iter()
        .any(|r| matches!(r, redis::Value::ServerError(e) if e.code() == "NOSCRIPT"))
    {
        PUBLISH.prepare_invoke().load_async(&mut con).await?;
        return Box::pin(send_pipelined(client, config, groups)).await;
    }
    let mut replies = replies.into_iter();
    let mut out = vec![(0, 0, String::new()); groups.len()];
    let mut recheck = Vec::new();
    for part in &parts {
        match part {
            Part::Plain(i) | Part::Start(i) => {
                let (added, clean) = count_plain(&mut replies, groups[*i], part);
                out[*i].0 = added;
                if !clean {
                    recheck.push(*i);
                }
            }
            Part::Script(members) => {
                let reply = replies.next().unwrap_or(redis::Value::Nil);
                let results: Vec<(u64, u64, String)> =
                    redis::from_redis_value(&reply.extract_error()?)?;
                for (&i, result) in members.iter().zip(results) {
                    out[i] = result;
                }
            }
        }
    }
    finish_rechecks(client, config, groups, &recheck, &mut out).await?;
    Ok(out)
}

/// One round on a cluster: each group that may go plain ([`plain`]) as a pipeline of its
/// own (its keys share a slot), the others through the script per slot, all concurrently;
/// then the rechecks, then one `PUBLISH` of the plain groups' news. A plain group is the
/// only one of its stream in the round, so nothing orders it against the others.
async fn send_cluster(
    client: &RedisClient,
    config: &BusConfig,
    groups: &[&Group],
) -> redis::RedisResult<Vec<(u64, u64, String)>> {
    let parts = plan(groups, config);
    let scripted: Vec<usize> = parts
        .iter()
        .filter_map(|p| match p {
            Part::Script(members) => Some(members.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect();
    let plain_parts: Vec<(usize, &Part)> = parts
        .iter()
        .filter_map(|p| match p {
            Part::Plain(i) | Part::Start(i) => Some((*i, p)),
            Part::Script(_) => None,
        })
        .collect();
    let script_groups: Vec<&Group> = scripted.iter().map(|&i| groups[i]).collect();
    let plains = futures::future::join_all(plain_parts.iter().map(|&(i, part)| async move {
        let mut pipe = redis::pipe();
        add_plain(&mut pipe, groups[i], part, config);
        let mut con = client.shared();
        con.req_packed_commands(&pipe, 0, pipe.len()).await
    }));
    let (plains, scripts) = futures::join!(plains, send_scripts(client, config, &script_groups));
    let mut out = vec![(0, 0, String::new()); groups.len()];
    for (&i, result) in scripted.iter().zip(scripts?) {
        out[i] = result;
    }
    let mut recheck = Vec::new();
    for (&(i, part), reply) in plain_parts.iter().zip(plains) {
        match reply {
            Ok(values) => {
                let (added, clean) = count_plain(&mut values.into_iter(), groups[i], part);
                out[i].0 = added;
                if !clean {
                    recheck.push(i);
                }
            }
            Err(e) if is_transient(&e) => return Err(e),
            // A command error: the script tells which, exactly.
            Err(_) => recheck.push(i),
        }
    }
    finish_rechecks(client, config, groups, &recheck, &mut out).await?;
    if !plain_parts.is_empty() {
        let news: Vec<&str> = plain_parts
            .iter()
            .map(|&(i, _)| groups[i].stream.as_str())
            .collect();
        redis::cmd("PUBLISH")
            .arg(client.keys().news_channel())
            .arg(news.join("\n"))
            .query_async::<()>(&mut client.shared())
            .await?;
    }
    Ok(out)
}

/// The parts of a round, in group order: each group that may go plain, and runs of the
/// others.
fn plan(groups: &[&Group], config: &BusConfig) -> Vec<Part> {
    let check = check_interval(config.max_len.max(1));
    let mut per_stream: HashMap<&str, usize> = HashMap::with_capacity(groups.len());
    for g in groups {
        *per_stream.entry(g.stream.as_str()).or_default() += 1;
    }
    let mut parts: Vec<Part> = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        if let Some(part) = plain(g, check, per_stream[g.stream.as_str()] == 1, i) {
            parts.push(part);
        } else if let Some(Part::Script(members)) = parts.last_mut() {
            members.push(i);
        } else {
            parts.push(Part::Script(vec![i]));
        }
    }
    parts
}

/// Adds the commands of a plain group (`part` is [`Part::Plain`] or [`Part::Start`]).
fn add_plain(pipe: &mut redis::Pipeline, g: &Group, part: &Part, config: &BusConfig) {
    let start = matches!(part, Part::Start(_));
    for (id, json) in &g.entries {
        let cmd = pipe.cmd("XADD").arg(&g.stream);
        if !start {
            cmd.arg("NOMKSTREAM");
        }
        cmd.arg(id).arg("env").arg(json);
    }
    if start {
        pipe.cmd("HSETNX")
            .arg(&g.marker)
            .arg("started")
            .arg(1)
            .cmd("PEXPIRE")
            .arg(&g.stream)
            .arg(millis(config.idle_expiry))
            .cmd("PEXPIRE")
            .arg(&g.marker)
            .arg(millis(config.idle_expiry + config.tombstone));
    }
}

/// Takes the replies of a plain group: how many envelopes were appended, and whether all
/// were (else the script must look at the group).
fn count_plain(
    replies: &mut impl Iterator<Item = redis::Value>,
    g: &Group,
    part: &Part,
) -> (u64, bool) {
    let (mut added, mut clean) = (0, true);
    for _ in &g.entries {
        match replies.next() {
            Some(redis::Value::BulkString(_) | redis::Value::SimpleString(_)) => added += 1,
            // No stream, an id already there, or another error.
            _ => clean = false,
        }
    }
    if matches!(part, Part::Start(_)) {
        // HSETNX and the two PEXPIREs.
        for _ in 0..3 {
            if !matches!(replies.next(), Some(redis::Value::Int(_))) {
                clean = false;
            }
        }
    }
    (added, clean)
}

/// Sends the groups whose plain appends did not all go in through the script, which finds
/// what they added in place, and merges the results into `out`.
async fn finish_rechecks(
    client: &RedisClient,
    config: &BusConfig,
    groups: &[&Group],
    recheck: &[usize],
    out: &mut [(u64, u64, String)],
) -> redis::RedisResult<()> {
    let part: Vec<&Group> = recheck.iter().map(|&i| groups[i]).collect();
    let results = send_scripts(client, config, &part).await?;
    for (&i, (added, stale, error)) in recheck.iter().zip(results) {
        out[i] = (out[i].0 + added, stale, error);
    }
    Ok(())
}

/// The script call of `groups`.
fn invocation<'a>(
    client: &RedisClient,
    config: &BusConfig,
    groups: &[&'a Group],
) -> redis::ScriptInvocation<'a> {
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
    inv
}

/// One script call with `groups`.
async fn invoke(
    client: &RedisClient,
    config: &BusConfig,
    groups: &[&Group],
) -> redis::RedisResult<Vec<(u64, u64, String)>> {
    // Loads the script again when Redis lost it (a restart, SCRIPT FLUSH).
    invocation(client, config, groups)
        .invoke_async(&mut client.shared())
        .await
}
