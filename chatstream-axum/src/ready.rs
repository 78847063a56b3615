//! `GET /ready`: readiness for load balancers and Kubernetes probes.
//!
//! `200 {"status":"ready","checks":{"rabbitmq":"up",…}}` while every
//! [`HealthCheck`](chatstream_core::HealthCheck) passes; `503` with a JSON reason while one fails or the process is
//! shutting down:
//!
//! ```text
//! 503 {"status":"unavailable","reason":"rabbitmq: …","checks":{"rabbitmq":"…"}}
//! 503 {"status":"shutting_down","reason":"shutting down","checks":{}}
//! ```
//!
//! Seed 001's `GET /health` stays what it was (liveness: the process answers); `/ready`
//! says whether it can serve. Each check runs with a timeout ([`Readiness::timeout`],
//! 2 s by default); checks run concurrently on every probe, nothing is cached.
//!
//! ```
//! # use std::sync::Arc;
//! use chatstream_axum::ready::Readiness;
//! # async fn run(conn: Arc<dyn chatstream_core::HealthCheck>) {
//! let ready = Readiness::new().check(conn);
//! let app: axum::Router = axum::Router::new().merge(ready.router());
//! // chatstream_axum::serve(listener, app, gateway, ready.shutdown_on(shutdown_signal()))
//! # let _ = app;
//! # }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chatstream_core::DynHealthCheck;
use serde::Serialize;

/// Checks one probe runs, and whether the process is shutting down. Cheap to clone; clones
/// share the shutdown flag.
#[derive(Debug, Clone)]
pub struct Readiness {
    checks: Vec<Arc<DynHealthCheck>>,
    shutting_down: Arc<AtomicBool>,
    timeout: Duration,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

/// The body of `GET /ready`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReadyBody {
    /// `ready`, `unavailable` or `shutting_down`.
    pub status: &'static str,
    /// Why not ready (absent when ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Each check by name: `up`, or its error.
    pub checks: BTreeMap<String, String>,
}

impl Readiness {
    /// No checks: ready until shutdown.
    pub fn new() -> Self {
        Self {
            checks: Vec::new(),
            shutting_down: Arc::new(AtomicBool::new(false)),
            timeout: Duration::from_secs(2),
        }
    }

    /// Adds a check (a broker connection, a store).
    pub fn check(mut self, check: Arc<DynHealthCheck>) -> Self {
        self.checks.push(check);
        self
    }

    /// Sets how long one check may take before it counts as failed (default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// From now on every probe answers 503 `shutting_down`.
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// `signal`, which also marks the process as shutting down when it resolves: pass it to
    /// [`serve`](crate::serve()) so that probes fail while open streams are being ended.
    pub fn shutdown_on<S>(&self, signal: S) -> impl Future<Output = ()> + Send + 'static
    where
        S: Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        async move {
            signal.await;
            this.set_shutting_down();
        }
    }

    /// Runs the checks.
    pub async fn probe(&self) -> (StatusCode, ReadyBody) {
        if self.shutting_down.load(Ordering::SeqCst) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                ReadyBody {
                    status: "shutting_down",
                    reason: Some("shutting down".to_owned()),
                    checks: BTreeMap::new(),
                },
            );
        }
        let results = futures::future::join_all(self.checks.iter().map(|c| async move {
            let result = match tokio::time::timeout(self.timeout, c.check()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {:?}", self.timeout)),
            };
            (c.name().to_owned(), result)
        }))
        .await;
        let mut checks = BTreeMap::new();
        let mut reason = None;
        for (name, result) in results {
            match result {
                Ok(()) => {
                    checks.insert(name, "up".to_owned());
                }
                Err(e) => {
                    reason.get_or_insert_with(|| format!("{name}: {e}"));
                    checks.insert(name, e);
                }
            }
        }
        match reason {
            None => (
                StatusCode::OK,
                ReadyBody {
                    status: "ready",
                    reason: None,
                    checks,
                },
            ),
            Some(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ReadyBody {
                    status: "unavailable",
                    reason: Some(reason),
                    checks,
                },
            ),
        }
    }

    /// The probe as a response.
    pub async fn response(&self) -> Response {
        let (status, body) = self.probe().await;
        (status, Json(body)).into_response()
    }

    /// `GET /ready`.
    pub fn router(&self) -> Router {
        let this = self.clone();
        Router::new().route(
            "/ready",
            get(move || {
                let this = this.clone();
                async move { this.response().await }
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use async_trait::async_trait;
    use axum::body::Body;
    use axum::http::Request;
    use chatstream_core::{Error, HealthCheck};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    #[derive(Debug, Default)]
    struct Switch(AtomicBool);

    #[async_trait]
    impl HealthCheck for Switch {
        fn name(&self) -> &str {
            "broker"
        }
        async fn check(&self) -> chatstream_core::Result<()> {
            if self.0.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(Error::unavailable("broker", "connection refused"))
            }
        }
    }

    async fn get_ready(app: Router) -> (StatusCode, serde_json::Value) {
        let request = Request::get("/ready").body(Body::empty()).expect("request");
        let response = app.oneshot(request).await.expect("response");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    #[tokio::test]
    async fn ready_follows_its_checks_and_shutdown() {
        let switch = Arc::new(Switch::default());
        let ready = Readiness::new().check(switch.clone());

        let (status, body) = get_ready(ready.router()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "unavailable");
        let reason = body["reason"].as_str().expect("reason");
        assert!(reason.starts_with("broker: "), "{reason}");
        assert!(reason.contains("connection refused"), "{reason}");

        switch.0.store(true, Ordering::SeqCst);
        let (status, body) = get_ready(ready.router()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            serde_json::json!({"status": "ready", "checks": {"broker": "up"}})
        );

        ready.shutdown_on(async {}).await;
        let (status, body) = get_ready(ready.router()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "shutting_down");
    }

    #[derive(Debug)]
    struct Hangs;

    #[async_trait]
    impl HealthCheck for Hangs {
        fn name(&self) -> &str {
            "store"
        }
        async fn check(&self) -> chatstream_core::Result<()> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_check_that_hangs_fails_after_the_timeout() {
        let ready = Readiness::new()
            .check(Arc::new(Hangs))
            .timeout(Duration::from_millis(20));
        let (status, body) = get_ready(ready.router()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["reason"], "store: no answer within 20ms");
    }
}
