//! The one error type of the HTTP edge, and how each variant reaches the client.

use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

/// Everything that can go wrong in a chatstream route. Each variant maps to one status code
/// and the JSON body `{"error": {"code": "…", "message": "…"}}`; axum's plain-text
/// rejections are converted into it so they never reach a client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// `Last-Event-ID` (header or `lastEventId` query parameter) is not a sequence number.
    #[error("Last-Event-ID must be a non-negative integer, got {value:?}")]
    BadLastEventId {
        /// The value received (cut to 64 characters).
        value: String,
    },
    /// The query string could not be parsed.
    #[error("invalid query string: {0}")]
    BadQuery(String),
    /// A path parameter is missing, malformed or not acceptable.
    #[error("invalid path: {0}")]
    BadPath(String),
    /// The body is not valid JSON.
    #[error("invalid JSON: {0}")]
    BadJson(String),
    /// The body is JSON but not of the expected shape (missing field, wrong type).
    #[error("invalid request body: {0}")]
    BadBody(String),
    /// A field is well-formed but not acceptable (empty text, malformed id).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// The body is not declared as `application/json`.
    #[error("expected a request with `Content-Type: application/json`")]
    UnsupportedMediaType,
    /// The body is larger than the route accepts.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// No route matches the path.
    #[error("no route for {0}")]
    NotFound(String),
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// No valid credentials: missing, unknown or expired bearer or stream token. Answered
    /// with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials that do not grant this (a stream token of another stream).
    #[error("{0}")]
    Forbidden(String),
    /// The thing named does not exist, or belongs to someone else (the two are answered
    /// alike so that existence does not leak).
    #[error("{0} not found")]
    Missing(&'static str),
    /// The deployment is missing something a route needs (no authenticator, no store).
    #[error("misconfigured: {0}")]
    Misconfigured(String),
    /// The gateway or the broker behind it failed.
    #[error(transparent)]
    Gateway(#[from] chatstream_core::Error),
}

impl ApiError {
    /// The status code this error is answered with.
    pub fn status(&self) -> StatusCode {
        use chatstream_core::Error as E;
        match self {
            ApiError::BadLastEventId { .. }
            | ApiError::BadQuery(_)
            | ApiError::BadPath(_)
            | ApiError::BadJson(_)
            | ApiError::BadBody(_)
            | ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Missing(_) => StatusCode::NOT_FOUND,
            ApiError::Misconfigured(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Gateway(e) => match e {
                E::Decode { .. } | E::Invalid { .. } => StatusCode::BAD_REQUEST,
                E::HistoryLost { .. } => StatusCode::GONE,
                E::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
                E::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                E::Backend { .. } => StatusCode::BAD_GATEWAY,
                E::Closed | E::Unavailable { .. } | E::SlowConsumer(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// A short machine-readable code (`invalid_last_event_id`, `payload_too_large`, …).
    pub fn code(&self) -> &'static str {
        use chatstream_core::Error as E;
        match self {
            ApiError::BadLastEventId { .. } => "invalid_last_event_id",
            ApiError::BadQuery(_) => "invalid_query",
            ApiError::BadPath(_) => "invalid_path",
            ApiError::BadJson(_) => "invalid_json",
            ApiError::BadBody(_) => "invalid_body",
            ApiError::Invalid { .. } => "invalid_field",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::NotFound(_) | ApiError::Missing(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Misconfigured(_) => "internal",
            ApiError::Gateway(e) => match e {
                E::Decode { .. } | E::Invalid { .. } => "invalid_request",
                E::HistoryLost { .. } => "history_lost",
                E::Unsupported(_) => "unsupported",
                E::Timeout(_) => "timeout",
                E::Backend { .. } => "backend_error",
                E::Closed | E::Unavailable { .. } | E::SlowConsumer(_) => "unavailable",
                _ => "internal",
            },
        }
    }

    /// The message shown to the client. Server-side failures get a generic text (the detail
    /// is logged), so broker addresses and internal errors do not leak.
    pub fn client_message(&self) -> String {
        if self.status().is_server_error() {
            match self.status() {
                StatusCode::SERVICE_UNAVAILABLE => "service temporarily unavailable".to_owned(),
                StatusCode::GATEWAY_TIMEOUT => "the server timed out".to_owned(),
                StatusCode::BAD_GATEWAY => "the model backend failed".to_owned(),
                StatusCode::NOT_IMPLEMENTED => "not supported by this deployment".to_owned(),
                _ => "internal server error".to_owned(),
            }
        } else {
            self.to_string()
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.client_message(),
            },
        }
    }
}

/// The JSON body of every error response: `{"error": {"code": "…", "message": "…"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable code, see [`ApiError::code`].
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, "request refused");
        }
        let mut response = (status, Json(self.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// A fallback handler answering unknown paths with a JSON 404:
/// `Router::fallback(chatstream_axum::not_found)`.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

/// A handler answering a known path with the wrong method with a JSON 405:
/// `Router::method_not_allowed_fallback(chatstream_axum::method_not_allowed)`.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_do_not_leak_details() {
        let e = ApiError::from(chatstream_core::Error::unavailable(
            "amqp",
            "amqp://secret@host",
        ));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code(), "unavailable");
        assert!(!e.client_message().contains("secret"));
    }

    #[test]
    fn client_errors_explain_themselves() {
        let e = ApiError::BadLastEventId {
            value: "abc".into(),
        };
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.body().error.code, "invalid_last_event_id");
        assert!(e.body().error.message.contains("\"abc\""));
    }
}
