//! [`StaticTokens`]: a fixed table of API bearer tokens.

use std::collections::HashMap;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{Authenticator, Principal};
use crate::ApiError;

/// The environment variable read by [`StaticTokens::from_env`].
pub const TOKENS_ENV: &str = "CHATSTREAM_API_TOKENS";

/// A fixed table token → user (and organisation), e.g. from
/// `CHATSTREAM_API_TOKENS="token1:alice:acme,token2:bob"`.
///
/// Tokens are kept as SHA-256 digests and looked up by digest, so neither the table nor the
/// time a lookup takes reveals a token; `Debug` shows only how many there are.
#[derive(Clone, Default)]
pub struct StaticTokens {
    by_digest: HashMap<[u8; 32], Principal>,
}

impl std::fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticTokens")
            .field("tokens", &self.by_digest.len())
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl StaticTokens {
    /// An empty table (refuses everyone).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `token` for `user` (replacing what the token meant before).
    pub fn with(mut self, token: &str, user: impl Into<Principal>) -> Self {
        self.insert(token, user);
        self
    }

    /// Adds `token` for `user`.
    pub fn insert(&mut self, token: &str, user: impl Into<Principal>) {
        self.by_digest.insert(digest(token), user.into());
    }

    /// Parses `token1:alice:acme,token2:bob` — `token:user` or `token:user:org` (spaces
    /// around entries ignored; a token or user may not contain `:` or `,`; the
    /// organisation is what follows the second `:`).
    pub fn parse(spec: &str) -> Result<Self, ApiError> {
        let mut table = Self::new();
        for (i, entry) in spec.split(',').enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let mut parts = entry.splitn(3, ':').map(str::trim);
            match (parts.next(), parts.next(), parts.next()) {
                (Some(token), Some(user), None) if !token.is_empty() && !user.is_empty() => {
                    table.insert(token, user);
                }
                (Some(token), Some(user), Some(org))
                    if !token.is_empty() && !user.is_empty() && !org.is_empty() =>
                {
                    table.insert(token, Principal::new(user).with_org(org));
                }
                // The entry is not echoed: it may hold a secret.
                _ => {
                    return Err(ApiError::Misconfigured(format!(
                        "API token entry {} is not `token:user` or `token:user:org`",
                        i + 1
                    )))
                }
            }
        }
        Ok(table)
    }

    /// The table in [`TOKENS_ENV`]; `Ok(None)` when the variable is unset or empty.
    pub fn from_env() -> Result<Option<Self>, ApiError> {
        match std::env::var(TOKENS_ENV) {
            Ok(spec) if !spec.trim().is_empty() => Self::parse(&spec).map(Some),
            _ => Ok(None),
        }
    }

    /// A fresh random token (32 hexadecimal digits from the operating system's generator),
    /// e.g. for a demo that prints its token at start.
    pub fn random_token() -> String {
        uuid::Uuid::new_v4().simple().to_string()
    }

    /// Tokens in the table.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

#[async_trait]
impl Authenticator for StaticTokens {
    async fn authenticate(&self, bearer: &str) -> Result<Option<Principal>, ApiError> {
        Ok(self.by_digest.get(&digest(bearer)).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_the_env_format() {
        let t = StaticTokens::parse(" token1:alice , token2:bob,").unwrap_or_default();
        assert_eq!(t.len(), 2);
        let who = |tok: &'static str| {
            let t = t.clone();
            async move { t.authenticate(tok).await.ok().flatten() }
        };
        assert_eq!(who("token1").await, Some(Principal::new("alice")));
        assert_eq!(who("token2").await, Some(Principal::new("bob")));
        assert_eq!(who("token3").await, None);
        let t = StaticTokens::parse("t1:alice:acme, t2:bob").unwrap_or_default();
        let got = t.authenticate("t1").await.ok().flatten();
        assert_eq!(got, Some(Principal::new("alice").with_org("acme")));
        assert_eq!(got.as_ref().and_then(Principal::org), Some("acme"));
        assert_eq!(who("alice").await, None);
    }

    #[test]
    fn bad_entries_are_refused_without_echoing_them() {
        for bad in ["secret", "secret:", ":alice", "a:b,secret", "secret:alice:"] {
            match StaticTokens::parse(bad) {
                Err(e) => assert!(!e.to_string().contains("secret"), "{e}"),
                Ok(_) => panic!("{bad} accepted"),
            }
        }
    }

    #[test]
    fn debug_hides_tokens() {
        let t = StaticTokens::new().with("hunter2", "alice");
        assert!(!format!("{t:?}").contains("hunter2"));
    }
}
