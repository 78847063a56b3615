//! One trace across processes: a small OTLP/HTTP receiver (JSON) collects the spans the
//! examples export while they answer one request, first the quickstart (one process), then
//! a `queue_worker --rest-only` and a `queue_worker --worker-only` over RabbitMQ. The
//! client's `traceparent` starts the trace; the gateway's HTTP span, its `send` span, the
//! worker's `process` span and the LLM call's `chat` span follow, each the child of the one
//! before, and the fake OpenAI server receives the `chat` span's `traceparent`.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use chatstream_core::testkit::fake_openai::{Behaviour, FakeOpenAi};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::{example_path, http, port_after, start, within};
use crate::{Setup, WAIT};

/// The client's trace and span ids.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// One exported span.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    trace: String,
    id: String,
    parent: String,
    name: String,
}

/// An OTLP/HTTP receiver on a free port of 127.0.0.1 (`POST /v1/traces`, JSON), stopped
/// when dropped.
struct Collector {
    port: u16,
    spans: Arc<Mutex<Vec<Span>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start() -> Self {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let sink = spans.clone();
        let app = Router::new().route(
            "/v1/traces",
            post(move |body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    if let Ok(json) = serde_json::from_slice::<Value>(&body) {
                        let mut found = parse(&json);
                        sink.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .append(&mut found);
                    }
                    ([("content-type", "application/json")], "{}")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the collector");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { port, spans, task }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until the trace `trace` holds a span named `name` whose parent is `parent`.
    async fn child(&self, trace: &str, parent: &str, name: &str) -> Span {
        within(&format!("span {name:?} under {parent}"), WAIT, async {
            loop {
                if let Some(s) = self
                    .spans()
                    .into_iter()
                    .find(|s| s.trace == trace && s.parent == parent && s.name == name)
                {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The spans of an OTLP JSON export request.
fn parse(json: &Value) -> Vec<Span> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut out = Vec::new();
    for rs in json["resourceSpans"].as_array().into_iter().flatten() {
        let service = rs["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .map(|a| text(&a["value"]["stringValue"]))
            .unwrap_or_default();
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for s in ss["spans"].as_array().into_iter().flatten() {
                out.push(Span {
                    service: service.clone(),
                    trace: text(&s["traceId"]).to_ascii_lowercase(),
                    id: text(&s["spanId"]).to_ascii_lowercase(),
                    parent: text(&s["parentSpanId"]).to_ascii_lowercase(),
                    name: text(&s["name"]),
                });
            }
        }
    }
    out
}

/// The environment that turns export on, to `collector`, as `service`.
fn otel_env(cmd: &mut Command, collector: &Collector, service: &str) {
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_SERVICE_NAME", service)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_TRACES_SAMPLER")
        .env_remove("OTEL_TRACES_SAMPLER_ARG");
}

/// The client's `traceparent` header line.
fn client_traceparent() -> String {
    format!("traceparent: 00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
}

/// Checks the chain under the gateway's HTTP span `server` and the LLM's `traceparent`.
async fn assert_chain(collector: &Collector, fake: &FakeOpenAi, server: &Span, model: &str) {
    let send = collector
        .child(CLIENT_TRACE, &server.id, "send chat request")
        .await;
    assert_eq!(send.service, server.service, "the gateway sends");
    let process = collector
        .child(CLIENT_TRACE, &send.id, "process chat request")
        .await;
    let chat = collector
        .child(CLIENT_TRACE, &process.id, &format!("chat {model}"))
        .await;
    assert_eq!(chat.service, process.service, "the worker calls the LLM");
    let sent = fake.traceparents();
    assert_eq!(
        sent,
        vec![Some(format!("00-{CLIENT_TRACE}-{}-01", chat.id))],
        "the LLM request carries the chat span's context"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_exports_one_trace_from_the_client_to_the_llm() {
    let collector = Collector::start().await;
    let fake = FakeOpenAi::start(Behaviour::answer(["Traced", " answer."])).await;
    let mut cmd = Command::new(example_path("quickstart"));
    cmd.env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .env("OPENAI_URL", fake.base_url())
        .env("OPENAI_API_KEY", "dummy-token")
        .env("OPENAI_MODEL", "fake-model")
        // JSON log lines; the HTTP layer's `response` event (DEBUG) is one per request.
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "warn,chatstream_axum::trace=debug")
        .stderr(Stdio::piped());
    otel_env(&mut cmd, &collector, "quickstart");
    let mut started = start(cmd, "quickstart", WAIT, |line| {
        port_after(line, "http://127.0.0.1:")
    })
    .await;
    let port = started.ready;
    let stderr = started.child.stderr.take().expect("stderr");
    let (log_tx, mut log_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = log_tx.send(line);
        }
    });

    let post = format!(
        "POST /api/chat HTTP/1.0\r\nContent-Type: application/json\r\n{}",
        client_traceparent()
    );
    let (status, body) = http(port, &post, r#"{"text":"hi"}"#, WAIT).await;
    assert!(status.contains(" 202 "), "{status}: {body}");
    let json: Value = serde_json::from_str(&body).expect("json");
    let stream = json["stream"].as_str().expect("stream path");
    let (_, sse) = http(port, &format!("GET {stream} HTTP/1.0"), "", WAIT).await;
    assert!(sse.ends_with("data: __END__\n\n"), "{sse:?}");

    let server = collector
        .child(CLIENT_TRACE, CLIENT_SPAN, "POST /api/chat")
        .await;
    assert_eq!(server.service, "quickstart");
    assert_chain(&collector, &fake, &server, "fake-model").await;

    // LOG_FORMAT=json: every line one JSON object; the POST's lines carry its trace id.
    let line = within("a JSON log line of the client's trace", WAIT, async {
        while let Some(line) = log_rx.recv().await {
            let json: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
            if json["trace_id"] == CLIENT_TRACE {
                return json;
            }
        }
        panic!("stderr closed");
    })
    .await;
    assert_eq!(line["span"], "request", "{line}");
    assert!(
        line["level"].is_string() && line["timestamp"].is_string(),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_process_and_a_worker_process_over_rabbitmq_export_one_trace() {
    let Some(setup) = Setup::new(Behaviour::answer(["Traced", " across", "."])).await else {
        return;
    };
    let collector = Collector::start().await;
    let url = crate::support::amqp_url();
    let endpoint = collector.endpoint();
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let mut env = otel.to_vec();
    env.push(("OTEL_SERVICE_NAME", "queue-worker"));
    let _worker = setup.start(&url, &["--worker-only"], &env).await;
    let mut env = otel.to_vec();
    env.push(("OTEL_SERVICE_NAME", "queue-rest"));
    let rest = setup.start(&url, &["--rest-only"], &env).await;
    let port = rest.ready.rest.expect("the REST port");

    let post = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\n{}",
        client_traceparent()
    );
    let body = r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "Trace me."}], "stream": true}"#;
    let (status, submitted) = http(port, &post, body, WAIT).await;
    assert!(status.contains(" 200 "), "{status}: {submitted}");
    let json: Value = serde_json::from_str(&submitted).expect("json");
    let uid = json["uid"].as_str().expect("uid").to_owned();
    let (_, sse) = http(
        port,
        &format!("GET /v1/chat/response?uid={uid} HTTP/1.0"),
        "",
        WAIT,
    )
    .await;
    assert!(sse.contains("[DONE]"), "{sse:?}");

    let server = collector
        .child(CLIENT_TRACE, CLIENT_SPAN, "POST /v1/chat/completions")
        .await;
    assert_eq!(server.service, "queue-rest");
    assert_chain(&collector, &setup.fake, &server, "gpt-4o").await;
    let process = collector
        .spans()
        .into_iter()
        .find(|s| s.name == "process chat request")
        .expect("the worker's span");
    assert_eq!(process.service, "queue-worker", "another process");
}
