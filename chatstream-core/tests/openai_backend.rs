//! The OpenAI-compatible backend against the fake server: answers, history, HTTP errors,
//! cut and stalled streams, unreachable servers.
#![cfg(all(feature = "openai", feature = "testkit"))]

use std::time::Duration;

use chatstream_core::backend::{OpenAiBackend, OpenAiConfig};
use chatstream_core::testkit::fake_openai::{Answer, Behaviour, FakeOpenAi, Framing};
use chatstream_core::{
    ChatMessage, ChatRequest, Conversation, Error, FinishReason, LlmBackend, LlmEvent, Result,
    StreamKey, Usage,
};
use futures::StreamExt;
use tokio::time::timeout;

/// A regression shows up as a failure after this long, never as a hung test.
const LIMIT: Duration = Duration::from_secs(20);

fn config(base_url: String) -> OpenAiConfig {
    OpenAiConfig::new(base_url, "test-model").with_idle_timeout(Duration::from_secs(10))
}

fn request(text: &str) -> ChatRequest {
    ChatRequest::new(StreamKey::new("session", "message"), text)
}

/// Every event of one answer; an `Err` from `stream()` itself comes back as the only item.
async fn events(
    backend: &OpenAiBackend,
    request: &ChatRequest,
    conversation: &Conversation,
) -> Vec<Result<LlmEvent>> {
    let opened = timeout(LIMIT, backend.stream(request, conversation))
        .await
        .expect("stream() must not hang");
    match opened {
        Ok(stream) => timeout(LIMIT, stream.collect::<Vec<_>>())
            .await
            .expect("the event stream must end"),
        Err(e) => vec![Err(e)],
    }
}

fn text(events: &[Result<LlmEvent>]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Ok(LlmEvent::TextDelta(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn streamed_answer_arrives_whole_with_usage_and_finish() {
    let fake = FakeOpenAi::start(Behaviour::answer(["Hello", ",", " world", "!"])).await;
    let backend = OpenAiBackend::new(config(fake.base_url())).unwrap();
    let events = events(&backend, &request("hi there"), &Conversation::empty("c")).await;

    assert!(events.iter().all(Result::is_ok), "{events:?}");
    assert_eq!(text(&events), "Hello, world!");
    let tail: Vec<_> = events[events.len() - 2..]
        .iter()
        .map(|e| e.as_ref().unwrap().clone())
        .collect();
    assert_eq!(
        tail,
        [
            LlmEvent::Usage(Usage {
                prompt_tokens: 2,
                completion_tokens: 4,
                total_tokens: 6
            }),
            LlmEvent::Finish(FinishReason::Stop),
        ]
    );
    // The role-only first chunk (empty content) is not an event.
    assert_eq!(events.len(), 6);
}

#[tokio::test]
async fn history_is_sent_before_the_new_message() {
    let fake = FakeOpenAi::start(Behaviour::answer(["ok"])).await;
    let backend = OpenAiBackend::new(config(fake.base_url()).with_max_tokens(64)).unwrap();
    let mut conversation = Conversation::empty("c");
    conversation.messages = vec![
        ChatMessage::system("Be brief."),
        ChatMessage::user("What is the capital of France?"),
        ChatMessage::assistant("Paris."),
    ];
    events(&backend, &request("And of Italy?"), &conversation).await;

    let sent = fake.requests();
    assert_eq!(sent.len(), 1);
    let messages: Vec<(&str, &str)> = sent[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        messages,
        [
            ("system", "Be brief."),
            ("user", "What is the capital of France?"),
            ("assistant", "Paris."),
            ("user", "And of Italy?"),
        ]
    );
    assert_eq!(sent[0]["model"], "test-model");
    assert_eq!(sent[0]["max_tokens"], 64);
    assert_eq!(sent[0]["stream"], true);
    assert_eq!(sent[0]["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn token_limit_reached_finishes_with_length() {
    let fake = FakeOpenAi::start(Behaviour::answer(["a", "b", "c", "d"])).await;
    let backend = OpenAiBackend::new(config(fake.base_url())).unwrap();
    let mut req = request("go");
    req.max_tokens = Some(2);
    let events = events(&backend, &req, &Conversation::empty("c")).await;
    assert_eq!(text(&events), "ab");
    assert!(
        matches!(
            events.last(),
            Some(Ok(LlmEvent::Finish(FinishReason::Length)))
        ),
        "{events:?}"
    );
}

#[tokio::test]
async fn http_errors_surface_with_their_status_and_are_not_retried() {
    for (status, words) in [
        (401, "Incorrect API key"),
        (429, "Rate limit"),
        (500, "server had an error"),
    ] {
        let fake = FakeOpenAi::start(Behaviour::status(status)).await;
        let backend = OpenAiBackend::new(config(fake.base_url())).unwrap();
        let events = events(&backend, &request("hi"), &Conversation::empty("c")).await;

        match events.as_slice() {
            [Err(Error::Backend {
                status: Some(s),
                message,
            })] => {
                assert_eq!(*s, status);
                assert!(message.contains(words), "{status}: {message}");
            }
            other => panic!("HTTP {status} must be one Backend error, got {other:?}"),
        }
        assert_eq!(
            fake.requests().len(),
            1,
            "HTTP {status} must not be retried"
        );
    }
}

#[tokio::test]
async fn a_cut_stream_ends_with_an_error_after_the_tokens_received() {
    for framing in [Framing::Chunked, Framing::CloseDelimited] {
        let fake = FakeOpenAi::try_start(
            Behaviour::cut_after(["one", " two", " three", " four"], 2),
            framing,
        )
        .await
        .unwrap();
        let backend = OpenAiBackend::new(config(fake.base_url())).unwrap();
        let events = events(&backend, &request("hi"), &Conversation::empty("c")).await;

        assert_eq!(text(&events), "one two", "{framing:?}");
        assert!(
            matches!(
                events.last(),
                Some(Err(Error::Backend { status: None, .. }))
            ),
            "{framing:?}: {events:?}"
        );
        assert!(
            !events.iter().any(|e| matches!(e, Ok(LlmEvent::Finish(_)))),
            "{framing:?}: {events:?}"
        );
    }
}

#[tokio::test]
async fn a_stalled_server_times_out() {
    let fake = FakeOpenAi::start(Behaviour::Stall).await;
    let backend =
        OpenAiBackend::new(config(fake.base_url()).with_idle_timeout(Duration::from_millis(200)))
            .unwrap();
    let events = events(&backend, &request("hi"), &Conversation::empty("c")).await;
    assert!(
        matches!(events.as_slice(), [Err(Error::Timeout(_))]),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_slow_answer_hits_the_total_timeout() {
    let answer = Answer::new(vec!["tok "; 1000]).with_delay(Duration::from_millis(20));
    let fake = FakeOpenAi::start(Behaviour::Answer(answer)).await;
    let backend =
        OpenAiBackend::new(config(fake.base_url()).with_timeout(Duration::from_millis(300)))
            .unwrap();
    let events = events(&backend, &request("hi"), &Conversation::empty("c")).await;
    assert!(
        matches!(events.last(), Some(Err(Error::Timeout(_)))),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| matches!(e, Ok(LlmEvent::Finish(_)))));
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }; // closed again: connecting is refused
    let backend = OpenAiBackend::new(config(format!("http://127.0.0.1:{port}/v1"))).unwrap();
    let events = events(&backend, &request("hi"), &Conversation::empty("c")).await;
    match events.as_slice() {
        [Err(e @ Error::Unavailable { what: "llm", .. })] => {
            assert!(e.is_retryable());
            assert!(e.to_string().contains("refused"), "the cause is named: {e}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn concurrent_requests_get_their_own_answers() {
    let fake = FakeOpenAi::start(Behaviour::Answer(Answer::echo())).await;
    let backend = OpenAiBackend::new(config(fake.base_url())).unwrap();
    let questions: Vec<String> = (0..8).map(|i| format!("question number {i}")).collect();
    let answers = futures::future::join_all(questions.iter().map(|q| {
        let backend = &backend;
        async move { text(&events(backend, &request(q), &Conversation::empty("c")).await) }
    }))
    .await;
    assert_eq!(answers, questions);
    assert_eq!(fake.requests().len(), 8);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    // Accepts connections and reads nothing, writes nothing: not even headers arrive.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let backend = OpenAiBackend::new(
        config(format!("http://{addr}/v1")).with_idle_timeout(Duration::from_millis(200)),
    )
    .unwrap();
    let events = events(&backend, &request("hi"), &Conversation::empty("c")).await;
    assert!(
        matches!(events.as_slice(), [Err(Error::Timeout(_))]),
        "{events:?}"
    );
    server.abort();
}
