//! The conformance checks. Each panics with what a user would notice when it fails.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::backends::{EndlessBackend, GatedBackend};
use super::harness::Harness;
use crate::{
    ChatRequest, ClientEvent, DynLlmBackend, FinishReason, Gateway, GatewayConfig, ScriptedBackend,
    StreamEvent, StreamKey, TokenEnvelope, Worker, WorkerConfig, WorkerHandle,
};

/// Longest any single wait in a check may take before the check fails as hung.
pub const WAIT: Duration = Duration::from_secs(30);

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("hung: {what} did not happen within {WAIT:?}"),
    }
}

fn unique_key(tag: &str) -> StreamKey {
    let id = uuid::Uuid::new_v4().simple().to_string();
    StreamKey::new(
        format!("{tag}-session-{}", &id[..8]),
        format!("{tag}-msg-{}", &id[8..16]),
    )
}

async fn start_worker<H: Harness + ?Sized>(h: &H, backend: Arc<DynLlmBackend>) -> WorkerHandle {
    let mut b = Worker::builder(
        Arc::from(h.message_source().await),
        h.token_sink().await,
        backend,
    )
    .config(WorkerConfig {
        shutdown_grace: Duration::from_secs(5),
        ..WorkerConfig::default()
    });
    if let Some(c) = h.cancel_channel().await {
        b = b.cancels(c);
    }
    b.build().spawn()
}

async fn gateway<H: Harness + ?Sized>(h: &H, config: GatewayConfig) -> Gateway {
    let mut b = Gateway::builder(h.request_sink().await, h.token_source().await).config(config);
    if let Some(c) = h.cancel_channel().await {
        b = b.cancels(c);
    }
    b.build()
}

/// Token text of a list of client events, the envelopes in order, and the reset count.
fn text_of(events: &[ClientEvent]) -> String {
    let mut out = String::new();
    for ev in events {
        match ev {
            ClientEvent::Reset { .. } => out.clear(),
            ClientEvent::Envelope(env) => {
                if let StreamEvent::Token { text } = &env.event {
                    out.push_str(text);
                }
            }
            ClientEvent::Fault(_) => {}
        }
    }
    out
}

fn envelopes(events: &[ClientEvent]) -> Vec<&TokenEnvelope> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Envelope(env) => Some(&**env),
            _ => None,
        })
        .collect()
}

/// Envelopes arrive in `seq` order without gaps, the text is the whole answer, and `End` is
/// last.
pub async fn ordering_and_end<H: Harness + ?Sized>(h: &H) {
    let backend = ScriptedBackend::default().with_repeat(20);
    let worker = start_worker(h, Arc::new(backend.clone())).await;
    let gw = gateway(h, GatewayConfig::default()).await;
    let req = ChatRequest::new(unique_key("order"), "Tell me about ordering");
    let stream = within("submit", gw.submit(req.clone()))
        .await
        .expect("submit failed");
    let events: Vec<ClientEvent> = within("the whole answer", stream.collect()).await;
    let envs = envelopes(&events);
    assert!(!envs.is_empty(), "no envelope arrived");
    for w in envs.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq + 1,
            "gap or reorder between seq {} and {}",
            w[0].seq,
            w[1].seq
        );
    }
    assert_eq!(
        envs[0].seq, 0,
        "the first envelope of a first attempt has seq 0"
    );
    assert_eq!(
        text_of(&events),
        backend.answer(&req),
        "the client saw a different answer"
    );
    match &envs.last().expect("non-empty").event {
        StreamEvent::End { finish_reason, .. } => assert_eq!(*finish_reason, FinishReason::Stop),
        other => panic!("the last envelope is not End but {other:?}"),
    }
    assert_eq!(
        envs.iter().filter(|e| e.event.is_end()).count(),
        1,
        "End appears once"
    );
    worker.shutdown().await;
}

/// After a stream ended, a subscriber resuming after `seq` k gets exactly what followed k.
pub async fn replay_after_seq<H: Harness + ?Sized>(h: &H) {
    if !h.capabilities().replay {
        eprintln!("replay_after_seq: broker keeps no history; skipped");
        return;
    }
    let worker = start_worker(h, Arc::new(ScriptedBackend::default().with_repeat(5))).await;
    let gw = gateway(h, GatewayConfig::default()).await;
    let key = unique_key("replay");
    let first: Vec<ClientEvent> = within("first read", async {
        gw.submit(ChatRequest::new(key.clone(), "hi"))
            .await
            .expect("submit")
            .collect()
            .await
    })
    .await;
    let all: Vec<TokenEnvelope> = envelopes(&first).into_iter().cloned().collect();
    assert!(
        all.len() >= 4,
        "expected several envelopes, got {}",
        all.len()
    );
    let source = h.token_source().await;
    for k in [
        0,
        all.len() as u64 / 2,
        all[all.len() - 2].seq,
        all[all.len() - 1].seq,
    ] {
        let replayed: Vec<TokenEnvelope> = within("replay", async {
            source
                .subscribe(&key, Some(k))
                .await
                .expect("subscribe with after_seq")
                .map(|r| r.expect("replayed envelope"))
                .collect()
                .await
        })
        .await;
        let mut expected: Vec<TokenEnvelope> = all.iter().filter(|e| e.seq > k).cloned().collect();
        if expected.is_empty() {
            // Resuming at the End gets the End again: the stream is over, not silent.
            expected.extend(all.last().cloned());
        }
        assert_eq!(
            replayed, expected,
            "replay after seq {k} is not exactly what followed it"
        );
        // The same through `subscribe_into`, as the gateway's hubs subscribe.
        let (receiver, mut rx) = Collect::channel();
        let subscription = within(
            "subscribe_into",
            source.subscribe_into(&key, Some(k), receiver),
        )
        .await
        .expect("subscribe_into with after_seq");
        let mut pushed = Vec::new();
        while pushed
            .last()
            .is_none_or(|e: &TokenEnvelope| !e.event.is_end())
        {
            match within("replay into a receiver", rx.recv()).await {
                Some(Ok(env)) => pushed.push(env),
                Some(Err(e)) => panic!("subscribe_into after seq {k} ended early: {e}"),
                None => panic!("the receiver was dropped"),
            }
        }
        drop(subscription);
        assert_eq!(
            pushed, expected,
            "subscribe_into after seq {k} is not exactly what followed it"
        );
    }
    worker.shutdown().await;
}

/// What a [`Collect`] sends: an envelope, or why the subscription ended early.
type Collected = std::result::Result<TokenEnvelope, String>;

/// An [`EnvelopeReceiver`](crate::EnvelopeReceiver) that sends what it gets on a channel.
#[derive(Debug)]
struct Collect {
    tx: tokio::sync::mpsc::UnboundedSender<Collected>,
}

impl Collect {
    fn channel() -> (
        Arc<dyn crate::EnvelopeReceiver>,
        tokio::sync::mpsc::UnboundedReceiver<Collected>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Arc::new(Self { tx }), rx)
    }
}

impl crate::EnvelopeReceiver for Collect {
    fn envelope(&self, env: Arc<TokenEnvelope>) -> bool {
        let end = env.event.is_end();
        self.tx.send(Ok((*env).clone())).is_ok() && !end
    }

    fn ended(&self, error: Option<crate::Error>) {
        let why = error.map_or_else(|| "closed before its end".to_owned(), |e| e.to_string());
        let _ = self.tx.send(Err(why));
    }
}

/// A request is acked only after its `End`: a worker that crashes mid-answer leaves it to
/// another worker, whose new attempt the client sees after a reset; a finished request is
/// never delivered again.
pub async fn ack_only_after_end<H: Harness + ?Sized>(h: &H) {
    let gated = GatedBackend::new(6, 3);
    let crashing = start_worker(h, Arc::new(gated.clone())).await;
    let gw = gateway(h, GatewayConfig::default()).await;
    let key = unique_key("ack");
    let mut stream = within("submit", gw.submit(ChatRequest::new(key.clone(), "hi")))
        .await
        .expect("submit");
    let mut events = Vec::new();
    while !events.iter().any(
        |e| matches!(e, ClientEvent::Envelope(env) if matches!(env.event, StreamEvent::Token{..})),
    ) {
        events.push(
            within("first tokens", stream.next())
                .await
                .expect("stream ended early"),
        );
    }
    crashing.abort();
    // The second worker answers the redelivered request in full.
    let good = GatedBackend::new(6, 6);
    let rescuer = start_worker(h, Arc::new(good.clone())).await;
    while let Some(ev) = within("the redelivered answer", stream.next()).await {
        events.push(ev);
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClientEvent::Reset { attempt } if *attempt >= 2)),
        "the client was not told to reset before the new attempt: {events:?}"
    );
    assert_eq!(
        text_of(&events),
        good.answer(),
        "after the reset the client must see the whole new answer"
    );
    let last = envelopes(&events).last().map(|e| e.attempt);
    assert!(
        last >= Some(2),
        "the final envelopes must come from a later attempt"
    );
    rescuer.shutdown().await;
    // Finished: nothing left to deliver.
    let source = h.message_source().await;
    let again = tokio::time::timeout(Duration::from_millis(500), source.recv()).await;
    assert!(
        !matches!(again, Ok(Ok(Some(_)))),
        "a request answered to its End was delivered again"
    );
}

/// A request taken by a consumer that goes away unsettled is delivered again, with a higher
/// attempt.
pub async fn redelivery_after_dropped_consumer<H: Harness + ?Sized>(h: &H) {
    let sink = h.request_sink().await;
    let key = unique_key("redeliver");
    sink.submit(&ChatRequest::new(key.clone(), "again"))
        .await
        .expect("submit");
    let first = h.message_source().await;
    let d = within("first delivery", first.recv())
        .await
        .expect("recv")
        .expect("a delivery");
    assert_eq!(d.request.as_ref().expect("decodes").key, key);
    assert_eq!(d.attempt, 1, "first delivery is attempt 1");
    drop(d);
    drop(first);
    let second = h.message_source().await;
    let d = within("redelivery", second.recv())
        .await
        .expect("recv")
        .expect("a redelivery");
    assert_eq!(
        d.request.as_ref().expect("decodes").key,
        key,
        "another request came instead"
    );
    assert!(
        d.attempt >= 2,
        "a redelivery must have a higher attempt, got {}",
        d.attempt
    );
    d.acker.ack().await.expect("ack");
}

/// A malformed request is dead-lettered with a reason and does not block the queue.
pub async fn malformed_input_dead_lettered<H: Harness + ?Sized>(h: &H) {
    let worker = start_worker(h, Arc::new(ScriptedBackend::default())).await;
    let gw = gateway(h, GatewayConfig::default()).await;
    let garbage = b"{\"this is\": not json".to_vec();
    h.publish_raw_request(&garbage).await.expect("publish raw");
    let events: Vec<ClientEvent> = within("answer after garbage", async {
        gw.submit(ChatRequest::new(unique_key("afterbad"), "still there?"))
            .await
            .expect("submit")
            .collect()
            .await
    })
    .await;
    assert!(
        text_of(&events).contains("still there?"),
        "the queue is stuck behind a malformed request"
    );
    let dead = within("dead letter", async {
        loop {
            let dead = h.dead_letters().await.expect("dead letters");
            if let Some(d) = dead.into_iter().find(|(body, _)| *body == garbage) {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        dead.1.contains("decode"),
        "the dead letter's reason should say why: {:?}",
        dead.1
    );
    worker.shutdown().await;
}

/// A client that goes away makes the worker stop generating (within one token) and end the
/// stream as cancelled.
pub async fn cancel_reaches_worker<H: Harness + ?Sized>(h: &H) {
    if !h.capabilities().cancel {
        eprintln!("cancel_reaches_worker: no cancel channel; skipped");
        return;
    }
    let backend = EndlessBackend::new(Duration::from_millis(5));
    let worker = start_worker(h, Arc::new(backend.clone())).await;
    let gw = gateway(
        h,
        GatewayConfig {
            cancel_grace: Duration::ZERO,
            ..GatewayConfig::default()
        },
    )
    .await;
    let key = unique_key("cancel");
    // A second subscriber watches the bus for the End, where subscribers do not compete:
    // on a broker without history (seed 003's response queue) two consumers of one queue
    // take turns, and the watcher could steal the client's envelopes. There the worker's
    // counters are the proof.
    let watcher = if h.capabilities().replay {
        h.token_source().await.subscribe(&key, None).await.ok()
    } else {
        None
    };
    let mut stream = within(
        "submit",
        gw.submit(ChatRequest::new(key.clone(), "go on forever")),
    )
    .await
    .expect("submit");
    loop {
        let ev = within("a token", stream.next())
            .await
            .expect("stream ended early");
        if matches!(&ev, ClientEvent::Envelope(env) if matches!(env.event, StreamEvent::Token{..}))
        {
            break;
        }
    }
    drop(stream);
    // Observe the end of the stream on the bus (or, without replay, the worker's stats).
    if let Some(watcher) = watcher {
        let end = within("End after cancel", async {
            let mut w = watcher;
            while let Some(item) = w.next().await {
                if let Ok(env) = item {
                    if let StreamEvent::End { finish_reason, .. } = env.event {
                        return finish_reason;
                    }
                }
            }
            panic!("the bus stream closed without End");
        })
        .await;
        assert_eq!(
            end,
            FinishReason::Cancelled,
            "the stream should end as cancelled"
        );
    }
    let stats = within("worker finishes", worker.shutdown()).await;
    assert_eq!(
        stats.cancelled, 1,
        "the worker did not record the cancel: {stats:?}"
    );
    let after = backend.generated();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        backend.generated(),
        after,
        "generation went on after the cancel"
    );
}

/// An explicit stop sent to another gateway instance than the one relaying the stream
/// reaches the worker at once: the worker stops within one token, and the relaying
/// gateway's client gets `End { Cancelled }` with the usage of what was generated. A second
/// stop is idempotent, and a stop of a stream nobody published says so, where the token
/// source keeps a record of streams.
pub async fn explicit_stop_from_another_gateway<H: Harness + ?Sized>(h: &H) {
    if !h.capabilities().cancel {
        eprintln!("explicit_stop_from_another_gateway: no cancel channel; skipped");
        return;
    }
    let backend = EndlessBackend::new(Duration::from_millis(5));
    let worker = start_worker(h, Arc::new(backend.clone())).await;
    // cancel_grace is long: only the explicit stop may end this stream.
    let config = GatewayConfig {
        cancel_grace: Duration::from_secs(600),
        ..GatewayConfig::default()
    };
    let relay = gateway(h, config.clone()).await;
    let other = gateway(h, config).await;
    let key = unique_key("stop");
    let mut stream = within(
        "submit",
        relay.submit(ChatRequest::new(key.clone(), "go on forever")),
    )
    .await
    .expect("submit");
    let mut text = String::new();
    while text.matches('t').count() < 3 {
        match within("three tokens", stream.next()).await {
            Some(ClientEvent::Envelope(env)) => {
                if let StreamEvent::Token { text: t } = &env.event {
                    text.push_str(t);
                }
            }
            Some(ClientEvent::Reset { .. }) => text.clear(),
            other => panic!("the stream ended before the stop: {other:?}"),
        }
    }
    let outcome = within("stop", other.stop(&key)).await.expect("stop failed");
    assert_eq!(
        outcome,
        crate::StopOutcome::Stopping,
        "the stop was not published"
    );
    let usage = within("End after the stop", async {
        while let Some(ev) = stream.next().await {
            match ev {
                ClientEvent::Envelope(env) => match &env.event {
                    StreamEvent::Token { text: t } => text.push_str(t),
                    StreamEvent::End {
                        finish_reason,
                        usage,
                    } => {
                        assert_eq!(
                            *finish_reason,
                            FinishReason::Cancelled,
                            "the stream should end as cancelled"
                        );
                        return usage.expect("a cancelled End carries the usage so far");
                    }
                    _ => {}
                },
                ClientEvent::Reset { .. } => text.clear(),
                ClientEvent::Fault(f) => panic!("the relaying client got a fault: {f:?}"),
            }
        }
        panic!("the client stream closed without End");
    })
    .await;
    let received = text.matches('t').count();
    assert_eq!(
        usage.completion_tokens as usize, received,
        "the End's usage should count the tokens the client got: {text:?}"
    );
    let stats = within("worker finishes", worker.shutdown()).await;
    assert_eq!(
        stats.cancelled, 1,
        "the worker did not record the stop: {stats:?}"
    );
    let generated = backend.generated();
    assert!(
        generated <= received + 1,
        "the worker generated {generated} tokens but sent {received}: it went on after the stop"
    );
    // A second stop, and a stop of a stream nobody published.
    let source = h.token_source().await;
    if within("status", source.status(&key)).await.expect("status")
        != crate::StreamStatus::Untracked
    {
        assert_eq!(
            within("second stop", other.stop(&key))
                .await
                .expect("second stop"),
            crate::StopOutcome::Ended {
                finish_reason: FinishReason::Cancelled
            },
            "a second stop should say the stream ended as cancelled"
        );
        assert_eq!(
            within(
                "stop of an unknown stream",
                other.stop(&unique_key("nobody"))
            )
            .await
            .expect("stop of an unknown stream"),
            crate::StopOutcome::Unknown,
        );
    }
}

/// 100 concurrent streams each get exactly their own answer.
pub async fn concurrent_streams_do_not_mix<H: Harness + ?Sized>(h: &H) {
    let backend = ScriptedBackend::default().with_delay(Duration::from_millis(1));
    let worker = start_worker(h, Arc::new(backend.clone())).await;
    let gw = gateway(h, GatewayConfig::default()).await;
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let gw = gw.clone();
            let backend = backend.clone();
            tokio::spawn(async move {
                let req = ChatRequest::new(unique_key(&format!("c{i}")), format!("question {i}"));
                let events: Vec<ClientEvent> = gw
                    .submit(req.clone())
                    .await
                    .expect("submit")
                    .collect()
                    .await;
                assert!(
                    envelopes(&events).iter().all(|e| e.key == req.key),
                    "an envelope of another stream arrived"
                );
                assert_eq!(
                    text_of(&events),
                    backend.answer(&req),
                    "stream {i} got a wrong answer"
                );
            })
        })
        .collect();
    for t in tasks {
        within("100 streams", t)
            .await
            .expect("a stream task failed");
    }
    worker.shutdown().await;
}
