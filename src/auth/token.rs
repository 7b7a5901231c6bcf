//! HS256 access tokens: issued at login, verified on every authenticated
//! request by the [`super::caller`] extractors (a few microseconds, no I/O).
//!
//! Only HS256 is accepted; `alg: none`, other algorithms, a wrong issuer,
//! missing claims and expiry (no leeway) are all rejected as `401`.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::configuration::AuthSettings;

/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_LEN: usize = 4096;

/// The claims Orderly signs.
#[derive(Debug, Serialize, Deserialize)]
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

    /// The claims of a valid token, or `None` for anything else.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        (!data.claims.sub.is_empty()).then_some(data.claims)
    }
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
        assert!(keys(&"b".repeat(32)).verify(&token.access_token).is_none());
    }
}
