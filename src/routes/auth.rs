//! `/v1/auth/*`: register, login, me, and the caller's API keys. These routes
//! take user tokens only: an API key here answers `403 insufficient_scope`.

use std::collections::BTreeMap;

use actix::Addr;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::domain::{Email, NewPassword};
use crate::auth::keys::{
    ApiKey, ApiKeys, CreatedKey, KeyError, MAX_KEY_QUEUES, MAX_NAME_CHARS, NewKey, Scope,
};
use crate::auth::token::AccessToken;
use crate::auth::users::User;
use crate::auth::{AuthActor, Authenticated, GetUser, Login, Register};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::ApiJson;
use crate::queue::model::QueueName;

/// `POST /v1/auth/register` body. Both limits count UTF-8 bytes, which a
/// JSON Schema length cannot express: the formats name the rules instead.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct Registration {
    /// An address `local@domain.tld`, trimmed and lowercased, at most 254
    /// bytes; the local part at most 64 bytes without spaces or
    /// `@<>()[],;:\"`; two or more domain labels of letters, digits and `-`.
    #[schema(format = "orderly-email", example = "ada@example.com")]
    email: String,
    /// 8 to 72 bytes of UTF-8 (bcrypt's limit: longer ones are refused,
    /// never truncated).
    #[schema(format = Password, example = "correct horse battery")]
    password: String,
}

/// `POST /v1/auth/login` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct Credentials {
    #[schema(min_length = 1, example = "ada@example.com")]
    email: String,
    #[schema(format = Password, example = "correct horse battery")]
    password: String,
}

/// Create an account.
#[utoipa::path(post, path = "/v1/auth/register", tag = "auth", request_body = Registration,
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
    ApiJson(body): ApiJson<Registration>,
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
        (status = 413, description = "Body over the configured limit", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Empty email", body = ErrorBody),
        (status = 429, description = "Too many failed logins for this email or client; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "MongoDB down or the password-hashing pool saturated", body = ErrorBody),
    ))]
pub async fn login(
    req: HttpRequest,
    auth: web::Data<Addr<AuthActor>>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<HttpResponse, ApiError> {
    if body.email.is_empty() {
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
        (status = 403, description = "`insufficient_scope`: an API key (keys never act on users)", body = ErrorBody),
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

/// `POST /v1/auth/keys` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    /// What the key is for (1–100 characters).
    #[schema(min_length = 1, max_length = 100, example = "billing worker")]
    name: String,
    /// What the key may do: `publish` (publish, batch, get job), `consume`
    /// (claim, ack, nack, extend, get job), `manage` (queue settings,
    /// pause/resume, job listings, dead letters).
    #[schema(min_items = 1)]
    scopes: Vec<Scope>,
    /// `["*"]` (every queue, the default) or 1 to 100 queue names.
    #[schema(schema_with = key_queues_schema)]
    queues: Option<Vec<String>>,
    /// When the key stops working (RFC 3339); none: never. A time in the
    /// past makes a key that is refused from the start.
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<DateTime<Utc>>,
}

/// `queues`: `["*"]`, or 1 to 100 queue names, or null (every queue).
fn key_queues_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    let every = ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["*"])),
        )
        .min_items(Some(1))
        .max_items(Some(1));
    let names = ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[a-z0-9][a-z0-9_.-]{0,63}$")),
        )
        .min_items(Some(1))
        .max_items(Some(MAX_KEY_QUEUES));
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(every)
        .item(names)
        .examples([serde_json::json!(["*"])])
        .build()
        .into()
}

impl NewKeyBody {
    /// The validated request, or one reason per offending field.
    fn parse(self) -> Result<NewKey, ApiError> {
        let mut fields = BTreeMap::new();
        let name = self.name;
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            fields.insert(
                "name".to_owned(),
                format!("must be 1 to {MAX_NAME_CHARS} characters"),
            );
        }
        let mut scopes = self.scopes;
        scopes.sort();
        scopes.dedup();
        if scopes.is_empty() {
            fields.insert("scopes".to_owned(), "must name at least one scope".into());
        }
        let queues = match self.queues {
            None => None,
            Some(names) if names == ["*"] => None,
            Some(names) if names.is_empty() || names.len() > MAX_KEY_QUEUES => {
                fields.insert(
                    "queues".to_owned(),
                    format!("must be [\"*\"] or 1 to {MAX_KEY_QUEUES} queue names"),
                );
                None
            }
            Some(names) => {
                for (i, name) in names.iter().enumerate() {
                    if let Err(reason) = QueueName::parse(name) {
                        fields.insert(format!("queues[{i}]"), reason);
                    }
                }
                let mut names = names;
                names.sort();
                names.dedup();
                Some(names)
            }
        };
        if !fields.is_empty() {
            return Err(ApiError::validation(fields));
        }
        Ok(NewKey {
            name,
            scopes,
            queues,
            expires_at: self.expires_at,
        })
    }
}

impl From<KeyError> for ApiError {
    fn from(err: KeyError) -> Self {
        match err {
            KeyError::TooMany => ApiError::conflict(
                ErrorCode::TooManyKeys,
                "this user holds the most API keys allowed; delete one first",
            ),
            KeyError::Mongo(err) => {
                log::warn!("mongodb error in api keys: {err}");
                ApiError::unavailable("mongodb is unavailable")
            }
            KeyError::Random(err) => ApiError::internal(err),
        }
    }
}

/// `GET /v1/auth/keys` body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct KeyList {
    keys: Vec<ApiKey>,
}

/// The `{id}` of an API key.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyPath {
    /// The key's `id` (not the secret).
    id: String,
}

/// Create an API key; the secret is in this response only.
#[utoipa::path(post, path = "/v1/auth/keys", operation_id = "create_api_key", tag = "auth", security(("bearer" = [])),
    request_body = NewKeyBody,
    responses(
        (status = 201, description = "Created; `key` is shown only here", body = CreatedKey),
        (status = 400, description = "Malformed JSON (an unknown field is a `422`)", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: API keys cannot manage keys", body = ErrorBody),
        (status = 409, description = "`too_many_keys`: the user holds 100 keys", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Invalid name, scopes, queues or `expires_at`, per field", body = ErrorBody),
        (status = 503, description = "MongoDB down", body = ErrorBody),
    ))]
pub async fn create_key(
    keys: web::Data<ApiKeys>,
    who: Authenticated,
    ApiJson(body): ApiJson<NewKeyBody>,
) -> Result<HttpResponse, ApiError> {
    let new = body.parse()?;
    let created = keys.create(&who.user_id, new).await?;
    Ok(HttpResponse::Created().json(created))
}

/// The caller's API keys (never their secrets).
#[utoipa::path(get, path = "/v1/auth/keys", operation_id = "list_api_keys", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "Every key of the user, oldest first", body = KeyList),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: API keys cannot manage keys", body = ErrorBody),
        (status = 503, description = "MongoDB down", body = ErrorBody),
    ))]
pub async fn list_keys(
    keys: web::Data<ApiKeys>,
    who: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let keys = keys.list(&who.user_id).await?;
    Ok(HttpResponse::Ok().json(KeyList { keys }))
}

/// Revoke an API key: refused everywhere within 2 seconds.
#[utoipa::path(delete, path = "/v1/auth/keys/{id}", operation_id = "delete_api_key", tag = "auth", security(("bearer" = [])),
    params(KeyPath),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: API keys cannot manage keys", body = ErrorBody),
        (status = 404, description = "No such key (of this user)", body = ErrorBody),
        (status = 503, description = "MongoDB down", body = ErrorBody),
    ))]
pub async fn delete_key(
    keys: web::Data<ApiKeys>,
    who: Authenticated,
    path: web::Path<KeyPath>,
) -> Result<HttpResponse, ApiError> {
    if !keys.delete(&who.user_id, &path.id).await? {
        return Err(ApiError::not_found("no such API key"));
    }
    Ok(HttpResponse::NoContent().finish())
}
