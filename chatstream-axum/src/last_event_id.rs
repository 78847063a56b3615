//! Where a resuming client says how far it got: the `Last-Event-ID` header, which
//! `EventSource` sends on every reconnect, or the `lastEventId` query parameter, for clients
//! that cannot set headers (a fresh `EventSource` on another page, `curl` scripts).

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri};
use serde::Deserialize;

use crate::ApiError;

/// The header.
pub const HEADER: &str = "last-event-id";
/// The query parameter.
pub const QUERY_PARAM: &str = "lastEventId";

/// The `seq` a client resumes after (`None`: from the start). The header wins over the query
/// parameter, because `EventSource` updates the header on each reconnect while the URL stays
/// as it was first opened. An empty value means none; anything but a decimal `u64` is refused
/// with [`ApiError::BadLastEventId`] (400).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastEventId(pub Option<u64>);

#[derive(Deserialize)]
struct LastEventIdQuery {
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
}

impl LastEventId {
    /// Reads the header, else the query parameter of `uri`.
    pub fn from_parts(headers: &HeaderMap, uri: &Uri) -> Result<Self, ApiError> {
        if let Some(value) = headers.get(HEADER) {
            let text = value.to_str().map_err(|_| ApiError::BadLastEventId {
                value: String::from_utf8_lossy(value.as_bytes())
                    .chars()
                    .take(64)
                    .collect(),
            })?;
            if !text.trim().is_empty() {
                return parse(text).map(|n| Self(Some(n)));
            }
        }
        if uri.query().is_none() {
            return Ok(Self(None));
        }
        let Query(q) = Query::<LastEventIdQuery>::try_from_uri(uri)
            .map_err(|e| ApiError::BadQuery(e.body_text()))?;
        match q.last_event_id {
            Some(text) if !text.trim().is_empty() => parse(&text).map(|n| Self(Some(n))),
            _ => Ok(Self(None)),
        }
    }
}

/// Parses a decimal `u64` (surrounding spaces allowed; no sign, no other characters).
pub fn parse(text: &str) -> Result<u64, ApiError> {
    let t = text.trim();
    let bad = || ApiError::BadLastEventId {
        value: text.chars().take(64).collect(),
    };
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    t.parse().map_err(|_| bad())
}

impl<S: Send + Sync> FromRequestParts<S> for LastEventId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::from_parts(&parts.headers, &parts.uri)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn read(header: Option<&str>, uri: &str) -> Result<Option<u64>, ApiError> {
        let mut headers = HeaderMap::new();
        if let Some(h) = header {
            headers.insert(
                HEADER,
                HeaderValue::from_str(h).map_err(|_| ApiError::MethodNotAllowed)?,
            );
        }
        let uri: Uri = uri.parse().map_err(|_| ApiError::MethodNotAllowed)?;
        LastEventId::from_parts(&headers, &uri).map(|l| l.0)
    }

    #[test]
    fn header_then_query_then_none() {
        assert_eq!(read(Some("7"), "/s?lastEventId=3").ok(), Some(Some(7)));
        assert_eq!(read(None, "/s?lastEventId=3").ok(), Some(Some(3)));
        assert_eq!(read(Some(""), "/s?lastEventId=3").ok(), Some(Some(3)));
        assert_eq!(read(None, "/s?other=1").ok(), Some(None));
        assert_eq!(read(None, "/s").ok(), Some(None));
        assert_eq!(read(Some(" 12 "), "/s").ok(), Some(Some(12)));
        assert_eq!(read(None, "/s?lastEventId=").ok(), Some(None));
    }

    #[test]
    fn non_numbers_are_refused() {
        for bad in ["abc", "-1", "+1", "1.5", "99999999999999999999999"] {
            assert!(
                matches!(read(Some(bad), "/s"), Err(ApiError::BadLastEventId { .. })),
                "{bad}"
            );
            let uri = format!("/s?lastEventId={}", bad.replace('+', "%2B"));
            assert!(
                matches!(read(None, &uri), Err(ApiError::BadLastEventId { .. })),
                "{bad}"
            );
        }
    }
}
