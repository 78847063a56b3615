//! The examples' tracing setup: logs on stderr (text, or one JSON object per line with the
//! trace id when `LOG_FORMAT=json`), and with `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans
//! exported to an OpenTelemetry collector over OTLP/HTTP (protobuf).
//!
//! The exporter reads the standard variables itself: `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (`http://collector:4318`; spans go to its `/v1/traces`) or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG` (`parentbased_traceidratio` and `0.01` sample 1 %),
//! `OTEL_BSP_SCHEDULE_DELAY`, … Spans are exported at INFO and above whatever `LOG_LEVEL`
//! says (it filters the log lines only). The W3C trace context goes through the broker
//! with each request ([`chatstream::trace`]).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::env;

mod json;

/// The exporting provider, kept for [`shutdown`].
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the subscriber: log lines filtered by `filter`, and the OpenTelemetry layer
/// when an OTLP endpoint is configured.
pub(crate) fn init(filter: EnvFilter) {
    let json = env("LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .event_format(json::JsonWithTrace)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    };
    let otel = exporting_provider().map(|provider| {
        let tracer = provider.tracer("chatstream");
        let _ = PROVIDER.set(provider);
        chatstream::trace::set_propagator(Arc::new(W3cPropagator::default()));
        // Spans are entered at every poll of the future they wrap (a streaming answer's at
        // every token): without context activation and busy/idle tracking an enter costs
        // the layer nothing. Our propagation and log lines read a span's context through
        // `OpenTelemetrySpanExt::context`, which needs neither.
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_context_activation(false)
            .with_tracked_inactivity(false)
            .with_filter(LevelFilter::INFO)
    });
    tracing_subscriber::registry().with(logs).with(otel).init();
}

/// The provider exporting to the configured endpoint; `None` when none is configured or
/// the exporter cannot be built (said on stderr).
fn exporting_provider() -> Option<SdkTracerProvider> {
    if env("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("OpenTelemetry export off: {e}");
            return None;
        }
    };
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .build(),
    )
}

/// Exports what is still buffered and stops exporting (call before the process exits).
pub(crate) fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            eprintln!("OpenTelemetry shutdown: {e}");
        }
    }
}

/// W3C `traceparent` / `tracestate` for [`chatstream::trace`].
#[derive(Debug, Default)]
struct W3cPropagator(TraceContextPropagator);

impl chatstream::trace::TracePropagator for W3cPropagator {
    fn inject(&self, span: &Span, set: &mut dyn FnMut(&str, String)) {
        let mut fields = HashMap::new();
        self.0.inject_context(&span.context(), &mut fields);
        for (name, value) in fields {
            set(&name, value);
        }
    }

    fn extract(&self, get: &dyn Fn(&str) -> Option<String>, span: &Span) {
        let fields: HashMap<String, String> = ["traceparent", "tracestate"]
            .into_iter()
            .filter_map(|name| Some((name.to_owned(), get(name)?)))
            .collect();
        if !fields.contains_key("traceparent") {
            return;
        }
        let cx = self.0.extract(&fields);
        if cx.span().span_context().is_valid() {
            let _ = span.set_parent(cx);
        }
    }
}
