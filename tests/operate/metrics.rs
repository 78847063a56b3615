//! A worker-only `queue_worker`'s metrics port: counts and histograms move as requests are
//! answered, fail and are dead-lettered.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatstream_core::testkit::fake_openai::Behaviour;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

use crate::support::{http, within};
use crate::{Setup, WAIT};

/// The fake model's answer.
const TOKENS: [&str; 5] = ["Metrics", " move", " as", " answers", " go."];

/// What the seed's pika client publishes, for `uid`.
fn pika_message(uid: &str) -> String {
    format!(
        r#"{{"model": "gpt-4o", "messages": [{{"role": "user", "content": "Count me."}}], "stream": true, "username": "alice", "uid": "{uid}"}}"#
    )
}

impl Setup {
    /// Publishes `body` to the request queue with RabbitMQ's `timestamp_in_ms` header (as
    /// its `set_header_timestamp` interceptor adds), so the worker sees a queue wait; a
    /// `uid` names the response queue to delete afterwards.
    async fn publish(&self, body: &str, uid: Option<&str>) {
        if let Some(uid) = uid {
            self.extra_queues
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("response_{uid}"));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis();
        let mut headers = FieldTable::default();
        headers.insert(
            "timestamp_in_ms".into(),
            AMQPValue::LongLongInt(i64::try_from(now).expect("ms")),
        );
        let ch = self.client.create_channel().await.expect("channel");
        ch.basic_publish(
            "".into(),
            self.queue.as_str().into(),
            Default::default(),
            body.as_bytes(),
            BasicProperties::default().with_headers(headers),
        )
        .await
        .expect("publish");
    }
}

/// The value of `series` (name and labels exactly as exposed) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(port: u16) -> String {
    let (status, body) = http(port, "GET /metrics HTTP/1.0", "", WAIT).await;
    assert!(status.contains(" 200 "), "{status}");
    body
}

/// Scrapes until `series` reads `want`; returns that scrape.
async fn scrape_until(port: u16, series: &str, want: f64) -> String {
    within(&format!("{series} = {want}"), WAIT, async {
        loop {
            let text = scrape(port).await;
            if value(&text, series) == Some(want) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

fn requests(outcome: &str, model: &str) -> String {
    format!("chatstream_worker_requests_total{{model=\"{model}\",outcome=\"{outcome}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_only_process_counts_answers_failures_and_dead_letters() {
    let Some(setup) = Setup::new(Behaviour::answer(TOKENS)).await else {
        return;
    };
    let url = crate::support::amqp_url();
    let started = setup
        .start(
            &url,
            &["--worker-only"],
            &[("METRICS_PORT", "0"), ("METRICS_HOST", "127.0.0.1")],
        )
        .await;
    let port = started.ready.metrics.expect("the metrics port");

    let text = scrape(port).await;
    assert_eq!(
        value(&text, "chatstream_worker_requests_in_flight"),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "chatstream_worker_requests_received_total"),
        Some(0.0)
    );
    let (status, body) = http(port, "GET /ready HTTP/1.0", "", WAIT).await;
    assert!(status.contains(" 200 "), "{status} {body}");
    assert!(body.contains("\"rabbitmq\":\"up\""), "{body}");

    // Three answered.
    for _ in 0..3 {
        let uid = uuid::Uuid::new_v4().to_string();
        setup.publish(&pika_message(&uid), Some(&uid)).await;
    }
    let text = scrape_until(port, &requests("completed", "gpt-4o"), 3.0).await;
    let model = "{model=\"gpt-4o\"}";
    for histogram in ["tokens_per_second", "time_to_first_token_seconds"] {
        let count = format!("chatstream_worker_{histogram}_count{model}");
        assert_eq!(value(&text, &count), Some(3.0), "{count}\n{text}");
        let inf = format!("chatstream_worker_{histogram}_bucket{{model=\"gpt-4o\",le=\"+Inf\"}}");
        assert_eq!(value(&text, &inf), Some(3.0), "{inf}\n{text}");
    }
    assert_eq!(
        value(&text, "chatstream_worker_queue_wait_seconds_count"),
        Some(3.0),
        "every request carried its enqueue time\n{text}"
    );
    let completion = format!("chatstream_worker_completion_tokens_total{model}");
    assert!(
        value(&text, &completion).is_some_and(|t| t >= 3.0 * TOKENS.len() as f64),
        "{text}"
    );
    let messages = value(&text, "chatstream_worker_broker_messages_published_total");
    assert!(messages.is_some_and(|m| m >= 3.0), "{text}");
    assert_eq!(
        value(&text, "chatstream_worker_publish_duration_seconds_count"),
        messages,
        "one latency per broker message\n{text}"
    );
    let envelopes = value(&text, "chatstream_worker_envelopes_published_total");
    assert!(envelopes >= messages, "{text}");
    assert_eq!(
        value(&text, "chatstream_worker_dead_letters_total"),
        Some(0.0)
    );

    // One the LLM refuses: failed, an error published, dead-lettered.
    setup.fake.set_behaviour(Behaviour::status(401));
    let uid = uuid::Uuid::new_v4().to_string();
    setup.publish(&pika_message(&uid), Some(&uid)).await;
    let text = scrape_until(port, &requests("failed", "gpt-4o"), 1.0).await;
    assert_eq!(
        value(&text, "chatstream_worker_dead_letters_total"),
        Some(1.0)
    );
    let count = format!("chatstream_worker_tokens_per_second_count{model}");
    assert_eq!(
        value(&text, &count),
        Some(3.0),
        "a failed request adds no rate"
    );

    // One that is not a request at all: rejected, dead-lettered.
    setup.publish("this is not JSON", None).await;
    let text = scrape_until(port, &requests("rejected", "unknown"), 1.0).await;
    assert_eq!(
        value(&text, "chatstream_worker_dead_letters_total"),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "chatstream_worker_requests_received_total"),
        Some(5.0)
    );
    assert_eq!(value(&text, &requests("completed", "gpt-4o")), Some(3.0));
    // A request leaves the gauge before its outcome is counted: the scrape that counts the
    // last one settled shows nothing in flight.
    assert_eq!(
        value(&text, "chatstream_worker_requests_in_flight"),
        Some(0.0),
        "{text}"
    );
}
