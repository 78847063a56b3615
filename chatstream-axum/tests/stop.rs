//! Explicit stop in every HTTP dialect, sent to another gateway instance than the one
//! relaying the stream: the worker stops, the relaying client's stream ends, a second stop
//! says the stream ended as cancelled, an unknown stream is a 404, and only a client allowed
//! to read a stream may stop it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use chatstream_axum::auth::{StaticTokens, StreamTokenSigner};
use chatstream_axum::openai::OpenAiRouteConfig;
use chatstream_axum::{aisdk, openai, quickstart, seed001, seed002, seed003, ChatstreamState};
use chatstream_core::testkit::backends::EndlessBackend;
use chatstream_core::{
    DynConversationStore, Gateway, InMemoryBroker, InMemoryConversationStore,
    InMemoryStreamRegistry, WorkerHandle,
};
use common::{body_text, get, post_json, request, spawn_worker, within};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const ALICE: &str = "alice-token";
const BOB: &str = "bob-token";

/// Two gateway instances on one broker, sharing what a deployment shares (the registry,
/// the store, the stream-token secret), and one worker generating a token every 5 ms
/// forever, so only a stop ends an answer.
struct Deployment {
    a: Router,
    b: Router,
    worker: WorkerHandle,
    backend: EndlessBackend,
}

fn instance(
    broker: &InMemoryBroker,
    registry: &InMemoryStreamRegistry,
    store: &Arc<DynConversationStore>,
    stream_auth: bool,
    seed003_api: bool,
) -> Router {
    let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker.clone()))
        .cancels(Arc::new(broker.clone()))
        .build();
    let tokens = StaticTokens::new().with(ALICE, "alice").with(BOB, "bob");
    let state = ChatstreamState::new(gateway)
        .with_stream_registry(Arc::new(registry.clone()))
        .with_store(store.clone())
        .with_authenticator(Arc::new(tokens))
        .with_stream_signer(StreamTokenSigner::new("one secret for every instance"))
        .with_stream_auth(stream_auth);
    // Seed 003's API and the OpenAI-compatible one share `POST /v1/chat/completions`.
    let completions = if seed003_api {
        seed003::router(state.clone())
    } else {
        openai::router(state.clone(), OpenAiRouteConfig::default())
            .merge(seed003::response_router(state.clone()))
    };
    seed001::router(state.clone())
        .merge(quickstart::router(state.clone()))
        .merge(seed002::router(state.clone()))
        .merge(completions)
        .merge(aisdk::router(state))
        .fallback(chatstream_axum::not_found)
}

impl Deployment {
    fn new(stream_auth: bool) -> Self {
        Self::with(stream_auth, false)
    }

    fn with(stream_auth: bool, seed003_api: bool) -> Self {
        let broker = InMemoryBroker::new();
        let registry = InMemoryStreamRegistry::default();
        let store: Arc<DynConversationStore> = Arc::new(InMemoryConversationStore::default());
        let backend = EndlessBackend::new(Duration::from_millis(5));
        let worker = spawn_worker(&broker, Arc::new(backend.clone()));
        Self {
            a: instance(&broker, &registry, &store, stream_auth, seed003_api),
            b: instance(&broker, &registry, &store, stream_auth, seed003_api),
            worker,
            backend,
        }
    }
}

async fn call(router: &Router, req: Request<Body>) -> Response<Body> {
    match router.clone().oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    }
}

fn bearer(mut req: Request<Body>, token: &str) -> Request<Body> {
    let value = format!("Bearer {token}").parse();
    req.headers_mut()
        .insert("authorization", value.unwrap_or_else(|_| unreachable!()));
    req
}

fn delete(uri: &str) -> Request<Body> {
    request("DELETE", uri, None, Body::empty())
}

async fn json(resp: Response<Body>) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = body_text(resp).await;
    match serde_json::from_str(&text) {
        Ok(v) => (status, v),
        Err(e) => panic!("not JSON ({e}): {text:?}"),
    }
}

/// Reads a streaming body until `enough` says its text so far is enough; returns the text.
async fn read_until(body: &mut Body, mut enough: impl FnMut(&str) -> bool) -> String {
    let mut text = String::new();
    while !enough(&text) {
        match within(body.frame()).await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    text.push_str(&String::from_utf8_lossy(&data));
                }
            }
            Some(Err(e)) => panic!("body failed: {e}"),
            None => panic!("the stream ended before {text:?} was enough"),
        }
    }
    text
}

/// The rest of a streaming body, which must end.
async fn rest(body: Body) -> String {
    match within(body.collect()).await {
        Ok(c) => String::from_utf8_lossy(&c.to_bytes()).into_owned(),
        Err(e) => panic!("body failed: {e}"),
    }
}

/// Stops through `stop` on instance B while instance A relays `body`; checks the stop's
/// answer, that the relayed stream then ends (with `end_marker`), that the worker stopped,
/// and that a second stop says the stream ended as cancelled. Returns the relayed text.
async fn stop_on_b(
    d: Deployment,
    mut body: Body,
    read: String,
    stop: impl Fn() -> Request<Body>,
    end_marker: &str,
) -> String {
    let mut text = read;
    text.push_str(&read_until(&mut body, |t| t.contains("t2 ")).await);
    let (status, answer) = json(call(&d.b, stop()).await).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "stopping", "{answer}");
    text.push_str(&rest(body).await);
    assert!(
        text.contains(end_marker),
        "the relayed stream should end with {end_marker:?}: {text}"
    );
    let (status, again) = json(call(&d.b, stop()).await).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["status"], "ended", "{again}");
    assert_eq!(again["finish_reason"], "cancelled", "{again}");
    let generated = d.backend.generated();
    let stats = within(d.worker.shutdown()).await;
    assert_eq!(stats.cancelled, 1, "{stats:?}");
    let sent = tokens_seen(&text);
    assert!(
        generated <= sent + 2,
        "the worker generated {generated} tokens, the client got about {sent}: it went on after the stop"
    );
    text
}

/// How many of the endless backend's tokens (`t0 `, `t1 `, …, in order) the text shows.
fn tokens_seen(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut highest = None;
    for (i, _) in text.match_indices('t') {
        let digits: String = bytes[i + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .map(|&b| char::from(b))
            .collect();
        if !digits.is_empty() && bytes.get(i + 1 + digits.len()) == Some(&b' ') {
            if let Ok(n) = digits.parse::<usize>() {
                highest = highest.max(Some(n));
            }
        }
    }
    highest.map_or(0, |n| n + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed001_delete_on_another_instance_stops_the_answer() {
    let d = Deployment::new(false);
    let resp = call(&d.a, post_json("/api/chat", r#"{"text":"go on"}"#)).await;
    let (status, submitted) = json(resp).await;
    assert_eq!(status, 202, "{submitted}");
    let path = submitted["stream"].as_str().unwrap_or_default().to_owned();
    let resp = call(&d.a, get(&path)).await;
    assert_eq!(resp.status(), 200);
    let stop = || delete(&path);
    stop_on_b(d, resp.into_body(), String::new(), stop, "data: __END__").await;
}

#[tokio::test]
async fn unknown_streams_and_bad_ids_get_json_errors() {
    let d = Deployment::new(false);
    for (req, want) in [
        (delete("/api/stream/nobody/nothing"), 404),
        (delete("/v1/chat/response?uid=nobody"), 404),
        (delete("/v1/chat/response"), 400),
        (
            post_json("/v1/chat/completions/chatcmpl-nobody/cancel", "{}"),
            404,
        ),
        (post_json("/api/ai-sdk/chat/no-such-chat/stop", "{}"), 404),
        (
            bearer(
                delete("/chat/threads/nothread/messages/nomsg/stream"),
                ALICE,
            ),
            404,
        ),
    ] {
        let uri = req.uri().to_string();
        let (status, body) = json(call(&d.b, req).await).await;
        assert_eq!(status, want, "{uri}: {body}");
        assert!(body["error"].is_object(), "{uri}: {body}");
    }
    assert_eq!(d.backend.generated(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_client_allowed_to_read_a_stream_may_stop_it() {
    let d = Deployment::new(true);
    let resp = call(
        &d.a,
        bearer(post_json("/api/chat", r#"{"text":"go on"}"#), ALICE),
    )
    .await;
    let (status, submitted) = json(resp).await;
    assert_eq!(status, 202, "{submitted}");
    let path = format!(
        "/api/stream/{}/{}",
        submitted["sessionId"].as_str().unwrap_or_default(),
        submitted["messageId"].as_str().unwrap_or_default()
    );
    let resp = call(&d.a, bearer(get(&path), ALICE)).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let read = read_until(&mut body, |t| t.contains("t1 ")).await;
    // No credential: 401. Bob's bearer: 404, as for reading it.
    let (status, _) = json(call(&d.b, delete(&path)).await).await;
    assert_eq!(status, 401);
    let (status, _) = json(call(&d.b, bearer(delete(&path), BOB)).await).await;
    assert_eq!(status, 404);
    // Alice's bearer on the other instance: the owner is in the shared registry.
    let stop = || bearer(delete(&path), ALICE);
    stop_on_b(d, body, read, stop, "data: __END__").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed003_delete_by_uid_stops_the_answer() {
    let d = Deployment::with(false, true);
    let body = r#"{"model":"m","messages":[{"role":"user","content":"go on"}],"uid":"uid-stop-1"}"#;
    let (status, queued) = json(call(&d.a, post_json("/v1/chat/completions", body)).await).await;
    assert_eq!(status, 200, "{queued}");
    let resp = call(&d.a, get("/v1/chat/response?uid=uid-stop-1")).await;
    assert_eq!(resp.status(), 200);
    let stop = || delete("/v1/chat/response?uid=uid-stop-1");
    stop_on_b(d, resp.into_body(), String::new(), stop, "data: [DONE]").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_cancel_stops_the_completion_and_its_chunks_say_cancelled() {
    let d = Deployment::new(false);
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"go on"}]}"#;
    let resp = call(&d.a, post_json("/v1/chat/completions", body)).await;
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-chatstream-stream-id"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    let stop = || post_json(&format!("/v1/chat/completions/{id}/cancel"), "{}");
    let text = stop_on_b(d, resp.into_body(), String::new(), stop, "data: [DONE]").await;
    assert!(
        text.contains(r#""finish_reason":"stop""#),
        "the chunks should end with a finish reason the SDKs know (cancelled is sent as stop): {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_sdk_stop_on_another_instance_stops_the_chats_latest_answer() {
    let d = Deployment::new(false);
    let body = r#"{"id":"chat-stop-1","messages":[{"id":"u1","role":"user","parts":[{"type":"text","text":"go on"}]}]}"#;
    let resp = call(&d.a, post_json("/api/ai-sdk/chat", body)).await;
    assert_eq!(resp.status(), 200);
    let stop = || post_json("/api/ai-sdk/chat/chat-stop-1/stop", "{}");
    stop_on_b(d, resp.into_body(), String::new(), stop, "data: [DONE]").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed002_delete_stops_the_message_stream_for_its_owner_only() {
    let d = Deployment::new(false);
    let resp = call(
        &d.a,
        bearer(post_json("/chat/threads", r#"{"title":"t"}"#), ALICE),
    )
    .await;
    let (status, thread) = json(resp).await;
    assert_eq!(status, 201, "{thread}");
    let thread_id = thread["thread"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let uri = format!("/chat/threads/{thread_id}/messages/stream");
    let resp = call(
        &d.a,
        bearer(post_json(&uri, r#"{"content":"go on"}"#), ALICE),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let head = read_until(&mut body, |t| t.contains("messageId")).await;
    let connected: Value = head
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_else(|| panic!("no connected event: {head}"));
    let message_id = connected["data"]["messageId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let path = format!("/chat/threads/{thread_id}/messages/{message_id}/stream");
    let (status, _) = json(call(&d.b, bearer(delete(&path), BOB)).await).await;
    assert_eq!(
        status, 404,
        "another user's message is not found: {path}\n{head}"
    );
    let stop = || bearer(delete(&path), ALICE);
    stop_on_b(d, body, head, stop, r#""type": "done""#).await;
}
