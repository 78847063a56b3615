//! `GET /metrics`: valid Prometheus text whose values move when a stream is served, and
//! the request spans of `trace_layer`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::Router;
use chatstream_axum::metrics::{Metrics, CONTENT_TYPE};
use chatstream_axum::quickstart::SubmitResponse;
use chatstream_axum::{quickstart, seed001, trace_layer};
use chatstream_core::ScriptedBackend;
use common::*;
use tower::ServiceExt;

/// One sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn app(p: &Pipeline, metrics: &Metrics) -> Router {
    seed001::router(p.state.clone())
        .merge(quickstart::router(p.state.clone()))
        .merge(metrics.router())
        .fallback(chatstream_axum::not_found)
        .layer(metrics.layer())
        .layer(trace_layer())
}

async fn call(app: &Router, request: axum::http::Request<Body>) -> axum::response::Response {
    match app.clone().oneshot(request).await {
        Ok(r) => r,
        Err(e) => match e {},
    }
}

/// Parses the exposition, failing on any line that is neither a `# HELP`/`# TYPE` comment
/// nor `name{labels} value`, and on samples of an undeclared family.
fn parse(text: &str) -> Vec<Sample> {
    let mut families = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(!help.is_empty(), "HELP without text: {line}");
            assert!(valid_name(name), "{line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(
                ["counter", "gauge", "summary"].contains(&kind),
                "bad TYPE: {line}"
            );
            families.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                (name, parse_labels(inner, line))
            }
            None => (series, BTreeMap::new()),
        };
        assert!(valid_name(name), "{line}");
        let family = ["_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| families.get(*f).is_some_and(|k| k == "summary"))
            })
            .unwrap_or(name);
        assert!(
            families.contains_key(family),
            "sample before its TYPE: {line}"
        );
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_labels(inner: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label in {line:?}"));
        assert!(valid_name(key), "bad label name in {line:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("dangling escape in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        labels.insert(key.to_owned(), value);
        rest = after[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&after[end + 1..]);
    }
    labels
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.2)
        .unwrap_or_else(|| panic!("no {name} {labels:?}"))
}

async fn scrape(app: &Router) -> Vec<Sample> {
    let resp = call(app, get("/metrics")).await;
    assert_eq!(resp.status(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    assert_eq!(ct, Some(CONTENT_TYPE));
    parse(&body_text(resp).await)
}

/// The two tests of this file run one at a time: tracing caches each callsite's interest
/// globally, and a callsite first hit on another test's thread (where no subscriber listens)
/// can be cached as uninteresting while the span test's thread-local subscriber is being
/// installed, which lost the `response` event once in a workspace run.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn metrics_parse_and_move_after_a_stream() {
    let _serial = SERIAL.lock().await;
    let p = Pipeline::new(ScriptedBackend::default());
    let metrics = Metrics::new(p.gateway.clone());
    let app = app(&p, &metrics);

    let before = scrape(&app).await;
    assert_eq!(value(&before, "chatstream_tokens_relayed_total", &[]), 0.0);
    assert_eq!(
        value(&before, "chatstream_time_to_first_token_seconds_count", &[]),
        0.0
    );

    let resp = call(&app, post_json("/api/chat", r#"{"text":"hi"}"#)).await;
    assert_eq!(resp.status(), 202);
    let submitted: SubmitResponse =
        serde_json::from_str(&body_text(resp).await).unwrap_or_else(|e| panic!("{e}"));
    let events = sse_events(call(&app, get(&submitted.stream)).await).await;
    let tokens = answer_text(&events);
    assert!(!tokens.is_empty());
    let _ = call(&app, get("/nowhere/at/all")).await;

    let after = scrape(&app).await;
    let relayed = value(&after, "chatstream_tokens_relayed_total", &[]);
    assert!(relayed >= 3.0, "{relayed}");
    assert_eq!(value(&after, "chatstream_clients_opened_total", &[]), 1.0);
    assert_eq!(value(&after, "chatstream_clients_active", &[]), 0.0);
    assert_eq!(
        value(&after, "chatstream_client_disconnects_total", &[]),
        0.0
    );
    assert_eq!(
        value(&after, "chatstream_time_to_first_token_seconds_count", &[]),
        1.0
    );
    assert!(value(&after, "chatstream_time_to_first_token_seconds_sum", &[]) > 0.0);
    assert!(value(&after, "chatstream_active_streams", &[]) >= 0.0);

    let requests = "chatstream_http_requests_total";
    let post = [
        ("method", "POST"),
        ("route", "/api/chat"),
        ("status", "202"),
    ];
    assert_eq!(value(&after, requests, &post), 1.0);
    let stream_route = "/api/stream/{session_id}/{chat_message_id}";
    let stream = [
        ("method", "GET"),
        ("route", stream_route),
        ("status", "200"),
    ];
    assert_eq!(value(&after, requests, &stream), 1.0);
    let unmatched = [("route", "unmatched"), ("status", "404")];
    assert_eq!(
        value(&after, requests, &unmatched),
        1.0,
        "paths are not labels"
    );
    let scrapes = [("route", "/metrics"), ("status", "200")];
    assert_eq!(value(&after, requests, &scrapes), 1.0, "the first scrape");
    let duration = "chatstream_http_request_duration_seconds_count";
    assert_eq!(value(&after, duration, &post), 1.0);
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn each_request_gets_a_span_with_route_status_and_latency() {
    let _serial = SERIAL.lock().await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let p = Pipeline::new(ScriptedBackend::default());
    let app = app(&p, &Metrics::new(p.gateway.clone()));
    let resp = call(&app, get("/health")).await;
    assert_eq!(resp.status(), 200);

    let logs =
        String::from_utf8_lossy(&captured.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    let line = logs
        .lines()
        .find(|l| l.contains("response"))
        .unwrap_or_else(|| panic!("no response event in {logs}"));
    for field in [
        "method=GET",
        "route=/health",
        "path=/health",
        "status=200",
        "latency_ms=",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
}
