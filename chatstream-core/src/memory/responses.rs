//! [`InMemoryResponseStore`]: the stored responses of one process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::{ResponseOutcome, ResponseRecord, ResponseStore, Result};

/// How long a stored response is kept, by default: 30 days, as OpenAI keeps them.
pub const DEFAULT_RESPONSE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// A [`ResponseStore`] in this process's memory, each record kept for `ttl` from its
/// creation (expired records are dropped as others are created). It serves one gateway
/// process: gateways behind a load balancer share `RedisResponseStore` instead. Cheap to
/// clone (shared).
#[derive(Debug, Clone)]
pub struct InMemoryResponseStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    ttl: Duration,
    records: HashMap<String, (ResponseRecord, Instant)>,
}

impl Default for InMemoryResponseStore {
    fn default() -> Self {
        Self::new(DEFAULT_RESPONSE_TTL)
    }
}

impl InMemoryResponseStore {
    /// A store keeping each record for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                ttl,
                records: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records kept now (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// True when no record is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn live(&mut self, id: &str) -> Option<&mut ResponseRecord> {
        let now = Instant::now();
        if self.records.get(id).is_some_and(|(_, exp)| *exp <= now) {
            self.records.remove(id);
        }
        self.records.get_mut(id).map(|(r, _)| r)
    }
}

#[async_trait]
impl ResponseStore for InMemoryResponseStore {
    async fn create(&self, record: &ResponseRecord) -> Result<()> {
        let mut inner = self.lock();
        let now = Instant::now();
        inner.records.retain(|_, (_, exp)| *exp > now);
        let expires = now + inner.ttl;
        inner
            .records
            .insert(record.header.id.clone(), (record.clone(), expires));
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<ResponseRecord>> {
        Ok(self.lock().live(id).cloned())
    }

    async fn finish(&self, id: &str, outcome: &ResponseOutcome) -> Result<bool> {
        let mut inner = self.lock();
        match inner.live(id) {
            Some(record) if record.outcome.is_none() => {
                record.outcome = Some(outcome.clone());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete(&self, id: &str) -> Result<bool> {
        let mut inner = self.lock();
        let existed = inner.live(id).is_some();
        inner.records.remove(id);
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FinishReason, ResponseHeader, ResponseStatus};

    fn record(id: &str) -> ResponseRecord {
        ResponseRecord {
            header: ResponseHeader {
                id: id.into(),
                ..Default::default()
            },
            owner: Some("alice".into()),
            input_items: Vec::new(),
            context: Vec::new(),
            outcome: None,
        }
    }

    fn outcome(text: &str) -> ResponseOutcome {
        ResponseOutcome {
            status: ResponseStatus::Completed,
            text: text.into(),
            usage: None,
            finish_reason: FinishReason::Stop,
            error: None,
            tool_calls: Vec::new(),
        }
    }

    #[tokio::test]
    async fn the_first_outcome_wins_and_a_deleted_record_stays_deleted() {
        let store = InMemoryResponseStore::default();
        store.create(&record("r1")).await.expect("create");
        assert!(store.finish("r1", &outcome("a")).await.expect("finish"));
        assert!(!store.finish("r1", &outcome("b")).await.expect("finish"));
        let got = store.get("r1").await.expect("get").expect("kept");
        assert_eq!(got.outcome.map(|o| o.text).as_deref(), Some("a"));
        assert_eq!(got.owner.as_deref(), Some("alice"));
        assert!(store.delete("r1").await.expect("delete"));
        assert!(!store.delete("r1").await.expect("delete"));
        assert!(!store.finish("r1", &outcome("c")).await.expect("finish"));
        assert!(store.get("r1").await.expect("get").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn records_expire_after_the_ttl() {
        let store = InMemoryResponseStore::new(Duration::from_secs(10));
        store.create(&record("r1")).await.expect("create");
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(store.get("r1").await.expect("get").is_some());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(store.get("r1").await.expect("get").is_none());
    }
}
