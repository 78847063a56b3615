//! Who submitted which stream, remembered by this process for a while.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chatstream_core::StreamKey;
use tokio::time::Instant;

use super::Principal;

/// Streams remembered at most, by default.
pub const DEFAULT_OWNERS_CAPACITY: usize = 65_536;

/// How long a stream's submitter is remembered, by default: one hour.
pub const DEFAULT_OWNERS_TTL: Duration = Duration::from_secs(3600);

/// A bounded in-process map stream → submitting principal, so that the submitter can read
/// its stream with its own bearer token. Oldest entries go first when it is full, and
/// entries expire after a while. Cheap to clone (shared).
///
/// It only knows the streams submitted through this process: behind a load balancer, a
/// client reading from another instance must present the stream token instead (signed, so
/// any instance with the same secret accepts it).
#[derive(Debug, Clone)]
pub struct StreamOwners {
    inner: Arc<Mutex<Owners>>,
}

#[derive(Debug)]
struct Owners {
    capacity: usize,
    ttl: Duration,
    map: HashMap<StreamKey, (Principal, Instant)>,
    order: VecDeque<(StreamKey, Instant)>,
}

impl Default for StreamOwners {
    fn default() -> Self {
        Self::new(DEFAULT_OWNERS_CAPACITY, DEFAULT_OWNERS_TTL)
    }
}

impl StreamOwners {
    /// A map holding at most `capacity` streams, each for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Owners {
                capacity: capacity.max(1),
                ttl,
                map: HashMap::new(),
                order: VecDeque::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Owners> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers that `principal` submitted `key`.
    pub fn insert(&self, key: StreamKey, principal: Principal) {
        let now = Instant::now();
        let mut o = self.lock();
        o.evict(now);
        while o.map.len() >= o.capacity {
            if !o.pop_oldest() {
                break;
            }
        }
        o.order.push_back((key.clone(), now));
        o.map.insert(key, (principal, now));
    }

    /// The principal that submitted `key`, when remembered.
    pub fn owner(&self, key: &StreamKey) -> Option<Principal> {
        let now = Instant::now();
        let mut o = self.lock();
        o.evict(now);
        o.map.get(key).map(|(p, _)| p.clone())
    }

    /// Streams remembered now.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Owners {
    /// Drops entries older than the ttl.
    fn evict(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(_, at)| now.duration_since(*at) >= self.ttl)
        {
            self.pop_oldest();
        }
    }

    /// Removes the oldest entry; false when there is none.
    fn pop_oldest(&mut self) -> bool {
        let Some((key, at)) = self.order.pop_front() else {
            return false;
        };
        // A key inserted again later has a newer time: leave that entry alone.
        if self.map.get(&key).is_some_and(|(_, t)| *t == at) {
            self.map.remove(&key);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_up_to_capacity_dropping_the_oldest() {
        let owners = StreamOwners::new(2, DEFAULT_OWNERS_TTL);
        let k = |m: &str| StreamKey::new("s", m);
        owners.insert(k("1"), Principal::new("alice"));
        owners.insert(k("2"), Principal::new("bob"));
        owners.insert(k("3"), Principal::new("carol"));
        assert_eq!(owners.owner(&k("1")), None);
        assert_eq!(owners.owner(&k("2")), Some(Principal::new("bob")));
        assert_eq!(owners.owner(&k("3")), Some(Principal::new("carol")));
        assert_eq!(owners.len(), 2);
    }

    #[test]
    fn entries_expire() {
        let owners = StreamOwners::new(10, Duration::ZERO);
        let key = StreamKey::new("s", "m");
        owners.insert(key.clone(), Principal::new("alice"));
        assert!(owners.owner(&key).is_none());
        assert!(owners.is_empty());
    }
}
