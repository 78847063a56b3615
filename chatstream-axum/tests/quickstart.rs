//! `POST /api/chat`: 202 with the stream URL, then the stream; JSON errors for bad input.

mod common;

use axum::body::Body;
use chatstream_axum::quickstart::SubmitResponse;
use chatstream_core::{ChatRequest, ScriptedBackend, StreamKey};
use common::*;

async fn submit(p: &Pipeline, json: &str) -> SubmitResponse {
    let resp = p.call(post_json("/api/chat", json)).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let text = body_text(resp).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad 202 body ({e}): {text}"))
}

#[tokio::test]
async fn post_then_stream_gets_the_answer() {
    let p = Pipeline::new(ScriptedBackend::default());
    let s = submit(&p, r#"{"text": "what is chatstream?"}"#).await;
    assert!(!s.session_id.is_empty() && !s.message_id.is_empty());
    assert_eq!(
        s.stream,
        format!("/api/stream/{}/{}", s.session_id, s.message_id)
    );

    let events = sse_events(p.call(get(&s.stream)).await).await;
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("__END__"));
    let key = StreamKey::new(s.session_id.as_str(), s.message_id.as_str());
    let expected = p
        .backend
        .answer(&ChatRequest::new(key, "what is chatstream?"));
    assert_eq!(answer_text(&events), expected);
    assert!(expected.contains(&s.message_id));
}

#[tokio::test]
async fn a_given_session_is_kept_and_each_message_gets_a_new_id() {
    let p = Pipeline::new(ScriptedBackend::default());
    let a = submit(&p, r#"{"text": "one", "sessionId": "my-session_1"}"#).await;
    let b = submit(&p, r#"{"text": "two", "sessionId": "my-session_1"}"#).await;
    assert_eq!(
        (a.session_id.as_str(), b.session_id.as_str()),
        ("my-session_1", "my-session_1")
    );
    assert_ne!(a.message_id, b.message_id);
    let c = submit(&p, r#"{"text": "three", "sessionId": null}"#).await;
    assert_ne!(c.session_id, "my-session_1");
}

#[tokio::test]
async fn bad_bodies_are_400_json_errors() {
    let p = Pipeline::new(ScriptedBackend::default());
    let cases = [
        ("{not json", "invalid_json"),
        ("", "invalid_json"),
        ("{}", "invalid_body"),
        (r#"{"text": 5}"#, "invalid_body"),
        ("[]", "invalid_body"),
        (r#"{"text": ""}"#, "invalid_field"),
        (r#"{"text": "  \n "}"#, "invalid_field"),
        (r#"{"text": "hi", "sessionId": "a/b"}"#, "invalid_field"),
        (r#"{"text": "hi", "sessionId": ""}"#, "invalid_field"),
    ];
    for (json, code) in cases {
        let (status, ct, body) = error_body(p.call(post_json("/api/chat", json)).await).await;
        assert_eq!(
            (status, ct.as_str(), body.error.code.as_str()),
            (400, "application/json", code),
            "{json}"
        );
        assert!(!body.error.message.is_empty());
    }
    assert_eq!(
        p.broker.stats().requests,
        0,
        "a refused request reached the broker"
    );
}

#[tokio::test]
async fn a_body_without_json_content_type_is_a_415_json_error() {
    let p = Pipeline::new(ScriptedBackend::default());
    let req = request(
        "POST",
        "/api/chat",
        Some("text/plain"),
        Body::from(r#"{"text": "hi"}"#),
    );
    let (status, _, body) = error_body(p.call(req).await).await;
    assert_eq!(
        (status, body.error.code.as_str()),
        (415, "unsupported_media_type")
    );
}

#[tokio::test]
async fn an_oversize_body_is_a_413_json_error() {
    let p = Pipeline::new(ScriptedBackend::default());
    let big = format!(
        r#"{{"text": "{}"}}"#,
        "a".repeat(chatstream_axum::DEFAULT_BODY_LIMIT)
    );
    let (status, _, body) = error_body(p.call(post_json("/api/chat", &big)).await).await;
    assert_eq!(
        (status, body.error.code.as_str()),
        (413, "payload_too_large")
    );
    assert!(
        body.error.message.contains("65536"),
        "{}",
        body.error.message
    );

    // Just under the limit is fine.
    let fits = format!(
        r#"{{"text": "{}"}}"#,
        "a".repeat(chatstream_axum::DEFAULT_BODY_LIMIT - 20)
    );
    assert_eq!(p.call(post_json("/api/chat", &fits)).await.status(), 202);

    // A chunked body (no Content-Length) is held to the same limit.
    let chunks = futures::stream::iter(
        (0..80).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1024]))),
    );
    let req = request(
        "POST",
        "/api/chat",
        Some("application/json"),
        Body::from_stream(chunks),
    );
    let (status, _, _) = error_body(p.call(req).await).await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let p = Pipeline::new(ScriptedBackend::default());
    let (status, _, body) = error_body(p.call(get("/nope")).await).await;
    assert_eq!((status, body.error.code.as_str()), (404, "not_found"));
    let (status, _, body) = error_body(p.call(get("/api/chat")).await).await;
    assert_eq!(
        (status, body.error.code.as_str()),
        (405, "method_not_allowed")
    );
}
