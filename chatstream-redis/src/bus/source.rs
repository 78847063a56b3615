//! [`RedisTokenSource`]: replay from any position, then follow with `XREAD BLOCK`.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use chatstream_core::wire::seed000::decode_envelope;
use chatstream_core::{EnvelopeStream, Error, Result, StreamKey, TokenEnvelope, TokenSource};
use futures::StreamExt;
use redis::streams::StreamReadReply;

use super::{parse_id, BusConfig};
use crate::client::Blocking;
use crate::error::from_redis;
use crate::RedisClient;

/// Reads streams for gateways (see the [module docs](crate::bus)). Any instance can resume
/// any stream: the position is the envelope `seq`, which is the entry id.
#[derive(Debug, Clone)]
pub struct RedisTokenSource {
    client: RedisClient,
    config: BusConfig,
}

impl RedisTokenSource {
    /// A source on `client`.
    pub fn new(client: RedisClient, config: BusConfig) -> Self {
        Self { client, config }
    }
}

/// What the marker and the stream say at one moment.
struct Probe {
    stream_exists: bool,
    marker_exists: bool,
    trimmed: Option<(u64, u64)>,
}

impl Probe {
    fn pipeline(pipe: &mut redis::Pipeline, stream: &str, marker: &str) {
        pipe.exists(stream).exists(marker).hget(marker, "trimmed");
    }

    fn from_reply((stream_exists, marker_exists, trimmed): (bool, bool, Option<String>)) -> Self {
        Probe {
            stream_exists,
            marker_exists,
            trimmed: trimmed.as_deref().and_then(parse_id),
        }
    }
}

#[async_trait]
impl TokenSource for RedisTokenSource {
    async fn subscribe(&self, key: &StreamKey, after_seq: Option<u64>) -> Result<EnvelopeStream> {
        let keys = self.client.keys();
        let stream = keys.token_stream(key);
        let marker = keys.token_marker(key);
        let mut pipe = redis::pipe();
        Probe::pipeline(&mut pipe, &stream, &marker);
        pipe.cmd("HMGET").arg(&marker).arg(&["ended", "end"]);
        type Reply = (
            bool,
            bool,
            Option<String>,
            (Option<String>, Option<Vec<u8>>),
        );
        let reply: Reply = pipe
            .query_async(&mut self.client.connection())
            .await
            .map_err(from_redis)?;
        let (end_id, end_json) = reply.3;
        let probe = Probe::from_reply((reply.0, reply.1, reply.2));
        let position = after_seq.map_or((0, 0), |n| (n, 1));
        // At or after the End of a finished stream: the End again (kept in the marker, so
        // even after the stream expired), so the subscriber learns the stream is over.
        if let (Some(end_id), Some(json), Some(_)) =
            (end_id.as_deref().and_then(parse_id), end_json, after_seq)
        {
            if position >= end_id {
                let end = decode_envelope(&json)?.into_envelope(end_id.0);
                return Ok(futures::stream::iter([Ok(end)]).boxed());
            }
        }
        let lost = Error::HistoryLost {
            after_seq: after_seq.unwrap_or(0),
        };
        if !probe.stream_exists && (probe.marker_exists || after_seq.is_some()) {
            // Expired (the marker outlives it), or asked-for history we know nothing of.
            return Err(lost);
        }
        if probe.trimmed.is_some_and(|t| t > position) {
            return Err(lost);
        }
        let reader = Reader {
            client: self.client.clone(),
            config: self.config.clone(),
            stream,
            marker,
            position,
            after_seq: after_seq.unwrap_or(0),
            seen: probe.stream_exists,
            conn: None,
            buffer: VecDeque::new(),
            done: false,
        };
        Ok(futures::stream::unfold(reader, Reader::next).boxed())
    }
}

/// Longest pause between retries of a failed read (about 3 s in all).
const MAX_BACKOFF: Duration = Duration::from_millis(1600);

/// One subscription.
struct Reader {
    client: RedisClient,
    config: BusConfig,
    stream: String,
    marker: String,
    /// The last entry id delivered (or the one to read after).
    position: (u64, u64),
    /// The seq to report in `HistoryLost`.
    after_seq: u64,
    /// The stream has been seen to exist.
    seen: bool,
    conn: Option<Blocking>,
    buffer: VecDeque<TokenEnvelope>,
    done: bool,
}

impl Reader {
    async fn next(mut self) -> Option<(Result<TokenEnvelope>, Self)> {
        loop {
            if let Some(env) = self.buffer.pop_front() {
                self.after_seq = env.seq;
                if env.event.is_end() {
                    self.finish();
                }
                return Some((Ok(env), self));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.read().await {
                self.finish();
                return Some((Err(e), self));
            }
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.buffer.clear();
        self.conn = None; // back to the pool
    }

    /// One `XREAD BLOCK`. The marker is read as well (one more round trip) only when the
    /// read says something may be wrong: nothing came (expired under us?) or what came does
    /// not follow our position (trimmed past it?). Entries that follow on seamlessly, the
    /// normal case, cost one command instead of four.
    async fn read(&mut self) -> Result<()> {
        let block_ms = u64::try_from(self.config.block.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        pipe.cmd("XREAD")
            .arg("COUNT")
            .arg(self.config.read_count.max(1))
            .arg("BLOCK")
            .arg(block_ms.max(1))
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(format!("{}-{}", self.position.0, self.position.1));
        let (read,): (Option<StreamReadReply>,) = self.query(&pipe).await?;
        let entries = read
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>())
            .unwrap_or_default();
        let seamless = entries
            .first()
            .and_then(|e| parse_id(&e.id))
            .is_some_and(|first| follows(self.position, first));
        if !seamless {
            let mut pipe = redis::pipe();
            Probe::pipeline(&mut pipe, &self.stream, &self.marker);
            let probe = Probe::from_reply(self.query(&pipe).await?);
            let lost = Error::HistoryLost {
                after_seq: self.after_seq,
            };
            // Something after our position was trimmed away (before or while we read).
            if probe.trimmed.is_some_and(|t| t > self.position) {
                return Err(lost);
            }
            if entries.is_empty() {
                if probe.stream_exists {
                    self.seen = true;
                } else if self.seen || probe.marker_exists {
                    return Err(lost); // expired under us
                }
                return Ok(());
            }
        }
        self.seen = true;
        for entry in entries {
            let id =
                parse_id(&entry.id).ok_or_else(|| Error::decode("stream entry id", &entry.id))?;
            let body: Vec<u8> = entry
                .get("env")
                .ok_or_else(|| Error::decode("stream entry", "no env field"))?;
            let env = decode_envelope(&body)?.into_envelope(id.0);
            self.position = id;
            self.buffer.push_back(env);
        }
        Ok(())
    }

    /// Sends `pipe` on this subscription's connection. The position makes a retry exact, so
    /// connection trouble (a pooled connection that died, a server restart) is retried a
    /// few times before it is reported.
    async fn query<T: redis::FromRedisValue>(&mut self, pipe: &redis::Pipeline) -> Result<T> {
        let mut backoff = Duration::from_millis(50);
        loop {
            let conn = match self.conn.as_mut() {
                Some(c) => c,
                None => self
                    .conn
                    .insert(self.client.blocking(self.config.block).await?),
            };
            match conn.query(pipe).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.conn = None;
                    let transient = e.is_io_error() || e.is_connection_dropped();
                    if !transient || backoff > MAX_BACKOFF {
                        return Err(from_redis(e));
                    }
                    tracing::debug!(error = %e, "token stream read failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        }
    }
}

/// Whether entry `next` comes right after `position` in one attempt (ids are `seq-1`; the
/// start of a stream is `0-0`).
fn follows(position: (u64, u64), next: (u64, u64)) -> bool {
    next.1 == 1 && (next.0 == position.0 + 1 || (position == (0, 0) && next.0 == 0))
}

#[cfg(test)]
mod tests {
    use super::follows;

    #[test]
    fn only_the_next_entry_of_an_attempt_follows_on() {
        assert!(follows((0, 0), (0, 1)));
        assert!(follows((0, 1), (1, 1)));
        assert!(follows((41, 1), (42, 1)));
        assert!(
            !follows((41, 1), (43, 1)),
            "a gap: trimmed, or a new attempt"
        );
        assert!(!follows((0, 0), (5, 1)));
        assert!(!follows((3, 1), (4, 0)));
    }
}
