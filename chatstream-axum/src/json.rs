//! A JSON body extractor whose rejections are [`ApiError`]s (JSON bodies), never axum's
//! plain-text ones.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// Like [`axum::Json`], but a malformed body becomes an [`ApiError`]:
///
/// | problem | status | code |
/// |---|---|---|
/// | not JSON | 400 | `invalid_json` |
/// | JSON of the wrong shape (missing field, wrong type) | 400 | `invalid_body` |
/// | no `Content-Type: application/json` | 415 | `unsupported_media_type` |
/// | larger than the route's body limit | 413 | `payload_too_large` |
///
/// The body limit is axum's [`DefaultBodyLimit`](axum::extract::DefaultBodyLimit) layer;
/// wrap this in a router that sets one.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map(|l| l.0)
            .unwrap_or(crate::DEFAULT_BODY_LIMIT);
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(map_rejection(&rejection, limit)),
        }
    }
}

/// The body limit in force for a request, put into its extensions by the router that sets
/// the limit, so that a 413 can say what the limit is.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

fn map_rejection(rejection: &JsonRejection, limit: usize) -> ApiError {
    match rejection {
        JsonRejection::JsonSyntaxError(e) => ApiError::BadJson(e.body_text()),
        JsonRejection::JsonDataError(e) => ApiError::BadBody(e.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge { limit }
        }
        other => ApiError::BadBody(other.body_text()),
    }
}
