//! The HTTP error contract: every error leaves the service as
//! `{"error": {"code", "message", "request_id", "fields"?}}`.
//!
//! Domain modules keep their own error enums; this module is the one place that
//! maps them (and actix's own extractor errors) to a status and a stable `code`.
//! It never puts internal details (driver errors, paths) into a response body.

use std::collections::BTreeMap;
use std::fmt;

use actix_web::error::{JsonPayloadError, PathError, PayloadError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

/// Declares [`ErrorCode`] with each variant's wire string, once.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal,)*) => {
        /// Every `code` an error body can carry: a closed set clients may
        /// branch on. The strings never change once released.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The wire string, e.g. `"validation_failed"`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }
        }
    };
}

error_codes! {
    /// `400`: a request the server cannot read (bad query, unreadable body).
    BadRequest = "bad_request",
    /// `400`: the body is not JSON.
    InvalidJson = "invalid_json",
    /// `422`: fields failed validation; see `fields`.
    ValidationFailed = "validation_failed",
    /// `401`: missing, invalid, expired or revoked token or API key.
    Unauthorized = "unauthorized",
    /// `401`: wrong email or password.
    InvalidCredentials = "invalid_credentials",
    /// `403`: an API key whose scopes or queues do not cover the route.
    InsufficientScope = "insufficient_scope",
    /// `404`: no such route, queue, job or key (of this user).
    NotFound = "not_found",
    /// `405`: the path exists but not with this method; see `Allow`.
    MethodNotAllowed = "method_not_allowed",
    /// `409`: the email is registered already.
    EmailTaken = "email_taken",
    /// `409`: a stale or expired lease; nothing changed.
    LeaseLost = "lease_lost",
    /// `409`: the job is active or finished.
    NotCancellable = "not_cancellable",
    /// `409`: only blocked or dead jobs can be retried or skipped.
    NotStopped = "not_stopped",
    /// `409`: claim on a push queue.
    NotAPullQueue = "not_a_pull_queue",
    /// `409`: the user holds the most API keys allowed.
    TooManyKeys = "too_many_keys",
    /// `413`: the body is over the configured limit.
    PayloadTooLarge = "payload_too_large",
    /// `415`: the body is not `application/json`.
    UnsupportedMediaType = "unsupported_media_type",
    /// `429`: too many failed logins, or publishes over the tenant's
    /// ingress limit; see `Retry-After`.
    RateLimited = "rate_limited",
    /// `503`: a dependency is down or a bounded pool is full; see `Retry-After`.
    Unavailable = "unavailable",
    /// `503`: the publish reached Redis but its reply never came, so the jobs
    /// may have been enqueued; retry with the same `Idempotency-Key`.
    OutcomeUnknown = "outcome_unknown",
    /// `500`: a bug; the details are in the server log, never in the body.
    Internal = "internal",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

/// What went wrong, in a stable machine-readable `code` and a human `message`.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail<'a> {
    /// Stable error code; clients branch on it, never on `message`.
    pub code: ErrorCode,
    pub message: &'a str,
    /// The `X-Request-Id` of the request, for finding it in the logs.
    pub request_id: &'a str,
    /// `422` only: one reason per offending field (`jobs[3].key`, `delivery.url`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<&'a BTreeMap<String, String>>,
}

/// An error as the client sees it.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    fields: Option<BTreeMap<String, String>>,
    retry_after_s: Option<u64>,
    bearer_challenge: bool,
    /// With `bearer_challenge`: why a presented token was refused (RFC 6750
    /// `error="invalid_token"` with this `error_description`).
    token_refusal: Option<&'static str>,
    /// `405` only: the path's methods, sent as `Allow` (RFC 9110 §15.5.6).
    allow: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: None,
            retry_after_s: None,
            bearer_challenge: false,
            token_refusal: None,
            allow: None,
        }
    }

    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidJson, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    /// `422` with one reason per offending field.
    pub fn validation(fields: BTreeMap<String, String>) -> Self {
        let mut err = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::ValidationFailed,
            "the request has invalid fields",
        );
        err.fields = Some(fields);
        err
    }

    /// `422` for a single field.
    pub fn invalid_field(field: &str, reason: impl Into<String>) -> Self {
        Self::validation(BTreeMap::from([(field.to_owned(), reason.into())]))
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        let mut err = Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message);
        err.bearer_challenge = true;
        err
    }

    /// `401` for a presented bearer token that is refused, saying why in the
    /// message and in `WWW-Authenticate` (`error="invalid_token"`,
    /// `error_description` = `why`; `why` is a constant, never client text).
    pub fn invalid_token(message: impl Into<String>, why: &'static str) -> Self {
        let mut err = Self::unauthorized(message);
        err.token_refusal = Some(why);
        err
    }

    pub fn invalid_credentials() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidCredentials,
            "email or password is incorrect",
        )
    }

    /// `403`: an API key whose scopes or queues do not cover the route.
    pub fn insufficient_scope(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::InsufficientScope, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    /// `405`; `allow` lists the path's methods (`"GET, PUT"`), sent as `Allow`.
    pub fn method_not_allowed(allow: Option<String>) -> Self {
        let mut err = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            match &allow {
                Some(allow) => format!("this route accepts only {allow}"),
                None => "this route does not accept that method".to_owned(),
            },
        );
        err.allow = allow;
        err
    }

    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            "the request body exceeds the configured limit",
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "the request body must be JSON (Content-Type: application/json)",
        )
    }

    pub fn rate_limited(retry_after_s: u64) -> Self {
        Self::limited("too many failed attempts; retry later", retry_after_s)
    }

    /// `429 rate_limited` saying why, with `Retry-After` (at least 1 s).
    pub fn limited(message: impl Into<String>, retry_after_s: u64) -> Self {
        let mut err = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            message,
        );
        err.retry_after_s = Some(retry_after_s.max(1));
        err
    }

    /// `503`: a dependency (or a bounded pool) cannot serve the request now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut err = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            message,
        );
        err.retry_after_s = Some(1);
        err
    }

    /// `500` with a fixed message; the cause is logged, never sent.
    pub fn internal(cause: impl fmt::Display) -> Self {
        log::error!("internal error: {cause}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal server error",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// Maps any actix error (ours, or an extractor's) onto the contract.
    pub fn from_actix(err: &actix_web::Error) -> ApiError {
        if let Some(api) = err.as_error::<ApiError>() {
            return api.clone();
        }
        if let Some(json) = err.as_error::<JsonPayloadError>() {
            return Self::from_json_payload(json);
        }
        if let Some(payload) = err.as_error::<PayloadError>() {
            return Self::from_payload(payload);
        }
        if let Some(path) = err.as_error::<PathError>() {
            return Self::not_found(path.to_string());
        }
        if let Some(query) = err.as_error::<QueryPayloadError>() {
            return Self::from_query(query);
        }
        Self::from_status(err.as_response_error().status_code())
    }

    /// A query string that does not parse: `422` naming `query`.
    pub fn from_query(err: &QueryPayloadError) -> ApiError {
        Self::invalid_field("query", err.to_string())
    }

    /// The error a bare status maps to, for responses produced without one.
    pub fn from_status(status: StatusCode) -> ApiError {
        match status {
            StatusCode::NOT_FOUND => Self::not_found("no such route"),
            StatusCode::METHOD_NOT_ALLOWED => Self::method_not_allowed(None),
            StatusCode::PAYLOAD_TOO_LARGE => Self::payload_too_large(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::unsupported_media_type(),
            StatusCode::SERVICE_UNAVAILABLE => Self::unavailable("service unavailable"),
            status if status.is_client_error() => {
                Self::new(status, ErrorCode::BadRequest, "the request was rejected")
            }
            status => Self::internal(format_args!("unmapped error status {status}")),
        }
    }

    pub fn from_payload(err: &PayloadError) -> ApiError {
        match err {
            PayloadError::Overflow => Self::payload_too_large(),
            other => Self::bad_request(format!("cannot read the request body: {other}")),
        }
    }

    fn from_json_payload(err: &JsonPayloadError) -> ApiError {
        match err {
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                Self::payload_too_large()
            }
            JsonPayloadError::ContentType => Self::unsupported_media_type(),
            JsonPayloadError::Payload(payload) => Self::from_payload(payload),
            other => Self::invalid_json(other.to_string()),
        }
    }

    /// The response for this error, tagged with the request's id.
    pub fn render(&self, request_id: &str) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after_s {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        if let Some(allow) = &self.allow
            && let Ok(value) = HeaderValue::from_str(allow)
        {
            response.insert_header((header::ALLOW, value));
        }
        if self.bearer_challenge {
            let challenge = match self.token_refusal {
                Some(why) => HeaderValue::from_str(&format!(
                    "Bearer realm=\"orderly\", error=\"invalid_token\", error_description=\"{why}\""
                ))
                .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"orderly\"")),
                None => HeaderValue::from_static("Bearer realm=\"orderly\""),
            };
            response.insert_header((header::WWW_AUTHENTICATE, challenge));
        }
        response.json(ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                request_id,
                fields: self.fields.as_ref(),
            },
        })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    /// Rendered without a request id here; the request-id middleware renders
    /// the final body (see `http::request_id`).
    fn error_response(&self) -> HttpResponse {
        self.render("")
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(err: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError;
        match err {
            AuthError::EmailTaken => {
                Self::conflict(ErrorCode::EmailTaken, "this email is already registered")
            }
            AuthError::InvalidCredentials => Self::invalid_credentials(),
            AuthError::RateLimited { retry_after_s } => Self::rate_limited(retry_after_s),
            AuthError::UnknownUser => Self::unauthorized("the token names no existing user"),
            AuthError::Busy => Self::unavailable("too many concurrent logins; retry shortly"),
            AuthError::Unavailable(what) => Self::unavailable(format!("{what} is unavailable")),
            AuthError::Internal(cause) => Self::internal(cause),
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(err: actix::MailboxError) -> Self {
        log::error!("actor mailbox error: {err}");
        Self::unavailable("the service is busy or restarting; retry shortly")
    }
}

impl From<crate::queue::registry::RegistryError> for ApiError {
    fn from(err: crate::queue::registry::RegistryError) -> Self {
        use crate::queue::registry::RegistryError;
        match err {
            RegistryError::Mongo(err) => {
                log::warn!("mongodb error: {err}");
                Self::unavailable("mongodb is unavailable")
            }
            RegistryError::Engine(err) => err.into(),
            RegistryError::Contended => {
                Self::unavailable("the queue's settings are being changed concurrently; retry")
            }
        }
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(err: redis::RedisError) -> Self {
        crate::queue::engine::EngineError::from(err).into()
    }
}

impl From<crate::queue::service::ServiceError> for ApiError {
    fn from(err: crate::queue::service::ServiceError) -> Self {
        use crate::queue::service::ServiceError;
        match err {
            ServiceError::Registry(err) => err.into(),
            ServiceError::Publish(err) => err.into(),
            ServiceError::Engine(err) => err.into(),
            ServiceError::Producer(err) => err.into(),
        }
    }
}

impl From<crate::queue::engine::EngineError> for ApiError {
    fn from(err: crate::queue::engine::EngineError) -> Self {
        use crate::queue::engine::EngineError;
        match err {
            EngineError::Unavailable(err) => {
                log::warn!("redis error: {err}");
                Self::unavailable("redis is unavailable")
            }
            EngineError::Unexpected(what) => {
                Self::internal(format!("unexpected redis reply: {what}"))
            }
        }
    }
}

impl From<crate::queue::schedules::ScheduleError> for ApiError {
    fn from(err: crate::queue::schedules::ScheduleError) -> Self {
        use crate::queue::schedules::ScheduleError;
        match err {
            ScheduleError::Mongo(err) => {
                log::warn!("mongodb error: {err}");
                Self::unavailable("mongodb is unavailable")
            }
            ScheduleError::Redis(err) => err.into(),
        }
    }
}

impl From<crate::queue::producer::PublishError> for ApiError {
    fn from(err: crate::queue::producer::PublishError) -> Self {
        use crate::queue::producer::PublishError;
        log::warn!("publish failed: {err}");
        match err {
            PublishError::Unavailable(_) => {
                Self::unavailable("redis is unavailable; nothing was enqueued")
            }
            PublishError::OutcomeUnknown(_) => {
                let mut err = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::OutcomeUnknown,
                    "redis did not answer: the job(s) may have been enqueued; \
                     retry with the same Idempotency-Key (or idempotency_key per job)",
                );
                err.retry_after_s = Some(1);
                err
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_serialises_to_its_wire_string() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
