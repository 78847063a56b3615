//! End to end: starts the real `quickstart` example binary, submits a message over HTTP,
//! reads the SSE answer, resumes with `Last-Event-ID`, reads the stored conversation, asks
//! to stop the finished answer, and stops the binary with SIGTERM.
//!
//! `cargo test` builds the examples next to the test binaries; when a test filter skipped
//! that, run `cargo build --example quickstart` first.
#![cfg(unix)]

mod support;

use std::time::Duration;

use support::{http, signal, start_quickstart, within};

const WAIT: Duration = Duration::from_secs(30);

fn field<'a>(json: &'a serde_json::Value, name: &str) -> &'a str {
    json[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {json}"))
}

#[tokio::test]
async fn quickstart_serves_the_page_streams_an_answer_and_stops_on_sigterm() {
    let (mut child, port) = start_quickstart(WAIT).await;

    let (status, page) = http(port, "GET / HTTP/1.0", "", WAIT).await;
    assert!(
        status.contains(" 200 ") && page.contains("new EventSource"),
        "{status}"
    );
    let (status, health) = http(port, "GET /health HTTP/1.0", "", WAIT).await;
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(health, r#"{"status":"healthy","service":"sse-service"}"#);

    let post = "POST /api/chat HTTP/1.0\r\nContent-Type: application/json";
    let (status, body) = http(port, post, r#"{"text":"hi"}"#, WAIT).await;
    assert!(status.contains(" 202 "), "{status}: {body}");
    let json: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let stream = field(&json, "stream");
    assert!(stream.ends_with(field(&json, "messageId")), "{json}");

    let (status, sse) = http(port, &format!("GET {stream} HTTP/1.0"), "", WAIT).await;
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        sse.starts_with("id: ") && sse.ends_with("data: __END__\n\n"),
        "{sse:?}"
    );
    let blocks: Vec<&str> = sse.split_terminator("\n\n").collect();
    assert!(blocks.len() > 3, "{sse:?}");
    assert!(blocks[0].contains("data: {\"token\": "), "{sse:?}");

    // Resume after the second frame: exactly the rest comes back.
    let second_id = blocks[1]
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap_or_else(|| panic!("no id in {:?}", blocks[1]));
    let head = format!("GET {stream} HTTP/1.0\r\nLast-Event-ID: {second_id}");
    let (_, rest) = http(port, &head, "", WAIT).await;
    assert_eq!(
        rest,
        blocks[2..]
            .iter()
            .map(|b| format!("{b}\n\n"))
            .collect::<String>()
    );

    // The conversation so far: the exchange, stored when the answer ended.
    let session = field(&json, "sessionId");
    let head = format!("GET /api/chat/{session}/messages HTTP/1.0");
    let (status, body) = http(port, &head, "", WAIT).await;
    assert!(status.contains(" 200 "), "{status}: {body}");
    let history: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let answer: String = blocks
        .iter()
        .filter_map(|b| b.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| v["token"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        history["messages"],
        serde_json::json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": answer},
        ])
    );

    // Stopping an answer that is over says so.
    let (status, body) = http(port, &format!("DELETE {stream} HTTP/1.0"), "", WAIT).await;
    assert!(status.contains(" 200 "), "{status}: {body}");
    assert_eq!(body, r#"{"status":"ended","finish_reason":"stop"}"#);

    signal(&child, "-TERM");
    let exit = within("graceful shutdown", WAIT, child.wait())
        .await
        .unwrap_or_else(|e| panic!("wait: {e}"));
    assert!(exit.success(), "quickstart exited with {exit}");
}
