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
//! task before it first waits, and the writer sends what is waiting as one script call
//! covering every stream of every waiting publish, one call at a time. Redis pays for the
//! script call once per round trip, not once per stream or envelope; batches grow while a
//! call is out.
//!
//! # History and expiry
//!
//! Streams are capped at about [`BusConfig::max_len`] entries (trimmed by the publish
//! script in steps of a tenth, recording the highest trimmed id in the marker hash). Every
//! write sets a safety expiry ([`BusConfig::idle_expiry`]) so abandoned streams vanish;
//! `End` shortens it to [`BusConfig::retention_after_end`]. The marker hash outlives the
//! stream by [`BusConfig::tombstone`], so a late resume gets
//! [`Error::HistoryLost`](chatstream_core::Error::HistoryLost) instead of waiting for a
//! stream that will never come back. The marker also keeps the `End`: a resume at or after
//! it yields the `End` again (even once the stream expired), so the subscriber learns the
//! stream is over. A subscription to a stream that never existed (and asks for no
//! position) waits for it: gateways subscribe before they submit.
//!
//! # Reading
//!
//! A [`RedisTokenSource`] does not hold a connection per subscription: a few reader tasks
//! (shared by the source's clones), each with one dedicated connection, follow up to
//! [`BusConfig::streams_per_reader`] streams each with a single
//! `XREAD COUNT n BLOCK ms STREAMS k1 k2 … id1 id2 …` and hand every stream's entries to its
//! subscriber. 10,000 open streams thus take 40 connections with the default of 256.
//!
//! - A new subscription does not wait for a reader's `BLOCK` to time out: the reader also
//!   reads a one-entry *wake stream* of its own after the last wake entry it saw, and an
//!   entry added there makes its `XREAD` return at once. A wake-up sent just before the read
//!   reaches Redis is therefore never lost (a `CLIENT UNBLOCK` would be).
//! - A dropped subscription wakes its reader, which forgets the stream at once.
//! - While tokens flow, reads are spaced so that the source's readers together scan at most
//!   [`BusConfig::scan_rate`] keys per second (10 ms apart per reader at 1,000 streams,
//!   100 ms at 10,000 with the default): one `XREAD` brings many envelopes, and Redis's
//!   work for the reads stays bounded however many streams are open, at the price of that
//!   delay for envelopes that follow one another closely.
//! - A subscriber that does not keep up is buffered up to [`BusConfig::read_count`]
//!   envelopes (one more read may add another `read_count`); then its reader stops reading
//!   that stream, keeping its position, until the subscriber has taken half. The reader's
//!   other streams are not held up, and the subscriber misses nothing.
//! - Connection trouble (Redis restarting, a network cut, a server still loading its data)
//!   is retried for [`BusConfig::retry_for`] (the positions make retries exact), then every
//!   subscription of that reader ends with the error. A command error caused by one key
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
//! - The keys of one read are in different hash slots: this needs a single Redis server (or
//!   a proxy that splits multi-key reads), as [`RedisClient`](crate::RedisClient) does.

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
    /// Longest single `XREAD BLOCK`; readers loop, and a stream that got nothing for this
    /// long is checked for expiry.
    pub block: Duration,
    /// Entries read per stream per `XREAD`, and the envelopes a subscription buffers before
    /// its reader stops reading it until the subscriber catches up.
    pub read_count: usize,
    /// Streams one reader (one dedicated connection, one `XREAD` over all of them) follows
    /// at most; a source starts another reader when all are full. Fewer means more
    /// connections; more means longer `XREAD` commands, which Redis scans key by key each
    /// time any of the streams has news.
    pub streams_per_reader: usize,
    /// Keys per second the source's readers together ask Redis to scan at most while
    /// tokens flow: after a read that brought entries, a reader waits until (streams
    /// followed by the source) ÷ `scan_rate` after its start before the next (10 ms at
    /// 1,000 streams, 100 ms at 10,000 with the default 100,000; at most [`Self::block`]).
    /// When all of a reader's streams were quiet, the first envelope to come is not
    /// delayed (the read is already waiting); while they are busy, envelopes wait up to
    /// that long. Under load Redis 7.0 spent 2–3 µs per key of a
    /// multi-stream `XREAD` here, so the default bounds the reads to about a quarter of a
    /// Redis core; 400,000 halves the added delay at 1,000 streams but let the reads
    /// swamp Redis at 10,000 (BENCHMARKS.md).
    pub scan_rate: usize,
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
            scan_rate: 100_000,
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
