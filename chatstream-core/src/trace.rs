//! W3C trace context across processes, with no tracing backend in core.
//!
//! Core creates `tracing` spans (the worker's `process` span, the OpenAI backend's `chat`
//! span) and moves a request's trace context through the broker in its metadata
//! ([`meta::TRACEPARENT`], [`meta::TRACESTATE`]):
//! the gateway writes the context of the span it submits in, the worker makes its span a
//! child of what it reads, and the OpenAI backend sends its own span's context upstream in
//! the `traceparent` header. Turning spans into OpenTelemetry spans and reading and writing
//! the W3C format belong to the process's tracing setup (`tracing-opentelemetry`), which
//! installs a [`TracePropagator`] with [`set_propagator`]. Without one, every function
//! here does nothing, and a request carries no trace context.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, OnceLock};

use tracing::Span;

use crate::meta;

/// Reads and writes a span's trace context as text fields (`traceparent`, `tracestate`).
pub trait TracePropagator: Send + Sync + Debug + 'static {
    /// Writes `span`'s context with `set(name, value)`.
    fn inject(&self, span: &Span, set: &mut dyn FnMut(&str, String));
    /// Makes `span` a child of the context `get` reads, when it reads a valid one (else
    /// `span` stays as it is: a root, or a child of the span it was created in).
    fn extract(&self, get: &dyn Fn(&str) -> Option<String>, span: &Span);
}

static PROPAGATOR: OnceLock<Arc<dyn TracePropagator>> = OnceLock::new();

/// Installs the process's propagator; `false` when one was installed before (that one
/// stays).
pub fn set_propagator(propagator: Arc<dyn TracePropagator>) -> bool {
    PROPAGATOR.set(propagator).is_ok()
}

/// True once a propagator is installed.
pub fn enabled() -> bool {
    PROPAGATOR.get().is_some()
}

/// Writes `span`'s context with `set` (nothing without a propagator).
pub fn inject(span: &Span, set: &mut dyn FnMut(&str, String)) {
    if let Some(p) = PROPAGATOR.get() {
        p.inject(span, set);
    }
}

/// Makes `span` a child of the context `get` reads (nothing without a propagator).
pub fn extract(get: &dyn Fn(&str) -> Option<String>, span: &Span) {
    if let Some(p) = PROPAGATOR.get() {
        p.extract(get, span);
    }
}

/// Writes `span`'s context into a request's metadata, replacing what was there.
pub fn inject_metadata(span: &Span, metadata: &mut BTreeMap<String, String>) {
    if !enabled() {
        return;
    }
    metadata.remove(meta::TRACEPARENT);
    metadata.remove(meta::TRACESTATE);
    inject(span, &mut |name, value| {
        metadata.insert(name.to_owned(), value);
    });
}

/// Makes `span` a child of the context in a request's metadata.
pub fn extract_metadata(metadata: &BTreeMap<String, String>, span: &Span) {
    extract(&|name| metadata.get(name).cloned(), span);
}
