//! The scripted backend: seed 000's demo answer, token by token, no model needed.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use crate::{
    ChatRequest, Conversation, FinishReason, LlmBackend, LlmEvent, LlmStream, Result, Usage,
};

/// How the scripted answer is cut into tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokenize {
    /// One token per character, as seed 000's demo streams.
    Chars,
    /// One token per word, each with its leading space, as LLM tokenizers roughly do.
    Words,
}

/// Answers every request with a fixed text that names the message id, streamed in tokens
/// with an optional delay between them (seed 000's demo behaviour).
///
/// The answer is `"{prefix} You said: \"{text}\". This is the answer to message {message_id}."`
/// unless a custom answer is set with [`ScriptedBackend::with_answer`] (where `{text}` and
/// `{message_id}` are replaced).
#[derive(Debug, Clone)]
pub struct ScriptedBackend {
    template: String,
    delay: Duration,
    tokenize: Tokenize,
    repeat: usize,
}

impl Default for ScriptedBackend {
    fn default() -> Self {
        Self {
            template: "Hello! I am chatstream's scripted assistant. You said: \"{text}\". \
                       This is the answer to message {message_id}."
                .to_owned(),
            delay: Duration::ZERO,
            tokenize: Tokenize::Words,
            repeat: 1,
        }
    }
}

impl ScriptedBackend {
    /// Sets the delay between tokens (seed 000's demo: 100 ms).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
    /// Sets the answer template; `{text}` and `{message_id}` are replaced.
    pub fn with_answer(mut self, template: impl Into<String>) -> Self {
        self.template = template.into();
        self
    }
    /// Sets how the answer is cut into tokens.
    pub fn with_tokenize(mut self, tokenize: Tokenize) -> Self {
        self.tokenize = tokenize;
        self
    }
    /// Repeats the answer `n` times (long answers for benchmarks).
    pub fn with_repeat(mut self, n: usize) -> Self {
        self.repeat = n.max(1);
        self
    }

    /// The full answer to `request`, as it will be streamed.
    pub fn answer(&self, request: &ChatRequest) -> String {
        let one = self
            .template
            .replace("{text}", request.last_user_text())
            .replace("{message_id}", &request.key.message_id);
        let mut out = String::with_capacity(one.len() * self.repeat);
        for i in 0..self.repeat {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&one);
        }
        out
    }

    /// The tokens of `answer`.
    pub fn tokens(&self, answer: &str) -> Vec<String> {
        match self.tokenize {
            Tokenize::Chars => answer.chars().map(String::from).collect(),
            Tokenize::Words => {
                let mut out = Vec::new();
                let mut cur = String::new();
                for c in answer.chars() {
                    if c == ' ' && !cur.is_empty() {
                        out.push(std::mem::take(&mut cur));
                    }
                    cur.push(c);
                }
                if !cur.is_empty() {
                    out.push(cur);
                }
                out
            }
        }
    }
}

#[async_trait]
impl LlmBackend for ScriptedBackend {
    async fn stream(
        &self,
        request: &ChatRequest,
        conversation: &Conversation,
    ) -> Result<LlmStream> {
        let answer = self.answer(request);
        let tokens = self.tokens(&answer);
        let prompt_tokens: usize = conversation
            .messages
            .iter()
            .chain(&request.messages)
            .map(|m| m.content.split_whitespace().count())
            .sum();
        let usage = Usage {
            prompt_tokens: u32::try_from(prompt_tokens).unwrap_or(u32::MAX),
            completion_tokens: u32::try_from(tokens.len()).unwrap_or(u32::MAX),
            total_tokens: u32::try_from(prompt_tokens + tokens.len()).unwrap_or(u32::MAX),
        };
        let delay = self.delay;
        let deltas = futures::stream::iter(tokens).then(move |t| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(LlmEvent::TextDelta(t))
        });
        let tail = futures::stream::iter([
            Ok(LlmEvent::Usage(usage)),
            Ok(LlmEvent::Finish(FinishReason::Stop)),
        ]);
        Ok(deltas.chain(tail).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StreamKey;

    #[tokio::test]
    async fn answer_names_the_message_and_streams_it_whole() {
        let backend = ScriptedBackend::default();
        let req = ChatRequest::new(StreamKey::new("s", "msg-42"), "hi there");
        let events: Vec<_> = backend
            .stream(&req, &Conversation::empty("c"))
            .await
            .unwrap()
            .collect()
            .await;
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                Ok(LlmEvent::TextDelta(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, backend.answer(&req));
        assert!(text.contains("msg-42") && text.contains("hi there"));
        assert!(matches!(
            events.last(),
            Some(Ok(LlmEvent::Finish(FinishReason::Stop)))
        ));
    }

    #[test]
    fn char_tokens_are_one_per_character() {
        let b = ScriptedBackend::default().with_tokenize(Tokenize::Chars);
        assert_eq!(b.tokens("héllo"), vec!["h", "é", "l", "l", "o"]);
        let w = ScriptedBackend::default();
        assert_eq!(w.tokens("a bc  d"), vec!["a", " bc", " ", " d"]);
    }
}
