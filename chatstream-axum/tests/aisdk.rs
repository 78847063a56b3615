//! The AI SDK `useChat` backend: the UI message stream frames and header, reconnects, JSON
//! errors.

mod common;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use chatstream_axum::{aisdk, SseConfig};
use chatstream_core::wire::sse::SseEvent;
use chatstream_core::{ChatRequest, GatewayConfig, ScriptedBackend, StreamKey};
use common::*;
use serde_json::{json, Value};
use tower::ServiceExt;

fn pipeline() -> Pipeline {
    Pipeline::with(ScriptedBackend::default(), GatewayConfig::default(), |s| {
        s.with_sse_config(SseConfig::default().with_keep_alive(None))
    })
}

fn app(p: &Pipeline) -> Router {
    aisdk::router(p.state.clone())
}

async fn call(router: &Router, req: Request<Body>) -> Response<Body> {
    match router.clone().oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    }
}

/// A body as `DefaultChatTransport` sends it for a second turn (plus an extra `body` field).
fn body(chat_id: &str, said: &str) -> String {
    json!({
        "temperature": 0.5,
        "id": chat_id,
        "messages": [
            {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "first"}]},
            {"id": "a1", "role": "assistant", "parts": [
                {"type": "step-start"},
                {"type": "text", "text": "an answer", "state": "done"}
            ]},
            {"id": "u2", "role": "user", "parts": [
                {"type": "file", "mediaType": "image/png", "url": "data:,"},
                {"type": "text", "text": said}
            ]}
        ],
        "trigger": "submit-message"
    })
    .to_string()
}

fn data(events: &[SseEvent]) -> Vec<Value> {
    events
        .iter()
        .take_while(|e| e.data != "[DONE]")
        .map(|e| serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("{err}: {e:?}")))
        .collect()
}

#[tokio::test]
async fn use_chat_gets_a_ui_message_stream() {
    let p = pipeline();
    let router = app(&p);
    let resp = call(
        &router,
        post_json("/api/ai-sdk/chat", &body("chat-1", "and then?")),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-vercel-ai-ui-message-stream"], "v1");
    let events = sse_events(resp).await;
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
    let parts = data(&events);
    let types: Vec<&str> = parts.iter().filter_map(|p| p["type"].as_str()).collect();
    let n = types.len();
    assert_eq!(types[..2], ["start", "text-start"]);
    assert!(
        types[2..n - 2].iter().all(|t| *t == "text-delta"),
        "{types:?}"
    );
    assert!(n > 5, "{types:?}");
    assert_eq!(types[n - 2..], ["text-end", "finish"]);

    let message_id = parts[0]["messageId"].as_str().unwrap_or_default();
    assert!(uuid::Uuid::parse_str(message_id).is_ok(), "{}", parts[0]);
    let text_id = &parts[1]["id"];
    assert!(parts[1..n]
        .iter()
        .all(|p| &p["id"] == text_id || p["type"] == "finish"));
    let text: String = parts.iter().filter_map(|p| p["delta"].as_str()).collect();
    let key = StreamKey::new("chat-1", message_id);
    assert_eq!(text, p.backend.answer(&ChatRequest::new(key, "and then?")));
}

#[tokio::test]
async fn reconnect_replays_the_latest_answer_or_says_204() {
    let p = pipeline();
    let router = app(&p);
    let resp = call(&router, get("/api/ai-sdk/chat/unknown/stream")).await;
    assert_eq!(resp.status(), 204);

    let first =
        sse_events(call(&router, post_json("/api/ai-sdk/chat", &body("c2", "one"))).await).await;
    let resp = call(&router, post_json("/api/ai-sdk/chat", &body("c2", "two"))).await;
    let second = sse_events(resp).await;
    let resp = call(&router, get("/api/ai-sdk/chat/c2/stream")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-vercel-ai-ui-message-stream"], "v1");
    let again = sse_events(resp).await;
    assert_eq!(again, second);
    assert_ne!(again, first);

    // Clients that can send Last-Event-ID get only what followed (after a fresh `start`).
    let all = ids(&second[1..]);
    let n = all[3];
    let last = all.iter().rposition(|&i| i == n).unwrap_or(3) + 1;
    let mut req = get("/api/ai-sdk/chat/c2/stream");
    req.headers_mut().insert("last-event-id", n.into());
    let resumed = sse_events(call(&router, req).await).await;
    assert_eq!(resumed[0], second[0]);
    let texts = |e: &[SseEvent]| -> String {
        data(e)
            .iter()
            .filter_map(|p| p["delta"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(texts(&resumed), texts(&second[last + 1..]));
    assert_eq!(resumed.last(), second.last());
}

#[tokio::test]
async fn ai_sdk_4_content_and_missing_chat_id_are_accepted() {
    let p = pipeline();
    let router = app(&p);
    let v4 = r#"{"messages":[{"role":"user","content":"old style"}]}"#;
    let events = sse_events(call(&router, post_json("/api/ai-sdk/chat", v4)).await).await;
    let text: String = data(&events)
        .iter()
        .filter_map(|p| p["delta"].as_str().map(str::to_owned))
        .collect();
    assert!(text.contains("old style"), "{text}");
}

#[tokio::test]
async fn bad_bodies_are_400_json() {
    let p = pipeline();
    let router = app(&p);
    let cases = [
        ("{", "invalid_json"),
        (r#"{"id":"c"}"#, "invalid_body"),
        (r#"{"id":"c","messages":[]}"#, "invalid_field"),
        (
            r#"{"id":"c","messages":[{"role":"user","parts":[{"type":"file"}]}]}"#,
            "invalid_field",
        ),
        (
            r#"{"id":"c","messages":[{"role":"robot","parts":[]}]}"#,
            "invalid_field",
        ),
    ];
    for (json, code) in cases {
        let (status, ct, err) =
            error_body(call(&router, post_json("/api/ai-sdk/chat", json)).await).await;
        assert_eq!((status, ct.as_str()), (400, "application/json"), "{json}");
        assert_eq!(err.error.code, code, "{json}");
    }
}
