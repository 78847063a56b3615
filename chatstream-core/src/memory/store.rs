//! [`InMemoryConversationStore`]: conversations in a map, with sliding expiry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::{ChatMessage, Conversation, ConversationMeta, ConversationStore, Result, StoreStats};

/// A clock returning milliseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Conversations and channel mappings in memory. Each read or write slides the expiry
/// (90 days by default, as seed 004's `REDIS_THREAD_EXPIRY`); expired entries vanish.
pub struct InMemoryConversationStore {
    state: Mutex<State>,
    ttl: Duration,
    clock: Clock,
}

#[derive(Default)]
struct State {
    conversations: HashMap<String, Conversation>,
    /// channel → (conversation id, last access ms)
    channels: HashMap<String, (String, u64)>,
    /// When expired entries were last swept out, ms.
    last_sweep: u64,
}

impl std::fmt::Debug for InMemoryConversationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryConversationStore")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Default for InMemoryConversationStore {
    fn default() -> Self {
        Self::new(Duration::from_secs(7_776_000))
    }
}

impl InMemoryConversationStore {
    /// A store whose entries expire `ttl` after their last access.
    pub fn new(ttl: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ttl,
            clock: Arc::new(system_ms),
        }
    }

    /// Uses another clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Removes what expired: the entries a call touches at once (so an expired entry is
    /// never returned), everything else in a sweep at most once a second, so that an
    /// access costs O(1) however many conversations are held.
    fn expire(&self, st: &mut State, now: u64, channel: Option<&str>, id: Option<&str>) {
        let ttl = self.ttl_ms();
        if let Some(ch) = channel {
            if st
                .channels
                .get(ch)
                .is_some_and(|(_, at)| now.saturating_sub(*at) >= ttl)
            {
                st.channels.remove(ch);
            }
        }
        if let Some(id) = id {
            if st
                .conversations
                .get(id)
                .is_some_and(|c| now.saturating_sub(c.meta.last_activity_ms) >= ttl)
            {
                st.conversations.remove(id);
            }
        }
        if now.saturating_sub(st.last_sweep) < ttl.min(1000) {
            return;
        }
        self.sweep(st, now);
    }

    /// The metadata of the live conversations `keep` selects, newest activity first.
    fn list_where(&self, keep: impl Fn(&ConversationMeta) -> bool) -> Vec<ConversationMeta> {
        let now = (self.clock)();
        let mut st = self.lock();
        self.sweep(&mut st, now);
        let mut out: Vec<_> = st
            .conversations
            .values()
            .filter(|c| keep(&c.meta))
            .map(|c| c.meta.clone())
            .collect();
        out.sort_by_key(|m| std::cmp::Reverse(m.last_activity_ms));
        out
    }

    fn sweep(&self, st: &mut State, now: u64) {
        let ttl = self.ttl_ms();
        st.last_sweep = now;
        st.conversations
            .retain(|_, c| now.saturating_sub(c.meta.last_activity_ms) < ttl);
        st.channels
            .retain(|_, (_, at)| now.saturating_sub(*at) < ttl);
    }
}

fn new_meta(id: String, now: u64) -> ConversationMeta {
    ConversationMeta {
        id,
        title: None,
        owner: None,
        org: None,
        created_at_ms: now,
        last_activity_ms: now,
        message_count: 0,
    }
}

#[async_trait]
impl ConversationStore for InMemoryConversationStore {
    async fn conversation_for_channel(&self, channel: &str) -> Result<String> {
        let now = (self.clock)();
        let mut st = self.lock();
        self.expire(&mut st, now, Some(channel), None);
        let mapped = st.channels.get(channel).map(|(id, _)| id.clone());
        if let Some(id) = mapped {
            self.expire(&mut st, now, None, Some(&id));
            if !st.conversations.contains_key(&id) {
                st.channels.remove(channel);
            }
        }
        if let Some((id, at)) = st.channels.get_mut(channel) {
            *at = now;
            let id = id.clone();
            if let Some(c) = st.conversations.get_mut(&id) {
                c.meta.last_activity_ms = now;
            }
            return Ok(id);
        }
        let id = format!("thread_{}", uuid::Uuid::new_v4().simple());
        st.channels.insert(channel.to_owned(), (id.clone(), now));
        st.conversations.insert(
            id.clone(),
            Conversation {
                meta: new_meta(id.clone(), now),
                messages: Vec::new(),
            },
        );
        Ok(id)
    }

    async fn create(&self, title: Option<&str>, owner: Option<&str>) -> Result<ConversationMeta> {
        self.create_in_org(title, owner, None).await
    }

    async fn create_in_org(
        &self,
        title: Option<&str>,
        owner: Option<&str>,
        org: Option<&str>,
    ) -> Result<ConversationMeta> {
        let now = (self.clock)();
        let mut meta = new_meta(uuid::Uuid::new_v4().to_string(), now);
        meta.title = title.map(str::to_owned);
        meta.owner = owner.map(str::to_owned);
        meta.org = org.map(str::to_owned);
        let mut st = self.lock();
        self.expire(&mut st, now, None, None);
        st.conversations.insert(
            meta.id.clone(),
            Conversation {
                meta: meta.clone(),
                messages: Vec::new(),
            },
        );
        Ok(meta)
    }

    async fn get(&self, id: &str) -> Result<Option<Conversation>> {
        let now = (self.clock)();
        let mut st = self.lock();
        self.expire(&mut st, now, None, Some(id));
        Ok(st.conversations.get_mut(id).map(|c| {
            c.meta.last_activity_ms = now;
            c.clone()
        }))
    }

    async fn append(&self, id: &str, messages: &[ChatMessage]) -> Result<()> {
        let now = (self.clock)();
        let mut st = self.lock();
        self.expire(&mut st, now, None, Some(id));
        let c = st
            .conversations
            .entry(id.to_owned())
            .or_insert_with(|| Conversation {
                meta: new_meta(id.to_owned(), now),
                messages: Vec::new(),
            });
        c.messages.extend_from_slice(messages);
        c.meta.message_count += messages.len() as u64;
        c.meta.last_activity_ms = now;
        Ok(())
    }

    async fn list(&self, owner: &str) -> Result<Vec<ConversationMeta>> {
        Ok(self.list_where(|m| m.owner.as_deref() == Some(owner)))
    }

    async fn list_org(&self, org: &str) -> Result<Vec<ConversationMeta>> {
        Ok(self.list_where(|m| m.org.as_deref() == Some(org)))
    }

    async fn stats(&self) -> Result<StoreStats> {
        let now = (self.clock)();
        let mut st = self.lock();
        self.sweep(&mut st, now);
        let mut stats = StoreStats::default();
        const DAY: u64 = 86_400_000;
        for c in st.conversations.values() {
            stats.conversations += 1;
            stats.messages += c.meta.message_count;
            let age = now.saturating_sub(c.meta.last_activity_ms);
            let bucket = match age {
                a if a < DAY => 0,
                a if a < 7 * DAY => 1,
                a if a < 30 * DAY => 2,
                _ => 3,
            };
            stats.age_buckets[bucket] += 1;
            stats.oldest_ms = Some(
                stats
                    .oldest_ms
                    .map_or(c.meta.created_at_ms, |o| o.min(c.meta.created_at_ms)),
            );
            stats.newest_ms = Some(
                stats
                    .newest_ms
                    .map_or(c.meta.created_at_ms, |o| o.max(c.meta.created_at_ms)),
            );
        }
        let bytes: usize = st
            .conversations
            .values()
            .map(|c| {
                c.messages
                    .iter()
                    .map(|m| m.content.len() + 32)
                    .sum::<usize>()
                    + 128
            })
            .sum();
        stats.memory_bytes = Some(bytes as u64);
        Ok(stats)
    }

    async fn clear_all(&self) -> Result<u64> {
        let mut st = self.lock();
        let n = st.conversations.len() as u64;
        st.conversations.clear();
        st.channels.clear();
        Ok(n)
    }

    async fn clear_older_than(&self, age: Duration) -> Result<u64> {
        let now = (self.clock)();
        let limit = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        let mut st = self.lock();
        let before = st.conversations.len();
        st.conversations
            .retain(|_, c| now.saturating_sub(c.meta.last_activity_ms) < limit);
        let State {
            conversations,
            channels,
            ..
        } = &mut *st;
        channels.retain(|_, (id, _)| conversations.contains_key(id));
        Ok((before - st.conversations.len()) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn store_with_clock(ttl_days: u64) -> (InMemoryConversationStore, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(1_700_000_000_000));
        let n = now.clone();
        let store = InMemoryConversationStore::new(Duration::from_secs(ttl_days * 86_400))
            .with_clock(Arc::new(move || n.load(Ordering::SeqCst)));
        (store, now)
    }

    const DAY: u64 = 86_400_000;

    #[tokio::test]
    async fn channel_mapping_slides_and_expires() {
        let (store, now) = store_with_clock(90);
        let id = store.conversation_for_channel("chan").await.unwrap();
        now.fetch_add(80 * DAY, Ordering::SeqCst);
        assert_eq!(
            store.conversation_for_channel("chan").await.unwrap(),
            id,
            "access at day 80 keeps it"
        );
        now.fetch_add(80 * DAY, Ordering::SeqCst);
        assert_eq!(
            store.conversation_for_channel("chan").await.unwrap(),
            id,
            "expiry slid by the access"
        );
        now.fetch_add(91 * DAY, Ordering::SeqCst);
        assert_ne!(
            store.conversation_for_channel("chan").await.unwrap(),
            id,
            "91 idle days: new thread"
        );
    }

    #[tokio::test]
    async fn history_appends_in_order_and_counts() {
        let (store, _) = store_with_clock(90);
        store
            .append("c1", &[ChatMessage::user("hi")])
            .await
            .unwrap();
        store
            .append("c1", &[ChatMessage::assistant("hello")])
            .await
            .unwrap();
        let c = store.get("c1").await.unwrap().unwrap();
        assert_eq!(
            c.messages,
            vec![ChatMessage::user("hi"), ChatMessage::assistant("hello")]
        );
        assert_eq!(c.meta.message_count, 2);
        assert_eq!(store.stats().await.unwrap().messages, 2);
    }

    #[tokio::test]
    async fn clear_older_than_keeps_recent_ones() {
        let (store, now) = store_with_clock(90);
        store
            .append("old", &[ChatMessage::user("a")])
            .await
            .unwrap();
        now.fetch_add(40 * DAY, Ordering::SeqCst);
        store
            .append("new", &[ChatMessage::user("b")])
            .await
            .unwrap();
        assert_eq!(
            store
                .clear_older_than(Duration::from_secs(30 * 86_400))
                .await
                .unwrap(),
            1
        );
        assert!(store.get("old").await.unwrap().is_none());
        assert!(store.get("new").await.unwrap().is_some());
        assert_eq!(store.clear_all().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn list_shows_only_the_owners_threads() {
        let (store, _) = store_with_clock(90);
        let a = store.create(Some("mine"), Some("alice")).await.unwrap();
        store.create(Some("theirs"), Some("bob")).await.unwrap();
        let list = store.list("alice").await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, a.id);
    }
}
