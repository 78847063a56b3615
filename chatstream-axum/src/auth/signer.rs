//! Short-lived signed stream tokens: HMAC-SHA256 over one stream key and an expiry.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chatstream_core::StreamKey;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ApiError;

type HmacSha256 = Hmac<Sha256>;

/// The environment variable holding the stream token secret.
pub const SECRET_ENV: &str = "CHATSTREAM_STREAM_SECRET";

/// How long a stream token is valid by default: 10 minutes.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(600);

/// What every stream token starts with, so it is told apart from an API bearer token.
pub const TOKEN_PREFIX: &str = "st1.";

/// Domain separation: a MAC made here means nothing anywhere else.
const CONTEXT: &[u8] = b"chatstream stream token v1\0";

/// Makes and checks stream tokens: `st1.<expiry, Unix seconds>.<base64url HMAC-SHA256>`,
/// the MAC covering the session id, the message id (each length-prefixed) and the expiry.
/// A token opens exactly one stream until it expires; it names neither the stream nor the
/// user, so it leaks nothing when logged.
///
/// Every gateway instance that must accept the tokens of the others needs the same secret
/// ([`StreamTokenSigner::from_env`] reads [`SECRET_ENV`]); a random secret only works on the
/// instance that made it.
#[derive(Clone)]
pub struct StreamTokenSigner {
    /// HMAC keyed with the secret, cloned for each token.
    keyed: Arc<HmacSha256>,
    ttl: Duration,
}

impl std::fmt::Debug for StreamTokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTokenSigner")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl StreamTokenSigner {
    /// A signer with `secret` and tokens valid for [`DEFAULT_TOKEN_TTL`].
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        let keyed = match HmacSha256::new_from_slice(secret.as_ref()) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        Self {
            keyed: Arc::new(keyed),
            ttl: DEFAULT_TOKEN_TTL,
        }
    }

    /// A signer with a fresh random 256-bit secret (drawn from the operating system's
    /// generator through `uuid`).
    pub fn random() -> Self {
        let mut secret = Vec::with_capacity(32);
        secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self::new(secret)
    }

    /// A signer with the secret in [`SECRET_ENV`], or a random one when it is unset or
    /// empty (logged, since tokens then work on this instance only).
    pub fn from_env() -> Self {
        match std::env::var(SECRET_ENV) {
            Ok(s) if !s.is_empty() => {
                if s.len() < 16 {
                    tracing::warn!("{SECRET_ENV} is shorter than 16 bytes; use a longer secret");
                }
                Self::new(s)
            }
            _ => {
                tracing::info!("{SECRET_ENV} unset: stream tokens use a random per-process secret");
                Self::random()
            }
        }
    }

    /// Sets how long tokens are valid.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long tokens are valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for `key`, valid for [`StreamTokenSigner::ttl`] from now.
    pub fn sign(&self, key: &StreamKey) -> String {
        self.sign_at(key, SystemTime::now())
    }

    /// A token for `key`, valid for [`StreamTokenSigner::ttl`] from `now`.
    pub fn sign_at(&self, key: &StreamKey, now: SystemTime) -> String {
        let expiry = unix_secs(now).saturating_add(self.ttl.as_secs());
        let mac = self.mac(key, expiry).finalize().into_bytes();
        format!("{TOKEN_PREFIX}{expiry}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    /// Checks `token` for `key` now; see [`StreamTokenSigner::verify_at`].
    pub fn verify(&self, key: &StreamKey, token: &str) -> Result<(), ApiError> {
        self.verify_at(key, token, SystemTime::now())
    }

    /// Checks `token` for `key` at `now`: [`ApiError::Unauthorized`] when it is malformed or
    /// expired, [`ApiError::Forbidden`] when it was not made for this stream (or not with
    /// this secret). The MAC is compared in constant time.
    pub fn verify_at(&self, key: &StreamKey, token: &str, now: SystemTime) -> Result<(), ApiError> {
        let malformed = || ApiError::Unauthorized("malformed stream token".into());
        let rest = token.strip_prefix(TOKEN_PREFIX).ok_or_else(malformed)?;
        let (expiry, mac) = rest.split_once('.').ok_or_else(malformed)?;
        if expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let expiry: u64 = expiry.parse().map_err(|_| malformed())?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| malformed())?;
        self.mac(key, expiry)
            .verify_slice(&mac)
            .map_err(|_| ApiError::Forbidden("stream token not valid for this stream".into()))?;
        if unix_secs(now) >= expiry {
            return Err(ApiError::Unauthorized("stream token expired".into()));
        }
        Ok(())
    }

    fn mac(&self, key: &StreamKey, expiry: u64) -> HmacSha256 {
        let mut mac = (*self.keyed).clone();
        mac.update(CONTEXT);
        for part in [&key.session_id, &key.message_id] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.update(&expiry.to_be_bytes());
        mac
    }
}

/// True when `token` has the shape of a stream token (not whether it is valid).
pub fn is_stream_token(token: &str) -> bool {
    token.starts_with(TOKEN_PREFIX)
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_token_opens_its_stream_until_it_expires() {
        let s = StreamTokenSigner::new("secret").with_ttl(Duration::from_secs(60));
        let key = StreamKey::new("s", "m");
        let t = s.sign_at(&key, at(1000));
        assert!(t.starts_with("st1.1060."), "{t}");
        assert!(s.verify_at(&key, &t, at(1059)).is_ok());
        assert!(matches!(
            s.verify_at(&key, &t, at(1060)),
            Err(ApiError::Unauthorized(_))
        ));
    }

    #[test]
    fn other_streams_secrets_and_tampering_are_refused() {
        let s = StreamTokenSigner::new("secret");
        let key = StreamKey::new("s", "m");
        let t = s.sign_at(&key, at(1000));
        let forbidden = |r: Result<(), ApiError>| matches!(r, Err(ApiError::Forbidden(_)));
        assert!(forbidden(s.verify_at(
            &StreamKey::new("s", "m2"),
            &t,
            at(1000)
        )));
        // Length prefixes: moving a character from one part to the other changes the MAC.
        assert!(forbidden(s.verify_at(
            &StreamKey::new("sm", ""),
            &t,
            at(1000)
        )));
        assert!(forbidden(StreamTokenSigner::new("other").verify_at(
            &key,
            &t,
            at(1000)
        )));
        let later = t.replacen("st1.1600.", "st1.9999.", 1);
        assert!(forbidden(s.verify_at(&key, &later, at(1000))));
        for bad in [
            "",
            "st1.",
            "st1.x.abc",
            "st1.1600",
            "st1.1600.***",
            "xx.1600.abc",
        ] {
            assert!(
                matches!(
                    s.verify_at(&key, bad, at(1000)),
                    Err(ApiError::Unauthorized(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let s = StreamTokenSigner::new("very-secret-value");
        assert!(!format!("{s:?}").contains("very-secret"));
    }
}
