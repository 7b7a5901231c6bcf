//! The HTTP edge: thin handlers that extract, parse into domain types, send
//! one actor message and map the reply to JSON. Route patterns are registered
//! here, in one table that also lists them for the OpenAPI coverage test.

pub mod auth;
pub mod console;
pub mod consumers;
pub mod dead;
pub mod docs;
mod embedded;
pub mod health;
pub mod jobs;
pub mod lanes;
pub mod metrics;
pub mod outcomes;
pub mod queues;
pub mod schedules;

use actix_web::{FromRequest, Handler, HttpResponse, Resource, Responder, Route, web};

use crate::error::ApiError;

/// Declares the route table once: [`ROUTES`] lists it, [`configure`]
/// registers it. One resource per path, so a known path with an unknown
/// method answers `405` (with `Allow` naming the path's methods), not `404`.
/// Every `GET` route answers `HEAD` too (RFC 9110 §9.3.2: the same status
/// and headers, no body — actix's encoder leaves the body out).
macro_rules! route_table {
    ($($path:literal => { $($method:ident: $handler:path),+ $(,)? }),* $(,)?) => {
        /// Every route the API serves, as (method, path pattern) in the
        /// OpenAPI path syntax. `/metrics` is served only when
        /// `metrics.expose` is on.
        pub const ROUTES: &[(&str, &str)] = &[$($((stringify!($method), $path),)+)*];

        /// Registers every route of the API; `/metrics` only when `expose_metrics`.
        pub fn configure(cfg: &mut web::ServiceConfig, expose_metrics: bool) {
            $(
                if expose_metrics || $path != METRICS_PATH {
                    let allow = allow_header(&[$(stringify!($method)),+]);
                    let resource = web::resource($path);
                    $(let resource = add_route(resource, web::$method(), stringify!($method), $handler);)+
                    cfg.service(resource.default_service(web::to(move || {
                        let err = ApiError::method_not_allowed(Some(allow.clone()));
                        async move { Err::<HttpResponse, _>(err) }
                    })));
                }
            )*
        }
    };
}

const METRICS_PATH: &str = "/metrics";

/// The `Allow` value for a path's methods as the table spells them (`get`);
/// `HEAD` follows `GET`.
fn allow_header(methods: &[&str]) -> String {
    methods
        .iter()
        .flat_map(|m| match *m {
            "get" => vec!["GET", "HEAD"],
            other => vec![other],
        })
        .map(str::to_uppercase)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `resource` with `handler` on `route` (the table's `method`, as spelled
/// there), and on `HEAD` too when that is `get`.
fn add_route<F, Args>(resource: Resource, route: Route, method: &str, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    let resource = if method == "get" {
        resource.route(web::head().to(handler.clone()))
    } else {
        resource
    };
    resource.route(route.to(handler))
}

route_table! {
    // The job path's routes first: a request is matched against the table in
    // order, a pattern with `{…}` by a regex each, which cost ~3 % of
    // Orderly's CPU per one-job publish when publish came 17th. (No two
    // patterns match the same path, so the order changes nothing else.)
    "/v1/queues/{queue}/jobs" => { post: jobs::publish, get: jobs::list },
    "/v1/queues/{queue}/jobs/batch" => { post: jobs::publish_batch },
    "/v1/queues/{queue}/claim" => { post: consumers::claim },
    "/v1/queues/{queue}/ack" => { post: outcomes::outcomes },
    "/v1/jobs/{id}/ack" => { post: consumers::ack },
    "/v1/jobs/{id}/nack" => { post: consumers::nack },
    "/v1/jobs/{id}/extend" => { post: consumers::extend },
    "/metrics" => { get: metrics::scrape },
    "/healthz" => { get: health::healthz },
    "/readyz" => { get: health::readyz },
    "/openapi.json" => { get: docs::openapi_json },
    "/docs" => { get: docs::page },
    "/docs/{asset}" => { get: docs::asset },
    "/console" => { get: console::page },
    "/console/{asset}" => { get: console::asset },
    "/v1/auth/register" => { post: auth::register },
    "/v1/auth/login" => { post: auth::login },
    "/v1/auth/me" => { get: auth::me },
    "/v1/auth/keys" => { post: auth::create_key, get: auth::list_keys },
    "/v1/auth/keys/{id}" => { delete: auth::delete_key },
    "/v1/queues" => { get: queues::list },
    "/v1/queues/{queue}" => { put: queues::put, get: queues::get, delete: queues::delete },
    "/v1/queues/{queue}/pause" => { post: queues::pause },
    "/v1/queues/{queue}/resume" => { post: queues::resume },
    "/v1/queues/{queue}/lanes" => { get: lanes::list },
    "/v1/queues/{queue}/lanes/{key}" => { get: lanes::get },
    "/v1/queues/{queue}/lanes/{key}/pause" => { post: lanes::pause },
    "/v1/queues/{queue}/lanes/{key}/resume" => { post: lanes::resume },
    "/v1/queues/{queue}/dead" => { get: dead::list },
    "/v1/queues/{queue}/dead/redrive" => { post: dead::redrive },
    "/v1/queues/{queue}/schedules" => { get: schedules::list },
    "/v1/queues/{queue}/schedules/{name}" => { put: schedules::put, get: schedules::get, delete: schedules::delete },
    "/v1/jobs/{id}" => { get: jobs::get, delete: jobs::cancel },
    "/v1/jobs/{id}/retry" => { post: dead::retry },
    "/v1/jobs/{id}/skip" => { post: dead::skip },
}

/// Fallback for paths no route matches.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("no such route"))
}
