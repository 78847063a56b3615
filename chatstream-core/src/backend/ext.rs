//! Conveniences on every backend.

use std::sync::Arc;

use crate::{DynLlmBackend, LlmBackend, LlmLayer};

/// Extension methods for every [`LlmBackend`]: wrap it in layers, turn it into a trait
/// object.
///
/// ```
/// use chatstream_core::backend::{LlmBackendExt, MaxTokensLayer, SentenceLimitLayer, SystemPromptLayer};
/// use chatstream_core::ScriptedBackend;
///
/// let backend = ScriptedBackend::default()
///     .layer(SystemPromptLayer::new("You are terse."))
///     .layer(MaxTokensLayer::new(256))
///     .layer(SentenceLimitLayer::new(2))
///     .shared();
/// # let _ = backend;
/// ```
pub trait LlmBackendExt: LlmBackend + Sized {
    /// Wraps `self` in `layer` (`backend.layer(SystemPromptLayer::new("…"))`).
    fn layer<L: LlmLayer<Self>>(self, layer: L) -> L::Backend {
        layer.layer(self)
    }

    /// Boxes `self` as a trait object.
    fn boxed(self) -> Box<DynLlmBackend> {
        Box::new(self)
    }

    /// Shares `self` as a trait object, as the [`Worker`](crate::Worker) takes it.
    fn shared(self) -> Arc<DynLlmBackend> {
        Arc::new(self)
    }
}

impl<B: LlmBackend> LlmBackendExt for B {}
