//! Seed 003's REST API: POST → uid, GET streams seed 003 chunks byte for byte, resume,
//! `/ping`, JSON errors; over `Router::oneshot` and a real socket.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use chatstream_axum::seed003::{self, Seed003Request, Submitted};
use chatstream_axum::SseConfig;
use chatstream_core::wire::seed003::{chunk_json, Seed003Sse};
use chatstream_core::wire::sse::{parse, render};
use chatstream_core::{
    ChatRequest, ClientEvent, ClientTransport, GatewayConfig, ScriptedBackend, StreamKey,
    TokenSource,
};
use common::*;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

fn pipeline() -> Pipeline {
    Pipeline::with(ScriptedBackend::default(), GatewayConfig::default(), |s| {
        s.with_sse_config(SseConfig::default().with_keep_alive(None))
    })
}

fn app(p: &Pipeline) -> Router {
    seed003::router(p.state.clone()).fallback(chatstream_axum::not_found)
}

async fn call(p: &Pipeline, req: Request<Body>) -> Response<Body> {
    match app(p).oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    }
}

const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Tell me a short story about a brave knight."}],"stream":true,"username":"alice"}"#;

async fn submit(p: &Pipeline, body: &str) -> Submitted {
    let resp = call(p, post_json("/v1/chat/completions", body)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let text = body_text(resp).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad body ({e}): {text}"))
}

/// The SSE text seed 003's dialect renders for the stream as the broker holds it.
async fn expected_sse(p: &Pipeline, uid: &str) -> String {
    let key = StreamKey::new(uid, uid);
    let mut envs = within(TokenSource::subscribe(&p.broker, &key, None))
        .await
        .unwrap_or_else(|e| panic!("subscribe: {e}"));
    let mut encoder = Seed003Sse.encoder(&key);
    let mut frames = Vec::new();
    while let Some(env) = within(envs.next()).await {
        let env = env.unwrap_or_else(|e| panic!("envelope: {e}"));
        let end = env.event.is_end();
        encoder.encode(&ClientEvent::Envelope(Arc::new(env)), &mut frames);
        if end {
            break;
        }
    }
    frames.iter().map(render).collect()
}

fn answer(p: &Pipeline, uid: &str, text: &str) -> String {
    p.backend
        .answer(&ChatRequest::new(StreamKey::new(uid, uid), text))
}

#[tokio::test]
async fn post_answers_the_uid_and_get_streams_seed_003_chunks_byte_for_byte() {
    let p = pipeline();
    let s = submit(&p, BODY).await;
    assert!(uuid::Uuid::parse_str(&s.uid).is_ok(), "{s:?}");
    assert_eq!(s.status, "queued");
    assert_eq!(s.stream, format!("/v1/chat/response?uid={}", s.uid));

    let resp = call(&p, get(&s.stream)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let body = body_text(resp).await;
    assert_eq!(body, expected_sse(&p, &s.uid).await);

    let events = parse(&body);
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
    let stop = chunk_json(&s.uid, "", Some("stop"));
    assert_eq!(events[events.len() - 2].data, stop);
    let first = r#"{"choices":[{"delta":{"content":"Hello!"},"finish_reason":null,"index":0}],"id":"UID","object":"chat.completion.chunk"}"#;
    assert_eq!(events[0].data, first.replace("UID", &s.uid));
    let text: String = events[..events.len() - 2]
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.data).unwrap_or_default();
            v["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let said = "Tell me a short story about a brave knight.";
    assert_eq!(text, answer(&p, &s.uid, said));
}

#[tokio::test]
async fn a_given_uid_is_kept_and_defaults_match_the_go_handler() {
    let p = pipeline();
    let s = submit(
        &p,
        r#"{"messages":[{"role":"user","content":"hi"}],"uid":"my-uid-1"}"#,
    )
    .await;
    assert_eq!(s.uid, "my-uid-1");
    let body = body_text(call(&p, get("/v1/chat/response?uid=my-uid-1")).await).await;
    assert!(body.contains(&answer(&p, "my-uid-1", "hi")[..6]));
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");

    let r = seed003::chat_request(Seed003Request {
        messages: serde_json::from_str(r#"[{"role":"user","content":"x"}]"#).ok(),
        username: Some(String::new()),
        uid: Some(String::new()),
        max_tokens: Some(0),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.user.as_deref(), Some("anonymous"));
    assert!(uuid::Uuid::parse_str(&r.key.session_id).is_ok());
    assert_eq!(r.key.session_id, r.key.message_id);
    assert_eq!((r.model, r.max_tokens), (None, None));
}

#[tokio::test]
async fn accept_event_stream_streams_from_the_post_like_the_go_handler() {
    let p = pipeline();
    let mut req = post_json("/v1/chat/completions", BODY);
    req.headers_mut().insert(
        "accept",
        "text/event-stream"
            .parse()
            .unwrap_or_else(|_| unreachable!()),
    );
    let resp = call(&p, req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let uid = resp.headers()["x-chatstream-stream-id"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    let body = body_text(resp).await;
    assert_eq!(body, expected_sse(&p, &uid).await);
}

#[tokio::test]
async fn ping_is_pong() {
    let p = pipeline();
    let resp = call(&p, get("/ping")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(body_text(resp).await, "pong");
}

#[tokio::test]
async fn bad_bodies_and_queries_are_400_json() {
    let p = pipeline();
    let cases = [
        ("{not json", "invalid_json"),
        (r#"{"model":"m"}"#, "invalid_field"),
        (r#"{"messages":[]}"#, "invalid_field"),
        (r#"{"messages":"hello"}"#, "invalid_body"),
        (
            r#"{"messages":[{"role":"robot","content":"x"}]}"#,
            "invalid_field",
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"uid":"a/b"}"#,
            "invalid_field",
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#,
            "invalid_body",
        ),
    ];
    for (body, code) in cases {
        let resp = call(&p, post_json("/v1/chat/completions", body)).await;
        let (status, ct, err) = error_body(resp).await;
        assert_eq!((status, ct.as_str()), (400, "application/json"), "{body}");
        assert_eq!(err.error.code, code, "{body}");
    }
    for uri in ["/v1/chat/response", "/v1/chat/response?uid="] {
        let (status, _, err) = error_body(call(&p, get(uri)).await).await;
        assert_eq!((status, err.error.code.as_str()), (400, "invalid_field"));
    }
    let (status, _, err) =
        error_body(call(&p, get("/v1/chat/response?uid=u&lastEventId=x")).await).await;
    assert_eq!(
        (status, err.error.code.as_str()),
        (400, "invalid_last_event_id")
    );
}

#[tokio::test]
async fn last_event_id_replays_exactly_what_followed() {
    let p = pipeline();
    let s = submit(&p, BODY).await;
    let full = sse_events(call(&p, get(&s.stream)).await).await;
    let all = ids(&full);
    for cut in [0, 3, full.len() - 3] {
        // The end's chunk and [DONE] share the End's id: cut only at an id's last frame.
        let n = all[cut];
        let last = all.iter().rposition(|&i| i == n).unwrap_or(cut);
        let mut req = get(&s.stream);
        req.headers_mut().insert("last-event-id", n.into());
        assert_eq!(sse_events(call(&p, req).await).await, full[last + 1..]);
        let uri = format!("{}&lastEventId={n}", s.stream);
        assert_eq!(
            sse_events(call(&p, get(&uri)).await).await,
            full[last + 1..]
        );
    }
}

async fn http(addr: std::net::SocketAddr, head: &str, body: &str) -> String {
    let mut s = within(TcpStream::connect(addr))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let req = format!(
        "{head}\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    within(s.write_all(req.as_bytes()))
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut out = Vec::new();
    within(s.read_to_end(&mut out))
        .await
        .unwrap_or_else(|e| panic!("read: {e}"));
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn the_documented_curl_flow_over_tcp() {
    let p = pipeline();
    let listener = within(TcpListener::bind("127.0.0.1:0"))
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let router = app(&p);
    tokio::spawn(async move { axum::serve(listener, router).await });

    let post = "POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json";
    let reply = http(addr, post, BODY).await;
    assert!(reply.starts_with("HTTP/1.0 200 "), "{reply}");
    let (_, json) = reply.split_once("\r\n\r\n").unwrap_or_default();
    let s: Submitted = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));

    let reply = http(addr, &format!("GET {} HTTP/1.0", s.stream), "").await;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or_default();
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert_eq!(body, expected_sse(&p, &s.uid).await);

    let reply = http(addr, "GET /ping HTTP/1.0", "").await;
    assert!(reply.ends_with("\r\n\r\npong"), "{reply}");
}

#[tokio::test]
async fn oversize_bodies_are_413_json() {
    let p = Pipeline::with(ScriptedBackend::default(), GatewayConfig::default(), |s| {
        s.with_body_limit(1024)
    });
    let big = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(2000)
    );
    let (status, _, err) =
        error_body(call(&p, post_json("/v1/chat/completions", &big)).await).await;
    assert_eq!(
        (status, err.error.code.as_str()),
        (413, "payload_too_large")
    );
}
