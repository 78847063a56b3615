//! [`InMemoryStreamRegistry`]: the stream registry of one process.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::{Result, StreamKey, StreamRecord, StreamRegistry};

/// Streams remembered at most, by default.
pub const DEFAULT_REGISTRY_CAPACITY: usize = 65_536;

/// How long a stream is remembered, by default: one hour.
pub const DEFAULT_REGISTRY_TTL: Duration = Duration::from_secs(3600);

/// A bounded [`StreamRegistry`] in this process's memory: at most `capacity` streams (the
/// oldest forgotten first), each for `ttl`. It serves one gateway process; gateways behind
/// a load balancer share a registry in a store instead (`RedisStreamRegistry`). Cheap to
/// clone (shared).
#[derive(Debug, Clone)]
pub struct InMemoryStreamRegistry {
    inner: Arc<Mutex<Registry>>,
}

#[derive(Debug)]
struct Registry {
    capacity: usize,
    ttl: Duration,
    streams: HashMap<StreamKey, (Option<String>, Instant)>,
    latest: HashMap<Arc<str>, (StreamKey, Instant)>,
    order: VecDeque<(StreamKey, Instant)>,
}

impl Default for InMemoryStreamRegistry {
    fn default() -> Self {
        Self::new(DEFAULT_REGISTRY_CAPACITY, DEFAULT_REGISTRY_TTL)
    }
}

impl InMemoryStreamRegistry {
    /// A registry holding at most `capacity` streams, each for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Registry {
                capacity: capacity.max(1),
                ttl,
                streams: HashMap::new(),
                latest: HashMap::new(),
                order: VecDeque::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Streams remembered now.
    pub fn len(&self) -> usize {
        let mut r = self.lock();
        r.evict(Instant::now());
        r.streams.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Registry {
    fn evict(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(_, at)| now.duration_since(*at) >= self.ttl)
        {
            self.pop_oldest();
        }
    }

    /// Forgets the oldest stream; false when there is none.
    fn pop_oldest(&mut self) -> bool {
        let Some((key, at)) = self.order.pop_front() else {
            return false;
        };
        // A key recorded again later has a newer time: leave that entry alone.
        if self.streams.get(&key).is_some_and(|(_, t)| *t == at) {
            self.streams.remove(&key);
        }
        if self
            .latest
            .get(&key.session_id)
            .is_some_and(|(k, t)| *k == key && *t == at)
        {
            self.latest.remove(&key.session_id);
        }
        true
    }
}

#[async_trait]
impl StreamRegistry for InMemoryStreamRegistry {
    async fn record(&self, key: &StreamKey, owner: Option<&str>) -> Result<()> {
        let now = Instant::now();
        let mut r = self.lock();
        r.evict(now);
        while r.streams.len() >= r.capacity {
            if !r.pop_oldest() {
                break;
            }
        }
        r.order.push_back((key.clone(), now));
        r.streams
            .insert(key.clone(), (owner.map(str::to_owned), now));
        r.latest.insert(key.session_id.clone(), (key.clone(), now));
        Ok(())
    }

    async fn lookup(&self, key: &StreamKey) -> Result<Option<StreamRecord>> {
        let mut r = self.lock();
        r.evict(Instant::now());
        Ok(r.streams
            .get(key)
            .map(|(owner, _)| StreamRecord::new(key.clone(), owner.clone())))
    }

    async fn latest(&self, session_id: &str) -> Result<Option<StreamKey>> {
        let mut r = self.lock();
        r.evict(Instant::now());
        Ok(r.latest.get(session_id).map(|(k, _)| k.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str, m: &str) -> StreamKey {
        StreamKey::new(s, m)
    }

    #[tokio::test]
    async fn remembers_owners_and_each_sessions_latest_stream() {
        let r = InMemoryStreamRegistry::default();
        r.record(&k("chat", "1"), Some("alice")).await.unwrap();
        r.record(&k("chat", "2"), None).await.unwrap();
        assert_eq!(
            r.lookup(&k("chat", "1")).await.unwrap(),
            Some(StreamRecord::new(k("chat", "1"), Some("alice".into())))
        );
        assert_eq!(
            r.lookup(&k("chat", "2")).await.unwrap().unwrap().owner,
            None
        );
        assert_eq!(r.lookup(&k("chat", "3")).await.unwrap(), None);
        assert_eq!(r.latest("chat").await.unwrap(), Some(k("chat", "2")));
        assert_eq!(r.latest("other").await.unwrap(), None);
    }

    #[tokio::test]
    async fn forgets_the_oldest_when_full_and_everything_after_its_ttl() {
        let r = InMemoryStreamRegistry::new(2, DEFAULT_REGISTRY_TTL);
        r.record(&k("a", "1"), Some("alice")).await.unwrap();
        r.record(&k("b", "1"), Some("bob")).await.unwrap();
        r.record(&k("c", "1"), Some("carol")).await.unwrap();
        assert_eq!(r.lookup(&k("a", "1")).await.unwrap(), None);
        assert_eq!(
            r.latest("a").await.unwrap(),
            None,
            "a forgotten stream is no one's latest"
        );
        assert!(r.lookup(&k("c", "1")).await.unwrap().is_some());
        assert_eq!(r.len(), 2);

        let r = InMemoryStreamRegistry::new(10, Duration::ZERO);
        r.record(&k("a", "1"), Some("alice")).await.unwrap();
        assert_eq!(r.lookup(&k("a", "1")).await.unwrap(), None);
        assert!(r.is_empty());
    }
}
