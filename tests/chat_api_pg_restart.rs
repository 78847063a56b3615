//! PostgreSQL going away under `chat_api` mid-answer, on a server this test owns (initdb
//! into a temporary directory, a free port; the shared server is never touched):
//!
//! - restarted mid-stream: the answer streams on whole, and saving it (retried) succeeds;
//! - down for good: the answer still streams whole, and the client gets an `error` event
//!   saying the message was not saved, then `done`.
//!
//! Skipped with a note when PostgreSQL is not installed, unless
//! `CHATSTREAM_REQUIRE_SERVICES=1`.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "chat_api/app.rs"]
mod app;
#[path = "chat_api/own_postgres.rs"]
mod own_postgres;
mod support;

use std::time::Duration;

use app::{call, start_chat_api, ALICE, WAIT};
use own_postgres::OwnPostgres;
use serde_json::Value;
use support::within;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;

/// Seed 002 events of one `POST …/messages/stream`, as they arrive.
struct EventStream {
    lines: Lines<BufReader<TcpStream>>,
}

impl EventStream {
    async fn post(port: u16, path: &str, token: &str, body: &str) -> Self {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let req = format!(
            "POST {path} HTTP/1.0\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.expect("write");
        Self {
            lines: BufReader::new(s).lines(),
        }
    }

    /// The next event's JSON; `None` at the end of the response.
    async fn next(&mut self) -> Option<Value> {
        loop {
            let line = within("next SSE line", WAIT, self.lines.next_line())
                .await
                .expect("read")?;
            if let Some(data) = line.strip_prefix("data: ") {
                return Some(serde_json::from_str(data).expect("event JSON"));
            }
        }
    }
}

/// Starts a stream of a slow answer (no sentence limit, 80 ms a word) and reads up to its
/// first `ai_response`; the app, its port, the thread, the stream and the events so far.
async fn slow_answer(pg: &OwnPostgres) -> (support::Started<u16>, String, EventStream, Vec<Value>) {
    let app = start_chat_api(
        &pg.url(),
        "chat_api_restart",
        &[
            ("TOKEN_DELAY_MS", "80"),
            ("WORKFLOW_STEPS", "detailed:1000"),
        ],
    )
    .await;
    let (status, created) = call(
        app.ready,
        "POST",
        "/chat/threads",
        ALICE,
        r#"{"title":"t"}"#,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let thread = created["thread"]["id"].as_str().expect("id").to_owned();
    let path = format!("/chat/threads/{thread}/messages/stream");
    let mut stream = EventStream::post(app.ready, &path, ALICE, r#"{"content":"hello"}"#).await;
    let mut seen = Vec::new();
    while let Some(e) = stream.next().await {
        let first_token = e["type"] == "ai_response";
        seen.push(e);
        if first_token {
            break;
        }
    }
    (app, thread, stream, seen)
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// The text the `ai_response` chunks carried, and the final `accumulated`.
fn answer(events: &[Value]) -> (String, String) {
    let chunks = of_type(events, "ai_response");
    let text = chunks
        .iter()
        .filter(|e| e["data"]["isComplete"] == false)
        .filter_map(|e| e["data"]["content"].as_str())
        .collect();
    let accumulated = chunks
        .iter()
        .find(|e| e["data"]["isComplete"] == true)
        .and_then(|e| e["data"]["accumulated"].as_str())
        .unwrap_or_default()
        .to_owned();
    (text, accumulated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_stream_loses_nothing() {
    let Some(pg) = tokio::task::spawn_blocking(OwnPostgres::start)
        .await
        .expect("start")
    else {
        return;
    };
    let (app, thread, mut stream, mut events) = slow_answer(&pg).await;
    let pg = tokio::task::spawn_blocking(move || {
        pg.down();
        pg.up();
        pg
    })
    .await
    .expect("restart");
    while let Some(e) = stream.next().await {
        events.push(e);
    }
    assert!(of_type(&events, "error").is_empty(), "{events:#?}");
    assert_eq!(of_type(&events, "done")[0]["data"]["success"], true);
    let (text, accumulated) = answer(&events);
    assert!(text.contains("This is the answer to message"), "{text}");
    assert_eq!(text, accumulated);
    let path = format!("/chat/threads/{thread}/messages");
    let (status, stored) = call(app.ready, "GET", &path, ALICE, "").await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(
        stored["messages"][1]["content"],
        accumulated.as_str(),
        "{stored}"
    );
    drop(app);
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_at_the_end_tells_the_client_the_message_was_not_saved() {
    let Some(pg) = tokio::task::spawn_blocking(OwnPostgres::start)
        .await
        .expect("start")
    else {
        return;
    };
    let (app, thread, mut stream, mut events) = slow_answer(&pg).await;
    let pg = tokio::task::spawn_blocking(move || {
        pg.down();
        pg
    })
    .await
    .expect("stop");
    // The worker retries saving for 10 s, then says so; the answer is whole meanwhile.
    let rest = within("the rest of the stream", Duration::from_secs(40), async {
        let mut rest = Vec::new();
        while let Some(e) = stream.next().await {
            rest.push(e);
        }
        rest
    })
    .await;
    events.extend(rest);
    let errors = of_type(&events, "error");
    assert_eq!(errors.len(), 1, "{events:#?}");
    let message = errors[0]["data"]["error"].as_str().unwrap_or_default();
    assert!(message.contains("not saved"), "{message}");
    let (text, accumulated) = answer(&events);
    assert!(text.contains("This is the answer to message"), "{text}");
    assert_eq!(text, accumulated);
    assert_eq!(
        events.last().map(|e| e["type"].clone()),
        Some("done".into())
    );
    // Once the database is back, the thread is there without the unsaved exchange.
    let pg = tokio::task::spawn_blocking(move || {
        pg.up();
        pg
    })
    .await
    .expect("start again");
    let path = format!("/chat/threads/{thread}/messages");
    let (status, stored) = call(app.ready, "GET", &path, ALICE, "").await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["messages"], serde_json::json!([]), "{stored}");
    drop(app);
    drop(pg);
}
