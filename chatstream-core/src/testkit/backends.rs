//! Backends for tests: gated and endless generators.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::{ChatRequest, Conversation, FinishReason, LlmBackend, LlmEvent, LlmStream, Result};

/// Emits `"tok{n} "` tokens; each one past `free` waits for a permit from [`GatedBackend::release`].
/// Counts the tokens it generated, so a test can see generation stop.
#[derive(Debug, Clone)]
pub struct GatedBackend {
    total: usize,
    free: usize,
    gate: Arc<Semaphore>,
    generated: Arc<AtomicUsize>,
}

impl GatedBackend {
    /// `total` tokens, the first `free` without waiting.
    pub fn new(total: usize, free: usize) -> Self {
        Self {
            total,
            free,
            gate: Arc::new(Semaphore::new(0)),
            generated: Arc::new(AtomicUsize::new(0)),
        }
    }
    /// Lets `n` more tokens through.
    pub fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }
    /// Tokens generated so far, all requests together.
    pub fn generated(&self) -> usize {
        self.generated.load(Ordering::SeqCst)
    }
    /// The full answer text.
    pub fn answer(&self) -> String {
        (0..self.total).map(|i| format!("tok{i} ")).collect()
    }
}

#[async_trait]
impl LlmBackend for GatedBackend {
    async fn stream(
        &self,
        _request: &ChatRequest,
        _conversation: &Conversation,
    ) -> Result<LlmStream> {
        let me = self.clone();
        let tokens = futures::stream::iter(0..self.total).then(move |i| {
            let me = me.clone();
            async move {
                if i >= me.free {
                    if let Ok(p) = me.gate.acquire().await {
                        p.forget();
                    }
                }
                me.generated.fetch_add(1, Ordering::SeqCst);
                Ok(LlmEvent::TextDelta(format!("tok{i} ")))
            }
        });
        Ok(tokens
            .chain(futures::stream::iter([Ok(LlmEvent::Finish(
                FinishReason::Stop,
            ))]))
            .boxed())
    }
}

/// Emits a token every `interval` forever (until cancelled); counts them.
#[derive(Debug, Clone)]
pub struct EndlessBackend {
    interval: Duration,
    generated: Arc<AtomicUsize>,
}

impl EndlessBackend {
    /// A token every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            generated: Arc::new(AtomicUsize::new(0)),
        }
    }
    /// Tokens generated so far.
    pub fn generated(&self) -> usize {
        self.generated.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl LlmBackend for EndlessBackend {
    async fn stream(
        &self,
        _request: &ChatRequest,
        _conversation: &Conversation,
    ) -> Result<LlmStream> {
        let interval = self.interval;
        let generated = self.generated.clone();
        Ok(futures::stream::unfold(0u64, move |i| {
            let generated = generated.clone();
            async move {
                tokio::time::sleep(interval).await;
                generated.fetch_add(1, Ordering::SeqCst);
                Some((Ok(LlmEvent::TextDelta(format!("t{i} "))), i + 1))
            }
        })
        .boxed())
    }
}
