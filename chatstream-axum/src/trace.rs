//! One tracing span per HTTP request.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::MatchedPath;
use axum::http::{Request, Response};
use futures::future::BoxFuture;
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing::{Instrument, Span};

/// The layer of [`trace_layer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpTraceLayer;

/// A [`trace_layer`]: one `request` span per HTTP request (see there).
///
/// The span is entered while the handler runs, not while the response body is polled: a
/// streamed body is polled once per SSE write, and entering a span costs every tracing
/// layer work at each enter and exit (the OpenTelemetry layer too, sampled or not), which
/// was most of what trace export cost the gateway per token. The body holds the span, so
/// it closes when the body ends, and its duration is the whole stream's.
pub fn trace_layer() -> HttpTraceLayer {
    HttpTraceLayer
}

impl<S> Layer<S> for HttpTraceLayer {
    type Service = HttpTrace<S>;
    fn layer(&self, inner: S) -> HttpTrace<S> {
        HttpTrace { inner }
    }
}

/// The service of [`HttpTraceLayer`]: a `request` span around the inner service's handling
/// of each request (level INFO) carrying `method`, `route` (the matched route pattern,
/// `unmatched` for none), `path`, and once the response head is out, `status` and
/// `latency_ms` (and the same as OpenTelemetry's `http.*` attributes, with `otel.name` =
/// `METHOD route`, kind server); a request with a W3C `traceparent` header continues that
/// trace, when a propagator is installed ([`chatstream_core::trace`]); a DEBUG `response`
/// event marks that moment; a 5xx response, and a body that fails while streaming, are
/// logged at ERROR. Add it last with `Router::layer`, so that the matched route is known:
/// `app.layer(chatstream_axum::trace_layer())`.
#[derive(Debug, Clone)]
pub struct HttpTrace<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for HttpTrace<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let span = make_span(&request);
        let started = Instant::now();
        let handling = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(async move {
            let response = handling.instrument(span.clone()).await?;
            // In the span, as the handler's own events, for formatters that read the
            // current span (the examples' JSON lines take the trace id from it).
            span.in_scope(|| on_response(&response, started.elapsed(), &span));
            Ok(response.map(|body| Body::new(SpanBody { body, span })))
        })
    }
}

/// A response body that keeps its request's span open until it is dropped, without
/// entering it.
struct SpanBody {
    body: Body,
    span: Span,
}

impl HttpBody for SpanBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Err(e))) = &polled {
            let _entered = self.span.enter();
            tracing::error!(error = %e, "response body failed");
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
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
    let status = response.status();
    span.record("status", status.as_u16());
    span.record("http.response.status_code", status.as_u16());
    span.record("latency_ms", latency_ms);
    if status.is_server_error() {
        tracing::error!(parent: span, status = status.as_u16(), latency_ms, "response failed");
    } else {
        tracing::debug!(parent: span, "response");
    }
}
