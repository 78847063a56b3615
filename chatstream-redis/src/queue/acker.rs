//! Settling one delivered request.

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

/// Gives the entry back (a copy with a higher attempt, or a dead letter at the limit).
async fn release(lease: &Lease, id: &str, attempt: u32) -> Result<()> {
    let outcome: i64 = RELEASE
        .key(&lease.stream)
        .key(&lease.dead)
        .arg(&lease.config.group)
        .arg(&lease.consumer)
        .arg(id)
        .arg(attempt)
        .arg(lease.config.delivery_limit.max(1))
        .invoke_async(&mut lease.client.connection())
        .await
        .map_err(from_redis)?;
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
        pipe.query_async::<()>(&mut l.client.connection())
            .await
            .map_err(from_redis)
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
            .query_async::<()>(&mut l.client.connection())
            .await
            .map_err(from_redis)
    }
}
