//! `/v1/auth/*`: register, login, me.

use std::collections::BTreeMap;

use actix::Addr;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::auth::domain::{Email, NewPassword};
use crate::auth::token::AccessToken;
use crate::auth::users::User;
use crate::auth::{AuthActor, Authenticated, GetUser, Login, Register};
use crate::error::{ApiError, ErrorBody};
use crate::http::ApiJson;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct Credentials {
    #[schema(example = "ada@example.com")]
    email: String,
    /// 8 to 72 bytes when registering.
    #[schema(example = "correct horse battery")]
    password: String,
}

/// Create an account.
#[utoipa::path(post, path = "/v1/auth/register", tag = "auth", request_body = Credentials,
    responses(
        (status = 201, description = "Registered", body = User),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 409, description = "`email_taken`: the email is registered already", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Invalid email or password, per field", body = ErrorBody),
        (status = 503, description = "MongoDB down or the password-hashing pool saturated", body = ErrorBody),
    ))]
pub async fn register(
    auth: web::Data<Addr<AuthActor>>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let email = Email::parse(&body.email);
    let password = NewPassword::parse(body.password);
    let msg = match (email, password) {
        (Ok(email), Ok(password)) => Register { email, password },
        (email, password) => {
            let mut fields = BTreeMap::new();
            if let Err(reason) = email {
                fields.insert("email".to_owned(), reason);
            }
            if let Err(reason) = password {
                fields.insert("password".to_owned(), reason);
            }
            return Err(ApiError::validation(fields));
        }
    };
    let user = auth.send(msg).await??;
    Ok(HttpResponse::Created().json(user))
}

/// Exchange email and password for a bearer token.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = Credentials,
    responses(
        (status = 200, description = "A bearer token", body = AccessToken),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "`invalid_credentials` (the same answer for an unknown email and a wrong password)", body = ErrorBody),
        (status = 422, description = "Empty email", body = ErrorBody),
        (status = 429, description = "Too many failed logins for this email or client; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "MongoDB down or the password-hashing pool saturated", body = ErrorBody),
    ))]
pub async fn login(
    req: HttpRequest,
    auth: web::Data<Addr<AuthActor>>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<HttpResponse, ApiError> {
    if body.email.trim().is_empty() {
        return Err(ApiError::invalid_field("email", "must not be empty"));
    }
    let msg = Login {
        email: body.email,
        password: body.password,
        client_ip: req.peer_addr().map(|addr| addr.ip()),
    };
    let token = auth.send(msg).await??;
    Ok(HttpResponse::Ok().json(token))
}

/// The authenticated user.
#[utoipa::path(get, path = "/v1/auth/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The user the token belongs to", body = User),
        (status = 401, description = "Missing, malformed, expired or forged token", body = ErrorBody),
        (status = 503, description = "MongoDB down", body = ErrorBody),
    ))]
pub async fn me(
    auth: web::Data<Addr<AuthActor>>,
    who: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let user = auth
        .send(GetUser {
            user_id: who.user_id,
        })
        .await??;
    Ok(HttpResponse::Ok().json(user))
}
