//! The OpenAI Responses API resumed on another gateway instance over the Redis Streams bus:
//! two gateways (each its own Redis connections, its own `/v1/responses` router on its own
//! port) and one worker, sharing requests, token streams and stored responses in Redis. A
//! background response created on one instance is read there until a few deltas came,
//! dropped, and resumed with `starting_after` on the other, during generation and once
//! more after it; the joined text equals the stored `output_text`, and a cancel on the
//! second instance stops a response the first created.
//!
//! Skips with a line on stderr when Redis is unreachable, unless
//! `CHATSTREAM_REQUIRE_SERVICES=1`. The RabbitMQ case runs the official SDKs against
//! `queue_worker` (tests/responses_sdk.rs).

mod support;

use std::sync::Arc;
use std::time::Duration;

use chatstream::axum::responses::{self, ResponsesRouteConfig};
use chatstream::axum::ChatstreamState;
use chatstream::redis::testkit::{connect_or_skip, redis_url, PrefixGuard};
use chatstream::redis::{
    BusConfig, QueueConfig, RedisCancelChannel, RedisClient, RedisRequestSink, RedisRequestSource,
    RedisResponseStore, RedisTokenSink, RedisTokenSource, DEFAULT_RESPONSE_TTL,
};
use chatstream::{Gateway, ScriptedBackend, Worker, WorkerHandle};
use serde_json::Value;
use support::{http, within, SseClient};

/// Longest one step (a request, an event) may take.
const STEP: Duration = Duration::from_secs(30);

/// A slow answer: a resume lands in the middle of it.
fn backend() -> ScriptedBackend {
    ScriptedBackend::default()
        .with_delay(Duration::from_millis(10))
        .with_repeat(10)
}

fn bus() -> BusConfig {
    BusConfig {
        block: Duration::from_secs(1),
        ..BusConfig::default()
    }
}

/// One gateway instance: its own Redis connections, serving the Responses routes on a
/// port of its own until dropped.
struct Instance {
    port: u16,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn instance(prefix: &str) -> Instance {
    let client = RedisClient::connect(&redis_url(), prefix)
        .await
        .unwrap_or_else(|e| panic!("Redis: {e}"));
    let gateway = Gateway::builder(
        Arc::new(RedisRequestSink::new(
            client.clone(),
            &QueueConfig::default(),
        )),
        Arc::new(RedisTokenSource::new(client.clone(), bus())),
    )
    .cancels(Arc::new(RedisCancelChannel::new(client.clone())))
    .build();
    let store = RedisResponseStore::new(client, DEFAULT_RESPONSE_TTL);
    let config = ResponsesRouteConfig::new(Arc::new(store)).with_model("scripted");
    let app = responses::router(ChatstreamState::new(gateway), config);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"))
        .port();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Instance { port, server }
}

async fn worker(prefix: &str) -> WorkerHandle {
    let client = RedisClient::connect(&redis_url(), prefix)
        .await
        .unwrap_or_else(|e| panic!("Redis: {e}"));
    let source = RedisRequestSource::new(client.clone(), QueueConfig::default())
        .await
        .unwrap_or_else(|e| panic!("request source: {e}"));
    let sink = RedisTokenSink::new(client.clone(), bus())
        .await
        .unwrap_or_else(|e| panic!("token sink: {e}"));
    Worker::builder(Arc::new(source), Arc::new(sink), Arc::new(backend()))
        .cancels(Arc::new(RedisCancelChannel::new(client)))
        .build()
        .spawn()
}

/// One JSON exchange: the status code and the body.
async fn call(port: u16, method: &str, path: &str, body: &str) -> (u16, Value) {
    let head = format!("{method} {path} HTTP/1.0\r\nContent-Type: application/json");
    let (status, text) = http(port, &head, body, STEP).await;
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (code, v)
}

/// The next event of `sse` as JSON, or `None` when the server closed the stream.
async fn next_event(sse: &mut SseClient) -> Option<Value> {
    let e = within("an event", STEP, sse.next()).await?;
    let v: Value = serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("{err}: {e:?}"));
    // The SSE id is the event's sequence number.
    assert_eq!(e.id, v["sequence_number"].as_u64().map(|n| n.to_string()));
    Some(v)
}

async fn stream(port: u16, id: &str, starting_after: Option<u64>) -> SseClient {
    let after = starting_after
        .map(|n| format!("&starting_after={n}"))
        .unwrap_or_default();
    let path = format!("/v1/responses/{id}?stream=true{after}");
    let sse = SseClient::get(port, &path, None).await;
    assert_eq!(sse.status, 200, "{path}");
    sse
}

/// The stored response once it left `queued`/`in_progress`.
async fn final_state(port: u16, id: &str) -> Value {
    let path = format!("/v1/responses/{id}");
    within("a final state", STEP, async {
        loop {
            let (code, r) = call(port, "GET", &path, "").await;
            assert_eq!(code, 200, "{r}");
            if !matches!(r["status"].as_str(), Some("queued" | "in_progress")) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

fn delta(e: &Value) -> &str {
    match e["type"].as_str() {
        Some("response.output_text.delta") => e["delta"].as_str().unwrap_or_default(),
        _ => "",
    }
}

#[tokio::test]
async fn a_background_response_resumes_on_another_gateway_over_the_redis_bus() {
    let Some(probe) = connect_or_skip("responses-bus").await else {
        return;
    };
    let _keys = PrefixGuard::new(&probe);
    let prefix = probe.keys().prefix().to_owned();
    let worker = worker(&prefix).await;
    let (a, b) = (instance(&prefix).await, instance(&prefix).await);

    let body = r#"{"model":"scripted","input":"resume me","background":true}"#;
    let (code, created) = call(a.port, "POST", "/v1/responses", body).await;
    assert_eq!(code, 200, "{created}");
    assert_eq!(created["status"], "queued");
    let id = created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"));

    // On A until three deltas came, then the connection drops.
    let mut first = stream(a.port, id, None).await;
    let (mut seen, mut deltas, mut last) = (String::new(), 0, 0);
    while deltas < 3 {
        let e = next_event(&mut first)
            .await
            .unwrap_or_else(|| panic!("A's stream ended after {seen:?}"));
        last = e["sequence_number"]
            .as_u64()
            .unwrap_or_else(|| panic!("{e}"));
        if !delta(&e).is_empty() {
            seen.push_str(delta(&e));
            deltas += 1;
        }
    }
    drop(first);

    // On B, after the last event A's client saw: exactly the rest, numbered as before.
    let mut rest = stream(b.port, id, Some(last)).await;
    let mut numbers = vec![last];
    let mut end = None;
    while let Some(e) = next_event(&mut rest).await {
        numbers.push(
            e["sequence_number"]
                .as_u64()
                .unwrap_or_else(|| panic!("{e}")),
        );
        seen.push_str(delta(&e));
        end = Some(e);
    }
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    let end = end.unwrap_or_else(|| panic!("B's stream was empty"));
    assert_eq!(end["type"], "response.completed", "{end}");
    assert_eq!(end["response"]["status"], "completed");

    let stored = final_state(b.port, id).await;
    assert_eq!(stored["status"], "completed", "{stored}");
    assert_eq!(stored["output_text"].as_str(), Some(seen.as_str()));
    assert!(seen.contains("resume me"), "{seen}");

    // After generation, from the start on B: the whole text again.
    let mut again = stream(b.port, id, Some(0)).await;
    let mut whole = String::new();
    while let Some(e) = next_event(&mut again).await {
        whole.push_str(delta(&e));
    }
    assert_eq!(whole, seen);

    // A cancel on B stops a response A created, keeping its partial text.
    let (_, bg) = call(a.port, "POST", "/v1/responses", body).await;
    let id = bg["id"].as_str().unwrap_or_else(|| panic!("{bg}"));
    let mut s = stream(a.port, id, None).await;
    while let Some(e) = next_event(&mut s).await {
        if !delta(&e).is_empty() {
            break;
        }
    }
    drop(s);
    let (code, cancelled) = call(b.port, "POST", &format!("/v1/responses/{id}/cancel"), "").await;
    assert_eq!(code, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let partial = cancelled["output_text"].as_str().unwrap_or_default();
    assert!(
        !partial.is_empty() && partial.len() < seen.len(),
        "{cancelled}"
    );
    let (_, on_a) = call(a.port, "GET", &format!("/v1/responses/{id}"), "").await;
    assert_eq!(on_a["status"], "cancelled", "{on_a}");
    assert_eq!(on_a["output_text"], cancelled["output_text"]);

    worker.shutdown().await;
}
