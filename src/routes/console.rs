//! `/console`: the operators' web UI, served by Orderly itself from files
//! compiled into the binary (`assets/console/`).
//!
//! The console is a small single-page app written as plain ES modules, one
//! stylesheet and one HTML shell: no framework, no build step, no CDN. It
//! talks only to the public `/v1` API with the signed-in user's bearer token
//! (kept in `sessionStorage`), so what an operator may see and do is decided
//! by the API, never here. The scripts render user data as text only
//! (`textContent`), and the page's CSP allows no inline script, so a payload,
//! key or error that holds markup cannot run. This module must never grow
//! server-side logic of its own: it only serves the files.

use actix_web::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use actix_web::{HttpResponse, web};

use super::embedded::{self, Asset, CSS, JAVASCRIPT};
use crate::error::ApiError;

/// The scripts and the stylesheet of the page; names are the `{asset}` segment.
const ASSETS: &[Asset] = &[
    (
        "console.css",
        CSS,
        include_bytes!("../../assets/console/console.css"),
    ),
    (
        "app.js",
        JAVASCRIPT,
        include_bytes!("../../assets/console/app.js"),
    ),
    (
        "api.js",
        JAVASCRIPT,
        include_bytes!("../../assets/console/api.js"),
    ),
    (
        "dom.js",
        JAVASCRIPT,
        include_bytes!("../../assets/console/dom.js"),
    ),
    (
        "signin.js",
        JAVASCRIPT,
        include_bytes!("../../assets/console/signin.js"),
    ),
    (
        "queues.js",
        JAVASCRIPT,
        include_bytes!("../../assets/console/queues.js"),
    ),
    (
        "queue.js",
        JAVASCRIPT,
        include_bytes!("../../assets/console/queue.js"),
    ),
    (
        "job.js",
        JAVASCRIPT,
        include_bytes!("../../assets/console/job.js"),
    ),
];

/// Only this server's own files; no inline script or style, no framing.
const CONSOLE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// The operators' console (a single-page app over the `/v1` API).
#[utoipa::path(get, path = "/console", operation_id = "console_page", tag = "operations",
    responses((status = 200, description = "The console's HTML page; it signs in and calls `/v1` with a bearer token", content_type = "text/html")))]
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((CONTENT_SECURITY_POLICY, CONSOLE_CSP))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((REFERRER_POLICY, "no-referrer"))
        .body(include_str!("../../assets/console/index.html"))
}

/// A script or the stylesheet of the console.
#[utoipa::path(get, path = "/console/{asset}", operation_id = "console_asset", tag = "operations",
    params(("asset" = String, Path, description = "`app.js`, `console.css`, … (the files `/console` loads)")),
    responses(
        (status = 200, description = "The asset"),
        (status = 404, description = "No such asset", body = crate::error::ErrorBody),
    ))]
pub async fn asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    // Revalidated every time: the modules import each other by name, so a
    // stale cached one would mix two versions after an upgrade.
    embedded::serve(ASSETS, &name, "no-cache")
}
