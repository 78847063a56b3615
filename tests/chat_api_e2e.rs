//! End to end: starts the real `chat_api` example on the real PostgreSQL (a schema of its
//! own, dropped after), runs seed 002's documented client loop from Node against it
//! (`tests/chat_api/seed002_client.mjs`), checks organisation scoping, 400s for malformed
//! ids and bodies, hostile text stored verbatim, then restarts the binary: the thread and
//! its messages are still there.
//!
//! Skipped with a note when PostgreSQL or `node` is missing, unless
//! `CHATSTREAM_REQUIRE_SERVICES=1`. `cargo test` builds the example next to the test
//! binaries; when a test filter skipped that, run
//! `cargo build --example chat_api --features redis,postgres` first.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "chat_api/app.rs"]
mod app;
mod support;

use std::path::Path;

use app::{call, start_chat_api, ALICE, BOB, CAROL, WAIT};
use chatstream::postgres::testkit::{postgres_url, unique_schema, PgStoreHarness, SchemaGuard};
use chatstream::testkit::skip_or_fail;
use serde_json::Value;
use support::{signal, within};
use tokio::process::Command;

/// The scripted answer cut after two sentences (the workflow's chat step).
const TWO_SENTENCES: &str = "Hello! I am chatstream's scripted assistant.";
/// SQL that would do damage if a value were formatted into a statement.
const INJECTION: &str = "x'); DROP TABLE chatstream_messages; --";

/// `node`, when installed.
fn node() -> Option<()> {
    match std::process::Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => Some(()),
        Ok(out) => skip_or_fail("node", format!("node --version: {}", out.status)),
        Err(e) => skip_or_fail("node", e),
    }
}

/// Runs the seed's client loop from Node; its JSON report.
async fn seed_client(port: u16, token: &str, thread: Option<&str>, content: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chat_api/seed002_client.mjs");
    let mut cmd = Command::new("node");
    cmd.arg(script)
        .env("BASE", format!("http://127.0.0.1:{port}"))
        .env("TOKEN", token)
        .env("CONTENT", content)
        .env("TITLE", INJECTION)
        .kill_on_drop(true);
    if let Some(t) = thread {
        cmd.env("THREAD_ID", t);
    }
    let out = within("node client", WAIT, cmd.output())
        .await
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn contents(messages: &Value) -> Vec<(String, String)> {
    messages["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {messages}"))
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default().to_owned(),
                m["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_client_streams_an_answer_that_survives_a_restart() {
    if PgStoreHarness::connect_or_skip().await.is_none() || node().is_none() {
        return;
    }
    let url = postgres_url();
    let schema = unique_schema("chatapi");
    let guard = SchemaGuard::new(&url);
    guard.add(&schema);
    let mut app = start_chat_api(&url, &schema, &[]).await;
    let port = app.ready;

    // The document's client loop: every chunk appended, the final accumulated text, done.
    let report = seed_client(port, ALICE, None, "Plan my trip").await;
    assert_eq!(report["finished"], true, "{report}");
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert_eq!(report["parseErrors"], 0, "{report}");
    let appended: String = report["appended"]
        .as_array()
        .expect("appended")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        appended, TWO_SENTENCES,
        "chat steps stop after two sentences"
    );
    assert_eq!(report["completed"], serde_json::json!([TWO_SENTENCES]));
    let thread = report["threadId"].as_str().expect("thread id").to_owned();

    // A second exchange, with hostile text, from another user of the organisation.
    let hostile = format!("{INJECTION} \u{1F980} \"quoted\" \\ back");
    let report = seed_client(port, BOB, Some(&thread), &hostile).await;
    assert_eq!(report["finished"], true, "{report}");

    let messages_path = format!("/chat/threads/{thread}/messages");
    let (status, before) = call(port, "GET", &messages_path, ALICE, "").await;
    assert_eq!(status, 200, "{before}");
    let stored = contents(&before);
    assert_eq!(
        stored,
        vec![
            ("user".to_owned(), "Plan my trip".to_owned()),
            ("assistant".to_owned(), TWO_SENTENCES.to_owned()),
            ("user".to_owned(), hostile.clone()),
            ("assistant".to_owned(), TWO_SENTENCES.to_owned()),
        ],
        "stored verbatim, in order"
    );

    // Another organisation: 404 on every route, as for a missing thread.
    for (method, path, body) in [
        ("GET", messages_path.clone(), ""),
        ("POST", messages_path.clone(), r#"{"content":"x"}"#),
        (
            "POST",
            format!("{messages_path}/stream"),
            r#"{"content":"x"}"#,
        ),
    ] {
        let (status, err) = call(port, method, &path, CAROL, body).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{method} {path}"
        );
    }
    // Malformed ids and bodies: 400 with a JSON error.
    let long = "x".repeat(300);
    for (method, path, body) in [
        ("GET", "/chat/threads/a%00b/messages".to_owned(), ""),
        ("GET", format!("/chat/threads/{long}/messages"), ""),
        ("POST", format!("{messages_path}/stream"), "{not json"),
        (
            "POST",
            format!("{messages_path}/stream"),
            r#"{"content":42}"#,
        ),
        (
            "POST",
            format!("{messages_path}/stream"),
            r#"{"content":"  "}"#,
        ),
        ("POST", "/chat/threads".to_owned(), r#"{"title":["no"]}"#),
    ] {
        let (status, err) = call(port, method, &path, ALICE, body).await;
        assert_eq!(status, 400, "{method} {path} {body}: {err}");
        assert!(err["error"]["code"].is_string(), "JSON error body: {err}");
    }

    // Restart the binary: the thread, its title and its messages are still there.
    signal(&app.child, "-TERM");
    let exit = within("chat_api exit", WAIT, app.child.wait())
        .await
        .expect("wait");
    assert!(exit.success(), "chat_api on SIGTERM: {exit}");
    let again = start_chat_api(&url, &schema, &[]).await;
    let (status, after) = call(again.ready, "GET", &messages_path, BOB, "").await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(contents(&after), stored, "messages after a restart");
    let (_, threads) = call(again.ready, "GET", "/chat/threads", ALICE, "").await;
    assert_eq!(threads["threads"][0]["id"], thread.as_str(), "{threads}");
    assert_eq!(
        threads["threads"][0]["title"], INJECTION,
        "title stored verbatim"
    );
    assert_eq!(threads["threads"][0]["messageCount"], 4);
}
