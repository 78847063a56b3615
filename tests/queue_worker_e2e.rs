//! End to end: starts the real `queue_worker` example binary against the real RabbitMQ and
//! a fake OpenAI-compatible server, and talks to it as seed 003's clients do: a raw publish
//! of the pika example's message to the request queue and a consumer of `response_{uid}`;
//! the REST flow (`POST /v1/chat/completions`, then `GET /v1/chat/response?uid=` as SSE),
//! in one process and split into a REST-only and a worker-only process; and two workers
//! sharing the queue, one of them killed mid-answer.
//!
//! Each test uses a request queue of its own (`RABBITMQ_QUEUE`) and deletes what it
//! declared. Skips when RabbitMQ is unreachable (`CHATSTREAM_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`), unless `CHATSTREAM_REQUIRE_SERVICES=1`.
//!
//! `cargo test` builds the example next to the test binaries (it needs features `amqp` and
//! `axum`, both default); when a test filter skipped that, run
//! `cargo build --example queue_worker` first.
#![cfg(all(unix, feature = "amqp", feature = "axum"))]

mod support;

use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use chatstream_core::testkit::fake_openai::{Answer, Behaviour, FakeOpenAi};
use chatstream_core::testkit::skip_or_fail;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, Consumer};
use support::{
    amqp_url, block_on_aside, example_path, http, port_after, signal, start, within, SseClient,
};
use tokio::process::{Child, Command};

/// Longest any single wait may take before the test fails as hung.
const WAIT: Duration = Duration::from_secs(30);

/// The fake model's answer, one streamed chunk per token.
const TOKENS: [&str; 12] = [
    "Why", " did", " the", " rabbit", " cross", " the", " queue", "?", " To", " get", " acked", ".",
];

/// What a test shares: an outside client's connection, a queue name of its own, the fake
/// LLM. Deletes the request queue and the response queues it names when dropped.
struct Setup {
    client: Arc<Connection>,
    queue: String,
    /// The token stream (log) of the stream topology, the REST side's default.
    stream: String,
    fake: FakeOpenAi,
    response_queues: Vec<String>,
}

impl Setup {
    /// Connects as an outside client would, or skips (`None`).
    async fn new(answer: Answer) -> Option<Self> {
        let url = amqp_url();
        let client = match Connection::connect(&url, Default::default()).await {
            Ok(c) => c,
            Err(e) => return skip_or_fail("RabbitMQ", format!("{url}: {e}")),
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        Some(Self {
            client: Arc::new(client),
            queue: format!("e2e-queue-worker-{}", &id[..12]),
            stream: format!("e2e-queue-worker-{}.log", &id[..12]),
            fake: FakeOpenAi::start(Behaviour::Answer(answer)).await,
            response_queues: Vec::new(),
        })
    }

    fn answer(&self) -> String {
        TOKENS.concat()
    }

    /// Starts the example with `args` against this setup's queue and fake LLM.
    async fn start(&self, args: &[&str]) -> Running {
        let mut cmd = Command::new(example_path("queue_worker"));
        cmd.args(args)
            .env("RABBITMQ_URL", amqp_url())
            .env_remove("CHATSTREAM_AMQP_URL")
            .env("RABBITMQ_QUEUE", &self.queue)
            .env("RABBITMQ_TOKEN_STREAM", &self.stream)
            .env("OPENAI_URL", self.fake.base_url())
            .env("OPENAI_API_KEY", "dummy-token")
            .env("OPENAI_MODEL", "fake-model")
            .env("RESTAPI_HOST", "127.0.0.1")
            .env("RESTAPI_PORT", "0")
            .env("LOG_LEVEL", "warn")
            .env("WORKER_CONCURRENCY", "4")
            .env_remove("CHATSTREAM_SCRIPTED")
            .env_remove("CHATSTREAM_WORKER_ONLY")
            .env_remove("CHATSTREAM_REST_ONLY");
        let wants_rest = !args.contains(&"--worker-only");
        let wants_worker = !args.contains(&"--rest-only");
        let (mut worker_ready, mut port) = (false, None);
        let started = start(cmd, &format!("queue_worker {args:?}"), WAIT, |line| {
            // Printed once the worker consumes the request queue.
            worker_ready |= line.starts_with("queue_worker: worker answering");
            port = port.or(port_after(line, "REST API on http://127.0.0.1:"));
            let ready = (!wants_worker || worker_ready) && (!wants_rest || port.is_some());
            ready.then_some(port)
        })
        .await;
        Running {
            child: started.child,
            port: started.ready,
        }
    }

    /// Publishes `body` to the request queue as the seed's pika example does: default
    /// exchange, routing key = queue name, no properties, no confirms.
    async fn publish_as_pika(&self, body: &str) {
        let ch = self.client.create_channel().await.expect("channel");
        ch.basic_publish(
            "".into(),
            self.queue.as_str().into(),
            Default::default(),
            body.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    }

    /// Consumes `response_{uid}` with auto-ack, as the seed's pika example does; the queue
    /// appears when the worker publishes the first token, so a missing queue (404) is
    /// retried, as the original's REST handler does.
    async fn consume_response(&mut self, uid: &str) -> Consumer {
        let queue = format!("response_{uid}");
        self.response_queues.push(queue.clone());
        let options = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        within("response queue declared by the worker", WAIT, async {
            loop {
                let ch = self.client.create_channel().await.expect("channel");
                match ch
                    .basic_consume(
                        queue.as_str().into(),
                        "".into(),
                        options,
                        FieldTable::default(),
                    )
                    .await
                {
                    Ok(consumer) => return consumer,
                    Err(e) if e.to_string().contains("NOT_FOUND") => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("consume {queue}: {e}"),
                }
            }
        })
        .await
    }

    /// The number of messages waiting in the request queue.
    async fn waiting_requests(&self) -> u32 {
        let ch = self.client.create_channel().await.expect("channel");
        let options = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        ch.queue_declare(self.queue.as_str().into(), options, FieldTable::default())
            .await
            .expect("request queue exists")
            .message_count()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let client = self.client.clone();
        let queues: Vec<String> = [self.queue.clone(), self.stream.clone()]
            .into_iter()
            .chain(self.response_queues.drain(..))
            .collect();
        block_on_aside(async move {
            if let Ok(ch) = client.create_channel().await {
                for q in queues {
                    let _ = ch
                        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
            }
            let _ = client.close(200, "test cleanup".into()).await;
        });
    }
}

/// A running example process; killed when dropped.
struct Running {
    child: Child,
    port: Option<u16>,
}

impl Running {
    fn port(&self) -> u16 {
        self.port
            .unwrap_or_else(|| panic!("no REST API in this mode"))
    }

    fn signal(&self, sig: &str) {
        signal(&self.child, sig);
    }

    async fn exit_status(&mut self) -> ExitStatus {
        within("exit", WAIT, self.child.wait())
            .await
            .unwrap_or_else(|e| panic!("wait: {e}"))
    }
}

/// One response message: its attempt header, `type` property and text body.
#[derive(Debug)]
struct Response {
    attempt: u64,
    kind: String,
    content_type: String,
    text: String,
}

impl Response {
    fn of(delivery: lapin::message::Delivery) -> Self {
        let props = &delivery.properties;
        let attempt = match props
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-chatstream-attempt"))
        {
            Some(AMQPValue::LongLongInt(n)) => u64::try_from(*n).unwrap_or_default(),
            Some(other) => panic!("attempt header of an odd type: {other:?}"),
            None => 1,
        };
        let text = |v: &Option<lapin::types::ShortString>| {
            v.as_ref().map(|s| s.to_string()).unwrap_or_default()
        };
        Self {
            attempt,
            kind: text(props.kind()),
            content_type: text(props.content_type()),
            text: String::from_utf8(delivery.data).expect("UTF-8 body"),
        }
    }
}

/// The next message of `response_{uid}`.
async fn next_response(consumer: &mut Consumer) -> Response {
    let delivery = within("a response message", WAIT, consumer.next())
        .await
        .expect("the response consumer stopped")
        .expect("a response message");
    Response::of(delivery)
}

/// Reads `response_{uid}` up to the message whose `type` is `end`.
async fn read_until_end(consumer: &mut Consumer, messages: &mut Vec<Response>) {
    loop {
        let response = next_response(consumer).await;
        let end = response.kind == "end";
        messages.push(response);
        if end {
            return;
        }
    }
}

/// The seed README's pika message, serialized as Python's `json.dumps` does.
fn pika_message(uid: &str) -> String {
    format!(
        r#"{{"model": "gpt-4o", "messages": [{{"role": "user", "content": "Tell me a joke."}}], "stream": true, "username": "alice", "uid": "{uid}"}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pika_client_reads_the_whole_answer_from_its_response_queue() {
    let Some(mut setup) = Setup::new(Answer::new(TOKENS)).await else {
        return;
    };
    let mut worker = setup.start(&["--worker-only"]).await;

    let uid = uuid::Uuid::new_v4().to_string();
    setup.publish_as_pika(&pika_message(&uid)).await;
    let mut consumer = setup.consume_response(&uid).await;
    let mut messages = Vec::new();
    read_until_end(&mut consumer, &mut messages).await;

    let (end, tokens) = messages.split_last().expect("an end message");
    assert!(end.text.is_empty() && end.attempt == 1, "{end:?}");
    assert!(
        tokens
            .iter()
            .all(|m| m.kind == "token" && m.content_type == "text/plain" && m.attempt == 1),
        "{tokens:?}"
    );
    let text: String = tokens.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(text, setup.answer(), "the raw bodies make the whole answer");

    // The LLM was asked what the client asked, with the client's model.
    let asked = setup.fake.requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0]["model"], "gpt-4o");
    assert_eq!(
        asked[0]["messages"],
        serde_json::json!([{"role": "user", "content": "Tell me a joke."}])
    );
    assert_eq!(setup.waiting_requests().await, 0, "the request was acked");

    worker.signal("-TERM");
    let status = worker.exit_status().await;
    assert!(
        status.success(),
        "SIGTERM ends the worker cleanly: {status}"
    );
}

/// The seed README's REST flow against the API on `port`.
async fn rest_flow(setup: &Setup, port: u16) {
    let (status, pong) = http(port, "GET /ping HTTP/1.0", "", WAIT).await;
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(pong, "pong");

    // The seed README's curl flow: submit, then stream by uid.
    let post = "POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json";
    let body = r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "Tell me a short story about a brave knight."}], "stream": true, "username": "alice"}"#;
    let (status, submitted) = http(port, post, body, WAIT).await;
    assert!(status.contains(" 200 "), "{status}: {submitted}");
    let json: serde_json::Value =
        serde_json::from_str(&submitted).unwrap_or_else(|e| panic!("{e}: {submitted}"));
    let uid = json["uid"]
        .as_str()
        .unwrap_or_else(|| panic!("no uid in {json}"));
    assert_eq!(uuid::Uuid::parse_str(uid).map(|_| ()), Ok(()), "{uid}");

    let get = format!("GET /v1/chat/response?uid={uid} HTTP/1.0");
    let (status, sse) = http(port, &get, "", WAIT).await;
    assert!(status.contains(" 200 "), "{status}");
    let data: Vec<&str> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{sse}");
    let chunks: Vec<serde_json::Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, setup.answer(), "{sse}");
    assert!(chunks.iter().all(|c| c["id"] == uid), "{sse}");
    assert_eq!(
        chunks
            .last()
            .map(|c| c["choices"][0]["finish_reason"].clone()),
        Some(serde_json::json!("stop")),
        "{sse}"
    );
    let asked = setup.fake.requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0]["model"], "gpt-4o");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_api_queues_the_request_and_streams_the_answer_as_sse() {
    let Some(setup) = Setup::new(Answer::new(TOKENS)).await else {
        return;
    };
    let both = setup.start(&[]).await;
    rest_flow(&setup, both.port()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_only_process_on_a_reply_to_queue_is_answered_by_a_worker_only_process() {
    let Some(setup) = Setup::new(Answer::new(TOKENS)).await else {
        return;
    };
    let _worker = setup.start(&["--worker-only"]).await;
    let rest = setup
        .start(&["--rest-only", "--rest-topology", "reply-to"])
        .await;
    rest_flow(&setup, rest.port()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_answer_leaves_its_request_to_the_other_worker() {
    // 12 tokens, 150 ms apart: the first worker is mid-answer for almost 2 s.
    let answer = Answer::new(TOKENS).with_delay(Duration::from_millis(150));
    let Some(mut setup) = Setup::new(answer).await else {
        return;
    };
    let mut first = setup.start(&["--worker-only"]).await;

    let uid = uuid::Uuid::new_v4().to_string();
    setup.publish_as_pika(&pika_message(&uid)).await;
    let mut consumer = setup.consume_response(&uid).await;
    let first_token = next_response(&mut consumer).await;
    assert!(
        first_token.kind == "token" && first_token.attempt == 1,
        "the first worker is mid-answer: {first_token:?}"
    );
    let mut messages = vec![first_token];

    // A second worker joins the queue; the first dies without a word.
    let _second = setup.start(&["--worker-only"]).await;
    first.signal("-KILL");
    let status = first.exit_status().await;
    assert!(!status.success(), "{status}");

    read_until_end(&mut consumer, &mut messages).await;

    // The client sees the partial first attempt, then the whole answer again under a
    // higher attempt (its cue to reset), then one end.
    let last = messages.last().expect("an end message");
    assert!(
        last.attempt >= 2,
        "answered again after the kill: {messages:?}"
    );
    let retry: String = messages
        .iter()
        .filter(|m| m.attempt == last.attempt && m.kind == "token")
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(retry, setup.answer(), "{messages:?}");
    let partial: String = messages
        .iter()
        .filter(|m| m.attempt < last.attempt && m.kind == "token")
        .map(|m| m.text.as_str())
        .collect();
    assert!(
        setup.answer().starts_with(&partial) && partial.len() < setup.answer().len(),
        "the first attempt was cut short: {messages:?}"
    );
    assert_eq!(
        messages.iter().filter(|m| m.kind == "end").count(),
        1,
        "{messages:?}"
    );
    assert!(
        messages.windows(2).all(|w| w[0].attempt <= w[1].attempt),
        "attempts never interleave: {messages:?}"
    );
    assert_eq!(setup.fake.requests().len(), 2, "asked once per attempt");
    assert_eq!(setup.waiting_requests().await, 0, "the request was acked");
}

/// Submits seed 003's REST body on `port`; returns the uid.
async fn submit_rest(port: u16) -> String {
    let post = "POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json";
    let body = r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "Tell me a joke."}], "stream": true}"#;
    let (status, submitted) = http(port, post, body, WAIT).await;
    assert!(status.contains(" 200 "), "{status}: {submitted}");
    let json: serde_json::Value =
        serde_json::from_str(&submitted).unwrap_or_else(|e| panic!("{e}: {submitted}"));
    json["uid"]
        .as_str()
        .unwrap_or_else(|| panic!("no uid in {json}"))
        .to_owned()
}

/// The text of one seed 003 SSE chunk; `None` for `[DONE]` and chunks without text.
fn chunk_text(data: &str) -> Option<String> {
    let chunk: serde_json::Value = serde_json::from_str(data).ok()?;
    chunk["choices"][0]["delta"]["content"]
        .as_str()
        .map(str::to_owned)
}

/// Reads an SSE response to its end: the text, and every data line.
async fn read_answer(sse: &mut SseClient) -> (String, Vec<String>) {
    let (mut text, mut data) = (String::new(), Vec::new());
    while let Some(event) = within("the next chunk", WAIT, sse.next()).await {
        if let Some(t) = chunk_text(&event.data) {
            text.push_str(&t);
        }
        data.push(event.data);
    }
    (text, data)
}

/// A `--worker-only` process and two `--rest-only` ones, a request posted on A, and A's
/// stream read up to its `words`-th space.
struct Split {
    _worker: Running,
    a: Running,
    b: Running,
    path: String,
    on_a: SseClient,
    text: String,
    last_id: String,
}

async fn split(setup: &Setup, words: usize) -> Split {
    let _worker = setup.start(&["--worker-only"]).await;
    let a = setup.start(&["--rest-only"]).await;
    let b = setup.start(&["--rest-only"]).await;
    let uid = submit_rest(a.port()).await;
    let path = format!("/v1/chat/response?uid={uid}");
    let mut on_a = SseClient::get(a.port(), &path, None).await;
    assert_eq!(on_a.status, 200);
    let (mut text, mut last_id) = (String::new(), String::new());
    while text.matches(' ').count() < words {
        let event = within("a chunk from A", WAIT, on_a.next())
            .await
            .unwrap_or_else(|| panic!("A ended early: {text:?}"));
        if let Some(t) = chunk_text(&event.data) {
            text.push_str(&t);
            last_id = event.id.unwrap_or_else(|| panic!("a chunk without id"));
        }
    }
    Split {
        _worker,
        a,
        b,
        path,
        on_a,
        text,
        last_id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_posted_on_one_rest_instance_resumes_exactly_on_another() {
    // 12 tokens, 100 ms apart: the answer is under way for over a second.
    let answer = Answer::new(TOKENS).with_delay(Duration::from_millis(100));
    let Some(setup) = Setup::new(answer).await else {
        return;
    };
    let Split {
        _worker,
        a,
        b,
        path,
        on_a,
        mut text,
        last_id,
    } = split(&setup, 3).await;

    // Part of the answer from A, then the rest from B with Last-Event-ID.
    drop(on_a);
    let mut on_b = SseClient::get(b.port(), &path, Some(&last_id)).await;
    assert_eq!(on_b.status, 200);
    let (rest, data) = read_answer(&mut on_b).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    assert!(!rest.is_empty(), "B had the rest to give: {data:?}");
    text.push_str(&rest);
    assert_eq!(
        text,
        setup.answer(),
        "A's part + B's rest is exactly the answer"
    );

    // After the end, either instance gives the whole answer from the start.
    for (name, port) in [("A", a.port()), ("B", b.port())] {
        let mut again = SseClient::get(port, &path, None).await;
        let (whole, data) = read_answer(&mut again).await;
        assert_eq!(
            whole,
            setup.answer(),
            "the whole answer again from {name}: {data:?}"
        );
    }
    assert_eq!(setup.fake.requests().len(), 1, "asked once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_readers_of_one_response_queue_never_get_a_garbled_answer() {
    // Seed 003's own topology: each `response_{uid}` has one reader.
    let answer = Answer::new(TOKENS).with_delay(Duration::from_millis(50));
    let Some(setup) = Setup::new(answer).await else {
        return;
    };
    let _worker = setup.start(&["--worker-only"]).await;
    let args = ["--rest-only", "--rest-topology", "per-request"];
    let a = setup.start(&args).await;
    let b = setup.start(&args).await;
    let uid = submit_rest(a.port()).await;
    let path = format!("/v1/chat/response?uid={uid}");
    let (mut on_a, mut on_b) = tokio::join!(
        SseClient::get(a.port(), &path, None),
        SseClient::get(b.port(), &path, None)
    );
    let ((text_a, data_a), (text_b, data_b)) =
        tokio::join!(read_answer(&mut on_a), read_answer(&mut on_b));
    // Each reader has the whole answer or a clear error and no text: never a part of it
    // passed off as the whole (the two would share the queue's messages round-robin).
    for (name, text, data) in [("A", &text_a, &data_a), ("B", &text_b, &data_b)] {
        let whole = *text == setup.answer();
        let refused = text.is_empty() && data.iter().any(|d| d.contains("another consumer"));
        assert!(whole || refused, "reader on {name} got {text:?}: {data:?}");
    }
    assert_eq!(
        text_a,
        setup.answer(),
        "the instance posted to reads the answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_sent_to_another_rest_instance_reaches_the_worker() {
    // 400 tokens, 20 ms apart: eight seconds of answer, so only the stop can end it early.
    let tokens: Vec<String> = (0..400).map(|i| format!("w{i} ")).collect();
    let answer = Answer::new(tokens.clone()).with_delay(Duration::from_millis(20));
    let Some(setup) = Setup::new(answer).await else {
        return;
    };
    // A relays the answer; the stop goes to B.
    let Split {
        _worker,
        a: _a,
        b,
        path,
        mut on_a,
        mut text,
        ..
    } = split(&setup, 5).await;
    let (status, body) = http(b.port(), &format!("DELETE {path} HTTP/1.0"), "", WAIT).await;
    assert!(status.contains(" 202 "), "{status}: {body}");
    assert!(body.contains(r#""status":"stopping""#), "{body}");
    let at_stop = setup.fake.tokens_streamed();

    // A's client gets the end at once, after at most a token or two more.
    let (rest, data) = read_answer(&mut on_a).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    text.push_str(&rest);
    assert!(
        text.len() < tokens.concat().len() / 2,
        "the answer should have stopped early: {} bytes",
        text.len()
    );
    // Tokens the LLM server still streamed after the stop, over 25 token periods.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_stop = setup.fake.tokens_streamed().saturating_sub(at_stop);
    assert!(
        after_stop <= 3,
        "the worker went on reading the LLM after the stop: {after_stop} more tokens"
    );
    // The end is the same on B, and a second stop says so.
    let mut on_b = SseClient::get(b.port(), &path, None).await;
    let (whole, data_b) = read_answer(&mut on_b).await;
    assert_eq!(whole, text, "B replays exactly what A relayed: {data_b:?}");
    let (status, body) = http(b.port(), &format!("DELETE {path} HTTP/1.0"), "", WAIT).await;
    assert!(status.contains(" 200 "), "{status}: {body}");
    assert!(body.contains(r#""finish_reason":"cancelled""#), "{body}");
    assert_eq!(setup.fake.requests().len(), 1, "asked once");
}
