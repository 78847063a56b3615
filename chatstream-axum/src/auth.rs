//! Bearer authentication and per-stream authorization.
//!
//! - An [`Authenticator`] maps an API bearer token to a [`Principal`] (a user id and,
//!   optionally, its organisation); [`StaticTokens`] is a fixed table, e.g. from
//!   `CHATSTREAM_API_TOKENS`, [`JwtAuthenticator`] verifies HS256 or RS256 JWTs.
//! - [`Principal`] is also an extractor: a handler taking one answers `401` with
//!   `WWW-Authenticate: Bearer` and a JSON error unless `Authorization: Bearer <token>` names
//!   a known user.
//! - A [`StreamTokenSigner`] makes short-lived tokens that open one stream, for clients that
//!   cannot send headers (`EventSource`): `?token=…` or `Authorization: Bearer st1.…`.
//! - [`authorize_stream`] decides who may read a stream when per-stream authorization is on
//!   ([`ChatstreamState::with_stream_auth`]): the principal that submitted it (kept in the
//!   state's [`StreamRegistry`](chatstream_core::StreamRegistry), shared by every instance
//!   when it lives in a store) or anyone holding its stream token (any instance sharing the
//!   secret). Refusals are logged at `warn` with who, which stream and why.
//!
//! | refusal | status |
//! |---|---|
//! | no credentials, unknown bearer, malformed or expired stream token | 401 `unauthorized` |
//! | stream token made for another stream | 403 `forbidden` |
//! | a user that did not submit the stream (or a stream the registry does not know) | 404 `not_found`, as for seed 002's "another user's thread", so existence does not leak |

mod jwt;
mod signer;
mod static_tokens;

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{FromRef, FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Uri};
use chatstream_core::StreamKey;
use serde::{Deserialize, Serialize};

pub use jwt::{
    looks_like_jwt, JwtAuthenticator, DEFAULT_ORG_CLAIM, JWT_AUDIENCE_ENV, JWT_HS256_SECRET_ENV,
    JWT_ISSUER_ENV, JWT_ORG_CLAIM_ENV, JWT_RS256_KEY_ENV,
};
pub use signer::{is_stream_token, StreamTokenSigner, DEFAULT_TOKEN_TTL, SECRET_ENV, TOKEN_PREFIX};
pub use static_tokens::{StaticTokens, TOKENS_ENV};

use crate::{ApiError, ChatstreamState};

/// The query parameter carrying a stream token.
pub const TOKEN_QUERY_PARAM: &str = "token";

/// An authenticated user id, and the organisation it acts for when the authenticator
/// knows one. It serializes as the user id alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    id: Arc<str>,
    org: Option<Arc<str>>,
}

impl Principal {
    /// A principal named `id`, in no organisation.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self {
            id: id.into(),
            org: None,
        }
    }

    /// The same user acting for organisation `org` (seed 002: it sees and writes that
    /// organisation's threads).
    pub fn with_org(mut self, org: impl Into<Arc<str>>) -> Self {
        self.org = Some(org.into());
        self
    }

    /// The user id.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The organisation, when there is one.
    pub fn org(&self) -> Option<&str> {
        self.org.as_deref()
    }
}

impl Serialize for Principal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.id)
    }
}

impl<'de> Deserialize<'de> for Principal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id)
    }
}

impl From<&str> for Principal {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for Principal {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

/// Maps an API bearer token to the user it belongs to.
#[async_trait]
pub trait Authenticator: Send + Sync + Debug + 'static {
    /// The principal of `bearer`; `Ok(None)` when the token is unknown. An `Err` means the
    /// check itself failed (an identity service is down) and is answered as such.
    async fn authenticate(&self, bearer: &str) -> Result<Option<Principal>, ApiError>;
}

/// An authenticator as a trait object.
pub type DynAuthenticator = dyn Authenticator;

#[async_trait]
impl<T: Authenticator + ?Sized> Authenticator for Arc<T> {
    async fn authenticate(&self, bearer: &str) -> Result<Option<Principal>, ApiError> {
        (**self).authenticate(bearer).await
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive);
/// `None` when there is no such header. Anything else in the header is a 401.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || ApiError::Unauthorized("expected `Authorization: Bearer <token>`".into());
    let text = value.to_str().map_err(|_| bad())?;
    let (scheme, token) = text.trim().split_once(' ').ok_or_else(bad)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(bad());
    }
    Ok(Some(token))
}

/// The principal of the request's bearer token, with the state's authenticator.
pub async fn authenticate(
    state: &ChatstreamState,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    let Some(token) = bearer_token(headers)? else {
        let e = ApiError::Unauthorized("a bearer token is required".into());
        return Err(refused(None, None, e));
    };
    authenticate_token(state, token)
        .await
        .map_err(|e| refused(None, None, e))
}

pub(crate) async fn authenticate_token(
    state: &ChatstreamState,
    token: &str,
) -> Result<Principal, ApiError> {
    let Some(authenticator) = state.authenticator() else {
        return Err(ApiError::Misconfigured(
            "authentication is required but no authenticator is configured".into(),
        ));
    };
    authenticator
        .authenticate(token)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("invalid bearer token".into()))
}

/// Logs a refused attempt at `warn` and gives the error back (server-side failures are
/// logged where they are answered, not here).
pub(crate) fn refused(
    who: Option<&Principal>,
    stream: Option<&StreamKey>,
    error: ApiError,
) -> ApiError {
    if error.status().is_server_error() {
        return error;
    }
    let who = who.map_or("anonymous", Principal::as_str);
    match stream {
        Some(key) => {
            tracing::warn!(principal = who, stream = %key, reason = %error, "stream access refused")
        }
        None => tracing::warn!(principal = who, reason = %error, "request refused"),
    }
    error
}

impl<S> FromRequestParts<S> for Principal
where
    S: Send + Sync,
    ChatstreamState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        authenticate(&ChatstreamState::from_ref(state), &parts.headers).await
    }
}

/// Who submits a request on a route whose per-stream authorization is switchable: the
/// authenticated principal when [`ChatstreamState::stream_auth`] is on (401 without a
/// valid bearer token), `None` when it is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitter(pub Option<Principal>);

impl<S> FromRequestParts<S> for Submitter
where
    S: Send + Sync,
    ChatstreamState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = ChatstreamState::from_ref(state);
        if !state.stream_auth() {
            return Ok(Self(None));
        }
        authenticate(&state, &parts.headers)
            .await
            .map(|p| Self(Some(p)))
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The credential a stream request presents: `?token=` first, else the bearer token.
pub fn stream_credential(headers: &HeaderMap, uri: &Uri) -> Result<Option<String>, ApiError> {
    if uri.query().is_some() {
        let Query(q) = Query::<TokenQuery>::try_from_uri(uri)
            .map_err(|e| ApiError::BadQuery(e.body_text()))?;
        if let Some(t) = q.token.filter(|t| !t.is_empty()) {
            return Ok(Some(t));
        }
    }
    Ok(bearer_token(headers)?.map(str::to_owned))
}

/// How a stream read was allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamAccess {
    /// Per-stream authorization is off for this state.
    Open,
    /// A valid stream token for this stream.
    Token,
    /// The principal that submitted the stream.
    Owner(Principal),
}

/// Decides whether the request may read `key` (see the [module docs](self)). With
/// per-stream authorization off, everyone may.
pub async fn authorize_stream(
    state: &ChatstreamState,
    headers: &HeaderMap,
    uri: &Uri,
    key: &StreamKey,
) -> Result<StreamAccess, ApiError> {
    if !state.stream_auth() {
        return Ok(StreamAccess::Open);
    }
    let Some(credential) = stream_credential(headers, uri)? else {
        let e = ApiError::Unauthorized("a bearer token or stream token is required".into());
        return Err(refused(None, Some(key), e));
    };
    if is_stream_token(&credential) {
        return match state.stream_signer().verify(key, &credential) {
            Ok(()) => Ok(StreamAccess::Token),
            Err(e) => Err(refused(None, Some(key), e)),
        };
    }
    let principal = authenticate_token(state, &credential)
        .await
        .map_err(|e| refused(None, Some(key), e))?;
    let record = state.stream_registry().lookup(key).await?;
    match record.and_then(|r| r.owner) {
        Some(owner) if owner == principal.as_str() => Ok(StreamAccess::Owner(principal)),
        _ => Err(refused(
            Some(&principal),
            Some(key),
            ApiError::Missing("stream"),
        )),
    }
}
