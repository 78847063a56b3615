//! Starting the `chat_api` example and calling it, for the root tests that need it.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use crate::support::{example_path, http, port_after, start, Started};

pub(crate) const WAIT: Duration = Duration::from_secs(30);
pub(crate) const ALICE: &str = "tok-alice";
pub(crate) const BOB: &str = "tok-bob";
pub(crate) const CAROL: &str = "tok-carol";

/// Starts `chat_api` on `url` in `schema`, the scripted backend at 5 ms a word.
pub(crate) async fn start_chat_api(
    url: &str,
    schema: &str,
    extra: &[(&str, &str)],
) -> Started<u16> {
    let mut cmd = Command::new(example_path("chat_api"));
    cmd.env("DATABASE_URL", url)
        .env("DATABASE_SCHEMA", schema)
        .env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .env("TOKEN_DELAY_MS", "5")
        .env(
            "CHATSTREAM_API_TOKENS",
            format!("{ALICE}:alice:acme,{BOB}:bob:acme,{CAROL}:carol:globex"),
        )
        .env("LOG_LEVEL", "warning")
        .env("WORKFLOW_STEPS", "chat:256")
        .env_remove("RABBITMQ_URL")
        .env_remove("REDIS_URL")
        .env_remove("OPENAI_URL")
        .env_remove("OPENAI_API_KEY")
        .env_remove("CHATSTREAM_JWT_HS256_SECRET")
        .env_remove("CHATSTREAM_JWT_RS256_PUBLIC_KEY");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    start(cmd, "chat_api", WAIT, |line| {
        line.starts_with("chat_api: seed 002 API on")
            .then(|| port_after(line, "http://127.0.0.1:"))
            .flatten()
    })
    .await
}

/// One HTTP/1.0 call with a bearer token and optional JSON body; status code and JSON.
pub(crate) async fn call(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, Value) {
    let mut head = format!("{method} {path} HTTP/1.0\r\nAuthorization: Bearer {token}");
    if !body.is_empty() {
        head.push_str("\r\nContent-Type: application/json");
    }
    let (status, text) = http(port, &head, body, WAIT).await;
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("status line {status:?}"));
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (code, json)
}
