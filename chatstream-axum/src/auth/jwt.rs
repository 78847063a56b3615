//! [`JwtAuthenticator`]: bearer tokens that are JSON Web Tokens (HS256 or RS256), verified
//! with the `jsonwebtoken` crate; the principal is `sub`, its organisation an org claim.

use async_trait::async_trait;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{Authenticator, Principal};
use crate::ApiError;

/// The HS256 shared secret (`CHATSTREAM_JWT_HS256_SECRET`).
pub const JWT_HS256_SECRET_ENV: &str = "CHATSTREAM_JWT_HS256_SECRET";
/// The RS256 public key, PEM text or the path of a PEM file (`CHATSTREAM_JWT_RS256_PUBLIC_KEY`).
pub const JWT_RS256_KEY_ENV: &str = "CHATSTREAM_JWT_RS256_PUBLIC_KEY";
/// The claim naming the organisation (`CHATSTREAM_JWT_ORG_CLAIM`, default [`DEFAULT_ORG_CLAIM`]).
pub const JWT_ORG_CLAIM_ENV: &str = "CHATSTREAM_JWT_ORG_CLAIM";
/// The issuer required, when set (`CHATSTREAM_JWT_ISSUER`).
pub const JWT_ISSUER_ENV: &str = "CHATSTREAM_JWT_ISSUER";
/// The audience required, when set (`CHATSTREAM_JWT_AUDIENCE`).
pub const JWT_AUDIENCE_ENV: &str = "CHATSTREAM_JWT_AUDIENCE";
/// The organisation claim read unless another is configured.
pub const DEFAULT_ORG_CLAIM: &str = "org";

/// Verifies JWT bearer tokens: signature (HS256 with a shared secret or RS256 with a public
/// key), `exp` (required) and `nbf`, and the issuer and audience when configured. A valid
/// token names its user in `sub` and its organisation in the org claim (a string; absent
/// means no organisation). A token that is not a JWT, or fails any check, is unknown (401).
#[derive(Clone)]
pub struct JwtAuthenticator {
    key: DecodingKey,
    validation: Validation,
    org_claim: String,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("algorithms", &self.validation.algorithms)
            .field("org_claim", &self.org_claim)
            .finish_non_exhaustive()
    }
}

impl JwtAuthenticator {
    fn with_key(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        Self {
            key,
            validation,
            org_claim: DEFAULT_ORG_CLAIM.to_owned(),
        }
    }

    /// HS256 tokens signed with `secret`.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::with_key(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// RS256 tokens, verified with an RSA public key in PEM.
    pub fn rs256_pem(pem: &[u8]) -> Result<Self, ApiError> {
        let key = DecodingKey::from_rsa_pem(pem)
            .map_err(|e| ApiError::Misconfigured(format!("RS256 public key: {e}")))?;
        Ok(Self::with_key(key, Algorithm::RS256))
    }

    /// Reads the organisation from `claim` instead of [`DEFAULT_ORG_CLAIM`].
    pub fn with_org_claim(mut self, claim: impl Into<String>) -> Self {
        self.org_claim = claim.into();
        self
    }

    /// Requires `iss` to be `issuer`.
    pub fn with_issuer(mut self, issuer: &str) -> Self {
        self.validation.set_issuer(&[issuer]);
        self
    }

    /// Requires `aud` to hold `audience`.
    pub fn with_audience(mut self, audience: &str) -> Self {
        self.validation.set_audience(&[audience]);
        self
    }

    /// The authenticator the environment describes ([`JWT_HS256_SECRET_ENV`] or
    /// [`JWT_RS256_KEY_ENV`], plus org claim, issuer and audience); `Ok(None)` when neither
    /// key is set.
    pub fn from_env() -> Result<Option<Self>, ApiError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let auth = match (var(JWT_HS256_SECRET_ENV), var(JWT_RS256_KEY_ENV)) {
            (Some(_), Some(_)) => {
                return Err(ApiError::Misconfigured(format!(
                    "set {JWT_HS256_SECRET_ENV} or {JWT_RS256_KEY_ENV}, not both"
                )))
            }
            (Some(secret), None) => Self::hs256(secret.as_bytes()),
            (None, Some(key)) => {
                let pem = if key.contains("-----BEGIN") {
                    key.into_bytes()
                } else {
                    std::fs::read(key.trim()).map_err(|e| {
                        ApiError::Misconfigured(format!(
                            "{JWT_RS256_KEY_ENV}: cannot read {key}: {e}"
                        ))
                    })?
                };
                Self::rs256_pem(&pem)?
            }
            (None, None) => return Ok(None),
        };
        let mut auth = auth;
        if let Some(claim) = var(JWT_ORG_CLAIM_ENV) {
            auth = auth.with_org_claim(claim.trim());
        }
        if let Some(iss) = var(JWT_ISSUER_ENV) {
            auth = auth.with_issuer(iss.trim());
        }
        if let Some(aud) = var(JWT_AUDIENCE_ENV) {
            auth = auth.with_audience(aud.trim());
        }
        Ok(Some(auth))
    }

    /// The principal of a token, `None` when it is not a valid token.
    pub fn verify(&self, token: &str) -> Option<Principal> {
        let data = match decode::<Map<String, Value>>(token, &self.key, &self.validation) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(reason = %e, "JWT refused");
                return None;
            }
        };
        let sub = data.claims.get("sub")?.as_str()?.trim();
        if sub.is_empty() {
            return None;
        }
        let principal = Principal::new(sub);
        match data.claims.get(&self.org_claim) {
            None | Some(Value::Null) => Some(principal),
            Some(Value::String(org)) if !org.trim().is_empty() => {
                Some(principal.with_org(org.trim()))
            }
            // An org claim that is not a usable string is refused, not ignored: ignoring it
            // would hand the user a wider or narrower scope than its issuer meant.
            Some(_) => None,
        }
    }
}

/// True when `token` has the shape of a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<_> = token.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[async_trait]
impl Authenticator for JwtAuthenticator {
    async fn authenticate(&self, bearer: &str) -> Result<Option<Principal>, ApiError> {
        Ok(self.verify(bearer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn hs(claims: &Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap_or_default()
    }

    #[test]
    fn hs256_gives_user_and_org() {
        let auth = JwtAuthenticator::hs256(b"s3cret");
        let t = hs(
            &json!({"sub": "alice", "org": "acme", "exp": now() + 60}),
            b"s3cret",
        );
        assert!(looks_like_jwt(&t));
        assert_eq!(
            auth.verify(&t),
            Some(Principal::new("alice").with_org("acme"))
        );
        let no_org = hs(&json!({"sub": "bob", "exp": now() + 60}), b"s3cret");
        assert_eq!(auth.verify(&no_org), Some(Principal::new("bob")));
    }

    #[test]
    fn bad_tokens_are_unknown() {
        let auth = JwtAuthenticator::hs256(b"s3cret").with_org_claim("org_id");
        let cases = [
            hs(&json!({"sub": "alice", "exp": now() + 60}), b"wrong"),
            hs(&json!({"sub": "alice", "exp": now() - 3600}), b"s3cret"),
            hs(&json!({"sub": "alice"}), b"s3cret"),
            hs(&json!({"exp": now() + 60}), b"s3cret"),
            hs(
                &json!({"sub": "alice", "org_id": 7, "exp": now() + 60}),
                b"s3cret",
            ),
            "not.a.jwt".to_owned(),
            String::new(),
        ];
        for t in cases {
            assert_eq!(auth.verify(&t), None, "{t}");
        }
        let ok = hs(
            &json!({"sub": "a", "org_id": "o", "exp": now() + 60}),
            b"s3cret",
        );
        assert_eq!(auth.verify(&ok), Some(Principal::new("a").with_org("o")));
    }

    #[test]
    fn an_hs256_token_is_refused_by_an_rs256_authenticator() {
        // A public key used as an HMAC secret is the classic algorithm confusion attack.
        let pem = include_bytes!("../../tests/data/jwt_rs256_public.pem");
        let auth = JwtAuthenticator::rs256_pem(pem).expect("test key");
        let forged = hs(&json!({"sub": "mallory", "exp": now() + 60}), pem);
        assert_eq!(auth.verify(&forged), None);
    }

    #[test]
    fn rs256_verifies_with_the_public_key() {
        let private = include_bytes!("../../tests/data/jwt_rs256_private.pem");
        let public = include_bytes!("../../tests/data/jwt_rs256_public.pem");
        let auth = JwtAuthenticator::rs256_pem(public).expect("test key");
        let key = EncodingKey::from_rsa_pem(private).expect("test private key");
        let t = encode(
            &Header::new(Algorithm::RS256),
            &json!({"sub": "carol", "org": "globex", "exp": now() + 60}),
            &key,
        )
        .unwrap_or_default();
        assert_eq!(
            auth.verify(&t),
            Some(Principal::new("carol").with_org("globex"))
        );
    }
}
