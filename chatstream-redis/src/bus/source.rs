//! [`RedisTokenSource`]: replay from any position, then follow the streams the bus's news
//! names, many streams per read (see [`mux`](super::mux)).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatstream_core::wire::seed000::decode_envelope;
use chatstream_core::{
    EnvelopeStream, Error, FinishReason, Result, StreamEvent, StreamKey, StreamStatus, TokenSource,
};
use futures::StreamExt;

use super::mux::Mux;
use super::{parse_id, BusConfig};
use crate::client::retrying;
use crate::error::from_redis;
use crate::RedisClient;

/// Reads streams for gateways (see the [module docs](crate::bus)). Any instance can resume
/// any stream: the position is the envelope `seq`, which is the entry id.
///
/// Subscriptions are followed by a few reader tasks, each following up to
/// [`BusConfig::streams_per_reader`] streams and reading those with news with one `XREAD`
/// on the client's shared connection; clones share them. A reader starts with its first
/// subscription and ends with its last. The source holds one more connection, subscribed
/// to the bus's news, from its first subscription on.
///
/// A subscription made while Redis is away waits for it, up to [`BusConfig::retry_for`]
/// (its first look at the stream is a read, safe to repeat); one that is followed rides
/// out a restart of that length (see the [module docs](crate::bus#restarts)).
#[derive(Debug, Clone)]
pub struct RedisTokenSource {
    client: RedisClient,
    mux: Arc<Mux>,
    /// [`BusConfig::retry_for`].
    retry_for: Duration,
}

impl RedisTokenSource {
    /// A source on `client`.
    pub fn new(client: RedisClient, config: BusConfig) -> Self {
        Self {
            retry_for: config.retry_for,
            mux: Arc::new(Mux::new(client.clone(), config)),
            client,
        }
    }

    /// Streams followed right now by this source's readers (subscriptions not yet ended,
    /// whose subscriber is still there; a dropped one is forgotten as soon as its reader
    /// has noticed, which it is woken for).
    pub fn followed_streams(&self) -> usize {
        self.mux.followed()
    }

    /// Reader tasks running.
    pub fn readers(&self) -> usize {
        self.mux.readers()
    }

    /// How many times this source connected to the bus's news: 1 from its first
    /// subscription on, one more after each lost connection (then every followed stream
    /// is read again, so nothing published meanwhile is missed).
    pub fn news_connections(&self) -> usize {
        self.mux.news_connections()
    }
}

/// What the marker and the stream say at one moment.
pub(super) struct Probe {
    pub(super) stream_exists: bool,
    pub(super) marker_exists: bool,
    pub(super) trimmed: Option<(u64, u64)>,
}

impl Probe {
    pub(super) fn pipeline(pipe: &mut redis::Pipeline, stream: &str, marker: &str) {
        pipe.exists(stream).exists(marker).hget(marker, "trimmed");
    }

    pub(super) fn from_reply(
        (stream_exists, marker_exists, trimmed): (bool, bool, Option<String>),
    ) -> Self {
        Probe {
            stream_exists,
            marker_exists,
            trimmed: trimmed.as_deref().and_then(parse_id),
        }
    }
}

/// How long [`RedisTokenSource::status`] retries connection trouble.
const STATUS_RETRY: Duration = Duration::from_secs(1);

/// How an `End` envelope (stored JSON) ended its stream.
fn finish_reason(json: &[u8]) -> Result<FinishReason> {
    match decode_envelope(json)?.into_envelope(0).event {
        StreamEvent::End { finish_reason, .. } => Ok(finish_reason),
        _ => Err(Error::decode(
            "stream end",
            "the marker's end is not an End",
        )),
    }
}

#[async_trait]
impl TokenSource for RedisTokenSource {
    /// One round trip: the stream's last entry (`XREVRANGE … + - COUNT 1`) and the `End`
    /// its marker keeps. The last entry says `Open` or `Ended`; without one (never
    /// published, or expired) the marker's `End` says `Ended`, else `NotFound`. Connection
    /// trouble is retried for a second at most (a connection that died with a restarted
    /// server), so a stop while Redis is away fails soon.
    async fn status(&self, key: &StreamKey) -> Result<StreamStatus> {
        let keys = self.client.keys();
        let mut pipe = redis::pipe();
        pipe.cmd("XREVRANGE")
            .arg(keys.token_stream(key))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .hget(keys.token_marker(key), "end");
        let (last, end): (redis::streams::StreamRangeReply, Option<Vec<u8>>) =
            retrying(STATUS_RETRY.min(self.retry_for), || {
                let (pipe, mut con) = (&pipe, self.client.shared());
                async move { pipe.query_async(&mut con).await }
            })
            .await
            .map_err(from_redis)?;
        if let Some(entry) = last.ids.first() {
            let body: Vec<u8> = entry
                .get("env")
                .ok_or_else(|| Error::decode("stream entry", "no env field"))?;
            return Ok(match decode_envelope(&body)?.into_envelope(0).event {
                StreamEvent::End { finish_reason, .. } => StreamStatus::Ended { finish_reason },
                _ => StreamStatus::Open,
            });
        }
        Ok(match end {
            Some(json) => StreamStatus::Ended {
                finish_reason: finish_reason(&json)?,
            },
            None => StreamStatus::NotFound,
        })
    }

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
        // Read-only: retried while Redis restarts, so a stream subscribed to just after it
        // came back does not fail on a connection that died with the old server.
        let reply: Reply = retrying(self.retry_for, || {
            let (pipe, mut con) = (&pipe, self.client.shared());
            async move { pipe.query_async(&mut con).await }
        })
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
        Ok(self
            .mux
            .follow(
                stream,
                marker,
                position,
                after_seq.unwrap_or(0),
                probe.stream_exists,
            )
            .boxed())
    }
}

/// Whether entry `next` comes right after `position` in one attempt (ids are `seq-1`; the
/// start of a stream is `0-0`).
pub(super) fn follows(position: (u64, u64), next: (u64, u64)) -> bool {
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
