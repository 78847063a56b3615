//! What the example binaries share: environment variables, `LOG_LEVEL`, the listening
//! address, and the OpenAI-compatible backend when one is configured. Each example says in
//! its own doc comment which variables it reads and their defaults.
//!
//! Serving a router with `TCP_NODELAY` and a graceful shutdown is the library's
//! [`chatstream::axum::serve`].

// Every example is a crate of its own and uses a subset of these helpers: the rest would
// be dead code there.
#![allow(dead_code)]

pub(crate) mod telemetry;

use std::error::Error;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use chatstream::DynLlmBackend;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// A non-empty environment variable.
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Logs to stderr (stdout carries the lines the examples print for people and tests), one
/// JSON object per line with the trace id when `LOG_FORMAT=json`, and exports spans over
/// OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (see [`telemetry`]); log lines at
/// `LOG_LEVEL`, `default` when unset: a `tracing` filter, or a level name of Python's
/// logging or Go's logrus (`WARNING`, `CRITICAL`, `FATAL`, `PANIC`), as the seeds use them.
pub(crate) fn init_logging(default: &str) {
    let level = env("LOG_LEVEL").unwrap_or_else(|| default.to_owned());
    let directive = match level.to_ascii_lowercase().as_str() {
        "warning" => "warn".to_owned(),
        "critical" | "fatal" | "panic" => "error".to_owned(),
        other => other.to_owned(),
    };
    let filter = EnvFilter::try_new(&directive).unwrap_or_else(|_| {
        eprintln!("LOG_LEVEL {level:?} is not a level or filter; using {default}");
        EnvFilter::new(default)
    });
    telemetry::init(filter);
}

/// The port number in environment variable `name`, or `default` when it is unset.
pub(crate) fn port(name: &str, default: u16) -> Result<u16, Box<dyn Error>> {
    match env(name) {
        Some(p) => p
            .trim()
            .parse()
            .map_err(|_| format!("{name} must be a port number, got {p:?}").into()),
        None => Ok(default),
    }
}

/// Listens on `host:port`; a failure names the address and the variables to change
/// (`hint`, such as "set HOST or PORT").
pub(crate) async fn bind(host: &str, port: u16, hint: &str) -> Result<TcpListener, Box<dyn Error>> {
    TcpListener::bind((host, port))
        .await
        .map_err(|e| format!("cannot listen on {host}:{port}: {e} ({hint})").into())
}

/// The URL to print for a listening address (`0.0.0.0` → `localhost`).
pub(crate) fn local_url(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("http://localhost:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
}

/// The OpenAI-compatible backend of `OPENAI_URL`, `OPENAI_API_KEY` and `OPENAI_MODEL`
/// (defaults: `http://localhost:11434/v1`, `dummy-token`, `deepseek-r1:8b`).
#[cfg(feature = "openai")]
pub(crate) fn openai_from_env() -> Result<Arc<DynLlmBackend>, Box<dyn Error>> {
    use chatstream::backend::{OpenAiBackend, OpenAiConfig};
    let config = OpenAiConfig::from_env();
    tracing::info!(url = %config.base_url, model = %config.model, "answering with an OpenAI-compatible server");
    Ok(Arc::new(OpenAiBackend::new(config)?))
}

/// [`openai_from_env`] when `OPENAI_URL` or `OPENAI_API_KEY` is set; `None` otherwise (and
/// in a build without feature `openai`, after a warning if either is set), for the example
/// to answer with its scripted backend.
pub(crate) fn configured_openai() -> Result<Option<Arc<DynLlmBackend>>, Box<dyn Error>> {
    #[cfg(feature = "openai")]
    if chatstream::backend::OpenAiConfig::is_configured_in_env() {
        return openai_from_env().map(Some);
    }
    #[cfg(not(feature = "openai"))]
    if env("OPENAI_URL").is_some() || env("OPENAI_API_KEY").is_some() {
        tracing::warn!("OPENAI_URL/OPENAI_API_KEY set, but this build lacks feature `openai`");
    }
    Ok(None)
}

/// The exit code for what `run` returned, after the spans still buffered were exported; an error is printed as `name: message: cause`
/// (each cause not already in the message), not as the `Debug` dump `main` returning an
/// error would print.
pub(crate) fn exit_code(name: &str, result: Result<(), Box<dyn Error>>) -> ExitCode {
    // Export the spans still buffered before the process ends.
    telemetry::shutdown();
    let Err(e) = result else {
        return ExitCode::SUCCESS;
    };
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    eprintln!("{name}: {text}");
    ExitCode::FAILURE
}

/// `app` as a service of the seeds serves it: JSON 404 and 405 errors, CORS for the
/// comma-separated origins of `CORS_ORIGINS` when set (`*`: any), and a trace span per
/// request (`chatstream::axum::trace_layer`: continues a client's W3C `traceparent`).
pub(crate) fn http_edge(app: axum::Router) -> axum::Router {
    let mut app = app
        .fallback(chatstream::axum::not_found)
        .method_not_allowed_fallback(chatstream::axum::method_not_allowed);
    if let Some(origins) = env("CORS_ORIGINS") {
        app = app.layer(chatstream::axum::cors_layer(&origins));
    }
    app.layer(chatstream::axum::trace_layer())
}

/// When `METRICS_PORT` is set, serves a worker's `GET /metrics` (Prometheus text) and
/// `GET /ready` on `METRICS_HOST` (default `0.0.0.0`) : `METRICS_PORT` (`0`: any free port)
/// in the background, and prints `{name}: metrics on {url}/metrics`. Off when unset.
#[cfg(feature = "axum")]
pub(crate) async fn serve_worker_metrics(
    name: &str,
    metrics: chatstream::worker::WorkerMetrics,
    ready: chatstream::axum::ready::Readiness,
) -> Result<(), Box<dyn Error>> {
    let Some(raw) = env("METRICS_PORT") else {
        return Ok(());
    };
    let port: u16 = raw
        .trim()
        .parse()
        .map_err(|_| format!("METRICS_PORT must be a port number, got {raw:?}"))?;
    let host = env("METRICS_HOST").unwrap_or_else(|| "0.0.0.0".to_owned());
    let listener = bind(&host, port, "set METRICS_PORT or METRICS_HOST").await?;
    println!(
        "{name}: metrics on {}/metrics",
        local_url(listener.local_addr()?)
    );
    let app = chatstream::axum::metrics::worker_router(metrics, ready);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    Ok(())
}
