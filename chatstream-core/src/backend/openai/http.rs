//! The HTTP transport under async-openai, and the mapping of its errors to ours.
//!
//! async-openai 0.43's default client wraps every request in `OpenAIRetryLayer::default()`:
//! up to 3 retries on 429, 5xx and connect errors with 100/200/400 ms backoff, or the
//! `Retry-After` header's seconds when present (a rate-limited request could wait minutes).
//! Retrying is the worker's decision ([`Error::is_retryable`] plus broker redelivery), so
//! [`transport`] replaces that stack with a single attempt. It also reads the body of every
//! non-2xx response itself, so that the HTTP status survives whatever the body looks like
//! (async-openai keeps the status only when a 4xx body is an OpenAI-shaped error object;
//! a plain-text 401 from a proxy becomes a status-less "failed to deserialize" error).

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;

use super::decode::error_text;
use crate::Error;

/// Longest error body text kept in a message.
const MAX_MESSAGE: usize = 500;

/// A non-2xx HTTP response, carried through async-openai as `OpenAIError::Boxed`.
#[derive(Debug)]
struct HttpStatusError {
    status: u16,
    message: String,
}

impl fmt::Display for HttpStatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.message)
    }
}

impl std::error::Error for HttpStatusError {}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send + 'static>>;

/// One attempt per request, no retry; non-2xx responses become [`HttpStatusError`].
pub(super) fn transport(
    http: reqwest::Client,
) -> impl tower::Service<
    HttpRequestFactory,
    Response = reqwest::Response,
    Error = OpenAIError,
    Future = ResponseFuture,
> + Clone
       + Send
       + Sync
       + 'static {
    tower::service_fn(move |factory: HttpRequestFactory| -> ResponseFuture {
        let http = http.clone();
        Box::pin(async move {
            let mut request = factory.build().await?;
            // The current span is the backend's `chat` span: its context goes upstream.
            crate::trace::inject(&tracing::Span::current(), &mut |name, value| {
                if let (Ok(name), Ok(value)) = (
                    reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                    reqwest::header::HeaderValue::from_str(&value),
                ) {
                    request.headers_mut().insert(name, value);
                }
            });
            let response = http.execute(request).await?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let body = response.bytes().await.unwrap_or_default();
            let message = status_message(status, &body);
            Err(OpenAIError::Boxed(Box::new(HttpStatusError {
                status: status.as_u16(),
                message,
            })))
        })
    })
}

/// The message of an error response: the OpenAI error object's `message` when there is one
/// (also `{"error": "…"}` as Ollama sends), else the body's text, else the reason phrase.
fn status_message(status: reqwest::StatusCode, body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| error_text(&v));
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    let text = if text.is_empty() {
        status.canonical_reason().unwrap_or("no message").to_owned()
    } else {
        text
    };
    truncate(text)
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Converts an async-openai error into ours.
pub(super) fn map_error(error: OpenAIError) -> Error {
    match error {
        OpenAIError::Boxed(boxed) => match boxed.downcast::<HttpStatusError>() {
            Ok(e) => Error::Backend {
                status: Some(e.status),
                message: e.message,
            },
            Err(other) => Error::Backend {
                status: None,
                message: other.to_string(),
            },
        },
        OpenAIError::ApiError(e) => Error::Backend {
            status: Some(e.status_code.as_u16()),
            message: e.api_error.message,
        },
        OpenAIError::Reqwest(e) if e.is_timeout() => Error::Timeout("LLM HTTP request"),
        // reqwest's own message hides the cause ("error sending request"); keep the chain.
        OpenAIError::Reqwest(e) => Error::unavailable("llm", with_causes(&e)),
        OpenAIError::JSONDeserialize(e, content) => Error::Backend {
            status: None,
            message: truncate(format!("malformed answer chunk ({e}): {content}")),
        },
        OpenAIError::StreamError(e) => Error::Backend {
            status: None,
            message: format!("answer stream broken: {e}"),
        },
        OpenAIError::InvalidArgument(reason) => Error::invalid("LLM request", reason),
        other => Error::Backend {
            status: None,
            message: other.to_string(),
        },
    }
}

/// An error's message followed by its sources' ("…: tcp connect error: Connection refused").
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_messages_come_from_any_error_shape() {
        let s = reqwest::StatusCode::UNAUTHORIZED;
        assert_eq!(
            status_message(
                s,
                br#"{"error":{"message":"bad key","type":"invalid_request_error"}}"#
            ),
            "bad key"
        );
        assert_eq!(
            status_message(s, br#"{"error":"model not found"}"#),
            "model not found"
        );
        assert_eq!(status_message(s, b"<html>nope</html>"), "<html>nope</html>");
        assert_eq!(status_message(s, b""), "Unauthorized");
        assert!(status_message(s, "é".repeat(400).as_bytes()).ends_with('…'));
    }

    #[test]
    fn boxed_status_errors_keep_their_status() {
        let e = map_error(OpenAIError::Boxed(Box::new(HttpStatusError {
            status: 429,
            message: "slow down".into(),
        })));
        assert!(
            matches!(e, Error::Backend { status: Some(429), ref message } if message == "slow down")
        );
        assert!(e.is_retryable());
    }
}
