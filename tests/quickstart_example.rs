//! End to end: starts the real `quickstart` example binary, submits a message over HTTP,
//! reads the SSE answer, resumes with `Last-Event-ID`, and stops it with SIGTERM.
//!
//! `cargo test` builds the examples next to the test binaries; when a test filter skipped
//! that, run `cargo build --example quickstart` first.
#![cfg(unix)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(30);

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {WAIT:?}"),
    }
}

fn example_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    // target/<profile>/deps/<test> → target/<profile>/examples/quickstart
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap_or_else(|| panic!("odd path {exe:?}"));
    let path = dir.join("examples").join("quickstart");
    assert!(
        path.exists(),
        "{path:?} missing: run `cargo build --example quickstart` first"
    );
    path
}

/// One HTTP/1.0 exchange (close-delimited body); returns the status line and the body.
async fn http(port: u16, head: &str, body: &str) -> (String, String) {
    let mut s = within("connect", TcpStream::connect(("127.0.0.1", port)))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let req = format!(
        "{head}\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    within("write", s.write_all(req.as_bytes()))
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut out = Vec::new();
    within("read", s.read_to_end(&mut out))
        .await
        .unwrap_or_else(|e| panic!("read: {e}"));
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// Starts the example on a free port; returns it and the port it printed.
async fn start() -> (Child, u16) {
    let mut child = Command::new(example_path())
        .env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .env_remove("OPENAI_URL")
        .env_remove("OPENAI_API_KEY")
        .env("LOG_LEVEL", "warning")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn quickstart: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let port = within("startup banner", async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(port) = digits.parse() {
                    return port;
                }
            }
        }
        panic!("quickstart exited without printing its URL");
    })
    .await;
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

fn field<'a>(json: &'a serde_json::Value, name: &str) -> &'a str {
    json[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {json}"))
}

#[tokio::test]
async fn quickstart_serves_the_page_streams_an_answer_and_stops_on_sigterm() {
    let (mut child, port) = start().await;

    let (status, page) = http(port, "GET / HTTP/1.0", "").await;
    assert!(
        status.contains(" 200 ") && page.contains("new EventSource"),
        "{status}"
    );
    let (status, health) = http(port, "GET /health HTTP/1.0", "").await;
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(health, r#"{"status":"healthy","service":"sse-service"}"#);

    let post = "POST /api/chat HTTP/1.0\r\nContent-Type: application/json";
    let (status, body) = http(port, post, r#"{"text":"hi"}"#).await;
    assert!(status.contains(" 202 "), "{status}: {body}");
    let json: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let stream = field(&json, "stream");
    assert!(stream.ends_with(field(&json, "messageId")), "{json}");

    let (status, sse) = http(port, &format!("GET {stream} HTTP/1.0"), "").await;
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
    let (_, rest) = http(port, &head, "").await;
    assert_eq!(
        rest,
        blocks[2..]
            .iter()
            .map(|b| format!("{b}\n\n"))
            .collect::<String>()
    );

    let pid = child.id().unwrap_or_else(|| panic!("no pid"));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("kill: {e}"));
    assert!(killed.success());
    let exit = within("graceful shutdown", child.wait())
        .await
        .unwrap_or_else(|e| panic!("wait: {e}"));
    assert!(exit.success(), "quickstart exited with {exit}");
}
