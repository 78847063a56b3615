//! Seed 001's routes: the SSE stream with ids and resume, keep-alives, disconnects, health.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use chatstream_axum::SseConfig;
use chatstream_core::{
    ChatRequest, FinishReason, GatewayConfig, ScriptedBackend, StreamEvent, StreamKey, TokenSource,
};
use common::*;
use futures::StreamExt;

#[tokio::test]
async fn health_is_exactly_the_seed_body() {
    let p = Pipeline::new(ScriptedBackend::default());
    let resp = p.call(get("/health")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(
        body_text(resp).await,
        r#"{"status":"healthy","service":"sse-service"}"#
    );
}

/// Submits a request for `key` and reads its whole stream once.
async fn full_stream(p: &Pipeline, key: &StreamKey) -> Vec<chatstream_core::wire::sse::SseEvent> {
    let submitted = p
        .gateway
        .submit_detached(ChatRequest::new(key.clone(), "hello there"));
    within(submitted)
        .await
        .unwrap_or_else(|e| panic!("submit failed: {e}"));
    let uri = format!("/api/stream/{}/{}", key.session_id, key.message_id);
    let resp = p.call(get(&uri)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    sse_events(resp).await
}

#[tokio::test]
async fn stream_sends_seed_001_frames_with_ids_and_ends_with_end() {
    let p = Pipeline::new(ScriptedBackend::default());
    let key = StreamKey::new("session-1", "message-1");
    let events = full_stream(&p, &key).await;
    assert!(events.len() > 3, "{events:?}");
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("__END__"));
    let ids = ids(&events);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids not increasing: {ids:?}"
    );
    for e in &events[..events.len() - 1] {
        assert!(e.data.starts_with(r#"{"token": "#), "{e:?}");
    }
    let expected = p.backend.answer(&ChatRequest::new(key, "hello there"));
    assert_eq!(answer_text(&events), expected);
}

#[tokio::test]
async fn reconnect_with_last_event_id_gets_exactly_the_frames_after_it() {
    let p = Pipeline::new(ScriptedBackend::default());
    let key = StreamKey::new("session-2", "message-2");
    let full = full_stream(&p, &key).await;
    let all_ids = ids(&full);
    let uri = format!("/api/stream/{}/{}", key.session_id, key.message_id);
    for cut in [0, 2, full.len() - 2] {
        let n = all_ids[cut];
        let expected = &full[cut + 1..];

        let mut req = get(&uri);
        req.headers_mut().insert("last-event-id", n.into());
        let by_header = sse_events(p.call(req).await).await;
        assert_eq!(by_header, expected, "Last-Event-ID: {n}");

        let by_query = sse_events(p.call(get(&format!("{uri}?lastEventId={n}"))).await).await;
        assert_eq!(by_query, expected, "?lastEventId={n}");
    }
}

#[tokio::test]
async fn bad_last_event_id_is_a_400_json_error() {
    let p = Pipeline::new(ScriptedBackend::default());
    let mut req = get("/api/stream/s/m");
    req.headers_mut().insert(
        "last-event-id",
        "abc".parse().unwrap_or_else(|_| unreachable!()),
    );
    let (status, ct, body) = error_body(p.call(req).await).await;
    assert_eq!((status, ct.as_str()), (400, "application/json"));
    assert_eq!(body.error.code, "invalid_last_event_id");

    let (status, _, body) = error_body(p.call(get("/api/stream/s/m?lastEventId=-3")).await).await;
    assert_eq!(status, 400);
    assert_eq!(body.error.code, "invalid_last_event_id");
}

#[tokio::test]
async fn idle_streams_get_keep_alive_comments() {
    let p = Pipeline::with(ScriptedBackend::default(), GatewayConfig::default(), |s| {
        s.with_sse_config(SseConfig::default().with_keep_alive(Some(Duration::from_millis(20))))
    });
    // Nobody answers this stream: only keep-alives can come.
    let resp = p.call(get("/api/stream/quiet/stream")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    assert_eq!(next_chunk(&mut body).await, ": keep-alive\n\n");
    assert_eq!(next_chunk(&mut body).await, ": keep-alive\n\n");
}

#[tokio::test]
async fn dropping_the_response_disconnects_the_client_and_cancels_generation() {
    let backend = ScriptedBackend::default()
        .with_delay(Duration::from_millis(5))
        .with_repeat(1000);
    let config = GatewayConfig {
        cancel_grace: Duration::from_millis(10),
        ..GatewayConfig::default()
    };
    let p = Pipeline::with(backend, config, |s| s);
    let key = StreamKey::new("session-3", "message-3");
    // Watch the broker directly, so this observer does not count as a gateway client.
    let mut on_bus = within(TokenSource::subscribe(&p.broker, &key, None))
        .await
        .unwrap_or_else(|e| panic!("subscribe failed: {e}"));
    within(
        p.gateway
            .submit_detached(ChatRequest::new(key.clone(), "long")),
    )
    .await
    .unwrap_or_else(|e| panic!("submit failed: {e}"));

    let resp = p.call(get("/api/stream/session-3/message-3")).await;
    let mut body = resp.into_body();
    assert!(next_chunk(&mut body).await.contains("data: {\"token\""));
    let m = p.gateway.metrics();
    assert_eq!(m.client_disconnects.load(Ordering::Relaxed), 0);
    drop(body);
    assert_eq!(
        m.client_disconnects.load(Ordering::Relaxed),
        1,
        "the body kept the client alive"
    );

    let end = within(async {
        while let Some(env) = on_bus.next().await {
            if let Ok(env) = env {
                if let StreamEvent::End { finish_reason, .. } = env.event {
                    return Some(finish_reason);
                }
            }
        }
        None
    })
    .await;
    assert_eq!(end, Some(FinishReason::Cancelled));
}

#[tokio::test]
async fn ids_in_the_path_are_checked() {
    let p = Pipeline::new(ScriptedBackend::default());
    let long = "x".repeat(chatstream_axum::MAX_ID_LEN + 1);
    let (status, _, body) = error_body(p.call(get(&format!("/api/stream/{long}/m"))).await).await;
    assert_eq!(status, 400);
    assert_eq!(body.error.code, "invalid_field");
    let req = Request::builder()
        .uri("/api/stream/a%0Ab/m")
        .body(Body::empty())
        .unwrap_or_else(|_| unreachable!());
    let (status, _, _) = error_body(p.call(req).await).await;
    assert_eq!(status, 400);
}
