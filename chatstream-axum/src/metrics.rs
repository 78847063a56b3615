//! `GET /metrics`: the gateway's counters and HTTP request counts in Prometheus' text
//! exposition format (version 0.0.4).
//!
//! | metric | type | what |
//! |---|---|---|
//! | `chatstream_active_streams` | gauge | streams the gateway follows now |
//! | `chatstream_clients_active` | gauge | client streams open now (SSE responses, followed WebSocket answers) |
//! | `chatstream_clients_opened_total` | counter | client streams opened |
//! | `chatstream_client_disconnects_total` | counter | client streams that went away before their end |
//! | `chatstream_slow_consumers_total` | counter | clients cut off for reading too slowly |
//! | `chatstream_tokens_relayed_total` | counter | token envelopes delivered to clients (a coalesced run counts once) |
//! | `chatstream_cancels_published_total` | counter | cancels sent to workers |
//! | `chatstream_time_to_first_token_seconds` | summary (`_sum`, `_count`) | submit to first token, per submitted stream |
//! | `chatstream_http_requests_total{method,route,status}` | counter | requests answered, when [`Metrics::layer`] is added |
//! | `chatstream_http_request_duration_seconds{method,route,status}` | summary (`_sum`, `_count`) | time to the response head (not to the end of a stream) |
//!
//! A process that also runs a worker adds its metrics with [`Metrics::with_worker`]; a
//! worker-only process serves them with [`worker_router`] (`GET /metrics` and `GET /ready`
//! on a port of their own). The worker's metric names are listed in
//! [`chatstream_core::worker::WorkerMetrics`]'s module.
//!
//! The text is written by hand: every value already lives in the gateway's atomics and is
//! read when scraped, so the `metrics` facade and its exporter would only add a global
//! recorder and a copy step. The route has no authentication: keep it off the public
//! internet (a separate listener, or a proxy rule).
//!
//! ```
//! # use std::sync::Arc;
//! # use chatstream_core::{Gateway, InMemoryBroker};
//! use chatstream_axum::{metrics::Metrics, trace_layer};
//! # let broker = InMemoryBroker::new();
//! # let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker)).build();
//! let metrics = Metrics::new(gateway);
//! let app: axum::Router = axum::Router::new()
//!     // .merge(seed001::router(state.clone())) …
//!     .merge(metrics.router())
//!     .layer(metrics.layer())
//!     .layer(trace_layer());
//! # let _ = app;
//! ```

mod http;
mod worker;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chatstream_core::worker::WorkerMetrics;
use chatstream_core::Gateway;

pub use http::{HttpMetricsLayer, HttpMetricsService, UNMATCHED};
pub use worker::worker_router;

use crate::ChatstreamState;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What `/metrics` reports: the gateway's counters and, through [`Metrics::layer`], the
/// HTTP requests. Cheap to clone; clones share the counters.
#[derive(Debug, Clone)]
pub struct Metrics {
    gateway: Gateway,
    http: Arc<http::HttpStats>,
    worker: Option<WorkerMetrics>,
}

impl Metrics {
    /// Metrics of `gateway`, with no HTTP requests counted yet.
    pub fn new(gateway: Gateway) -> Self {
        Self {
            gateway,
            http: Arc::default(),
            worker: None,
        }
    }

    /// Also reports the metrics of a worker running in the same process
    /// (`chatstream_worker_*`, see [`WorkerMetrics`]), so one scrape covers both.
    pub fn with_worker(mut self, worker: WorkerMetrics) -> Self {
        self.worker = Some(worker);
        self
    }

    /// `GET /metrics`.
    pub fn router(&self) -> Router {
        let metrics = self.clone();
        Router::new().route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { metrics.response() }
            }),
        )
    }

    /// The layer counting requests; add it to the application with `Router::layer`.
    pub fn layer(&self) -> HttpMetricsLayer {
        HttpMetricsLayer {
            stats: self.http.clone(),
        }
    }

    /// The exposition as a `200` response.
    pub fn response(&self) -> Response {
        ([(header::CONTENT_TYPE, CONTENT_TYPE)], self.render()).into_response()
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let m = self.gateway.metrics();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::with_capacity(2048);
        let streams = u64::try_from(self.gateway.active_streams()).unwrap_or(u64::MAX);
        let gauges: [(&str, &str, u64); 2] = [
            (
                "active_streams",
                "Streams the gateway follows now.",
                streams,
            ),
            (
                "clients_active",
                "Client streams open now.",
                m.clients_active(),
            ),
        ];
        for (name, help, value) in gauges {
            family(&mut out, name, help, "gauge");
            let _ = writeln!(out, "chatstream_{name} {value}");
        }
        let counters = [
            (
                "clients_opened_total",
                "Client streams opened.",
                &m.clients_opened,
            ),
            (
                "client_disconnects_total",
                "Client streams that went away before their end.",
                &m.client_disconnects,
            ),
            (
                "slow_consumers_total",
                "Clients cut off for reading too slowly.",
                &m.slow_consumers,
            ),
            (
                "tokens_relayed_total",
                "Token envelopes delivered to clients.",
                &m.tokens_relayed,
            ),
            (
                "cancels_published_total",
                "Cancels published to workers.",
                &m.cancels_published,
            ),
        ];
        for (name, help, value) in counters {
            family(&mut out, name, help, "counter");
            let _ = writeln!(out, "chatstream_{name} {}", load(value));
        }
        let name = "time_to_first_token_seconds";
        family(
            &mut out,
            name,
            "Time from submit to first token.",
            "summary",
        );
        let sum = load(&m.ttft_micros_sum) as f64 / 1e6;
        let _ = writeln!(out, "chatstream_{name}_sum {sum}");
        let _ = writeln!(out, "chatstream_{name}_count {}", load(&m.ttft_count));
        self.render_http(&mut out);
        if let Some(worker) = &self.worker {
            worker.render(&mut out);
        }
        out
    }

    fn render_http(&self, out: &mut String) {
        let series = self.http.snapshot();
        let requests = "http_requests_total";
        family(out, requests, "HTTP requests answered.", "counter");
        for ((method, route, status), s) in &series {
            let labels = labels(method.as_str(), route, status.as_u16());
            let _ = writeln!(out, "chatstream_{requests}{labels} {}", s.count);
        }
        let duration = "http_request_duration_seconds";
        family(out, duration, "Time to the response head.", "summary");
        for ((method, route, status), s) in &series {
            let labels = labels(method.as_str(), route, status.as_u16());
            let _ = writeln!(out, "chatstream_{duration}_sum{labels} {}", s.seconds);
            let _ = writeln!(out, "chatstream_{duration}_count{labels} {}", s.count);
        }
    }
}

/// `GET /metrics` for `state`'s gateway, without HTTP request counts (use [`Metrics`] and
/// its layer for those).
#[allow(clippy::needless_pass_by_value)] // the same signature as every other router
pub fn router(state: ChatstreamState) -> Router {
    Metrics::new(state.gateway().clone()).router()
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP chatstream_{name} {help}");
    let _ = writeln!(out, "# TYPE chatstream_{name} {kind}");
}

fn labels(method: &str, route: &str, status: u16) -> String {
    format!(
        "{{method=\"{}\",route=\"{}\",status=\"{status}\"}}",
        escape(method),
        escape(route)
    )
}

/// Escapes a label value: `\`, `"` and line feeds.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(
            labels("GET", "/x/{id}", 200),
            "{method=\"GET\",route=\"/x/{id}\",status=\"200\"}"
        );
    }
}
