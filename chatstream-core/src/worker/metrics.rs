//! The worker's metrics: outcome counts and latency histograms by model, written in
//! Prometheus' text exposition format (version 0.0.4) by [`WorkerMetrics::render`].
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `chatstream_worker_requests_in_flight` | gauge | | requests being answered now |
//! | `chatstream_worker_requests_received_total` | counter | | deliveries taken from the broker |
//! | `chatstream_worker_requests_total` | counter | `model`, `outcome` | requests settled, one outcome each: `completed`, `cancelled`, `failed` (an error was published, the request dead-lettered), `rejected` (malformed or invalid, dead-lettered unanswered), `requeued` (given back: shutdown, publish or store failure), `lost` (the broker took it back with the connection) |
//! | `chatstream_worker_dead_letters_total` | counter | | requests dead-lettered (`failed` + `rejected`) |
//! | `chatstream_worker_queue_wait_seconds` | histogram | | broker enqueue time to the worker taking it, where the broker gives the time (RabbitMQ `timestamp_in_ms` header or `timestamp` property, Redis Streams entry ids) |
//! | `chatstream_worker_time_to_first_token_seconds` | histogram | `model` | LLM call to the first text delta |
//! | `chatstream_worker_tokens_per_second` | histogram | `model` | completion tokens over the LLM call's duration, per answer that finished |
//! | `chatstream_worker_prompt_tokens_total` | counter | `model` | prompt tokens (as the LLM reported them; estimated for a cancelled answer without a report) |
//! | `chatstream_worker_completion_tokens_total` | counter | `model` | completion tokens (reported, else the text deltas counted) |
//! | `chatstream_worker_envelopes_published_total` | counter | | envelopes handed to the token sink |
//! | `chatstream_worker_broker_messages_published_total` | counter | | publishes to the token sink (one broker message per batch on batching sinks) |
//! | `chatstream_worker_publish_duration_seconds` | histogram | | one publish until the broker accepted it |
//!
//! `model` is the model a request names (`default` when it names none). Its values come
//! from clients, so only the first [`MAX_MODELS`] distinct ones get a series of their own;
//! later ones are counted as `other`. No metric carries a user, session or stream.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Counters;

/// Distinct `model` label values at most; later models are counted as `other`.
pub const MAX_MODELS: usize = 32;

/// The model label of requests that name none.
pub(crate) const DEFAULT_MODEL: &str = "default";

const TTFT_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const RATE_BUCKETS: &[f64] = &[1.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];
const WAIT_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0];
const PUBLISH_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// A fixed-bucket histogram on atomics.
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// The sum in microseconds (or micro-units).
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, value: f64) {
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        // Saturating float-to-int conversion; a sum past u64::MAX micro-units is not a case.
        self.sum_micros
            .fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }

    pub(crate) fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), f64::to_string);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(
            out,
            "{name}_count{braces} {}",
            self.count.load(Ordering::Relaxed)
        );
    }
}

/// The publish latency histogram, shared with the batcher.
#[derive(Debug)]
pub(crate) struct PublishLatency(pub(crate) Histogram);

impl Default for PublishLatency {
    fn default() -> Self {
        Self(Histogram::new(PUBLISH_BUCKETS))
    }
}

/// The queue wait histogram.
#[derive(Debug)]
pub(crate) struct QueueWait(pub(crate) Histogram);

impl Default for QueueWait {
    fn default() -> Self {
        Self(Histogram::new(WAIT_BUCKETS))
    }
}

/// How one request was settled: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    Cancelled,
    Failed,
    Rejected,
    Requeued,
    Lost,
}

const OUTCOMES: [(Outcome, &str); 6] = [
    (Outcome::Completed, "completed"),
    (Outcome::Cancelled, "cancelled"),
    (Outcome::Failed, "failed"),
    (Outcome::Rejected, "rejected"),
    (Outcome::Requeued, "requeued"),
    (Outcome::Lost, "lost"),
];

/// The series of one model.
#[derive(Debug)]
pub(crate) struct ModelSeries {
    outcomes: [AtomicU64; 6],
    pub(crate) ttft: Histogram,
    pub(crate) rate: Histogram,
    pub(crate) prompt_tokens: AtomicU64,
    pub(crate) completion_tokens: AtomicU64,
}

impl Default for ModelSeries {
    fn default() -> Self {
        Self {
            outcomes: Default::default(),
            ttft: Histogram::new(TTFT_BUCKETS),
            rate: Histogram::new(RATE_BUCKETS),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
        }
    }
}

impl ModelSeries {
    pub(crate) fn count(&self, outcome: Outcome) {
        let i = OUTCOMES
            .iter()
            .position(|(o, _)| *o == outcome)
            .unwrap_or(0);
        // Release: a scrape that reads this count (Acquire) also sees the in-flight
        // gauge and the other counters as the request left them (see `render`).
        self.outcomes[i].fetch_add(1, Ordering::Release);
    }
}

/// The per-model series, bounded to [`MAX_MODELS`] label values.
#[derive(Debug, Default)]
pub(crate) struct Models {
    series: Mutex<BTreeMap<String, Arc<ModelSeries>>>,
}

impl Models {
    /// The series of `model` (`None`: the default model).
    pub(crate) fn get(&self, model: Option<&str>) -> Arc<ModelSeries> {
        let model = model.filter(|m| !m.is_empty()).unwrap_or(DEFAULT_MODEL);
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = series.get(model) {
            return s.clone();
        }
        let key = if series.len() < MAX_MODELS {
            model
        } else {
            "other"
        };
        series.entry(key.to_owned()).or_default().clone()
    }

    fn snapshot(&self) -> Vec<(String, Arc<ModelSeries>)> {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        series.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// A running worker's metrics (from [`WorkerHandle::metrics`](super::WorkerHandle::metrics)):
/// cheap to clone, read when rendered.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    pub(crate) counters: Arc<Counters>,
}

impl WorkerMetrics {
    /// Appends the exposition text of every worker metric (see the module docs) to `out`.
    pub fn render(&self, out: &mut String) {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // The outcome counts are read first (Acquire) and the gauge and the other counters
        // after: a request leaves the gauge and has its other counters raised before its
        // outcome is counted (Release), so no scrape shows a request both in flight and
        // settled, or counted `failed` but not dead-lettered.
        let models = c.models.snapshot();
        let mut settled = String::with_capacity(256 * models.len().max(1));
        family(
            &mut settled,
            "requests_total",
            "Requests settled, by model and outcome.",
            "counter",
        );
        for (model, s) in &models {
            let model = escape(model);
            for (i, (_, outcome)) in OUTCOMES.iter().enumerate() {
                let _ = writeln!(
                    settled,
                    "chatstream_worker_requests_total{{model=\"{model}\",outcome=\"{outcome}\"}} {}",
                    s.outcomes[i].load(Ordering::Acquire)
                );
            }
        }
        family(
            out,
            "requests_in_flight",
            "Requests being answered now.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "chatstream_worker_requests_in_flight {}",
            load(&c.in_flight)
        );
        let plain = [
            (
                "requests_received_total",
                "Deliveries taken from the broker.",
                load(&c.received),
            ),
            (
                "dead_letters_total",
                "Requests dead-lettered.",
                load(&c.dead_lettered),
            ),
            (
                "envelopes_published_total",
                "Envelopes handed to the token sink.",
                load(&c.batch.envelopes),
            ),
            (
                "broker_messages_published_total",
                "Publishes to the token sink (broker messages).",
                load(&c.batch.publishes),
            ),
        ];
        for (name, help, value) in plain {
            family(out, name, help, "counter");
            let _ = writeln!(out, "chatstream_worker_{name} {value}");
        }
        out.push_str(&settled);
        for (name, help, tokens) in [
            (
                "prompt_tokens_total",
                "Prompt tokens, by model.",
                (|s: &ModelSeries| &s.prompt_tokens) as fn(&ModelSeries) -> &AtomicU64,
            ),
            (
                "completion_tokens_total",
                "Completion tokens, by model.",
                |s: &ModelSeries| &s.completion_tokens,
            ),
        ] {
            family(out, name, help, "counter");
            for (model, s) in &models {
                let _ = writeln!(
                    out,
                    "chatstream_worker_{name}{{model=\"{}\"}} {}",
                    escape(model),
                    load(tokens(s))
                );
            }
        }
        for (name, help, hist) in [
            (
                "time_to_first_token_seconds",
                "LLM call to the first text delta, by model.",
                (|s: &ModelSeries| &s.ttft) as fn(&ModelSeries) -> &Histogram,
            ),
            (
                "tokens_per_second",
                "Completion tokens per second of the LLM call, by model.",
                |s: &ModelSeries| &s.rate,
            ),
        ] {
            family(out, name, help, "histogram");
            for (model, s) in &models {
                let labels = format!("model=\"{}\"", escape(model));
                hist(s).render(out, &format!("chatstream_worker_{name}"), &labels);
            }
        }
        family(
            out,
            "queue_wait_seconds",
            "Broker enqueue to the worker taking the request.",
            "histogram",
        );
        c.queue_wait
            .0
            .render(out, "chatstream_worker_queue_wait_seconds", "");
        family(
            out,
            "publish_duration_seconds",
            "One publish to the token sink until the broker accepted it.",
            "histogram",
        );
        c.batch
            .latency
            .0
            .render(out, "chatstream_worker_publish_duration_seconds", "");
    }

    /// The exposition text of the worker metrics alone.
    pub fn render_string(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.render(&mut out);
        out
    }
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP chatstream_worker_{name} {help}");
    let _ = writeln!(out, "# TYPE chatstream_worker_{name} {kind}");
}

/// Escapes a label value: `\`, `"` and line feeds.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_renders_cumulative_buckets_sum_and_count() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(3.0);
        let mut out = String::new();
        h.render(&mut out, "x", "model=\"m\"");
        assert_eq!(
            out,
            "x_bucket{model=\"m\",le=\"0.1\"} 1\nx_bucket{model=\"m\",le=\"1\"} 2\n\
             x_bucket{model=\"m\",le=\"+Inf\"} 3\nx_sum{model=\"m\"} 3.55\nx_count{model=\"m\"} 3\n"
        );
    }

    #[test]
    fn model_labels_are_bounded() {
        let models = Models::default();
        for i in 0..MAX_MODELS + 5 {
            models.get(Some(&format!("m{i}"))).count(Outcome::Completed);
        }
        models.get(None).count(Outcome::Completed);
        let snapshot = models.snapshot();
        assert_eq!(snapshot.len(), MAX_MODELS + 1, "the first 32 and `other`");
        let other = snapshot.iter().find(|(m, _)| m == "other").expect("other");
        assert_eq!(other.1.outcomes[0].load(Ordering::Relaxed), 6);
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
