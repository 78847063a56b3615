//! [`RedisRequestSource`]: one consumer of the group.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chatstream_core::{Delivery, Error, MessageSource, Result};
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use tokio::sync::watch;

use super::acker::RedisAcker;
use super::scripts::{FORGET_CONSUMER, HEARTBEAT, TAKE};
use super::QueueConfig;
use crate::error::from_redis;
use crate::RedisClient;

/// One consumer of a request queue (see the [module docs](crate::queue)). Each source has
/// its own consumer name and its own connection for blocking reads.
#[derive(Debug)]
pub struct RedisRequestSource {
    lease: Arc<Lease>,
    blocking: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    cursor: Mutex<String>,
    closed: watch::Sender<bool>,
}

/// What the source and its ackers share; the heartbeat lives as long as it does.
#[derive(Debug)]
pub(super) struct Lease {
    pub(super) client: RedisClient,
    pub(super) config: QueueConfig,
    pub(super) stream: String,
    pub(super) dead: String,
    pub(super) consumer: String,
    /// Entries delivered and not settled yet: the heartbeat keeps them ours.
    in_flight: Mutex<HashSet<String>>,
}

impl Lease {
    fn in_flight(&self) -> MutexGuard<'_, HashSet<String>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn settled(&self, id: &str) {
        self.in_flight().remove(id);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Best effort: forget this consumer in the group when it holds nothing.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut con = self.client.shared();
        let (stream, group, consumer) = (
            self.stream.clone(),
            self.config.group.clone(),
            self.consumer.clone(),
        );
        rt.spawn(async move {
            let _ = FORGET_CONSUMER
                .key(stream)
                .arg(group)
                .arg(consumer)
                .invoke_async::<i64>(&mut con)
                .await;
        });
    }
}

impl RedisRequestSource {
    /// A new consumer of the queue `config.name` on `client`; creates the group (and the
    /// stream) when missing.
    pub async fn new(client: RedisClient, config: QueueConfig) -> Result<Self> {
        let keys = client.keys();
        let lease = Arc::new(Lease {
            stream: keys.queue(&config.name),
            dead: keys.dead_letters(&config.name),
            consumer: format!("consumer-{}", uuid::Uuid::new_v4().simple()),
            client: client.clone(),
            config,
            in_flight: Mutex::new(HashSet::new()),
        });
        create_group(&lease).await?;
        for script in [&*TAKE, &*HEARTBEAT] {
            script
                .prepare_invoke()
                .load_async(&mut client.shared())
                .await
                .map_err(from_redis)?;
        }
        tokio::spawn(heartbeat(Arc::downgrade(&lease)));
        Ok(Self {
            lease,
            blocking: tokio::sync::Mutex::new(None),
            cursor: Mutex::new("0-0".into()),
            closed: watch::channel(false).0,
        })
    }

    /// This source's consumer name in the group.
    pub fn consumer(&self) -> &str {
        &self.lease.consumer
    }

    /// Makes `recv` return `None` from now on (pending deliveries stay valid).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    fn delivery(&self, id: String, body: Vec<u8>, attempt: u32) -> Delivery {
        self.lease.in_flight().insert(id.clone());
        // A stream entry's id starts with the time Redis added it (ms): the queue wait.
        let enqueued_at = id.split('-').next().and_then(|ms| ms.parse::<u64>().ok());
        let request = chatstream_core::wire::decode_request(&body).map(|mut r| {
            if let Some(ms) = enqueued_at {
                r.metadata.insert(
                    chatstream_core::meta::ENQUEUED_AT_MS.to_owned(),
                    ms.to_string(),
                );
            }
            r
        });
        Delivery {
            request,
            attempt,
            acker: Box::new(RedisAcker::new(self.lease.clone(), id, body, attempt)),
        }
    }

    /// Claims an abandoned entry or takes a new one, without blocking.
    async fn take(&self) -> Result<Option<Delivery>> {
        let l = &self.lease;
        let cursor = self
            .cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut inv = TAKE.prepare_invoke();
        inv.key(&l.stream)
            .key(&l.dead)
            .arg(&l.config.group)
            .arg(&l.consumer)
            .arg(millis(l.config.claim_idle))
            .arg(cursor)
            .arg(l.config.delivery_limit.max(1));
        let mut con = l.client.shared();
        let reply: redis::RedisResult<(String, String, Vec<u8>, u32)> =
            match inv.invoke_async(&mut con).await {
                Err(e) if e.code() == Some("NOGROUP") => {
                    create_group(l).await?;
                    inv.invoke_async(&mut con).await
                }
                other => other,
            };
        let (cursor, id, body, attempt) = reply.map_err(from_redis)?;
        let entry = (!id.is_empty()).then_some((id, body, attempt));
        *self.cursor.lock().unwrap_or_else(|p| p.into_inner()) = cursor;
        Ok(entry.map(|(id, body, attempt)| self.delivery(id, body, attempt)))
    }

    /// Waits up to `block` for a new entry on the dedicated connection.
    async fn wait_new(&self) -> Result<Option<Delivery>> {
        let l = &self.lease;
        let mut slot = self.blocking.lock().await;
        if slot.is_none() {
            *slot = Some(l.client.dedicated_for(&l.stream, l.config.block).await?);
        }
        let Some(con) = slot.as_mut() else {
            return Err(Error::Closed);
        };
        let reply: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&l.config.group)
            .arg(&l.consumer)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(millis(l.config.block))
            .arg("STREAMS")
            .arg(&l.stream)
            .arg(">")
            .query_async(con)
            .await;
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                *slot = None; // reconnect next time
                if e.code() == Some("NOGROUP") {
                    create_group(l).await?;
                    return Ok(None);
                }
                if e.is_io_error() || e.is_connection_dropped() || moved(&e) {
                    // Only the dedicated connection is known bad (or, on a cluster, serves
                    // the queue's slot no more): the next `take` (on the shared connection,
                    // which reconnects and follows the slot) tells whether Redis is down.
                    return Ok(None);
                }
                return Err(from_redis(e));
            }
        };
        drop(slot);
        let Some(entry) = reply.and_then(|r| r.keys.into_iter().flat_map(|k| k.ids).next()) else {
            return Ok(None);
        };
        let body: Vec<u8> = entry.get("body").unwrap_or_default();
        let deliveries: u32 = entry.get("deliveries").unwrap_or(0);
        Ok(Some(self.delivery(entry.id, body, deliveries + 1)))
    }
}

#[async_trait]
impl MessageSource for RedisRequestSource {
    async fn recv(&self) -> Result<Option<Delivery>> {
        let mut closed = self.closed.subscribe();
        loop {
            if *closed.borrow() {
                return Ok(None);
            }
            if let Some(d) = self.take().await? {
                return Ok(Some(d));
            }
            tokio::select! {
                d = self.wait_new() => if let Some(d) = d? { return Ok(Some(d)) },
                _ = closed.wait_for(|c| *c) => return Ok(None),
            }
        }
    }
}

async fn create_group(l: &Lease) -> Result<()> {
    let r = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&l.stream)
        .arg(&l.config.group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async::<()>(&mut l.client.shared())
        .await;
    match r {
        Err(e) if e.code() != Some("BUSYGROUP") => Err(from_redis(e)),
        _ => Ok(()),
    }
}

/// Refreshes the idle time of the entries being worked on, every third of `claim_idle`,
/// for as long as the source or one of its ackers lives.
async fn heartbeat(lease: Weak<Lease>) {
    let every = match lease.upgrade() {
        Some(l) => (l.config.claim_idle / 3).max(Duration::from_millis(10)),
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(l) = lease.upgrade() else { return };
        let ids: Vec<String> = l.in_flight().iter().cloned().collect();
        if ids.is_empty() {
            continue;
        }
        let mut inv = HEARTBEAT.prepare_invoke();
        inv.key(&l.stream)
            .arg(&l.config.group)
            .arg(&l.consumer)
            .arg(&ids);
        let mut con = l.client.shared();
        if let Err(e) = inv.invoke_async::<u64>(&mut con).await {
            tracing::warn!(error = %e, consumer = %l.consumer, "queue heartbeat failed");
        }
    }
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Whether a cluster node says the key is served elsewhere now (a failover, a migration).
fn moved(e: &redis::RedisError) -> bool {
    matches!(
        e.kind(),
        redis::ErrorKind::Moved
            | redis::ErrorKind::Ask
            | redis::ErrorKind::ClusterDown
            | redis::ErrorKind::TryAgain
            | redis::ErrorKind::MasterDown
            | redis::ErrorKind::ReadOnly
    )
}
