//! Worker death mid-answer: `chaos_worker` processes are SIGKILLed while they stream and
//! replaced; the broker redelivers what they held (RabbitMQ at once, Redis after
//! `claim_idle`), another worker answers it with a higher attempt, and the gateway sends a
//! reset before that attempt's tokens. Every client must end with exactly the scripted
//! answer: none lost, none garbled.

use std::sync::Arc;
use std::time::Duration;

use chatstream::amqp::{AmqpConnection, AmqpRequestSink, AmqpTokenSource};
use chatstream::redis::{BusConfig, QueueConfig, RedisClient, RedisRequestSink, RedisTokenSource};
use chatstream::{ChatRequest, DynRequestSink, DynTokenSource, Gateway, StreamKey};

use crate::common::*;

/// A gateway in the test process on the namespace the workers use, and what keeps the
/// namespace alive (and cleans it up).
pub struct TestGateway {
    pub gateway: Gateway,
    _amqp: Option<AmqpConnection>,
    _cleanup: Option<RedisCleanup>,
}

pub async fn gateway(kind: Kind, name: &str) -> TestGateway {
    let (requests, tokens, amqp, cleanup): (Arc<DynRequestSink>, Arc<DynTokenSource>, _, _) =
        match kind {
            Kind::Amqp => {
                let conn = AmqpConnection::connect(amqp_config(name))
                    .await
                    .unwrap_or_else(|e| panic!("RabbitMQ: {e}"));
                let requests = AmqpRequestSink::new(&conn).await.expect("test setup");
                let tokens = AmqpTokenSource::new(&conn).await.expect("test setup");
                (Arc::new(requests), Arc::new(tokens), Some(conn), None)
            }
            Kind::Redis => {
                let prefix = redis_prefix(name);
                let client = RedisClient::connect(&redis_url(), &prefix)
                    .await
                    .unwrap_or_else(|e| panic!("Redis: {e}"));
                let requests = RedisRequestSink::new(client.clone(), &QueueConfig::default());
                let bus = BusConfig {
                    block: Duration::from_secs(1),
                    ..BusConfig::default()
                };
                let tokens = RedisTokenSource::new(client, bus);
                (
                    Arc::new(requests),
                    Arc::new(tokens),
                    None,
                    Some(RedisCleanup(prefix)),
                )
            }
        };
    TestGateway {
        gateway: Gateway::builder(requests, tokens).build(),
        _amqp: amqp,
        _cleanup: cleanup,
    }
}

/// A run: `requests` requests over `workers` worker processes, `kills` SIGKILLs (one
/// every `every`, each victim replaced at once).
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub requests: usize,
    pub workers: usize,
    pub concurrency: usize,
    pub token_delay_ms: u64,
    pub kills: usize,
    pub every: Duration,
}

pub async fn run(kind: Kind, plan: Run) {
    if !broker_up(kind).await {
        return;
    }
    let ns = namespace(&format!("death-{}", kind.env()));
    let name = ns.name.clone();
    let spec = Spec {
        token_delay_ms: plan.token_delay_ms,
        concurrency: plan.concurrency,
        ..Spec::worker(kind, &name)
    };
    let mut workers = Vec::new();
    for _ in 0..plan.workers {
        workers.push(spec.start().await);
    }
    let gw = gateway(kind, &name).await;
    let started = tokio::time::Instant::now();

    let mut clients = tokio::task::JoinSet::new();
    for i in 0..plan.requests {
        let request = ChatRequest::new(
            StreamKey::new(format!("s{i}"), format!("m{i}")),
            format!("question {i}"),
        );
        let stream = within("submit", STEP, gw.gateway.submit(request.clone()))
            .await
            .unwrap_or_else(|e| panic!("submit: {e}"));
        clients.spawn(async move {
            let outcome = follow(stream, Duration::from_secs(300)).await;
            (request, outcome)
        });
    }

    // Kill while answers are being streamed: the oldest worker goes, a replacement starts
    // at once (in the background, so kills keep their pace while it connects).
    let mut kills = 0;
    let mut tally = Tally::default();
    let mut starting = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + plan.every, plan.every);
    while kills < plan.kills {
        tokio::select! {
            done = clients.join_next() => match done {
                Some(Ok((request, outcome))) => tally.add(&request, &outcome),
                Some(Err(e)) => panic!("client task: {e}"),
                None => break,
            },
            Some(started) = starting.join_next() => {
                workers.push(started.unwrap_or_else(|e| panic!("worker start: {e}")));
            }
            _ = tick.tick() => {
                if workers.is_empty() {
                    continue; // every worker is still starting
                }
                workers.remove(0).kill().await;
                kills += 1;
                let spec = spec.clone();
                starting.spawn(async move { spec.start().await });
            }
        }
    }
    while let Some(done) = clients.join_next().await {
        let (request, outcome) = done.unwrap_or_else(|e| panic!("client task: {e}"));
        tally.add(&request, &outcome);
    }
    let took = started.elapsed();
    eprintln!(
        "worker death on {}: {} requests, {} kills, {} complete, {} lost, {} garbled, {} resets, {:.1} s",
        kind.env(),
        plan.requests,
        kills,
        tally.complete,
        tally.lost,
        tally.garbled,
        tally.resets,
        took.as_secs_f64()
    );
    assert_eq!(
        (tally.complete, tally.lost, tally.garbled),
        (plan.requests, 0, 0),
        "{:#?}",
        &tally.problems[..tally.problems.len().min(10)]
    );
    assert_eq!(
        kills, plan.kills,
        "the run ended before every kill was made"
    );
    // Nothing is left behind in the gateway.
    within("hubs to retire", STEP, async {
        while gw.gateway.active_streams() > 0 || gw.gateway.metrics().clients_active() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

const SHORT: Run = Run {
    requests: 50,
    workers: 3,
    concurrency: 4,
    token_delay_ms: 40,
    kills: 5,
    every: Duration::from_millis(400),
};

const LONG: Run = Run {
    requests: 500,
    workers: 4,
    concurrency: 8,
    token_delay_ms: 60,
    kills: 50,
    every: Duration::from_millis(200),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_workers_on_rabbitmq_lose_and_garble_nothing() {
    run(Kind::Amqp, SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_workers_on_redis_lose_and_garble_nothing() {
    run(Kind::Redis, SHORT).await;
}

/// The long variant: `cargo test --test faults -- --ignored --test-threads=1 fifty_kills`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about a minute; run with --ignored (see RELIABILITY.md)"]
async fn fifty_kills_during_500_requests_on_rabbitmq() {
    run(Kind::Amqp, LONG).await;
}

/// The long variant: `cargo test --test faults -- --ignored --test-threads=1 fifty_kills`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about a minute; run with --ignored (see RELIABILITY.md)"]
async fn fifty_kills_during_500_requests_on_redis() {
    run(Kind::Redis, LONG).await;
}
