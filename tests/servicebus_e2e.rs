//! End to end on Service Bus: starts the real `servicebus_worker` (seed 000) and
//! `servicebus_sse` (seed 001) example binaries against an in-process fake Service Bus
//! (chatstream-servicebus's `fake` feature: AMQP 1.0 with the real azservicebus client on
//! both sides), publishes seed 000 requests to `user-messages` as the seed's front service
//! does, and reads the answers as SSE clients of seed 001's
//! `/api/stream/{sessionId}/{chatMessageId}`.
//!
//! With `REDIS_URL` (the Redis of the tests, `CHATSTREAM_REDIS_URL`) set for both binaries,
//! a client resumes on another `servicebus_sse` instance from the Redis history log; that
//! test skips when Redis is unreachable, unless `CHATSTREAM_REQUIRE_SERVICES=1`.
//!
//! Real Azure is not reachable from CI; chatstream-servicebus/tests/azure.rs runs against a
//! real namespace when `CHATSTREAM_SERVICEBUS_CONNECTION_STRING` is set.
//!
//! `cargo test` builds the examples next to the test binaries; when a test filter skipped
//! that, run `cargo build --examples --features servicebus,redis` first.
#![cfg(all(unix, feature = "servicebus", feature = "axum"))]

mod support;

use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatstream_redis::testkit::{connect_or_skip, redis_url, PrefixGuard};
use chatstream_servicebus::fake::{FakeConfig, FakeServiceBus};
use chatstream_servicebus::{ServiceBusConnection, ServiceBusRequestSink};
use support::{example_path, http, port_after, signal, start, within, SseClient};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Longest any single wait may take before the test fails as hung.
const WAIT: Duration = Duration::from_secs(60);

/// A running example process; killed when dropped.
struct Running {
    child: Child,
    /// The port it printed, for the SSE service.
    port: Option<u16>,
}

impl Running {
    /// Starts example `name` against `fake` and waits for its line starting with `ready`
    /// (for the SSE service, the one naming its URL).
    async fn start(name: &str, fake: &FakeServiceBus, extra: &[(&str, &str)], ready: &str) -> Self {
        let mut cmd = Command::new(example_path(name));
        for var in [
            "SERVICEBUS_CONNECTION_STRING",
            "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE",
            "SERVICEBUS_USER_MESSAGES_TOPIC",
            "SERVICEBUS_USER_MESSAGES_SUBSCRIPTION",
            "SERVICEBUS_TOKEN_STREAMS_TOPIC",
            "SERVICEBUS_TOKEN_STREAMS_SUBSCRIPTION",
            "OPENAI_URL",
            "OPENAI_API_KEY",
            "CORS_ORIGINS",
            "TOKEN_DELAY_MS",
            "WORKER_CONCURRENCY",
            "REDIS_URL",
            "REDIS_PREFIX",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(fake.env())
            .env("LOG_LEVEL", "WARNING")
            // fe2o3 (under azservicebus) loses an acknowledgement that comes back faster
            // than it records the send, which only a loopback broker on a loaded machine
            // manages: the send is then retried after this timeout (the gateway drops the
            // duplicate by seq) instead of after the default minute.
            .env("SERVICEBUS_TRY_TIMEOUT", "5")
            .envs(extra.iter().copied());
        let started = start(cmd, name, WAIT, |line| {
            line.starts_with(ready)
                .then(|| port_after(line, "http://127.0.0.1:"))
        })
        .await;
        Self {
            child: started.child,
            port: started.ready,
        }
    }

    fn port(&self) -> u16 {
        self.port.unwrap_or_else(|| panic!("no port printed"))
    }

    async fn terminate(mut self) -> ExitStatus {
        signal(&self.child, "-TERM");
        within("exit after SIGTERM", WAIT, self.child.wait())
            .await
            .unwrap_or_else(|e| panic!("wait: {e}"))
    }
}

/// The fake, the two binaries, and a sender to `user-messages` as seed 000's front service.
struct Deployment {
    fake: FakeServiceBus,
    worker: Running,
    sse: Running,
    requests: ServiceBusRequestSink,
}

impl Deployment {
    async fn start() -> Self {
        // Shorter than the seed's 0.1 s so the test is quick; still one character at a
        // time, and slow enough for two answers to overlap.
        Self::start_with("15", &[]).await
    }

    /// The fake and both binaries, the worker's demo answer one character every
    /// `token_delay_ms`, and `env` set for both.
    async fn start_with(token_delay_ms: &str, env: &[(&str, &str)]) -> Self {
        let fake = FakeServiceBus::start(FakeConfig::chatstream("sse-service"))
            .await
            .unwrap_or_else(|e| panic!("fake Service Bus: {e}"));
        let mut worker_env = vec![("TOKEN_DELAY_MS", token_delay_ms)];
        worker_env.extend_from_slice(env);
        let worker = Running::start(
            "servicebus_worker",
            &fake,
            &worker_env,
            "servicebus_worker: answering",
        )
        .await;
        let sse = Self::start_sse(&fake, env).await;
        let conn = ServiceBusConnection::connect(fake.config())
            .await
            .unwrap_or_else(|e| panic!("connect to the fake: {e}"));
        let requests = conn
            .request_sink()
            .await
            .unwrap_or_else(|e| panic!("sender: {e}"));
        Self {
            fake,
            worker,
            sse,
            requests,
        }
    }

    /// Another `servicebus_sse` instance on the same subscription.
    async fn start_sse(fake: &FakeServiceBus, env: &[(&str, &str)]) -> Running {
        let mut sse_env = vec![("HOST", "127.0.0.1"), ("PORT", "0")];
        sse_env.extend_from_slice(env);
        Running::start(
            "servicebus_sse",
            fake,
            &sse_env,
            "servicebus_sse: SSE service on",
        )
        .await
    }

    /// Publishes seed 000's request JSON (as Python's `json.dumps` writes it).
    async fn publish(&self, text: &str, session_id: &str, message_id: &str) {
        let body = format!(
            r#"{{"text": "{text}", "sessionId": "{session_id}", "messageId": "{message_id}"}}"#
        );
        self.requests
            .submit_raw(body.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"));
    }

    /// Stops both binaries with SIGTERM; both exit cleanly.
    async fn stop(self) {
        let status = self.sse.terminate().await;
        assert!(status.success(), "servicebus_sse after SIGTERM: {status}");
        let status = self.worker.terminate().await;
        assert!(
            status.success(),
            "servicebus_worker after SIGTERM: {status}"
        );
        drop(self.fake);
    }
}

/// `GET path` over HTTP/1.0; returns the status line and the body.
async fn http_get(port: u16, path: &str) -> (String, String) {
    http(port, &format!("GET {path} HTTP/1.0"), "", WAIT).await
}

/// The `data:` lines of an SSE stream as they arrive, each logged as `(client, data)` in
/// `log`, until `__END__` or the end of the connection.
async fn read_sse(
    port: u16,
    path: &str,
    client: &'static str,
    log: Arc<Mutex<Vec<(&'static str, String)>>>,
) -> (String, Vec<String>) {
    let mut s = within("connect", WAIT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let req =
        format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n");
    within("write", WAIT, s.write_all(req.as_bytes()))
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut lines = BufReader::new(s).lines();
    let mut head = String::new();
    within("response head", WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.is_empty() {
                return;
            }
            head.push_str(&line);
            head.push('\n');
        }
        panic!("{client}: connection closed in the head: {head}");
    })
    .await;
    let mut data = Vec::new();
    within(&format!("{client}'s stream"), WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(d) = line.strip_prefix("data: ") {
                log.lock().expect("log").push((client, d.to_owned()));
                data.push(d.to_owned());
                if d == "__END__" {
                    return;
                }
            }
        }
    })
    .await;
    (head, data)
}

/// The tokens of seed 001 frames, checking that every frame before the last is
/// `{"token": …}` as Python's `json.dumps` writes it and the last is `__END__`.
fn tokens_of(client: &str, data: &[String]) -> String {
    assert_eq!(
        data.last().map(String::as_str),
        Some("__END__"),
        "{client}: {data:?}"
    );
    let mut text = String::new();
    for frame in &data[..data.len() - 1] {
        assert!(frame.starts_with(r#"{"token": ""#), "{client}: {frame}");
        let json: serde_json::Value =
            serde_json::from_str(frame).unwrap_or_else(|e| panic!("{client}: {e}: {frame}"));
        let token = json["token"]
            .as_str()
            .unwrap_or_else(|| panic!("{client}: no token in {frame}"));
        assert_eq!(
            json.as_object().map(|o| o.len()),
            Some(1),
            "{client}: {frame}"
        );
        text.push_str(token);
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_stream_at_once_each_client_gets_only_its_own_answer() {
    let d = Deployment::start().await;
    let port = d.sse.port();

    let (head, body) = http_get(port, "/health").await;
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert_eq!(body, r#"{"status":"healthy","service":"sse-service"}"#);

    // Both clients connect first, as the seed's front end opens the stream and then posts.
    let log = Arc::new(Mutex::new(Vec::new()));
    let alice = tokio::spawn(read_sse(
        port,
        "/api/stream/session-alice/msg-a1",
        "alice",
        log.clone(),
    ));
    let bob = tokio::spawn(read_sse(
        port,
        "/api/stream/session-bob/msg-b1",
        "bob",
        log.clone(),
    ));
    d.publish("What is a topic?", "session-alice", "msg-a1")
        .await;
    d.publish("And a subscription?", "session-bob", "msg-b1")
        .await;
    let (alice_head, alice_data) = alice.await.expect("alice's task");
    let (bob_head, bob_data) = bob.await.expect("bob's task");

    for head in [&alice_head, &bob_head] {
        assert!(head.starts_with("HTTP/1.0 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/event-stream"),
            "{head}"
        );
    }
    assert_eq!(
        tokens_of("alice", &alice_data),
        r#"This is a response to your message "What is a topic?" (message msg-a1)."#
    );
    assert_eq!(
        tokens_of("bob", &bob_data),
        r#"This is a response to your message "And a subscription?" (message msg-b1)."#
    );
    // The demo streams one character at a time, so there are many frames per answer.
    assert!(alice_data.len() > 20, "{alice_data:?}");

    // The two answers streamed at the same time: bob's frames arrived between alice's first
    // and last, rather than one answer after the other.
    let log = log.lock().expect("log").clone();
    let first_alice = log.iter().position(|(c, _)| *c == "alice");
    let last_alice = log.iter().rposition(|(c, _)| *c == "alice");
    let (Some(first), Some(last)) = (first_alice, last_alice) else {
        panic!("no frames for alice: {log:?}");
    };
    assert!(
        log[first..last].iter().any(|(c, _)| *c == "bob"),
        "the sessions streamed one after the other: {log:?}"
    );

    // Every request was completed once answered: nothing waits, nothing was dead-lettered.
    assert_eq!(d.fake.available("user-messages", "worker-service"), 0);
    assert!(d
        .fake
        .dead_letters("user-messages", "worker-service")
        .is_empty());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_is_dead_lettered_with_a_reason_and_the_next_is_answered() {
    let d = Deployment::start().await;
    let port = d.sse.port();

    d.requests
        .submit_raw(b"{\"text\": \"no ids\"}")
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"));
    d.requests
        .submit_raw(b"not json at all")
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"));
    // The worker goes on: a good request after the bad ones is answered.
    let log = Arc::new(Mutex::new(Vec::new()));
    let reader = tokio::spawn(read_sse(port, "/api/stream/s-1/m-1", "carol", log));
    d.publish("still there?", "s-1", "m-1").await;
    let (_, data) = reader.await.expect("reader task");
    assert_eq!(
        tokens_of("carol", &data),
        r#"This is a response to your message "still there?" (message m-1)."#
    );

    let dead = within("both bad requests dead-lettered", WAIT, async {
        loop {
            let dead = d.fake.dead_letters("user-messages", "worker-service");
            if dead.len() >= 2 {
                return dead;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    let mut bodies: Vec<&[u8]> = dead.iter().map(|l| l.body.as_slice()).collect();
    bodies.sort();
    assert_eq!(
        bodies,
        [&b"not json at all"[..], &b"{\"text\": \"no ids\"}"[..]],
        "the bad messages are kept as they were sent"
    );
    for letter in &dead {
        let said = [&letter.reason, &letter.description]
            .into_iter()
            .flatten()
            .any(|r| !r.trim().is_empty());
        assert!(said, "dead-lettered without a reason: {letter:?}");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_get_json_errors_and_unknown_routes_404() {
    let d = Deployment::start().await;
    let port = d.sse.port();

    let (head, body) = http_get(port, "/api/stream/only-one-segment").await;
    assert!(head.starts_with("HTTP/1.0 404"), "{head}");
    let json: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(
        json["error"].is_object() || json["error"].is_string(),
        "{json}"
    );

    // A message id with a character no broker key may carry is refused, not forwarded.
    let (head, body) = http_get(port, "/api/stream/s/m%0Aid").await;
    assert!(head.starts_with("HTTP/1.0 400"), "{head}: {body}");
    d.stop().await;
}

/// Reads seed 001 frames until `__END__` (or the end of the connection): the `(id, data)`
/// of each.
async fn read_frames(client: &mut SseClient, who: &str) -> Vec<(Option<String>, String)> {
    let mut frames = Vec::new();
    while let Some(event) = within(&format!("{who}'s next frame"), WAIT, client.next()).await {
        let end = event.data == "__END__";
        frames.push((event.id, event.data));
        if end {
            break;
        }
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_a_client_resumes_exactly_on_another_instance() {
    // The history log: the Redis bus, under a prefix of this test's own.
    let Some(redis) = connect_or_skip("sb-e2e").await else {
        return;
    };
    let _guard = PrefixGuard::new(&redis);
    let (url, prefix) = (redis_url(), redis.keys().prefix().to_owned());
    let env = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_PREFIX", prefix.as_str()),
    ];
    // 40 ms a character: the answer is under way for about three seconds.
    let d = Deployment::start_with("40", &env).await;
    let other = Deployment::start_sse(&d.fake, &env).await;
    let path = "/api/stream/session-resume/msg-r1";
    let answer = r#"This is a response to your message "Where was I?" (message msg-r1)."#;

    // Part of the answer from the first instance...
    let mut first = SseClient::get(d.sse.port(), path, None).await;
    assert_eq!(first.status, 200);
    d.publish("Where was I?", "session-resume", "msg-r1").await;
    let mut part = Vec::new();
    while part.len() < 10 {
        let event = within("a frame from the first instance", WAIT, first.next())
            .await
            .unwrap_or_else(|| panic!("the first instance ended early: {part:?}"));
        assert_ne!(event.data, "__END__", "the answer ended early: {part:?}");
        part.push((event.id, event.data));
    }
    drop(first);
    let last_id = part
        .last()
        .and_then(|(id, _)| id.clone())
        .unwrap_or_else(|| panic!("a frame without id: {part:?}"));

    // ...and exactly the rest from the other, which never saw the stream.
    let mut second = SseClient::get(other.port(), path, Some(&last_id)).await;
    assert_eq!(second.status, 200);
    let rest = read_frames(&mut second, "the second instance").await;
    assert!(
        rest.len() > 1,
        "the second instance had the rest to give: {rest:?}"
    );
    let mut frames = part.clone();
    frames.extend(rest);
    let ids: Vec<Option<String>> = frames.iter().map(|(id, _)| id.clone()).collect();
    let expected: Vec<Option<String>> = (0..frames.len()).map(|n| Some(n.to_string())).collect();
    assert_eq!(ids, expected, "a gap or a repeat between the two instances");
    let data: Vec<String> = frames.into_iter().map(|(_, data)| data).collect();
    assert_eq!(tokens_of("resumed", &data), answer);

    // After the end, a read from the start on the second instance gets the whole answer.
    let mut again = SseClient::get(other.port(), path, None).await;
    let whole = read_frames(&mut again, "the read from the start").await;
    let data: Vec<String> = whole.into_iter().map(|(_, data)| data).collect();
    assert_eq!(tokens_of("from the start", &data), answer);

    let status = other.terminate().await;
    assert!(
        status.success(),
        "the second servicebus_sse after SIGTERM: {status}"
    );
    d.stop().await;
}
