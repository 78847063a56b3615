//! The adapter against the in-process fake Service Bus, with the real azservicebus client.

use std::time::{Duration, Instant};

use azservicebus::authorization::AzureNamedKeyCredential;
use azservicebus::primitives::sub_queue::SubQueue;
use azservicebus::receiver::service_bus_session_receiver::ServiceBusSessionReceiverOptions;
use azservicebus::{ServiceBusClient, ServiceBusReceiverOptions};
use chatstream_core::{
    ChatRequest, Destination, FinishReason, RequestSink, StreamEvent, StreamKey, TokenEnvelope,
    TokenSink, TokenSource,
};
use chatstream_servicebus::fake::{FakeConfig, FakeServiceBus};
use chatstream_servicebus::{ServiceBusConnection, MESSAGE_ID_PROPERTY};
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(20);

async fn start() -> (FakeServiceBus, ServiceBusConnection) {
    let fake = FakeServiceBus::start(FakeConfig::chatstream("sse-service"))
        .await
        .expect("start the fake");
    let conn = connect(&fake).await;
    (fake, conn)
}

/// Another connection, as another process (a worker beside a gateway) has.
async fn connect(fake: &FakeServiceBus) -> ServiceBusConnection {
    ServiceBusConnection::connect(fake.config())
        .await
        .expect("connect")
}

/// A bare azservicebus client on the fake, to look at what the adapter wrote.
async fn raw_client(
    fake: &FakeServiceBus,
) -> ServiceBusClient<azservicebus::core::BasicRetryPolicy> {
    ServiceBusClient::unsecured()
        .new_from_named_key_credential(
            fake.endpoint(),
            AzureNamedKeyCredential::new("test", "test"),
            Default::default(),
        )
        .await
        .expect("raw client")
}

fn stream_of(key: &StreamKey, tokens: &[&str]) -> Vec<TokenEnvelope> {
    let mut out: Vec<TokenEnvelope> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| TokenEnvelope::new(key.clone(), 1, i as u64, StreamEvent::token(*t)))
        .collect();
    out.push(TokenEnvelope::new(
        key.clone(),
        1,
        tokens.len() as u64,
        StreamEvent::End {
            finish_reason: FinishReason::Stop,
            usage: None,
        },
    ));
    out
}

async fn collect(source: &dyn TokenSource, key: &StreamKey) -> Vec<TokenEnvelope> {
    let stream = source.subscribe(key, None).await.expect("subscribe");
    tokio::time::timeout(
        WAIT,
        stream.map(|r| r.expect("envelope")).collect::<Vec<_>>(),
    )
    .await
    .expect("the stream ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_messages_carry_the_session_id_and_message_id() {
    let (fake, conn) = start().await;
    let sink = conn.token_sink().await.expect("sink");
    let key = StreamKey::new("chat-7", "msg-3");
    sink.publish(&Destination::default(), &stream_of(&key, &["Hi"]))
        .await
        .expect("publish");
    let mut client = raw_client(&fake).await;
    let mut receiver = client
        .accept_session_for_subscription(
            "token-streams",
            "sse-service",
            "chat-7",
            ServiceBusSessionReceiverOptions::default(),
        )
        .await
        .expect("session receiver");
    let messages = receiver
        .receive_messages_with_max_wait_time(2, Duration::from_secs(2))
        .await
        .expect("receive");
    assert_eq!(messages.len(), 2, "token and End");
    for m in &messages {
        assert_eq!(
            m.session_id(),
            Some("chat-7"),
            "SessionId is the chat session"
        );
        let props = m.application_properties().expect("application properties");
        assert_eq!(
            props.0.get(MESSAGE_ID_PROPERTY),
            Some(&fe2o3_amqp_types::primitives::SimpleValue::String(
                "msg-3".into()
            ))
        );
        receiver.complete_message(m).await.expect("complete");
    }
    let body = std::str::from_utf8(messages[0].body().expect("body")).expect("utf-8");
    assert!(
        body.starts_with(r#"{"sessionId": "chat-7", "messageId": "msg-3", "token": "Hi""#),
        "seed 000 peers read the body unchanged: {body}"
    );
    receiver.dispose().await.expect("dispose");
    client.dispose().await.expect("dispose client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_streaming_at_once_stay_apart() {
    let (fake, conn) = start().await;
    let sink = connect(&fake).await.token_sink().await.expect("sink");
    let source = conn.token_source();
    let a = StreamKey::new("session-a", "m1");
    let b = StreamKey::new("session-b", "m1");
    let (sa, sb) = (a.clone(), b.clone());
    let (src_a, src_b) = (source.clone(), source.clone());
    let read_a = tokio::spawn(async move { collect(&src_a, &sa).await });
    let read_b = tokio::spawn(async move { collect(&src_b, &sb).await });
    let (ea, eb) = (
        stream_of(&a, &["a1", "a2", "a3"]),
        stream_of(&b, &["b1", "b2", "b3"]),
    );
    for (x, y) in ea.iter().zip(eb.iter()) {
        // One batch with both sessions' envelopes, interleaved.
        sink.publish(&Destination::default(), &[x.clone(), y.clone()])
            .await
            .expect("publish");
    }
    assert_eq!(
        read_a.await.expect("reader a"),
        ea,
        "session a saw exactly its stream"
    );
    assert_eq!(
        read_b.await.expect("reader b"),
        eb,
        "session b saw exactly its stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_message_of_the_same_session_waits_for_its_subscriber() {
    let (_fake, conn) = start().await;
    let sink = conn.token_sink().await.expect("sink");
    let source = conn.token_source();
    let first = StreamKey::new("chat", "m1");
    let second = StreamKey::new("chat", "m2");
    let mut m2 = source.subscribe(&second, None).await.expect("subscribe m2");
    let e1 = stream_of(&first, &["one"]);
    let e2 = stream_of(&second, &["two", "three"]);
    sink.publish(&Destination::default(), &e1)
        .await
        .expect("publish m1");
    sink.publish(&Destination::default(), &e2[..1])
        .await
        .expect("publish m2 start");
    let got = tokio::time::timeout(WAIT, m2.next())
        .await
        .expect("m2 token")
        .expect("item");
    assert_eq!(
        got.expect("envelope"),
        e2[0],
        "m2's subscriber sees only m2"
    );
    // m1's envelopes went by while only m2 was watched; a subscriber who comes while the
    // session's receiver is still open gets them.
    let late = tokio::spawn({
        let source = source.clone();
        async move { collect(&source, &first).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    sink.publish(&Destination::default(), &e2[1..])
        .await
        .expect("publish m2 rest");
    let rest: Vec<_> =
        tokio::time::timeout(WAIT, m2.map(|r| r.expect("envelope")).collect::<Vec<_>>())
            .await
            .expect("m2 ends");
    assert_eq!(rest, e2[1..].to_vec());
    assert_eq!(
        late.await.expect("late reader"),
        e1,
        "parked envelopes reach a later subscriber"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_gets_the_session_once_the_first_lets_go() {
    let (fake, conn) = start().await;
    let sink = connect(&fake).await.token_sink().await.expect("sink");
    let gateway_1 = conn.token_source();
    let gateway_2 = connect(&fake).await.token_source(); // another instance
    let key = StreamKey::new("busy", "m1");
    let held = gateway_1.subscribe(&key, None).await.expect("subscribe");
    tokio::time::sleep(Duration::from_millis(300)).await; // gateway 1 locks the session
    let waiting = tokio::spawn({
        let key = key.clone();
        async move { collect(&gateway_2, &key).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(held); // the client of gateway 1 went away: the session is released at once
    let expected = stream_of(&key, &["x"]);
    sink.publish(&Destination::default(), &expected)
        .await
        .expect("publish");
    assert_eq!(waiting.await.expect("reader"), expected);
    assert_eq!(
        gateway_1.open_sessions(),
        0,
        "gateway 1 closed its receiver"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_unsupported() {
    let (_fake, conn) = start().await;
    let err = conn
        .token_source()
        .subscribe(&StreamKey::new("s", "m"), Some(3))
        .await
        .err()
        .expect("replay fails");
    assert!(
        matches!(err, chatstream_core::Error::Unsupported(_)),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_requests_keep_their_reason() {
    let (fake, conn) = start().await;
    let sink = conn.request_sink().await.expect("request sink");
    sink.submit_raw(b"not json").await.expect("publish garbage");
    let source = conn.request_source().await.expect("source");
    let delivery = source
        .recv_timeout(WAIT)
        .await
        .expect("recv")
        .expect("a delivery");
    let reason = delivery
        .request
        .as_ref()
        .expect_err("does not decode")
        .to_string();
    delivery
        .acker
        .dead_letter(&reason)
        .await
        .expect("dead-letter");
    // Read the dead-letter queue with the plain client, as an operator would.
    let mut client = raw_client(&fake).await;
    let mut dlq = client
        .create_receiver_for_subscription(
            "user-messages",
            "worker-service",
            ServiceBusReceiverOptions {
                sub_queue: SubQueue::DeadLetter,
                ..Default::default()
            },
        )
        .await
        .expect("dead-letter receiver");
    let dead = dlq
        .receive_message_with_max_wait_time(Duration::from_secs(5))
        .await
        .expect("receive")
        .expect("a dead letter");
    assert_eq!(dead.body().expect("body"), b"not json");
    assert_eq!(dead.dead_letter_reason(), Some(reason.as_str()));
    dlq.complete_message(&dead).await.expect("complete");
    dlq.dispose().await.expect("dispose");
    client.dispose().await.expect("dispose client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_closed_unsettled_gives_the_message_back() {
    let (fake, conn) = start().await;
    conn.request_sink()
        .await
        .expect("sink")
        .submit(&ChatRequest::new(StreamKey::new("s", "m"), "hello"))
        .await
        .expect("submit");
    let mut client = raw_client(&fake).await;
    let mut receiver = client
        .create_receiver_for_subscription("user-messages", "worker-service", Default::default())
        .await
        .expect("receiver");
    let first = receiver
        .receive_message_with_max_wait_time(Duration::from_secs(5))
        .await
        .expect("receive")
        .expect("a message");
    assert_eq!(first.delivery_count(), Some(1));
    receiver.dispose().await.expect("close without settling");
    let source = conn.request_source().await.expect("source");
    let again = source
        .recv_timeout(WAIT)
        .await
        .expect("recv")
        .expect("redelivered");
    assert_eq!(
        again.request.as_ref().expect("decodes").last_user_text(),
        "hello"
    );
    assert_eq!(again.attempt, 2, "the delivery count went up");
    again.acker.ack().await.expect("ack");
    client.dispose().await.expect("dispose client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_with_requeue_redelivers_with_a_higher_attempt() {
    let (_fake, conn) = start().await;
    let sink = conn.request_sink().await.expect("sink");
    sink.submit(&ChatRequest::new(StreamKey::new("s", "m"), "again"))
        .await
        .expect("submit");
    let source = conn.request_source().await.expect("source");
    let d = source
        .recv_timeout(WAIT)
        .await
        .expect("recv")
        .expect("delivery");
    assert_eq!(d.attempt, 1);
    d.acker.nack(true).await.expect("abandon");
    let d = source
        .recv_timeout(WAIT)
        .await
        .expect("recv")
        .expect("redelivery");
    assert_eq!(d.attempt, 2);
    d.acker.ack().await.expect("ack");
    let none = source
        .recv_timeout(Duration::from_millis(500))
        .await
        .expect("recv");
    assert!(none.is_none(), "an acked request is not delivered again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiving_with_a_maximum_wait_returns_when_idle() {
    let (_fake, conn) = start().await;
    let source = conn.request_source().await.expect("source");
    let started = Instant::now();
    let got = source
        .recv_timeout(Duration::from_millis(300))
        .await
        .expect("recv");
    assert!(got.is_none(), "nothing was sent");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "returned after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_arrives_whole_and_in_order() {
    let (_fake, conn) = start().await;
    let sink = conn.token_sink().await.expect("sink");
    let key = StreamKey::new("big", "m");
    let tokens: Vec<String> = (0..300).map(|i| format!("t{i} ")).collect();
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let expected = stream_of(&key, &refs);
    let source = conn.token_source();
    let reader = tokio::spawn({
        let key = key.clone();
        async move { collect(&source, &key).await }
    });
    sink.publish(&Destination::default(), &expected)
        .await
        .expect("publish");
    assert_eq!(reader.await.expect("reader"), expected);
}
