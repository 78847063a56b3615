//! The routes over a real TCP socket, as curl and browsers use them: HTTP/1.0-style
//! close-delimited bodies keep the client side trivial.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use chatstream_axum::quickstart::SubmitResponse;
use chatstream_core::wire::sse::parse;
use chatstream_core::{
    FinishReason, GatewayConfig, ScriptedBackend, StreamEvent, StreamKey, TokenSource,
};
use common::*;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn serve(p: &Pipeline) -> SocketAddr {
    let listener = within(TcpListener::bind("127.0.0.1:0"))
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    let app = p.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn send(addr: SocketAddr, head: &str, body: &str) -> TcpStream {
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
    s
}

/// Status line and body of a whole (close-delimited) response.
async fn exchange(addr: SocketAddr, head: &str, body: &str) -> (String, String) {
    let mut s = send(addr, head, body).await;
    let mut out = Vec::new();
    within(s.read_to_end(&mut out))
        .await
        .unwrap_or_else(|e| panic!("read: {e}"));
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

#[tokio::test]
async fn submit_stream_and_resume_over_tcp() {
    let p = Pipeline::new(ScriptedBackend::default());
    let addr = serve(&p).await;
    let (status, body) = exchange(
        addr,
        "POST /api/chat HTTP/1.0\r\nContent-Type: application/json",
        r#"{"text": "over the wire"}"#,
    )
    .await;
    assert!(status.contains(" 202 "), "{status}");
    let s: SubmitResponse = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));

    let (status, body) = exchange(addr, &format!("GET {} HTTP/1.0", s.stream), "").await;
    assert!(status.contains(" 200 "), "{status}");
    assert!(body.starts_with("id: "), "{body:?}");
    assert!(body.ends_with("data: __END__\n\n"), "{body:?}");
    let full = parse(&body);
    let n = ids(&full)[1];

    let head = format!("GET {} HTTP/1.0\r\nLast-Event-ID: {n}", s.stream);
    let (_, resumed) = exchange(addr, &head, "").await;
    assert_eq!(parse(&resumed), full[2..]);
}

#[tokio::test]
async fn closing_the_connection_cancels_the_generation() {
    let backend = ScriptedBackend::default()
        .with_delay(Duration::from_millis(5))
        .with_repeat(1000);
    let config = GatewayConfig {
        cancel_grace: Duration::from_millis(10),
        ..GatewayConfig::default()
    };
    let p = Pipeline::with(backend, config, |s| s);
    let addr = serve(&p).await;
    let (_, body) = exchange(
        addr,
        "POST /api/chat HTTP/1.0\r\nContent-Type: application/json",
        r#"{"text": "long", "sessionId": "tcp"}"#,
    )
    .await;
    let s: SubmitResponse = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let key = StreamKey::new(s.session_id.as_str(), s.message_id.as_str());
    let mut on_bus = within(TokenSource::subscribe(&p.broker, &key, None))
        .await
        .unwrap_or_else(|e| panic!("subscribe: {e}"));

    let mut conn = send(addr, &format!("GET {} HTTP/1.0", s.stream), "").await;
    let mut buf = vec![0u8; 4096];
    let mut seen = String::new();
    while !seen.contains("data: {\"token\"") {
        let n = within(conn.read(&mut buf))
            .await
            .unwrap_or_else(|e| panic!("read: {e}"));
        assert!(n > 0, "stream closed early: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    drop(conn);

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
