//! Where gateways keep what a client may come back for: who submitted a stream, and which
//! stream is a session's latest.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{Result, StreamKey};

/// What a [`StreamRegistry`] keeps of one submitted stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamRecord {
    /// The stream.
    pub key: StreamKey,
    /// Who submitted it (the authenticated principal's id), when the submit was
    /// authenticated.
    pub owner: Option<String>,
}

impl StreamRecord {
    /// A record of `key`, submitted by `owner`.
    pub fn new(key: StreamKey, owner: Option<String>) -> Self {
        Self { key, owner }
    }
}

/// The streams gateways submitted, shared by every gateway instance of a deployment, so
/// that every resume and stop route works on any instance (DESIGN.md's durability rule:
/// nothing a client may come back for lives only in one gateway's memory).
///
/// Gateways [record](StreamRegistry::record) each stream they submit; a resume or a stop
/// on any instance [looks up](StreamRegistry::lookup) who may read it, and a reconnect
/// that names only a chat asks for its [latest](StreamRegistry::latest) stream. Records
/// expire (the implementation says when): a client comes back within minutes, not months.
///
/// Implementations: [`InMemoryStreamRegistry`](crate::memory::InMemoryStreamRegistry) for
/// one process, `RedisStreamRegistry` in `chatstream-redis` for many.
#[async_trait]
pub trait StreamRegistry: Send + Sync + Debug + 'static {
    /// Records that `key` was submitted (by `owner`, when known); it becomes the latest
    /// stream of its session.
    async fn record(&self, key: &StreamKey, owner: Option<&str>) -> Result<()>;
    /// The record of `key`, while it is kept.
    async fn lookup(&self, key: &StreamKey) -> Result<Option<StreamRecord>>;
    /// The latest stream recorded for `session_id`, while it is kept.
    async fn latest(&self, session_id: &str) -> Result<Option<StreamKey>>;
}

/// A stream registry as a trait object.
pub type DynStreamRegistry = dyn StreamRegistry;

macro_rules! forward {
    ($($ptr:ident),*) => {$(
        #[async_trait]
        impl<T: StreamRegistry + ?Sized> StreamRegistry for $ptr<T> {
            async fn record(&self, key: &StreamKey, owner: Option<&str>) -> Result<()> {
                (**self).record(key, owner).await
            }
            async fn lookup(&self, key: &StreamKey) -> Result<Option<StreamRecord>> {
                (**self).lookup(key).await
            }
            async fn latest(&self, session_id: &str) -> Result<Option<StreamKey>> {
                (**self).latest(session_id).await
            }
        }
    )*};
}
forward!(Arc, Box);
