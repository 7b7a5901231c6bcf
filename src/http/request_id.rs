//! Gives every request an id (the client's `X-Request-Id` when it is sane),
//! echoes it on every response, and renders every error response in the JSON
//! contract of [`crate::error::ApiError`] tagged with that id.
//!
//! It must stay the innermost middleware so that the logger and the metrics
//! see the final status and header.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::{Ready, ready};

use crate::error::ApiError;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the current request, available as an extractor.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    fn from_header(value: Option<&HeaderValue>) -> Self {
        let client = value
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_acceptable(v));
        match client {
            Some(id) => RequestId(id.to_owned()),
            None => RequestId(uuid::Uuid::new_v4().simple().to_string()),
        }
    }
}

/// Client ids are echoed into logs and headers, so only short plain tokens pass.
fn is_acceptable(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl FromRequest for RequestId {
    type Error = Error;
    type Future = Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let id = req
            .extensions()
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId::from_header(req.headers().get(HEADER)));
        ready(Ok(id))
    }
}

/// The middleware function; wrap it with `actix_web::middleware::from_fn`.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let id = RequestId::from_header(req.headers().get(HEADER));
    req.extensions_mut().insert(id.clone());
    let response = next.call(req).await?;
    let mut response = if let Some(err) = response.response().error() {
        let rendered = ApiError::from_actix(err).render(&id.0);
        response.into_response(rendered).map_into_right_body()
    } else if response.status().is_client_error() || response.status().is_server_error() {
        // An error status produced without an error value (e.g. a router's 405).
        let rendered = ApiError::from_status(response.status()).render(&id.0);
        response.into_response(rendered).map_into_right_body()
    } else {
        response.map_into_left_body()
    };
    if let Ok(value) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert(HEADER, value);
    }
    Ok(response)
}
