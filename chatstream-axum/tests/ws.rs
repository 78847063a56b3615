//! The `/ws` protocol (seed 004), driven through channels: each test is a client that
//! sends actions and reads what a browser would see. `ws_socket.rs` runs it over TCP.

mod common;

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, Message};
use chatstream_axum::ws::{Channels, WsConfig, WsEndpoint};
use chatstream_core::wire::seed004::{parse_message, WsMessage};
use chatstream_core::{
    ChatRequest, Gateway, GatewayConfig, InMemoryBroker, ScriptedBackend, StreamKey, Worker,
};
use common::*;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};

const NOW: f64 = 1683042123.456;

struct Client {
    to_server: mpsc::Sender<Result<Message, Infallible>>,
    from_server: mpsc::Receiver<Message>,
}

impl Client {
    fn connect(endpoint: &WsEndpoint) -> Self {
        Self::connect_with(endpoint, 64)
    }

    /// A client whose socket holds at most `capacity` unread messages.
    fn connect_with(endpoint: &WsEndpoint, capacity: usize) -> Self {
        let (to_server, incoming) = mpsc::channel(16);
        let (sink, from_server) = mpsc::channel(capacity);
        let endpoint = endpoint.clone();
        tokio::spawn(async move { endpoint.serve(sink, incoming).await });
        Self {
            to_server,
            from_server,
        }
    }

    async fn send(&mut self, message: Message) {
        if let Err(e) = within(self.to_server.send(Ok(message))).await {
            panic!("server gone: {e}");
        }
    }

    async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text)).await;
    }

    /// The next message; `None` when the server closed the stream.
    async fn next(&mut self) -> Option<Message> {
        within(self.from_server.next()).await
    }

    /// The next text message as raw text, skipping pings.
    async fn next_text(&mut self) -> String {
        loop {
            match self.next().await {
                Some(Message::Text(t)) => return t.to_string(),
                Some(Message::Ping(_)) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    async fn next_message(&mut self) -> WsMessage {
        let text = self.next_text().await;
        match parse_message(&text) {
            Ok(m) => m,
            Err(e) => panic!("not a seed 004 message ({e}): {text}"),
        }
    }

    /// A `ping` action and its `pong`: everything sent before is handled.
    async fn barrier(&mut self) {
        self.send_text(r#"{"action":"ping"}"#).await;
        let m = self.next_message().await;
        assert_eq!(m.kind, "pong", "{m:?}");
    }

    /// The messages of one answer, up to its final message or error.
    async fn answer(&mut self) -> Vec<WsMessage> {
        let mut out = Vec::new();
        loop {
            let m = self.next_message().await;
            let last = m.final_message == Some(true) || m.kind == "error";
            out.push(m);
            if last {
                return out;
            }
        }
    }
}

fn fixed_clock() -> WsConfig {
    WsConfig::default().with_clock(Arc::new(|| NOW))
}

fn ask(channel: &str, message_id: &str, text: &str) -> String {
    serde_json::json!({"action": "message", "channel": channel, "message_id": message_id, "message": text})
        .to_string()
}

/// Checks the shape of a whole answer and returns its text.
fn check_answer(answer: &[WsMessage], message_id: &str) -> String {
    let statuses: Vec<&str> = answer.iter().map(|m| m.status.as_str()).collect();
    assert_eq!(statuses.first(), Some(&"started"), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&"completed"), "{statuses:?}");
    assert!(statuses.contains(&"in_progress"), "{statuses:?}");
    let chunks: String = answer
        .iter()
        .filter(|m| m.status == "in_progress")
        .map(|m| m.message.as_str())
        .collect();
    let last = &answer[answer.len() - 1];
    assert_eq!(last.kind, "response");
    assert_eq!(last.final_message, Some(true));
    assert_eq!(last.message, chunks, "final message = the chunks joined");
    for m in answer {
        assert_eq!(m.message_id, message_id);
        assert_eq!(m.thread_id, answer[0].thread_id, "one thread per answer");
        assert_eq!(m.timestamp, NOW);
    }
    chunks
}

#[tokio::test]
async fn a_message_action_gets_its_answer_in_seed_004_shapes() {
    let p = Pipeline::new(ScriptedBackend::default());
    let endpoint = WsEndpoint::new(p.state.clone()).with_config(fixed_clock());
    let mut c = Client::connect(&endpoint);
    c.send_text(&ask("chan-1", "msg-1", "hi")).await;

    let first = c.next_text().await;
    let thread = parse_message(&first)
        .map(|m| m.thread_id)
        .unwrap_or_default();
    assert_eq!(
        first,
        format!(
            r#"{{"message": "Assistant is processing your request...", "timestamp": 1683042123.456, "status": "started", "type": "status", "final_message": false, "message_id": "msg-1", "thread_id": "{thread}"}}"#
        ),
        "Python json.dumps bytes, the document's key order"
    );
    let mut answer = vec![parse_message(&first).unwrap_or_else(|e| panic!("{e}"))];
    answer.extend(c.answer().await);
    let text = check_answer(&answer, "msg-1");
    let request = ChatRequest::new(StreamKey::new("chan-1", "msg-1"), "hi");
    assert_eq!(text, p.backend.answer(&request));
    assert!(answer.iter().any(|m| m.status == "responding"));
}

#[tokio::test]
async fn subscribers_of_a_channel_get_every_answer_on_it() {
    let p = Pipeline::new(ScriptedBackend::default());
    let endpoint = WsEndpoint::new(p.state.clone()).with_config(fixed_clock());
    let mut watcher = Client::connect(&endpoint);
    let mut other = Client::connect(&endpoint);
    watcher
        .send_text(r#"{"action":"subscribe","channel":"room"}"#)
        .await;
    watcher
        .send_text(r#"{"action":"subscribe","channel":"room"}"#)
        .await; // no-op
    watcher.barrier().await;
    other
        .send_text(r#"{"action":"subscribe","channel":"elsewhere"}"#)
        .await;
    other.barrier().await;

    let mut asker = Client::connect(&endpoint);
    for id in ["q1", "q2"] {
        asker.send_text(&ask("room", id, "hello")).await;
        let mine = check_answer(&asker.answer().await, id);
        let seen = check_answer(&watcher.answer().await, id);
        assert_eq!(mine, seen);
    }
    // Nothing else arrived: the next message of each is the pong of a new barrier.
    watcher.barrier().await;
    other.barrier().await;
}

/// Seed 004's main flow: a backend publishes straight to the broker, the browser only
/// subscribed. The worker's request source announces what it takes.
#[tokio::test]
async fn requests_published_straight_to_the_broker_reach_the_channel() {
    let broker = InMemoryBroker::new();
    let channels = Channels::new();
    let backend = ScriptedBackend::default();
    let worker = Worker::builder(
        Arc::new(channels.announcing(broker.message_source())),
        Arc::new(broker.clone()),
        Arc::new(backend.clone()),
    )
    .build()
    .spawn();
    let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker.clone())).build();
    let state = chatstream_axum::ChatstreamState::new(gateway);
    let endpoint = WsEndpoint::new(state)
        .with_config(fixed_clock())
        .with_channels(channels.clone());
    let mut browser = Client::connect(&endpoint);
    browser
        .send_text(r#"{"action":"subscribe","channel":"convex_id_12345"}"#)
        .await;
    browser.barrier().await;
    assert_eq!(channels.listened(), 1);

    broker.submit_raw(
        r#"{"channel": "convex_id_12345", "message_id": "msg-123456789", "message": "What is the capital of France?"}"#,
    );
    let text = check_answer(&browser.answer().await, "msg-123456789");
    let request = ChatRequest::new(
        StreamKey::new("convex_id_12345", "msg-123456789"),
        "What is the capital of France?",
    );
    assert_eq!(text, backend.answer(&request));

    // Asking on the socket too: announced by the route and by the worker, shown once.
    browser
        .send_text(&ask("convex_id_12345", "m2", "again"))
        .await;
    check_answer(&browser.answer().await, "m2");
    browser.barrier().await;

    drop(browser);
    within(async {
        while channels.listened() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    worker.shutdown().await;
}

#[tokio::test]
async fn bad_actions_get_error_frames_and_the_socket_stays_open() {
    let p = Pipeline::new(ScriptedBackend::default());
    let endpoint = WsEndpoint::new(p.state.clone()).with_config(fixed_clock());
    let mut c = Client::connect(&endpoint);
    let cases = [
        ("not json", "invalid_json", "", ""),
        (r#"{"action":"dance"}"#, "invalid_action", "", ""),
        (r#"{"channel":"c"}"#, "invalid_action", "", "c"),
        (
            r#"{"action":"message","channel":"c","message_id":"m"}"#,
            "invalid_action",
            "m",
            "c",
        ),
        (
            r#"{"action":"subscribe","channel":""}"#,
            "invalid_field",
            "",
            "",
        ),
        (&ask("c", "m", "   "), "invalid_field", "m", "c"),
        (&ask("c", "a\nb", "hi"), "invalid_field", "a\nb", "c"),
    ];
    for (sent, code, message_id, thread_id) in cases {
        c.send_text(sent).await;
        let m = c.next_message().await;
        assert_eq!(
            (m.kind.as_str(), m.status.as_str()),
            ("error", "error"),
            "{sent}: {m:?}"
        );
        assert_eq!(m.error_details.as_deref(), Some(code), "{sent}: {m:?}");
        assert_eq!(
            (m.message_id.as_str(), m.thread_id.as_str()),
            (message_id, thread_id)
        );
        assert!(!m.message.is_empty());
    }
    // Binary frames carry actions too.
    c.send(Message::binary(r#"{"action":"ping"}"#.as_bytes().to_vec()))
        .await;
    assert_eq!(c.next_message().await.kind, "pong");

    c.send_text(&ask("c", "m", "hi")).await;
    check_answer(&c.answer().await, "m");
    c.send_text(&ask("c", "m", "hi again")).await;
    let m = c.next_message().await;
    assert_eq!(m.error_details.as_deref(), Some("duplicate_message_id"));
    c.barrier().await;
}

#[tokio::test]
async fn limits_per_connection_are_errors_not_closes() {
    let p = Pipeline::new(ScriptedBackend::default().with_delay(Duration::from_millis(20)));
    let config = fixed_clock().with_max_channels(1).with_max_streams(1);
    let endpoint = WsEndpoint::new(p.state.clone()).with_config(config);
    let mut c = Client::connect(&endpoint);
    c.send_text(r#"{"action":"subscribe","channel":"a"}"#).await;
    c.send_text(r#"{"action":"subscribe","channel":"b"}"#).await;
    let m = c.next_message().await;
    assert_eq!(m.error_details.as_deref(), Some("too_many_subscriptions"));
    c.send_text(&ask("x", "1", "one")).await;
    c.send_text(&ask("x", "2", "two")).await;
    let mut first = Vec::new();
    let refused = loop {
        let m = c.next_message().await;
        if m.message_id == "2" {
            break m;
        }
        first.push(m);
    };
    assert_eq!(refused.error_details.as_deref(), Some("too_many_streams"));
    first.extend(c.answer().await);
    check_answer(&first, "1");
}

#[tokio::test]
async fn a_client_that_does_not_read_is_cut_off_with_an_error_frame() {
    let p = Pipeline::new(ScriptedBackend::default().with_repeat(40));
    let config = fixed_clock()
        .with_send_buffer(4)
        .with_send_timeout(Duration::from_secs(60));
    let endpoint = WsEndpoint::new(p.state.clone()).with_config(config);
    let mut c = Client::connect_with(&endpoint, 0);
    c.send_text(&ask("slow", "m", "hi")).await;
    // The server only knows the client is slow once its buffer is full: wait for that.
    within(async {
        while p.gateway.metrics().slow_consumers.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;

    let mut texts = Vec::new();
    let close = loop {
        match c.next().await {
            Some(Message::Text(t)) => texts.push(t.to_string()),
            Some(Message::Close(frame)) => break frame,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(close_code::POLICY));
    assert!(c.next().await.is_none(), "nothing after the close");
    let last = texts
        .last()
        .map(|t| parse_message(t))
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no error frame: {texts:?}"));
    assert_eq!(last.error_details.as_deref(), Some("slow_consumer"));
    assert!(
        texts.len() <= 3,
        "the waiting messages were dropped: {texts:?}"
    );
}

#[tokio::test]
async fn shutdown_ends_answers_with_an_error_and_closes() {
    let p = Pipeline::new(ScriptedBackend::default().with_delay(Duration::from_millis(10)));
    let endpoint = WsEndpoint::new(p.state.clone()).with_config(fixed_clock());
    let mut c = Client::connect(&endpoint);
    c.send_text(&ask("c", "m", "hi")).await;
    while c.next_message().await.status != "in_progress" {}
    p.gateway.shutdown();
    let error = loop {
        let m = c.next_message().await;
        if m.kind == "error" {
            break m;
        }
    };
    assert_eq!(error.error_details.as_deref(), Some("shutting_down"));
    match c.next().await {
        Some(Message::Close(Some(f))) => assert_eq!(f.code, close_code::AWAY),
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_server_pings_and_closes_a_silent_client() {
    let p = Pipeline::with(ScriptedBackend::default(), GatewayConfig::default(), |s| s);
    let config = fixed_clock().with_ping_interval(Some(Duration::from_secs(5)));
    let endpoint = WsEndpoint::new(p.state.clone()).with_config(config);
    let mut c = Client::connect(&endpoint);
    // Answering keeps the connection open…
    for _ in 0..3 {
        assert!(matches!(c.next().await, Some(Message::Ping(_))));
        c.send(Message::Pong(Default::default())).await;
    }
    // …silence for two periods closes it.
    assert!(matches!(c.next().await, Some(Message::Ping(_))));
    match c.next().await {
        Some(Message::Close(Some(f))) => assert_eq!(f.code, close_code::AWAY),
        other => panic!("expected a close, got {other:?}"),
    }
    assert!(c.next().await.is_none());
}

/// `{"action": "cancel"}` stops an answer: sent on another connection of another gateway
/// instance (naming the channel), or on the asking connection by message id alone. The
/// asker gets the answer's final message, the worker stops, and an unknown answer is an
/// error with code `not_found`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_action_stops_the_answer_from_any_instance() {
    use chatstream_core::testkit::backends::EndlessBackend;
    use chatstream_core::InMemoryStreamRegistry;

    let broker = InMemoryBroker::new();
    let backend = EndlessBackend::new(Duration::from_millis(5));
    let worker = spawn_worker(&broker, Arc::new(backend.clone()));
    let registry = Arc::new(InMemoryStreamRegistry::default());
    let instance = || {
        let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker.clone()))
            .cancels(Arc::new(broker.clone()))
            .build();
        let state =
            chatstream_axum::ChatstreamState::new(gateway).with_stream_registry(registry.clone());
        WsEndpoint::new(state).with_config(fixed_clock())
    };
    let (a, b) = (instance(), instance());
    let mut asker = Client::connect(&a);
    let mut other = Client::connect(&b);

    // A browser subscribing on another instance mid-answer follows the running answer
    // (from its start), and stops it from there, naming the channel.
    asker.send_text(&ask("room", "m1", "go on")).await;
    while asker.next_message().await.status != "in_progress" {}
    other
        .send_text(r#"{"action":"subscribe","channel":"room"}"#)
        .await;
    let first = other.next_message().await;
    assert_eq!(
        (first.status.as_str(), first.message_id.as_str()),
        ("started", "m1"),
        "{first:?}"
    );
    while other.next_message().await.status != "in_progress" {}
    other
        .send_text(r#"{"action":"cancel","channel":"room","message_id":"m1"}"#)
        .await;
    let rest = asker.answer().await;
    let last = &rest[rest.len() - 1];
    assert_eq!(last.final_message, Some(true), "{rest:?}");
    assert_eq!(last.message_id, "m1");
    let seen = other.answer().await;
    assert_eq!(
        seen[seen.len() - 1].message,
        last.message,
        "the same end on both"
    );
    other.barrier().await; // no error came back to the stopper

    // Stopped on the asking connection, by message id alone.
    asker.send_text(&ask("room", "m2", "go on")).await;
    while asker.next_message().await.status != "in_progress" {}
    asker
        .send_text(r#"{"action":"cancel","message_id":"m2"}"#)
        .await;
    let rest = asker.answer().await;
    assert_eq!(rest[rest.len() - 1].final_message, Some(true), "{rest:?}");

    // Unknown answers.
    for unknown in [
        r#"{"action":"cancel","message_id":"never"}"#,
        r#"{"action":"cancel","channel":"room","message_id":"never"}"#,
    ] {
        other.send_text(unknown).await;
        let m = other.next_message().await;
        assert_eq!(m.kind, "error", "{unknown}: {m:?}");
        assert_eq!(m.error_details.as_deref(), Some("not_found"), "{m:?}");
    }
    let stats = within(worker.shutdown()).await;
    assert_eq!(stats.cancelled, 2, "{stats:?}");
}
