//! The stream topology on the real RabbitMQ, beyond the conformance suite: any gateway
//! instance serves any stream from its start, from a seq, or live, during and after
//! generation; an instance started after the end still finds it; bad resumes answer at once;
//! the tail consumer survives a cut connection without losing or repeating an envelope.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chatstream_amqp::{
    AmqpConfig, AmqpConnection, AmqpRequestSink, AmqpRequestSource, AmqpTokenSink, AmqpTokenSource,
    TokenTopology,
};
use chatstream_core::{
    ChatRequest, Error, Gateway, ScriptedBackend, StreamEvent, StreamKey, StreamStatus,
    TokenEnvelope, TokenSource, Worker, WorkerConfig, WorkerHandle,
};
use common::{close_connection_server_side, connect_or_skip, test_config};
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(30);

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {WAIT:?}"))
}

fn key(tag: &str) -> StreamKey {
    let id = uuid::Uuid::new_v4().simple().to_string();
    StreamKey::new(format!("{tag}-{}", &id[..8]), format!("m-{}", &id[8..16]))
}

/// A worker process of its own: request source, token sink and connection.
async fn worker(config: &AmqpConfig, delay: Duration) -> (AmqpConnection, WorkerHandle) {
    let conn = AmqpConnection::connect(config.clone())
        .await
        .expect("worker connection");
    let handle = Worker::builder(
        Arc::new(AmqpRequestSource::new(&conn).await.expect("source")),
        Arc::new(AmqpTokenSink::new(&conn).await.expect("sink")),
        Arc::new(ScriptedBackend::default().with_delay(delay)),
    )
    .config(WorkerConfig {
        status_events: false,
        ..WorkerConfig::default()
    })
    .build()
    .spawn();
    (conn, handle)
}

/// A gateway instance of its own: its connection and token source.
async fn instance(config: &AmqpConfig, name: &str) -> (AmqpConnection, Arc<AmqpTokenSource>) {
    let mut config = config.clone();
    config.connection_name = format!("{}-{name}", config.connection_name);
    let conn = AmqpConnection::connect(config)
        .await
        .expect("gateway connection");
    let source = Arc::new(AmqpTokenSource::new(&conn).await.expect("token source"));
    (conn, source)
}

/// Every envelope of a subscription, failing on any error.
async fn read_all(
    source: &AmqpTokenSource,
    key: &StreamKey,
    after: Option<u64>,
) -> Vec<TokenEnvelope> {
    within("the stream's end", async {
        source
            .subscribe(key, after)
            .await
            .expect("subscribe")
            .map(|r| r.unwrap_or_else(|e| panic!("stream failed: {e}")))
            .collect()
            .await
    })
    .await
}

fn text(envs: &[TokenEnvelope]) -> String {
    envs.iter()
        .filter_map(|e| match &e.event {
            StreamEvent::Token { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_instance_serves_a_stream_during_and_after_generation() {
    let config = test_config(TokenTopology::Stream);
    let Some(conn) = connect_or_skip(&config).await else {
        return;
    };
    let (_wc, worker) = worker(&config, Duration::from_millis(20)).await;
    let (_ca, a) = instance(&config, "a").await;
    let (_cb, b) = instance(&config, "b").await;
    let gateway = Gateway::builder(
        Arc::new(AmqpRequestSink::new(&conn).await.expect("request sink")),
        a.clone(),
    )
    .build();
    let key = key("any");
    let request = ChatRequest::new(key.clone(), "tell me everything");
    let want = ScriptedBackend::default().answer(&request);
    let mut on_a = gateway.submit(request).await.expect("submit");
    // Read a few envelopes on A, then open B mid-answer from the start and after seq 2.
    let mut seen = 0;
    while seen < 3 {
        match within("a token on A", on_a.next()).await {
            Some(chatstream_core::ClientEvent::Envelope(_)) => seen += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let (from_start, after_two) =
        tokio::join!(read_all(&b, &key, None), read_all(&b, &key, Some(2)));
    assert_eq!(text(&from_start), want, "B from the start, mid-answer");
    assert_eq!(from_start[0].seq, 0);
    assert!(from_start.last().is_some_and(|e| e.event.is_end()));
    assert_eq!(
        after_two,
        from_start
            .iter()
            .filter(|e| e.seq > 2)
            .cloned()
            .collect::<Vec<_>>(),
        "B after seq 2 gets exactly what followed"
    );
    while within("A's end", on_a.next()).await.is_some() {}

    // An instance started after the end learns the stream from the retained log.
    let (_cc, c) = instance(&config, "c").await;
    let status = within("status on C", c.status(&key)).await.expect("status");
    assert!(matches!(status, StreamStatus::Ended { .. }), "{status:?}");
    let late = read_all(&c, &key, None).await;
    assert_eq!(
        late, from_start,
        "an instance started after the end replays the whole answer"
    );
    let last = late.last().map(|e| e.seq).unwrap_or_default();
    let again = read_all(&c, &key, Some(last)).await;
    assert_eq!(
        again.len(),
        1,
        "a resume at the End gets the End again: {again:?}"
    );
    assert!(again[0].event.is_end());
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_resumes_are_answered_at_once() {
    let config = test_config(TokenTopology::Stream);
    let Some(conn) = connect_or_skip(&config).await else {
        return;
    };
    let (_wc, worker) = worker(&config, Duration::from_millis(200)).await;
    let (_ca, a) = instance(&config, "a").await;
    let gateway = Gateway::builder(
        Arc::new(AmqpRequestSink::new(&conn).await.expect("request sink")),
        a.clone(),
    )
    .build();

    let unknown = key("unknown");
    let err = within("unknown stream", a.subscribe(&unknown, Some(3)))
        .await
        .err()
        .expect("a resume of a stream the log never held fails");
    assert!(matches!(err, Error::HistoryLost { .. }), "{err}");
    let status = within("status", a.status(&unknown)).await.expect("status");
    assert_eq!(status, StreamStatus::NotFound);

    let open = key("open");
    let mut stream = gateway
        .submit(ChatRequest::new(open.clone(), "slowly"))
        .await
        .expect("submit");
    let _first = within("first envelope", stream.next()).await;
    let status = within("status", a.status(&open)).await.expect("status");
    assert_eq!(status, StreamStatus::Open);
    let err = within("future id", a.subscribe(&open, Some(1_000)))
        .await
        .err()
        .expect("a Last-Event-ID ahead of the stream is refused");
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    let err = within(
        "future attempt",
        a.subscribe(&open, Some(TokenEnvelope::seq_base(7))),
    )
    .await
    .err()
    .expect("an id of an attempt that never ran is refused");
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    drop(stream);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_survives_a_cut_connection_without_a_gap() {
    let config = test_config(TokenTopology::Stream);
    let Some(conn) = connect_or_skip(&config).await else {
        return;
    };
    let (_wc, worker) = worker(&config, Duration::from_millis(30)).await;
    let (gw_conn, a) = instance(&config, "cut").await;
    let gateway = Gateway::builder(
        Arc::new(AmqpRequestSink::new(&conn).await.expect("request sink")),
        a.clone(),
    )
    .build();
    let key = key("cut");
    let request = ChatRequest::new(key.clone(), "a long one").stateless();
    let want = ScriptedBackend::default().answer(&request);
    let mut stream = gateway.submit(request).await.expect("submit");
    let mut got = String::new();
    let mut cut = false;
    let mut tokens = 0;
    while let Some(event) = within("the next event", stream.next()).await {
        match event {
            chatstream_core::ClientEvent::Envelope(env) => {
                if let StreamEvent::Token { text } = &env.event {
                    got.push_str(text);
                    tokens += 1;
                }
            }
            other => panic!("the client saw {other:?} across the cut"),
        }
        if tokens == 3 && !cut {
            cut = close_connection_server_side(gw_conn.name());
            assert!(cut, "rabbitmqctl could not close the gateway's connection");
        }
    }
    assert_eq!(got, want, "exactly the answer, no gap and no repeat");
    worker.shutdown().await;
}

/// On the live-only opt-in topologies, a second gateway instance reading a stream another
/// one relays never hands its client part of the answer as if it were whole: on reply-to
/// (the envelopes go to the submitting gateway's queue) it says `history lost` at once; on
/// topic (it sees the envelopes from the moment it binds) it says `history lost` at the
/// first envelope, which is not the stream's first. The submitting instance's client gets
/// the whole answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_only_topologies_never_give_a_second_instance_part_of_an_answer() {
    for topology in [TokenTopology::ReplyTo, TokenTopology::Topic] {
        let config = test_config(topology);
        let Some(conn) = connect_or_skip(&config).await else {
            return;
        };
        let (_wc, worker) = worker(&config, Duration::from_millis(20)).await;
        let (_ca, a) = instance(&config, "a").await;
        let (_cb, b) = instance(&config, "b").await;
        let requests = Arc::new(AmqpRequestSink::new(&conn).await.expect("request sink"));
        let on_a_gateway = Gateway::builder(requests.clone(), a).build();
        let on_b_gateway = Gateway::builder(requests, b).build();
        let key = key("live-only");
        let request = ChatRequest::new(key.clone(), "tell me everything");
        let want = ScriptedBackend::default().answer(&request);
        let mut on_a = on_a_gateway.submit(request).await.expect("submit");
        let mut text_a = String::new();
        let mut seen = 0;
        while seen < 3 {
            match within("a token on A", on_a.next()).await {
                Some(chatstream_core::ClientEvent::Envelope(env)) => {
                    if let StreamEvent::Token { text } = &env.event {
                        text_a.push_str(text);
                    }
                    seen += 1;
                }
                other => panic!("{topology:?}: unexpected {other:?}"),
            }
        }
        let on_b: Vec<chatstream_core::ClientEvent> = within(
            "B's answer",
            on_b_gateway
                .subscribe(&key, None)
                .await
                .expect("subscribe on B")
                .collect(),
        )
        .await;
        assert!(
            matches!(
                on_b.as_slice(),
                [chatstream_core::ClientEvent::Fault(
                    chatstream_core::Fault::HistoryLost
                )]
            ),
            "{topology:?}: B must say history lost, not give part of the answer: {on_b:?}"
        );
        while let Some(ev) = within("A's answer", on_a.next()).await {
            if let chatstream_core::ClientEvent::Envelope(env) = ev {
                if let StreamEvent::Token { text } = &env.event {
                    text_a.push_str(text);
                }
            }
        }
        assert_eq!(text_a, want, "{topology:?}: A gets the whole answer");
        worker.shutdown().await;
    }
}
