//! Stream keys made of what brokers treat specially — AMQP routing-key separators and
//! wildcards (`.`, `*`, `#`), Redis hash tags and key separators (`{`, `}`, `:`), path
//! parts (`/`, `..`), `%`, spaces, line breaks, non-ASCII — carried end to end on the real
//! brokers: each client gets exactly its own answer, no stream leaks into another.

use std::sync::Arc;
use std::time::Duration;

use chatstream::amqp::{AmqpConnection, TokenTopology};
use chatstream::redis::QueueConfig;
use chatstream::{ChatRequest, Gateway, ScriptedBackend, StreamKey, Worker};

use crate::common::*;

/// Pairs that collide when a key is joined or matched naively.
fn hostile_keys() -> Vec<StreamKey> {
    [
        ("a.b", "c"),
        ("a", "b.c"),
        ("*", "x"),
        ("#", "#"),
        ("a:b", "c"),
        ("a", "b:c"),
        ("x}", "{y"),
        ("../..", "etc/passwd"),
        ("%2E", "%"),
        ("line\nbreak", "data: evil\n\n"),
        ("spaced out", "ünïcødé 😀"),
    ]
    .into_iter()
    .map(|(s, m)| StreamKey::new(s, m))
    .collect()
}

async fn carry(kind: Kind) {
    if !broker_up(kind).await {
        return;
    }
    let ns = namespace(&format!("keys-{}", kind.env()));
    let name = ns.name.clone();
    let mut _cleanup = None;
    let ends = match kind {
        Kind::Amqp => {
            let mut config = amqp_config(&name);
            // The topic topology routes by the key: the one where escaping matters.
            config.token_topology = TokenTopology::Topic;
            let conn = AmqpConnection::connect(config).await.expect("test setup");
            Ends::amqp(&conn).await
        }
        Kind::Redis => {
            let prefix = redis_prefix(&name);
            _cleanup = Some(RedisCleanup(prefix.clone()));
            Ends::redis(&prefix, QueueConfig::default()).await
        }
    };
    let backend = ScriptedBackend::default().with_delay(Duration::from_millis(5));
    let worker = Worker::builder(ends.source, ends.sink, Arc::new(backend))
        .build()
        .spawn();
    let gateway = Gateway::builder(ends.requests, ends.tokens).build();

    let mut clients = tokio::task::JoinSet::new();
    for key in hostile_keys() {
        let request = ChatRequest::new(key.clone(), format!("for {key:?}"));
        let stream = within("submit", STEP, gateway.submit(request.clone()))
            .await
            .unwrap_or_else(|e| panic!("submit {key:?}: {e}"));
        clients.spawn(async move {
            let outcome = follow(stream, STEP).await;
            (request, outcome)
        });
    }
    let mut tally = Tally::default();
    while let Some(done) = clients.join_next().await {
        let (request, outcome) = done.unwrap_or_else(|e| panic!("{e}"));
        tally.add(&request, &outcome);
    }
    assert_eq!(
        (tally.complete, tally.resets),
        (hostile_keys().len(), 0),
        "{:#?}",
        tally.problems
    );
    let stats = worker.shutdown().await;
    assert_eq!(stats.completed, hostile_keys().len() as u64);
    assert_eq!(stats.dead_lettered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_stream_keys_stay_apart_on_rabbitmq_topic_routing() {
    carry(Kind::Amqp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_stream_keys_stay_apart_on_redis_streams() {
    carry(Kind::Redis).await;
}
