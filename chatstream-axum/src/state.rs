//! The state the routers share.

use std::sync::Arc;
use std::time::Duration;

use chatstream_core::{
    DynConversationStore, DynStreamRegistry, Gateway, InMemoryStreamRegistry, StreamKey,
};

use crate::auth::{DynAuthenticator, Principal, StreamTokenSigner};
use crate::sse::SseConfig;
use crate::ApiError;

/// Default request body limit of the submit routes: 64 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Longest accepted session or message id, in bytes (RabbitMQ routing keys stop at 255).
pub const MAX_ID_LEN: usize = 200;

/// Default server-side time limit of a seed 002 answer: 120 s.
pub const DEFAULT_STREAM_TIME_LIMIT: Duration = Duration::from_secs(120);

/// What every chatstream router needs: the [`Gateway`], the HTTP settings, and for the
/// routers that use them the conversation store and the authentication settings. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct ChatstreamState {
    gateway: Gateway,
    sse: SseConfig,
    stream_base: Arc<str>,
    body_limit: usize,
    store: Option<Arc<DynConversationStore>>,
    authenticator: Option<Arc<DynAuthenticator>>,
    stream_auth: bool,
    signer: StreamTokenSigner,
    streams: Arc<DynStreamRegistry>,
    stream_time_limit: Duration,
}

impl ChatstreamState {
    /// State around `gateway`, with default settings: no store, no authenticator,
    /// per-stream authorization off, stream tokens signed with
    /// [`StreamTokenSigner::from_env`] (`CHATSTREAM_STREAM_SECRET`, random when unset).
    pub fn new(gateway: Gateway) -> Self {
        Self {
            gateway,
            sse: SseConfig::default(),
            stream_base: Arc::from("/api/stream"),
            body_limit: DEFAULT_BODY_LIMIT,
            store: None,
            authenticator: None,
            stream_auth: false,
            signer: StreamTokenSigner::from_env(),
            streams: Arc::new(InMemoryStreamRegistry::default()),
            stream_time_limit: DEFAULT_STREAM_TIME_LIMIT,
        }
    }

    /// Sets the conversation store: it must be the one the workers use, since they append
    /// each exchange to it (seed 002 keeps its threads there).
    pub fn with_store(mut self, store: Arc<DynConversationStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Sets who bearer tokens belong to (seed 002 always needs one; seed 001 and the
    /// quickstart when [`ChatstreamState::with_stream_auth`] is on).
    pub fn with_authenticator(mut self, authenticator: Arc<DynAuthenticator>) -> Self {
        self.authenticator = Some(authenticator);
        self
    }

    /// Switches per-stream authorization on the seed 001 stream route and the quickstart's
    /// submit route (off by default, as those seeds had no authentication): submitting then
    /// needs a bearer token, and a stream may be read only by its submitter or with its
    /// stream token. Seed 002 checks always.
    pub fn with_stream_auth(mut self, on: bool) -> Self {
        self.stream_auth = on;
        self
    }

    /// Sets the signer of stream tokens (share its secret across gateway instances).
    pub fn with_stream_signer(mut self, signer: StreamTokenSigner) -> Self {
        self.signer = signer;
        self
    }

    /// Sets the registry of submitted streams: who submitted each, and each session's
    /// latest. The default, an [`InMemoryStreamRegistry`], serves one gateway process;
    /// gateways behind a load balancer share one in a store (`RedisStreamRegistry`), so a
    /// resume or a stop reaching another instance finds the stream's owner there.
    pub fn with_stream_registry(mut self, streams: Arc<DynStreamRegistry>) -> Self {
        self.streams = streams;
        self
    }

    /// Sets the server-side time limit of a seed 002 answer (streamed or not); past it a
    /// streaming client gets an `error` event then `done`, a waiting one a 504.
    pub fn with_stream_time_limit(mut self, limit: Duration) -> Self {
        self.stream_time_limit = limit;
        self
    }

    /// Sets how SSE responses are written (keep-alive period).
    pub fn with_sse_config(mut self, sse: SseConfig) -> Self {
        self.sse = sse;
        self
    }

    /// Sets the path under which the seed 001 stream route is reachable from clients
    /// (default `/api/stream`); the submit route builds its `stream` URLs from it. Change it
    /// when the router is nested under a prefix or behind a proxy that rewrites paths.
    pub fn with_stream_base(mut self, base: impl Into<String>) -> Self {
        let base: String = base.into();
        self.stream_base = Arc::from(base.trim_end_matches('/'));
        self
    }

    /// Sets the largest request body the submit routes accept, in bytes.
    pub fn with_body_limit(mut self, limit: usize) -> Self {
        self.body_limit = limit;
        self
    }

    /// The gateway.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// The SSE settings.
    pub fn sse(&self) -> &SseConfig {
        &self.sse
    }

    /// The request body limit of the submit routes, in bytes.
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }

    /// The conversation store, when set.
    pub fn store(&self) -> Option<&Arc<DynConversationStore>> {
        self.store.as_ref()
    }

    /// The authenticator of bearer tokens, when set.
    pub fn authenticator(&self) -> Option<&Arc<DynAuthenticator>> {
        self.authenticator.as_ref()
    }

    /// True when per-stream authorization is on for seed 001 and the quickstart.
    pub fn stream_auth(&self) -> bool {
        self.stream_auth
    }

    /// The signer of stream tokens.
    pub fn stream_signer(&self) -> &StreamTokenSigner {
        &self.signer
    }

    /// The registry of submitted streams.
    pub fn stream_registry(&self) -> &Arc<DynStreamRegistry> {
        &self.streams
    }

    /// Records a stream a route is about to submit, with its submitter when authenticated,
    /// so that any gateway instance can authorize its reads and stops and find a session's
    /// latest stream.
    pub async fn record_stream(
        &self,
        key: &StreamKey,
        submitter: Option<&Principal>,
    ) -> Result<(), ApiError> {
        self.streams
            .record(key, submitter.map(Principal::as_str))
            .await?;
        Ok(())
    }

    /// The server-side time limit of a seed 002 answer.
    pub fn stream_time_limit(&self) -> Duration {
        self.stream_time_limit
    }

    /// The URL path of the SSE stream of `key` (`/api/stream/{sessionId}/{messageId}`).
    /// Ids made by [`check_token_id`] need no escaping.
    pub fn stream_url(&self, key: &StreamKey) -> String {
        format!("{}/{}/{}", self.stream_base, key.session_id, key.message_id)
    }
}

/// Accepts an id taken from a URL path: 1 to [`MAX_ID_LEN`] bytes, no control characters.
pub fn check_path_id(field: &'static str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(ApiError::Invalid {
            field,
            reason: format!("must be 1 to {MAX_ID_LEN} bytes long"),
        });
    }
    if id.chars().any(char::is_control) {
        return Err(ApiError::Invalid {
            field,
            reason: "must not contain control characters".into(),
        });
    }
    Ok(())
}

/// Accepts an id a client chooses for a URL it will be sent back: 1 to 128 characters out
/// of `A-Z a-z 0-9 _ -`, so that it is safe in a path segment without escaping.
pub fn check_token_id(field: &'static str, id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid {
            field,
            reason: "must be 1 to 128 characters out of A-Z, a-z, 0-9, '_' and '-'".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_are_url_safe() {
        assert!(check_token_id("sessionId", "abc-DEF_123").is_ok());
        for bad in ["", "a/b", "..", "a b", "é", &"x".repeat(129)] {
            assert!(check_token_id("sessionId", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_ids_refuse_control_characters_and_length() {
        assert!(check_path_id("sessionId", "a b/é").is_ok());
        assert!(check_path_id("sessionId", "a\nb").is_err());
        assert!(check_path_id("sessionId", &"x".repeat(MAX_ID_LEN + 1)).is_err());
    }
}
