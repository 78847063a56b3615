//! Answering one request.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use tracing::Instrument;

use super::batch::{Batcher, Tracker};
use super::cancel::{CancelRegistry, Interrupt, ABORTED};
use super::coalesce::Coalescer;
use super::metrics::{ModelSeries, Outcome as Settled};
use super::{Counters, WorkerConfig};
use crate::backend::ToolDefinition;
use crate::{
    meta, Acker, ChatMessage, ChatRequest, Conversation, Delivery, Destination,
    DynConversationStore, DynLlmBackend, DynSessionFeed, DynTokenSink, Error, FinishReason,
    LlmEvent, Result, Status, StreamEvent, StreamKey, TokenEnvelope, Usage,
};

/// What every request task shares.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) sink: Arc<DynTokenSink>,
    pub(crate) backend: Arc<DynLlmBackend>,
    pub(crate) store: Arc<DynConversationStore>,
    pub(crate) batcher: Batcher,
    pub(crate) registry: CancelRegistry,
    pub(crate) feed: Option<Arc<DynSessionFeed>>,
    pub(crate) config: WorkerConfig,
    pub(crate) counters: Arc<Counters>,
}

/// How often a quiet generation checks whether the broker took its request back.
const LOST_CHECK: Duration = Duration::from_secs(1);

/// Numbers and publishes the envelopes of one stream.
struct Emitter<'a> {
    ctx: &'a Ctx,
    acker: &'a dyn Acker,
    key: StreamKey,
    attempt: u32,
    seq: u64,
    dest: Destination,
    tracker: Arc<Tracker>,
}

impl Emitter<'_> {
    async fn emit(&mut self, event: StreamEvent) -> Result<()> {
        if self.acker.is_lost() {
            return Err(Error::unavailable(
                "broker",
                "the request was taken back with the worker's connection",
            ));
        }
        let env = TokenEnvelope::new(self.key.clone(), self.attempt, self.seq, event);
        self.seq += 1;
        self.ctx
            .batcher
            .send(&self.dest, env, &self.tracker)
            .await?;
        if self.tracker.failed() {
            return Err(Error::unavailable("token sink", "publish failed"));
        }
        Ok(())
    }
}

/// How a generation ended.
enum Outcome {
    Finished {
        finish: FinishReason,
        usage: Option<Usage>,
    },
    /// Stopped by a cancel; `usage` is what was generated up to the stop.
    Cancelled {
        usage: Usage,
    },
    Failed(Error),
    /// Shutdown grace is over or the sink failed: give the request back.
    GiveBack(Error),
}

/// Counts a request in flight until it is settled (or its task is dropped unsettled).
struct InFlight<'a> {
    counters: &'a Counters,
    settled: bool,
}

impl<'a> InFlight<'a> {
    fn start(counters: &'a Counters) -> Self {
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        Self {
            counters,
            settled: false,
        }
    }

    /// Counts the request's outcome, after it left the in-flight gauge: a scrape that
    /// sees the outcome counted sees the gauge without it (the counts are `Release`
    /// increments that [`WorkerMetrics::render`](super::WorkerMetrics::render) reads
    /// with `Acquire` before the gauge). Called before the broker is told (ack, nack,
    /// dead letter), as the counts always were.
    fn settle(mut self, series: &ModelSeries, outcome: Settled) {
        self.settled = true;
        let c = self.counters;
        c.in_flight.fetch_sub(1, Ordering::Relaxed);
        let count = |a: &std::sync::atomic::AtomicU64| {
            a.fetch_add(1, Ordering::Release);
        };
        match outcome {
            Settled::Completed => count(&c.completed),
            Settled::Cancelled => count(&c.cancelled),
            Settled::Failed => {
                count(&c.failed);
                count(&c.dead_lettered);
            }
            Settled::Rejected => count(&c.dead_lettered),
            Settled::Requeued => count(&c.requeued),
            Settled::Lost => count(&c.lost),
        }
        series.count(outcome);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The model label of requests rejected before their model was known.
const UNKNOWN_MODEL: &str = "unknown";

pub(crate) async fn handle(ctx: &Ctx, delivery: Delivery) {
    let Delivery {
        request,
        attempt,
        acker,
    } = delivery;
    let in_flight = InFlight::start(&ctx.counters);
    let request = match request.and_then(validate) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "dead-lettering malformed request");
            let series = ctx.counters.models.get(Some(UNKNOWN_MODEL));
            in_flight.settle(&series, Settled::Rejected);
            dead_letter(acker, &e.to_string()).await;
            return;
        }
    };
    observe_queue_wait(ctx, &request);
    // The `process` span of the OpenTelemetry messaging conventions, a child of the span
    // that submitted the request when the request carries its trace context (else a root).
    let span = tracing::info_span!(
        parent: None,
        "request",
        otel.name = "process chat request",
        otel.kind = "consumer",
        messaging.operation.type = "process",
        gen_ai.request.model = request.model.as_deref().unwrap_or_default(),
        stream = %request.key,
        attempt,
    );
    crate::trace::extract_metadata(&request.metadata, &span);
    async {
        if let Some(feed) = &ctx.feed {
            if let Err(e) = feed.announce(&request.key).await {
                tracing::warn!(error = %e, "could not announce the stream");
            }
        }
        answer(ctx, request, attempt, acker, in_flight).await;
    }
    .instrument(span)
    .await;
}

/// Observes the time since the broker took the request in, where the source says.
fn observe_queue_wait(ctx: &Ctx, request: &ChatRequest) {
    let Some(at) = request
        .metadata
        .get(meta::ENQUEUED_AT_MS)
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    // Clocks of different hosts disagree a little: a negative wait counts as zero.
    let waited = now.saturating_sub(at);
    ctx.counters.queue_wait.0.observe(waited as f64 / 1000.0);
}

/// Answers a valid request and settles it.
async fn answer(
    ctx: &Ctx,
    request: ChatRequest,
    attempt: u32,
    acker: Box<dyn Acker>,
    in_flight: InFlight<'_>,
) {
    let key = request.key.clone();
    let series = ctx.counters.models.get(request.model.as_deref());
    let mut out = Emitter {
        ctx,
        acker: &*acker,
        key: key.clone(),
        attempt: attempt.max(1),
        seq: TokenEnvelope::seq_base(attempt.max(1)),
        dest: ctx.sink.destination(&request),
        tracker: Arc::new(Tracker::default()),
    };
    let guard = ctx.registry.register(&key);

    let mut answer = String::new();
    let (conversation_id, outcome) = match load_conversation(ctx, &request).await {
        Ok(conv) => {
            let id = conv.meta.id.clone();
            let outcome = generate(
                ctx,
                &request,
                &conv,
                &mut out,
                &guard.interrupt,
                &mut answer,
                &series,
            )
            .await;
            (Some(id), outcome)
        }
        // A store that cannot be reached is a passing fault: let the broker retry.
        Err(e) if e.is_retryable() => (None, Outcome::GiveBack(e)),
        Err(e) => (None, Outcome::Failed(e)),
    };
    drop(guard);
    // The broker took the request back (the connection it came on dropped) and redelivers
    // it: a second answer, or an End after the redelivered one started, would only confuse
    // clients, and the request can no longer be acked or requeued from here.
    if acker.is_lost() {
        tracing::info!("the broker took the request back with the connection; stopped");
        in_flight.settle(&series, Settled::Lost);
        return;
    }

    let (end, result): (StreamEvent, Option<Error>) = match outcome {
        Outcome::GiveBack(e) => {
            tracing::warn!(error = %e, "giving the request back to the broker");
            in_flight.settle(&series, Settled::Requeued);
            let _ = acker.nack(true).await;
            return;
        }
        Outcome::Finished { finish, usage } => (
            StreamEvent::End {
                finish_reason: finish,
                usage,
            },
            None,
        ),
        Outcome::Cancelled { usage } => {
            count_tokens(&series, &usage);
            (
                StreamEvent::End {
                    finish_reason: FinishReason::Cancelled,
                    usage: Some(usage),
                },
                None,
            )
        }
        Outcome::Failed(e) => {
            let _ = out
                .emit(StreamEvent::Error {
                    message: e.to_string(),
                })
                .await;
            (
                StreamEvent::End {
                    finish_reason: FinishReason::Error,
                    usage: None,
                },
                Some(e),
            )
        }
    };
    let cancelled = matches!(
        &end,
        StreamEvent::End {
            finish_reason: FinishReason::Cancelled,
            ..
        }
    );

    // Save before End goes out, so a client that sends its next message the moment it
    // sees End finds this exchange in the history.
    if result.is_none() && !request.is_stateless() {
        if let Some(id) = &conversation_id {
            let mut msgs = request.messages.clone();
            if !answer.is_empty() {
                msgs.push(ChatMessage::assistant(std::mem::take(&mut answer)));
            }
            if let Err(e) = save(ctx, id, &msgs).await {
                tracing::warn!(error = %e, "could not save the conversation");
                let message = format!("the message was not saved: {e}");
                let _ = out.emit(StreamEvent::Error { message }).await;
            }
        }
    }

    let published = match out.emit(end).await {
        Ok(()) => out.tracker.settled().await,
        Err(e) => Err(e),
    };
    if let Err(e) = published {
        tracing::warn!(error = %e, "stream not fully published; requeueing");
        in_flight.settle(&series, Settled::Requeued);
        let _ = acker.nack(true).await;
        return;
    }
    match result {
        None => {
            let outcome = if cancelled {
                Settled::Cancelled
            } else {
                Settled::Completed
            };
            in_flight.settle(&series, outcome);
            if let Err(e) = acker.ack().await {
                tracing::warn!(error = %e, "ack failed; the broker will redeliver");
            }
        }
        Some(e) => {
            in_flight.settle(&series, Settled::Failed);
            dead_letter(acker, &format!("generation failed: {e}")).await;
        }
    }
}

/// Appends an exchange, retrying for [`WorkerConfig::save_retry`](super::WorkerConfig)
/// while the store is unreachable (backoff from 100 ms to 1 s). A retry after a commit whose
/// outcome was lost with the connection may store the exchange twice; a lost answer would
/// be worse.
async fn save(ctx: &Ctx, id: &str, msgs: &[ChatMessage]) -> Result<()> {
    let deadline = Instant::now() + ctx.config.save_retry;
    let mut pause = Duration::from_millis(100);
    loop {
        match ctx.store.append(id, msgs).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && Instant::now() + pause < deadline => {
                tracing::info!(error = %e, retry_in = ?pause, "saving the conversation failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Dead-letters a request already settled (counted) as failed or rejected.
async fn dead_letter(acker: Box<dyn Acker>, reason: &str) {
    if let Err(e) = acker.dead_letter(reason).await {
        tracing::warn!(error = %e, "dead-lettering failed");
    }
}

/// Refuses requests no answer can be routed for.
fn validate(request: ChatRequest) -> Result<ChatRequest> {
    if request.key.session_id.is_empty() || request.key.message_id.is_empty() {
        return Err(Error::invalid(
            "request",
            "session id and message id must not be empty",
        ));
    }
    if request.messages.is_empty() {
        return Err(Error::invalid("request", "no messages"));
    }
    Ok(request)
}

async fn load_conversation(ctx: &Ctx, request: &ChatRequest) -> Result<Conversation> {
    if request.is_stateless() {
        return Ok(Conversation::empty(request.conversation_id()));
    }
    let id = match request.metadata.get(meta::CONVERSATION) {
        Some(id) => id.clone(),
        None => {
            ctx.store
                .conversation_for_channel(&request.key.session_id)
                .await?
        }
    };
    Ok(ctx
        .store
        .get(&id)
        .await?
        .unwrap_or_else(|| Conversation::empty(id)))
}

async fn generate(
    ctx: &Ctx,
    request: &ChatRequest,
    conversation: &Conversation,
    out: &mut Emitter<'_>,
    interrupt: &Interrupt,
    answer: &mut String,
    series: &ModelSeries,
) -> Outcome {
    let status = |status, conversation_id| StreamEvent::Status {
        status,
        conversation_id,
        detail: None,
    };
    if ctx.config.status_events {
        if let Err(e) = out
            .emit(status(Status::Started, Some(conversation.meta.id.clone())))
            .await
        {
            return Outcome::GiveBack(e);
        }
    }
    let started = Instant::now();
    let deadline = started + ctx.config.generation_timeout;
    let acker = out.acker;
    // One timer for the generation's deadline, the check whether the broker took the
    // request back (every `LOST_CHECK` while quiet) and the coalescer's flush: made once,
    // moved only when the earliest of them changes.
    let mut lost_check = started + LOST_CHECK;
    let timer = tokio::time::sleep_until(deadline.min(lost_check));
    tokio::pin!(timer);
    // Polls the timer; `Some` when one of its causes is due. Moves it to the next cause.
    let mut timer_due = |timer: std::pin::Pin<&mut tokio::time::Sleep>,
                         flush_at: Option<Instant>,
                         cx: &mut std::task::Context<'_>|
     -> Option<Step> {
        let mut timer = timer;
        loop {
            let due = flush_at.map_or(deadline.min(lost_check), |f| {
                f.min(deadline).min(lost_check)
            });
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return None;
            }
            let now = Instant::now();
            if flush_at.is_some_and(|f| f <= now) {
                return Some(Step::Flush);
            }
            if deadline <= now {
                return Some(Step::Timeout);
            }
            if lost_check <= now {
                if acker.is_lost() {
                    return Some(Step::Abort);
                }
                lost_check = now + LOST_CHECK;
            }
        }
    };
    let interrupted = |raised: u8| {
        if raised & ABORTED != 0 {
            Step::Abort
        } else {
            Step::Cancel
        }
    };
    let opened = std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(raised) = interrupt.poll_raised(cx) {
            return std::task::Poll::Ready(interrupted(raised));
        }
        if let Some(step) = timer_due(timer.as_mut(), None, cx) {
            return std::task::Poll::Ready(step);
        }
        std::task::Poll::Pending
    });
    let mut events = tokio::select! {
        biased;
        step = opened => match step {
            Step::Cancel => return Outcome::Cancelled { usage: counted_usage(request, conversation, None, 0) },
            Step::Timeout => return Outcome::Failed(Error::Timeout("generation")),
            _ => return Outcome::GiveBack(Error::Cancelled),
        },
        r = ctx.backend.stream(request, conversation) => match r {
            Ok(s) => s,
            Err(e) => return Outcome::Failed(e),
        },
    };
    let mut coalescer = Coalescer::new(ctx.config.coalesce);
    let mut usage = None;
    // Text deltas received, the completion tokens a cancelled answer is billed for when the
    // backend reported no usage before the stop.
    let mut deltas: u32 = 0;
    let mut responding = false;
    let mut finish = FinishReason::Stop;
    // The client's tools (the request's own `tools` entry): the model's calls of them are
    // published for the client to run; calls of anything else are the backend's own (a
    // tool loop runs them) and show as a status.
    let client_tools: Vec<String> = ToolDefinition::from_request(request)
        .map(|tools| tools.into_iter().map(|t| t.name).collect())
        .unwrap_or_default();
    let mut called_client = false;
    let mut registered: Option<std::task::Waker> = None;
    loop {
        let flush_at = coalescer.deadline();
        // In order: a cancel or abort, a due flush, the backend's next event, then (only
        // when the backend has nothing) the interrupt's waker and the timer. A token that
        // is ready costs an atomic load and the backend's poll, nothing registered.
        let step = std::future::poll_fn(|cx| {
            let raised = interrupt.raised();
            if raised != 0 {
                return std::task::Poll::Ready(interrupted(raised));
            }
            if flush_at.is_some_and(|f| f <= Instant::now()) {
                return std::task::Poll::Ready(Step::Flush);
            }
            if let std::task::Poll::Ready(ev) = events.poll_next_unpin(cx) {
                return std::task::Poll::Ready(Step::Event(ev));
            }
            // The interrupt and the timer keep the waker they were last polled with: polled
            // again with the same one (this task's, woken by the backend), they would only
            // register it anew. Skip them then, unless the timer fired or must move earlier.
            // (The timer is set to the earliest of its causes; only the flush can move
            // earlier than it is set.)
            if registered.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
                && !timer.is_elapsed()
                && flush_at.is_none_or(|f| timer.deadline() <= f)
            {
                return std::task::Poll::Pending;
            }
            registered = Some(cx.waker().clone());
            if let std::task::Poll::Ready(raised) = interrupt.poll_raised(cx) {
                return std::task::Poll::Ready(interrupted(raised));
            }
            match timer_due(timer.as_mut(), flush_at, cx) {
                Some(step) => std::task::Poll::Ready(step),
                None => std::task::Poll::Pending,
            }
        })
        .await;
        let text = match step {
            Step::Cancel => {
                if let Some(t) = coalescer.take(Instant::now()) {
                    answer.push_str(&t);
                    let _ = out.emit(StreamEvent::Token { text: t }).await;
                }
                return Outcome::Cancelled {
                    usage: counted_usage(request, conversation, usage, deltas),
                };
            }
            Step::Abort => return Outcome::GiveBack(Error::Cancelled),
            Step::Timeout => return Outcome::Failed(Error::Timeout("generation")),
            Step::Flush => coalescer.take(Instant::now()),
            Step::Event(None) => break,
            Step::Event(Some(Err(e))) => {
                if let Some(t) = coalescer.take(Instant::now()) {
                    answer.push_str(&t);
                    let _ = out.emit(StreamEvent::Token { text: t }).await;
                }
                return Outcome::Failed(e);
            }
            Step::Event(Some(Ok(LlmEvent::TextDelta(t)))) => {
                if deltas == 0 {
                    series.ttft.observe_duration(started.elapsed());
                }
                deltas = deltas.saturating_add(1);
                if !responding && ctx.config.status_events {
                    responding = true;
                    if let Err(e) = out.emit(status(Status::Responding, None)).await {
                        return Outcome::GiveBack(e);
                    }
                }
                coalescer.push(t, Instant::now)
            }
            Step::Event(Some(Ok(LlmEvent::Usage(u)))) => {
                usage = Some(u);
                None
            }
            Step::Event(Some(Ok(LlmEvent::Finish(f)))) => {
                finish = f;
                None
            }
            Step::Event(Some(Ok(LlmEvent::ToolCall(call))))
                if client_tools.contains(&call.name) =>
            {
                // The text said before the call goes first.
                if let Some(text) = coalescer.take(Instant::now()) {
                    answer.push_str(&text);
                    if let Err(e) = out.emit(StreamEvent::Token { text }).await {
                        return Outcome::GiveBack(e);
                    }
                }
                if let Err(e) = out.emit(StreamEvent::ToolCall { call }).await {
                    return Outcome::GiveBack(e);
                }
                called_client = true;
                None
            }
            Step::Event(Some(Ok(LlmEvent::ToolCall(call)))) => {
                if ctx.config.status_events {
                    let ev = StreamEvent::Status {
                        status: Status::Processing,
                        conversation_id: None,
                        detail: Some(call.name),
                    };
                    if let Err(e) = out.emit(ev).await {
                        return Outcome::GiveBack(e);
                    }
                }
                None
            }
        };
        if let Some(text) = text {
            answer.push_str(&text);
            if let Err(e) = out.emit(StreamEvent::Token { text }).await {
                return Outcome::GiveBack(e);
            }
        }
    }
    if let Some(text) = coalescer.take(Instant::now()) {
        answer.push_str(&text);
        if let Err(e) = out.emit(StreamEvent::Token { text }).await {
            return Outcome::GiveBack(e);
        }
    }
    // Some servers say `stop` after tool calls; the client must know it has tools to run.
    if called_client && finish == FinishReason::Stop {
        finish = FinishReason::ToolCalls;
    }
    let counted = counted_usage(request, conversation, usage, deltas);
    count_tokens(series, &counted);
    let seconds = started.elapsed().as_secs_f64();
    if seconds > 0.0 {
        series
            .rate
            .observe(f64::from(counted.completion_tokens) / seconds);
    }
    Outcome::Finished { finish, usage }
}

/// Adds an answer's tokens to its model's counters.
fn count_tokens(series: &ModelSeries, usage: &Usage) {
    series
        .prompt_tokens
        .fetch_add(u64::from(usage.prompt_tokens), Ordering::Relaxed);
    series
        .completion_tokens
        .fetch_add(u64::from(usage.completion_tokens), Ordering::Relaxed);
}

/// The usage of a cancelled generation: the backend's counts when it gave them before the
/// stop, else counted here. Completion tokens are the text deltas received (OpenAI-style
/// servers send one token per delta); prompt tokens, which only the backend can count
/// exactly, are estimated at four bytes per token of the history and the request, the
/// usual rule of thumb for English text with OpenAI's tokenizers.
fn counted_usage(
    request: &ChatRequest,
    conversation: &Conversation,
    reported: Option<Usage>,
    deltas: u32,
) -> Usage {
    if let Some(u) = reported {
        return u;
    }
    let bytes: usize = conversation
        .messages
        .iter()
        .chain(&request.messages)
        .map(|m| m.content.len())
        .sum();
    let prompt_tokens = u32::try_from(bytes.div_ceil(4)).unwrap_or(u32::MAX);
    Usage {
        prompt_tokens,
        completion_tokens: deltas,
        total_tokens: prompt_tokens.saturating_add(deltas),
    }
}

enum Step {
    Cancel,
    Abort,
    Flush,
    Timeout,
    Event(Option<Result<LlmEvent>>),
}
