//! Tower-style layers around an [`LlmBackend`]: system prompt, max tokens, sentence limit.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures::{Stream, StreamExt};

use crate::{
    ChatMessage, ChatRequest, Conversation, FinishReason, LlmBackend, LlmEvent, LlmLayer,
    LlmStream, Result, Role,
};

/// Prepends a system message to the conversation, unless the conversation (or the request)
/// already has one.
#[derive(Debug, Clone)]
pub struct SystemPromptLayer {
    prompt: Arc<str>,
}

impl SystemPromptLayer {
    /// A layer adding `prompt` as the system message.
    pub fn new(prompt: impl Into<Arc<str>>) -> Self {
        Self {
            prompt: prompt.into(),
        }
    }
}

impl<B: LlmBackend> LlmLayer<B> for SystemPromptLayer {
    type Backend = SystemPrompt<B>;
    fn layer(&self, inner: B) -> SystemPrompt<B> {
        SystemPrompt {
            inner,
            prompt: self.prompt.clone(),
        }
    }
}

/// The backend made by [`SystemPromptLayer`].
#[derive(Debug, Clone)]
pub struct SystemPrompt<B> {
    inner: B,
    prompt: Arc<str>,
}

#[async_trait]
impl<B: LlmBackend> LlmBackend for SystemPrompt<B> {
    async fn stream(
        &self,
        request: &ChatRequest,
        conversation: &Conversation,
    ) -> Result<LlmStream> {
        let has_system = conversation
            .messages
            .iter()
            .chain(&request.messages)
            .any(|m| m.role == Role::System);
        if has_system {
            return self.inner.stream(request, conversation).await;
        }
        let mut with_prompt = conversation.clone();
        with_prompt
            .messages
            .insert(0, ChatMessage::system(&*self.prompt));
        self.inner.stream(request, &with_prompt).await
    }
}

/// Sets the request's token limit when it has none, and lowers it when it is above.
#[derive(Debug, Clone, Copy)]
pub struct MaxTokensLayer {
    max: u32,
}

impl MaxTokensLayer {
    /// A layer limiting answers to `max` tokens.
    pub fn new(max: u32) -> Self {
        Self { max }
    }
}

impl<B: LlmBackend> LlmLayer<B> for MaxTokensLayer {
    type Backend = MaxTokens<B>;
    fn layer(&self, inner: B) -> MaxTokens<B> {
        MaxTokens {
            inner,
            max: self.max,
        }
    }
}

/// The backend made by [`MaxTokensLayer`].
#[derive(Debug, Clone)]
pub struct MaxTokens<B> {
    inner: B,
    max: u32,
}

#[async_trait]
impl<B: LlmBackend> LlmBackend for MaxTokens<B> {
    async fn stream(
        &self,
        request: &ChatRequest,
        conversation: &Conversation,
    ) -> Result<LlmStream> {
        let limit = request
            .max_tokens
            .map_or(self.max, |asked| asked.min(self.max));
        if request.max_tokens == Some(limit) {
            return self.inner.stream(request, conversation).await;
        }
        let mut limited = request.clone();
        limited.max_tokens = Some(limit);
        self.inner.stream(&limited, conversation).await
    }
}

/// Stops the answer after a number of sentences (seed 002 limits chat steps to 2).
///
/// A sentence ends at `.`, `!` or `?` followed by whitespace or by the end of the answer.
/// Text passes through untouched until the last allowed sentence is complete; then the
/// layer emits [`FinishReason::Stop`] and drops the inner stream, which stops generation
/// (for the OpenAI backend: closes the connection). The whitespace after the last sentence
/// is not emitted. Token counts are not reported for a cut answer: the inner backend sends
/// them at its end, which is never reached.
#[derive(Debug, Clone, Copy)]
pub struct SentenceLimitLayer {
    sentences: usize,
}

impl SentenceLimitLayer {
    /// A layer keeping the first `sentences` sentences (at least one).
    pub fn new(sentences: usize) -> Self {
        Self {
            sentences: sentences.max(1),
        }
    }
}

impl<B: LlmBackend> LlmLayer<B> for SentenceLimitLayer {
    type Backend = SentenceLimit<B>;
    fn layer(&self, inner: B) -> SentenceLimit<B> {
        SentenceLimit {
            inner,
            sentences: self.sentences,
        }
    }
}

/// The backend made by [`SentenceLimitLayer`].
#[derive(Debug, Clone)]
pub struct SentenceLimit<B> {
    inner: B,
    sentences: usize,
}

#[async_trait]
impl<B: LlmBackend> LlmBackend for SentenceLimit<B> {
    async fn stream(
        &self,
        request: &ChatRequest,
        conversation: &Conversation,
    ) -> Result<LlmStream> {
        let inner = self.inner.stream(request, conversation).await?;
        Ok(SentenceLimitStream {
            inner: Some(inner),
            counter: SentenceCounter::new(self.sentences),
            finish_next: false,
        }
        .boxed())
    }
}

/// Counts sentence ends across text deltas.
#[derive(Debug)]
struct SentenceCounter {
    limit: usize,
    complete: usize,
    after_terminator: bool,
}

impl SentenceCounter {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            complete: 0,
            after_terminator: false,
        }
    }

    /// How many bytes of `text` to keep, and whether the limit was reached there.
    fn feed(&mut self, text: &str) -> (usize, bool) {
        for (i, c) in text.char_indices() {
            if std::mem::take(&mut self.after_terminator) && c.is_whitespace() {
                self.complete += 1;
                if self.complete >= self.limit {
                    return (i, true);
                }
            }
            self.after_terminator = matches!(c, '.' | '!' | '?');
        }
        (text.len(), false)
    }
}

struct SentenceLimitStream {
    /// `None` once the limit was reached or the inner stream ended.
    inner: Option<LlmStream>,
    counter: SentenceCounter,
    finish_next: bool,
}

impl Stream for SentenceLimitStream {
    type Item = Result<LlmEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if std::mem::take(&mut this.finish_next) {
            return Poll::Ready(Some(Ok(LlmEvent::Finish(FinishReason::Stop))));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let item = match inner.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(item) => item,
        };
        match item {
            Some(Ok(LlmEvent::TextDelta(mut text))) => {
                let (keep, reached) = this.counter.feed(&text);
                if !reached {
                    return Poll::Ready(Some(Ok(LlmEvent::TextDelta(text))));
                }
                this.inner = None;
                if keep == 0 {
                    return Poll::Ready(Some(Ok(LlmEvent::Finish(FinishReason::Stop))));
                }
                text.truncate(keep);
                this.finish_next = true;
                Poll::Ready(Some(Ok(LlmEvent::TextDelta(text))))
            }
            Some(other @ Ok(_)) => Poll::Ready(Some(other)),
            Some(Err(e)) => {
                this.inner = None;
                Poll::Ready(Some(Err(e)))
            }
            None => {
                this.inner = None;
                Poll::Ready(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    use super::*;
    use crate::backend::LlmBackendExt;
    use crate::{StreamKey, Usage};

    /// Yields fixed deltas, then usage and a finish; remembers what it was asked.
    #[derive(Debug, Default)]
    struct Fixed {
        deltas: Vec<&'static str>,
        seen: Mutex<Vec<(ChatRequest, Conversation)>>,
        dropped: Arc<AtomicBool>,
    }

    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[async_trait]
    impl LlmBackend for Fixed {
        async fn stream(
            &self,
            request: &ChatRequest,
            conversation: &Conversation,
        ) -> Result<LlmStream> {
            self.seen
                .lock()
                .unwrap()
                .push((request.clone(), conversation.clone()));
            let guard = SetOnDrop(self.dropped.clone());
            let events = self
                .deltas
                .iter()
                .map(|d| Ok(LlmEvent::TextDelta((*d).to_owned())))
                .chain([
                    Ok(LlmEvent::Usage(Usage::default())),
                    Ok(LlmEvent::Finish(FinishReason::Stop)),
                ])
                .collect::<Vec<_>>();
            Ok(futures::stream::iter(events)
                .map(move |e| {
                    let _keep_alive = &guard;
                    e
                })
                .boxed())
        }
    }

    fn fixed(deltas: &[&'static str]) -> Arc<Fixed> {
        Arc::new(Fixed {
            deltas: deltas.to_vec(),
            ..Fixed::default()
        })
    }

    fn request() -> ChatRequest {
        ChatRequest::new(StreamKey::new("s", "m"), "hi")
    }

    async fn run(
        backend: &impl LlmBackend,
        request: &ChatRequest,
        conversation: &Conversation,
    ) -> Vec<LlmEvent> {
        backend
            .stream(request, conversation)
            .await
            .unwrap()
            .map(|e| e.unwrap())
            .collect()
            .await
    }

    fn text(events: &[LlmEvent]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                LlmEvent::TextDelta(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn system_prompt_is_prepended_once() {
        let inner = fixed(&["ok"]);
        let backend = inner.clone().layer(SystemPromptLayer::new("Be terse."));
        let mut conversation = Conversation::empty("c");
        conversation.messages.push(ChatMessage::user("earlier"));
        run(&backend, &request(), &conversation).await;

        conversation
            .messages
            .insert(0, ChatMessage::system("Own prompt."));
        run(&backend, &request(), &conversation).await;

        let seen = inner.seen.lock().unwrap();
        assert_eq!(seen[0].1.messages[0], ChatMessage::system("Be terse."));
        assert_eq!(seen[0].1.messages[1], ChatMessage::user("earlier"));
        assert_eq!(seen[1].1.messages[0], ChatMessage::system("Own prompt."));
        assert_eq!(seen[1].1.messages.len(), 2);
    }

    #[tokio::test]
    async fn max_tokens_is_set_when_absent_and_capped_when_above() {
        let inner = fixed(&["ok"]);
        let backend = inner.clone().layer(MaxTokensLayer::new(100));
        let conversation = Conversation::empty("c");
        let mut r = request();
        run(&backend, &r, &conversation).await;
        r.max_tokens = Some(500);
        run(&backend, &r, &conversation).await;
        r.max_tokens = Some(20);
        run(&backend, &r, &conversation).await;
        let limits: Vec<_> = inner
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|(r, _)| r.max_tokens)
            .collect();
        assert_eq!(limits, [Some(100), Some(100), Some(20)]);
    }

    #[tokio::test]
    async fn sentence_limit_stops_after_two_sentences_and_drops_the_inner_stream() {
        let inner = fixed(&[
            "Pi is 3",
            ".14 exactly",
            "? No",
            "! It is",
            " irrational. ",
            "More.",
        ]);
        let backend = inner.clone().layer(SentenceLimitLayer::new(2));
        let events = run(&backend, &request(), &Conversation::empty("c")).await;
        assert_eq!(text(&events), "Pi is 3.14 exactly? No!");
        assert_eq!(events.last(), Some(&LlmEvent::Finish(FinishReason::Stop)));
        assert!(!events.iter().any(|e| matches!(e, LlmEvent::Usage(_))));
        assert!(
            inner.dropped.load(Ordering::SeqCst),
            "inner stream must be dropped"
        );
    }

    #[tokio::test]
    async fn sentence_limit_cuts_inside_a_delta_and_passes_short_answers_through() {
        let backend = fixed(&["One. Two! Three? Four."]).layer(SentenceLimitLayer::new(2));
        let events = run(&backend, &request(), &Conversation::empty("c")).await;
        assert_eq!(text(&events), "One. Two!");
        assert_eq!(events.len(), 2);

        // Ends with a terminator and no whitespace: the answer simply finishes.
        let backend = fixed(&["Only one", " sentence."]).layer(SentenceLimitLayer::new(2));
        let events = run(&backend, &request(), &Conversation::empty("c")).await;
        assert_eq!(text(&events), "Only one sentence.");
        assert!(matches!(events[events.len() - 2], LlmEvent::Usage(_)));
        assert_eq!(events.last(), Some(&LlmEvent::Finish(FinishReason::Stop)));
    }

    #[tokio::test]
    async fn layers_stack_on_a_shared_trait_object() {
        let inner = fixed(&["Hello there. How are you? Fine."]);
        let dynamic: Arc<crate::DynLlmBackend> = inner.clone();
        let backend = dynamic
            .layer(SystemPromptLayer::new("p"))
            .layer(MaxTokensLayer::new(10))
            .layer(SentenceLimitLayer::new(1))
            .boxed();
        let events = run(&backend, &request(), &Conversation::empty("c")).await;
        assert_eq!(text(&events), "Hello there.");
        let seen = inner.seen.lock().unwrap();
        assert_eq!(seen[0].0.max_tokens, Some(10));
        assert_eq!(seen[0].1.messages[0].role, Role::System);
    }
}
