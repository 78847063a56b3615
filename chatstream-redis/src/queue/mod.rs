//! The request queue on a Redis stream with a consumer group.
//!
//! * [`RedisRequestSink`] appends requests (`XADD`, canonical seed 000 JSON in field
//!   `body`) and reads the dead-letter stream.
//! * [`RedisRequestSource`] is one consumer (a unique name per source) of the group
//!   (created with `MKSTREAM` from the stream's start; `BUSYGROUP` ignored). Each `recv`
//!   first claims an abandoned entry (`XAUTOCLAIM`, idle longer than
//!   [`QueueConfig::claim_idle`]) or reads a new one, in one script call; when there is
//!   none it waits with `XREADGROUP BLOCK` on a dedicated connection.
//!
//! # Settling and redelivery
//!
//! | what happens | effect |
//! |---|---|
//! | `ack` | `XACK` + `XDEL` (unless [`QueueConfig::delete_on_ack`] is off) |
//! | `nack(requeue)`, or the acker is dropped unsettled | a copy is appended with `deliveries` = the attempts so far, the original is acked and deleted, in one script that first checks this consumer still owns it; the copy wakes blocked consumers at once and is delivered with a higher attempt. It goes to the tail of the queue |
//! | the worker process dies | its entries stay pending; a heartbeat no longer refreshes them, so after `claim_idle` another consumer claims them (`XAUTOCLAIM`), with the delivery counter raising the attempt |
//! | `dead_letter(reason)`, `nack(false)` | `XADD` to `…:dead` with `body`, `reason`, `deliveries`, `id`; then `XACK` + `XDEL` |
//! | the attempts reach [`QueueConfig::delivery_limit`] | dead-lettered with reason `delivery limit of N reached` instead of being delivered again |
//!
//! A live consumer refreshes the idle time of the entries it is working on every third of
//! `claim_idle` (`XCLAIM … JUSTID` of its own entries), so long generations are never
//! claimed away. The attempt of a delivery is `deliveries` (0 on an original) plus the
//! group's delivery counter of the entry: 1 on first delivery, ≥ 2 after any redelivery.
//!
//! # Restarts
//!
//! While Redis is away (restarting, loading its AOF), `recv` fails and the worker asks
//! again; the consumer's connections are made anew once it is back. `ack` and
//! `nack(requeue)` are idempotent and are retried on connection trouble for up to
//! [`QueueConfig::claim_idle`] (past that another consumer may have claimed the entry), so
//! an answer finished during the outage is not answered twice. A dead letter is not
//! retried (it would be written twice if the first try reached Redis): the entry stays
//! pending and is claimed again once idle. With AOF the group, its pending entries and the
//! queued requests survive a restart; without persistence they are gone, and the group is
//! created again on the next `recv`.

mod acker;
mod scripts;
mod sink;
mod source;

use std::time::Duration;

pub use sink::RedisRequestSink;
pub use source::RedisRequestSource;

/// Settings of a request queue (sink and source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// Queue name (the stream is `P{queue:NAME}`).
    pub name: String,
    /// Consumer group name.
    pub group: String,
    /// How long an entry of another consumer must sit untouched before it is claimed.
    pub claim_idle: Duration,
    /// Longest single `XREADGROUP BLOCK`; sources loop, claiming in between.
    pub block: Duration,
    /// Attempts after which a request is dead-lettered instead of delivered again.
    pub delivery_limit: u32,
    /// Delete entries once acked (keeps the stream short; turn off when other consumer
    /// groups read the same stream).
    pub delete_on_ack: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            name: "requests".into(),
            group: "workers".into(),
            claim_idle: Duration::from_secs(60),
            block: Duration::from_secs(2),
            delivery_limit: 5,
            delete_on_ack: true,
        }
    }
}

/// A request moved to the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its id in the dead-letter stream.
    pub id: String,
    /// The request body as it was queued.
    pub body: Vec<u8>,
    /// Why it was dead-lettered.
    pub reason: String,
    /// Deliveries made before.
    pub deliveries: u32,
}
