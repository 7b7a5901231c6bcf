//! The auth actor: owns registration, login and user lookup.
//!
//! It is the only writer of the `users` collection. Each request runs as its own
//! future on the actor's arbiter, so a slow MongoDB or bcrypt call never blocks
//! other requests; bcrypt itself runs on the [`HashPool`] threads. Login treats
//! an unknown email exactly like a wrong password, including the bcrypt work
//! (verified against a dummy hash), so the two cannot be told apart.

use std::net::IpAddr;
use std::sync::Arc;

use actix::{Actor, Context, Handler, Message, ResponseFuture};

use super::domain::{Email, NewPassword, normalize_login_email};
use super::hasher::{HashError, HashPool};
use super::rate_limit::{LoginLimiter, Verdict};
use super::token::{AccessToken, TokenKeys};
use super::users::{StoreError, User, UserStore};

/// Why an auth request failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("this email is already registered")]
    EmailTaken,
    #[error("email or password is incorrect")]
    InvalidCredentials,
    #[error("too many failed logins")]
    RateLimited { retry_after_s: u64 },
    #[error("the token names no user")]
    UnknownUser,
    #[error("password hashing is saturated")]
    Busy,
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<StoreError> for AuthError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Duplicate => AuthError::EmailTaken,
            StoreError::Mongo(err) => {
                log::warn!("mongodb error in auth: {err}");
                AuthError::Unavailable("mongodb")
            }
        }
    }
}

impl From<HashError> for AuthError {
    fn from(err: HashError) -> Self {
        match err {
            HashError::Saturated => AuthError::Busy,
            other => AuthError::Internal(other.to_string()),
        }
    }
}

fn redis_down(err: redis::RedisError) -> AuthError {
    log::warn!("redis error in auth: {err}");
    AuthError::Unavailable("redis")
}

/// Create an account.
#[derive(Debug, Message)]
#[rtype(result = "Result<User, AuthError>")]
pub struct Register {
    pub email: Email,
    pub password: NewPassword,
}

/// Check credentials and issue an access token.
#[derive(Debug, Message)]
#[rtype(result = "Result<AccessToken, AuthError>")]
pub struct Login {
    pub email: String,
    pub password: String,
    pub client_ip: Option<IpAddr>,
}

/// Look up the user a verified token names.
#[derive(Debug, Message)]
#[rtype(result = "Result<User, AuthError>")]
pub struct GetUser {
    pub user_id: String,
}

/// Everything a request future needs, shared between concurrent requests.
struct Core {
    users: UserStore,
    hasher: HashPool,
    tokens: Arc<TokenKeys>,
    limiter: LoginLimiter,
    /// Verified against when the email is unknown, to keep timing uniform.
    dummy_hash: Arc<str>,
}

pub struct AuthActor {
    core: Arc<Core>,
}

impl AuthActor {
    pub fn new(
        users: UserStore,
        hasher: HashPool,
        tokens: Arc<TokenKeys>,
        limiter: LoginLimiter,
        dummy_hash: String,
    ) -> Self {
        Self {
            core: Arc::new(Core {
                users,
                hasher,
                tokens,
                limiter,
                dummy_hash: dummy_hash.into(),
            }),
        }
    }
}

impl Actor for AuthActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        let users = self.core.users.clone();
        actix::spawn(async move {
            // Best effort: registration also ensures the index before inserting.
            if let Err(err) = users.ensure_indexes().await {
                log::warn!("users index not created yet (will retry on register): {err}");
            }
        });
    }
}

impl Handler<Register> for AuthActor {
    type Result = ResponseFuture<Result<User, AuthError>>;

    fn handle(&mut self, msg: Register, _: &mut Self::Context) -> Self::Result {
        let core = self.core.clone();
        Box::pin(async move {
            let hash = core.hasher.hash(msg.password.into_inner()).await?;
            let user = core.users.insert(msg.email.as_str(), hash).await?;
            log::info!("user registered user_id={}", user.id);
            Ok(user)
        })
    }
}

impl Handler<Login> for AuthActor {
    type Result = ResponseFuture<Result<AccessToken, AuthError>>;

    fn handle(&mut self, msg: Login, _: &mut Self::Context) -> Self::Result {
        let core = self.core.clone();
        Box::pin(async move { core.login(msg).await })
    }
}

impl Handler<GetUser> for AuthActor {
    type Result = ResponseFuture<Result<User, AuthError>>;

    fn handle(&mut self, msg: GetUser, _: &mut Self::Context) -> Self::Result {
        let core = self.core.clone();
        Box::pin(async move {
            core.users
                .find_by_id(&msg.user_id)
                .await?
                .ok_or(AuthError::UnknownUser)
        })
    }
}

impl Core {
    async fn login(&self, msg: Login) -> Result<AccessToken, AuthError> {
        let email = normalize_login_email(&msg.email);
        let verdict = self
            .limiter
            .check(&email, msg.client_ip)
            .await
            .map_err(redis_down)?;
        if let Verdict::Limited { retry_after_s } = verdict {
            return Err(AuthError::RateLimited { retry_after_s });
        }
        let found = self.users.find_by_email(&email).await?;
        let hash = match &found {
            Some((_, hash)) => Arc::from(hash.as_str()),
            None => self.dummy_hash.clone(),
        };
        let matches = self.hasher.verify(msg.password, hash).await?;
        match found {
            Some((user, _)) if matches => {
                if let Err(err) = self.limiter.reset(&email).await {
                    log::warn!("could not reset login failures: {err}");
                }
                log::info!("login user_id={}", user.id);
                self.tokens
                    .issue(&user.id)
                    .map_err(|err| AuthError::Internal(err.to_string()))
            }
            _ => {
                self.limiter
                    .record_failure(&email, msg.client_ip)
                    .await
                    .map_err(redis_down)?;
                Err(AuthError::InvalidCredentials)
            }
        }
    }
}
