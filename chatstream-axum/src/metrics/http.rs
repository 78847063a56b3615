//! Counting HTTP requests by method, matched route and status: a tower layer.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::MatchedPath;
use axum::http::{Method, Request, Response, StatusCode};
use tower::{Layer, Service};

/// The route label of requests that matched no route (their paths are not used as labels,
/// so that scanners cannot grow the set of series without bound).
pub const UNMATCHED: &str = "unmatched";

/// `(method, route, status)`.
pub(super) type SeriesKey = (Method, String, StatusCode);

/// Requests and their summed duration, per series.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Series {
    pub(super) count: u64,
    pub(super) seconds: f64,
}

/// The HTTP counters shared by the layer and the `/metrics` route.
#[derive(Debug, Default)]
pub(super) struct HttpStats {
    series: Mutex<BTreeMap<SeriesKey, Series>>,
}

impl HttpStats {
    fn record(&self, method: Method, route: String, status: StatusCode, took: Duration) {
        let mut series = self.lock();
        let s = series.entry((method, route, status)).or_default();
        s.count += 1;
        s.seconds += took.as_secs_f64();
    }

    /// A copy of every series, ordered.
    pub(super) fn snapshot(&self) -> Vec<(SeriesKey, Series)> {
        self.lock().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<SeriesKey, Series>> {
        self.series.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counts each request by method, matched route and status, and sums the time to its
/// response head. Made by [`Metrics::layer`](super::Metrics::layer); add it with
/// `Router::layer` so that the matched route is known.
#[derive(Debug, Clone)]
pub struct HttpMetricsLayer {
    pub(super) stats: Arc<HttpStats>,
}

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetricsService {
            inner,
            stats: self.stats.clone(),
        }
    }
}

/// The service of [`HttpMetricsLayer`].
#[derive(Debug, Clone)]
pub struct HttpMetricsService<S> {
    inner: S,
    stats: Arc<HttpStats>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> Service<Request<B>> for HttpMetricsService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = request.method().clone();
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| UNMATCHED.to_owned(), |p| p.as_str().to_owned());
        let started = Instant::now();
        let response = self.inner.call(request);
        let stats = self.stats.clone();
        Box::pin(async move {
            let response = response.await;
            if let Ok(r) = &response {
                stats.record(method, route, r.status(), started.elapsed());
            }
            response
        })
    }
}
