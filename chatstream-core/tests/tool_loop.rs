//! Tool calling end to end inside one process: the OpenAI backend wrapped in the tool loop
//! with the weather tool, against the fake OpenAI server (which asks for `get_weather`,
//! then answers) and a fake OpenWeather; run by a worker, read through a gateway.
#![cfg(all(feature = "openai", feature = "testkit"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatstream_core::backend::{
    LlmBackendExt, OpenAiBackend, OpenAiConfig, ToolLoopLayer, WeatherTool,
};
use chatstream_core::testkit::fake_openai::{Answer, Behaviour, FakeOpenAi};
use chatstream_core::{
    ChatRequest, ClientEvent, Gateway, InMemoryBroker, InMemoryConversationStore, Status,
    StreamEvent, StreamKey, Worker,
};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(30);

/// A fake OpenWeather answering every request with Oslo's weather; returns its base URL
/// and the request lines it saw.
async fn fake_weather() -> (String, Arc<Mutex<Vec<String>>>) {
    const OSLO: &str = r#"{"weather":[{"description":"light snow"}],"main":{"temp":-3.5,"feels_like":-8.0,"humidity":86},"wind":{"speed":4.1},"sys":{"country":"NO"},"name":"Oslo"}"#;
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            log.lock().unwrap().push(line);
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{OSLO}",
                OSLO.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
        }
    });
    (base, seen)
}

/// The events of a stream read to its end, within [`WAIT`].
async fn answer(stream: chatstream_core::ClientStream) -> Vec<StreamEvent> {
    tokio::time::timeout(WAIT, stream.collect::<Vec<_>>())
        .await
        .expect("answer within the limit")
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Envelope(env) => Some(env.event.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn the_model_calls_get_weather_and_answers_with_its_result() {
    let (weather_url, weather_seen) = fake_weather().await;
    let fake = FakeOpenAi::start(Behaviour::call_tool(
        "get_weather",
        r#"{"city":"Oslo"}"#,
        Answer::new(["It", " is", " snowing", "."]),
    ))
    .await;
    let weather = WeatherTool::new("owm-key")
        .unwrap()
        .with_base_url(weather_url);
    let backend = OpenAiBackend::new(OpenAiConfig::new(fake.base_url(), "gpt-4o-mini"))
        .unwrap()
        .layer(ToolLoopLayer::new([Arc::new(weather) as _]))
        .shared();

    let broker = InMemoryBroker::new();
    let worker = Worker::builder(
        Arc::new(broker.message_source()),
        Arc::new(broker.clone()),
        backend,
    )
    .store(Arc::new(InMemoryConversationStore::default()))
    .build()
    .spawn();
    let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker.clone())).build();
    let request = ChatRequest::new(StreamKey::new("chan", "m1"), "Weather in Oslo?");
    let events = answer(gateway.submit(request).await.unwrap()).await;

    let processing = events.iter().position(|e| {
        matches!(e, StreamEvent::Status { status: Status::Processing, detail: Some(d), .. } if d == "get_weather")
    });
    let first_token = events
        .iter()
        .position(|e| matches!(e, StreamEvent::Token { .. }));
    assert!(
        processing.is_some() && processing < first_token,
        "processing before the text: {events:?}"
    );
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Token { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "It is snowing.");
    assert!(matches!(events.last(), Some(StreamEvent::End { .. })));

    assert_eq!(
        weather_seen.lock().unwrap().as_slice(),
        ["GET /data/2.5/weather?q=Oslo&appid=owm-key&units=metric HTTP/1.1"]
    );
    let bodies = fake.requests();
    assert_eq!(bodies.len(), 2, "one request per round");
    assert_eq!(bodies[0]["tools"][0]["function"]["name"], "get_weather");
    let messages = bodies[1]["messages"].as_array().unwrap();
    let n = messages.len();
    let call_id = messages[n - 2]["tool_calls"][0]["id"].as_str().unwrap();
    assert_eq!(messages[n - 2]["role"], "assistant");
    assert_eq!(messages[n - 1]["role"], "tool");
    assert_eq!(messages[n - 1]["tool_call_id"], call_id);
    let result: Value = serde_json::from_str(messages[n - 1]["content"].as_str().unwrap()).unwrap();
    assert_eq!(result["description"], json!("light snow"));
    assert_eq!(result["temperature_c"], json!(-3.5));
    worker.shutdown().await;
}

/// The client's tool `name`, as a request carries it to the worker.
fn client_tools(name: &str) -> String {
    json!([{
        "name": name,
        "description": "Something only the client can do.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }])
    .to_string()
}

/// Answers a request offering the client's tool `tool` through a worker whose backend is
/// `backend`; returns the stream's events.
async fn answer_with_client_tool(
    backend: Arc<chatstream_core::DynLlmBackend>,
    tool: &str,
) -> (Vec<StreamEvent>, chatstream_core::WorkerHandle) {
    let broker = InMemoryBroker::new();
    let worker = Worker::builder(
        Arc::new(broker.message_source()),
        Arc::new(broker.clone()),
        backend,
    )
    .build()
    .spawn();
    let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker.clone())).build();
    let mut request = ChatRequest::new(StreamKey::new("resp", "resp"), "Weather in Paris?");
    request
        .metadata
        .insert(chatstream_core::meta::TOOLS.to_owned(), client_tools(tool));
    let events = answer(gateway.submit(request.stateless()).await.unwrap()).await;
    (events, worker)
}

/// The one call published, after checking the answer ended with `tool_calls`.
fn the_call(events: &[StreamEvent]) -> &chatstream_core::ToolCall {
    let calls: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCall { call } => Some(call),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 1, "one published call: {events:?}");
    assert!(
        matches!(
            events.last(),
            Some(StreamEvent::End {
                finish_reason: chatstream_core::FinishReason::ToolCalls,
                ..
            })
        ),
        "{events:?}"
    );
    calls[0]
}

#[tokio::test]
async fn a_call_of_the_clients_tool_is_published_for_the_client_and_ends_the_answer() {
    let fake = FakeOpenAi::start(Behaviour::call_tool(
        "get_weather",
        r#"{"city":"Paris"}"#,
        Answer::new(["unused"]),
    ))
    .await;
    let backend = OpenAiBackend::new(OpenAiConfig::new(fake.base_url(), "gpt-4o-mini"))
        .unwrap()
        .shared();
    let (events, worker) = answer_with_client_tool(backend, "get_weather").await;
    let call = the_call(&events);
    assert_eq!(call.name, "get_weather");
    assert_eq!(call.arguments, r#"{"city":"Paris"}"#);
    assert!(call.id.starts_with("call_"), "{call:?}");
    let bodies = fake.requests();
    assert_eq!(bodies.len(), 1, "the worker did not ask again: {bodies:?}");
    assert_eq!(bodies[0]["tools"][0]["type"], "function");
    assert_eq!(bodies[0]["tools"][0]["function"]["name"], "get_weather");
    worker.shutdown().await;
}

/// A worker running its own `get_weather` (the tool loop) against a model that calls
/// `tool` when offered.
async fn worker_with_own_weather(
    tool: &str,
) -> (
    FakeOpenAi,
    Arc<chatstream_core::DynLlmBackend>,
    Arc<Mutex<Vec<String>>>,
) {
    let (weather_url, weather_seen) = fake_weather().await;
    let fake = FakeOpenAi::start(Behaviour::call_tool(
        tool,
        r#"{"city":"Paris"}"#,
        Answer::new(["unused"]),
    ))
    .await;
    let weather = WeatherTool::new("owm-key")
        .unwrap()
        .with_base_url(weather_url);
    let backend = OpenAiBackend::new(OpenAiConfig::new(fake.base_url(), "gpt-4o-mini"))
        .unwrap()
        .layer(ToolLoopLayer::new([Arc::new(weather) as _]))
        .shared();
    (fake, backend, weather_seen)
}

#[tokio::test]
async fn beside_the_workers_own_tools_a_client_tool_call_goes_to_the_client() {
    let (fake, backend, weather_seen) = worker_with_own_weather("lookup").await;
    let (events, worker) = answer_with_client_tool(backend, "lookup").await;
    assert_eq!(the_call(&events).name, "lookup");
    let bodies = fake.requests();
    assert_eq!(bodies.len(), 1, "the loop did not ask again: {bodies:?}");
    let offered: Vec<&str> = bodies[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        offered,
        ["get_weather", "lookup"],
        "the worker's and the client's"
    );
    assert!(
        weather_seen.lock().unwrap().is_empty(),
        "no tool of the worker ran"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn a_client_tool_named_like_one_of_the_workers_is_refused_by_name() {
    let (fake, backend, weather_seen) = worker_with_own_weather("get_weather").await;
    let (events, worker) = answer_with_client_tool(backend, "get_weather").await;
    let error = events.iter().find_map(|e| match e {
        StreamEvent::Error { message } => Some(message.as_str()),
        _ => None,
    });
    assert!(
        error.is_some_and(|m| m.contains("get_weather")),
        "a clash is an error naming the tool: {events:?}"
    );
    worker.shutdown().await;
    assert!(weather_seen.lock().unwrap().is_empty());
    assert!(fake.requests().is_empty(), "the model was not asked");
}
