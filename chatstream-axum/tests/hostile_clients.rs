//! Hostile clients over real loopback HTTP: 10,000 connections opened and dropped leave no
//! task, hub or client behind (the gateway's metrics and the runtime's task count return to
//! where they were); and with per-stream authorization on, another user can neither read a
//! stream nor continue someone else's conversation.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatstream_axum::auth::StaticTokens;
use chatstream_axum::{quickstart, seed001, ChatstreamState, SseConfig};
use chatstream_core::{
    ChatRequest, Conversation, Gateway, GatewayConfig, InMemoryBroker, LlmBackend, LlmEvent,
    LlmStream, Result, ScriptedBackend, Worker,
};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections in all.
const CONNECTIONS: usize = 10_000;
/// Connections open at once.
const AT_ONCE: usize = 200;
/// Longest the whole churn may take before the test fails as hung.
const CHURN_LIMIT: Duration = Duration::from_secs(240);

async fn serve(app: axum::Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test setup");
    let port = listener.local_addr().expect("test setup").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    port
}

/// Reads until `needle` shows up or the server closes; returns what was read.
async fn read_until(s: &mut TcpStream, needle: &str) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !String::from_utf8_lossy(&buf).contains(needle) {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// One hostile connection, by kind: opens a stream nobody writes to and leaves after the
/// head; leaves in the middle of a real answer; sends half a request; connects and leaves.
async fn one(port: u16, i: usize) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
        panic!("connect {i}");
    };
    match i % 4 {
        0 => {
            let req = format!("GET /api/stream/idle-{i}/m HTTP/1.1\r\nHost: t\r\n\r\n");
            let _ = s.write_all(req.as_bytes()).await;
            let head = read_until(&mut s, "\r\n\r\n").await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        }
        1 => {
            let body = r#"{"text":"hi"}"#;
            let req = format!(
                "POST /api/chat HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(req.as_bytes()).await;
            let answer = read_until(&mut s, "}").await;
            let stream = answer
                .split("\"stream\":\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_else(|| panic!("no stream in {answer}"))
                .to_owned();
            let req = format!("GET {stream} HTTP/1.1\r\nHost: t\r\n\r\n");
            let _ = s.write_all(req.as_bytes()).await;
            // The first token, then away.
            let got = read_until(&mut s, "token").await;
            assert!(got.contains("token"), "{got}");
        }
        2 => {
            let _ = s.write_all(b"GET /api/stream/half").await;
        }
        _ => {}
    }
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_dropped_connections_leave_nothing_behind() {
    // A slow answer, so clients of real answers leave in the middle of them; a short
    // cancel grace and keep-alive, so abandoned streams are noticed and torn down quickly.
    let backend = ScriptedBackend::default().with_delay(Duration::from_millis(20));
    let config = GatewayConfig {
        cancel_grace: Duration::from_millis(100),
        detached_hold: Duration::from_secs(2),
        ..GatewayConfig::default()
    };
    let p = Pipeline::with(backend, config, |s| {
        s.with_sse_config(SseConfig::default().with_keep_alive(Some(Duration::from_millis(200))))
    });
    let port = serve(p.router()).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    // One connection first, so everything lazily started is running before the baseline.
    one(port, 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let baseline = metrics.num_alive_tasks();

    let churn = async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..CONNECTIONS {
            if set.len() >= AT_ONCE {
                if let Some(Err(e)) = set.join_next().await {
                    panic!("connection task: {e}");
                }
            }
            set.spawn(one(port, i));
        }
        while let Some(done) = set.join_next().await {
            if let Err(e) = done {
                panic!("connection task: {e}");
            }
        }
    };
    if tokio::time::timeout(CHURN_LIMIT, churn).await.is_err() {
        panic!("{CONNECTIONS} connections did not finish within {CHURN_LIMIT:?}");
    }
    let opened = p
        .gateway
        .metrics()
        .clients_opened
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        opened >= (CONNECTIONS / 2) as u64,
        "{opened} client streams opened"
    );

    // Everything returns to zero, within a bound.
    let settled = async {
        loop {
            let hubs = p.gateway.active_streams();
            let clients = p.gateway.metrics().clients_active();
            let tasks = metrics.num_alive_tasks();
            if hubs == 0 && clients == 0 && tasks <= baseline {
                return (hubs, clients, tasks);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    match tokio::time::timeout(Duration::from_secs(60), settled).await {
        Ok((hubs, clients, tasks)) => eprintln!(
            "{CONNECTIONS} connections: {opened} client streams opened; now {hubs} hubs, \
             {clients} clients, {tasks} tasks (baseline {baseline})"
        ),
        Err(_) => panic!(
            "left behind: {} hubs, {} clients, {} tasks (baseline {baseline})",
            p.gateway.active_streams(),
            p.gateway.metrics().clients_active(),
            metrics.num_alive_tasks()
        ),
    }
    // And the server still answers.
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("test setup");
    s.write_all(b"GET /health HTTP/1.0\r\n\r\n")
        .await
        .expect("test setup");
    let health = read_until(&mut s, "healthy").await;
    assert!(health.contains("200 OK"), "{health}");
}

/// Answers with what the conversation history holds, so a test can see whose history a
/// request was answered with.
#[derive(Debug)]
struct HistoryEcho;

#[async_trait]
impl LlmBackend for HistoryEcho {
    async fn stream(
        &self,
        _request: &ChatRequest,
        conversation: &Conversation,
    ) -> Result<LlmStream> {
        let said: Vec<String> = conversation
            .messages
            .iter()
            .map(|m| m.content.clone())
            .collect();
        let text = format!("history={said:?}");
        Ok(Box::pin(futures::stream::iter([
            Ok(LlmEvent::TextDelta(text)),
            Ok(LlmEvent::Finish(chatstream_core::FinishReason::Stop)),
        ])))
    }
}

async fn post_chat(port: u16, token: &str, body: &str) -> (String, serde_json::Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("test setup");
    let req = format!(
        "POST /api/chat HTTP/1.0\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("test setup");
    let mut out = Vec::new();
    within(s.read_to_end(&mut out)).await.expect("test setup");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (head.lines().next().unwrap_or_default().to_owned(), json)
}

async fn read_stream(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("test setup");
    let req = format!("GET {path} HTTP/1.0\r\nHost: t\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("test setup");
    let mut out = Vec::new();
    within(s.read_to_end(&mut out)).await.expect("test setup");
    String::from_utf8_lossy(&out).into_owned()
}

/// With per-stream authorization on, bob may not continue alice's session: a submit naming
/// her `sessionId` must neither be answered with her history nor add to it.
#[tokio::test]
async fn another_user_cannot_continue_someone_elses_session() {
    let tokens = StaticTokens::new()
        .with("alice-token", "alice")
        .with("bob-token", "bob");
    let broker = InMemoryBroker::new();
    let _worker = Worker::builder(
        Arc::new(broker.message_source()),
        Arc::new(broker.clone()),
        Arc::new(HistoryEcho),
    )
    .build()
    .spawn();
    let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker.clone())).build();
    let state = ChatstreamState::new(gateway)
        .with_authenticator(Arc::new(tokens))
        .with_stream_auth(true);
    let app = seed001::router(state.clone()).merge(quickstart::router(state));
    let port = serve(app).await;

    let (status, first) = post_chat(port, "alice-token", r#"{"text":"my secret is 42"}"#).await;
    assert!(status.contains("202"), "{status}");
    let session = first["sessionId"].as_str().unwrap_or_default().to_owned();
    let answer = read_stream(port, first["stream"].as_str().unwrap_or_default()).await;
    assert!(answer.contains("__END__"), "{answer}");

    let body = format!(r#"{{"text":"what did alice say?","sessionId":"{session}"}}"#);
    let (status, bobs) = post_chat(port, "bob-token", &body).await;
    if status.contains("202") {
        let answer = read_stream(port, bobs["stream"].as_str().unwrap_or_default()).await;
        assert!(answer.contains("__END__"), "{answer}");
        assert!(
            !answer.contains("secret"),
            "bob was answered with alice's history: {answer}"
        );
    } else {
        assert!(status.contains("403") || status.contains("404"), "{status}");
    }

    // Alice's conversation goes on with her history and without bob's message.
    let body = format!(r#"{{"text":"and now?","sessionId":"{session}"}}"#);
    let (status, again) = post_chat(port, "alice-token", &body).await;
    assert!(status.contains("202"), "{status}");
    let answer = read_stream(port, again["stream"].as_str().unwrap_or_default()).await;
    assert!(answer.contains("my secret is 42"), "{answer}");
    assert!(
        !answer.contains("what did alice say"),
        "bob's message is in alice's history: {answer}"
    );
}
