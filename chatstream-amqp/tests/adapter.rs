//! Adapter behaviour on the real RabbitMQ beyond the conformance suite: escaping, dead-letter
//! reasons, the delivery limit, reconnects, redelivery after a worker's connection is closed,
//! and batching into one broker message.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chatstream_amqp::{
    AmqpCancelChannel, AmqpConfig, AmqpConnection, AmqpRequestSink, AmqpRequestSource,
    AmqpTokenSink, AmqpTokenSource, DeadLetterQueue, TokenTopology,
};
use chatstream_core::testkit::backends::GatedBackend;
use chatstream_core::testkit::Harness;
use chatstream_core::{
    meta, ChatRequest, ClientEvent, ClientStream, FinishReason, Gateway, MessageSource,
    RequestSink, StreamEvent, StreamKey, TokenEnvelope, TokenSink, TokenSource, Worker,
    WorkerHandle,
};
use common::{close_connection_server_side, connect_or_skip, eventually, test_config, AmqpHarness};
use futures::StreamExt;
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

const WAIT: Duration = Duration::from_secs(20);

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {WAIT:?}"))
}

fn key(tag: &str) -> StreamKey {
    let id = uuid::Uuid::new_v4().simple().to_string();
    StreamKey::new(format!("{tag}-{}", &id[..8]), format!("m-{}", &id[8..16]))
}

fn run(key: &StreamKey, texts: &[&str]) -> Vec<TokenEnvelope> {
    let mut out: Vec<TokenEnvelope> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| TokenEnvelope::new(key.clone(), 1, i as u64, StreamEvent::token(*t)))
        .collect();
    let end = StreamEvent::End {
        finish_reason: FinishReason::Stop,
        usage: None,
    };
    out.push(TokenEnvelope::new(key.clone(), 1, texts.len() as u64, end));
    out
}

/// A plain queue of the test's own, bound to `exchange` with `binding` (if any).
async fn raw_queue(
    conn: &AmqpConnection,
    exchange: Option<(&str, &str)>,
) -> (lapin::Channel, String) {
    let url = conn.config().normalized_url();
    let raw = lapin::Connection::connect(&url, Default::default())
        .await
        .expect("raw connection");
    let ch = raw.create_channel().await.expect("channel");
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare("".into(), options, FieldTable::default())
        .await
        .expect("declare");
    let name = q.name().to_string();
    if let Some((ex, binding)) = exchange {
        ch.queue_bind(
            name.as_str().into(),
            ex.into(),
            binding.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    }
    drop(raw); // the channel keeps the connection open
    (ch, name)
}

async fn message_count(ch: &lapin::Channel, queue: &str) -> u32 {
    let options = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), options, FieldTable::default())
        .await
        .expect("passive declare")
        .message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_a_retryable_error() {
    let mut config = AmqpConfig::default();
    config.url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
    let err = AmqpConnection::connect(config)
        .await
        .expect_err("nothing listens on port 1");
    assert!(err.is_retryable(), "{err}");
    assert!(
        !err.to_string().contains("guest:guest"),
        "the password leaked: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_characters_in_keys_never_act_as_wildcards() {
    let config = test_config(TokenTopology::Topic);
    let Some(conn) = connect_or_skip(&config).await else {
        return;
    };
    let sink = AmqpTokenSink::new(&conn).await.expect("sink");
    let source = AmqpTokenSource::new(&conn).await.expect("source");
    let wild = StreamKey::new("s.*", "#");
    let mut sub = source.subscribe(&wild, None).await.expect("subscribe");
    let dest = sink.destination(&ChatRequest::new(wild.clone(), "x"));
    // Keys a wildcard binding `s.*.#` would also match.
    for other in [
        StreamKey::new("s.x", "m"),
        StreamKey::new("s", "x.y"),
        StreamKey::new("s.*", "x"),
    ] {
        sink.publish(&dest, &run(&other, &["not yours"]))
            .await
            .expect("publish other");
    }
    sink.publish(&dest, &run(&wild, &["mine"]))
        .await
        .expect("publish own");
    let mut got = Vec::new();
    while let Some(env) = within("own envelopes", sub.next()).await {
        got.push(env.expect("envelope"));
    }
    assert!(
        got.iter().all(|e| e.key == wild),
        "another stream leaked in: {got:?}"
    );
    assert_eq!(got.len(), 2, "token and End: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_carry_the_reason_and_the_original_headers() {
    let Some(h) = AmqpHarness::new(test_config(TokenTopology::ReplyTo)).await else {
        return;
    };
    let mut req = ChatRequest::new(key("dl"), "poison");
    req.metadata
        .insert(meta::REPLY_TO.into(), "some-gateway".into());
    h.sink().await.submit(&req).await.expect("submit");
    let (_conn, source) = h.own_source().await;
    let d = within("delivery", source.recv())
        .await
        .expect("recv")
        .expect("some");
    d.acker
        .dead_letter("the model refused: policy")
        .await
        .expect("dead-letter");
    let dlq = DeadLetterQueue::new(&h.conn).await.expect("dlq");
    let dead = dlq.take(10).await.expect("take");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].reason, "the model refused: policy");
    assert_eq!(
        dead[0].queue.as_deref(),
        Some(h.config.request_queue.as_str())
    );
    assert_eq!(dead[0].attempt, Some(1));
    let back =
        chatstream_core::wire::seed000::decode_request(&dead[0].body).expect("original body");
    assert_eq!(back.key, req.key);
    assert_eq!(
        back.metadata.get(meta::REPLY_TO).map(String::as_str),
        Some("some-gateway")
    );
    let again = tokio::time::timeout(Duration::from_millis(300), source.recv()).await;
    assert!(
        again.is_err(),
        "a dead-lettered request was delivered again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_keeps_failing_stops_at_the_delivery_limit() {
    let mut config = test_config(TokenTopology::ReplyTo);
    config.max_deliveries = 2;
    let Some(h) = AmqpHarness::new(config).await else {
        return;
    };
    let req = ChatRequest::new(key("limit"), "crash me");
    h.sink().await.submit(&req).await.expect("submit");
    let (_conn, source) = h.own_source().await;
    for attempt in 1..=2 {
        let d = within("delivery", source.recv())
            .await
            .expect("recv")
            .expect("some");
        assert_eq!(d.attempt, attempt, "attempts count every delivery");
        d.acker.nack(true).await.expect("requeue");
    }
    let third = tokio::time::timeout(Duration::from_millis(500), source.recv()).await;
    assert!(third.is_err(), "delivered past the limit");
    let dead = within("dead letter", async {
        loop {
            let d = h.dead_letters().await.expect("dead letters");
            if !d.is_empty() {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(dead[0].1.contains("delivery limit"), "{:?}", dead[0].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_and_source_reconnect_after_the_server_closes_the_connection() {
    let config = test_config(TokenTopology::ReplyTo);
    let Some(conn) = connect_or_skip(&config).await else {
        return;
    };
    let sink = AmqpRequestSink::new(&conn).await.expect("sink");
    let source = AmqpRequestSource::new(&conn).await.expect("source");
    let first = ChatRequest::new(key("before"), "one");
    sink.submit(&first).await.expect("submit");
    let d = within("first", source.recv())
        .await
        .expect("recv")
        .expect("some");
    d.acker.ack().await.expect("ack");

    if !close_connection_server_side(conn.name()) {
        eprintln!("skipping: rabbitmqctl could not close the connection");
        return;
    }
    let probe = conn.clone();
    eventually("the client noticing the close", WAIT, || {
        let c = probe.clone();
        async move { !c.is_connected().await }
    })
    .await;
    let second = ChatRequest::new(key("after"), "two");
    within("submit after reconnect", sink.submit(&second))
        .await
        .expect("submit reconnects");
    let d = within("delivery after reconnect", source.recv())
        .await
        .expect("recv")
        .expect("some");
    assert_eq!(d.request.as_ref().expect("decodes").key, second.key);
    d.acker.ack().await.expect("ack on the new channel");
    assert!(conn.is_connected().await);
}

async fn worker_on_own_connection(
    config: &AmqpConfig,
    backend: GatedBackend,
) -> (AmqpConnection, WorkerHandle) {
    let conn = AmqpConnection::connect(config.clone())
        .await
        .expect("worker connection");
    let handle = Worker::builder(
        Arc::new(AmqpRequestSource::new(&conn).await.expect("source")),
        Arc::new(AmqpTokenSink::new(&conn).await.expect("sink")),
        Arc::new(backend),
    )
    .cancels(Arc::new(
        AmqpCancelChannel::new(&conn).await.expect("cancels"),
    ))
    .build()
    .spawn();
    (conn, handle)
}

/// Submits a request through a gateway of the harness, reads it to its first token, then
/// closes `worker_conn` server-side. `None` when rabbitmqctl could not close it (skip).
async fn cut_mid_stream(
    h: &AmqpHarness,
    worker_conn: &AmqpConnection,
    tag: &str,
) -> Option<(ClientStream, Vec<ClientEvent>)> {
    let gateway = Gateway::builder(
        h.sink().await,
        Arc::new(AmqpTokenSource::new(&h.conn).await.expect("source")),
    )
    .build();
    let mut stream = gateway
        .submit(ChatRequest::new(key(tag), "hi"))
        .await
        .expect("submit");
    let mut events = Vec::new();
    while !events.iter().any(|e| matches!(e, ClientEvent::Envelope(env) if matches!(env.event, StreamEvent::Token { .. }))) {
        events.push(within("first tokens", stream.next()).await.expect("stream ended early"));
    }
    if !close_connection_server_side(worker_conn.name()) {
        eprintln!("skipping: rabbitmqctl could not close the connection");
        return None;
    }
    Some((stream, events))
}

/// The answer's text as a UI shows it: dropped at each reset; a fault fails the test.
fn text_after_resets(events: &[ClientEvent]) -> String {
    let mut text = String::new();
    for e in events {
        match e {
            ClientEvent::Reset { .. } => text.clear(),
            ClientEvent::Envelope(env) => {
                if let StreamEvent::Token { text: t } = &env.event {
                    text.push_str(t);
                }
            }
            ClientEvent::Fault(f) => panic!("fault: {f:?}"),
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_redelivered_when_its_workers_connection_is_closed_mid_stream() {
    let Some(h) = AmqpHarness::new(test_config(TokenTopology::ReplyTo)).await else {
        return;
    };
    let stuck = GatedBackend::new(6, 3);
    let (worker_conn, first) = worker_on_own_connection(&h.config, stuck.clone()).await;
    let Some((mut stream, mut events)) = cut_mid_stream(&h, &worker_conn, "crash").await else {
        return;
    };
    let probe = worker_conn.clone();
    eventually("the worker noticing the close", WAIT, || {
        let c = probe.clone();
        async move { !c.is_connected().await }
    })
    .await;
    // The broker requeued the request when the connection went; stop the first worker for
    // good (a worker that lives on would reconnect, compete for the redelivery, and go on
    // publishing its first attempt on the new connection).
    first.abort();
    let good = GatedBackend::new(6, 6);
    let (_conn2, second) = worker_on_own_connection(&h.config, good.clone()).await;
    while let Some(ev) = within("the redelivered answer", stream.next()).await {
        events.push(ev);
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClientEvent::Reset { attempt } if *attempt >= 2)),
        "no reset before the new attempt: {events:?}"
    );
    let text = text_after_resets(&events);
    assert_eq!(text, good.answer(), "the whole answer of the new attempt");
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_lives_on_stops_the_generation_the_broker_took_back() {
    let Some(h) = AmqpHarness::new(test_config(TokenTopology::ReplyTo)).await else {
        return;
    };
    // 6 tokens, the first 3 free, the rest when the test releases them.
    let backend = GatedBackend::new(6, 3);
    let (worker_conn, worker) = worker_on_own_connection(&h.config, backend.clone()).await;
    let Some((mut stream, mut events)) = cut_mid_stream(&h, &worker_conn, "lost").await else {
        return;
    };
    // The same worker reconnects and gets the redelivery (attempt 2), while its first
    // generation waits at the gate: that one must stop by itself, not hold its slot and go
    // on publishing attempt 1 once the gate opens.
    eventually("the first generation stopping", WAIT, || {
        let lost = worker.stats().lost;
        async move { lost == 1 }
    })
    .await;
    backend.release(3);
    while let Some(ev) = within("the redelivered answer", stream.next()).await {
        events.push(ev);
    }
    let text = text_after_resets(&events);
    assert_eq!(
        text,
        backend.answer(),
        "the whole answer of the new attempt"
    );
    let stats = worker.shutdown().await;
    assert_eq!(
        (stats.received, stats.completed, stats.lost),
        (2, 1, 1),
        "one delivery lost with the connection, its redelivery answered once: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_for_one_gateway_is_one_broker_message() {
    let config = test_config(TokenTopology::ReplyTo);
    let Some(conn) = connect_or_skip(&config).await else {
        return;
    };
    let sink = AmqpTokenSink::new(&conn).await.expect("sink");
    let (ch, queue) = raw_queue(&conn, None).await;
    let keys: Vec<StreamKey> = (0..5).map(|i| key(&format!("b{i}"))).collect();
    let mut batch = Vec::new();
    for i in 0..9 {
        for k in &keys {
            batch.push(TokenEnvelope::new(
                k.clone(),
                1,
                i,
                StreamEvent::token(format!("t{i} ")),
            ));
        }
    }
    let mut req = ChatRequest::new(keys[0].clone(), "x");
    req.metadata = BTreeMap::from([(meta::REPLY_TO.to_owned(), queue.clone())]);
    sink.publish(&sink.destination(&req), &batch)
        .await
        .expect("publish");
    assert_eq!(
        message_count(&ch, &queue).await,
        1,
        "45 envelopes, one message"
    );

    // The same through a gateway's source: each stream gets exactly its own envelopes.
    let source = AmqpTokenSource::new(&conn).await.expect("source");
    let mut subs = Vec::new();
    for k in &keys {
        subs.push(source.subscribe(k, None).await.expect("subscribe"));
    }
    req.metadata.insert(
        meta::REPLY_TO.to_owned(),
        source.reply_address().expect("reply-to"),
    );
    let mut all = batch.clone();
    for k in &keys {
        all.extend(run(k, &[]).into_iter().map(|mut e| {
            e.seq = 9;
            e
        }));
    }
    sink.publish(&sink.destination(&req), &all)
        .await
        .expect("publish");
    for (k, sub) in keys.iter().zip(subs) {
        let got: Vec<TokenEnvelope> =
            within("a stream", sub.map(|r| r.expect("ok")).collect()).await;
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|e| &e.key == k));
        assert_eq!(
            got.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_batches_are_one_message_per_stream_or_per_envelope() {
    for (pack, expected) in [(true, 3), (false, 12)] {
        let mut config = test_config(TokenTopology::Topic);
        config.pack_runs = pack;
        let Some(conn) = connect_or_skip(&config).await else {
            return;
        };
        let sink = AmqpTokenSink::new(&conn).await.expect("sink");
        let (ch, queue) = raw_queue(&conn, Some((&config.token_exchange, "#"))).await;
        let batch: Vec<TokenEnvelope> = (0..3)
            .flat_map(|i| run(&key(&format!("p{i}")), &["a", "b", "c"]))
            .collect();
        let dest = sink.destination(&ChatRequest::new(batch[0].key.clone(), "x"));
        sink.publish(&dest, &batch).await.expect("publish");
        assert_eq!(
            message_count(&ch, &queue).await,
            expected,
            "pack_runs = {pack}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed003_client_publishing_raw_json_reads_the_answer_from_its_response_queue() {
    let mut config = test_config(TokenTopology::PerRequestQueue);
    config.request_format = chatstream_amqp::RequestFormat::Seed003;
    let Some(h) = AmqpHarness::new(config).await else {
        return;
    };
    let backend = chatstream_core::ScriptedBackend::default();
    let worker = Worker::builder(
        Arc::new(h.own_source().await.1),
        Arc::new(AmqpTokenSink::new(&h.conn).await.expect("sink")),
        Arc::new(backend.clone()),
    )
    .build()
    .spawn();

    // As the seed's pika client: plain queue (no x-expires: the worker's own declaration is
    // refused and it publishes all the same), plain publish, auto-ack consume.
    let uid = uuid::Uuid::new_v4().to_string();
    let queue = format!("response_{uid}");
    let url = h.config.normalized_url();
    let client = lapin::Connection::connect(&url, Default::default())
        .await
        .expect("client");
    let ch = client.create_channel().await.expect("channel");
    let options = QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    ch.queue_declare(queue.as_str().into(), options, FieldTable::default())
        .await
        .expect("declare");
    let body = format!(r#"{{"key": "{uid}", "message": "What is the capital of France?"}}"#);
    ch.basic_publish(
        "".into(),
        h.config.request_queue.as_str().into(),
        Default::default(),
        body.as_bytes(),
        Default::default(),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");
    let options = lapin::options::BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            options,
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut text = String::new();
    loop {
        let d = within("a response message", consumer.next())
            .await
            .expect("open")
            .expect("ok");
        if d.properties.kind().as_ref().map(|k| k.as_str()) == Some("end") {
            break;
        }
        text.push_str(std::str::from_utf8(&d.data).expect("utf-8"));
    }
    let request =
        chatstream_core::wire::seed003::decode_request(body.as_bytes()).expect("seed 003");
    assert_eq!(
        text,
        backend.answer(&request),
        "the raw bodies are the whole answer"
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_request_worker_answers_a_reply_to_gateway_in_its_queue() {
    let config = test_config(TokenTopology::PerRequestQueue);
    let Some(h) = AmqpHarness::new(config.clone()).await else {
        return;
    };
    let backend = chatstream_core::ScriptedBackend::default();
    let worker = Worker::builder(
        Arc::new(h.own_source().await.1),
        Arc::new(AmqpTokenSink::new(&h.conn).await.expect("sink")),
        Arc::new(backend.clone()),
    )
    .build()
    .spawn();
    // The same names, but the gateway reads its own reply queue.
    let mut gw_config = config;
    gw_config.token_topology = TokenTopology::ReplyTo;
    let gw_conn = AmqpConnection::connect(gw_config).await.expect("gateway");
    let gateway = Gateway::builder(
        Arc::new(AmqpRequestSink::new(&gw_conn).await.expect("request sink")),
        Arc::new(AmqpTokenSource::new(&gw_conn).await.expect("token source")),
    )
    .build();

    let uid = uuid::Uuid::new_v4().to_string();
    let request = ChatRequest::new(StreamKey::new(uid.as_str(), uid.as_str()), "hi");
    let mut stream = within("submit", gateway.submit(request.clone()))
        .await
        .expect("submit");
    let mut text = String::new();
    while let Some(event) = within("an envelope", stream.next()).await {
        match event {
            ClientEvent::Envelope(env) => {
                if let StreamEvent::Token { text: t } = &env.event {
                    text.push_str(t);
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(text, backend.answer(&request));

    // Nothing went to a response queue: it was never declared.
    let url = h.config.normalized_url();
    let raw = lapin::Connection::connect(&url, Default::default())
        .await
        .expect("raw connection");
    let ch = raw.create_channel().await.expect("channel");
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let declared = ch
        .queue_declare(
            format!("response_{uid}").as_str().into(),
            passive,
            FieldTable::default(),
        )
        .await;
    assert!(declared.is_err(), "response_{uid} should not exist");
    worker.shutdown().await;
}
