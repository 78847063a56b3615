//! The token bus on Redis Streams: one stream per [`StreamKey`](chatstream_core::StreamKey),
//! one entry per envelope, readable from any position by any gateway.
//!
//! # Entry ids
//!
//! An envelope with `seq = n` is stored under the explicit entry id `n-1` (milliseconds
//! part `n`, sequence part 1: id `0-0` is not allowed). Later attempts start at
//! [`TokenEnvelope::seq_base`](chatstream_core::TokenEnvelope::seq_base)`(attempt)` =
//! `(attempt - 1) << 32`, which still fits the 64-bit milliseconds part, so ids grow across
//! a redelivery. "After seq n" is therefore `XREAD … STREAMS key n-1`, and "from the start"
//! is `0-0`. A retried batch re-adds ids that exist: those are skipped. An envelope older
//! than the stream's newest entry from an *older* attempt (a worker that lost its request to
//! another) is dropped; one from the *same* attempt means publishes arrived out of order,
//! and the publish fails so the worker gives the request back.
//!
//! # Publishing
//!
//! A [`RedisTokenSink`] appends in call order however many publishes are in flight
//! (`WorkerConfig::max_in_flight`): each publish hands its envelopes to the sink's writer
//! task before it first waits, and the writer sends what is waiting as one round covering
//! every stream of every waiting publish, one round at a time; batches grow while a round
//! is out. On one server a round is one pipeline: batches in the middle of a stream go as
//! plain `XADD … NOMKSTREAM` under their entry ids, a stream's first batch as plain `XADD`s
//! with its marker's start and expiries, and only batches with an `End`, crossing a
//! multiple of 128 entries, or sharing the round with another batch of their stream go
//! through the publish script (which checks each entry), in order in the same pipeline. A
//! plain append that finds no stream or an id already there leaves its batch to the script
//! after the pipeline. The round ends with one `PUBLISH` of news (see Reading).
//!
//! # History and expiry
//!
//! Streams are capped at about [`BusConfig::max_len`] entries (checked every 128 entries,
//! or a tenth of the cap when less; trimmed in steps of a tenth, recording the highest
//! trimmed id in the marker hash). Every write sets a safety expiry
//! ([`BusConfig::idle_expiry`]) so abandoned streams vanish; `End` shortens it to [`BusConfig::retention_after_end`], and a later attempt appended
//! after an `End` (a redelivery) lives like a new answer until its own `End`. The marker
//! hash outlives the stream by [`BusConfig::tombstone`] (its expiry is renewed at the start,
//! every 128 entries and at the `End`), so a late resume gets
//! [`Error::HistoryLost`](chatstream_core::Error::HistoryLost) instead of waiting for a
//! stream that will never come back. The marker also keeps the `End`: a resume at or after
//! it yields the `End` again (even once the stream expired), so the subscriber learns the
//! stream is over. A subscription to a stream that never existed (and asks for no
//! position) waits for it: gateways subscribe before they submit.
//!
//! # Reading
//!
//! Readers read only streams that have news. Each publish call ends with one `PUBLISH` on
//! the prefix's news channel naming the streams it appended to; a [`RedisTokenSource`]
//! holds one connection subscribed to it, and its reader tasks (shared by the source's
//! clones, up to [`BusConfig::streams_per_reader`] streams each) read the named streams
//! they follow with one non-blocking `XREAD` after each subscription's position, on the
//! client's shared connection. Redis's work per read is thus proportional to the streams
//! with news, not to the streams followed, and an envelope is read as soon as its publish
//! is done.
//!
//! - Pub/sub keeps nothing for a connection that is away: whenever the news connection is
//!   (re)made, every followed stream is read again after its position, and a stream without
//!   news for [`BusConfig::block`] is read (and its marker probed) anyway. Positions make
//!   every read exact, so nothing is missed or repeated.
//! - Every gateway gets all news of its prefix (one message per publish call, one line per
//!   stream), and keeps what its subscriptions follow.
//! - A subscriber that does not keep up is buffered up to [`BusConfig::read_count`]
//!   envelopes (one more read may add another `read_count`); then its reader stops reading
//!   that stream, keeping its position, until the subscriber has taken half. The reader's
//!   other streams are not held up, and the subscriber misses nothing.
//! - Connection trouble (Redis restarting, a network cut, a server still loading its data)
//!   is retried for [`BusConfig::retry_for`] (the positions make retries exact), then every
//!   subscription of that read ends with the error. A command error caused by one key
//!   that is not a stream ends only the subscriptions of that key.
//!
//! # Restarts
//!
//! Publishes and reads both ride out a Redis restart of up to [`BusConfig::retry_for`]:
//!
//! - A publish that fails on connection trouble is sent again (the entry ids make a
//!   repeated append a no-op), before any later publish: the sink's writer sends one
//!   script call at a time, in call order. The worker's answers thus go on where they were.
//! - A reader reconnects and reads on after each subscription's position. When Redis kept
//!   its data (AOF, `appendonly yes`), the streams are there and nothing is lost. When it
//!   came back empty, a stream the subscription had seen is gone: it ends with
//!   [`Error::HistoryLost`](chatstream_core::Error::HistoryLost), unless the worker's next
//!   envelopes, appended to a new stream, come first and follow on exactly from the
//!   subscription's position. A stream that begins in the middle of an attempt (its
//!   start was lost with the data) records the missing start as trimmed, so a subscription
//!   from the start gets `HistoryLost` rather than an answer without its beginning.
//!
//! # Redis Cluster
//!
//! The keys of one stream (stream and marker) share a hash tag, so each stream lives in one
//! slot. On a cluster ([`RedisClient`](crate::RedisClient) detects one), a round sends each
//! batch that may go as plain appends as a pipeline of its own, and the others as one
//! script call per slot, all concurrently (in call order per stream: a stream with several
//! batches in a round goes through the script, and rounds go out one at a time); a read
//! sends one `XREAD` per slot, together. The news
//! `PUBLISH` reaches every node, so the news connection may be to any of them. A failover
//! is retried like a restart; a promoted replica that missed acknowledged entries shows as
//! [`Error::HistoryLost`](chatstream_core::Error::HistoryLost) to the subscriptions that
//! had read past what it has (RELIABILITY.md).

mod mux;
mod scripts;
mod sink;
mod source;
mod subscription;

use std::time::Duration;

pub use sink::RedisTokenSink;
pub use source::RedisTokenSource;

/// Settings of the token bus (sink and source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    /// Entries kept per stream, about (trimming happens in steps of a tenth).
    pub max_len: usize,
    /// How long a stream stays readable after its `End`.
    pub retention_after_end: Duration,
    /// Expiry set on every write: a stream without `End` vanishes this long after its last
    /// envelope.
    pub idle_expiry: Duration,
    /// How much longer than its stream the marker lives, so that resumes of an expired
    /// stream fail with `HistoryLost` instead of waiting.
    pub tombstone: Duration,
    /// How long a followed stream may go without news before its reader reads it (and
    /// checks it for expiry) anyway: the longest an envelope can wait if its news was lost.
    pub block: Duration,
    /// Entries read per stream per `XREAD`, and the envelopes a subscription buffers before
    /// its reader stops reading it until the subscriber catches up.
    pub read_count: usize,
    /// Streams one reader task follows at most; a source starts another reader when all
    /// are full. Readers share the decoding of what is read between them.
    pub streams_per_reader: usize,
    /// How long connection trouble (Redis restarting, a network cut, a server still loading
    /// its data) is retried before giving up: then a publish fails, and a reader ends its
    /// subscriptions with [`Error::Unavailable`](chatstream_core::Error::Unavailable). The
    /// retries are exact, so a Redis that comes back with its data (AOF) within this time
    /// costs a delay and nothing else. While it lasts, a worker's publishes wait (and its
    /// generations with them, once its publish queue is full).
    pub retry_for: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            max_len: 10_000,
            retention_after_end: Duration::from_secs(3600),
            idle_expiry: Duration::from_secs(24 * 3600),
            tombstone: Duration::from_secs(24 * 3600),
            block: Duration::from_secs(5),
            read_count: 512,
            streams_per_reader: 256,
            retry_for: Duration::from_secs(30),
        }
    }
}

/// The entry id of `seq`.
pub(crate) fn entry_id(seq: u64) -> String {
    format!("{seq}-1")
}

/// An entry id as `(milliseconds, sequence)`, for comparisons.
pub(crate) fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatstream_core::TokenEnvelope;

    #[test]
    fn ids_follow_seq_across_attempts() {
        assert_eq!(entry_id(0), "0-1");
        let second = TokenEnvelope::seq_base(2) + 3;
        assert_eq!(entry_id(second), "4294967299-1");
        assert!(parse_id(&entry_id(second)) > parse_id(&entry_id(4000)));
        assert_eq!(parse_id("0-0"), Some((0, 0)));
        assert_eq!(parse_id("17"), Some((17, 0)));
        assert_eq!(parse_id("x-1"), None);
    }
}
