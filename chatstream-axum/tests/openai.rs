//! The OpenAI-compatible mode: object shapes, chunk streams, usage, errors, models, resume,
//! and the real async-openai client against a real socket.

mod common;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessage, ChatCompletionStreamOptions, CreateChatCompletionRequest,
};
use async_openai::Client;
use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use chatstream_axum::openai::{self, OpenAiRouteConfig};
use chatstream_axum::SseConfig;
use chatstream_core::wire::sse::SseEvent;
use chatstream_core::{ChatRequest, GatewayConfig, ScriptedBackend, StreamKey};
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};
use tower::ServiceExt;

fn pipeline() -> Pipeline {
    Pipeline::with(ScriptedBackend::default(), GatewayConfig::default(), |s| {
        s.with_sse_config(SseConfig::default().with_keep_alive(None))
    })
}

fn config() -> OpenAiRouteConfig {
    OpenAiRouteConfig {
        models: vec!["scripted".into(), "org/other".into()],
        default_model: "scripted".into(),
        ..OpenAiRouteConfig::default()
    }
}

fn app(p: &Pipeline, config: OpenAiRouteConfig) -> Router {
    openai::router(p.state.clone(), config)
}

async fn call(p: &Pipeline, req: Request<Body>) -> Response<Body> {
    match app(p, config()).oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    }
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn answer(p: &Pipeline, id: &str, said: &str) -> String {
    p.backend
        .answer(&ChatRequest::new(StreamKey::new(id, id), said))
}

fn stream_id(resp: &Response<Body>) -> String {
    let v = resp.headers().get(openai::STREAM_ID_HEADER);
    v.and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The concatenated `delta.content` of chunk events.
fn content(events: &[SseEvent]) -> String {
    let chunks = events.iter().filter(|e| e.data != "[DONE]");
    chunks
        .map(|e| json_of(&e.data)["choices"][0]["delta"]["content"].clone())
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect()
}

const ASK: &str = r#"{"model":"gpt-4o","temperature":0.3,"tools":[],"seed":1,"messages":[{"role":"system","content":"be kind"},{"role":"user","content":"hello"}]"#;

#[tokio::test]
async fn non_streaming_answers_a_chat_completion_object() {
    let p = pipeline();
    let resp = call(&p, post_json("/v1/chat/completions", &format!("{ASK}}}"))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let id = stream_id(&resp);
    let v = json_of(&body_text(resp).await);
    assert_eq!(v["id"], id);
    assert!(id.starts_with("chatcmpl-"), "{id}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o");
    assert!(v["created"].as_u64().unwrap_or(0) > 1_700_000_000);
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], answer(&p, &id, "hello"));
    assert_eq!(choice["finish_reason"], "stop");
    let u = &v["usage"];
    let sum = u["prompt_tokens"]
        .as_u64()
        .zip(u["completion_tokens"].as_u64());
    assert_eq!(sum.map(|(a, b)| a + b), u["total_tokens"].as_u64());
}

#[tokio::test]
async fn streaming_sends_chunks_and_ends_with_done() {
    let p = pipeline();
    let body = format!(r#"{ASK},"stream":true}}"#);
    let resp = call(&p, post_json("/v1/chat/completions", &body)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let id = stream_id(&resp);
    let events = sse_events(resp).await;
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| json_of(&e.data))
        .collect();
    for c in &chunks {
        assert_eq!(
            (c["id"].as_str(), c["model"].as_str()),
            (Some(&*id), Some("gpt-4o"))
        );
        assert_eq!(c["object"], "chat.completion.chunk");
        assert!(c.get("usage").is_none(), "usage without include_usage: {c}");
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let last = &chunks[chunks.len() - 1]["choices"][0];
    assert_eq!(
        (last["delta"].clone(), last["finish_reason"].clone()),
        (json!({}), json!("stop"))
    );
    assert_eq!(content(&events), answer(&p, &id, "hello"));
}

#[tokio::test]
async fn include_usage_adds_the_usage_chunk() {
    let p = pipeline();
    let body = format!(r#"{ASK},"stream":true,"stream_options":{{"include_usage":true}}}}"#);
    let events = sse_events(call(&p, post_json("/v1/chat/completions", &body)).await).await;
    let n = events.len();
    assert_eq!(events[n - 1].data, "[DONE]");
    let usage = json_of(&events[n - 2].data);
    assert_eq!(usage["choices"], json!([]));
    assert!(
        usage["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 3,
        "{usage}"
    );
    for e in &events[..n - 2] {
        assert_eq!(json_of(&e.data)["usage"], Value::Null, "{}", e.data);
    }
}

#[tokio::test]
async fn bad_requests_are_openai_shaped_400s() {
    let p = pipeline();
    let cases = [
        ("{nope", None),
        (r#"{"model":"m"}"#, None),
        (r#"{"messages":[]}"#, Some("messages")),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"n":3}"#,
            Some("n"),
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"tool_choice":"required"}"#,
            Some("tool_choice"),
        ),
        (
            r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
            Some("messages[0].content"),
        ),
    ];
    for (body, param) in cases {
        let resp = call(&p, post_json("/v1/chat/completions", body)).await;
        assert_eq!(resp.status(), 400, "{body}");
        let v = json_of(&body_text(resp).await);
        let e = &v["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert_eq!(e["type"], "invalid_request_error", "{v}");
        assert_eq!(e["param"], json!(param), "{v}");
        assert!(e.get("code").is_some(), "{v}");
    }
    let strict = OpenAiRouteConfig {
        reject_unknown_models: true,
        ..config()
    };
    let req = post_json("/v1/chat/completions", &format!("{ASK}}}"));
    let resp = app(&p, strict)
        .oneshot(req)
        .await
        .unwrap_or_else(|e| match e {});
    assert_eq!(resp.status(), 404);
    assert_eq!(
        json_of(&body_text(resp).await)["error"]["code"],
        "model_not_found"
    );
}

#[tokio::test]
async fn models_are_listed_and_retrievable() {
    let p = pipeline();
    let v = json_of(&body_text(call(&p, get("/v1/models")).await).await);
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["scripted", "org/other"]);
    assert_eq!(v["data"][0]["object"], "model");
    assert_eq!(v["data"][0]["owned_by"], "chatstream");
    assert!(v["data"][0]["created"].is_u64());
    let one = json_of(&body_text(call(&p, get("/v1/models/org/other")).await).await);
    assert_eq!(one["id"], "org/other");
    let resp = call(&p, get("/v1/models/nope")).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(
        json_of(&body_text(resp).await)["error"]["code"],
        "model_not_found"
    );
}

#[tokio::test]
async fn the_stream_resumes_by_id_after_last_event_id() {
    let p = pipeline();
    let body = format!(r#"{ASK},"stream":true}}"#);
    let resp = call(&p, post_json("/v1/chat/completions", &body)).await;
    let id = stream_id(&resp);
    let full = sse_events(resp).await;
    let all = ids(&full);
    let uri = format!("/v1/chat/completions/{id}/stream?model=gpt-4o");
    assert_eq!(
        sse_events(call(&p, get(&uri)).await).await,
        full,
        "replay from the start"
    );
    for cut in [2, full.len() / 2] {
        let n = all[cut];
        let last = all.iter().rposition(|&i| i == n).unwrap_or(cut);
        let mut req = get(&uri);
        req.headers_mut().insert("last-event-id", n.into());
        let resumed = sse_events(call(&p, req).await).await;
        // A resumed stream opens with the role chunk again (no text), then what followed.
        assert_eq!(resumed[0].data, full[0].data);
        assert_eq!(resumed[1..], full[last + 1..]);
    }
    let resp = call(
        &p,
        get(&format!("/v1/chat/completions/{id}/stream?lastEventId=x")),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        json_of(&body_text(resp).await)["error"]["type"],
        "invalid_request_error"
    );
}

#[tokio::test]
async fn the_real_openai_client_streams_the_answer() {
    let p = pipeline();
    let listener = within(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let router = app(&p, config());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let base = format!("http://{addr}/v1");
    let client = Client::with_config(OpenAIConfig::new().with_api_base(base).with_api_key("k"));

    // `stream` is set explicitly: with async-openai's `byot` feature (which chatstream-core's
    // `openai` feature turns on, so a workspace build has it) `create_stream` sends the
    // request as given, and without `"stream": true` the server rightly answers one JSON
    // object.
    let request = CreateChatCompletionRequest {
        model: "scripted".into(),
        messages: vec![ChatCompletionRequestUserMessage::from("tell me more").into()],
        stream: Some(true),
        stream_options: Some(ChatCompletionStreamOptions {
            include_usage: Some(true),
            include_obfuscation: None,
        }),
        ..Default::default()
    };
    let mut stream = within(client.chat().create_stream(request.clone()))
        .await
        .unwrap_or_else(|e| panic!("create_stream: {e}"));
    let (mut text, mut id, mut usage) = (String::new(), String::new(), None);
    while let Some(chunk) = within(stream.next()).await {
        let chunk = chunk.unwrap_or_else(|e| panic!("chunk: {e}"));
        id = chunk.id;
        usage = usage.or(chunk.usage);
        for c in chunk.choices {
            text.push_str(c.delta.content.as_deref().unwrap_or_default());
        }
    }
    assert_eq!(text, answer(&p, &id, "tell me more"));
    assert!(usage.is_some_and(|u| u.completion_tokens > 0));

    let whole = within(client.chat().create(CreateChatCompletionRequest {
        stream: None,
        stream_options: None,
        ..request
    }))
    .await
    .unwrap_or_else(|e| panic!("create: {e}"));
    let said = whole.choices[0].message.content.clone().unwrap_or_default();
    assert_eq!(said, answer(&p, &whole.id, "tell me more"));

    let models = within(client.models().list())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(models.data.len(), 2);

    let bad = CreateChatCompletionRequest {
        model: "scripted".into(),
        ..Default::default()
    };
    match within(client.chat().create(bad)).await {
        Err(OpenAIError::ApiError(e)) => {
            assert_eq!(e.status_code.as_u16(), 400);
            assert_eq!(e.api_error.param.as_deref(), Some("messages"));
            assert_eq!(e.api_error.r#type.as_deref(), Some("invalid_request_error"));
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn oversize_bodies_are_openai_shaped_413s() {
    let p = Pipeline::with(ScriptedBackend::default(), GatewayConfig::default(), |s| {
        s.with_body_limit(1024)
    });
    let big = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(2000)
    );
    let resp = call(&p, post_json("/v1/chat/completions", &big)).await;
    assert_eq!(resp.status(), 413);
    let v = json_of(&body_text(resp).await);
    assert_eq!(v["error"]["code"], "payload_too_large");
    assert_eq!(v["error"]["type"], "invalid_request_error");
}
