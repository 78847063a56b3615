//! Saving an answer while the conversation store is away: the worker retries, and when the
//! store stays away the client is told the message was not saved (the answer itself still
//! streams whole).
#![cfg(feature = "testkit")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatstream_core::{
    ChatMessage, ChatRequest, ClientEvent, Conversation, ConversationMeta, ConversationStore,
    Error, FinishReason, Gateway, GatewayConfig, InMemoryBroker, InMemoryConversationStore, Result,
    ScriptedBackend, StoreStats, StreamEvent, StreamKey, Worker, WorkerConfig,
};
use futures::StreamExt;

/// An in-memory store whose appends fail (as unreachable) the first `failures` times.
#[derive(Debug)]
struct FlakyStore {
    inner: InMemoryConversationStore,
    failures: AtomicUsize,
    attempts: AtomicUsize,
}

impl FlakyStore {
    fn new(failures: usize) -> Self {
        Self {
            inner: InMemoryConversationStore::default(),
            failures: AtomicUsize::new(failures),
            attempts: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl ConversationStore for FlakyStore {
    async fn conversation_for_channel(&self, channel: &str) -> Result<String> {
        self.inner.conversation_for_channel(channel).await
    }
    async fn create(&self, title: Option<&str>, owner: Option<&str>) -> Result<ConversationMeta> {
        self.inner.create(title, owner).await
    }
    async fn create_in_org(
        &self,
        title: Option<&str>,
        owner: Option<&str>,
        org: Option<&str>,
    ) -> Result<ConversationMeta> {
        self.inner.create_in_org(title, owner, org).await
    }
    async fn get(&self, id: &str) -> Result<Option<Conversation>> {
        self.inner.get(id).await
    }
    async fn append(&self, id: &str, messages: &[ChatMessage]) -> Result<()> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(Error::unavailable("store", "connection refused"));
        }
        self.inner.append(id, messages).await
    }
    async fn list(&self, owner: &str) -> Result<Vec<ConversationMeta>> {
        self.inner.list(owner).await
    }
    async fn list_org(&self, org: &str) -> Result<Vec<ConversationMeta>> {
        self.inner.list_org(org).await
    }
    async fn stats(&self) -> Result<StoreStats> {
        self.inner.stats().await
    }
    async fn clear_all(&self) -> Result<u64> {
        self.inner.clear_all().await
    }
    async fn clear_older_than(&self, age: Duration) -> Result<u64> {
        self.inner.clear_older_than(age).await
    }
}

/// Answers one request with `store` and returns the stream's envelopes' events.
async fn answer(store: Arc<FlakyStore>, save_retry: Duration) -> Vec<StreamEvent> {
    let broker = InMemoryBroker::new();
    let _worker = Worker::builder(
        Arc::new(broker.message_source()),
        Arc::new(broker.clone()),
        Arc::new(ScriptedBackend::default()),
    )
    .store(store)
    .config(WorkerConfig {
        save_retry,
        ..WorkerConfig::default()
    })
    .build()
    .spawn();
    let gw = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker.clone()))
        .config(GatewayConfig::default())
        .build();
    let mut request = ChatRequest::new(StreamKey::new("s", "m"), "hello");
    request.metadata.insert(
        chatstream_core::meta::CONVERSATION.to_owned(),
        "t1".to_owned(),
    );
    let events: Vec<ClientEvent> = tokio::time::timeout(Duration::from_secs(30), async {
        gw.submit(request).await.unwrap().collect().await
    })
    .await
    .expect("stream ended");
    events
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Envelope(env) => Some(env.event.clone()),
            _ => None,
        })
        .collect()
}

fn text(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Token { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_store_back_within_the_retry_window_gets_the_exchange() {
    let store = Arc::new(FlakyStore::new(3));
    let events = answer(store.clone(), Duration::from_secs(10)).await;
    assert!(!text(&events).is_empty(), "the answer streamed");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, StreamEvent::Error { .. })),
        "no error once saving succeeded: {events:?}"
    );
    assert_eq!(
        store.attempts.load(Ordering::SeqCst),
        4,
        "three failures, one success"
    );
    let saved = store.inner.get("t1").await.unwrap().expect("saved");
    assert_eq!(saved.messages.len(), 2);
    assert_eq!(saved.messages[1].content, text(&events));
}

#[tokio::test]
async fn a_store_that_stays_away_is_reported_to_the_client() {
    let store = Arc::new(FlakyStore::new(usize::MAX));
    let events = answer(store.clone(), Duration::from_millis(700)).await;
    assert!(!text(&events).is_empty(), "the answer still streamed");
    let error = events
        .iter()
        .find_map(|e| match e {
            StreamEvent::Error { message } => Some(message.clone()),
            _ => None,
        })
        .expect("an error event");
    assert!(error.contains("not saved"), "{error}");
    assert!(
        store.attempts.load(Ordering::SeqCst) > 1,
        "saving was retried"
    );
    assert!(matches!(
        events.last(),
        Some(StreamEvent::End {
            finish_reason: FinishReason::Stop,
            ..
        })
    ));
    assert!(store.inner.get("t1").await.unwrap().is_none());
}
