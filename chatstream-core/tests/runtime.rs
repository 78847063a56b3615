//! Worker and gateway behaviour on the in-memory broker: coalescing, batching, failures,
//! shutdown, fan-out, slow clients, cancels.
#![cfg(feature = "testkit")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatstream_core::testkit::backends::{EndlessBackend, GatedBackend};
use chatstream_core::{
    ChatRequest, ClientEvent, CoalesceConfig, Conversation, ConversationStore, Error, Fault,
    FinishReason, Gateway, GatewayConfig, InMemoryBroker, InMemoryConversationStore, LlmBackend,
    LlmEvent, LlmStream, Result, ScriptedBackend, StreamEvent, StreamKey, TokenEnvelope,
    TokenSource, Worker, WorkerConfig, WorkerHandle,
};
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(30);

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f).await.expect("hung")
}

fn worker(
    broker: &InMemoryBroker,
    backend: Arc<dyn LlmBackend>,
    config: WorkerConfig,
) -> WorkerHandle {
    Worker::builder(
        Arc::new(broker.message_source()),
        Arc::new(broker.clone()),
        backend,
    )
    .cancels(Arc::new(broker.clone()))
    .config(config)
    .build()
    .spawn()
}

fn gateway(broker: &InMemoryBroker, config: GatewayConfig) -> Gateway {
    Gateway::builder(Arc::new(broker.clone()), Arc::new(broker.clone()))
        .cancels(Arc::new(broker.clone()))
        .config(config)
        .build()
}

fn tokens(events: &[ClientEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Envelope(env) => match &env.event {
                StreamEvent::Token { text } => Some(text.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Emits `n` tokens `gap` apart (tokio time, so paused-clock tests are exact).
#[derive(Debug)]
struct Paced {
    n: usize,
    gap: Duration,
}

#[async_trait]
impl LlmBackend for Paced {
    async fn stream(&self, _: &ChatRequest, _: &Conversation) -> Result<LlmStream> {
        let gap = self.gap;
        Ok(futures::stream::iter(0..self.n)
            .then(move |i| async move {
                tokio::time::sleep(gap).await;
                Ok(LlmEvent::TextDelta(format!("{i},")))
            })
            .boxed())
    }
}

#[tokio::test(start_paused = true)]
async fn coalescing_merges_fast_tokens_without_losing_any() {
    let broker = InMemoryBroker::new();
    let w = worker(
        &broker,
        Arc::new(Paced {
            n: 1000,
            gap: Duration::from_millis(1),
        }),
        WorkerConfig::default(),
    );
    let gw = gateway(&broker, GatewayConfig::default());
    let events: Vec<_> = within(async {
        gw.submit(ChatRequest::new(StreamKey::new("s", "m"), "x"))
            .await
            .unwrap()
            .collect()
            .await
    })
    .await;
    let toks = tokens(&events);
    let expected: String = (0..1000).map(|i| format!("{i},")).collect();
    assert_eq!(toks.concat(), expected, "coalescing lost or reordered text");
    assert_eq!(toks[0], "0,", "the first token must go out alone, at once");
    // 1,000 tokens over one second with a 10 ms window: about one envelope per window.
    assert!(
        toks.len() <= 102,
        "{} token envelopes for 1,000 tokens at 1,000/s",
        toks.len()
    );
    assert!(
        toks.len() >= 90,
        "windows merged more than 10 ms worth: {}",
        toks.len()
    );
    w.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn window_zero_sends_one_envelope_per_token() {
    let broker = InMemoryBroker::new();
    let config = WorkerConfig {
        coalesce: CoalesceConfig::off(),
        ..WorkerConfig::default()
    };
    let w = worker(
        &broker,
        Arc::new(Paced {
            n: 50,
            gap: Duration::from_micros(100),
        }),
        config,
    );
    let gw = gateway(&broker, GatewayConfig::default());
    let events: Vec<_> = within(async {
        gw.submit(ChatRequest::new(StreamKey::new("s", "m"), "x"))
            .await
            .unwrap()
            .collect()
            .await
    })
    .await;
    assert_eq!(tokens(&events).len(), 50);
    w.shutdown().await;
}

#[tokio::test]
async fn status_events_carry_the_conversation_and_history_is_saved() {
    let broker = InMemoryBroker::new();
    let store = Arc::new(InMemoryConversationStore::default());
    let w = Worker::builder(
        Arc::new(broker.message_source()),
        Arc::new(broker.clone()),
        Arc::new(ScriptedBackend::default()),
    )
    .store(store.clone())
    .build()
    .spawn();
    let gw = gateway(&broker, GatewayConfig::default());
    let key = StreamKey::new("chan-1", "m1");
    let events: Vec<_> = within(async {
        gw.submit(ChatRequest::new(key.clone(), "first"))
            .await
            .unwrap()
            .collect()
            .await
    })
    .await;
    let first = events.iter().find_map(|e| match e {
        ClientEvent::Envelope(env) => Some(env.event.clone()),
        _ => None,
    });
    let Some(StreamEvent::Status {
        conversation_id: Some(conv),
        ..
    }) = first
    else {
        panic!("the first envelope should be a started status with the conversation id: {first:?}");
    };
    // The exchange is in the history before End reaches the client.
    let saved = store.get(&conv).await.unwrap().expect("conversation saved");
    assert_eq!(saved.messages.len(), 2);
    assert_eq!(saved.messages[1].content, tokens(&events).concat());
    w.shutdown().await;
}

#[tokio::test]
async fn stateless_requests_leave_no_conversation_behind() {
    let broker = InMemoryBroker::new();
    let store = Arc::new(InMemoryConversationStore::default());
    let w = Worker::builder(
        Arc::new(broker.message_source()),
        Arc::new(broker.clone()),
        Arc::new(ScriptedBackend::default()),
    )
    .store(store.clone())
    .build()
    .spawn();
    let gw = gateway(&broker, GatewayConfig::default());
    let req = ChatRequest::new(StreamKey::new("uid-1", "uid-1"), "hi").stateless();
    let events: Vec<_> = within(async { gw.submit(req).await.unwrap().collect().await }).await;
    assert!(!tokens(&events).is_empty());
    assert_eq!(
        store.stats().await.unwrap().conversations,
        0,
        "a client-held conversation must not be stored"
    );
    w.shutdown().await;
}

#[derive(Debug)]
struct Failing;

#[async_trait]
impl LlmBackend for Failing {
    async fn stream(&self, _: &ChatRequest, _: &Conversation) -> Result<LlmStream> {
        Ok(futures::stream::iter([
            Ok(LlmEvent::TextDelta("partial".into())),
            Err(Error::Backend {
                status: Some(500),
                message: "model crashed".into(),
            }),
        ])
        .boxed())
    }
}

#[tokio::test]
async fn a_failed_generation_ends_with_error_then_end_and_is_dead_lettered() {
    let broker = InMemoryBroker::new();
    let w = worker(&broker, Arc::new(Failing), WorkerConfig::default());
    let gw = gateway(&broker, GatewayConfig::default());
    let events: Vec<_> = within(async {
        gw.submit(ChatRequest::new(StreamKey::new("s", "m"), "x"))
            .await
            .unwrap()
            .collect()
            .await
    })
    .await;
    let kinds: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Envelope(env) => Some(env.event.clone()),
            _ => None,
        })
        .collect();
    let n = kinds.len();
    assert!(
        matches!(&kinds[n - 2], StreamEvent::Error { message } if message.contains("model crashed")),
        "{kinds:?}"
    );
    assert!(matches!(
        &kinds[n - 1],
        StreamEvent::End {
            finish_reason: FinishReason::Error,
            ..
        }
    ));
    let stats = w.shutdown().await;
    assert_eq!(stats.failed, 1);
    let dead = broker.dead_letters();
    assert_eq!(
        dead.len(),
        1,
        "the failed request must be kept for inspection"
    );
    assert!(
        dead[0].reason.contains("model crashed"),
        "{}",
        dead[0].reason
    );
}

#[tokio::test]
async fn shutdown_requeues_what_cannot_finish_within_the_grace_period() {
    let broker = InMemoryBroker::new();
    let gated = GatedBackend::new(10, 2);
    let config = WorkerConfig {
        shutdown_grace: Duration::from_millis(100),
        ..WorkerConfig::default()
    };
    let w = worker(&broker, Arc::new(gated.clone()), config);
    let gw = gateway(&broker, GatewayConfig::default());
    let mut stream = gw
        .submit(ChatRequest::new(StreamKey::new("s", "m"), "x"))
        .await
        .unwrap();
    while !matches!(within(stream.next()).await, Some(ClientEvent::Envelope(e)) if matches!(e.event, StreamEvent::Token{..}))
    {
    }
    let stats = within(w.shutdown()).await;
    assert_eq!(stats.requeued, 1, "{stats:?}");
    assert_eq!(
        broker.pending(),
        (1, 0),
        "the request must be back in the queue, not lost"
    );
    // A new worker finishes it; the client sees a reset, then the whole answer.
    let w2 = worker(
        &broker,
        Arc::new(GatedBackend::new(10, 10)),
        WorkerConfig::default(),
    );
    let rest: Vec<_> = within(stream.collect()).await;
    assert!(
        matches!(
            rest.iter().find(|e| !matches!(e, ClientEvent::Envelope(_))),
            Some(ClientEvent::Reset { attempt: 2 })
        ),
        "{rest:?}"
    );
    let reset_at = rest
        .iter()
        .position(|e| matches!(e, ClientEvent::Reset { .. }))
        .unwrap();
    assert_eq!(tokens(&rest[reset_at..]).concat(), gated.answer());
    w2.shutdown().await;
}

#[tokio::test]
async fn several_clients_of_one_stream_share_one_subscription() {
    let broker = InMemoryBroker::new();
    let gated = GatedBackend::new(20, 1);
    let w = worker(&broker, Arc::new(gated.clone()), WorkerConfig::default());
    let gw = gateway(&broker, GatewayConfig::default());
    let key = StreamKey::new("s", "shared");
    let a = gw.submit(ChatRequest::new(key.clone(), "x")).await.unwrap();
    let b = gw.subscribe(&key, None).await.unwrap();
    let c = gw.subscribe(&key, None).await.unwrap();
    assert_eq!(gw.active_streams(), 1, "one hub per stream");
    gated.release(100);
    let (a, b, c): (Vec<_>, Vec<_>, Vec<_>) =
        within(async { futures::join!(a.collect(), b.collect(), c.collect()) }).await;
    assert_eq!(tokens(&a).concat(), gated.answer());
    assert_eq!(tokens(&a), tokens(&b));
    assert_eq!(tokens(&a), tokens(&c));
    w.shutdown().await;
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_cut_off_while_others_go_on() {
    let broker = InMemoryBroker::new();
    let gated = GatedBackend::new(200, 0);
    let config = WorkerConfig {
        coalesce: CoalesceConfig::off(),
        ..WorkerConfig::default()
    };
    let w = worker(&broker, Arc::new(gated.clone()), config);
    let gw = gateway(
        &broker,
        GatewayConfig {
            client_buffer: 8,
            // Less than the answer: by the time the slow client reads, the hub's history no
            // longer holds what it missed, so it cannot catch up.
            hub_history: 16,
            ..GatewayConfig::default()
        },
    );
    let key = StreamKey::new("s", "slow");
    let mut fast = gw.submit(ChatRequest::new(key.clone(), "x")).await.unwrap();
    let mut slow = gw.subscribe(&key, None).await.unwrap();
    let mut fast_events = Vec::new();
    for _ in 0..200 {
        gated.release(1);
        // The fast client keeps up, token by token.
        loop {
            let ev = within(fast.next()).await.expect("fast client cut");
            let is_token = matches!(&ev, ClientEvent::Envelope(e) if matches!(e.event, StreamEvent::Token{..}));
            fast_events.push(ev);
            if is_token {
                break;
            }
        }
    }
    let rest: Vec<_> = within(fast.collect()).await;
    fast_events.extend(rest);
    assert_eq!(tokens(&fast_events).concat(), gated.answer());
    // The slow one gets what fit in its buffer, then a slow-consumer fault, then nothing.
    let slow_events: Vec<_> = within(async {
        let mut v = Vec::new();
        while let Some(e) = slow.next().await {
            v.push(e);
        }
        v
    })
    .await;
    assert_eq!(
        slow_events.last(),
        Some(&ClientEvent::Fault(Fault::SlowConsumer)),
        "{:?}",
        slow_events.last()
    );
    assert!(
        slow_events.len() < 50,
        "the slow client's backlog must stay bounded: {}",
        slow_events.len()
    );
    assert_eq!(
        gw.metrics()
            .slow_consumers
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    w.shutdown().await;
}

#[tokio::test]
async fn a_client_a_whole_queue_behind_catches_up_from_the_hubs_history() {
    let broker = InMemoryBroker::new();
    let gated = GatedBackend::new(200, 0);
    let config = WorkerConfig {
        coalesce: CoalesceConfig::off(),
        ..WorkerConfig::default()
    };
    let w = worker(&broker, Arc::new(gated.clone()), config);
    let gw = gateway(
        &broker,
        GatewayConfig {
            client_buffer: 8,
            ..GatewayConfig::default()
        },
    );
    let key = StreamKey::new("s", "behind");
    let fast = gw.submit(ChatRequest::new(key.clone(), "x")).await.unwrap();
    let mut behind = gw.subscribe(&key, None).await.unwrap();
    // The first tokens, read at once; then 100 tokens while the client reads nothing (its
    // queue holds 8); then the rest.
    gated.release(5);
    let mut events = Vec::new();
    while tokens(&events).len() < 5 {
        events.push(within(behind.next()).await.expect("an event"));
    }
    gated.release(100);
    let fast = tokio::spawn(fast.collect::<Vec<_>>());
    while gated.generated() < 105 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    gated.release(95);
    events.extend(within(behind.collect::<Vec<_>>()).await);
    assert_eq!(
        tokens(&events).concat(),
        gated.answer(),
        "the whole answer, in order: {:?}",
        events.iter().find(|e| matches!(e, ClientEvent::Fault(_)))
    );
    assert_eq!(
        gw.metrics()
            .slow_consumers
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        tokens(&within(fast).await.unwrap()).concat(),
        gated.answer()
    );
    w.shutdown().await;
}

#[tokio::test]
async fn cancel_only_when_the_last_client_leaves() {
    let broker = InMemoryBroker::new();
    let backend = EndlessBackend::new(Duration::from_millis(2));
    let w = worker(&broker, Arc::new(backend.clone()), WorkerConfig::default());
    let gw = gateway(
        &broker,
        GatewayConfig {
            cancel_grace: Duration::from_millis(50),
            ..GatewayConfig::default()
        },
    );
    let key = StreamKey::new("s", "c");
    let first = gw.submit(ChatRequest::new(key.clone(), "x")).await.unwrap();
    let mut second = gw.subscribe(&key, None).await.unwrap();
    drop(first);
    // Well past the grace period the stream still runs for the second client.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = backend.generated();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut seen = 0;
    while seen < 3 {
        if let Some(ClientEvent::Envelope(_)) = within(second.next()).await {
            seen += 1;
        }
    }
    assert!(
        backend.generated() > before,
        "generation stopped while a client still watched"
    );
    assert_eq!(
        gw.metrics()
            .cancels_published
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    drop(second);
    let mut watcher = broker.subscribe(&key, None).await.unwrap();
    let end = within(async {
        while let Some(Ok(env)) = watcher.next().await {
            if let StreamEvent::End { finish_reason, .. } = env.event {
                return finish_reason;
            }
        }
        panic!("no End")
    })
    .await;
    assert_eq!(end, FinishReason::Cancelled);
    assert_eq!(
        gw.metrics()
            .cancels_published
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    w.shutdown().await;
}

#[tokio::test]
async fn resume_gets_exactly_what_followed_and_lost_history_says_so() {
    let broker = InMemoryBroker::with_config(chatstream_core::memory::InMemoryConfig {
        replay_capacity: 8,
        ..Default::default()
    });
    let config = WorkerConfig {
        coalesce: CoalesceConfig::off(),
        ..WorkerConfig::default()
    };
    let w = worker(&broker, Arc::new(GatedBackend::new(20, 20)), config);
    let gw = gateway(&broker, GatewayConfig::default());
    let key = StreamKey::new("s", "resume");
    let all: Vec<_> = within(async {
        gw.submit(ChatRequest::new(key.clone(), "x"))
            .await
            .unwrap()
            .collect()
            .await
    })
    .await;
    let seqs: Vec<u64> = all
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Envelope(env) => Some(env.seq),
            _ => None,
        })
        .collect();
    let last = *seqs.last().unwrap();
    // The ring holds the last 8: resuming 3 before the end works exactly.
    let resumed: Vec<_> = within(async {
        gw.subscribe(&key, Some(last - 3))
            .await
            .unwrap()
            .collect()
            .await
    })
    .await;
    let got: Vec<u64> = resumed
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Envelope(env) => Some(env.seq),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![last - 2, last - 1, last]);
    // Resuming at the End gets the End again and stops, instead of waiting forever.
    let at_end: Vec<_> = within(async {
        gw.subscribe(&key, Some(last))
            .await
            .unwrap()
            .collect()
            .await
    })
    .await;
    assert!(
        matches!(at_end.as_slice(), [ClientEvent::Envelope(e)] if e.event.is_end() && e.seq == last),
        "{at_end:?}"
    );
    // Resuming from the start is no longer possible: an explicit fault, not a silent gap.
    let lost: Vec<_> =
        within(async { gw.subscribe(&key, Some(0)).await.unwrap().collect().await }).await;
    assert_eq!(lost, vec![ClientEvent::Fault(Fault::HistoryLost)]);
    w.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_never_starts_times_out_instead_of_hanging() {
    let broker = InMemoryBroker::new();
    let gw = gateway(
        &broker,
        GatewayConfig {
            idle_timeout: Some(Duration::from_secs(5)),
            ..GatewayConfig::default()
        },
    );
    let events: Vec<_> = within(async {
        gw.subscribe(&StreamKey::new("nobody", "asked"), None)
            .await
            .unwrap()
            .collect()
            .await
    })
    .await;
    assert_eq!(events, vec![ClientEvent::Fault(Fault::TimedOut)]);
}

/// Yields `n` one-word deltas, each as soon as it is polled (a model faster than any
/// client), then `Stop`.
#[derive(Debug)]
struct AlwaysReady(usize);

#[async_trait]
impl LlmBackend for AlwaysReady {
    async fn stream(&self, _: &ChatRequest, _: &Conversation) -> Result<LlmStream> {
        let deltas = (0..self.0).map(|_| Ok(LlmEvent::TextDelta("word ".to_owned())));
        let finish = std::iter::once(Ok(LlmEvent::Finish(FinishReason::Stop)));
        Ok(futures::stream::iter(deltas.chain(finish)).boxed())
    }
}

/// On one thread, a backend that never waits must not fill its client's queue faster than
/// the client is run: the worker yields to the runtime as it publishes (its cooperative
/// budget), so a client that reads as fast as it is scheduled is never cut off as slow,
/// even though the in-memory broker hands envelopes to the gateway from the publisher's
/// own call.
#[tokio::test(flavor = "current_thread")]
async fn an_always_ready_backend_does_not_cut_off_a_client_that_keeps_up() {
    let broker = InMemoryBroker::new();
    let answer_tokens = 20_000;
    let w = worker(
        &broker,
        Arc::new(AlwaysReady(answer_tokens)),
        WorkerConfig {
            coalesce: CoalesceConfig::off(),
            status_events: false,
            ..WorkerConfig::default()
        },
    );
    let gw = gateway(&broker, GatewayConfig::default());
    let stream = gw
        .submit(ChatRequest::new(StreamKey::new("fast", "model"), "go"))
        .await
        .unwrap();
    // A task of its own, as each HTTP connection is.
    let reader = tokio::spawn(stream.collect::<Vec<_>>());
    let events = within(reader).await.unwrap();
    let faults: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, ClientEvent::Fault(_)))
        .collect();
    assert!(faults.is_empty(), "{faults:?}");
    assert_eq!(tokens(&events).len(), answer_tokens, "every token arrived");
    w.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_goes_quiet_times_out_an_idle_period_after_its_last_token() {
    use chatstream_core::TokenSink;

    let broker = InMemoryBroker::new();
    let gw = gateway(
        &broker,
        GatewayConfig {
            idle_timeout: Some(Duration::from_secs(5)),
            ..GatewayConfig::default()
        },
    );
    let key = StreamKey::new("quiet", "stream");
    let mut client = gw.subscribe(&key, None).await.unwrap();
    let started = tokio::time::Instant::now();
    // A token every 3 s keeps the stream alive past the first idle period (the timer set
    // when the client came moves later with each token), then nothing more.
    for seq in 0..3 {
        let env = TokenEnvelope::new(key.clone(), 1, seq, StreamEvent::token(format!("t{seq}")));
        broker.publish(&Default::default(), &[env]).await.unwrap();
        let got = within(client.next()).await;
        assert!(
            matches!(&got, Some(ClientEvent::Envelope(e)) if e.seq == seq),
            "{got:?}"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let last_token = started + Duration::from_secs(6);
    let got = within(client.next()).await;
    assert_eq!(got, Some(ClientEvent::Fault(Fault::TimedOut)));
    assert_eq!(
        tokio::time::Instant::now() - last_token,
        Duration::from_secs(5),
        "timed out an idle period after the last token"
    );
    assert_eq!(within(client.next()).await, None);
}

#[test]
fn seq_numbers_of_a_new_attempt_stay_above_the_old_ones() {
    assert_eq!(TokenEnvelope::seq_base(1), 0);
    assert!(TokenEnvelope::seq_base(2) > u64::from(u32::MAX));
    assert_eq!(
        TokenEnvelope::attempt_of_seq(TokenEnvelope::seq_base(3) + 7),
        3
    );
    assert_eq!(TokenEnvelope::attempt_of_seq(12), 1);
}

#[tokio::test]
async fn a_worker_with_a_session_feed_announces_each_stream_it_answers() {
    use chatstream_core::{RequestSink, SessionFeed};

    let broker = InMemoryBroker::new();
    let mut news = broker.announcements().await.expect("announcements");
    let handle = Worker::builder(
        Arc::new(broker.message_source()),
        Arc::new(broker.clone()),
        Arc::new(ScriptedBackend::default()),
    )
    .session_feed(Arc::new(broker.clone()))
    .build()
    .spawn();
    // Published straight to the broker, as seed 004's clients do: no gateway knows of it.
    let key = StreamKey::new("channel-1", "m-1");
    broker
        .submit(&ChatRequest::new(key.clone(), "hi"))
        .await
        .expect("submit");
    assert_eq!(within(news.next()).await, Some(key.clone()));
    // A gateway that learns of it from the news reads the whole answer from the start.
    let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker.clone())).build();
    let events: Vec<ClientEvent> = within(
        gateway
            .subscribe(&key, None)
            .await
            .expect("subscribe")
            .collect(),
    )
    .await;
    assert_eq!(
        tokens(&events).concat(),
        ScriptedBackend::default().answer(&ChatRequest::new(key, "hi"))
    );
    handle.shutdown().await;
}

/// A resume of a stream nobody holds (never published here, or its retention expired) is
/// told `history lost` at once instead of waiting for the idle timeout; a read from the
/// start of such a stream still waits for it to begin.
#[tokio::test]
async fn a_resume_of_an_unknown_stream_is_history_lost_at_once() {
    let broker = InMemoryBroker::new();
    let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker.clone())).build();
    let key = StreamKey::new("nobody", "nothing");
    let events: Vec<ClientEvent> =
        within(gateway.subscribe(&key, Some(7)).await.unwrap().collect()).await;
    assert!(
        matches!(events.as_slice(), [ClientEvent::Fault(Fault::HistoryLost)]),
        "{events:?}"
    );
    // From the start, the stream is awaited and then read.
    let mut waiting = gateway.subscribe(&key, None).await.unwrap();
    let sink: &dyn chatstream_core::TokenSink = &broker;
    let end = StreamEvent::End {
        finish_reason: FinishReason::Stop,
        usage: None,
    };
    sink.publish(
        &Default::default(),
        &[
            TokenEnvelope::new(key.clone(), 1, 0, StreamEvent::token("hi")),
            TokenEnvelope::new(key.clone(), 1, 1, end),
        ],
    )
    .await
    .unwrap();
    let first = within(waiting.next()).await;
    assert!(
        matches!(&first, Some(ClientEvent::Envelope(e)) if e.event == StreamEvent::token("hi")),
        "{first:?}"
    );
}

/// A live-only source joined in the middle of a stream (RabbitMQ's topic topology read by a
/// second gateway instance) hands the gateway the stream from its middle: the client is told
/// `history lost`, never given the rest as if it were the whole answer. A gap later in a
/// stream ends it the same way.
#[tokio::test]
async fn a_stream_joined_in_its_middle_is_history_lost_not_a_partial_answer() {
    #[derive(Debug)]
    struct FromSeq(Vec<u64>);

    #[async_trait]
    impl TokenSource for FromSeq {
        async fn subscribe(
            &self,
            key: &StreamKey,
            _after_seq: Option<u64>,
        ) -> Result<chatstream_core::EnvelopeStream> {
            let envs: Vec<Result<TokenEnvelope>> = self
                .0
                .iter()
                .map(|&seq| {
                    Ok(TokenEnvelope::new(
                        key.clone(),
                        1,
                        seq,
                        StreamEvent::token(format!("t{seq} ")),
                    ))
                })
                .collect();
            Ok(futures::stream::iter(envs).boxed())
        }
    }

    let key = StreamKey::new("s", "m");
    for (seqs, want_text) in [(vec![5, 6, 7], ""), (vec![0, 1, 3, 4], "t0 t1 ")] {
        let broker = InMemoryBroker::new();
        let gateway = Gateway::builder(Arc::new(broker), Arc::new(FromSeq(seqs.clone()))).build();
        let events: Vec<ClientEvent> =
            within(gateway.subscribe(&key, None).await.unwrap().collect()).await;
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Envelope(env) => match &env.event {
                    StreamEvent::Token { text } => Some(text.as_str()),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(text, want_text, "{seqs:?}: {events:?}");
        assert!(
            matches!(events.last(), Some(ClientEvent::Fault(Fault::HistoryLost))),
            "{seqs:?}: {events:?}"
        );
    }
}

/// Reads `client` until it has yielded `n` tokens.
async fn read_tokens(client: &mut chatstream_core::ClientStream, n: usize) {
    let mut seen = 0;
    while seen < n {
        match within(client.next()).await {
            Some(ClientEvent::Envelope(env)) if matches!(env.event, StreamEvent::Token { .. }) => {
                seen += 1
            }
            Some(ClientEvent::Envelope(_)) => {}
            other => panic!("the stream ended early: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_gateway_shutting_down_ends_a_flowing_stream() {
    let broker = InMemoryBroker::new();
    let backend = EndlessBackend::new(Duration::from_millis(2));
    let _w = worker(&broker, Arc::new(backend), WorkerConfig::default());
    let gw = gateway(&broker, GatewayConfig::default());
    let mut client = gw
        .submit(ChatRequest::new(StreamKey::new("s", "shutdown"), "x"))
        .await
        .unwrap();
    read_tokens(&mut client, 3).await;
    gw.shutdown();
    // Tokens keep coming, but the client's next event is the fault, and the last.
    let rest: Vec<_> = within(client.collect()).await;
    assert_eq!(rest, vec![ClientEvent::Fault(Fault::ShuttingDown)]);
}

#[tokio::test(start_paused = true)]
async fn a_flowing_stream_still_ends_at_its_deadline() {
    let broker = InMemoryBroker::new();
    let backend = EndlessBackend::new(Duration::from_millis(10));
    let _w = worker(&broker, Arc::new(backend), WorkerConfig::default());
    let gw = gateway(
        &broker,
        GatewayConfig {
            stream_timeout: Some(Duration::from_secs(1)),
            ..GatewayConfig::default()
        },
    );
    let mut client = gw
        .submit(ChatRequest::new(StreamKey::new("s", "deadline"), "x"))
        .await
        .unwrap();
    read_tokens(&mut client, 3).await;
    // A token every 10 ms never leaves the client idle; the stream's time limit ends it.
    let rest: Vec<_> = within(client.collect()).await;
    assert_eq!(rest.last(), Some(&ClientEvent::Fault(Fault::TimedOut)));
    assert!(tokens(&rest).len() < 150, "ran well past its deadline");
}
