//! Settling one delivered request.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use chatstream_core::{Acker, Result};

use super::scripts::RELEASE;
use super::source::Lease;
use crate::error::from_redis;

/// Settles one entry of the queue (see the table in the [module docs](crate::queue)).
#[derive(Debug)]
pub(super) struct RedisAcker {
    lease: Arc<Lease>,
    id: String,
    body: Vec<u8>,
    attempt: u32,
    settled: bool,
}

impl RedisAcker {
    pub(super) fn new(lease: Arc<Lease>, id: String, body: Vec<u8>, attempt: u32) -> Self {
        Self {
            lease,
            id,
            body,
            attempt,
            settled: false,
        }
    }

    fn settle(&mut self) {
        self.settled = true;
        self.lease.settled(&self.id);
    }
}

/// Runs an idempotent settlement, retrying connection trouble (Redis restarting) for up
/// to `claim_idle`: past that, another consumer may claim the entry anyway. Otherwise an
/// answer finished while Redis was away would be answered again.
async fn retrying<T, F, Fut>(lease: &Lease, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    crate::client::retrying(lease.config.claim_idle, op)
        .await
        .map_err(from_redis)
}

/// Gives the entry back (a copy with a higher attempt, or a dead letter at the limit). The
/// script does nothing once the entry is no longer this consumer's, so it may be retried.
async fn release(lease: &Lease, id: &str, attempt: u32) -> Result<()> {
    let mut inv = RELEASE.prepare_invoke();
    inv.key(&lease.stream)
        .key(&lease.dead)
        .arg(&lease.config.group)
        .arg(&lease.consumer)
        .arg(id)
        .arg(attempt)
        .arg(lease.config.delivery_limit.max(1));
    let outcome: i64 = retrying(lease, || {
        let inv = &inv;
        async move { inv.invoke_async(&mut lease.client.shared()).await }
    })
    .await?;
    if outcome == 2 {
        tracing::warn!(
            id,
            attempt,
            "request reached its delivery limit; dead-lettered"
        );
    }
    Ok(())
}

impl Drop for RedisAcker {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.lease.settled(&self.id);
        // Give it back now rather than after the claim idle time. Without a runtime (or if
        // this fails) the entry stays pending and is claimed once idle.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (lease, id, attempt) = (self.lease.clone(), self.id.clone(), self.attempt);
        rt.spawn(async move {
            if let Err(e) = release(&lease, &id, attempt).await {
                tracing::warn!(error = %e, id, "could not requeue a dropped delivery; it will be claimed once idle");
            }
        });
    }
}

#[async_trait]
impl Acker for RedisAcker {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.settle();
        let l = &self.lease;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .xack(&l.stream, &l.config.group, &[&self.id])
            .ignore();
        if l.config.delete_on_ack {
            pipe.xdel(&l.stream, &[&self.id]).ignore();
        }
        // XACK and XDEL of an entry that is gone do nothing: safe to retry.
        retrying(l, || {
            let pipe = &pipe;
            async move { pipe.query_async::<()>(&mut l.client.shared()).await }
        })
        .await
    }

    async fn nack(mut self: Box<Self>, requeue: bool) -> Result<()> {
        if !requeue {
            return self.dead_letter("rejected without requeue").await;
        }
        self.settle();
        release(&self.lease, &self.id, self.attempt).await
    }

    async fn dead_letter(mut self: Box<Self>, reason: &str) -> Result<()> {
        self.settle();
        let l = &self.lease;
        redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(&l.dead)
            .arg("*")
            .arg("body")
            .arg(&self.body)
            .arg("reason")
            .arg(reason)
            .arg("deliveries")
            .arg(self.attempt)
            .arg("id")
            .arg(&self.id)
            .ignore()
            .xack(&l.stream, &l.config.group, &[&self.id])
            .ignore()
            .xdel(&l.stream, &[&self.id])
            .ignore()
            .query_async::<()>(&mut l.client.shared())
            .await
            .map_err(from_redis)
    }
}
