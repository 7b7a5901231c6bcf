//! `/openapi.json` (generated from the code by `utoipa`) and `/docs`, a
//! Swagger UI page whose assets are compiled into the binary: nothing is
//! fetched from a CDN at run time.

use std::sync::LazyLock;

use actix_web::http::header::CONTENT_SECURITY_POLICY;
use actix_web::{HttpResponse, web};

use super::embedded::{self, Asset, CSS, JAVASCRIPT};
use crate::error::ApiError;

static SPEC: LazyLock<String> = LazyLock::new(crate::openapi::spec_json);

/// The page and what it loads; names are the `{asset}` path segment.
const ASSETS: &[Asset] = &[
    (
        "swagger-ui-bundle.js",
        JAVASCRIPT,
        include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js"),
    ),
    (
        "swagger-ui.css",
        CSS,
        include_bytes!("../../assets/swagger-ui/swagger-ui.css"),
    ),
    (
        "init.js",
        JAVASCRIPT,
        include_bytes!("../../assets/docs/init.js"),
    ),
    (
        "LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/LICENSE"),
    ),
];

/// Only this server's own scripts and styles (Swagger UI sets inline styles).
const DOCS_CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'";

/// The API description, OpenAPI 3.1.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi_json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", content_type = "application/json")))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(SPEC.as_str())
}

/// Interactive API documentation (Swagger UI).
#[utoipa::path(get, path = "/docs", operation_id = "docs_page", tag = "operations",
    responses((status = 200, description = "An HTML page rendering `/openapi.json`", content_type = "text/html")))]
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((CONTENT_SECURITY_POLICY, DOCS_CSP))
        .body(include_str!("../../assets/docs/index.html"))
}

/// A script or stylesheet of the documentation page.
#[utoipa::path(get, path = "/docs/{asset}", operation_id = "docs_asset", tag = "operations",
    params(("asset" = String, Path, description = "`swagger-ui-bundle.js`, `swagger-ui.css`, `init.js` or `LICENSE`")),
    responses(
        (status = 200, description = "The asset"),
        (status = 404, description = "No such asset", body = crate::error::ErrorBody),
    ))]
pub async fn asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    embedded::serve(ASSETS, &name, "public, max-age=3600")
}
