//! HS256 access tokens: issued at login, verified on every authenticated
//! request by the [`super::caller`] extractors (no I/O).
//!
//! Only HS256 is accepted; `alg: none`, other algorithms, a wrong issuer,
//! missing claims and expiry (no leeway) are all rejected as `401`.
//!
//! A client sends the same token with every request, so a token that
//! verified is remembered by its text (a bounded `moka` cache) with its
//! subject and expiry: checking its signature and parsing its header and
//! claims again cost about a tenth of Orderly's CPU per one-job publish
//! (`docs/performance.md`). Expiry is checked on every use, exactly as the
//! full check does it; tokens that fail are never remembered. Tokens cannot
//! be revoked (they expire), and the secret is fixed for the process's life,
//! so a remembered token answers as its full check would.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::configuration::AuthSettings;

/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_LEN: usize = 4096;

/// Bytes of remembered tokens at most (a typical token is ~200 bytes, so
/// some tens of thousands of clients' tokens).
const VERIFIED_CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// The claims Orderly signs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
}

/// The login response body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccessToken {
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

/// Signing and verification keys plus the rules a token must meet.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    lifetime_s: u64,
    verified: moka::sync::Cache<Arc<str>, Arc<Claims>>,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenKeys {
    pub fn new(settings: &AuthSettings) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.set_issuer(&[&settings.jwt_issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss"]);
        Self {
            encoding: EncodingKey::from_secret(settings.jwt_secret.as_bytes()),
            decoding: DecodingKey::from_secret(settings.jwt_secret.as_bytes()),
            validation,
            issuer: settings.jwt_issuer.clone(),
            lifetime_s: settings.token_lifetime_s,
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CACHE_BYTES)
                .weigher(|token: &Arc<str>, v: &Arc<Claims>| {
                    u32::try_from(token.len() + v.sub.len() + v.iss.len() + 96).unwrap_or(u32::MAX)
                })
                .build(),
        }
    }

    /// A fresh token for `user_id`.
    pub fn issue(&self, user_id: &str) -> Result<AccessToken, jsonwebtoken::errors::Error> {
        let iat = now_s();
        let claims = Claims {
            sub: user_id.to_owned(),
            iat,
            exp: iat + self.lifetime_s,
            iss: self.issuer.clone(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok(AccessToken {
            access_token: token,
            token_type: "Bearer",
            expires_in: self.lifetime_s,
        })
    }

    /// The claims of a valid token, or why it is refused: `Expired` only
    /// for a token this service signed whose time is up (`decode` checks the
    /// signature before the expiry), `Invalid` for anything else.
    pub fn verify(&self, token: &str) -> Result<Claims, Refused> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Refused::Invalid);
        }
        if let Some(claims) = self.verified.get(token) {
            // As `decode` judges expiry (no leeway): valid through second `exp`.
            return if claims.exp >= now_s() {
                Ok(Claims::clone(&claims))
            } else {
                Err(Refused::Expired)
            };
        }
        let claims = match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => data.claims,
            Err(err) if *err.kind() == jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                return Err(Refused::Expired);
            }
            Err(_) => return Err(Refused::Invalid),
        };
        if claims.sub.is_empty() {
            return Err(Refused::Invalid);
        }
        self.verified.insert(token.into(), Arc::new(claims.clone()));
        Ok(claims)
    }
}

/// Why a bearer token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Signed by this service, but its `exp` has passed: log in again.
    Expired,
    /// Malformed, forged, of another issuer or algorithm, or too long.
    Invalid,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> TokenKeys {
        TokenKeys::new(&AuthSettings {
            jwt_secret: secret.into(),
            jwt_issuer: "orderly".into(),
            token_lifetime_s: 60,
            bcrypt_cost: 4,
            hash_threads: 1,
            hash_queue: 1,
        })
    }

    #[test]
    fn issued_tokens_verify() {
        let keys = keys(&"s".repeat(32));
        let token = keys.issue("user-1").unwrap();
        assert_eq!(keys.verify(&token.access_token).unwrap().sub, "user-1");
    }

    #[test]
    fn tokens_of_another_secret_do_not_verify() {
        let token = keys(&"a".repeat(32)).issue("user-1").unwrap();
        assert_eq!(
            keys(&"b".repeat(32)).verify(&token.access_token).err(),
            Some(Refused::Invalid)
        );
    }

    #[test]
    fn a_remembered_token_answers_as_its_full_check() {
        let keys = keys(&"s".repeat(32));
        let token = keys.issue("user-1").unwrap().access_token;
        let first = keys.verify(&token).unwrap();
        let again = keys.verify(&token).unwrap();
        assert_eq!(
            (again.sub, again.iat, again.exp, again.iss),
            (first.sub, first.iat, first.exp, first.iss)
        );
        // Another signature on the same header and claims is another token.
        let (body, signature) = token.rsplit_once('.').unwrap();
        let mut forged = signature.as_bytes().to_vec();
        forged[0] = if forged[0] == b'A' { b'B' } else { b'A' };
        let forged = format!("{body}.{}", String::from_utf8(forged).unwrap());
        assert_eq!(keys.verify(&forged).err(), Some(Refused::Invalid));
        assert!(keys.verify(&token).is_ok());
    }

    #[test]
    fn a_remembered_token_expires_when_its_claims_say() {
        let keys = keys(&"s".repeat(32));
        let exp = now_s() + 1;
        let claims = Claims {
            sub: "user-1".into(),
            iat: exp - 1,
            exp,
            iss: "orderly".into(),
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        assert!(keys.verify(&token).is_ok(), "valid through second `exp`");
        // Poll the clock (not the cache) until the token's second has passed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while now_s() <= exp {
            assert!(
                std::time::Instant::now() < deadline,
                "the clock did not advance"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(
            keys.verify(&token).err(),
            Some(Refused::Expired),
            "remembered, yet expired"
        );
        // And as the full check says it, for a token not remembered; an
        // expired token of another secret is invalid, not expired.
        let fresh = TokenKeys::new(&AuthSettings {
            jwt_secret: "s".repeat(32),
            jwt_issuer: "orderly".into(),
            token_lifetime_s: 60,
            bcrypt_cost: 4,
            hash_threads: 1,
            hash_queue: 1,
        });
        assert_eq!(fresh.verify(&token).err(), Some(Refused::Expired));
        let other = self::keys(&"o".repeat(32));
        assert_eq!(other.verify(&token).err(), Some(Refused::Invalid));
    }
}
