//! End to end: the real `assistant_ws` example (seed 004) against the real RabbitMQ and
//! Redis, with the fake OpenAI server as the model.
//!
//! - a browser subscribed to its channel gets the answer to a request published straight
//!   to the exchange (started … completed, `message_id`, `thread_id`); its next message,
//!   sent on the socket, carries the first exchange in its history, in the same thread, and
//!   refreshes the channel's expiry; the gateway's `GET /metrics` on the service's port
//!   counts the answer's client stream and tokens;
//! - a tool call shows `processing` before the answer;
//! - `--test-message` prints the answer and exits 0;
//! - `--clear-old-threads` removes only the old threads (and refuses without `--yes` when
//!   no one can be asked);
//! - a client that drops mid-answer and reconnects to a *different* process (a second,
//!   `--gateway-only` instance) with `Last-Event-ID` receives exactly the missing tokens,
//!   over the seed 001 SSE route both processes serve from the Redis token bus;
//! - a browser on a `--gateway-only` instance gets the answer a worker in another process
//!   gives to a request published straight to the exchange (the workers' news on Redis).
//!
//! Each test has its own exchange, routing key, queue and Redis prefix, and deletes them.
//! Skips when a server is unreachable (`CHATSTREAM_AMQP_URL`, `CHATSTREAM_REDIS_URL`),
//! unless `CHATSTREAM_REQUIRE_SERVICES=1`. `cargo test` builds the example (the root
//! package's dev-dependencies turn on features `amqp` and `redis`); when a test filter
//! skipped that, run `cargo build --example assistant_ws --features amqp,redis` first.
#![cfg(all(unix, feature = "amqp", feature = "redis"))]

#[path = "assistant_ws/harness.rs"]
mod harness;
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatstream_core::testkit::fake_openai::{Answer, Behaviour};
use harness::{fake_weather, streamed_text, Browser, Setup, Sse, EXPIRY, WAIT};
use serde_json::{json, Value};
use support::within;

const TOKENS: [&str; 8] = [
    "The",
    " capital",
    " of",
    " France",
    " is",
    " Paris",
    ".",
    " Bonjour!",
];

/// `GET /metrics` on `port`: the gateway's metrics in Prometheus text.
async fn scrape(port: u16) -> String {
    let (status, body) = support::http(port, "GET /metrics HTTP/1.0", "", WAIT).await;
    assert!(status.contains(" 200 "), "{status} {body}");
    body
}

/// The value of `series` (name and labels exactly as exposed) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn roles_and_contents(body: &Value) -> Vec<(String, String)> {
    body["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {body}"))
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default().to_owned(),
                m["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_subscribed_browser_gets_answers_in_one_thread_whose_history_and_expiry_carry_over() {
    let Some(setup) = Setup::new(Behaviour::answer(TOKENS)).await else {
        return;
    };
    let service = setup.start(&[]).await;
    let before = scrape(service.port).await;
    assert_eq!(value(&before, "chatstream_tokens_relayed_total"), Some(0.0));
    let mut browser = Browser::connect(&service).await;
    browser.subscribe("convex_id_12345").await;

    // Another client publishes straight to RabbitMQ, as seed 004's clients do.
    setup
        .publish("convex_id_12345", "msg-1", "What is the capital of France?")
        .await;
    let answer = browser.answer("msg-1").await;
    let thread = answer[0].thread_id.clone();
    assert_eq!(
        (answer[0].kind.as_str(), answer[0].status.as_str()),
        ("status", "started")
    );
    assert!(thread.starts_with("thread_"), "{thread}");
    assert!(
        answer
            .iter()
            .all(|m| m.message_id == "msg-1" && m.thread_id == thread),
        "{answer:?}"
    );
    let last = answer.last().unwrap_or_else(|| panic!("no messages"));
    assert_eq!(
        (last.kind.as_str(), last.status.as_str(), last.final_message),
        ("response", "completed", Some(true))
    );
    assert_eq!(last.message, TOKENS.concat());
    assert_eq!(streamed_text(&answer), TOKENS.concat());
    // The gateway's metrics on the service's own port moved with the answer.
    let after = scrape(service.port).await;
    assert!(
        value(&after, "chatstream_tokens_relayed_total").is_some_and(|n| n >= 1.0),
        "{after}"
    );
    assert!(
        value(&after, "chatstream_clients_opened_total").is_some_and(|n| n >= 1.0),
        "{after}"
    );
    assert_eq!(
        setup.thread_of("convex_id_12345").await,
        Some(thread.clone())
    );

    // The channel's expiry: set, then shortened by hand, then refreshed by the next message.
    let channel_key = setup.redis.keys().channel("convex_id_12345");
    let ttl: i64 = setup.redis(redis::cmd("TTL").arg(&channel_key)).await;
    assert!(ttl > 0 && ttl <= EXPIRY as i64, "TTL {ttl}");
    let _: () = setup
        .redis(redis::cmd("EXPIRE").arg(&channel_key).arg(50))
        .await;

    // The second message goes through the socket (the route publishes it to RabbitMQ).
    browser
        .send(json!({"action": "message", "channel": "convex_id_12345",
            "message_id": "msg-2", "message": "And of Germany?"}))
        .await;
    let second = browser.answer("msg-2").await;
    assert!(second.iter().all(|m| m.thread_id == thread), "{second:?}");
    assert_eq!(second.last().map(|m| m.status.as_str()), Some("completed"));
    let ttl: i64 = setup.redis(redis::cmd("TTL").arg(&channel_key)).await;
    assert!(ttl > 1000, "expiry not refreshed: TTL {ttl}");

    let bodies = setup.fake.requests();
    assert_eq!(bodies.len(), 2);
    let history = roles_and_contents(&bodies[1]);
    let tail: Vec<(&str, &str)> = history
        .iter()
        .skip_while(|(role, _)| role == "system")
        .map(|(r, c)| (r.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        tail,
        [
            ("user", "What is the capital of France?"),
            ("assistant", TOKENS.concat().as_str()),
            ("user", "And of Germany?"),
        ]
    );
    assert_eq!(bodies[1]["model"], "gpt-4o-mini");
}

#[tokio::test]
async fn a_tool_call_shows_processing_then_the_answer() {
    let (weather_url, weather_seen) = fake_weather().await;
    let behaviour = Behaviour::call_tool(
        "get_weather",
        r#"{"city":"Paris"}"#,
        Answer::new(["Sunny", " and", " 21", " °C", "."]),
    );
    let Some(mut setup) = Setup::new(behaviour).await else {
        return;
    };
    setup.extra_env = vec![
        ("OPENWEATHER_API_KEY".into(), "owm-test".into()),
        ("OPENWEATHER_URL".into(), weather_url),
    ];
    let service = setup.start(&[]).await;
    let mut browser = Browser::connect(&service).await;
    browser.subscribe("weather-channel").await;
    setup
        .publish("weather-channel", "w-1", "What's the weather in Paris?")
        .await;
    let answer = browser.answer("w-1").await;
    let statuses: Vec<&str> = answer.iter().map(|m| m.status.as_str()).collect();
    let processing = statuses.iter().position(|s| *s == "processing");
    let first_chunk = statuses.iter().position(|s| *s == "in_progress");
    assert_eq!(statuses.first(), Some(&"started"), "{statuses:?}");
    assert!(
        processing.is_some() && processing < first_chunk,
        "{statuses:?}"
    );
    assert_eq!(answer[processing.unwrap_or(0)].message, "get_weather");
    assert_eq!(statuses.last(), Some(&"completed"));
    assert_eq!(streamed_text(&answer), "Sunny and 21 °C.");

    assert_eq!(
        weather_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_slice(),
        ["GET /data/2.5/weather?q=Paris&appid=owm-test&units=metric HTTP/1.1"]
    );
    let bodies = setup.fake.requests();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0]["tools"][0]["function"]["name"], "get_weather");
    let last = &bodies[1]["messages"].as_array().expect("messages")[..];
    let result = &last[last.len() - 1];
    assert_eq!(result["role"], "tool");
    assert!(
        result["content"]
            .as_str()
            .is_some_and(|c| c.contains("clear sky")),
        "{result}"
    );
}

#[tokio::test]
async fn test_message_prints_the_answer_and_exits_zero() {
    let Some(setup) = Setup::new(Behaviour::answer(TOKENS)).await else {
        return;
    };
    let _service = setup.start(&[]).await;
    let out = setup
        .run(&["--test-message", "user_session_abc123", "Hello, assistant!"])
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}: {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&TOKENS.concat()), "{stdout}");
    let thread = setup
        .thread_of("user_session_abc123")
        .await
        .unwrap_or_else(|| panic!("no thread"));
    assert!(
        stdout.contains(&format!("[started] thread_id: {thread}")),
        "{stdout}"
    );
    assert!(stdout.contains("[completed] stop"), "{stdout}");
}

#[tokio::test]
async fn clear_old_threads_removes_only_the_old_ones() {
    let Some(setup) = Setup::new(Behaviour::answer(TOKENS)).await else {
        return;
    };
    let _service = setup.start(&[]).await;
    for channel in ["old-channel", "new-channel"] {
        let out = setup.run(&["--test-message", channel, "hi"]).await;
        assert!(out.status.success(), "{out:?}");
    }
    let old = setup.thread_of("old-channel").await.expect("old thread");
    let new = setup.thread_of("new-channel").await.expect("new thread");
    let keys = setup.redis.keys().clone();
    let forty_days_ago = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        - Duration::from_secs(40 * 86_400).as_millis() as u64;
    let _: () = setup
        .redis(
            redis::cmd("HSET")
                .arg(keys.conversation_meta(&old))
                .arg("last_activity")
                .arg(forty_days_ago),
        )
        .await;

    // No terminal to ask and no --yes: nothing happens.
    let refused = setup.run(&["--clear-old-threads", "30"]).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--yes"),
        "{refused:?}"
    );
    assert_eq!(setup.thread_of("old-channel").await, Some(old.clone()));

    let out = setup.run(&["--clear-old-threads", "30", "--yes"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("Deleted 1 threads"), "{stdout}");
    for (key, kept) in [
        (keys.conversation_meta(&old), false),
        (keys.conversation_messages(&old), false),
        (keys.channel("old-channel"), false),
        (keys.conversation_meta(&new), true),
        (keys.conversation_messages(&new), true),
    ] {
        let exists: bool = setup.redis(redis::cmd("EXISTS").arg(&key)).await;
        assert_eq!(exists, kept, "{key}");
    }
    assert_eq!(setup.thread_of("new-channel").await, Some(new));

    let stats = setup.run(&["--show-thread-stats"]).await;
    let stdout = String::from_utf8_lossy(&stats.stdout);
    assert!(stdout.contains("threads:  1"), "{stdout}");
    assert!(stdout.contains("messages: 2"), "{stdout}");

    // --generate-uuid creates a channel and its thread.
    let out = setup.run(&["--generate-uuid"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
            .to_owned()
    };
    let (channel, thread) = (field("Channel UUID:"), field("Thread ID:"));
    assert_eq!(channel.len(), 36, "{channel}");
    assert_eq!(setup.thread_of(&channel).await, Some(thread));

    let out = setup.run(&["--clear-all-threads", "--yes"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Deleted 2 threads"),
        "{out:?}"
    );
    assert_eq!(setup.thread_of("new-channel").await, None);
    assert_eq!(setup.thread_of(&channel).await, None);
}

#[tokio::test]
async fn a_client_resumes_on_another_gateway_process_with_exactly_the_missing_tokens() {
    let words: Vec<String> = (0..24).map(|i| format!(" w{i}")).collect();
    let slow = Answer::new(words.clone()).with_delay(Duration::from_millis(60));
    let Some(setup) = Setup::new(Behaviour::Answer(slow)).await else {
        return;
    };
    let first = setup.start(&[]).await;
    let second = setup.start(&["--gateway-only"]).await;
    setup.publish("resume-channel", "r-1", "count").await;

    // Read part of the answer from the first process, then drop the connection.
    let mut sse = Sse::open(first.port, "resume-channel", "r-1", None).await;
    let mut before = Vec::new();
    while before.len() < 5 {
        let event = sse.next().await.expect("an event before the end");
        assert_ne!(event.data, "__END__", "the answer ended before the drop");
        before.push(event);
    }
    drop(sse);
    let last_id = before.last().map(|e| e.id.clone()).unwrap_or_default();
    let marker = setup
        .redis
        .keys()
        .token_marker(&chatstream_core::StreamKey::new("resume-channel", "r-1"));
    let ended: bool = setup
        .redis(redis::cmd("HEXISTS").arg(&marker).arg("ended"))
        .await;
    assert!(
        !ended,
        "the answer must still be streaming when the client comes back"
    );

    // Reconnect to the other process with Last-Event-ID.
    let mut resumed = Sse::open(second.port, "resume-channel", "r-1", Some(&last_id)).await;
    let after = within("the rest", WAIT, resumed.rest()).await;

    // The whole stream, read afterwards from the start.
    let whole = Sse::open(second.port, "resume-channel", "r-1", None)
        .await
        .rest()
        .await;
    let joined: Vec<_> = before.iter().chain(&after).cloned().collect();
    assert_eq!(
        joined, whole,
        "dropped part + resumed part = the whole stream"
    );
    let text: String = whole
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| v["token"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, words.concat());
    assert_eq!(whole.last().map(|e| e.data.as_str()), Some("__END__"));
}

#[tokio::test]
async fn a_browser_on_a_gateway_only_instance_gets_answers_a_worker_elsewhere_gives() {
    let Some(setup) = Setup::new(Behaviour::answer(TOKENS)).await else {
        return;
    };
    // The worker runs in one process; the browser is on another, which has none.
    let _worker_instance = setup.start(&[]).await;
    let gateway = setup.start(&["--gateway-only"]).await;
    let mut browser = Browser::connect(&gateway).await;
    browser.subscribe("elsewhere-channel").await;

    // Published straight to RabbitMQ, as seed 004's clients do: only the other process's
    // worker takes it, and only its news tells this gateway that the stream exists.
    setup
        .publish("elsewhere-channel", "e-1", "What is the capital of France?")
        .await;
    // One limit for the whole answer: keep-alive messages would extend a per-message one.
    let answer = within(
        "the answer from the other process",
        WAIT,
        browser.answer("e-1"),
    )
    .await;
    assert_eq!(
        (answer[0].kind.as_str(), answer[0].status.as_str()),
        ("status", "started"),
        "{answer:?}"
    );
    let last = answer.last().unwrap_or_else(|| panic!("no messages"));
    assert_eq!(
        (last.kind.as_str(), last.status.as_str(), last.final_message),
        ("response", "completed", Some(true))
    );
    assert_eq!(streamed_text(&answer), TOKENS.concat());
}
