//! Who is calling, and may they do this: the extractors every authenticated
//! route takes.
//!
//! - [`Caller`]: a user (JWT) or an API key (`ok_…`), with the owner id.
//! - [`Authorized<N>`]: a caller allowed what the route needs; `N` names the
//!   scopes that suffice (the markers in [`need`]), so each route states its
//!   need once, in its signature: `who: Authorized<need::Consume>`.
//!   A key whose scopes or queues do not cover the route answers
//!   `403 insufficient_scope`; the queue comes from the `{queue}` path
//!   segment or the queue part of a `{id}` job id.
//! - [`Authenticated`]: users only (`/v1/auth/*`): a valid key there answers
//!   `403 insufficient_scope` — keys never manage keys or users.
//!
//! Invalid, expired or revoked credentials answer `401`.

use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;

use super::keys::{ApiKeys, KEY_PREFIX, KeyGrant, Scope};
use super::token::{Refused, TokenKeys};
use crate::error::ApiError;
use crate::queue::model::JobId;

/// The authenticated caller: a user, or a key acting for its owner.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user who owns what the request touches.
    pub user_id: String,
    /// Set when the caller presented an API key.
    pub key: Option<Arc<KeyGrant>>,
}

/// The bearer token of the `Authorization` header.
fn bearer(req: &HttpRequest) -> Result<&str, ApiError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("a bearer token is required"))?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be 'Bearer <token>'"))
}

impl Caller {
    /// Verifies the request's bearer token (a JWT, or an API key through the
    /// key cache).
    pub async fn resolve(req: &HttpRequest) -> Result<Caller, ApiError> {
        let token = bearer(req)?;
        if token.starts_with(KEY_PREFIX) {
            let keys = req
                .app_data::<web::Data<ApiKeys>>()
                .ok_or_else(|| ApiError::internal("ApiKeys missing from app data"))?;
            let grant = keys.verify(token).await.map_err(|err| {
                log::warn!("api key lookup failed: {err}");
                ApiError::unavailable("mongodb is unavailable")
            })?;
            return match grant {
                Some(grant) if !grant.is_expired(chrono::Utc::now()) => Ok(Caller {
                    user_id: grant.owner.clone(),
                    key: Some(grant),
                }),
                Some(_) => Err(ApiError::invalid_token(
                    "the API key has expired",
                    "The API key expired",
                )),
                None => Err(ApiError::invalid_token(
                    "the API key is invalid or revoked",
                    "The API key is invalid or revoked",
                )),
            };
        }
        let tokens = req
            .app_data::<web::Data<TokenKeys>>()
            .ok_or_else(|| ApiError::internal("TokenKeys missing from app data"))?;
        let claims = tokens.verify(token).map_err(|refused| match refused {
            Refused::Expired => ApiError::invalid_token(
                "the token has expired: log in again for a new one",
                "The access token expired",
            ),
            Refused::Invalid => ApiError::invalid_token(
                "the token is invalid (malformed, or not signed by this service)",
                "The access token is invalid",
            ),
        })?;
        Ok(Caller {
            user_id: claims.sub,
            key: None,
        })
    }

    /// May this caller use a route that any of `scopes` allows, on `queue`
    /// (when the route names one)? Users may do everything with their own.
    pub fn authorize(&self, scopes: &[Scope], queue: Option<&str>) -> Result<(), ApiError> {
        let Some(grant) = &self.key else {
            return Ok(());
        };
        if !grant.has_any(scopes) {
            let needed: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
            return Err(ApiError::insufficient_scope(format!(
                "this API key lacks the scope this route needs ({})",
                needed.join(" or ")
            )));
        }
        if let Some(queue) = queue
            && !grant.covers_queue(queue)
        {
            return Err(ApiError::insufficient_scope(
                "this API key is not allowed on this queue",
            ));
        }
        Ok(())
    }

    /// May the caller see `queue` at all (filters listings for keys
    /// restricted to some queues)?
    pub fn sees_queue(&self, queue: &str) -> bool {
        self.key
            .as_ref()
            .is_none_or(|grant| grant.covers_queue(queue))
    }
}

/// What a route needs: any one of [`Need::SCOPES`] (for an API key).
pub trait Need {
    const SCOPES: &'static [Scope];
}

/// The needs routes state, as `Authorized<need::Publish>`.
pub mod need {
    use super::{Need, Scope};

    macro_rules! needs {
        ($($(#[$doc:meta])* $name:ident = [$($scope:ident),+];)*) => {
            $(
                $(#[$doc])*
                #[derive(Debug)]
                pub struct $name;
                impl Need for $name {
                    const SCOPES: &'static [Scope] = &[$(Scope::$scope),+];
                }
            )*
        };
    }

    needs! {
        /// Publish and batch publish.
        Publish = [Publish];
        /// Claim, ack, nack, extend.
        Consume = [Consume];
        /// Queue settings, pause/resume, job listings, dead letters, schedules.
        Manage = [Manage];
        /// Reading one job: producers and consumers both may.
        ReadJob = [Publish, Consume];
        /// Cancelling a job that has not started: its producer or an operator.
        CancelJob = [Publish, Manage];
    }
}

/// A caller allowed what `N` needs on the route's queue.
#[derive(Debug)]
pub struct Authorized<N> {
    caller: Caller,
    need: PhantomData<N>,
}

impl<N> Deref for Authorized<N> {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.caller
    }
}

/// The queue a request targets: its `{queue}` segment, or its job id's queue.
fn target_queue(req: &HttpRequest) -> Option<String> {
    let info = req.match_info();
    if let Some(queue) = info.get("queue") {
        return Some(queue.to_owned());
    }
    let id = JobId::parse(info.get("id")?)?;
    Some(id.queue.as_str().to_owned())
}

impl<N: Need + 'static> FromRequest for Authorized<N> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let caller = Caller::resolve(&req).await?;
            caller.authorize(N::SCOPES, target_queue(&req).as_deref())?;
            Ok(Authorized {
                caller,
                need: PhantomData,
            })
        })
    }
}

/// A signed-in user (never an API key): the `/v1/auth/*` routes take this.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user_id: String,
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let caller = Caller::resolve(&req).await?;
            if caller.key.is_some() {
                return Err(ApiError::insufficient_scope(
                    "API keys cannot manage keys or users; use a user token",
                ));
            }
            Ok(Authenticated {
                user_id: caller.user_id,
            })
        })
    }
}
