//! Instructions per relayed token (issue 16): the in-memory pipeline in one process, one
//! thread, at fixed sizes, for `valgrind --tool=callgrind` to count.
//!
//! Run with: `benches/instructions.sh [COMMIT...]` (builds this target, runs it under
//! callgrind and prints instructions per token, gateway and worker apart). By hand:
//! `cargo bench -p chatstream-axum --bench instructions -- single|many [--check]`. No
//! environment is read; nothing outside the process is needed.
//!
//! The pipeline: a [`ScriptedBackend`] (fixed token text, no delay) → [`Worker`] (coalescing
//! off, `publish_linger` zero, other settings default) → [`InMemoryBroker`] → [`Gateway`]
//! (default settings) → [`ClientStream`] → [`SseBody`] (seed 001's dialect, default
//! keep-alive), the body read to its end by one task per client, as each HTTP connection
//! has. Everything runs on one `current_thread` runtime, so the order in which tasks run
//! depends on nothing but the program, and callgrind's count repeats.
//!
//! - `single`: 1 stream × 10,000 tokens;
//! - `many`: 1,000 streams × 20 tokens, all generating at once (worker concurrency 1,000).
//!
//! Each token of the backend yields to the runtime once (`tokio::task::yield_now`) before it
//! is handed on, as a token read from a model's HTTP stream arrives on a wake-up of its own:
//! so each token travels the whole path (generate loop, batcher, broker, hub, client, SSE
//! body) before the stream's next one, as it does at 20 tokens/s, and the count includes
//! the wake-ups a token costs. Coalescing is off and the linger zero because both merge by
//! wall-clock time, which under valgrind is not the program's; at 20 tokens/s per stream
//! (tokens 50 ms apart) the default 10 ms window merges nothing either.
//!
//! Which task is whose: the script sums callgrind's inclusive cost of each task's poll
//! (`tokio::runtime::task::raw::poll::<T, _>`, v0 symbol names, so `T` is in the name) by
//! the future type `T`: `chatstream_core::worker` is the worker, `chatstream_core::gateway`
//! and this file's `client` the gateway. The backend's own cost ([`Paced`]) is counted
//! apart so that it can be taken out of the worker's.
//!
//! `--check`, and a run without a size (`cargo test --benches`: both sizes), also checks the SSE text of every stream:
//! every token, in order, then the end marker.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use chatstream_axum::{SseBody, SseConfig};
use chatstream_core::wire::seed001::Seed001Sse;
use chatstream_core::{
    ChatRequest, ClientTransport, CoalesceConfig, Conversation, Gateway, GatewayConfig,
    InMemoryBroker, InMemoryConversationStore, LlmBackend, LlmEvent, LlmStream, ScriptedBackend,
    StreamKey, Worker, WorkerConfig,
};
use futures::{FutureExt, Stream, StreamExt};

/// The text of every token after the first (`"tok"`): four bytes, about an LLM token.
const TOKEN: &str = " tok";

/// A scripted backend whose stream yields to the runtime once before each event.
#[derive(Debug)]
struct PacedBackend(ScriptedBackend);

#[async_trait]
impl LlmBackend for PacedBackend {
    async fn stream(
        &self,
        request: &ChatRequest,
        conversation: &Conversation,
    ) -> chatstream_core::Result<LlmStream> {
        let inner = self.0.stream(request, conversation).await?;
        Ok(Paced {
            inner,
            yielded: false,
        }
        .boxed())
    }
}

/// The backend's stream, paced: `Pending` once (waking itself at the back of the queue)
/// before each event.
struct Paced {
    inner: LlmStream,
    yielded: bool,
}

impl Stream for Paced {
    type Item = chatstream_core::Result<LlmEvent>;

    #[inline(never)]
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if !self.yielded {
            let mut yield_now = std::pin::pin!(tokio::task::yield_now());
            if yield_now.poll_unpin(cx).is_pending() {
                self.yielded = true;
                return Poll::Pending;
            }
        }
        self.yielded = false;
        self.inner.poll_next_unpin(cx)
    }
}

/// One client: submits its request, reads the SSE body to its end; returns the bytes read
/// (and the text, with `check`).
async fn client(gateway: Gateway, n: usize, check: bool) -> (usize, String) {
    let key = StreamKey::new(format!("session-{n}"), format!("message-{n}"));
    let events = gateway
        .submit(ChatRequest::new(key.clone(), "hello"))
        .await
        .expect("in-memory submit cannot fail");
    let mut body = SseBody::new(events, Seed001Sse.encoder(&key), &SseConfig::default());
    let (mut bytes, mut text) = (0, String::new());
    while let Some(Ok(chunk)) = body.next().await {
        bytes += chunk.len();
        if check {
            text.push_str(std::str::from_utf8(&chunk).expect("SSE is UTF-8"));
        }
    }
    (bytes, text)
}

/// `streams` × `tokens` through the pipeline; returns the SSE bytes read.
pub(crate) async fn run(streams: usize, tokens: usize, check: bool) -> usize {
    let answer = format!("tok{}", TOKEN.repeat(tokens - 1));
    let backend = PacedBackend(ScriptedBackend::default().with_answer(answer));
    let broker = InMemoryBroker::new();
    let config = WorkerConfig {
        concurrency: streams,
        coalesce: CoalesceConfig::off(),
        publish_linger: Duration::ZERO,
        ..WorkerConfig::default()
    };
    let worker = Worker::builder(
        Arc::new(broker.message_source()),
        Arc::new(broker.clone()),
        Arc::new(backend),
    )
    .store(Arc::new(InMemoryConversationStore::default()))
    .cancels(Arc::new(broker.clone()))
    .config(config)
    .build()
    .spawn();
    let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker.clone()))
        .cancels(Arc::new(broker.clone()))
        .config(GatewayConfig::default())
        .build();

    let clients: Vec<_> = (0..streams)
        .map(|n| tokio::spawn(client(gateway.clone(), n, check)))
        .collect();
    let mut total = 0;
    for c in clients {
        let (bytes, text) = c.await.expect("client task");
        total += bytes;
        if check {
            let got: Vec<&str> = text
                .split("\n\n")
                .filter_map(|f| f.lines().find_map(|l| l.strip_prefix("data: ")))
                .collect();
            let want_tokens = std::iter::once("{\"token\": \"tok\"}")
                .chain(std::iter::repeat_n("{\"token\": \" tok\"}", tokens - 1));
            assert!(
                got.iter().copied().take(tokens).eq(want_tokens),
                "a client missed tokens"
            );
            assert_eq!(got.len(), tokens + 1, "one end frame after the tokens");
        }
    }
    worker.shutdown().await;
    total
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Without a size (`cargo test --benches`, `cargo bench`): both sizes, checked.
    let size = args.iter().find(|a| !a.starts_with("--"));
    let check = size.is_none() || args.iter().any(|a| a == "--check");
    let sizes: Vec<(&str, usize, usize)> = match size {
        Some(s) if s == "single" => vec![("single", 1, 10_000)],
        Some(s) if s == "many" => vec![("many", 1_000, 20)],
        Some(other) => {
            eprintln!("unknown size {other:?}: single (1 x 10,000) or many (1,000 x 20)");
            std::process::exit(2);
        }
        None => vec![("single", 1, 10_000), ("many", 1_000, 20)],
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    for (name, streams, tokens) in sizes {
        let bytes = runtime.block_on(run(streams, tokens, check));
        println!(
            "{name}: {streams} x {tokens} tokens relayed, {bytes} SSE bytes{}",
            if check { ", checked" } else { "" }
        );
    }
}
