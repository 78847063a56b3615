//! A seed 002 pipeline: in-memory broker, a worker and the routes sharing one in-memory
//! conversation store, and two users, alice and bob.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use chatstream_axum::auth::StaticTokens;
use chatstream_axum::{seed002, ChatstreamState};
use chatstream_core::wire::seed002::{parse_event, Seed002Event};
use chatstream_core::wire::sse::SseEvent;
use chatstream_core::{
    ChatRequest, CoalesceConfig, Conversation, Gateway, InMemoryBroker, InMemoryConversationStore,
    LlmBackend, LlmStream, ScriptedBackend, Worker, WorkerConfig, WorkerHandle,
};
use serde_json::Value;
use tower::ServiceExt;

use crate::common::{body_text, sse_events};

pub const ALICE: &str = "alice-token";
pub const BOB: &str = "bob-token";

/// Answers with the scripted backend, the answer saying how much history it was given.
#[derive(Debug, Clone)]
pub struct HistoryBackend(pub ScriptedBackend);

impl HistoryBackend {
    pub fn answer(history: usize, request: &ChatRequest) -> String {
        Self::scripted(&ScriptedBackend::default(), history).answer(request)
    }

    fn scripted(base: &ScriptedBackend, history: usize) -> ScriptedBackend {
        base.clone().with_answer(format!(
            "I saw {history} earlier messages. You said: \"{{text}}\"."
        ))
    }
}

#[async_trait]
impl LlmBackend for HistoryBackend {
    async fn stream(
        &self,
        request: &ChatRequest,
        conversation: &Conversation,
    ) -> chatstream_core::Result<LlmStream> {
        Self::scripted(&self.0, conversation.messages.len())
            .stream(request, conversation)
            .await
    }
}

pub struct Chat {
    pub gateway: Gateway,
    pub worker: WorkerHandle,
    pub store: Arc<InMemoryConversationStore>,
    pub state: ChatstreamState,
}

impl Chat {
    pub fn new() -> Self {
        Self::with(ScriptedBackend::default(), |s| s)
    }

    pub fn with(
        backend: ScriptedBackend,
        state: impl FnOnce(ChatstreamState) -> ChatstreamState,
    ) -> Self {
        let broker = InMemoryBroker::new();
        let store = Arc::new(InMemoryConversationStore::default());
        let worker = Worker::builder(
            Arc::new(broker.message_source()),
            Arc::new(broker.clone()),
            Arc::new(HistoryBackend(backend)),
        )
        .store(store.clone())
        .cancels(Arc::new(broker.clone()))
        .config(WorkerConfig {
            coalesce: CoalesceConfig::off(),
            ..WorkerConfig::default()
        })
        .build()
        .spawn();
        let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker.clone()))
            .cancels(Arc::new(broker))
            .build();
        let tokens = StaticTokens::new().with(ALICE, "alice").with(BOB, "bob");
        let state = state(
            ChatstreamState::new(gateway.clone())
                .with_store(store.clone())
                .with_authenticator(Arc::new(tokens)),
        );
        Self {
            gateway,
            worker,
            store,
            state,
        }
    }

    pub fn router(&self) -> Router {
        seed002::router(self.state.clone())
            .fallback(chatstream_axum::not_found)
            .method_not_allowed_fallback(chatstream_axum::method_not_allowed)
    }

    pub async fn call(&self, req: Request<Body>) -> Response<Body> {
        match self.router().oneshot(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        }
    }

    /// `POST /chat/threads` as `token`; the new thread's id.
    pub async fn thread(&self, token: &str) -> String {
        let resp = self
            .call(req(
                "POST",
                "/chat/threads",
                Some(token),
                Some(r#"{"title":"t"}"#),
            ))
            .await;
        assert_eq!(resp.status(), 201);
        let v = json(resp).await;
        match v["thread"]["id"].as_str() {
            Some(id) => id.to_owned(),
            None => panic!("no thread id in {v}"),
        }
    }
}

/// A request with an optional bearer token and JSON body.
pub fn req(method: &str, uri: &str, token: Option<&str>, body: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let body = body.map_or_else(Body::empty, |s| Body::from(s.to_owned()));
    match b.body(body) {
        Ok(r) => r,
        Err(e) => panic!("bad test request: {e}"),
    }
}

pub async fn json(resp: Response<Body>) -> Value {
    let text = body_text(resp).await;
    match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => panic!("not JSON ({e}): {text:?}"),
    }
}

/// The seed 002 events of a whole SSE body, with their SSE ids.
pub async fn events(resp: Response<Body>) -> Vec<(SseEvent, Seed002Event)> {
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    sse_events(resp)
        .await
        .into_iter()
        .map(|e| match parse_event(&e.data) {
            Ok(ev) => (e, ev),
            Err(err) => panic!("not a seed 002 event ({err}): {e:?}"),
        })
        .collect()
}

/// The event types, consecutive repeats folded into one.
pub fn kinds(events: &[(SseEvent, Seed002Event)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, e) in events {
        let kind = match serde_json::to_value(e.kind) {
            Ok(Value::String(s)) => s,
            other => panic!("{other:?}"),
        };
        if out.last() != Some(&kind) {
            out.push(kind);
        }
    }
    out
}

/// Checks `s` is `YYYY-MM-DDTHH:MM:SS.mmmZ` with fields in range.
pub fn assert_iso(s: &str) {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> u32 {
        match s.get(r).map(str::parse::<u32>) {
            Some(Ok(n)) => n,
            _ => panic!("not an ISO timestamp: {s:?}"),
        }
    };
    assert_eq!(b.len(), 24, "{s:?}");
    let seps = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ];
    for (i, c) in seps {
        assert_eq!(b[i], c, "{s:?}");
    }
    assert!(num(0..4) >= 2024, "{s:?}");
    assert!((1..=12).contains(&num(5..7)), "{s:?}");
    assert!((1..=31).contains(&num(8..10)), "{s:?}");
    assert!(
        num(11..13) < 24 && num(14..16) < 60 && num(17..19) < 60,
        "{s:?}"
    );
    let _ = num(20..23);
}

pub const SHORT: Duration = Duration::from_millis(50);
