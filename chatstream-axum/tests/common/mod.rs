//! A whole pipeline in one test: in-memory broker, a worker with the scripted backend, a
//! gateway, and the routers.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use chatstream_axum::{quickstart, seed001, ChatstreamState, ErrorBody};
use chatstream_core::wire::sse::{parse, SseEvent};
use chatstream_core::{
    CoalesceConfig, Gateway, GatewayConfig, InMemoryBroker, ScriptedBackend, Worker, WorkerConfig,
    WorkerHandle,
};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// Longest any wait in these tests may take before the test fails as hung.
pub const WAIT: Duration = Duration::from_secs(20);

/// Fails the test if `f` does not finish within [`WAIT`].
pub async fn within<F: std::future::Future>(f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?}"),
    }
}

pub struct Pipeline {
    pub broker: InMemoryBroker,
    pub gateway: Gateway,
    pub worker: WorkerHandle,
    pub state: ChatstreamState,
    pub backend: ScriptedBackend,
}

impl Pipeline {
    /// One envelope per token, so streams have several frames to resume between.
    pub fn new(backend: ScriptedBackend) -> Self {
        Self::with(backend, GatewayConfig::default(), |s| s)
    }

    pub fn with(
        backend: ScriptedBackend,
        gateway_config: GatewayConfig,
        state: impl FnOnce(ChatstreamState) -> ChatstreamState,
    ) -> Self {
        let broker = InMemoryBroker::new();
        let worker = spawn_worker(&broker, Arc::new(backend.clone()));
        let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker.clone()))
            .cancels(Arc::new(broker.clone()))
            .config(gateway_config)
            .build();
        let state = state(ChatstreamState::new(gateway.clone()));
        Self {
            broker,
            gateway,
            worker,
            state,
            backend,
        }
    }

    /// The routers as the quickstart mounts them.
    pub fn router(&self) -> Router {
        seed001::router(self.state.clone())
            .merge(quickstart::router(self.state.clone()))
            .fallback(chatstream_axum::not_found)
            .method_not_allowed_fallback(chatstream_axum::method_not_allowed)
    }

    pub async fn call(&self, req: Request<Body>) -> Response<Body> {
        match self.router().oneshot(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        }
    }
}

/// A worker on `broker` answering with `backend`, one envelope per token, listening for
/// cancels.
pub fn spawn_worker(
    broker: &InMemoryBroker,
    backend: Arc<chatstream_core::DynLlmBackend>,
) -> WorkerHandle {
    Worker::builder(
        Arc::new(broker.message_source()),
        Arc::new(broker.clone()),
        backend,
    )
    .cancels(Arc::new(broker.clone()))
    .config(WorkerConfig {
        coalesce: CoalesceConfig::off(),
        ..WorkerConfig::default()
    })
    .build()
    .spawn()
}

pub fn get(uri: &str) -> Request<Body> {
    request("GET", uri, None, Body::empty())
}

pub fn request(method: &str, uri: &str, content_type: Option<&str>, body: Body) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    match b.body(body) {
        Ok(r) => r,
        Err(e) => panic!("bad test request: {e}"),
    }
}

pub fn post_json(uri: &str, json: &str) -> Request<Body> {
    request(
        "POST",
        uri,
        Some("application/json"),
        Body::from(json.to_owned()),
    )
}

/// The whole body as text (the stream must end).
pub async fn body_text(resp: Response<Body>) -> String {
    let bytes = match within(resp.into_body().collect()).await {
        Ok(c) => c.to_bytes(),
        Err(e) => panic!("body failed: {e}"),
    };
    match String::from_utf8(bytes.to_vec()) {
        Ok(s) => s,
        Err(e) => panic!("body not UTF-8: {e}"),
    }
}

/// The next chunk of a streaming body.
pub async fn next_chunk(body: &mut Body) -> String {
    loop {
        match within(body.frame()).await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return String::from_utf8_lossy(&data).into_owned();
                }
            }
            Some(Err(e)) => panic!("body failed: {e}"),
            None => panic!("body ended"),
        }
    }
}

/// The SSE events of a complete body.
pub async fn sse_events(resp: Response<Body>) -> Vec<SseEvent> {
    parse(&body_text(resp).await)
}

/// An error response's status and parsed JSON body.
pub async fn error_body(resp: Response<Body>) -> (u16, String, ErrorBody) {
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = body_text(resp).await;
    match serde_json::from_str(&text) {
        Ok(body) => (status, ct, body),
        Err(e) => panic!("error body is not the JSON error shape ({e}): {text:?}"),
    }
}

/// The ids of `events`, as numbers.
pub fn ids(events: &[SseEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| match e.id.as_deref().map(str::parse::<u64>) {
            Some(Ok(n)) => n,
            other => panic!("event without a numeric id: {e:?} ({other:?})"),
        })
        .collect()
}

/// The text of the `{"token": …}` data lines, joined.
pub fn answer_text(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter_map(
            |e| match chatstream_core::wire::seed001::parse_data(&e.data) {
                Ok(chatstream_core::wire::seed001::Seed001Frame::Token(t)) => Some(t),
                _ => None,
            },
        )
        .collect()
}
