//! Graceful shutdown: SIGTERM to a worker process finishes its in-flight requests within
//! the grace period, or gives them back to the broker, which another worker then answers;
//! SIGTERM to a gateway process ends every open stream with an error frame and `__END__`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chatstream::{ChatRequest, ClientEvent, StreamEvent, StreamKey};
use futures::StreamExt;

use crate::common::*;
use crate::worker_death::gateway;

/// Submits `n` requests and follows them; returns once every stream has shown a token
/// (so every request is in flight on a worker), with the tasks that finish following.
async fn in_flight(
    gw: &chatstream::Gateway,
    n: usize,
) -> tokio::task::JoinSet<(ChatRequest, Outcome)> {
    let started = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..n {
        let request = ChatRequest::new(
            StreamKey::new(format!("s{i}"), format!("m{i}")),
            format!("question {i}"),
        );
        let mut stream = within("submit", STEP, gw.submit(request.clone()))
            .await
            .unwrap_or_else(|e| panic!("submit: {e}"));
        let started = started.clone();
        clients.spawn(async move {
            // Read up to the first token here, the rest in `follow`.
            let mut first = Outcome::default();
            while let Some(event) = stream.next().await {
                if let ClientEvent::Envelope(env) = &event {
                    if let StreamEvent::Token { text } = &env.event {
                        first.text.push_str(text);
                        break;
                    }
                }
            }
            started.fetch_add(1, Ordering::SeqCst);
            let mut rest = follow(stream, Duration::from_secs(120)).await;
            if rest.resets == 0 {
                rest.text.insert_str(0, &first.text);
            }
            (request, rest)
        });
    }
    within("every request in flight", STEP, async {
        while started.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    clients
}

async fn tally(mut clients: tokio::task::JoinSet<(ChatRequest, Outcome)>) -> Tally {
    let mut tally = Tally::default();
    while let Some(done) = clients.join_next().await {
        let (request, outcome) = done.unwrap_or_else(|e| panic!("client task: {e}"));
        tally.add(&request, &outcome);
    }
    tally
}

/// SIGTERM with a grace period shorter than the answers: the worker exits promptly having
/// requeued everything, and a second worker answers all of it (after a reset).
async fn requeue_on_sigterm(kind: Kind) {
    if !broker_up(kind).await {
        return;
    }
    let ns = namespace(&format!("term-{}", kind.env()));
    let name = ns.name.clone();
    let slow = Spec {
        token_delay_ms: 100,
        shutdown_grace_ms: 200,
        ..Spec::worker(kind, &name)
    };
    let first = slow.start().await;
    let gw = gateway(kind, &name).await;
    let clients = in_flight(&gw.gateway, 6).await;

    let stopped = first.terminate(Duration::from_secs(30)).await;
    let requeued = field(&stopped, "requeued");
    let completed = field(&stopped, "completed");
    assert_eq!((requeued, completed), (Some(6), Some(0)), "{stopped}");

    let second = Spec::worker(kind, &name).start().await;
    let tally = tally(clients).await;
    assert_eq!(
        (tally.complete, tally.lost, tally.garbled),
        (6, 0, 0),
        "{:#?}",
        tally.problems
    );
    assert_eq!(tally.resets, 6, "each client saw the first attempt's token");
    let stopped = second.terminate(Duration::from_secs(30)).await;
    assert_eq!(field(&stopped, "completed"), Some(6), "{stopped}");
}

/// SIGTERM with a long grace period: the worker stops taking requests but finishes the
/// ones it holds before it exits; nothing is redelivered.
async fn finish_on_sigterm(kind: Kind) {
    if !broker_up(kind).await {
        return;
    }
    let ns = namespace(&format!("fin-{}", kind.env()));
    let name = ns.name.clone();
    let worker = Spec {
        token_delay_ms: 30,
        shutdown_grace_ms: 30_000,
        ..Spec::worker(kind, &name)
    }
    .start()
    .await;
    let gw = gateway(kind, &name).await;
    let clients = in_flight(&gw.gateway, 6).await;
    let stopped = worker.terminate(Duration::from_secs(60)).await;
    assert_eq!(
        (field(&stopped, "completed"), field(&stopped, "requeued")),
        (Some(6), Some(0)),
        "{stopped}"
    );
    let tally = tally(clients).await;
    assert_eq!(
        (tally.complete, tally.resets),
        (6, 0),
        "{:#?}",
        tally.problems
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_a_worker_on_rabbitmq_requeues_what_it_cannot_finish() {
    requeue_on_sigterm(Kind::Amqp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_a_worker_on_redis_requeues_what_it_cannot_finish() {
    requeue_on_sigterm(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_a_worker_on_rabbitmq_finishes_in_flight_requests() {
    finish_on_sigterm(Kind::Amqp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_a_worker_on_redis_finishes_in_flight_requests() {
    finish_on_sigterm(Kind::Redis).await;
}

/// SIGTERM to a gateway process: each open SSE stream gets seed 001's error frame saying
/// the server shuts down, then `__END__`, then the connection closes; the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_a_gateway_ends_every_stream_with_a_clear_event() {
    let kind = Kind::Redis;
    if !broker_up(kind).await {
        return;
    }
    let ns = namespace("gwterm");
    let name = ns.name.clone();
    let _cleanup = RedisCleanup(redis_prefix(&name));
    let _worker = Spec {
        token_delay_ms: 100,
        ..Spec::worker(kind, &name)
    }
    .start()
    .await;
    let gw = Spec::gateway(kind, &name).start().await;
    let port = gw.port.unwrap_or_else(|| panic!("no port"));
    let mut clients = Vec::new();
    for i in 0..3 {
        let submitted = submit(port, &format!("question {i}")).await;
        let path = submitted["stream"].as_str().unwrap_or_default().to_owned();
        let mut client = SseClient::get(port, &path, None).await;
        assert_eq!(client.status, 200);
        let first = within("first token", STEP, client.next()).await;
        assert!(first.is_some_and(|e| token_of(&e.data).is_some()));
        clients.push(client);
    }
    let stopped = gw.terminate(Duration::from_secs(30)).await;
    assert!(stopped.contains("chaos_gateway stopped"), "{stopped:?}");
    for mut client in clients {
        let mut tail = Vec::new();
        while let Some(event) = within("stream end", STEP, client.next()).await {
            tail.push(event.data);
        }
        let n = tail.len();
        assert!(n >= 2, "{tail:?}");
        assert_eq!(tail[n - 1], "__END__", "{tail:?}");
        assert!(
            tail[n - 2].contains("\"error\"") && tail[n - 2].contains("shutting down"),
            "{tail:?}"
        );
        assert!(
            tail[..n - 2].iter().all(|d| token_of(d).is_some()),
            "{tail:?}"
        );
    }
}
