//! Broker restart under load: RabbitMQ (`rabbitmqctl stop_app` / `start_app`) and Redis
//! (`redis-cli shutdown nosave`, then started again as `.ci/run` starts it) are restarted
//! while a worker and a gateway (in this process, on the real adapters) stream answers.
//! Both reconnect by themselves; requests submitted after the restart are answered.
//!
//! On RabbitMQ the tokens travel in the stream topology, whose log is durable: every one of
//! the 20 answers cut by the restart must end whole, with at most one reset (the worker's
//! request went back to the queue with its channel and is answered again) and no error.
//! The shared Redis keeps nothing on disk, so there a cut stream may end with an error
//! event, never a hang; the Redis bus with AOF on is tested in `chatstream-redis`.
//!
//! These tests stop the shared servers every other test uses, so they are `#[ignore]`d and
//! live alone in this binary, one after the other (a lock orders them):
//!
//! ```text
//! cargo test --features amqp,redis --test broker_restart -- --ignored --test-threads=1
//! ```
#![cfg(all(unix, feature = "amqp", feature = "redis", feature = "axum"))]
#![allow(unreachable_pub)]

#[path = "../faults/common.rs"]
mod common;
#[path = "../support/mod.rs"]
mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chatstream::amqp::AmqpConnection;
use chatstream::redis::QueueConfig;
use chatstream::{
    ChatRequest, Gateway, GatewayConfig, ScriptedBackend, StreamKey, Worker, WorkerConfig,
    WorkerHandle,
};
use common::*;

/// One restart at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Longest a client may wait for the end of its stream: a hang shows up as a failure.
const CLIENT_LIMIT: Duration = Duration::from_secs(90);

fn sh(what: &str, program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{what}: {program}: {e}"));
    assert!(
        status.success(),
        "{what}: {program} {args:?} exited {status}"
    );
}

struct Pipeline {
    worker: WorkerHandle,
    gateway: Gateway,
    _cleanup: Option<RedisCleanup>,
    _conn: Option<AmqpConnection>,
}

async fn pipeline(kind: Kind, name: &str) -> Pipeline {
    let (ends, conn, cleanup) = match kind {
        Kind::Amqp => {
            let conn = AmqpConnection::connect(amqp_config(name))
                .await
                .expect("RabbitMQ");
            (Ends::amqp(&conn).await, Some(conn), None)
        }
        Kind::Redis => {
            let prefix = redis_prefix(name);
            let queue = QueueConfig {
                claim_idle: Duration::from_secs(2),
                block: Duration::from_millis(500),
                ..QueueConfig::default()
            };
            let ends = Ends::redis(&prefix, queue).await;
            (ends, None, Some(RedisCleanup(prefix)))
        }
    };
    let backend = ScriptedBackend::default().with_delay(Duration::from_millis(100));
    let worker = Worker::builder(ends.source, ends.sink, Arc::new(backend))
        .config(WorkerConfig {
            concurrency: 32,
            ..WorkerConfig::default()
        })
        .build()
        .spawn();
    let gateway = Gateway::builder(ends.requests, ends.tokens)
        .config(GatewayConfig {
            idle_timeout: Some(Duration::from_secs(60)),
            ..GatewayConfig::default()
        })
        .build();
    Pipeline {
        worker,
        gateway,
        _cleanup: cleanup,
        _conn: conn,
    }
}

/// Submits `n` requests (retrying while the broker is away) and follows them.
async fn batch(p: &Pipeline, tag: &str, n: usize) -> tokio::task::JoinSet<(ChatRequest, Outcome)> {
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..n {
        let request = ChatRequest::new(
            StreamKey::new(format!("{tag}-s{i}"), format!("{tag}-m{i}")),
            format!("question {i}"),
        );
        let stream = within("submit", STEP, async {
            loop {
                match p.gateway.submit(request.clone()).await {
                    Ok(s) => return s,
                    Err(e) => {
                        eprintln!("submit {}: {e}; retrying", request.key);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        })
        .await;
        clients.spawn(async move { (request.clone(), follow(stream, CLIENT_LIMIT).await) });
    }
    clients
}

fn restart(kind: Kind) {
    match kind {
        Kind::Amqp => {
            sh("stop RabbitMQ", "rabbitmqctl", &["stop_app"]);
            std::thread::sleep(Duration::from_secs(2));
            sh("start RabbitMQ", "rabbitmqctl", &["start_app"]);
        }
        Kind::Redis => {
            // `shutdown` closes the connection it came on: its exit status says nothing.
            let _ = Command::new("redis-cli")
                .args(["shutdown", "nosave"])
                .status();
            std::thread::sleep(Duration::from_secs(1));
            sh(
                "start Redis",
                "redis-server",
                &[
                    "--daemonize",
                    "yes",
                    "--bind",
                    "127.0.0.1",
                    "-::1",
                    "--port",
                    "6379",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    "/var/lib/redis",
                    "--logfile",
                    "/var/log/redis/ci.log",
                ],
            );
        }
    }
}

async fn restart_under_load(kind: Kind) {
    let _one = ONE_AT_A_TIME.lock().await;
    // `RUST_LOG=warn` shows what the adapters did about the outage.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    if !broker_up(kind).await {
        return;
    }
    let ns = namespace(&format!("restart-{}", kind.env()));
    let name = ns.name.clone();
    let p = pipeline(kind, &name).await;

    // Batch A is in flight when the broker goes away.
    let before = batch(&p, "a", 20).await;
    within("answers to start", STEP, async {
        while p.worker.stats().envelopes < 40 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let started = tokio::time::Instant::now();
    tokio::task::spawn_blocking(move || restart(kind))
        .await
        .expect("restart");
    eprintln!(
        "{} restarted in {:.1} s",
        kind.env(),
        started.elapsed().as_secs_f64()
    );

    // Batch B after the restart: every answer arrives whole, so both sides reconnected.
    let after = batch(&p, "b", 10).await;
    let mut tally_before = Tally::default();
    let mut cut = 0;
    let mut cut_by = None;
    let mut most_resets = 0;
    let mut errors = 0;
    for (request, outcome) in before.join_all().await {
        most_resets = most_resets.max(outcome.resets);
        errors += u32::from(outcome.fault.is_some());
        assert!(
            !outcome
                .fault
                .as_deref()
                .is_some_and(|f| f.starts_with("no end within")),
            "{}: the client hung",
            request.key
        );
        if outcome.ended {
            tally_before.add(&request, &outcome);
        } else {
            cut += 1;
            cut_by = cut_by.or(outcome.fault);
        }
    }
    let mut tally_after = Tally::default();
    for (request, outcome) in after.join_all().await {
        tally_after.add(&request, &outcome);
    }
    let reconnected = started.elapsed();
    eprintln!(
        "{}: before the restart 20 streams: {} whole ({} resets, at most {} per stream), \
         {} garbled, {} cut with an error event; after: {} of 10 whole; {:.1} s from the \
         restart to the last answer; worker {:?}; cut by {:?}",
        kind.env(),
        tally_before.complete,
        tally_before.resets,
        most_resets,
        tally_before.garbled,
        cut,
        tally_after.complete,
        reconnected.as_secs_f64(),
        p.worker.stats(),
        cut_by
    );
    assert_eq!(tally_before.garbled, 0, "{:#?}", tally_before.problems);
    assert_eq!(tally_after.complete, 10, "{:#?}", tally_after.problems);
    if kind == Kind::Amqp {
        // The token stream is durable: the cut answers go on where they were.
        assert_eq!(
            (tally_before.complete, cut),
            (20, 0),
            "every answer cut by the restart ends whole: {:#?} {cut_by:?}",
            tally_before.problems
        );
        assert!(
            most_resets <= 1,
            "at most one reset per stream, saw {most_resets}"
        );
        assert_eq!(errors, 0, "no client saw an error: {cut_by:?}");
        // The request queue is durable: every request accepted before is answered.
        within("batch A answered by the worker", STEP, async {
            while p.worker.stats().completed < 30 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the shared RabbitMQ; run alone (see RELIABILITY.md)"]
async fn rabbitmq_restart_under_load() {
    restart_under_load(Kind::Amqp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the shared Redis; run alone (see RELIABILITY.md)"]
async fn redis_restart_under_load() {
    restart_under_load(Kind::Redis).await;
}
