//! `GET /metrics`: this application's Prometheus registry as text.

use actix_web::{HttpResponse, web};

use crate::error::ApiError;
use crate::metrics::Metrics;

pub async fn scrape(metrics: web::Data<Metrics>) -> Result<HttpResponse, ApiError> {
    let text = metrics.render().map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
