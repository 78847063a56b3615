//! CORS from a `CORS_ORIGINS`-style list, as the seeds configure it.

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// A CORS layer allowing the comma-separated `origins` (`*` allows any), the methods the
/// routers use, and the headers their clients send (`Content-Type`, `Last-Event-ID`).
/// Origins that are not valid header values are skipped with a warning.
pub fn cors_layer(origins: &str) -> CorsLayer {
    let list: Vec<&str> = origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .collect();
    let allow = if list.contains(&"*") {
        AllowOrigin::any()
    } else {
        let values: Vec<HeaderValue> = list
            .iter()
            .filter_map(|o| match HeaderValue::from_str(o) {
                Ok(v) => Some(v),
                Err(_) => {
                    tracing::warn!(origin = %o, "ignoring an invalid CORS origin");
                    None
                }
            })
            .collect();
        AllowOrigin::list(values)
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
        ])
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    async fn preflight(origins: &str, origin: &str) -> Option<String> {
        let app = Router::new()
            .route("/x", get(|| async { "ok" }))
            .layer(cors_layer(origins));
        let req = Request::builder()
            .method("OPTIONS")
            .uri("/x")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "last-event-id")
            .body(Body::empty())
            .ok()?;
        let resp = app.oneshot(req).await.ok()?;
        let allowed = resp.headers().get("access-control-allow-origin")?;
        allowed.to_str().ok().map(str::to_owned)
    }

    #[tokio::test]
    async fn listed_origins_pass_and_others_do_not() {
        let list = "http://a.example, http://b.example";
        assert_eq!(
            preflight(list, "http://b.example").await.as_deref(),
            Some("http://b.example")
        );
        assert_eq!(preflight(list, "http://evil.example").await, None);
        assert_eq!(
            preflight("*", "http://any.example").await.as_deref(),
            Some("*")
        );
    }
}
