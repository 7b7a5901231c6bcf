//! `/v1/auth/*`: register, login, me.

use std::collections::BTreeMap;

use actix::Addr;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::auth::domain::{Email, NewPassword};
use crate::auth::{AuthActor, Authenticated, GetUser, Login, Register};
use crate::error::ApiError;
use crate::http::ApiJson;

#[derive(Deserialize)]
pub struct Credentials {
    email: String,
    password: String,
}

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
