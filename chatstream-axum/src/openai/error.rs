//! Errors in OpenAI's shape, so that the official SDKs parse them:
//! `{"error": {"message", "type", "param", "code"}}`.

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chatstream_core::Fault;
use serde::Serialize;

use crate::ApiError;

/// An error of the OpenAI-compatible routes.
///
/// | status | `type` | when |
/// |---|---|---|
/// | 400 | `invalid_request_error` | body not JSON, wrong shape, no messages, unsupported option |
/// | 404 | `invalid_request_error` (`code: model_not_found`) | unknown model, when the route is strict |
/// | 413 | `invalid_request_error` (`code: payload_too_large`) | body over the limit |
/// | 5xx | `server_error` | the broker, the gateway or the model failed |
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct OpenAiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// `message`.
    pub message: String,
    /// `type`: `invalid_request_error` or `server_error`.
    pub kind: &'static str,
    /// `param`: the request field at fault, when one is.
    pub param: Option<String>,
    /// `code`: a short machine-readable code, when there is one.
    pub code: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl OpenAiError {
    /// A 400 `invalid_request_error`.
    pub fn invalid_request(message: impl Into<String>, param: Option<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }

    /// A `server_error` with this status and code.
    pub fn server(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: Some(code.to_owned()),
        }
    }

    /// A 404 `model_not_found`.
    pub fn model_not_found(model: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("The model {model:?} does not exist."),
            kind: "invalid_request_error",
            param: Some("model".to_owned()),
            code: Some("model_not_found".to_owned()),
        }
    }

    /// A body that is not JSON or not a chat completion request.
    pub fn bad_json(e: &serde_json::Error) -> Self {
        let what = if e.is_data() {
            "The request body is not a valid chat completion request"
        } else {
            "We could not parse the JSON body of your request"
        };
        Self::invalid_request(format!("{what}: {e}"), None)
    }

    /// A body that could not be read: over the limit (413) or cut off (400).
    pub fn body_rejection(rejection: &BytesRejection, limit: usize) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!("The request body is larger than {limit} bytes."),
                kind: "invalid_request_error",
                param: None,
                code: Some("payload_too_large".to_owned()),
            }
        } else {
            Self::invalid_request(rejection.body_text(), None)
        }
    }

    /// How a stream that could not be completed is reported by the non-streaming route.
    pub fn from_fault(fault: &Fault) -> Self {
        let status = match fault {
            Fault::TimedOut => StatusCode::GATEWAY_TIMEOUT,
            Fault::HistoryLost => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        let message = match fault {
            // The broker's message may name hosts: keep it in the log.
            Fault::Unavailable(_) => "service temporarily unavailable".to_owned(),
            other => other.message(),
        };
        tracing::warn!(fault = %fault.message(), "completion could not be finished");
        Self::server(status, fault.code(), message)
    }
}

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        let status = e.status();
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        Self {
            status,
            message: e.client_message(),
            kind: if status.is_server_error() {
                "server_error"
            } else {
                "invalid_request_error"
            },
            param: None,
            code: Some(e.code().to_owned()),
        }
    }
}

impl From<chatstream_core::Error> for OpenAiError {
    fn from(e: chatstream_core::Error) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Detail {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code.as_deref(),
            },
        };
        (self.status, Json(body)).into_response()
    }
}
