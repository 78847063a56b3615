//! The metrics port of a worker-only process: `GET /metrics` and `GET /ready`.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use chatstream_core::worker::WorkerMetrics;

use super::CONTENT_TYPE;
use crate::ready::Readiness;

/// `GET /metrics` with the worker's metrics (`chatstream_worker_*`) in Prometheus' text
/// format, and `GET /ready` answering `ready`'s probe: what a worker process serves on its
/// `METRICS_PORT`.
#[allow(clippy::needless_pass_by_value)] // taken by value as the other routers are
pub fn worker_router(metrics: WorkerMetrics, ready: Readiness) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = metrics.render_string();
                async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response() }
            }),
        )
        .merge(ready.router())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use chatstream_core::{
        ChatRequest, Gateway, InMemoryBroker, ScriptedBackend, StreamKey, Worker,
    };
    use futures::StreamExt;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[tokio::test]
    async fn a_workers_metrics_count_its_answers() {
        let broker = InMemoryBroker::new();
        let handle = Worker::builder(
            Arc::new(broker.message_source()),
            Arc::new(broker.clone()),
            Arc::new(ScriptedBackend::default().with_delay(Duration::ZERO)),
        )
        .build()
        .spawn();
        let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker)).build();
        for i in 0..3 {
            let mut request = ChatRequest::new(StreamKey::new("s", format!("m{i}")), "hi");
            request.model = Some("m-1".to_owned());
            let mut stream = gateway.submit(request).await.expect("submit");
            while stream.next().await.is_some() {}
        }
        let app = worker_router(handle.metrics(), Readiness::new());
        let request = Request::get("/metrics")
            .body(Body::empty())
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let completed = "chatstream_worker_requests_total{model=\"m-1\",outcome=\"completed\"}";
        assert_eq!(value(&text, completed), Some(3.0), "{text}");
        let rate = "chatstream_worker_tokens_per_second_count{model=\"m-1\"}";
        assert_eq!(value(&text, rate), Some(3.0), "{text}");
        let ttft = "chatstream_worker_time_to_first_token_seconds_count{model=\"m-1\"}";
        assert_eq!(value(&text, ttft), Some(3.0), "{text}");
        assert_eq!(
            value(&text, "chatstream_worker_requests_in_flight"),
            Some(0.0)
        );
        let published = value(&text, "chatstream_worker_broker_messages_published_total");
        let latency = value(&text, "chatstream_worker_publish_duration_seconds_count");
        assert!(published.is_some_and(|p| p >= 3.0), "{text}");
        assert_eq!(published, latency, "one latency per publish");
        assert!(
            value(
                &text,
                "chatstream_worker_completion_tokens_total{model=\"m-1\"}"
            )
            .is_some_and(|t| t > 0.0),
            "{text}"
        );

        let request = Request::get("/ready").body(Body::empty()).expect("request");
        let response = app.oneshot(request).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        handle.shutdown().await;
    }
}
