//! `GET /metrics`: this application's Prometheus registry as text.

use actix_web::{HttpResponse, web};

use crate::error::ApiError;
use crate::metrics::Metrics;

/// Prometheus metrics (served when `metrics.expose` is on).
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain")))]
pub async fn scrape(metrics: web::Data<Metrics>) -> Result<HttpResponse, ApiError> {
    let text = metrics.render().map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
