//! One tracing span per HTTP request.

use std::time::Duration;

use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{Request, Response};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{DefaultOnRequest, TraceLayer};
use tracing::field::Empty;
use tracing::Span;

/// The type of [`trace_layer`].
pub type HttpTraceLayer = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    fn(&Request<Body>) -> Span,
    DefaultOnRequest,
    fn(&Response<Body>, Duration, &Span),
>;

/// A [`TraceLayer`] whose `request` span (level INFO) carries `method`, `route` (the
/// matched route pattern, `unmatched` for none), `path`, and once the response head is
/// out, `status` and `latency_ms` (and the same as OpenTelemetry's `http.*` attributes,
/// with `otel.name` = `METHOD route`, kind server); a request with a W3C `traceparent`
/// header continues that trace, when a propagator is installed
/// ([`chatstream_core::trace`]); a DEBUG `response` event marks that moment, and
/// responses of status 5xx are logged as failures at ERROR. Add it last with
/// `Router::layer`, so that the matched route is known:
/// `app.layer(chatstream_axum::trace_layer())`.
pub fn trace_layer() -> HttpTraceLayer {
    TraceLayer::new_for_http()
        .make_span_with(make_span as fn(&Request<Body>) -> Span)
        .on_response(on_response as fn(&Response<Body>, Duration, &Span))
}

fn make_span(request: &Request<Body>) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(crate::metrics::UNMATCHED, MatchedPath::as_str);
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = %route,
        url.path = %request.uri().path(),
        http.response.status_code = Empty,
        method = %request.method(),
        route = %route,
        path = %request.uri().path(),
        status = Empty,
        latency_ms = Empty,
    );
    // A W3C `traceparent` from the client makes this span its child (no context: a root).
    let headers = request.headers();
    chatstream_core::trace::extract(
        &|name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        },
        &span,
    );
    span
}

fn on_response(response: &Response<Body>, latency: Duration, span: &Span) {
    let latency_ms = latency.as_secs_f64() * 1000.0;
    span.record("status", response.status().as_u16());
    span.record("http.response.status_code", response.status().as_u16());
    span.record("latency_ms", latency_ms);
    tracing::debug!(parent: span, "response");
}
