//! What the crash tests share (`aof_restart.rs`, `cluster_failover.rs`): a worker and a
//! gateway on the Redis queue, bus and cancel channel, each with its own client, as if in
//! two processes, and clients that read their streams to the end the way a UI does.

use std::sync::Arc;
use std::time::Duration;

use chatstream_core::{
    ClientEvent, ClientStream, Fault, FinishReason, Gateway, GatewayConfig, ScriptedBackend,
    StreamEvent, Worker, WorkerConfig, WorkerHandle,
};
use chatstream_redis::{
    BusConfig, QueueConfig, RedisCancelChannel, RedisClient, RedisRequestSink, RedisRequestSource,
    RedisTokenSink, RedisTokenSource,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// A worker and a gateway, each with its own client.
pub(crate) struct Pipeline {
    pub(crate) worker: WorkerHandle,
    pub(crate) gateway: Gateway,
    pub(crate) gateway_client: RedisClient,
    pub(crate) backend: ScriptedBackend,
}

/// The pipeline on `url` under `prefix`, the worker answering `concurrency` requests at
/// once. The answers are about 70 words, 80 ms apart (5.6 s each), so every answer is
/// mid-way when the test strikes and goes on after; the queue's `claim_idle` (15 s) is
/// longer than any outage plus a heartbeat period, so nothing is claimed away.
pub(crate) async fn pipeline(url: &str, prefix: &str, concurrency: usize) -> Pipeline {
    let worker_client = RedisClient::connect(url, prefix)
        .await
        .expect("worker's client");
    let gateway_client = RedisClient::connect(url, prefix)
        .await
        .expect("gateway's client");
    let queue = QueueConfig {
        claim_idle: Duration::from_secs(15),
        block: Duration::from_millis(500),
        ..QueueConfig::default()
    };
    let bus = BusConfig {
        block: Duration::from_secs(1),
        ..BusConfig::default()
    };
    let backend = ScriptedBackend::default()
        .with_repeat(4)
        .with_delay(Duration::from_millis(80));
    let worker = Worker::builder(
        Arc::new(
            RedisRequestSource::new(worker_client.clone(), queue.clone())
                .await
                .expect("request source"),
        ),
        Arc::new(
            RedisTokenSink::new(worker_client.clone(), bus.clone())
                .await
                .expect("token sink"),
        ),
        Arc::new(backend.clone()),
    )
    .cancels(Arc::new(RedisCancelChannel::new(worker_client)))
    .config(WorkerConfig {
        concurrency,
        ..WorkerConfig::default()
    })
    .build()
    .spawn();
    let gateway = Gateway::builder(
        Arc::new(RedisRequestSink::new(gateway_client.clone(), &queue)),
        Arc::new(RedisTokenSource::new(gateway_client.clone(), bus)),
    )
    .cancels(Arc::new(RedisCancelChannel::new(gateway_client.clone())))
    .config(GatewayConfig {
        idle_timeout: Some(Duration::from_secs(60)),
        ..GatewayConfig::default()
    })
    .build();
    Pipeline {
        worker,
        gateway,
        gateway_client,
        backend,
    }
}

/// What one client saw.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The text after applying resets, as a UI shows it.
    pub(crate) text: String,
    pub(crate) resets: usize,
    pub(crate) fault: Option<Fault>,
    pub(crate) finish: Option<FinishReason>,
}

/// Reads a client stream to its end, or for `limit` (then the outcome is a fault saying
/// so: a hang shows up as a failure); `tokens_seen` hears once, after the second token.
pub(crate) async fn follow(
    mut stream: ClientStream,
    tokens_seen: mpsc::UnboundedSender<()>,
    limit: Duration,
) -> Outcome {
    let mut out = Outcome::default();
    let mut tokens = 0;
    let read = async {
        while let Some(event) = stream.next().await {
            match event {
                ClientEvent::Reset { .. } => {
                    out.text.clear();
                    out.resets += 1;
                }
                ClientEvent::Envelope(env) => match &env.event {
                    StreamEvent::Token { text } => {
                        out.text.push_str(text);
                        tokens += 1;
                        if tokens == 2 {
                            let _ = tokens_seen.send(());
                        }
                    }
                    StreamEvent::End { finish_reason, .. } => {
                        out.finish = Some(finish_reason.clone());
                    }
                    _ => {}
                },
                ClientEvent::Fault(f) => out.fault = Some(f),
            }
        }
    };
    if timeout(limit, read).await.is_err() {
        out.fault = Some(Fault::Unavailable(format!("no end within {limit:?}")));
    }
    out
}

/// Waits (at most `limit`) until `n` clients have seen their first tokens.
pub(crate) async fn first_tokens(rx: &mut mpsc::UnboundedReceiver<()>, n: usize, limit: Duration) {
    timeout(limit, async {
        for _ in 0..n {
            rx.recv()
                .await
                .expect("a client ended before its second token");
        }
    })
    .await
    .expect("not every answer started");
}
